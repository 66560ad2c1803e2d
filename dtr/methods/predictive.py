r"""Predictive document hashing: codes of Y that X predicts (Stratos & Wiseman, ICML 2020, its second task).

Data are pairs (X, Y) of related texts (`dtr.data.pairs`); a batch is {'x': flat batch, 'y': flat batch}
with row b of both sides forming pair b. A predictive method has the pure functions of `Method`, on pair
batches, with two encoders in place of `encode`:

  init(rng, pair_batch) -> state;  train_step(state, pair_batch, rng) -> (state, metrics)
  encode_y(params, batch), encode_x(params, batch) -> int8 [B, m]   (`y_side` / `x_side` wrap them as
                                                                     one-sided methods for `dtr.train`)

Evaluation (`dtr.predictive_train`) asks whether the code of X_i finds Y_i among the K nearest Y codes.

PredictiveAMMI. The encoder p_psi(z|Y) is AMMI's order-o chain, a second encoder q_phi(z|X) an order-h
chain (h >= o), the prior q_theta an order-r chain (r >= o). Z ~ p(z|Y) should be predictable from X and
diverse:

    I(Z; X) >= H(Z) - H+(p(z|Y), q(z|X))  and  H(Z) <= H+(p_Z, q_theta), so the loss is
    loss(psi, phi) = mean_b [ H+(p(.|Y_b), q(.|X_b)) - beta * H+(p(.|Y_b), q_theta) ]

with theta minimising H+(p_Z, q_theta) in G steps per batch before the encoders' step (AMMI's min-max,
`AMMI.update_prior`). Both cross entropies are exact dynamic programs (`dtr.latent.markov`); the first needs
h >= o. Codes: Viterbi of p_psi for Y, Viterbi of q_phi for X.

Conditional baselines (encoder on Y, decoder predicts X's words). ConditionalBMSH is BMSH (straight-through
Bernoulli code, mixture prior, decoder noise) with loss -log p(X | z~(Y)) + KL(q(z|Y) || prior);
ConditionalDVQ is DVQ with loss -log p(X | h~(Y)) + beta * commitment. They learn one encoder only, so X is
encoded by that same encoder (one vocabulary for X and Y): both sides land in one code space, and a pair
matches when the encoder maps the two related texts to nearby codes. This is the natural reading of "codes
of X" for a model that only ever sees X as a decoder target, and the same choice an off-the-shelf hashing
model would be evaluated with.
"""

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import optax

from dtr.latent import markov
from dtr.methods import ammi, dvq, vae_hashing
from dtr.methods.base import setting
from dtr.nn.feedforward import SparseMLP


@dataclasses.dataclass(frozen=True)  # equal for equal methods and sides: a static jit argument
class Side:
  """One side of a predictive method as a one-sided method: `encode(params, batch)` and `num_bits`."""

  method: Any
  side: str  # 'x' or 'y'

  @property
  def num_bits(self) -> int:
    return self.method.num_bits

  def encode(self, params, batch, rng=None) -> jax.Array:
    return self.method.encode_x(params, batch) if self.side == 'x' else self.method.encode_y(params, batch)


class _Sides:
  """`x_side` and `y_side`, built once per method so that jit caches keyed on them hit."""

  reads = 'pairs'

  @functools.cached_property
  def x_side(self) -> Side:
    return Side(self, 'x')

  @functools.cached_property
  def y_side(self) -> Side:
    return Side(self, 'y')


# ------------------------------------------------------------------------------------------------ AMMI
def validate_config(mc: ml_collections.ConfigDict) -> None:
  """AMMI's checks, plus the order of q_phi(z|X): h >= o makes H+(p(z|Y), q(z|X)) exact."""
  ammi.validate_config(mc)
  ammi.check_order(mc, 'x_encoder_order', 'h', 'H+(p(z|Y), q(z|X)) against q_phi')
  if mc.bmmi:
    raise ValueError('model.bmmi is not supported by predictive AMMI; use the adversarial prior (bmmi=False).')
  if setting(mc, 'view_dropout', ammi.ABSENT) > 0:
    raise ValueError('model.view_dropout is not supported by predictive AMMI: its conditional term is already '
                     'the cross entropy H+(p(z|Y), q(z|X)) to the other text of the pair. Set view_dropout=0.')


@dataclasses.dataclass(frozen=True, eq=False)
class PredictiveAMMI(_Sides, ammi.AMMI):
  """AMMI's encoder p_psi(z|Y) and prior q_theta, plus q_phi(z|X); trained by one Adam on (psi, phi)."""

  validate = staticmethod(validate_config)
  conditional_hparams: ClassVar[dict] = {}  # AMMI's view_dropout: refused here (validate_config)

  def _x_encoder(self, init_scale=1.0) -> SparseMLP:
    mc = self.config
    return SparseMLP(self.vocab_size, tuple(mc.x_encoder_hidden), mc.bits * 2**mc.x_encoder_order,
                     init_scale=init_scale)

  def x_encoder_logits(self, x_encoder_params, batch) -> jax.Array:
    """q_phi logits [B, m, 2^h]."""
    out_BxF = self._x_encoder().apply({'params': x_encoder_params}, batch)
    return out_BxF.reshape(out_BxF.shape[0], self.config.bits, 2**self.config.x_encoder_order)

  def init(self, rng: jax.Array, batch, hparams=None) -> dict[str, Any]:
    """Parameters U(-init_scale, init_scale); one optimiser state for both encoders, one for the prior."""
    hp = self.default_hparams() if hparams is None else hparams
    y_rng, x_rng, prior_rng = jax.random.split(rng, 3)
    encoders = {'encoder': self._encoder(hp['init_scale']).init(y_rng, batch['y'])['params'],
                'x_encoder': self._x_encoder(hp['init_scale']).init(x_rng, batch['x'])['params']}
    prior = self._prior(hp['init_scale']).init(prior_rng)['params']
    opt_state = {'encoders': self.encoder_optimizer(hp).init(encoders),
                 'prior': self.prior_optimizer(hp).init(prior)}
    return {'params': {**encoders, 'prior': prior}, 'opt_state': opt_state, 'hparams': hp}

  def loss(self, encoders, q_logits_MxR, batch, entropy_weight):
    """mean_b H+(p(.|Y_b), q(.|X_b)) - beta * mean_b H+(p(.|Y_b), q_theta), and its parts."""
    p_logits = self.encoder_logits(encoders['encoder'], batch['y'])
    qx_logits = self.x_encoder_logits(encoders['x_encoder'], batch['x'])
    prediction = jnp.mean(markov.cross_entropy(p_logits, qx_logits))  # >= H(Z|X)
    code_entropy = jnp.mean(markov.cross_entropy(p_logits, q_logits_MxR))  # >= H(Z)
    cond_entropy = jnp.mean(markov.entropy(p_logits))
    loss = prediction - entropy_weight * code_entropy
    return loss, {'prediction_cross_entropy': prediction, 'code_entropy': code_entropy,
                  'cond_entropy': cond_entropy, 'mutual_info_bound': code_entropy - prediction}

  def train_step(self, state, batch, rng=None):
    """G prior steps with p_psi fixed, then one Adam step on both encoders."""
    del rng  # exact objective: no sampling
    params, opt_state, hp = state['params'], state['opt_state'], state['hparams']
    p_fixed = jax.lax.stop_gradient(self.encoder_logits(params['encoder'], batch['y']))
    prior_params, prior_opt = self.update_prior(params, opt_state, hp, p_fixed)
    q_logits = jax.lax.stop_gradient(self.prior_logits(prior_params))
    encoders = {'encoder': params['encoder'], 'x_encoder': params['x_encoder']}
    (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(encoders, q_logits, batch,
                                                                      hp['entropy_weight'])
    updates, enc_opt = self.encoder_optimizer(hp).update(grads, opt_state['encoders'], encoders)
    new_state = {'params': {**optax.apply_updates(encoders, updates), 'prior': prior_params},
                 'opt_state': {'encoders': enc_opt, 'prior': prior_opt}, 'hparams': hp}
    return new_state, {'loss': loss, 'grad_norm': optax.tree.norm(grads), **aux}

  def encode_y(self, params, batch, rng=None) -> jax.Array:
    """argmax_z p_psi(z|Y) by Viterbi; int8 [B, m]."""
    return self.encode(params, batch)

  def encode_x(self, params, batch, rng=None) -> jax.Array:
    """argmax_z q_phi(z|X) by Viterbi; int8 [B, m]."""
    z_BxM, _ = markov.viterbi(self.x_encoder_logits(params['x_encoder'], batch))
    return z_BxM.astype(jnp.int8)


# ------------------------------------------------------------------------------------------------ baselines
class _ConditionalOnY(_Sides):
  """Encoder reads Y, decoder reconstructs X; X and Y are both encoded by the one encoder."""

  def _source(self, batch):
    return batch['y']

  def _target(self, batch):
    return batch['x']

  def encode_y(self, params, batch, rng=None) -> jax.Array:
    return self.encode(params, batch)

  def encode_x(self, params, batch, rng=None) -> jax.Array:
    return self.encode(params, batch)


@dataclasses.dataclass(frozen=True, eq=False)
class ConditionalBMSH(_ConditionalOnY, vae_hashing.BMSH):
  """BMSH whose decoder predicts X's words from the code of Y."""


@dataclasses.dataclass(frozen=True, eq=False)
class ConditionalDVQ(_ConditionalOnY, dvq.DVQ):
  """DVQ whose decoder predicts X's words from the quantised encoding of Y."""


# ------------------------------------------------------------------------------------------------ configs
def default_model_config(name: str = 'predictive_ammi') -> ml_collections.ConfigDict:
  """`model` fields of 'predictive_ammi', 'conditional_bmsh' or 'conditional_dvq'."""
  if name == 'conditional_bmsh':
    config = vae_hashing.default_model_config('bmsh')
  elif name == 'conditional_dvq':
    config = dvq.default_model_config()
  elif name == 'predictive_ammi':
    config = ammi.default_model_config()
    config.update(encoder_order=0, prior_order=3, init_scale=0.1, entropy_weight=2.0, prior_steps=4,
                  learning_rate=3e-3, clip=5.0)
    config.x_encoder_order = 0     # h >= o: order of q_phi(z|X)
    config.x_encoder_hidden = ()   # () = a single linear layer, as p_psi's
  else:
    raise ValueError(f'Unknown predictive method {name!r}; known: {sorted(PREDICTIVE)}.')
  config.name = name
  return config


PREDICTIVE = {'predictive_ammi': PredictiveAMMI, 'conditional_bmsh': ConditionalBMSH,
              'conditional_dvq': ConditionalDVQ}
