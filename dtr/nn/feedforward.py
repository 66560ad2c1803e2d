"""Feed-forward networks over sparse bag-of-words inputs.

Documents arrive as padded sparse rows: `ids_BxL` (int32 term ids) and `vals_BxL` (float weights, e.g. TF-IDF,
0 on padding). The first layer is an embedding bag, sum_l vals[b, l] * W[ids[b, l]], which equals the dense
product x @ W without ever building the [B, V] matrix.
"""

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def uniform_init(scale: float) -> Callable:
  """U(-scale, scale), the initialisation used by the AMMI reference for every parameter."""

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)

  return init


class SparseLinear(nn.Module):
  """Dense layer over padded sparse rows: y = x @ W + b with x given as (ids, vals)."""

  vocab_size: int
  features: int
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, ids_BxL: jax.Array, vals_BxL: jax.Array) -> jax.Array:
    kernel_VxF = self.param('kernel', self.kernel_init, (self.vocab_size, self.features))
    bias_F = self.param('bias', self.bias_init, (self.features,))
    rows_BxLxF = jnp.take(kernel_VxF, ids_BxL, axis=0)
    return jnp.einsum('bl,blf->bf', vals_BxL.astype(rows_BxLxF.dtype), rows_BxLxF) + bias_F


class SparseMLP(nn.Module):
  """SparseLinear input layer, then `len(hidden)` ReLU layers; `hidden=()` is a single linear map."""

  vocab_size: int
  hidden: Sequence[int]
  out_features: int
  init_scale: float | None = None  # None: Flax defaults; else U(-s, s) for all weights and biases

  @nn.compact
  def __call__(self, ids_BxL: jax.Array, vals_BxL: jax.Array) -> jax.Array:
    kw = {}
    if self.init_scale is not None:
      kw = dict(kernel_init=uniform_init(self.init_scale), bias_init=uniform_init(self.init_scale))
    widths = list(self.hidden) + [self.out_features]
    x = SparseLinear(self.vocab_size, widths[0], **kw)(ids_BxL, vals_BxL)
    for width in widths[1:]:
      x = nn.Dense(width, **kw)(nn.relu(x))
    return x
