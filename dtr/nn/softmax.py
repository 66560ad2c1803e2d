"""The output softmax layer of sequence models, paid for only at the positions that are predicted.

The vocabulary projection o = project(h) (d x V per position) is most of a text model's step; a batch padded
to width T holds B T positions of which only the valid ones count. `target_nll` gathers those to the front
of a buffer and projects them a block of rows at a time, in a loop that stops after the last block holding a
valid row. Training losses use `weighted_target_nll` (a weighted sum over documents of the same NLL), whose
gradient is formed in the forward pass from the same logits, so that a training step projects each block
once.

`project` is any function of the rows; an output layer given as its parameters (`Affine`: h W + b) is
projected with its bias as one more row of the kernel (`_packed_inputs`).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Affine(NamedTuple):
  """The output layer h W + b given by its parameters (kernel W [d, V], bias b [V] or None), so that the
  packed paths can fold the bias into the product: [h, 1] [W; b]. Then the logits come out of the product
  whole, and the bias's gradient is one more row of the kernel's, instead of a pass that adds b to each
  block of logits and another that sums each block's columns (docs/results/classification.md, Speed,
  "the bias as a row of the kernel"). Called, it is the plain layer."""

  kernel: jax.Array
  bias: jax.Array | None = None

  def __call__(self, h_xD: jax.Array) -> jax.Array:
    out = h_xD @ self.kernel
    return out if self.bias is None else out + self.bias


def target_nll(project, states_BxTxD, targets_BxT, valid_BxT, pack: float = 0.0) -> jax.Array:
  """Summed next-token NLL per document [B]: sum_t valid_t (logsumexp_v o_tv - o_{t, y_t}), o = project(h).

  `project` is an output layer (h W + b). With `pack` > 0 (`model.pack_targets`: any value in (0, 1] turns
  it on) it is applied only where it is needed: the valid positions are gathered to the front of a buffer of
  all B T rows, cut into blocks of rows (`blocks`: at most BLOCK_ELEMENTS logits each), and a loop with a
  traced trip count (`lax.fori_loop`) projects only the blocks that hold valid rows: a batch pays for its
  valid positions rounded up to a whole block, whatever its padded width, with one compiled program. Under
  `vmap` with batched trip counts (members that each read their own batches) the loop runs every member to
  the largest member's count.

  The packed path has its own gradient (`_packed_nll`): the forward pass keeps no logits, and the backward
  pass runs each block again (its logits, softmax(o) - onehot(y) and the layer's two gradient products), so
  that no [N, V] array is ever written whole and each block's softmax passes stay in the larger caches. That
  is one product more than keeping the logits, and on a CPU much faster than the memory passes over a whole
  [N, V] array it saves (docs/results/sentences.md, "blocks of rows"); training losses avoid the extra
  product with `weighted_target_nll`. A gradient of the rows alone (Hard EM's E-steps) runs without the
  kernel's product. Every path gives the same numbers and gradients. pack = 0: the full [B, T] layer by
  automatic differentiation.
  """
  batch, length = targets_BxT.shape
  n = batch * length
  rows_NxD = states_BxTxD.reshape(n, -1)  # [N, d] rows: XLA:CPU compiles the full layer's gradient faster
  if pack <= 0:
    nll_N = _row_nll(project(rows_NxD), targets_BxT.reshape(n))
    return jnp.sum(jnp.where(valid_BxT, nll_N.reshape(batch, length), 0.0), axis=1)
  linear, consts, rows_NxD, vocab, targets_N, valid_N = _packed_inputs(project, rows_NxD, targets_BxT, valid_BxT)
  return _packed_nll(linear, batch, vocab, rows_NxD, targets_N, valid_N, *consts)


def _packed_inputs(project, rows_NxD, targets_BxT, valid_BxT):
  """(linear, its constants, rows [N, d'], vocabulary size, targets [N], valid [N]): `project` as a function of
  the rows and of its closed-over arrays (`jax.closure_convert`), so that the packed paths' custom VJPs can
  differentiate them. An `Affine` with a bias becomes [h, 1] [W; b] (rows with a column of ones, d' = d + 1);
  automatic differentiation of the two concatenations gives back the gradients of h, W and b."""
  n = rows_NxD.shape[0]
  if isinstance(project, Affine):  # a function, not the (unhashable) tuple of arrays, for closure_convert
    kernel, bias = project
    if bias is not None:
      rows_NxD = jnp.concatenate([rows_NxD, jnp.ones((n, 1), rows_NxD.dtype)], axis=-1)
      kernel = jnp.concatenate([kernel, bias[None].astype(kernel.dtype)], axis=0)
    project = lambda h_xD: h_xD @ kernel
  linear, consts = jax.closure_convert(project, rows_NxD[:1])
  targets_N = jnp.asarray(targets_BxT, jnp.int32).reshape(n)  # NumPy inputs too: they are indexed by tracers
  vocab = jax.eval_shape(linear, rows_NxD[:1], *consts).shape[-1]
  return linear, consts, rows_NxD, vocab, targets_N, jnp.asarray(valid_BxT).reshape(n)


def _row_nll(logits_NxV, targets_N):
  return jax.nn.logsumexp(logits_NxV, axis=-1) - jnp.take_along_axis(logits_NxV, targets_N[:, None], -1)[:, 0]


# Logits per block of rows (16 MiB in float32). Every block adds its [d, V] share of the kernel's gradient to
# the running sum, so smaller blocks pay that pass more often (at d = 512, V = 16,659: 45 blocks of 2^20 logits
# took 1.28x the time of 11 of 2^22; docs/results/classification.md, Speed).
BLOCK_ELEMENTS = 2**22


def blocks(capacity: int, vocab: int) -> tuple[int, int]:
  """(blocks, rows per block) that cover a buffer of `capacity` rows: at most BLOCK_ELEMENTS // vocab rows a
  block (a multiple of 8 between 32 and 512), as few blocks as that allows, their rows a multiple of 8 as
  even as possible (so blocks x rows exceeds capacity by less than 8 a block)."""
  most = min(512, max(32, BLOCK_ELEMENTS // max(vocab, 1) // 8 * 8))
  count = -(-capacity // most)
  return count, -(-capacity // (8 * count)) * 8


def _gather(vocab, rows_NxD, targets_N, valid_N):
  """The valid rows first (then padding), in blocks that cover all N rows (`blocks`): (rows [K R, d],
  targets [K R], their positions [K R], whether each is real [K R], rows per block R, blocks that hold the
  valid rows: a traced scalar, the loops' trip count)."""
  count, size = blocks(rows_NxD.shape[0], vocab)
  (index_P,) = jnp.nonzero(valid_N, size=count * size, fill_value=0)
  used = jnp.sum(valid_N.astype(jnp.int32))
  real_P = jnp.arange(count * size) < used
  return rows_NxD[index_P], targets_N[index_P], index_P, real_P, size, (used + size - 1) // size


def _block(size, i, *arrays_P):
  """Block i (traced) of arrays [K R, ...]: their rows i R .. i R + R - 1."""
  return tuple(jax.lax.dynamic_slice_in_dim(a, i * size, size) for a in arrays_P)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _packed_nll(linear, batch, vocab, rows_NxD, targets_N, valid_N, *consts):
  """NLL per document [B] of the valid rows, gathered to the front of a buffer and projected block by block
  (`blocks`), only the blocks that hold valid rows: no [N, V] array is ever whole."""
  return _blocked_nll(linear, batch, vocab, rows_NxD, targets_N, valid_N, consts)


def _blocked_nll(linear, batch, vocab, rows_NxD, targets_N, valid_N, consts):
  n = rows_NxD.shape[0]
  rows_PxD, targets_P, index_P, real_P, size, trips = _gather(vocab, rows_NxD, targets_N, valid_N)

  def body(i, nll_P):
    rows_RxD, targets_R = _block(size, i, rows_PxD, targets_P)
    return jax.lax.dynamic_update_slice_in_dim(nll_P, _row_nll(linear(rows_RxD, *consts), targets_R), i * size, 0)

  nll_P = jax.lax.fori_loop(0, trips, body, jnp.zeros(real_P.shape, rows_NxD.dtype))
  return jax.ops.segment_sum(jnp.where(real_P, nll_P, 0.0), index_P // (n // batch), num_segments=batch)


def _packed_fwd(linear, batch, vocab, rows_NxD, targets_N, valid_N, *consts):
  """With symbolic zeros: each argument comes with whether it is differentiated (`perturbed`); the residuals'
  structure records which gradients the backward pass computes (a Hard EM E-step's: the rows' alone)."""
  values = lambda args: tuple(a.value for a in args)
  needs = {'rows': rows_NxD.perturbed, 'consts': any(c.perturbed for c in consts)}
  nll_B = _packed_nll(linear, batch, vocab, rows_NxD.value, targets_N.value, valid_N.value, *values(consts))
  return nll_B, ((rows_NxD.value, targets_N.value, valid_N.value, values(consts)),
                 {key: () for key, need in needs.items() if need})  # keys: static, no arrays


def _packed_bwd(linear, batch, vocab, residuals, g_B):
  """The gradients from the blocks run again (`_blocked_gradients`, each document's rows weighted by its
  cotangent), so that softmax, gradient and products of a block stay in cache. Only the gradients the
  forward pass was told are needed are computed (`_packed_fwd`)."""
  (rows_NxD, targets_N, valid_N, consts), needs = residuals
  if not needs or isinstance(g_B, jax.custom_derivatives.SymbolicZero):
    return (None,) * (3 + len(consts))
  _, d_rows_NxD, d_consts = _blocked_gradients(linear, batch, vocab, rows_NxD, targets_N, valid_N, g_B, consts,
                                               'rows' in needs, 'consts' in needs, with_nll=False)
  return (d_rows_NxD, None, None, *(d_consts or (None,) * len(consts)))


def _blocked_gradients(linear, batch, vocab, rows_NxD, targets_N, valid_N, weights_B, consts,
                       needs_rows: bool, needs_consts: bool, with_nll: bool):
  """(NLL [B] or None, gradient of sum_b weights_b nll_b to the rows [N, d] or None, to `consts` or ()) in
  one pass over the blocks that hold valid rows: each block's logits, their exponentials (giving the block's
  NLL when `with_nll`, and (softmax(o) - onehot(y)) times its document's weight) and the layer's pullback of
  that, only for the gradients asked for."""
  n = rows_NxD.shape[0]
  rows_PxD, targets_P, index_P, real_P, size, trips = _gather(vocab, rows_NxD, targets_N, valid_N)
  doc_P = index_P // (n // batch)
  weight_P = jnp.where(real_P, weights_B[doc_P], 0.0)

  def block(rows_RxD, targets_R, weight_R):
    if needs_consts and needs_rows:
      logits_RxV, pullback = jax.vjp(linear, rows_RxD, *consts)
    elif needs_consts:
      logits_RxV, pullback = jax.vjp(lambda *c: linear(rows_RxD, *c), *consts)
    else:
      logits_RxV, pullback = jax.vjp(lambda r: linear(r, *consts), rows_RxD)
    top_R = jax.lax.stop_gradient(jnp.max(logits_RxV, axis=-1))
    exp_RxV = jnp.exp(logits_RxV - top_R[:, None])
    total_R = jnp.sum(exp_RxV, axis=-1)
    nll_R = None
    if with_nll:
      nll_R = top_R + jnp.log(total_R) - jnp.take_along_axis(logits_RxV, targets_R[:, None], -1)[:, 0]
    onehot_RxV = jnp.arange(vocab)[None, :] == targets_R[:, None]
    d_logits_RxV = (exp_RxV / total_R[:, None] - onehot_RxV) * weight_R[:, None]
    grads = pullback(d_logits_RxV) if (needs_rows or needs_consts) else ()
    return nll_R, (grads[0] if needs_rows else None), (tuple(grads[-len(consts):]) if needs_consts else ())

  def body(i, carry):
    d_consts, d_rows_PxD, nll_P = carry
    nll_R, d_rows_RxD, d_block = block(*_block(size, i, rows_PxD, targets_P, weight_P))
    put = lambda whole, part: None if part is None else jax.lax.dynamic_update_slice_in_dim(whole, part, i * size, 0)
    return jax.tree.map(jnp.add, d_consts, d_block), put(d_rows_PxD, d_rows_RxD), put(nll_P, nll_R)

  carry = (tuple(jnp.zeros_like(c) for c in consts) if needs_consts else (),
           jnp.zeros_like(rows_PxD) if needs_rows else None,
           jnp.zeros(real_P.shape, rows_NxD.dtype) if with_nll else None)
  d_consts, d_rows_PxD, nll_P = jax.lax.fori_loop(0, trips, body, carry)
  nll_B = d_rows_NxD = None
  if with_nll:
    nll_B = jax.ops.segment_sum(jnp.where(real_P, nll_P, 0.0), doc_P, num_segments=batch)
  if needs_rows:
    d_rows_NxD = jnp.zeros_like(rows_NxD).at[index_P].add(d_rows_PxD)  # rows past the valid ones add 0
  return nll_B, d_rows_NxD, d_consts


_packed_nll.defvjp(_packed_fwd, _packed_bwd, symbolic_zeros=True)


def weighted_target_nll(project, states_BxTxD, targets_BxT, valid_BxT, weights_B,
                        pack: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """(sum_b weights_b nll_b, nll_B): a training loss made of `target_nll`'s per-document NLL, and that NLL.

  Differentiate the first output; the second (for metrics) carries no gradient, and neither do the weights
  (a loss's document weights, e.g. mask / number of documents). Values and gradients equal those of
  sum(weights_B * target_nll(...)). With `pack` > 0 the gradient is computed in the forward pass
  (`_fused_nll`): each block's logits are formed once, and the same exponentials give the block's NLL and
  softmax(o) - onehot(y), whose products with the layer's inputs are kept as the residuals (the rows' [N, d]
  and the layer's parameters' gradients, never an [N, V] array), so a training step runs one logits product
  fewer than `target_nll`'s forward and recomputing backward passes. Evaluated without differentiation it
  runs `target_nll`'s forward pass alone.
  """
  weights_B = jax.lax.stop_gradient(jnp.asarray(weights_B, jnp.float32))
  if pack <= 0:
    nll_B = target_nll(project, states_BxTxD, targets_BxT, valid_BxT, 0.0)
    return jnp.sum(weights_B * nll_B), jax.lax.stop_gradient(nll_B)
  batch, length = targets_BxT.shape
  n = batch * length
  rows_NxD = states_BxTxD.reshape(n, -1)
  linear, consts, rows_NxD, vocab, targets_N, valid_N = _packed_inputs(project, rows_NxD, targets_BxT, valid_BxT)
  loss, nll_B = _fused_nll(linear, batch, vocab, rows_NxD, targets_N, valid_N, weights_B, *consts)
  return loss, jax.lax.stop_gradient(nll_B)  # so the second output's cotangent is always zero (`_fused_bwd`)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _fused_nll(linear, batch, vocab, rows_NxD, targets_N, valid_N, weights_B, *consts):
  nll_B = _blocked_nll(linear, batch, vocab, rows_NxD, targets_N, valid_N, consts)
  return jnp.sum(weights_B * nll_B), nll_B


def _fused_fwd(linear, batch, vocab, rows_NxD, targets_N, valid_N, weights_B, *consts):
  """The loss, the NLL and the gradients of the loss that are needed (the arguments' `perturbed`), in one
  pass over the blocks that hold valid rows (`_blocked_gradients`)."""
  needs_consts = any(c.perturbed for c in consts)
  consts = tuple(c.value for c in consts)
  nll_B, d_rows_NxD, d_consts = _blocked_gradients(
      linear, batch, vocab, rows_NxD.value, targets_N.value, valid_N.value, weights_B.value, consts,
      rows_NxD.perturbed, needs_consts, with_nll=True)
  return ((jnp.sum(weights_B.value * nll_B), nll_B),
          (d_rows_NxD, d_consts if needs_consts else (None,) * len(consts)))


def _fused_bwd(linear, batch, vocab, residuals, cotangents):
  """The kept gradients times the loss's cotangent. The NLL output's cotangent is zero: `weighted_target_nll`
  returns it through stop_gradient."""
  d_rows_NxD, d_consts = residuals
  g, _ = cotangents
  if isinstance(g, jax.custom_derivatives.SymbolicZero):
    return (None,) * (4 + len(d_consts))
  scale = lambda a: None if a is None else g * a
  return (scale(d_rows_NxD), None, None, None, *(scale(d) for d in d_consts))


_fused_nll.defvjp(_fused_fwd, _fused_bwd, symbolic_zeros=True)
