r"""Categorical latents: straight-through Gumbel-softmax, KL to a uniform prior, free bits; pure functions.

A latent with K values has posterior logits l in R^K, q = softmax(l). The Gumbel-softmax relaxation (Jang et
al., "Categorical Reparameterization with Gumbel-Softmax", ICLR 2017; Maddison et al., "The Concrete
Distribution", ICLR 2017) draws

    y = softmax((l + g) / tau),        g_k ~ Gumbel(0, 1) i.i.d.,

and the straight-through estimator uses the one-hot z = onehot(argmax_k y_k) (a sample of q) forward and
the gradient of y backward: z + y - sg(y). Annealing (Jang et al. 2017, as the reference code of Jin et al.
2020) recomputes every N steps tau_t = max(tau_min, tau_0 exp(-r t)).

KL to the uniform prior, per latent:  KL(q || U_K) = sum_k q_k log q_k + log K  in [0, log K].

Free bits (Kingma et al., "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016)
stop penalising a latent whose KL is under a floor. Jin et al. (ACL 2020) set the floor of a document's KL to
lambda = gamma * M * L * log K (gamma in [0, 1]; L = 1 for one set of M latents per document, the length for
a set per token), a fraction of the KL's maximum. Two forms are provided:

  per latent (`free_bits_per_latent`): every latent j (slot i, and position t for local latents) is clamped
  separately at lambda_j = gamma * log K on its batch-average KL:

      sum_j (n_j / B) * max(lambda_j, KL_j),   KL_j = (1 / n_j) sum_{b : j in b} KL(q(z_bj | x_b) || U_K)

  with n_j the documents that have latent j (all B for global latents; those longer than t for local ones),
  so without the clamp it is the batch-mean KL; the floors add up to gamma * M * (mean length) * log K.

  reference (`free_bits_reference`, the behaviour of the reference code): the whole KL term is dropped while
  the batch's summed KL is under B * lambda and kept in full otherwise:

      0 if sum_b KL_b < B * lambda else (1 / B) sum_b KL_b.
"""

import math

import jax
import jax.numpy as jnp


def one_hot_argmax(scores_xK: jax.Array) -> jax.Array:
  """onehot(argmax_k scores_k) in the scores' dtype (ties: the smaller k)."""
  return jax.nn.one_hot(jnp.argmax(scores_xK, axis=-1), scores_xK.shape[-1], dtype=scores_xK.dtype)


def straight_through(hard: jax.Array, soft: jax.Array) -> jax.Array:
  """`hard` forward, the gradient of `soft` backward: hard + soft - sg(soft)."""
  return soft + jax.lax.stop_gradient(hard - soft)


def gumbel_softmax(logits_xK: jax.Array, rng: jax.Array, tau) -> jax.Array:
  """The relaxed sample y = softmax((l + g) / tau), g ~ Gumbel(0, 1)."""
  g_xK = jax.random.gumbel(rng, logits_xK.shape, logits_xK.dtype)
  return jax.nn.softmax((logits_xK + g_xK) / tau, axis=-1)


def gumbel_straight_through(logits_xK: jax.Array, rng: jax.Array, tau) -> jax.Array:
  """One-hot sample of softmax(l) forward (argmax of the relaxed y), the gradient of y backward."""
  y_xK = gumbel_softmax(logits_xK, rng, tau)
  return straight_through(one_hot_argmax(y_xK), y_xK)


def argmax_straight_through(probs_xK: jax.Array) -> jax.Array:
  """onehot(argmax p) forward, identity gradient to p backward (Hard EM without relaxation)."""
  return straight_through(one_hot_argmax(probs_xK), probs_xK)


def kl_to_uniform(logits_xK: jax.Array) -> jax.Array:
  """[...]: KL(softmax(l) || U_K) = sum_k q_k log q_k + log K (finite for any logits)."""
  log_q = jax.nn.log_softmax(logits_xK, axis=-1)
  return jnp.sum(jnp.exp(log_q) * log_q, axis=-1) + math.log(logits_xK.shape[-1])


def annealed_temperature(step, tau0: float, tau_min: float, rate: float, interval: int) -> jax.Array:
  """tau at `step`: max(tau_min, tau0 exp(-rate * s)), s = step rounded down to a multiple of `interval`."""
  s = (jnp.asarray(step) // interval) * interval
  return jnp.maximum(tau_min, tau0 * jnp.exp(-rate * s.astype(jnp.float32)))


def free_bits_per_latent(kl_BxLxM: jax.Array, position_weight_BxL: jax.Array, doc_weight_B: jax.Array,
                         floor) -> jax.Array:
  """Scalar sum_j (n_j / B) max(floor, KL_j) of the module docstring (the term of a per-document loss).

  kl_BxLxM: KL of each latent (L = 1 for global latents); position_weight_BxL: 1 where latent (b, t) exists
  (a real token of a real document), 0 elsewhere; doc_weight_B: 1 for real documents (B = their number).
  """
  w_BxL = position_weight_BxL.astype(kl_BxLxM.dtype)
  n_L = jnp.sum(w_BxL, axis=0)
  mean_LxM = jnp.sum(kl_BxLxM * w_BxL[..., None], axis=0) / jnp.maximum(n_L, 1.0)[:, None]
  num_docs = jnp.maximum(jnp.sum(doc_weight_B), 1.0)
  return jnp.sum(n_L[:, None] / num_docs * jnp.maximum(floor, mean_LxM))


def free_bits_reference(kl_B: jax.Array, doc_weight_B: jax.Array, floor) -> jax.Array:
  """Scalar: 0 while sum_b KL_b < B * floor, else the batch-mean KL (the reference code's rule)."""
  num_docs = jnp.maximum(jnp.sum(doc_weight_B), 1.0)
  total = jnp.sum(kl_B * doc_weight_B)
  return jnp.where(total < floor * num_docs, 0.0, total / num_docs)
