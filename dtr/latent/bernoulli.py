r"""Independent Bernoulli codes: straight-through sampling and KL divergences, as pure functions.

A code z in {0,1}^m has q(z|y) = prod_i Bern(z_i; sigma(l_i)) for logits l = FF(y). Every log-probability
is computed from logits with `log_sigmoid` / `log_softmax` (never log(sigmoid(l))), so saturated logits
give finite values and gradients.

Straight-through estimator (Bengio et al. 2013; used by NASH, Shen et al. 2018):
  forward   z = 1[u < sigma(l)],  u ~ U(0, 1)   (or z = 1[l > 0] when deterministic)
  backward  dz/dl := d sigma(l)/dl = sigma(l) (1 - sigma(l))
i.e. z = p + stop_gradient(z - p) with p = sigma(l): the identity with respect to the probability p.

KL terms (per code, summed over the m bits):
  KL(Bern(q) || Bern(g)) = q (log q - log g) + (1 - q) (log(1 - q) - log(1 - g))
  to the uniform prior Bern(1/2): sum_i q_i log q_i + (1 - q_i) log(1 - q_i) + log 2  (= m log 2 - H(q))
Mixture-of-Bernoulli prior (BMSH, Dong et al. 2019), p(z) = sum_c pi_c prod_i Bern(z_i; g_ci), with an
inference net q(c|y): the bound they optimise uses
  KL = KL(q(c|y) || pi) + sum_c q(c|y) KL(q(z|y) || p(z|c)).
"""

import jax
import jax.numpy as jnp

LOG2 = 0.6931471805599453


def straight_through(hard: jax.Array, soft: jax.Array) -> jax.Array:
  """`hard` in the forward pass, the gradient of `soft` in the backward pass: soft + sg(hard - soft), whose
  value is `hard` up to a rounding of hard - soft (`sample_hard_concrete` needs it exactly and differs)."""
  return soft + jax.lax.stop_gradient(hard.astype(soft.dtype) - soft)


def sample_straight_through(logits: jax.Array, rng: jax.Array) -> jax.Array:
  """z ~ Bern(sigma(logits)) (float 0/1) with the straight-through gradient d sigma(l) / dl."""
  probs = jax.nn.sigmoid(logits)
  hard = jax.random.uniform(rng, logits.shape, logits.dtype) < probs
  return straight_through(hard, probs)


def threshold(logits: jax.Array) -> jax.Array:
  """The deterministic code 1[sigma(l) > 1/2] = 1[l > 0] as int8."""
  return (logits > 0).astype(jnp.int8)


def kl_bernoulli(q_logits: jax.Array, p_logits: jax.Array) -> jax.Array:
  """Elementwise KL(Bern(sigma(q_logits)) || Bern(sigma(p_logits))) in nats (broadcasting)."""
  q = jax.nn.sigmoid(q_logits)
  log_q, log_not_q = jax.nn.log_sigmoid(q_logits), jax.nn.log_sigmoid(-q_logits)
  log_p, log_not_p = jax.nn.log_sigmoid(p_logits), jax.nn.log_sigmoid(-p_logits)
  return q * (log_q - log_p) + (1 - q) * (log_not_q - log_not_p)


def kl_to_uniform(q_logits_BxM: jax.Array) -> jax.Array:
  """KL(q(z|y) || Bern(1/2)^m) per code [B]: sum_i q_i log q_i + (1 - q_i) log(1 - q_i) + log 2."""
  q = jax.nn.sigmoid(q_logits_BxM)
  neg_entropy = q * jax.nn.log_sigmoid(q_logits_BxM) + (1 - q) * jax.nn.log_sigmoid(-q_logits_BxM)
  return jnp.sum(neg_entropy + LOG2, axis=-1)


def mixture_prior_kl(q_logits_BxM: jax.Array, component_logits_BxC: jax.Array, prior_logits_CxM: jax.Array,
                     mixing_logits_C: jax.Array) -> jax.Array:
  """KL(q(c|y) || pi) + E_{q(c|y)} KL(q(z|y) || Bern(sigma(prior_logits_c))) per code [B] (BMSH).

  q(c|y) = softmax(component_logits), pi = softmax(mixing_logits), component c's Bernoulli means are
  sigma(prior_logits[c]).
  """
  log_qc_BxC = jax.nn.log_softmax(component_logits_BxC, axis=-1)
  log_pi_C = jax.nn.log_softmax(mixing_logits_C, axis=-1)
  qc_BxC = jnp.exp(log_qc_BxC)
  kl_c = jnp.sum(qc_BxC * (log_qc_BxC - log_pi_C), axis=-1)
  kl_z_BxC = jnp.sum(kl_bernoulli(q_logits_BxM[:, None, :], prior_logits_CxM[None, :, :]), axis=-1)
  return kl_c + jnp.sum(qc_BxC * kl_z_BxC, axis=-1)


# --------------------------------------------------------------------------------- binary concrete relaxation
# Binary concrete (Maddison et al. 2017; Jang et al. 2017's Gumbel-softmax with two classes): with logistic
# noise L = log U - log(1 - U), U ~ U(0, 1), and temperature tau > 0,
#   y = sigma((l + L) / tau)  in (0, 1),   P(y > 1/2) = P(l + L > 0) = sigma(l),
# so the hard threshold 1[y > 1/2] = 1[l + L > 0] is an exact Bern(sigma(l)) sample whatever tau; tau only
# shapes the gradient of the straight-through version z = 1[l + L > 0] + (y - sg(y)) (dz/dl := dy/dl), whose
# value is the threshold exactly, whatever tau. The threshold is taken on l + L, not on y: a float32 y rounds
# to 1/2 for |l + L| / tau below about 1e-7, where the sample would depend on tau.
def logistic_noise(rng: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """L = log U - log(1 - U), U ~ U(0, 1): standard logistic noise (finite: U is kept inside (0, 1))."""
  tiny = jnp.finfo(dtype).tiny
  u = jax.random.uniform(rng, shape, dtype, minval=tiny, maxval=1.0)
  return jnp.log(u) - jnp.log1p(-u)


def binary_concrete(logits: jax.Array, noise: jax.Array, temperature: float) -> jax.Array:
  """The relaxed sample y = sigma((logits + noise) / temperature) for given logistic noise."""
  return jax.nn.sigmoid((logits + noise) / temperature)


def sample_binary_concrete(logits: jax.Array, rng: jax.Array, temperature: float) -> jax.Array:
  """y ~ BinConcrete(sigma(logits), temperature), differentiable in the logits."""
  return binary_concrete(logits, logistic_noise(rng, logits.shape, logits.dtype), temperature)


def sample_hard_concrete(logits: jax.Array, rng: jax.Array, temperature: float) -> jax.Array:
  """Exact Bern(sigma(logits)) sample (float 0/1) with the gradient of the binary concrete relaxation: its
  value is the same for every temperature (the gradient is not)."""
  noise = logistic_noise(rng, logits.shape, logits.dtype)
  soft = binary_concrete(logits, noise, temperature)
  return (logits + noise > 0).astype(soft.dtype) + (soft - jax.lax.stop_gradient(soft))
