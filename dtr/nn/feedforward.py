"""Feed-forward networks over sparse bag-of-words inputs.

Documents arrive in the flat layout of `dtr.data.flat_rows`, one group per device: `ids_GxT` (term ids),
`vals_GxT` (weights such as TF-IDF, 0 on padding), `seg_GxT` (which of the group's n documents each entry
belongs to) and `mask_GxN` (1 for real documents). The first layer is an embedding bag,
y_d = sum_{entries e of d} vals[e] * W[ids[e]] + b, which equals the dense product x @ W + b without ever
building the [B, V] matrix; outputs are [G * n, F], documents in group order.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def uniform_init(scale: float) -> Callable:
  """U(-scale, scale), the initialisation used by the AMMI reference for every parameter."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


def num_docs(batch) -> int:
  """Documents in a flat batch (static: read from the mask's shape)."""
  return batch['mask'].shape[0] * batch['mask'].shape[1]


class SparseLinear(nn.Module):
  """Dense layer over flat sparse documents: y = x @ W + b, x given as (ids, vals, seg)."""

  vocab_size: int
  features: int
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, batch) -> jax.Array:
    kernel_VxF = self.param('kernel', self.kernel_init, (self.vocab_size, self.features))
    bias_F = self.param('bias', self.bias_init, (self.features,))
    per_group = batch['mask'].shape[-1]
    rows_GxTxF = jnp.take(kernel_VxF, batch['ids'], axis=0) * batch['vals'][..., None].astype(kernel_VxF.dtype)
    sums_GxNxF = jax.vmap(lambda r, s: jax.ops.segment_sum(r, s, per_group, indices_are_sorted=True))(
        rows_GxTxF, batch['seg'])
    return sums_GxNxF.reshape(-1, self.features) + bias_F


class SparseMLP(nn.Module):
  """SparseLinear input layer, then `len(hidden)` ReLU layers; `hidden=()` is a single linear map."""

  vocab_size: int
  hidden: Sequence[int]
  out_features: int
  init_scale: Any = None  # None: Flax defaults; else U(-s, s) for all weights and biases (s may be traced)

  @nn.compact
  def __call__(self, batch) -> jax.Array:
    kw = {}
    if self.init_scale is not None:
      kw = dict(kernel_init=uniform_init(self.init_scale), bias_init=uniform_init(self.init_scale))
    widths = list(self.hidden) + [self.out_features]
    x = SparseLinear(self.vocab_size, widths[0], **kw)(batch)
    for width in widths[1:]:
      x = nn.Dense(width, **kw)(nn.relu(x))
    return x
