"""The output softmax layer of sequence models, paid for only at the positions that are predicted.

The vocabulary projection o = project(h) (d x V per position) is most of a text model's step; a batch padded
to width T holds B T positions of which only the valid ones count. `target_nll` gathers those first when a
fixed buffer holds them.
"""

import math

import jax
import jax.numpy as jnp


LEVELS = 6  # packed buffers of pack B T 2^(-j/2) positions, j = 0 .. LEVELS - 1 (down to pack B T / 5.7)


def target_nll(project, states_BxTxD, targets_BxT, valid_BxT, pack: float = 0.0) -> jax.Array:
  """Summed next-token NLL per document [B]: sum_t valid_t (logsumexp_v o_tv - o_{t, y_t}), o = project(h).

  The output layer (d x V, the step's largest cost) is applied only where it is needed. With `pack` in (0, 1]
  the valid positions are gathered first into the smallest buffer that holds them of C_j = ceil(pack B T /
  2^(j/2)) rows (j = 0 .. LEVELS - 1, each rounded up to 8), so a batch padded to width T pays for at most
  sqrt(2) times its valid positions (above the smallest buffer) instead of B T; a batch with more valid
  positions than C_0 takes the full [B, T] path
  (`lax.switch` over the buffers; under `vmap` every branch runs, so populations of members pay for all of
  them). The packed branches are rematerialised (`jax.checkpoint`): the gradient of a switch carries every
  branch's residuals, zero-filled where the branch was not taken, and the packed logits would be most of them;
  so the backward pass recomputes the taken buffer's logits instead. Every path gives the same numbers and
  gradients. pack = 0: the full path always.
  """
  batch, length = targets_BxT.shape
  n = batch * length

  def row_nll(states_NxD, targets_N):  # on [N, d] rows: XLA:CPU compiles the gradient of a [B, T, d] form slower
    logits_NxV = project(states_NxD)
    return jax.nn.logsumexp(logits_NxV, axis=-1) - jnp.take_along_axis(logits_NxV, targets_N[:, None], -1)[:, 0]

  def full(_):
    nll_N = row_nll(states_BxTxD.reshape(n, -1), targets_BxT.reshape(n))
    return jnp.sum(jnp.where(valid_BxT, nll_N.reshape(batch, length), 0.0), axis=1)

  def packed(capacity):
    def branch(_):
      flat_valid = valid_BxT.reshape(-1)
      (index_C,) = jnp.nonzero(flat_valid, size=capacity, fill_value=0)
      real_C = jnp.arange(capacity) < jnp.sum(flat_valid)
      nll_C = row_nll(states_BxTxD.reshape(n, -1)[index_C], targets_BxT.reshape(-1)[index_C])
      return jax.ops.segment_sum(jnp.where(real_C, nll_C, 0.0), index_C // length, num_segments=batch)
    return branch

  if pack <= 0:
    return full(None)
  capacities = sorted({-(-int(math.ceil(pack * n / 2**(j / 2))) // 8) * 8 for j in range(LEVELS)})
  capacities = [c for c in capacities if c < n]
  if not capacities:
    return full(None)
  count = jnp.sum(valid_BxT)
  level = jnp.sum(count > jnp.asarray(capacities))  # the first buffer that holds them; len(capacities): none
  return jax.lax.switch(level, [jax.checkpoint(packed(c)) for c in capacities] + [full], None)
