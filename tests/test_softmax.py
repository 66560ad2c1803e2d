"""The packed output layer (`dtr.nn.softmax.target_nll`) against the full layer in float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtr.nn import softmax

CASES = [  # (lengths of 4 rows padded to 8, pack): valid positions = lengths + 1 (words + eos)
    ([3, 7, 1, 0], 0.0),   # off: the full layer by automatic differentiation
    ([3, 7, 1, 0], 1.0),   # 15 of 32 valid, gathered from all four documents into one block
    ([3, 7, 1, 0], 0.5),   # any pack in (0, 1] is the same packed path
    ([3, 7, 1, 0], 0.2),
    ([0, 0, 1, 0], 1.0),   # 5 valid
    ([7, 7, 7, 6], 0.75),  # 31 of 32 valid
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
  np.testing.assert_allclose(jax.jit(total, static_argnums=2)(states, kernel, pack)[1], expected, rtol=1e-5)
  # d/dstates and d/dkernel in float64: softmax(o) - onehot(y) at the valid positions, row-weighted by 1..4
  weight = np.arange(1.0, 5.0)[:, None, None] * valid[..., None]
  d_logits = weight * (np.exp(log_p) - np.eye(11)[targets])
  np.testing.assert_allclose(grads[0], d_logits @ np.asarray(kernel, np.float64).T, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(grads[1], np.einsum('btd,btv->dv', np.asarray(states, np.float64), d_logits),
                             rtol=1e-4, atol=1e-5)


def test_the_loop_projects_only_the_blocks_that_hold_valid_rows(monkeypatch):
  """Blocks of 32 rows (BLOCK_ELEMENTS lowered) over 16 x 16 = 256 positions of which 70 are valid: the
  forward pass, the recomputing backward pass and the fused gradient each project 3 blocks (ceil(70 / 32)),
  counted by a callback in the layer; one compiled program serves any number of valid rows."""
  monkeypatch.setattr(softmax, 'BLOCK_ELEMENTS', 32 * 11)
  calls = []
  kernel = jnp.asarray(np.random.default_rng(2).normal(size=(5, 11)), jnp.float32)

  def project(h):
    jax.debug.callback(lambda rows: calls.append(rows.shape[0]), h)
    return h @ kernel

  states = jnp.asarray(np.random.default_rng(1).normal(size=(16, 16, 5)), jnp.float32)
  targets = jnp.ones((16, 16), jnp.int32)
  order = np.random.default_rng(4).permutation(256).reshape(16, 16)
  plain = jax.jit(lambda s, v: softmax.target_nll(project, s, targets, v, 1.0).sum())
  plain_grad = jax.jit(jax.grad(lambda s, v: softmax.target_nll(project, s, targets, v, 1.0).sum()))
  fused_grad = jax.jit(jax.grad(lambda s, v: softmax.weighted_target_nll(project, s, targets, v, jnp.ones(16),
                                                                         1.0)[0]))
  for valid_rows, expected in [(70, 3), (33, 2), (128, 4), (256, 8), (1, 1)]:
    valid = jnp.asarray(order < valid_rows)  # spread over the documents
    for fn, passes in ((plain, 1), (plain_grad, 2), (fused_grad, 1)):
      calls.clear()
      jax.block_until_ready(fn(states, valid))
      jax.effects_barrier()
      assert calls == [32] * (expected * passes), (fn, valid_rows)
  assert plain._cache_size() == plain_grad._cache_size() == fused_grad._cache_size() == 1


def test_blocks_hold_at_most_block_elements_logits_and_cover_the_buffer():
  """A block's [R, V] logits stay under BLOCK_ELEMENTS = 2^22 (R between 32 and 512 rows, a multiple of 8)."""
  for capacity, vocab, expected in [(3200, 3000, (7, 464)), (2400, 8000, (5, 480)), (8, 11, (1, 8)),
                                    (1000, 20000, (5, 200)), (2500, 16659, (11, 232)), (1000, 10**6, (32, 32))]:
    assert softmax.blocks(capacity, vocab) == expected
    count, rows = expected
    assert count * rows >= capacity and (rows <= softmax.BLOCK_ELEMENTS // vocab or rows == 32)


def test_several_blocks_sum_to_the_full_layers_values_and_gradients(monkeypatch):
  """Buffers of 32-row blocks (BLOCK_ELEMENTS lowered): the blocks' NLLs, row gradients and the kernel and
  bias gradients accumulated over blocks equal the full layer's, in float64 NumPy."""
  monkeypatch.setattr(softmax, 'BLOCK_ELEMENTS', 32 * 11)
  rng = np.random.default_rng(7)
  lengths = rng.integers(0, 15, 8)
  valid = np.arange(16)[None, :] <= lengths[:, None]
  targets = np.where(valid, rng.integers(0, 11, (8, 16)), 0).astype(np.int32)
  states, kernel, bias = rng.normal(size=(8, 16, 5)), rng.normal(size=(5, 11)), rng.normal(size=(11,))
  assert softmax.blocks(int(valid.sum()), 11)[0] >= 3  # the valid rows fill at least three blocks

  def total(states, kernel, bias):
    nll = softmax.target_nll(lambda h: h @ kernel + bias, states, jnp.asarray(targets), jnp.asarray(valid), 0.5)
    return jnp.sum(nll * jnp.arange(1.0, 9.0)), nll

  (_, nll), grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2), has_aux=True))(
      *(jnp.asarray(a, jnp.float32) for a in (states, kernel, bias)))
  logits = states @ kernel + bias
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected = -np.sum(np.where(valid, np.take_along_axis(log_p, targets[..., None], -1)[..., 0], 0.0), axis=1)
  np.testing.assert_allclose(nll, expected, rtol=1e-5)
  d_logits = np.arange(1.0, 9.0)[:, None, None] * valid[..., None] * (np.exp(log_p) - np.eye(11)[targets])
  np.testing.assert_allclose(grads[0], d_logits @ kernel.T, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(grads[1], np.einsum('btd,btv->dv', states, d_logits), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(grads[2], d_logits.sum(axis=(0, 1)), rtol=1e-4, atol=1e-4)


def _equations(jaxpr):
  """Every equation of a jaxpr and of the jaxprs in its equations' parameters (custom_vjp, cond, ...)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else [value]:
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          yield from _equations(inner)


@pytest.mark.parametrize('affine', [False, True])
@pytest.mark.parametrize('pack', [0.0, 0.75])
def test_an_output_layer_with_a_bias_under_vmap_has_the_full_layers_gradients(pack, affine):
  """A Dense layer (kernel and bias, both closed over; or given as `Affine`, whose bias the packed path folds
  into the kernel) for two members at once (`vmap`, as populations run it), against float64 NumPy: the
  packed path's own gradient reaches the layer's parameters."""
  rng = np.random.default_rng(3)
  lengths = np.array([[2, 6, 0, 4], [7, 7, 7, 5]])  # 16 and 30 valid rows
  valid = np.arange(8)[None, None, :] <= lengths[..., None]
  targets = np.where(valid, rng.integers(0, 13, (2, 4, 8)), 0).astype(np.int32)
  states = rng.normal(size=(2, 4, 8, 6))
  kernel, bias = rng.normal(size=(2, 6, 13)), rng.normal(size=(2, 13))

  def total(states, kernel, bias, targets, valid):
    layer = softmax.Affine(kernel, bias) if affine else (lambda h: h @ kernel + bias)
    nll = softmax.target_nll(layer, states, targets, valid, pack)
    return jnp.sum(nll * jnp.arange(1.0, 5.0))

  grad = jax.jit(jax.vmap(jax.grad(total, argnums=(0, 1, 2))))
  grads = grad(*(jnp.asarray(a, jnp.float32) for a in (states, kernel, bias)), jnp.asarray(targets),
               jnp.asarray(valid))
  logits = np.einsum('mbtd,mdv->mbtv', states, kernel) + bias[:, None, None, :]
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  d_logits = np.arange(1.0, 5.0)[None, :, None, None] * valid[..., None] * (p - np.eye(13)[targets])
  np.testing.assert_allclose(grads[0], np.einsum('mbtv,mdv->mbtd', d_logits, kernel), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(grads[1], np.einsum('mbtd,mbtv->mdv', states, d_logits), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(grads[2], d_logits.sum(axis=(1, 2)), rtol=1e-4, atol=1e-4)


def test_members_under_vmap_with_different_trip_counts(monkeypatch):
  """Two members whose valid rows fill 1 and 4 blocks of 32 (BLOCK_ELEMENTS lowered): under `vmap` the loop's
  trip count is batched; both the recomputing (`target_nll`) and the fused (`weighted_target_nll`) gradients
  equal float64 NumPy for each member."""
  monkeypatch.setattr(softmax, 'BLOCK_ELEMENTS', 32 * 13)
  rng = np.random.default_rng(8)
  lengths = np.stack([rng.integers(0, 3, 8), rng.integers(10, 15, 8)])  # at most 24 and at least 88 valid
  valid = np.arange(16)[None, None, :] <= lengths[..., None]
  assert [softmax.blocks(int(v.sum()), 13)[0] for v in valid] == [1, 4]
  targets = np.where(valid, rng.integers(0, 13, (2, 8, 16)), 0).astype(np.int32)
  states, kernel, bias = rng.normal(size=(2, 8, 16, 6)), rng.normal(size=(2, 6, 13)), rng.normal(size=(2, 13))
  weights = rng.random((2, 8))
  nll, expected = _float64_layer(states, kernel[:, None], bias[:, None, None], targets, valid, weights)
  args = tuple(jnp.asarray(a, jnp.float32) for a in (states, kernel, bias)) + (
      jnp.asarray(targets), jnp.asarray(valid), jnp.asarray(weights, jnp.float32))

  def plain(states, kernel, bias, targets, valid, weights):
    return jnp.sum(weights * softmax.target_nll(lambda h: h @ kernel + bias, states, targets, valid, 1.0))

  def fused(states, kernel, bias, targets, valid, weights):
    return softmax.weighted_target_nll(lambda h: h @ kernel + bias, states, targets, valid, weights, 1.0)[0]

  for fn in (plain, fused):
    total, grads = jax.jit(jax.vmap(jax.value_and_grad(fn, argnums=(0, 1, 2))))(*args)
    np.testing.assert_allclose(total, np.sum(weights * nll, axis=1), rtol=1e-5)
    for g, e in zip(grads, expected):
      np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


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


def test_a_gradient_of_the_states_alone_leaves_the_layers_gradient_out():
  """Hard EM's E-steps differentiate the encoder only: the packed backward pass then has no [d, V] product
  for the output layer's kernel (the custom VJP is told which of its inputs are differentiated)."""
  kernel = jnp.full((4, 9), 0.1)
  states, targets = jnp.ones((8, 6, 4)), jnp.zeros((8, 6), jnp.int32)
  valid = jnp.arange(6)[None, :] < jnp.arange(8)[:, None] % 6

  numpy_targets = jax.grad(lambda s: softmax.target_nll(lambda h: h @ kernel, s, np.zeros((8, 6), np.int32),
                                                        np.asarray(valid), 0.75).sum())(states)
  assert numpy_targets.shape == states.shape and bool(jnp.all(jnp.isfinite(numpy_targets)))  # NumPy inputs

  def kernel_gradient(argnums):
    f = lambda s, k: softmax.target_nll(lambda h: h @ k, s, targets, valid, 0.75).sum()
    jaxpr = jax.make_jaxpr(jax.grad(f, argnums))(states, kernel)
    shapes = {e.outvars[0].aval.shape for e in _equations(jaxpr.jaxpr) if e.primitive.name == 'dot_general'}
    return bool(shapes & {(4, 9), (9, 4)})  # the kernel's gradient, in either layout

  assert not kernel_gradient(0) and kernel_gradient((0, 1)) and kernel_gradient(1)


def _float64_layer(states, kernel, bias, targets, valid, weights):
  """NLL per document [B], and the gradients of sum_b weights_b nll_b to states, kernel and bias."""
  logits = states @ kernel + bias
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.sum(np.where(valid, np.take_along_axis(log_p, targets[..., None], -1)[..., 0], 0.0), axis=-1)
  d_logits = weights[..., None, None] * valid[..., None] * (np.exp(log_p) - np.eye(kernel.shape[-1])[targets])
  return nll, (d_logits @ np.swapaxes(kernel, -1, -2), np.einsum('...btd,...btv->...dv', states, d_logits),
               d_logits.sum(axis=(-3, -2)))


@pytest.mark.parametrize('affine', [False, True])
@pytest.mark.parametrize('pack,block_rows', [(0.0, None), (0.75, None), (0.5, 32), (1.0, 8)])
def test_weighted_nll_and_its_gradient_from_the_forward_pass_against_float64(monkeypatch, pack, block_rows,
                                                                              affine):
  """`weighted_target_nll` (the gradient formed in the forward pass) against float64 NumPy: the weighted
  loss, the per-document NLL, and the gradients to the rows, the kernel and the bias, for each subset of
  them; several blocks where block_rows is set; the NLL output carries no gradient. The layer as a function
  and as `Affine` (its bias folded into the kernel on the packed paths)."""
  if block_rows:
    monkeypatch.setattr(softmax, 'BLOCK_ELEMENTS', block_rows * 11)
  rng = np.random.default_rng(11)
  lengths = rng.integers(0, 15, 8)
  valid = np.arange(16)[None, :] <= lengths[:, None]
  targets = np.where(valid, rng.integers(0, 11, (8, 16)), 0).astype(np.int32)
  states, kernel, bias = rng.normal(size=(8, 16, 5)), rng.normal(size=(5, 11)), rng.normal(size=(11,))
  weights = rng.random(8)
  nll, grads = _float64_layer(states, kernel, bias, targets, valid, weights)
  args = tuple(jnp.asarray(a, jnp.float32) for a in (states, kernel, bias))

  def loss(states, kernel, bias):
    layer = softmax.Affine(kernel, bias) if affine else (lambda h: h @ kernel + bias)
    total, nll_B = softmax.weighted_target_nll(layer, states, jnp.asarray(targets),
                                               jnp.asarray(valid), jnp.asarray(weights, jnp.float32), pack)
    return total + 0.0 * jnp.sum(nll_B), nll_B  # a stray use of the NLL adds no gradient

  for argnums in ((0,), (1, 2), (0, 1, 2)):
    (total, nll_B), got = jax.jit(jax.value_and_grad(loss, argnums, has_aux=True))(*args)
    np.testing.assert_allclose(nll_B, nll, rtol=1e-5)
    np.testing.assert_allclose(total, np.sum(weights * nll), rtol=1e-5)
    for g, i in zip(got, argnums):
      np.testing.assert_allclose(g, grads[i], rtol=1e-4, atol=1e-5, err_msg=f'argument {i} of {argnums}')
  np.testing.assert_allclose(jax.jit(loss)(*args)[1], nll, rtol=1e-5)  # undifferentiated: the forward alone
  nll_only = jax.grad(lambda s: jnp.sum(loss(s, *args[1:])[1]))(args[0])
  assert not np.any(np.asarray(nll_only))


def test_weighted_nll_under_vmap_and_with_the_rows_alone():
  """Two members at once (`vmap`, 16 and 30 valid rows) against float64 NumPy; a gradient
  of the rows alone (Hard EM's E-steps) forms no [d, V] product and the full step one logits product fewer
  than `target_nll`'s forward and backward passes."""
  rng = np.random.default_rng(3)
  lengths = np.array([[2, 6, 0, 4], [7, 7, 7, 5]])
  valid = np.arange(8)[None, None, :] <= lengths[..., None]
  targets = np.where(valid, rng.integers(0, 13, (2, 4, 8)), 0).astype(np.int32)
  states, kernel, bias = rng.normal(size=(2, 4, 8, 6)), rng.normal(size=(2, 6, 13)), rng.normal(size=(2, 13))
  weights = np.array([[0.5, 1.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0]])

  def total(states, kernel, bias, targets, valid, weights):
    return softmax.weighted_target_nll(lambda h: h @ kernel + bias, states, targets, valid, weights, 0.75)[0]

  grads = jax.jit(jax.vmap(jax.grad(total, argnums=(0, 1, 2))))(
      *(jnp.asarray(a, jnp.float32) for a in (states, kernel, bias)), jnp.asarray(targets), jnp.asarray(valid),
      jnp.asarray(weights, jnp.float32))
  _, expected = _float64_layer(states, kernel[:, None], bias[:, None, None], targets, valid, weights)
  for g, e in zip(grads, expected):
    np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)

  kernel1, states1 = jnp.full((4, 9), 0.1), jnp.ones((8, 6, 4))
  targets1, valid1 = jnp.zeros((8, 6), jnp.int32), jnp.arange(6)[None, :] < jnp.arange(8)[:, None] % 6

  def products(fn, argnums):
    jaxpr = jax.make_jaxpr(jax.grad(fn, argnums))(states1, kernel1)
    return [e.outvars[0].aval.shape for e in _equations(jaxpr.jaxpr) if e.primitive.name == 'dot_general']

  fused = lambda s, k: softmax.weighted_target_nll(lambda h: h @ k, s, targets1, valid1, jnp.ones(8), 0.75)[0]
  plain = lambda s, k: softmax.target_nll(lambda h: h @ k, s, targets1, valid1, 0.75).sum()
  kernel_gradient = {(4, 9), (9, 4)}  # in either layout
  assert not kernel_gradient & set(products(fused, 0)) and kernel_gradient & set(products(fused, (0, 1)))
  assert len(products(fused, (0, 1))) < len(products(plain, (0, 1)))


def test_an_affine_layers_bias_is_a_row_of_the_kernel():
  """With `Affine` the packed paths form the logits and the kernel's and bias's gradients in the products
  ([h, 1] [W; b]: a [d + 1, V] kernel gradient) and never add the bias to a block of logits; called, `Affine`
  is h W + b."""
  rng = np.random.default_rng(5)
  states, kernel, bias = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((4, 8, 6), (6, 13), (13,)))
  targets, valid = jnp.asarray(rng.integers(0, 13, (4, 8)), jnp.int32), jnp.ones((4, 8), bool)
  np.testing.assert_allclose(softmax.Affine(kernel, bias)(states), states @ kernel + bias, rtol=1e-6)

  def shapes(layer, primitive):
    loss = lambda s, k, b: softmax.weighted_target_nll(layer(k, b), s, targets, valid, jnp.ones(4), 1.0)[0]
    jaxpr = jax.make_jaxpr(jax.grad(loss, (0, 1, 2)))(states, kernel, bias)
    return {tuple(e.outvars[0].aval.shape) for e in _equations(jaxpr.jaxpr) if e.primitive.name == primitive}

  affine, plain = softmax.Affine, lambda k, b: (lambda h: h @ k + b)
  folded, unfolded = {(7, 13), (13, 7)}, {(6, 13), (13, 6)}  # the kernel's gradient, in either layout
  assert folded & shapes(affine, 'dot_general') and not unfolded & shapes(affine, 'dot_general')
  assert unfolded & shapes(plain, 'dot_general')
  assert (32, 13) in shapes(plain, 'add') and (32, 13) not in shapes(affine, 'add')  # one block of 32 rows
