r"""Maximum mean discrepancy with the dimension-wise inverse multiquadratic (IMQ) kernel, as pure functions.

MAT-VAE (Mathieu et al., "Disentangling Disentanglement in Variational Autoencoders", ICML 2019) adds
alpha * MMD(q(z), p(z)) between the aggregate posterior and the prior to the loss; the HSVAE reference code
(Prokhorov et al. 2021) uses a sum over scales of IMQ kernels applied to each dimension separately:

  k(x, y) = sum_{c in scales} sum_i C_c / (C_c + (x_i - y_i)^2),   C_c = 2 c   (prior variance 1 per dimension)

and the unbiased estimate (U-statistics within each sample, all pairs across) for samples x_1..n, y_1..m:

  MMD^2 = 1/(n(n-1)) sum_{i!=j} k(x_i, x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i, y_j) - 2/(nm) sum_{i,j} k(x_i, y_j)

With weights (a batch mask) every sum is weighted by w_i w_j and divided by the sum of those weights.
"""

import jax
import jax.numpy as jnp

IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def imq_kernel(x_NxD: jax.Array, y_MxD: jax.Array, scales=IMQ_SCALES) -> jax.Array:
  """k(x_n, y_m) [N, M]: sum over scales c and dimensions i of 2c / (2c + (x_ni - y_mi)^2)."""
  sq_NxMxD = jnp.square(x_NxD[:, None, :] - y_MxD[None, :, :])
  return sum(jnp.sum(2.0 * c / (2.0 * c + sq_NxMxD), axis=-1) for c in scales)


def mmd_imq(x_NxD: jax.Array, y_MxD: jax.Array, x_weights_N: jax.Array | None = None,
            y_weights_M: jax.Array | None = None, scales=IMQ_SCALES) -> jax.Array:
  """Unbiased (weighted) MMD^2 estimate between samples x and y under `imq_kernel` (a scalar)."""
  wx = jnp.ones(x_NxD.shape[:1], x_NxD.dtype) if x_weights_N is None else x_weights_N.astype(x_NxD.dtype)
  wy = jnp.ones(y_MxD.shape[:1], y_MxD.dtype) if y_weights_M is None else y_weights_M.astype(y_MxD.dtype)

  def within(z, w):
    pair_w = w[:, None] * w[None, :] * (1.0 - jnp.eye(z.shape[0], dtype=z.dtype))
    return jnp.sum(imq_kernel(z, z, scales) * pair_w) / jnp.sum(pair_w)

  cross = jnp.sum(imq_kernel(x_NxD, y_MxD, scales) * wx[:, None] * wy[None, :]) / (jnp.sum(wx) * jnp.sum(wy))
  return within(x_NxD, wx) + within(y_MxD, wy) - 2.0 * cross
