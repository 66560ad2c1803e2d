r"""Diagonal Gaussian latents: reparameterised samples, log-densities and KL divergences, as pure functions.

A posterior q(z|x) = N(mu, diag(exp(logvar))) over d dimensions.

  sample      z = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)      (the reparameterisation trick)
  log_density log N(z; mu, sigma^2) = -1/2 sum_i [log(2 pi) + logvar_i + (z_i - mu_i)^2 / exp(logvar_i)]
  KL to N(0, I)   KL(q || p) = 1/2 sum_i [exp(logvar_i) + mu_i^2 - 1 - logvar_i]
  KL between two diagonal Gaussians
              KL(N(m1, s1^2) || N(m2, s2^2)) = sum_i [log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2]

Every function sums over the last axis (the latent dimensions) unless it says otherwise.
"""

import jax
import jax.numpy as jnp

LOG_2PI = 1.8378770664093453


def sample(mu: jax.Array, logvar: jax.Array, rng: jax.Array) -> jax.Array:
  """z = mu + exp(logvar / 2) * eps, eps ~ N(0, I); differentiable in mu and logvar."""
  eps = jax.random.normal(rng, mu.shape, mu.dtype)
  return mu + jnp.exp(0.5 * logvar) * eps


def log_density(z: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """log N(z; mu, diag(exp(logvar))), summed over the last axis."""
  return -0.5 * jnp.sum(LOG_2PI + logvar + jnp.square(z - mu) * jnp.exp(-logvar), axis=-1)


def log_standard_normal(z: jax.Array) -> jax.Array:
  """log N(z; 0, I), summed over the last axis."""
  return -0.5 * jnp.sum(LOG_2PI + jnp.square(z), axis=-1)


def kl_standard_normal(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu, exp(logvar)) || N(0, I)), summed over the last axis (analytic)."""
  return 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mu) - 1.0 - logvar, axis=-1)


def kl_per_dimension(mu: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mu_i, exp(logvar_i)) || N(0, 1)) of each dimension (no sum): for active-unit counts."""
  return 0.5 * (jnp.exp(logvar) + jnp.square(mu) - 1.0 - logvar)


def kl_gaussians(mu1: jax.Array, logvar1: jax.Array, mu2: jax.Array, logvar2: jax.Array) -> jax.Array:
  """KL(N(mu1, exp(logvar1)) || N(mu2, exp(logvar2))), summed over the last axis."""
  return 0.5 * jnp.sum(logvar2 - logvar1 + (jnp.exp(logvar1) + jnp.square(mu1 - mu2)) * jnp.exp(-logvar2) - 1.0,
                       axis=-1)
