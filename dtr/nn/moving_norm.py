"""Feature-wise standardisation of a layer's inputs, as batch normalisation without the affine part; pure
functions (Ioffe & Szegedy, "Batch Normalization", ICML 2015).

  training:    x_hat = (x - mu_B) / sqrt(var_B + eps)   with the weighted moments of the batch's real rows
               (the gradient flows through them, as in batch normalisation);
  evaluation:  x_hat = (x - m) / sqrt(v + eps)           with moving averages m, v of the training batches'
               moments, so a document's output never depends on the other documents of its batch.

The moving averages are state, not trainable parameters: updated after each training step from that step's
moments. They are stored uncorrected with the weight they carry, w_t = 1 - decay^t, and divided by it when
read (Adam's bias correction); before the first update they read as m = 0, v = 1 (the identity).
"""

import jax
import jax.numpy as jnp

EPS = 1e-5


def init(num_features: int) -> dict[str, jax.Array]:
  """Statistics before any update: {'mean', 'variance': zeros [F], 'weight': 0}."""
  return {'mean': jnp.zeros((num_features,), jnp.float32), 'variance': jnp.zeros((num_features,), jnp.float32),
          'weight': jnp.zeros((), jnp.float32)}


def batch_moments(x_xF: jax.Array, weight_x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mean [F], variance [F]) of the rows of x weighted by weight_x (any common leading shape; rows of weight
  0 never count; (0, 1) for a batch without weight)."""
  x_NxF = x_xF.reshape(-1, x_xF.shape[-1])
  w_N = weight_x.reshape(-1).astype(x_NxF.dtype)
  total = jnp.sum(w_N)
  mean = jnp.sum(x_NxF * w_N[:, None], axis=0) / jnp.maximum(total, 1e-9)
  variance = jnp.sum(jnp.square(x_NxF - mean) * w_N[:, None], axis=0) / jnp.maximum(total, 1e-9)
  return jnp.where(total > 0, mean, 0.0), jnp.where(total > 0, variance, 1.0)


def moments(stats: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """(mean [F], variance [F]) the moving averages stand for: bias-corrected, (0, 1) before the first update."""
  seen = stats['weight'] > 0
  weight = jnp.where(seen, stats['weight'], 1.0)
  return jnp.where(seen, stats['mean'] / weight, 0.0), jnp.where(seen, stats['variance'] / weight, 1.0)


def standardize(x_xF: jax.Array, mean_F: jax.Array, variance_F: jax.Array) -> jax.Array:
  """(x - mean) / sqrt(variance + EPS), feature-wise."""
  return (x_xF - mean_F.astype(x_xF.dtype)) * jax.lax.rsqrt(variance_F + EPS).astype(x_xF.dtype)


def apply(stats: dict[str, jax.Array], x_xF: jax.Array) -> jax.Array:
  """Evaluation: x standardised by the moving averages (no gradient to them)."""
  return standardize(x_xF, *moments(jax.lax.stop_gradient(stats)))


def update(stats: dict[str, jax.Array], mean_F: jax.Array, variance_F: jax.Array, decay: float,
           seen=True) -> dict[str, jax.Array]:
  """One moving-average step towards a batch's moments; `seen` False (a batch without real rows) keeps them."""
  step = jnp.where(seen, 1.0 - decay, 0.0)
  mean_F, variance_F = jax.lax.stop_gradient(mean_F), jax.lax.stop_gradient(variance_F)
  return {'mean': stats['mean'] + step * (mean_F - stats['mean']),
          'variance': stats['variance'] + step * (variance_F - stats['variance']),
          'weight': stats['weight'] + step * (1.0 - stats['weight'])}
