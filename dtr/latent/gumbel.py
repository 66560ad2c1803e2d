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

Restarts (`split_dead`, dtr's addition): argmax codes of logits latents collapse onto a few values as the
VQ-VAE's nearest entries do; a value whose usage falls under a share t / K of its slot becomes a copy of a
value in use (projection column, bias and code-book vector) tilted towards one of that value's inputs, so
that it takes part of them.
"""

import math

import jax
import jax.numpy as jnp

from dtr.latent import vq


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


def split_dead(kernel_FxMxK: jax.Array, bias_MxK: jax.Array, codebook_MxKxD: jax.Array, usage_MxK: jax.Array,
               codes_xM: jax.Array, inputs_xF: jax.Array, weight_x: jax.Array, rng: jax.Array, threshold: float,
               scale: float = 1.0, noise: float = 0.1
               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array]:
  """Restarts for latents whose logits are a linear map of an input u: l_ik = w_ik . u + b_ik (CatVAE, Hard EM).

  A value k of slot i is dead when its share of the slot's usage averages is under threshold / K (the rule
  of `dtr.latent.vq.dead_entries`). It becomes a copy of the value c that a random real position p of the
  batch chose in slot i (weight_x > 0; drawn independently per dead value, with replacement), tilted
  towards p: with v = u_p - u_mean (u_mean the mean input of the batch's real positions) and
  eps = scale / |v|^2,

      w_ik = w_ic + eps v,   b_ik = b_ic - eps v . u_mean,   so   l_ik(u) - l_ic(u) = eps v . (u - u_mean):

  the copy takes the inputs on p's side of the batch mean from c (by `scale` nats at u_p itself), as a
  k-means cluster is split; several copies of one value share its inputs by their directions. The copy's
  code-book vector is c's plus Gaussian noise of `noise` times its root mean square. The usage of a
  restarted value becomes its slot's mean. A batch with no real position changes nothing.

  kernel_FxMxK: the projection's kernel with its M K outputs as [M, K]; codes_xM, inputs_xF, weight_x: the
  positions' codes, projection inputs u and weights (any common leading shape, flattened). Returns (kernel,
  bias, code book, usage, dead bool [M, K]).
  """
  m, k = usage_MxK.shape
  codes_NxM = codes_xM.reshape(-1, m)
  inputs_NxF = jax.lax.stop_gradient(inputs_xF).reshape(-1, inputs_xF.shape[-1]).astype(kernel_FxMxK.dtype)
  weight_N = weight_x.reshape(-1)
  real_N = weight_N > 0
  dead_MxK = vq.dead_entries(usage_MxK, threshold) & jnp.any(real_N)
  pick_rng, book_rng = jax.random.split(rng)
  pick_MxK = jax.random.categorical(pick_rng, jnp.where(real_N, 0.0, -jnp.inf), shape=(m, k))
  slot_Mx1 = jnp.arange(m)[:, None]
  donor_MxK = jnp.clip(codes_NxM[pick_MxK, slot_Mx1], 0, k - 1)
  w_N = jnp.where(real_N, weight_N, 0.0).astype(inputs_NxF.dtype)
  mean_F = jnp.sum(inputs_NxF * w_N[:, None], axis=0) / jnp.maximum(jnp.sum(w_N), 1e-9)
  v_MxKxF = inputs_NxF[pick_MxK] - mean_F
  eps_MxK = scale / jnp.maximum(jnp.sum(jnp.square(v_MxKxF), axis=-1), 1e-12)
  column_FxMxK = kernel_FxMxK[:, slot_Mx1, donor_MxK] + jnp.moveaxis(eps_MxK[..., None] * v_MxKxF, -1, 0)
  tilted_MxK = bias_MxK[slot_Mx1, donor_MxK] - eps_MxK * (v_MxKxF @ mean_F)
  donor_book_MxKxD = codebook_MxKxD[slot_Mx1, donor_MxK]
  rms = jnp.sqrt(jnp.mean(jnp.square(donor_book_MxKxD), axis=-1, keepdims=True))
  vector_MxKxD = donor_book_MxKxD + noise * rms * jax.random.normal(book_rng, donor_book_MxKxD.shape,
                                                                    donor_book_MxKxD.dtype)
  kernel = jnp.where(dead_MxK[None], column_FxMxK, kernel_FxMxK)
  bias = jnp.where(dead_MxK, tilted_MxK, bias_MxK)
  codebook = jnp.where(dead_MxK[..., None], vector_MxKxD, codebook_MxKxD)
  usage = jnp.where(dead_MxK, jnp.mean(usage_MxK, axis=1, keepdims=True), usage_MxK)
  return kernel, bias, codebook, usage, dead_MxK
