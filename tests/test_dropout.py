"""dtr.nn.dropout: the hashed masks against a NumPy twin of the hash, the keep probability and the exact
expectation, independence between neighbouring elements and between keys, the same mask for a sharded input,
the edge rates, and the Flax module's interface."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from dtr.nn import dropout as dropout_lib


def _numpy_uniform16(rng, shape):
  """The module's hash written out in NumPy uint64 arithmetic reduced mod 2^32."""
  s1, s2 = (int(w) for w in np.asarray(jax.random.bits(rng, (2,), jnp.uint32)))
  mask = (1 << 32) - 1

  def finalise(z):
    z = ((z ^ (z >> 16)) * 0x85EBCA6B) & mask
    z = ((z ^ (z >> 13)) * 0xC2B2AE35) & mask
    return z ^ (z >> 16)

  i = np.arange(int(np.prod(shape)), dtype=np.uint64)
  words = finalise(finalise((i * 0x9E3779B9 + s1) & mask) ^ np.uint64(s2))
  return (words >> 16).astype(np.int64).reshape(shape)


@pytest.mark.parametrize('shape', [(3, 5), (4, 6, 2), (1,), (7,), (2, 3, 4, 5)])
def test_the_mask_is_the_hash_of_each_position_in_numpy(shape):
  rng, rate = jax.random.key(3), 0.3
  u = _numpy_uniform16(rng, shape)
  k = 65536 - round(rate * 65536)
  x = np.asarray(jax.random.normal(jax.random.key(4), shape), np.float64)
  expected = np.where(u < k, x * 65536 / k, 0.0)
  got = dropout_lib.dropout(jnp.asarray(x, jnp.float32), rate, rng)
  np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=1e-6, atol=0)
  assert np.array_equal(np.asarray(dropout_lib.uniform16(rng, shape)), u)


def test_a_sharded_input_gets_the_mask_of_the_same_input_on_one_device():
  mesh = jax.make_mesh((8,), ('data',))
  x = jax.random.normal(jax.random.key(6), (16, 16, 6))
  rng = jax.random.key(5)
  apply = lambda v: dropout_lib.dropout(v, 0.4, rng)
  whole = np.asarray(jax.jit(apply)(x))
  assert 0 < np.sum(whole == 0) < whole.size
  for spec in (P('data'), P(None, 'data'), P()):
    placed = jax.device_put(x, NamedSharding(mesh, spec))
    got = jax.jit(apply, out_shardings=placed.sharding)(placed)
    assert got.sharding == placed.sharding
    np.testing.assert_array_equal(np.asarray(got), whole)


def test_neighbours_along_every_axis_and_different_keys_are_independent():
  shape, rate = (64, 128, 128), 0.5
  kept = np.asarray(dropout_lib.uniform16(jax.random.key(11), shape)) < dropout_lib.keep_threshold(rate)
  p = kept.mean()
  for axis in range(3):
    a = np.moveaxis(kept, axis, 0)
    n = a[1:].size
    both = np.mean(a[1:] == a[:-1])  # agreement of each element with its neighbour along the axis
    assert abs(both - (p ** 2 + (1 - p) ** 2)) < 5 * np.sqrt(0.25 / n), axis
  other = np.asarray(dropout_lib.uniform16(jax.random.key(12), shape)) < dropout_lib.keep_threshold(rate)
  assert abs(np.mean(kept == other) - 0.5) < 5 * np.sqrt(0.25 / kept.size)
  # the 16-bit uniforms themselves: each of the 16 bits is a fair coin
  u = np.asarray(dropout_lib.uniform16(jax.random.key(13), (1 << 20,)))
  bits = (u[:, None] >> np.arange(16)) & 1
  assert np.all(np.abs(bits.mean(0) - 0.5) < 5 * np.sqrt(0.25 / u.size))


@pytest.mark.parametrize('rate', [0.1, 0.2, 0.5])
def test_keep_frequency_and_the_expectation(rate):
  n = 1 << 20
  y = np.asarray(dropout_lib.dropout(jnp.ones((n,)), rate, jax.random.key(0)), np.float64)
  keep = dropout_lib.keep_threshold(rate) / 65536
  assert abs(keep - (1 - rate)) <= 2.0 ** -17
  frequency = np.mean(y != 0)
  assert abs(frequency - keep) < 5 * np.sqrt(keep * (1 - keep) / n)  # five binomial standard deviations
  np.testing.assert_allclose(y[y != 0], 1 / keep, rtol=1e-6)  # kept values scaled so that E[y] = x exactly


def test_edge_rates_and_bad_rates():
  x = jnp.arange(6.0).reshape(2, 3)
  assert dropout_lib.dropout(x, 0.0, jax.random.key(0)) is x
  np.testing.assert_array_equal(dropout_lib.dropout(x, 1.0, jax.random.key(0)), np.zeros((2, 3)))
  with pytest.raises(ValueError, match=r'dropout rate 1.5 must be in \[0, 1\]'):
    dropout_lib.keep_threshold(1.5)
  with pytest.raises(ValueError, match='positions must fit 32 bits'):
    dropout_lib.uniform16(jax.random.key(0), (1 << 17, 1 << 16))  # only the shape is checked: nothing is formed


@pytest.mark.parametrize('rate', [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.99, 1.0, 1 / 3])
def test_a_rate_given_as_an_array_draws_the_masks_of_the_same_rate_as_a_number(rate):
  """A population member's rate is a traced float32 (`dtr.population`): it keeps the elements the number
  keeps and scales them alike, at 0 and 1 too, under `jit` and `vmap` over members."""
  x = jax.random.normal(jax.random.key(3), (64, 48))
  rng = jax.random.key(4)
  rate32 = float(np.float32(rate))  # the member's value, as the config writes it (float32 shortest)
  expected = np.asarray(dropout_lib.dropout(x, rate32, rng))
  traced = jax.jit(dropout_lib.dropout)(x, jnp.float32(rate32), rng)
  np.testing.assert_array_equal(np.asarray(traced) == 0, expected == 0)
  np.testing.assert_allclose(traced, expected, rtol=1e-6)
  rates = jnp.asarray([rate32, 0.5], jnp.float32)
  members = jax.vmap(dropout_lib.dropout, in_axes=(None, 0, None))(x, rates, rng)
  np.testing.assert_allclose(members[0], expected, rtol=1e-6)
  assert not dropout_lib.is_off(jnp.float32(0.0)) and dropout_lib.is_off(0.0) and dropout_lib.is_off(np.float32(0))


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
