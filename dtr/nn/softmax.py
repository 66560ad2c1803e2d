"""The output softmax layer of sequence models, paid for only at the positions that are predicted.

The vocabulary projection o = project(h) (d x V per position) is most of a text model's step; a batch padded
to width T holds B T positions of which only the valid ones count. `target_nll` gathers those first when a
fixed buffer holds them.
"""

import math

import jax
import jax.numpy as jnp


def target_nll(project, states_BxTxD, targets_BxT, valid_BxT, pack: float = 0.0) -> jax.Array:
  """Summed next-token NLL per document [B]: sum_t valid_t (logsumexp_v o_tv - o_{t, y_t}), o = project(h).

  The output layer (d x V, the step's largest cost) is applied only where it is needed. With `pack` in (0, 1]
  the valid positions are gathered first into a buffer of C = ceil(pack B T) rows (rounded up to 8), so a
  batch padded to width T pays for C rows instead of B T; a batch with more valid positions than C takes the
  full [B, T] path instead (`lax.cond`; under `vmap` both run). Either path gives the same numbers and
  gradients. pack = 0: the full path always.
  """
  batch, length = targets_BxT.shape
  n = batch * length

  def full(_):
    logits_BxTxV = project(states_BxTxD)
    nll_BxT = (jax.nn.logsumexp(logits_BxTxV, axis=-1)
               - jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], -1)[..., 0])
    return jnp.sum(jnp.where(valid_BxT, nll_BxT, 0.0), axis=1)

  capacity = min(n, -(-int(math.ceil(pack * n)) // 8) * 8) if pack > 0 else n
  if capacity >= n:
    return full(None)

  def packed(_):
    flat_valid = valid_BxT.reshape(-1)
    (index_C,) = jnp.nonzero(flat_valid, size=capacity, fill_value=0)
    real_C = jnp.arange(capacity) < jnp.sum(flat_valid)
    logits_CxV = project(states_BxTxD.reshape(n, -1)[index_C])
    target_C = targets_BxT.reshape(-1)[index_C]
    nll_C = jax.nn.logsumexp(logits_CxV, axis=-1) - jnp.take_along_axis(logits_CxV, target_C[:, None], -1)[:, 0]
    return jax.ops.segment_sum(jnp.where(real_C, nll_C, 0.0), index_C // length, num_segments=batch)

  return jax.lax.cond(jnp.sum(valid_BxT) <= capacity, packed, full, None)
