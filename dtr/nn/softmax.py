"""The output softmax layer of sequence models, paid for only at the positions that are predicted.

The vocabulary projection o = project(h) (d x V per position) is most of a text model's step; a batch padded
to width T holds B T positions of which only the valid ones count. `target_nll` gathers those first when a
fixed buffer holds them.
"""

import functools
import math

import jax
import jax.numpy as jnp


LEVELS = 12  # packed buffers of pack B T 2^(-j/4) positions, j = 0 .. LEVELS - 1 (down to pack B T / 7.4)


def target_nll(project, states_BxTxD, targets_BxT, valid_BxT, pack: float = 0.0) -> jax.Array:
  """Summed next-token NLL per document [B]: sum_t valid_t (logsumexp_v o_tv - o_{t, y_t}), o = project(h).

  `project` is an output layer (h W + b). It is applied only where it is needed: with `pack`
  in (0, 1] the valid positions are gathered first into the smallest buffer that holds them (`buffer_sizes`:
  pack B T positions, and from there steps of 2^(1/4) down LEVELS - 1 times and up to all B T), so a batch
  padded to width T pays for at most 2^(1/4) = 1.19 times its valid positions (above the smallest buffer)
  instead of B T (`lax.switch` over the buffers). Under `vmap` with a batched switch index (members that
  each read their own batches) every branch runs, each with its own [B T, V] residual (below): at pack 0.75
  up to 14 buffers, about 6.6 B T rows of products a member, so such populations are better off at pack 0.
  Members that share their batches share the index, and only the taken branch runs.

  The packed path has its own gradient (`_packed_nll`): the forward pass keeps softmax(o) - onehot(y) of the
  taken buffer (in a [B T, V] residual, the size of the full layer's logits), so the backward pass is the two
  products of the output layer's gradient and never recomputes the logits (for a linear `project`; any other
  is still exact, its forward pass then runs again inside the backward one). Every path gives the same numbers
  and gradients. pack = 0: the full [B, T] layer by automatic differentiation.
  """
  batch, length = targets_BxT.shape
  n = batch * length
  rows_NxD = states_BxTxD.reshape(n, -1)  # [N, d] rows: XLA:CPU compiles the full layer's gradient faster
  if pack <= 0:
    nll_N = _row_nll(project(rows_NxD), targets_BxT.reshape(n))
    return jnp.sum(jnp.where(valid_BxT, nll_N.reshape(batch, length), 0.0), axis=1)
  capacities = buffer_sizes(pack, n)
  linear, consts = jax.closure_convert(project, rows_NxD[:1])
  return _packed_nll(linear, capacities, batch, rows_NxD, targets_BxT.reshape(n).astype(jnp.int32),
                     valid_BxT.reshape(n), *consts)


def buffer_sizes(pack: float, n: int) -> tuple[int, ...]:
  """The packed buffers' rows for n = B T positions: pack n 2^(-j/4) for j = LEVELS - 1, ..., 0, -1, ... (the
  negative j while below n), each rounded up to a multiple of 8, then n."""
  above = int(math.floor(4 * math.log2(1 / pack))) + 1 if pack < 1 else 0  # 2^(j/4) pack < 1 for j < above
  sizes = {-(-int(math.ceil(pack * n / 2**(j / 4))) // 8) * 8 for j in range(-above, LEVELS)}
  return tuple(sorted(c for c in sizes if c < n)) + (n,)


def _row_nll(logits_NxV, targets_N):
  return jax.nn.logsumexp(logits_NxV, axis=-1) - jnp.take_along_axis(logits_NxV, targets_N[:, None], -1)[:, 0]


def _level(capacities, valid_N):
  """The index of the first buffer that holds the valid positions."""
  return jnp.sum(jnp.sum(valid_N) > jnp.asarray(capacities[:-1]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _packed_nll(linear, capacities, batch, rows_NxD, targets_N, valid_N, *consts):
  """NLL per document [B] of the valid rows, gathered into the smallest of `capacities` that holds them."""
  return _packed(linear, capacities, batch, rows_NxD, targets_N, valid_N, consts, gradient=False)[0]


def _packed(linear, capacities, batch, rows_NxD, targets_N, valid_N, consts, gradient: bool):
  """(NLL per document [B], and with `gradient` the residuals of `_packed_bwd`: softmax(o) - onehot(y) of the
  taken buffer's rows, zero past them, [N, V]; their positions [N])."""
  n = rows_NxD.shape[0]
  length = n // batch

  def branch(capacity):
    def run(_):
      (index_C,) = jnp.nonzero(valid_N, size=capacity, fill_value=0)
      real_C = jnp.arange(capacity) < jnp.sum(valid_N)
      logits_CxV = linear(rows_NxD[index_C], *consts)
      targets_C = targets_N[index_C]
      lse_C = jax.nn.logsumexp(logits_CxV, axis=-1)
      nll_C = jnp.where(real_C, lse_C - jnp.take_along_axis(logits_CxV, targets_C[:, None], -1)[:, 0], 0.0)
      nll_B = jax.ops.segment_sum(nll_C, index_C // length, num_segments=batch)
      if not gradient:
        return nll_B
      onehot_CxV = jnp.arange(logits_CxV.shape[-1])[None, :] == targets_C[:, None]
      d_logits_CxV = jnp.where(real_C[:, None], jnp.exp(logits_CxV - lse_C[:, None]) - onehot_CxV, 0.0)
      pad = n - capacity
      return nll_B, (jnp.pad(d_logits_CxV, ((0, pad), (0, 0))), jnp.pad(index_C, (0, pad)))
    return run

  out = jax.lax.switch(_level(capacities, valid_N), [branch(c) for c in capacities], None)
  return out if gradient else (out, None)


def _packed_fwd(linear, capacities, batch, rows_NxD, targets_N, valid_N, *consts):
  nll_B, (d_logits_NxV, index_N) = _packed(linear, capacities, batch, rows_NxD, targets_N, valid_N, consts,
                                           gradient=True)
  return nll_B, (rows_NxD, valid_N, d_logits_NxV, index_N, consts)


def _packed_bwd(linear, capacities, batch, residuals, g_B):
  """Two switches over the buffers, one for d/d rows and one for d/d the layer's parameters, so that a
  gradient that needs only one of them (Hard EM's E-steps: the encoder's) leaves the other's product out of
  the program (XLA removes a conditional whose results are unused, not one of its results)."""
  rows_NxD, valid_N, d_logits_NxV, index_N, consts = residuals
  n = rows_NxD.shape[0]
  length = n // batch
  level = _level(capacities, valid_N)

  def taken(capacity):  # the buffer's rows and its d loss / d logits (0 on the buffer's padding)
    index_C = index_N[:capacity]
    return index_C, rows_NxD[index_C], d_logits_NxV[:capacity] * g_B[index_C // length][:, None]

  def rows_branch(capacity):
    def run(_):
      index_C, rows_CxD, d_logits_CxV = taken(capacity)
      _, pullback = jax.vjp(lambda r: linear(r, *consts), rows_CxD)  # linear: its forward product is unused
      return jnp.zeros_like(rows_NxD).at[index_C].add(pullback(d_logits_CxV)[0])
    return run

  def consts_branch(capacity):
    def run(_):
      _, rows_CxD, d_logits_CxV = taken(capacity)
      _, pullback = jax.vjp(lambda *c: linear(rows_CxD, *c), *consts)
      return tuple(pullback(d_logits_CxV))
    return run

  d_rows_NxD = jax.lax.switch(level, [rows_branch(c) for c in capacities], None)
  d_consts = jax.lax.switch(level, [consts_branch(c) for c in capacities], None) if consts else ()
  return (d_rows_NxD, None, None, *d_consts)


_packed_nll.defvjp(_packed_fwd, _packed_bwd)
