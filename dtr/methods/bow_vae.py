r"""A Gaussian VAE of bags of words, trained with or without SVI refinement of the amortised posterior.

Krishnan, Liang & Hoffman, "On the challenges of learning with inference networks on sparse,
high-dimensional data", AISTATS 2018. A document is its count vector x in N^V, N_d = sum_v x_v tokens.

  q(z|x)   = N(mu(x), diag(exp(logvar(x))))  an inference network on x / N_d (input='counts'), on the
                                             L2-normalised TF-IDF row (input='tfidf', the batch's 'vals')
                                             or on the raw counts x (input='raw_counts', NVDM's input)
  p(z)     = N(0, I),  p(x|z) = Mult(N_d, softmax(f(z)))   f: 0 or more hidden layers, then V logits
  log p(x|z) = sum_v x_v log softmax(f(z))_v
             (the multinomial coefficient log N_d! / prod_v x_v! is omitted: it does not depend on the
             model, so every nll and perplexity here is that of the word sequence, as in the paper)
  ELBO(x; mu, logvar) = E_{eps ~ N(0, I)} log p(x | mu + exp(logvar / 2) eps) - KL(N(mu, e^logvar) || N(0, I))
             one reparameterised sample; the KL is analytic (`dtr.latent.gaussian.kl_standard_normal`).
  training loss = mean over real documents of -[log p(x|z) - beta_t KL], beta_t = min(1, kl_start +
             (1 - kl_start) t / anneal_steps) (linear KL annealing; anneal_steps = 0: beta = 1).

Training regimes (`model.regime`), one call of `train_step` per batch:
  none         one Adam step on all parameters (theta of p, phi of q) with the loss: a plain VAE.
  finopt       (1) one Adam step on phi with the loss;
               (2) psi_0 = (mu, logvar) = q_phi(x) with the updated phi, then K = `svi_steps` SVI steps on
                   every document's own -ELBO(x; psi) (`refine`: Adam, theta fixed, a fresh eps each step,
                   beta = 1) -> psi_K;
               (3) one Adam step on theta with the loss at stop_gradient(psi_K): no gradient reaches phi
                   through psi_K, and none reaches theta through the SVI iterates.
  none_finopt  'none' for the first `switch_epoch` epochs, then 'finopt';  finopt_none: the reverse.
               The epoch is step // (train_size // B), from a step counter in the state,
               `DataInfo.train_size` and the batch's static size B.

`refine`'s inner Adam (Kingma & Ba 2015, Algorithm 1, bias-corrected), per document, t = 1..K:
  g_t = grad_psi -ELBO(x; psi_{t-1}, eps_t),
  m_t = b1 m_{t-1} + (1 - b1) g_t,  v_t = b2 v_{t-1} + (1 - b2) g_t^2,
  psi_t = psi_{t-1} - lr (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + 1e-8).
The reference code's inner Adam uses b1 = 0.1, b2 = 0.999 (written there as the weights 0.9 and 0.001 of
the new gradient) and returns the last iterate psi_K: the defaults (`svi_beta1`=0.1, `svi_return`='last').
It folds the bias corrections into the step size, which moves eps by a factor sqrt(1 - b2^t): immaterial.
`svi_return`='best' returns instead the iterate with the highest ELBO seen, each psi_{t-1} scored with
the eps_t of its step and psi_K with one more eps_{K+1}; a single-sample ELBO is noisy, so 'best' also
picks lucky samples and is biased upwards as a bound; report its perplexities as such.

Evaluation (`score`, per document): nll = -ELBO with q_phi's psi_0 (the paper's perp_0), nll_refined =
-ELBO at psi_K after `eval_svi_steps` SVI steps at `eval_svi_lr` (perp_f; the reference: 100 at 8e-3;
with 0 steps nothing is refined and perp_f is not reported),
nll_is = -log (1/S) sum_s p(x|z_s) p(z_s) / q(z_s; psi_K), z_s ~ q(.; psi_K), S = `eval_is_samples`
(a tighter bound: log-mean-exp >= mean), and tokens = N_d. The paper's perplexity is the per-document
exp((1/D) sum_d nll_d / N_d) ('document' in `perplexities`); 'perplexity' is the corpus-level
exp(sum_d nll_d / sum_d N_d).

Defaults (`default_model_config('krishnan')`): q 2 x 400 ReLU, d = 100, p 2 x 400 ReLU, U(+-0.1) init,
Adam 8e-4 (the loop's batch size: 500), K = 100 SVI steps at 0.01 (the reference's `param_lr`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import scipy.sparse as sp

from dtr.latent import gaussian
from dtr.methods.base import AdamMethod
from dtr.nn import bow_decoder
from dtr.nn.bow_vae_nets import ACTIVATIONS, GaussianEncoder, SoftmaxDecoder
from dtr.nn.feedforward import num_docs

REGIMES = ('none', 'finopt', 'none_finopt', 'finopt_none')
INPUTS = ('counts', 'tfidf', 'raw_counts')
SVI_RETURNS = ('last', 'best')


# ------------------------------------------------------------------------------------------------ checks
def _sorted_csr(matrix) -> sp.csr_matrix:
  """CSR with sorted column indices (a sorted copy when needed: the caller's matrix is left as it is)."""
  matrix = sp.csr_matrix(matrix)
  if not matrix.has_sorted_indices:
    matrix = matrix.copy()
    matrix.sort_indices()
  return matrix


def check_counts(counts, tfidf=None, name: str = 'counts') -> None:
  """Raises ValueError unless every stored value of a count matrix (CSR or dense) is a finite integer >= 0,
  and, given the split's TF-IDF CSR, unless both store the same entries (the batch's 'counts' are read at
  the positions of its TF-IDF 'ids') and no entry has a TF-IDF weight but a zero count (what a fractional
  count below 1 becomes once `dtr.data.Split` stores counts as int32).

  Host-side: `BowVAE.check_data` calls it once per split before batching.
  """
  if tfidf is not None:
    a, b = _sorted_csr(counts), _sorted_csr(tfidf)
    same = a.shape == b.shape and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    if not same:
      raise ValueError(f'{name} and the TF-IDF matrix store different entries (shapes {a.shape} and '
                       f'{b.shape}, {a.nnz} and {b.nnz} nonzeros); the flat batch reads counts at the '
                       'TF-IDF positions, so both need one sparsity pattern (keep explicit TF-IDF zeros, or '
                       'drop zero counts).')
    weighted_zero = (a.data == 0) & (b.data != 0)
    if weighted_zero.any():
      raise ValueError(f'{name}: {int(weighted_zero.sum())} entries have a TF-IDF weight but a zero count; '
                       'counts must be integers >= 1 where a word occurs (fractional counts below 1, such as '
                       'normalised weights, are truncated to 0 when stored as int32).')
  values = np.asarray(counts.data if sp.issparse(counts) else counts)
  if values.size == 0:
    return
  if not np.issubdtype(values.dtype, np.number):
    raise ValueError(f'{name} must be numeric term counts, got dtype {values.dtype}.')
  if np.issubdtype(values.dtype, np.floating):
    bad = ~np.isfinite(values)
    if bad.any():
      raise ValueError(f'{name} holds {int(bad.sum())} non-finite values (NaN or inf); term counts must be '
                       'finite integers >= 0.')
    fractional = values != np.round(values)
    if fractional.any():
      raise ValueError(f'{name} holds {int(fractional.sum())} non-integer values (e.g. '
                       f'{values[fractional][0]!r}); the multinomial likelihood needs integer term counts, '
                       'not TF-IDF or normalised weights.')
  negative = values < 0
  if negative.any():
    raise ValueError(f'{name} holds {int(negative.sum())} negative values (e.g. {values[negative][0]!r}); '
                     'term counts must be >= 0.')


def validate_config(mc: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field for impossible settings."""
  if mc.latent_dim <= 0:
    raise ValueError(f'model.latent_dim must be a positive number of latent dimensions, got {mc.latent_dim}.')
  for field in ('encoder_hidden', 'decoder_hidden'):
    if any(int(h) <= 0 for h in mc[field]):
      raise ValueError(f'model.{field} widths must be positive, got {tuple(mc[field])}.')
  for field in ('encoder_activation', 'decoder_activation'):
    if mc[field] not in ACTIVATIONS:
      raise ValueError(f'model.{field} must be one of {sorted(ACTIVATIONS)}, got {mc[field]!r}.')
  if mc.input not in INPUTS:
    raise ValueError(f'model.input must be one of {INPUTS}, got {mc.input!r}.')
  if mc.regime not in REGIMES:
    raise ValueError(f'model.regime must be one of {REGIMES}, got {mc.regime!r}.')
  if mc.svi_return not in SVI_RETURNS:
    raise ValueError(f'model.svi_return must be one of {SVI_RETURNS}, got {mc.svi_return!r}.')
  for field in ('learning_rate', 'svi_lr', 'eval_svi_lr'):
    if not mc[field] > 0:
      raise ValueError(f'model.{field} must be a learning rate > 0, got {mc[field]}.')
  for field in ('svi_steps', 'eval_svi_steps'):
    if mc[field] < 0 or int(mc[field]) != mc[field]:
      raise ValueError(f'model.{field} (K) must be an integer >= 0, got {mc[field]}.')
  for field in ('svi_beta1', 'svi_beta2'):
    if not 0 <= mc[field] < 1:
      raise ValueError(f'model.{field} must be in [0, 1), got {mc[field]}.')
  if mc.eval_is_samples < 1:
    raise ValueError(f'model.eval_is_samples (S) must be >= 1, got {mc.eval_is_samples}.')
  if not 0 <= mc.kl_start <= 1:
    raise ValueError(f'model.kl_start must be in [0, 1], got {mc.kl_start}.')
  if mc.anneal_steps < 0:
    raise ValueError(f'model.anneal_steps must be >= 0 (0 = no annealing), got {mc.anneal_steps}.')
  if mc.switch_epoch < 0:
    raise ValueError(f'model.switch_epoch must be >= 0, got {mc.switch_epoch}.')
  if mc.init_scale < 0:
    raise ValueError(f'model.init_scale must be >= 0 (0 = Flax default initialisers), got {mc.init_scale}.')


# ------------------------------------------------------------------------------------------------ kernels
def multinomial_log_likelihood(log_probs_BxV: jax.Array, x_BxV: jax.Array) -> jax.Array:
  """[B]: sum_v x_v log p_v, the multinomial log-likelihood without its coefficient."""
  return jnp.sum(x_BxV * log_probs_BxV, axis=-1)


def kl_weight(step, kl_start: float, anneal_steps) -> jax.Array:
  """beta_t = min(1, kl_start + (1 - kl_start) t / anneal_steps); 1 when anneal_steps = 0. `anneal_steps`: an
  int, or a population member's (a float32 array holding a whole number)."""
  t = jnp.asarray(step, jnp.float32)
  if not isinstance(anneal_steps, jax.Array):
    if anneal_steps <= 0:
      return jnp.ones((), jnp.float32)
    return jnp.minimum(1.0, kl_start + (1.0 - kl_start) * t / anneal_steps)
  length = jnp.asarray(anneal_steps, jnp.float32)
  return jnp.where(length > 0, jnp.minimum(1.0, kl_start + (1.0 - kl_start) * t / jnp.maximum(length, 1.0)), 1.0)


def importance_bound(log_w_SxB: jax.Array) -> jax.Array:
  """[B]: log (1/S) sum_s exp(log w_s), the importance-sampled lower bound on log p(x)."""
  return jax.nn.logsumexp(log_w_SxB, axis=0) - jnp.log(jnp.asarray(log_w_SxB.shape[0], log_w_SxB.dtype))


def svi_noise(rng: jax.Array, k, shape, dtype=jnp.float32) -> jax.Array:
  """eps of SVI step k (0-based; step K scores the final iterate for svi_return='best')."""
  return jax.random.normal(jax.random.fold_in(rng, k), shape, dtype)


def adam_svi(neg_elbo_fn: Callable, mu0_BxD: jax.Array, logvar0_BxD: jax.Array, data, rng: jax.Array,
             steps: int, lr, beta1: float = 0.1, beta2: float = 0.999, eps: float = 1e-8,
             keep: str = 'last') -> tuple[jax.Array, jax.Array]:
  """K bias-corrected Adam steps on every document's own (mu, logvar); a `lax.fori_loop` (jittable).

  neg_elbo_fn(mu_D, logvar_D, noise_D, data_b) -> scalar -ELBO of one document; it is vmapped over the
  leading axis of mu, logvar, the noise and `data` (a pytree). Step k draws noise `svi_noise(rng, k)` for
  all documents at once. keep: 'last' (psi_K) or 'best' (lowest -ELBO seen; see the module docstring).
  """
  if isinstance(steps, (int, np.integer)) and steps < 0:
    raise ValueError(f'SVI needs steps >= 0, got {steps}.')
  if isinstance(lr, (int, float)) and lr <= 0:
    raise ValueError(f'SVI needs a learning rate > 0, got {lr}.')
  if keep not in SVI_RETURNS:
    raise ValueError(f'keep must be one of {SVI_RETURNS}, got {keep!r}.')
  value_and_grad_B = jax.vmap(jax.value_and_grad(neg_elbo_fn, argnums=(0, 1)))
  dtype = mu0_BxD.dtype
  theta0 = (mu0_BxD, logvar0_BxD)
  zeros = jax.tree.map(jnp.zeros_like, theta0)
  best_value_B = jnp.full(mu0_BxD.shape[:1], jnp.inf, dtype)

  def body(k, carry):
    theta, m, v, best_theta, best_value_B = carry
    value_B, grads = value_and_grad_B(*theta, svi_noise(rng, k, mu0_BxD.shape, dtype), data)
    if keep == 'best':
      better_Bx1 = (value_B < best_value_B)[:, None]
      best_theta = jax.tree.map(lambda b, p: jnp.where(better_Bx1, p, b), best_theta, theta)
      best_value_B = jnp.minimum(value_B, best_value_B)
    t = (k + 1).astype(dtype)
    m = jax.tree.map(lambda m_, g: beta1 * m_ + (1 - beta1) * g, m, grads)
    v = jax.tree.map(lambda v_, g: beta2 * v_ + (1 - beta2) * jnp.square(g), v, grads)
    theta = jax.tree.map(
        lambda p, m_, v_: p - lr * (m_ / (1 - beta1**t)) / (jnp.sqrt(v_ / (1 - beta2**t)) + eps), theta, m, v)
    return theta, m, v, best_theta, best_value_B

  theta, _, _, best_theta, best_value_B = jax.lax.fori_loop(
      0, steps, body, (theta0, zeros, zeros, theta0, best_value_B))
  if keep == 'last':
    return theta
  final_B = jax.vmap(neg_elbo_fn)(*theta, svi_noise(rng, steps, mu0_BxD.shape, dtype), data)
  better_Bx1 = (final_B < best_value_B)[:, None]
  return tuple(jnp.where(better_Bx1, p, b) for p, b in zip(theta, best_theta))


# ------------------------------------------------------------------------------------------------ method
@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: Method's equality by value (a static jit argument)
class BowVAE(AdamMethod):
  """Gaussian bag-of-words VAE (Krishnan et al. 2018; NVDM as a configuration): dense codes mu [B, d]."""

  reads: ClassVar[str] = 'bow'
  emits: ClassVar[str | None] = 'dense'
  batch_fields: ClassVar[tuple] = ('counts',)
  validate = staticmethod(validate_config)
  conditional_hparams: ClassVar[dict] = {
      'svi_lr': ("when training refines (model.regime not 'none')", lambda mc: mc.regime != 'none'),
      'svi_steps': ("when training refines (model.regime not 'none')", lambda mc: mc.regime != 'none'),
      'kl_start': ('when model.anneal_steps > 0', lambda mc: mc.anneal_steps > 0),
      'anneal_steps': ('when model.anneal_steps > 0', lambda mc: mc.anneal_steps > 0)}
  # (population hyperparameters beside the learning rate, in `member_fields` when the config turns them on:
  # the training SVI step size and step count, the KL annealing's start and length; otherwise they would change
  # nothing.
  # A member's step count is a traced bound of the refinement's `lax.fori_loop`: under the member axis the loop
  # runs to the largest count, each member's iterates frozen after its own; its value must be an integer, as
  # the config's, so search it with choice(...) or cycle(...))

  def __post_init__(self):
    super().__post_init__()
    if self.vocab_size <= 0:
      raise ValueError(f'bow_vae needs a non-empty vocabulary (the softmax over V words), got '
                       f'vocab_size={self.vocab_size}.')
    if self.config.regime in ('none_finopt', 'finopt_none') and self.train_size <= 0:
      raise ValueError(f'model.regime={self.config.regime!r} switches after model.switch_epoch epochs and so '
                       'needs DataInfo.train_size (the training documents) to count epochs; got none.')

  # --- what the loop reads
  def check_data(self, corpus) -> None:
    """Clear errors before training: a non-empty vocabulary, and in every split integer counts >= 0 with the
    TF-IDF's sparsity pattern (`check_counts`) and no document without words (a per-document perplexity
    divides by N_d; the data layer drops all-zero TF-IDF rows, `data.empty_docs='drop'`, so such a document
    can only come from explicit zeros in both matrices)."""
    if len(corpus.vocab) == 0:
      raise ValueError(f'{corpus.name}: the vocabulary is empty; bow_vae needs words (the softmax over V).')
    for split_name, split in corpus.splits.items():
      where = f'{corpus.name} split {split_name!r}'
      counts = getattr(split, 'counts', None)
      if counts is None:
        raise ValueError(f'{where} has no term counts; bow_vae models counts (multinomial likelihood).')
      if counts.shape[1] != len(corpus.vocab):
        raise ValueError(f'{where}: the counts have {counts.shape[1]} columns for a vocabulary of '
                         f'{len(corpus.vocab)} words.')
      check_counts(counts, split.tfidf, name=f'{where} counts')
      tokens_N = np.asarray(counts.sum(axis=1)).reshape(-1)
      empty = np.flatnonzero(tokens_N <= 0)
      if empty.size:
        raise ValueError(f'{where} has {empty.size} documents with no words (N_d = 0), first rows '
                         f'{empty[:10].tolist()}; their perplexity is undefined: drop them.')

  @property
  def train_size(self) -> int:
    """Training documents per epoch (`DataInfo.train_size`; 0 = unknown)."""
    return int(self.data.train_size)

  @property
  def code_length(self) -> int:
    return self.config.latent_dim

  def perplexities(self) -> dict[str, tuple[str, str]]:
    """perp_0, perp_f (only with test-time SVI: `eval_svi_steps` > 0), perp_is and the corpus perplexity."""
    names = {'perp_0': ('nll', 'document'), 'perp_f': ('nll_refined', 'document'),
             'perp_is': ('nll_is', 'document'), 'perplexity': ('nll', 'corpus')}
    if not self.config.eval_svi_steps:
      del names['perp_f']
    return names

  # --- networks
  def _init_scale(self):
    return self.config.init_scale if self.config.init_scale > 0 else None

  def _encoder(self) -> GaussianEncoder:
    mc = self.config
    return GaussianEncoder(self.vocab_size, tuple(mc.encoder_hidden), mc.latent_dim, mc.encoder_activation,
                           self._init_scale())

  def _decoder(self) -> SoftmaxDecoder:
    mc = self.config
    return SoftmaxDecoder(self.vocab_size, tuple(mc.decoder_hidden), mc.decoder_activation,
                          self._init_scale())

  def optimizer(self, rate=None) -> optax.GradientTransformation:
    """Adam at `rate` (a member's, `rate(state)`; None: the config's), with no gradient clip (the model has
    no `clip` field)."""
    return self.adam(self.config.learning_rate if rate is None else rate)

  def counts_BxV(self, batch) -> jax.Array:
    """Dense term counts [B, V] (the scatter of `bow_decoder.dense_rows` with the counts as values)."""
    return bow_decoder.dense_rows({**batch, 'vals': batch['counts']}, self.vocab_size)

  def encoder_input(self, batch):
    """The flat batch the inference network reads: 'vals' = x / N_d (input='counts'), the TF-IDF or x.

    A document without words (N_d = 0, e.g. a padding slot) reads zeros: x / max(N_d, 1).
    """
    if self.config.input == 'tfidf':
      return batch
    if self.config.input == 'raw_counts':
      return {**batch, 'vals': batch['counts']}
    doc_GxT = bow_decoder.flat_doc_index(batch)
    tokens_B = jax.ops.segment_sum(batch['counts'].reshape(-1), doc_GxT.reshape(-1), num_docs(batch))
    return {**batch, 'vals': batch['counts'] / jnp.maximum(tokens_B, 1.0)[doc_GxT]}

  def posterior(self, params, batch) -> tuple[jax.Array, jax.Array]:
    """(mu [B, d], logvar [B, d]) of q_phi(z|x)."""
    return self._encoder().apply({'params': params['encoder']}, self.encoder_input(batch))

  def decode_log_probs(self, params, z) -> jax.Array:
    """log p_v(z) = log softmax(f(z))_v: [..., V] for z [..., d] (one z [d] gives [V])."""
    return jax.nn.log_softmax(self._decoder().apply({'params': params['decoder']}, z), axis=-1)

  def elbo_terms(self, params, x_BxV, mu_BxD, logvar_BxD, rng) -> tuple[jax.Array, jax.Array]:
    """(log p(x|z) [B] at one reparameterised z ~ q, KL(q || N(0, I)) [B])."""
    z_BxD = gaussian.sample(mu_BxD, logvar_BxD, rng)
    log_lik_B = multinomial_log_likelihood(self.decode_log_probs(params, z_BxD), x_BxV)
    return log_lik_B, gaussian.kl_standard_normal(mu_BxD, logvar_BxD)

  def refine(self, params, x_counts_BxV, mu0_BxD, logvar0_BxD, rng, steps, lr, beta1=None, keep=None
             ) -> tuple[jax.Array, jax.Array]:
    """(mu, logvar) after `steps` Adam steps on each document's -ELBO, the decoder params['decoder'] fixed.

    Pure and jittable; beta1 and keep default to model.svi_beta1 and model.svi_return. The KL weight is 1
    (the reference refines the full ELBO also while the training loss is annealed).
    """
    mc = self.config
    beta1 = mc.svi_beta1 if beta1 is None else beta1
    keep = mc.svi_return if keep is None else keep

    def neg_elbo(mu_D, logvar_D, noise_D, x_V):
      z_D = mu_D + jnp.exp(0.5 * logvar_D) * noise_D
      log_lik = jnp.sum(x_V * self.decode_log_probs(params, z_D))
      return gaussian.kl_standard_normal(mu_D, logvar_D) - log_lik

    return adam_svi(neg_elbo, mu0_BxD, logvar0_BxD, x_counts_BxV, rng, steps, lr, beta1, mc.svi_beta2,
                    keep=keep)

  def importance_log_weights(self, params, x_BxV, mu_BxD, logvar_BxD, rng, samples: int) -> jax.Array:
    """[S, B]: log w_s = log p(x|z_s) + log N(z_s; 0, I) - log q(z_s), z_s ~ q = N(mu, exp(logvar)).

    One sample at a time (`lax.map`): memory B x V whatever S.
    """

    def one(key):
      z_BxD = gaussian.sample(mu_BxD, logvar_BxD, key)
      log_lik_B = multinomial_log_likelihood(self.decode_log_probs(params, z_BxD), x_BxV)
      return log_lik_B + gaussian.log_standard_normal(z_BxD) - gaussian.log_density(z_BxD, mu_BxD, logvar_BxD)

    return jax.lax.map(one, jax.random.split(rng, samples))

  # --- training
  def init(self, rng: jax.Array, batch, hparams=None) -> dict[str, Any]:
    enc_rng, dec_rng = jax.random.split(rng)
    params = {'encoder': self._encoder().init(enc_rng, self.encoder_input(batch))['params'],
              'decoder': self._decoder().init(dec_rng, jnp.zeros((1, self.config.latent_dim)))['params']}
    opt = self.optimizer()
    return self.keep_hparams({'params': params, 'opt_state': {part: opt.init(p) for part, p in params.items()},
                              'step': jnp.zeros((), jnp.int32)}, hparams)

  def loss(self, params, batch, rng, beta=1.0):
    """Mean over real documents of -log p(x|z) + beta KL at q_phi's posterior; (loss, aux)."""
    x_BxV = self.counts_BxV(batch)
    mu_BxD, logvar_BxD = self.posterior(params, batch)
    log_lik_B, kl_B = self.elbo_terms(params, x_BxV, mu_BxD, logvar_BxD, rng)
    nll, kl = bow_decoder.masked_mean(-log_lik_B, batch), bow_decoder.masked_mean(kl_B, batch)
    return nll + beta * kl, {'reconstruction': nll, 'kl': kl}

  def refined_loss(self, params, batch, rng, beta=1.0, values=None):
    """The finopt p-step objective: the loss at psi_K = stop_gradient(refine(q_phi(x))); (loss, aux), the
    refinement at `svi_lr` from `values` (a member's `step_values`; None: the config's).

    Its gradient with respect to params['encoder'] is exactly zero, and the one with respect to
    params['decoder'] is that of the loss at the constants psi_K (no path through the SVI iterates).
    """
    svi_rng, sample_rng = jax.random.split(rng)
    frozen = jax.lax.stop_gradient(params)
    x_BxV = self.counts_BxV(batch)
    mu0_BxD, logvar0_BxD = self.posterior(frozen, batch)
    steps = self.step_value('svi_steps', values)  # a member's (a float32 array holding an integer) or the config's
    steps = steps if isinstance(steps, int) else jnp.round(steps).astype(jnp.int32)
    mu_BxD, logvar_BxD = jax.lax.stop_gradient(self.refine(frozen, x_BxV, mu0_BxD, logvar0_BxD, svi_rng, steps,
                                                           self.step_value('svi_lr', values)))
    log_lik_B, kl_B = self.elbo_terms(params, x_BxV, mu_BxD, logvar_BxD, sample_rng)
    nll, kl = bow_decoder.masked_mean(-log_lik_B, batch), bow_decoder.masked_mean(kl_B, batch)
    return nll + beta * kl, {'refined_reconstruction': nll, 'refined_kl': kl}

  def _adam(self, params, opt_state, grads, parts, values=None):
    """One Adam step on the named parts of params (each part keeps its own Adam state) at the learning rate
    in `values` (a population member's `step_values`; None: the config's)."""
    params, opt_state = dict(params), dict(opt_state)
    optimizer = self.optimizer(self.step_value('learning_rate', values))
    for part in parts:
      updates, opt_state[part] = optimizer.update(grads[part], opt_state[part], params[part])
      params[part] = optax.apply_updates(params[part], updates)
    return params, opt_state

  def q_step(self, params, opt_state, batch, rng, beta, values=None):
    """finopt (1): one Adam step on the encoder with the loss; the decoder is left as it is. `values`: a
    population member's `step_values` (None: the config's)."""
    (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(params, batch, rng, beta)
    params, opt_state = self._adam(params, opt_state, grads, ('encoder',), values)
    return params, opt_state, {'loss': loss, **aux, 'grad_norm_encoder': optax.tree.norm(grads['encoder'])}

  def p_step(self, params, opt_state, batch, rng, beta, values=None):
    """finopt (2) and (3): refine q_phi's posterior, then one Adam step on the decoder at it."""
    (loss, aux), grads = jax.value_and_grad(self.refined_loss, has_aux=True)(params, batch, rng, beta, values)
    params, opt_state = self._adam(params, opt_state, grads, ('decoder',), values)
    return params, opt_state, {'loss_refined': loss, **aux,
                               'grad_norm_decoder': optax.tree.norm(grads['decoder'])}

  def _finopt_step(self, params, opt_state, batch, rng, beta, values):
    q_rng, p_rng = jax.random.split(rng)
    params, opt_state, q_metrics = self.q_step(params, opt_state, batch, q_rng, beta, values)
    params, opt_state, p_metrics = self.p_step(params, opt_state, batch, p_rng, beta, values)
    return params, opt_state, {**q_metrics, **p_metrics}

  def _none_step(self, params, opt_state, batch, rng, beta, values):
    (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(params, batch, rng, beta)
    params, opt_state = self._adam(params, opt_state, grads, ('encoder', 'decoder'), values)
    # Same keys as the finopt step (lax.cond needs them): no refinement, so the refined loss is the loss.
    return params, opt_state, {
        'loss': loss, **aux, 'grad_norm_encoder': optax.tree.norm(grads['encoder']), 'loss_refined': loss,
        'refined_reconstruction': aux['reconstruction'], 'refined_kl': aux['kl'],
        'grad_norm_decoder': optax.tree.norm(grads['decoder'])}

  def steps_per_epoch(self, batch) -> int:
    """train_size // B, B the batch's static number of documents (at least 1)."""
    return max(self.train_size // num_docs(batch), 1)

  def uses_finopt(self, step, batch) -> jax.Array:
    """bool: whether train step `step` (0-based) refines, under model.regime."""
    regime = self.config.regime
    if regime in ('none', 'finopt'):
      return jnp.asarray(regime == 'finopt')
    after_switch = step // self.steps_per_epoch(batch) >= self.config.switch_epoch
    return after_switch if regime == 'none_finopt' else jnp.logical_not(after_switch)

  def train_step(self, state, batch, rng):
    """One update under model.regime; metrics: loss (the amortised loss, before the update), reconstruction,
    kl, loss_refined (the p-step's loss at psi_K; = loss in a 'none' step), refined_reconstruction,
    refined_kl, grad norms, kl_weight and finopt (1.0 when the step refined)."""
    mc = self.config
    step, values = state['step'], self.step_values(state)
    beta = kl_weight(step, self.step_value('kl_start', values), self.step_value('anneal_steps', values))
    args = (state['params'], state['opt_state'], batch, rng, beta, values)
    finopt = self.uses_finopt(step, batch)
    if mc.regime == 'none':
      params, opt_state, metrics = self._none_step(*args)
    elif mc.regime == 'finopt':
      params, opt_state, metrics = self._finopt_step(*args)
    else:
      params, opt_state, metrics = jax.lax.cond(finopt, self._finopt_step, self._none_step, *args)
    metrics = {**metrics, 'kl_weight': beta, 'finopt': finopt.astype(jnp.float32)}
    return {**state, 'params': params, 'opt_state': opt_state, 'step': step + 1}, metrics

  # --- evaluation
  def encode(self, params, batch, rng=None) -> jax.Array:
    """float32 [B, d]: the posterior mean mu; with an rng, a sample z ~ q(z|x)."""
    mu_BxD, logvar_BxD = self.posterior(params, batch)
    return mu_BxD if rng is None else gaussian.sample(mu_BxD, logvar_BxD, rng)

  def features(self, params, batch) -> jax.Array:
    return self.posterior(params, batch)[0]

  def score(self, params, batch, rng) -> dict[str, jax.Array]:
    """Per document: nll (-ELBO at q_phi), nll_refined (-ELBO after SVI; absent when `eval_svi_steps` is 0,
    where nothing is refined), nll_is (IS bound from the refined posterior, or from q_phi without SVI),
    tokens N_d, and kl (KL(q_phi(z|x) || p(z)), the rate of the amortised posterior)."""
    mc = self.config
    elbo0_rng, svi_rng, elbof_rng, is_rng = jax.random.split(rng, 4)
    x_BxV = self.counts_BxV(batch)
    mu0_BxD, logvar0_BxD = self.posterior(params, batch)
    log_lik0_B, kl0_B = self.elbo_terms(params, x_BxV, mu0_BxD, logvar0_BxD, elbo0_rng)
    scores = {'nll': kl0_B - log_lik0_B, 'tokens': jnp.sum(x_BxV, axis=-1), 'kl': kl0_B}
    mu_BxD, logvar_BxD = mu0_BxD, logvar0_BxD
    if mc.eval_svi_steps:
      mu_BxD, logvar_BxD = self.refine(params, x_BxV, mu0_BxD, logvar0_BxD, svi_rng, mc.eval_svi_steps,
                                       mc.eval_svi_lr)
      log_likf_B, klf_B = self.elbo_terms(params, x_BxV, mu_BxD, logvar_BxD, elbof_rng)
      scores['nll_refined'] = klf_B - log_likf_B
    log_w_SxB = self.importance_log_weights(params, x_BxV, mu_BxD, logvar_BxD, is_rng, mc.eval_is_samples)
    return {**scores, 'nll_is': -importance_bound(log_w_SxB)}


# ------------------------------------------------------------------------------------------------ config
def default_model_config(variant: str = 'krishnan') -> ml_collections.ConfigDict:
  """`model` fields of the bag-of-words VAE: 'krishnan' (Krishnan et al. 2018) or 'nvdm' (Miao et al. 2016).

  'nvdm' changes the architecture, the input and the initialisation as in a public PyTorch NVDM on
  20news_clean (1 x 500 tanh encoder on the raw counts, d = 50, linear softmax decoder, PyTorch-style
  default initialisers rather than U(+-0.1)), the regime (no SVI in training) and Adam's rate (5e-4, with
  the batch of 64 that `configs/bow_vae.py` sets: on 20news_clean x / N_d inputs and U(+-0.1) weights
  stalled at a validation perp_0 above 1,100); the evaluation (perp_0, perp_f, perp_is) is the same.
  """
  if variant not in ('krishnan', 'nvdm'):
    raise ValueError(f"default_model_config: variant must be 'krishnan' or 'nvdm', got {variant!r}.")
  config = ml_collections.ConfigDict(dict(
      name='bow_vae',
      latent_dim=100,               # d, the Gaussian latent (the code length of `encode`)
      input='counts',               # what q reads: 'counts' = x / N_d (the reference's 'normalize'),
                                    # 'raw_counts' = x (NVDM's input), or
                                    # 'tfidf' = the batch's L2-normalised TF-IDF row
      encoder_hidden=(400, 400),    # q's hidden widths (the first is the sparse embedding bag); () = linear
      encoder_activation='relu',    # 'relu' | 'tanh' | 'softplus'
      decoder_hidden=(400, 400),    # p's hidden widths before the V-way softmax; () = linear softmax
      decoder_activation='relu',    # 'relu' | 'tanh' | 'softplus'
      init_scale=0.1,               # every weight and bias ~ U(-s, s); 0 = Flax default initialisers
      learning_rate=8e-4,           # Adam (0.9, 0.999) on theta and phi, each part its own Adam state
      regime='finopt',              # 'none' | 'finopt' | 'none_finopt' | 'finopt_none' (module docstring)
      switch_epoch=10,              # epochs before the switch of 'none_finopt' / 'finopt_none'
      svi_steps=100,                # K, SVI steps per training batch (finopt)
      svi_lr=0.01,                  # SVI Adam learning rate in training (the reference's param_lr)
      svi_beta1=0.1,                # SVI Adam beta1 (the reference's; 0.9 = the usual Adam)
      svi_beta2=0.999,              # SVI Adam beta2
      svi_return='last',            # 'last' iterate (the reference) or the 'best' ELBO seen (training and
                                    # evaluation refinement alike)
      eval_svi_steps=100,           # K of the evaluation's refinement (perp_f, perp_is)
      eval_svi_lr=8e-3,             # its learning rate (the reference's evaluation)
      eval_is_samples=100,          # S of the importance-sampled bound (perp_is)
      kl_start=0.01,                # KL weight at step 0 when annealing (the reference's 0.01)
      anneal_steps=0,               # steps of linear KL annealing to 1; 0 = weight 1 from the start
  ))
  if variant == 'nvdm':
    config.update(latent_dim=50, encoder_hidden=(500,), encoder_activation='tanh', decoder_hidden=(),
                  regime='none', input='raw_counts', init_scale=0.0, learning_rate=5e-4)
  return config
