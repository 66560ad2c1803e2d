"""The packed output layer (`dtr.nn.softmax.target_nll`) against the full layer in float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtr.nn import softmax

CASES = [  # (lengths of 4 rows padded to 8, pack): valid positions = lengths + 1 (words + eos)
    ([3, 7, 1, 0], 0.0),   # off: the full layer
    ([3, 7, 1, 0], 1.0),   # 15 of 32 valid: buffers 8, 16, 24, the second holds them
    ([3, 7, 1, 0], 0.5),   # buffers 8 and 16
    ([3, 7, 1, 0], 0.2),   # one buffer of 8: too small, the full path
    ([0, 0, 1, 0], 1.0),   # 5 valid: the smallest buffer (8)
    ([7, 7, 7, 6], 0.75),  # 31 of 32 valid: more than the largest buffer (24), the full path
]


@pytest.mark.parametrize('lengths,pack', CASES)
def test_packed_output_layer_equals_the_full_layer_and_its_gradients(lengths, pack):
  rng = np.random.default_rng(0)
  lengths = np.asarray(lengths)
  valid = np.arange(8)[None, :] <= lengths[:, None]
  targets = np.where(valid, rng.integers(0, 11, (4, 8)), 0).astype(np.int32)
  states = jnp.asarray(rng.normal(size=(4, 8, 5)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(5, 11)), jnp.float32)

  def total(states, kernel, pack):
    nll = softmax.target_nll(lambda h: h @ kernel, states, jnp.asarray(targets), jnp.asarray(valid), pack)
    return jnp.sum(nll * jnp.arange(1.0, 5.0)), nll

  grad_fn = jax.jit(jax.value_and_grad(total, argnums=(0, 1), has_aux=True), static_argnums=2)
  (_, nll), grads = grad_fn(states, kernel, pack)
  logits = np.asarray(states, np.float64) @ np.asarray(kernel, np.float64)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = -np.sum(np.where(valid, np.take_along_axis(log_p, targets[..., None], -1)[..., 0], 0.0), axis=1)
  np.testing.assert_allclose(nll, expected, rtol=1e-5)
  # d/dstates and d/dkernel in float64: softmax(o) - onehot(y) at the valid positions, row-weighted by 1..4
  weight = np.arange(1.0, 5.0)[:, None, None] * valid[..., None]
  d_logits = weight * (np.exp(log_p) - np.eye(11)[targets])
  np.testing.assert_allclose(grads[0], d_logits @ np.asarray(kernel, np.float64).T, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(grads[1], np.einsum('btd,btv->dv', np.asarray(states, np.float64), d_logits),
                             rtol=1e-4, atol=1e-5)


def test_buffers_shrink_by_sqrt2_from_pack_and_round_up_to_8():
  """The buffers a 64 x 50 batch gets with pack 0.75: 2400 / 2^(j/2), j = 0..5, rounded up to multiples of 8."""
  seen = []

  def project(h):
    seen.append(int(np.prod(h.shape[:-1])))  # rows the output layer is applied to
    return h

  states = jnp.zeros((64, 50, 3))
  softmax.target_nll(project, states, jnp.zeros((64, 50), jnp.int32), jnp.ones((64, 50), bool), 0.75)
  expected = sorted({-(-int(np.ceil(2400 / 2**(j / 2))) // 8) * 8 for j in range(6)})
  assert expected == [432, 600, 856, 1200, 1704, 2400]
  assert sorted(seen) == expected + [3200]  # the six buffers and the full [B, T] path


def test_hand_values_of_the_full_layer():
  """pack = 0 (the sentence models' former `sequence_nll`): -sum_t valid_t log softmax(o_t)[y_t]."""
  rng = np.random.default_rng(5)
  logits = rng.normal(size=(2, 3, 4))
  targets = np.array([[1, 2, 0], [3, 0, 0]])
  valid = np.array([[1, 1, 1], [1, 0, 0]], bool)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = [-(log_p[0, 0, 1] + log_p[0, 1, 2] + log_p[0, 2, 0]), -log_p[1, 0, 3]]
  nll = softmax.target_nll(lambda h: h, jnp.asarray(logits, jnp.float32), jnp.asarray(targets), valid, 0.0)
  np.testing.assert_allclose(nll, expected, rtol=1e-5)
