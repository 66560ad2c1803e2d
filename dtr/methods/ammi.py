"""AMMI: adversarial maximal mutual information over binary Markov codes.

Stratos & Wiseman, "Learning Discrete Structured Representations by Adversarially Maximizing Mutual
Information", ICML 2020.

Codes z in {0,1}^m. The encoder p_psi(z|y) is an order-o Markov chain whose logits sigmoid(FF(y)) in
R^{m x 2^o} are computed from the document's TF-IDF vector y. The variational prior q_theta(z) is an order-r
chain (r >= o), a free m x 2^r table or FF over learned position embeddings. Training solves

    max_psi min_theta  beta * H+(p_Z, q_theta) - H(Z|Y)

where p_Z is the batch average of the encoder distributions, so H+(p_Z, q) = mean_b H+(p(.|y_b), q), and
H(Z|Y) = mean_b H(p(.|y_b)). Both terms are exact forward dynamic programs (`dtr.latent.markov`).
Each batch takes G Adam steps on theta with psi fixed, then one step on psi (the paper's Algorithm 2).
BMMI (m <= 16) replaces the adversarial bound by the exact batch entropy H(Z) over all 2^m codes.

Views (dtr's extension, `view_dropout` = d > 0): H(Z|Y) is replaced by the cross entropy
H+(p(.|y), p(.|y~)) = H(p(.|y)) + KL(p(.|y) || p(.|y~)), where y~ is the document with each TF-IDF entry
dropped with probability d (kept ones scaled by 1/(1-d)), drawn afresh every step. The code must then be
predictable from a random part of the document, which favours what the whole document is about (its
topic) over its rarest words: the paper's predictive objective H+(p(z|Y), q(z|X)) with X a random part of
Y and one shared encoder. Codes are still the Viterbi decoding of the whole document.

Choices where the reference code is ambiguous (documented in the README):
- The prior's Adam state persists across batches (the reference re-creates it every batch, so its moments
  live G steps); `reset_prior_optimizer=True` restores the reference behaviour.
- Encoder gradient clipping applies at every step (the reference's clipping stops after the first step
  because it consumes a generator).
"""

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from dtr.methods.base import Method, check_bits, setting
from dtr.latent import markov
from dtr.nn.feedforward import SparseMLP, uniform_init

BMMI_MAX_BITS = 16
MAX_ORDER = 12  # 2^order states per bit


class MarkovPrior(nn.Module):
  """Logits [m, 2^r] of the variational prior: a raw table or FF over position embeddings."""

  num_bits: int
  order: int
  raw: bool
  hidden: int
  layers: int
  init_scale: Any  # a float, or a traced scalar (population members)

  @nn.compact
  def __call__(self) -> jax.Array:
    init = uniform_init(self.init_scale)
    if self.raw:
      return self.param('logits', init, (self.num_bits, 2**self.order))
    x_MxH = self.param('position_embeddings', init, (self.num_bits, self.hidden))
    for _ in range(self.layers):
      x_MxH = nn.relu(nn.Dense(self.hidden, kernel_init=init, bias_init=init)(x_MxH))
    return nn.Dense(2**self.order, kernel_init=init, bias_init=init)(x_MxH)


def check_order(mc: ml_collections.ConfigDict, field: str, symbol: str, cross_entropy: str) -> None:
  """Raises ValueError unless encoder_order <= mc[field] <= MAX_ORDER: a cross entropy from the encoder's
  chain to another chain is exact only when the other chain has at least the encoder's order."""
  order = mc[field]
  if order < mc.encoder_order:
    raise ValueError(
        f'model.{field} ({symbol}={order}) must be >= model.encoder_order (o={mc.encoder_order}): the cross '
        f'entropy {cross_entropy} is only exact when that chain has at least the encoder\'s order. Raise '
        f'{field} or lower encoder_order.')
  if order > MAX_ORDER:
    raise ValueError(f'model.{field}={order} means 2^{order} states per bit; keep it <= {MAX_ORDER}.')


# The model fields a config may lack and what their absence means (`AMMI.absent_means`): no views.
ABSENT = {'view_dropout': 0.0}


def validate_config(mc: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field for impossible AMMI settings."""
  check_bits(mc)
  if mc.encoder_order < 0 or mc.prior_order < 0:
    raise ValueError('model.encoder_order and model.prior_order must be >= 0, got '
                     f'{mc.encoder_order} and {mc.prior_order}.')
  check_order(mc, 'prior_order', 'r', 'H+(p, q) against the prior (the paper uses o=0, r=3)')
  if mc.bmmi and mc.bits > BMMI_MAX_BITS:
    raise ValueError(f'model.bmmi enumerates all 2^bits codes and needs bits <= {BMMI_MAX_BITS}, got '
                     f'bits={mc.bits}. Use the adversarial prior (model.bmmi=False) for longer codes.')
  if mc.prior_steps < 0:
    raise ValueError(f'model.prior_steps (G) must be >= 0, got {mc.prior_steps}.')
  if not 0.0 <= setting(mc, 'view_dropout', ABSENT) < 1.0:
    raise ValueError(f'model.view_dropout is the probability of dropping a word from the view, in [0, 1); got '
                     f'{mc.view_dropout}. Use 0 for the plain H(Z|Y) of the paper.')
  if mc.entropy_weight <= 0:
    raise ValueError(f'model.entropy_weight (beta) must be > 0, got {mc.entropy_weight}.')


def batch_entropy_bruteforce(p_logits_BxMxS: jax.Array) -> jax.Array:
  """Exact H(Z) of the batch mixture p_Z = mean_b p(.|y_b), by enumerating all 2^m codes (BMMI)."""
  num_bits = p_logits_BxMxS.shape[-2]
  codes_CxM = ((jnp.arange(2**num_bits)[:, None] >> jnp.arange(num_bits)[None, :]) & 1).astype(jnp.int32)
  if p_logits_BxMxS.shape[-1] == 1:  # order 0: log p(z|y) is linear in z, one matmul
    l_BxM = p_logits_BxMxS[..., 0]
    log_on, log_off = jax.nn.log_sigmoid(l_BxM), jax.nn.log_sigmoid(-l_BxM)
    logp_BxC = (log_on - log_off) @ codes_CxM.T.astype(l_BxM.dtype) + log_off.sum(-1, keepdims=True)
  else:
    logp_BxC = jax.vmap(lambda lg: markov.log_prob(codes_CxM, lg))(p_logits_BxMxS)
  log_pz_C = jax.nn.logsumexp(logp_BxC, axis=0) - jnp.log(logp_BxC.shape[0])
  return -jnp.sum(jnp.exp(log_pz_C) * log_pz_C)


def dropout_entries(batch, rate, rng):
  """Zeroes each TF-IDF entry of a flat batch with probability `rate` and scales the kept ones by
  1 / (1 - rate), so a document's expected input is unchanged; rate 0 returns the same values."""
  keep = 1.0 - rate
  kept = jax.random.bernoulli(rng, keep, batch['vals'].shape)
  return dict(batch, vals=jnp.where(kept, batch['vals'] / keep, 0.0).astype(batch['vals'].dtype))


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: Method's equality by value (a static jit argument)
class AMMI(Method):
  """Pure functions for AMMI: `init`, `train_step`, `encode` (params in, arrays out)."""

  validate = staticmethod(validate_config)
  conditional_hparams: ClassVar[dict] = {
      'view_dropout': ('when model.view_dropout > 0: whether a view exists is fixed per program',
                       lambda mc: setting(mc, 'view_dropout', ABSENT) > 0)}
  absent_means: ClassVar[dict] = ABSENT

  def default_hparams(self) -> dict[str, jax.Array]:
    """Hyperparameters that change no array shape, as float32 scalars kept in the state, so a population of
    settings is one `jax.vmap` over states (dtr.population); single runs read the same values from config.
    view_dropout is one of them only when the config turns views on (> 0): whether the view exists is static.
    """
    mc = self.config
    values = dict(learning_rate=mc.learning_rate, prior_learning_rate=mc.prior_learning_rate or mc.learning_rate,
                  entropy_weight=mc.entropy_weight, clip=mc.clip, init_scale=mc.init_scale)
    values.update({name: mc[name] for name in self.conditional_hparams_on()})
    return {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}

  def _encoder(self, init_scale=1.0) -> SparseMLP:
    """`init_scale` only matters for `init`; it may be a traced scalar (a population member's)."""
    mc = self.config
    return SparseMLP(self.vocab_size, tuple(mc.encoder_hidden), mc.bits * 2**mc.encoder_order,
                     init_scale=init_scale)

  def _prior(self, init_scale=1.0) -> MarkovPrior:
    mc = self.config
    return MarkovPrior(mc.bits, mc.prior_order, mc.prior_raw, mc.prior_hidden, mc.prior_layers, init_scale)

  @staticmethod
  def encoder_optimizer(hp) -> optax.GradientTransformation:
    """Adam after global-norm clipping of the encoder gradient (clip <= 0: no clipping)."""
    max_norm = jnp.where(hp['clip'] > 0, hp['clip'], jnp.inf)
    return optax.chain(optax.clip_by_global_norm(max_norm), optax.adam(hp['learning_rate']))

  @staticmethod
  def prior_optimizer(hp) -> optax.GradientTransformation:
    return optax.adam(hp['prior_learning_rate'])

  def encoder_logits(self, encoder_params, batch) -> jax.Array:
    """p_psi logits [B, m, 2^o]."""
    out_BxF = self._encoder().apply({'params': encoder_params}, batch)
    return out_BxF.reshape(out_BxF.shape[0], self.config.bits, 2**self.config.encoder_order)

  def prior_logits(self, prior_params) -> jax.Array:
    return self._prior().apply({'params': prior_params})

  def init(self, rng: jax.Array, batch, hparams=None) -> dict[str, Any]:
    """Parameters U(-init_scale, init_scale), optimiser states, hyperparameters."""
    hp = self.default_hparams() if hparams is None else hparams
    enc_rng, prior_rng = jax.random.split(rng)
    params = {'encoder': self._encoder(hp['init_scale']).init(enc_rng, batch)['params'],
              'prior': self._prior(hp['init_scale']).init(prior_rng)['params']}
    opt_state = {'encoder': self.encoder_optimizer(hp).init(params['encoder']),
                 'prior': self.prior_optimizer(hp).init(params['prior'])}
    return {'params': params, 'opt_state': opt_state, 'hparams': hp}

  def update_prior(self, params, opt_state, hp, p_fixed_BxMxS):
    """G Adam steps on theta against encoder logits held fixed: (prior params, prior optimiser state).

    H+(p_Z, q) is linear in p's context marginals: they are averaged over the batch once, and every prior
    step costs O(m 2^r) instead of O(B m 2^r) (the same objective as mean_b H+(p_b, q)).
    """
    mc = self.config
    prior_tx = self.prior_optimizer(hp)
    mu_bar = jnp.mean(markov.context_marginals(p_fixed_BxMxS, mc.prior_order), axis=0)

    def prior_loss(prior_params):
      return markov.cross_entropy_from_marginals(mu_bar, self.prior_logits(prior_params))

    def prior_step(carry, _):
      prior_params, prior_opt = carry
      loss, grads = jax.value_and_grad(prior_loss)(prior_params)
      updates, prior_opt = prior_tx.update(grads, prior_opt, prior_params)
      return (optax.apply_updates(prior_params, updates), prior_opt), loss

    prior_params, prior_opt = params['prior'], opt_state['prior']
    if mc.reset_prior_optimizer:
      prior_opt = prior_tx.init(prior_params)
    if not mc.bmmi and mc.prior_steps > 0:
      (prior_params, prior_opt), _ = jax.lax.scan(prior_step, (prior_params, prior_opt), None,
                                                  length=mc.prior_steps)
    return prior_params, prior_opt

  def train_step(self, state, batch, rng=None):
    """One AMMI update: G prior steps with the encoder fixed, then one encoder step.

    The objective is exact; `rng` only draws the views when `view_dropout` > 0 (and must then be given).
    """
    mc = self.config
    params, opt_state, hp = state['params'], state['opt_state'], state['hparams']
    view_batch = None
    if 'view_dropout' in hp:
      if rng is None:
        raise ValueError('AMMI.train_step needs an rng when model.view_dropout > 0 (it draws the views).')
      view_batch = dropout_entries(batch, hp['view_dropout'], rng)
    enc_tx = self.encoder_optimizer(hp)
    p_fixed = jax.lax.stop_gradient(self.encoder_logits(params['encoder'], batch))
    prior_params, prior_opt = self.update_prior(params, opt_state, hp, p_fixed)
    q_logits = jax.lax.stop_gradient(self.prior_logits(prior_params))

    def encoder_loss(enc_params):
      p_logits = self.encoder_logits(enc_params, batch)
      if view_batch is None:
        cond_entropy = jnp.mean(markov.entropy(p_logits))
      else:
        cond_entropy = jnp.mean(markov.cross_entropy(p_logits, self.encoder_logits(enc_params, view_batch)))
      if mc.bmmi:
        code_entropy = batch_entropy_bruteforce(p_logits)
      else:
        code_entropy = jnp.mean(markov.cross_entropy(p_logits, q_logits))  # H+ >= H(Z)
      loss = cond_entropy - hp['entropy_weight'] * code_entropy
      return loss, {'cond_entropy': cond_entropy, 'code_entropy': code_entropy,
                    'mutual_info': code_entropy - cond_entropy}

    (loss, aux), grads = jax.value_and_grad(encoder_loss, has_aux=True)(params['encoder'])
    updates, enc_opt = enc_tx.update(grads, opt_state['encoder'], params['encoder'])
    new_state = {'params': {'encoder': optax.apply_updates(params['encoder'], updates), 'prior': prior_params},
                 'opt_state': {'encoder': enc_opt, 'prior': prior_opt}, 'hparams': hp}
    metrics = {'loss': loss, 'grad_norm': optax.tree.norm(grads), **aux}
    return new_state, metrics

  def encode(self, params, batch, rng=None) -> jax.Array:
    """Most probable code z* = argmax_z p_psi(z|y) by Viterbi; int8 [B, m]."""
    return self.codes_from_logits(self.encoder_logits(params['encoder'], batch))

  def codes_from_logits(self, logits_BxF) -> jax.Array:
    """Viterbi codes int8 [B, m] from the encoder's flat logits [B, m * 2^o]."""
    logits = logits_BxF.reshape(logits_BxF.shape[0], self.config.bits, 2**self.config.encoder_order)
    z_BxM, _ = markov.viterbi(logits)
    return z_BxM.astype(jnp.int8)

  def linear_encoder(self, params):
    """(kernel [V, F], bias [F]) when the encoder is one linear map of the TF-IDF (no hidden layer), else None.

    Then the codes are `codes_from_logits(x @ kernel + bias)`; populations encode all members with one host
    sparse product (`dtr.population.encode_population`).
    """
    if tuple(self.config.encoder_hidden) or type(self).encode is not AMMI.encode:
      return None
    layer = params['encoder']['SparseLinear_0']
    return layer['kernel'], layer['bias']


def default_model_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='ammi',
      bits=64,
      encoder_order=0,          # o
      prior_order=3,            # r > o is what makes the adversarial bound useful
      encoder_hidden=(),        # () = a single linear layer, as in the published runs
      prior_raw=False,          # free m x 2^r table instead of FF(position embeddings)
      prior_hidden=20,          # H
      prior_layers=0,           # ReLU layers in the prior FF
      init_scale=0.5,           # U(-init, init) for every parameter
      entropy_weight=3.5,       # beta >= 1
      prior_steps=2,            # G
      learning_rate=0.03,
      prior_learning_rate=0.0,  # 0 = same as learning_rate
      clip=5.0,                 # global-norm clip of encoder gradients (0 = off)
      bmmi=False,               # exact batch entropy over 2^m codes instead of the prior (m <= 16)
      reset_prior_optimizer=False,
      view_dropout=0.0,         # > 0: H(Z|Y) -> H+(p(.|y), p(.|y~)), y~ = y with words dropped at this rate
  ))
