"""dtr.nn.dropout: the 16-bit masks against a NumPy twin of the same random words, the keep probability and
the exact expectation, the edge rates, and the Flax module's interface."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtr.nn import dropout as dropout_lib


@pytest.mark.parametrize('shape', [(3, 5), (4, 6, 2), (1,), (7,)])
def test_the_mask_is_the_halves_of_the_random_words_in_numpy(shape):
  rng, rate = jax.random.key(3), 0.3
  n = int(np.prod(shape))
  words = np.asarray(jax.random.bits(rng, ((n + 1) // 2,), jnp.uint32)).astype(np.int64)
  u = np.concatenate([words >> 16, words & 0xFFFF])[:n].reshape(shape)
  k = 65536 - round(rate * 65536)
  x = np.asarray(jax.random.normal(jax.random.key(4), shape), np.float64)
  expected = np.where(u < k, x * 65536 / k, 0.0)
  got = dropout_lib.dropout(jnp.asarray(x, jnp.float32), rate, rng)
  np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=1e-6, atol=0)
  assert np.array_equal(np.asarray(dropout_lib.uniform16(rng, shape)), u)


@pytest.mark.parametrize('rate', [0.1, 0.2, 0.5])
def test_keep_frequency_and_the_expectation(rate):
  n = 1 << 20
  y = np.asarray(dropout_lib.dropout(jnp.ones((n,)), rate, jax.random.key(0)), np.float64)
  keep = dropout_lib.keep_threshold(rate) / 65536
  assert abs(keep - (1 - rate)) <= 2.0 ** -17
  frequency = np.mean(y != 0)
  assert abs(frequency - keep) < 5 * np.sqrt(keep * (1 - keep) / n)  # five binomial standard deviations
  np.testing.assert_allclose(y[y != 0], 1 / keep, rtol=1e-6)  # kept values scaled so that E[y] = x exactly
  # the two halves of a word are not the same draw: they agree no more often than independent draws would
  half = n // 2
  both = np.mean((y[:half] != 0) == (y[half:] != 0))
  assert abs(both - (keep ** 2 + (1 - keep) ** 2)) < 5 * np.sqrt(0.25 / half)


def test_edge_rates_and_bad_rates():
  x = jnp.arange(6.0).reshape(2, 3)
  assert dropout_lib.dropout(x, 0.0, jax.random.key(0)) is x
  np.testing.assert_array_equal(dropout_lib.dropout(x, 1.0, jax.random.key(0)), np.zeros((2, 3)))
  with pytest.raises(ValueError, match=r'dropout rate 1.5 must be in \[0, 1\]'):
    dropout_lib.keep_threshold(1.5)


def test_the_module_reads_the_dropout_rng_and_is_the_identity_when_deterministic():
  layer = dropout_lib.Dropout(0.25)
  x = jnp.ones((8, 16))
  variables = layer.init({'params': jax.random.key(0)}, x, deterministic=True)
  assert variables == {}
  np.testing.assert_array_equal(layer.apply(variables, x, deterministic=True), x)
  rng = jax.random.key(7)
  y = layer.apply(variables, x, deterministic=False, rngs={'dropout': rng})
  assert 0 < int(np.sum(np.asarray(y) == 0)) < x.size
  again = layer.apply(variables, x, deterministic=False, rngs={'dropout': rng})
  np.testing.assert_array_equal(y, again)  # a pure function of the rng
  other = layer.apply(variables, x, deterministic=False, rngs={'dropout': jax.random.key(8)})
  assert not np.array_equal(y, other)
  grad = jax.grad(lambda v: jnp.sum(layer.apply(variables, v, deterministic=False, rngs={'dropout': rng})))(x)
  np.testing.assert_allclose(grad, np.asarray(y))  # d(sum y)/dx is the scaled mask, y for x = 1
