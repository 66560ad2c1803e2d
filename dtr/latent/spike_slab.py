r"""Spike-and-slab latents and Beta spike probabilities, as pure functions (elementwise unless said otherwise).

A spike-and-slab variable with spike probability gamma, spike scale s (a narrow Gaussian standing in for the
Dirac spike) and slab N(mu, sigma^2):

  p(z) = gamma N(z; 0, s^2) + (1 - gamma) N(z; mu, sigma^2)
  log p(z) = logsumexp(log gamma + log N(z; 0, s^2), log(1 - gamma) + log N(z; mu, sigma^2))
  E[z] = (1 - gamma) mu                 (the spike has mean 0)
  sample  c ~ Bern(gamma),  z = c s eps_1 + (1 - c) (mu + sigma eps_2),  eps_i ~ N(0, 1)

HSVAE (Prokhorov et al., "Learning Sparse Sentence Encoding without Supervision: An Exploration of Sparsity in
Variational Autoencoders", RepL4NLP 2021) draws the spike probability per dimension from
q(gamma|x) = Beta(alpha, beta) with the implicit reparameterisation gradient of Figurnov et al. 2018 (which
`jax.random.beta` / `jax.random.gamma` implement), and the indicator c with the hard binary concrete relaxation
(`dtr.latent.bernoulli.sample_hard_concrete`); s = 0.05 in the reference code. The Beta KL is analytic:

  KL(Beta(a1, b1) || Beta(a2, b2)) = log B(a2, b2) - log B(a1, b1) + (a1 - a2) psi(a1) + (b1 - b2) psi(b1)
                                     + (a2 - a1 + b2 - b1) psi(a1 + b1)
  E_Beta(a, b)[gamma] = a / (a + b)

`eps` guards log gamma and log(1 - gamma) against gamma in {0, 1} (float32 Beta samples reach both); the
reference adds 1e-5 the same way.
"""

import jax
import jax.numpy as jnp
from jax.scipy.special import betaln, digamma

from dtr.latent import bernoulli, gaussian

SPIKE_SCALE = 0.05  # the reference's standard deviation of the spike
LOG_2PI = 1.8378770664093453


def kl_beta(alpha1: jax.Array, beta1: jax.Array, alpha2: jax.Array, beta2: jax.Array) -> jax.Array:
  """KL(Beta(alpha1, beta1) || Beta(alpha2, beta2)) elementwise (analytic, broadcasting)."""
  return (betaln(alpha2, beta2) - betaln(alpha1, beta1) + (alpha1 - alpha2) * digamma(alpha1)
          + (beta1 - beta2) * digamma(beta1) + (alpha2 - alpha1 + beta2 - beta1) * digamma(alpha1 + beta1))


def beta_mean(alpha: jax.Array, beta: jax.Array) -> jax.Array:
  """E[gamma] = alpha / (alpha + beta) under Beta(alpha, beta)."""
  return alpha / (alpha + beta)


def sample_beta(rng: jax.Array, alpha: jax.Array, beta: jax.Array) -> jax.Array:
  """gamma ~ Beta(alpha, beta), differentiable in alpha and beta (implicit reparameterisation)."""
  return jax.random.beta(rng, alpha, beta, dtype=jnp.result_type(alpha, beta))


def _log_normal(z, mu, sigma):
  return -0.5 * (LOG_2PI + jnp.square((z - mu) / sigma)) - jnp.log(sigma)


def log_density(z: jax.Array, gamma: jax.Array, mu: jax.Array, sigma: jax.Array,
                spike_scale: float = SPIKE_SCALE, eps: float = 1e-5) -> jax.Array:
  """log [gamma N(z; 0, s^2) + (1 - gamma) N(z; mu, sigma^2)] elementwise, log gamma guarded by `eps`."""
  spike = jnp.log(gamma + eps) + _log_normal(z, 0.0, spike_scale)
  slab = jnp.log(1.0 - gamma + eps) + _log_normal(z, mu, sigma)
  return jnp.logaddexp(spike, slab)


def spike_logits(gamma: jax.Array, eps: float = 1e-5) -> jax.Array:
  """logit(gamma) = log(gamma) - log(1 - gamma), guarded by `eps`: the indicator's Bernoulli logits."""
  return jnp.log(gamma + eps) - jnp.log1p(-gamma + eps)


def sample(rng: jax.Array, gamma: jax.Array, mu: jax.Array, sigma: jax.Array, temperature: float,
           spike_scale: float = SPIKE_SCALE) -> tuple[jax.Array, jax.Array]:
  """(z, c): c ~ Bern(gamma), a hard binary concrete (straight-through); z = c s e1 + (1 - c)(mu + sigma e2).

  Reparameterised in mu and sigma, and, through c's relaxed gradient, in gamma.
  """
  indicator_rng, spike_rng, slab_rng = jax.random.split(rng, 3)
  shape = jnp.broadcast_shapes(gamma.shape, mu.shape, sigma.shape)
  c = bernoulli.sample_hard_concrete(jnp.broadcast_to(spike_logits(gamma), shape), indicator_rng, temperature)
  e1 = jax.random.normal(spike_rng, shape, mu.dtype)
  e2 = jax.random.normal(slab_rng, shape, mu.dtype)
  return c * spike_scale * e1 + (1.0 - c) * (mu + sigma * e2), c


def sample_prior(rng: jax.Array, shape, gamma: float, spike_scale: float = SPIKE_SCALE,
                 dtype=jnp.float32) -> jax.Array:
  """z from the fixed prior gamma N(0, s^2) + (1 - gamma) N(0, 1) (no gradient needed: MAT-VAE's MMD)."""
  indicator_rng, spike_rng, slab_rng = jax.random.split(rng, 3)
  c = jax.random.bernoulli(indicator_rng, gamma, shape).astype(dtype)
  return c * spike_scale * jax.random.normal(spike_rng, shape, dtype) + (1.0 - c) * jax.random.normal(
      slab_rng, shape, dtype)


def kl_joint(gamma: jax.Array, mu: jax.Array, sigma: jax.Array) -> jax.Array:
  """KL(q(c, z) || p(c, z)) with c ~ Bern(gamma) in both, slabs N(mu, sigma^2) and N(0, 1), a shared spike.

  = (1 - gamma) KL(N(mu, sigma^2) || N(0, 1)): the indicator's and the spike's terms cancel. By the chain rule
  it bounds KL(q(z) || p(z)) of the two spike-and-slab mixtures from above, so an ELBO with it is still a
  lower bound on log p(x) (with c as a latent variable), and it needs no sample of z.
  """
  return (1.0 - gamma) * gaussian.kl_per_dimension(mu, 2.0 * jnp.log(sigma))


def mean(gamma: jax.Array, mu: jax.Array) -> jax.Array:
  """E[z] = (1 - gamma) mu of the spike-and-slab with a zero-mean spike."""
  return (1.0 - gamma) * mu
