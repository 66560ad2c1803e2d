r"""Generative semantic hashing with Bernoulli codes: NASH, BMSH and a binary autoencoder.

All three encode a document's TF-IDF vector y into logits l = FF(y) in R^m, sample z ~ Bern(sigma(l)) with
the straight-through gradient (`dtr.latent.bernoulli`), and decode the words present in y with a softmax
over the vocabulary (`dtr.nn.bow_decoder`); the code of a document is the deterministic 1[sigma(l) > 1/2].
Per document, with the expectation estimated by one sample,

  NASH (Shen et al., "NASH: Toward End-to-End Neural Architecture for Generative Semantic Hashing",
  ACL 2018):   loss = -log p(y|z) + kl_weight * KL(q(z|y) || Bern(1/2)^m)

  BMSH (Dong et al., "Document Hashing with Mixture-Prior Generative Models", EMNLP 2019):
               loss = -log p(y|z~) + kl_weight * [KL(q(c|y) || pi) + E_q(c|y) KL(q(z|y) || Bern(g_c))]
    with C learned components g_c = sigma(prior_logits_c), pi uniform, an inference head q(c|y) on the
    shared encoder, and data-dependent noise on the decoder input during training:
    z~ = z + s(y) * eps, eps ~ N(0, I), s(y) = noise_scale * sigma(FF_s(y)) (NASH-DN's noise, which BMSH
    keeps; no noise when encoding).

  binary_ae:   loss = reconstruction only (no KL): the softmax word likelihood as above, or, with
               `reconstruction='mse'`, the squared error ||y - (W z + b)||^2 of the TF-IDF vector itself.

Defaults follow the papers: a 2-layer ReLU encoder of 500 units (NASH's inference network, also used by
VDSH and BMSH), Adam with learning rate 1e-3, batch 64, KL weight 1.
"""

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from dtr.methods.base import AdamMethod, check_bits, setting
from dtr.latent import bernoulli
from dtr.nn import bow_decoder
from dtr.nn.feedforward import SparseMLP


# The model fields a config may lack and what their absence means (`NASH.absent_means`): binary_ae has no KL.
ABSENT = {'kl_weight': 0.0}


def validate_config(mc: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field for impossible settings."""
  check_bits(mc)
  if any(h <= 0 for h in mc.encoder_hidden):
    raise ValueError(f'model.encoder_hidden widths must be positive, got {tuple(mc.encoder_hidden)}.')
  if mc.learning_rate <= 0:
    raise ValueError(f'model.learning_rate must be > 0, got {mc.learning_rate}.')
  if setting(mc, 'kl_weight', ABSENT) < 0:
    raise ValueError(f'model.kl_weight must be >= 0, got {mc.kl_weight}.')
  if 'num_components' in mc and mc.num_components < 1:
    raise ValueError(f'model.num_components (C) must be >= 1, got {mc.num_components}.')
  if 'reconstruction' in mc and mc.reconstruction not in ('softmax', 'mse'):
    raise ValueError(f"model.reconstruction must be 'softmax' or 'mse', got {mc.reconstruction!r}.")


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: Method's equality by value (a static jit argument)
class NASH(AdamMethod):
  """Bernoulli VAE with a uniform prior and straight-through bits: `init`, `train_step`, `encode`."""

  validate = staticmethod(validate_config)
  absent_means: ClassVar[dict] = ABSENT

  # --- pieces the subclasses change
  def _extra_outputs(self) -> int:
    """Encoder outputs after the m bit logits (noise scales, component logits)."""
    return 0

  def _init_extra(self, rng) -> dict:
    del rng
    return {}

  def _decoder_input(self, z_BxM, extra_BxE, rng):
    del extra_BxE, rng
    return z_BxM

  def _kl(self, params, logits_BxM, extra_BxE):
    del params, extra_BxE
    return bernoulli.kl_to_uniform(logits_BxM)

  def _negative_log_likelihood(self, decoder_logits_BxV, batch):
    return -bow_decoder.present_word_log_likelihood(decoder_logits_BxV, batch)

  # --- shared
  def _encoder(self) -> SparseMLP:
    return SparseMLP(self.vocab_size, tuple(self.config.encoder_hidden), self.num_bits + self._extra_outputs())

  def _decoder(self) -> nn.Dense:
    return nn.Dense(self.vocab_size)

  def encoder_outputs(self, params, batch) -> tuple[jax.Array, jax.Array]:
    """(bit logits [B, m], extra heads [B, E])."""
    out_BxF = self._encoder().apply({'params': params['encoder']}, batch)
    return out_BxF[:, :self.num_bits], out_BxF[:, self.num_bits:]

  def init(self, rng: jax.Array, batch, hparams=None) -> dict[str, Any]:
    enc_rng, dec_rng, extra_rng = jax.random.split(rng, 3)
    params = {'encoder': self._encoder().init(enc_rng, self._source(batch))['params'],
              'decoder': self._decoder().init(dec_rng, jnp.zeros((1, self.num_bits)))['params'],
              **self._init_extra(extra_rng)}
    return self.keep_hparams({'params': params, 'opt_state': self.optimizer().init(params)}, hparams)

  def loss(self, params, batch, rng):
    """Mean over documents of reconstruction + kl_weight * KL, one straight-through sample each."""
    sample_rng, noise_rng = jax.random.split(rng)
    source, target = self._source(batch), self._target(batch)
    logits_BxM, extra_BxE = self.encoder_outputs(params, source)
    z_BxM = bernoulli.sample_straight_through(logits_BxM, sample_rng)
    decoder_logits_BxV = self._decoder().apply({'params': params['decoder']},
                                               self._decoder_input(z_BxM, extra_BxE, noise_rng))
    nll = bow_decoder.masked_mean(self._negative_log_likelihood(decoder_logits_BxV, target), target)
    kl = bow_decoder.masked_mean(self._kl(params, logits_BxM, extra_BxE), source)
    loss = nll + self.setting('kl_weight') * kl
    return loss, {'reconstruction': nll, 'kl': kl, 'bit_rate': jnp.mean(jax.nn.sigmoid(logits_BxM))}

  def train_step(self, state, batch, rng):
    (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(state['params'], batch, rng)
    updates, opt_state = self.optimizer(self.rate(state)).update(grads, state['opt_state'], state['params'])
    new_state = {**state, 'params': optax.apply_updates(state['params'], updates), 'opt_state': opt_state}
    return new_state, {'loss': loss, 'grad_norm': optax.tree.norm(grads), **aux}

  def encode(self, params, batch, rng=None) -> jax.Array:
    """The deterministic code 1[sigma(l) > 1/2]; int8 [B, m]."""
    return bernoulli.threshold(self.encoder_outputs(params, batch)[0])


@dataclasses.dataclass(frozen=True, eq=False)
class BMSH(NASH):
  """NASH with a mixture-of-Bernoulli prior and data-dependent decoder noise (Dong et al. 2019)."""

  def _extra_outputs(self) -> int:
    return self.num_bits + self.config.num_components  # noise scales, then q(c|y) logits

  def _init_extra(self, rng) -> dict:
    prior = jax.random.normal(rng, (self.config.num_components, self.num_bits)) * self.config.prior_init_scale
    return {'prior': {'component_logits': prior}}

  def _decoder_input(self, z_BxM, extra_BxE, rng):
    if self.config.noise_scale <= 0:
      return z_BxM
    scale_BxM = self.config.noise_scale * jax.nn.sigmoid(extra_BxE[:, :self.num_bits])
    return z_BxM + scale_BxM * jax.random.normal(rng, z_BxM.shape, z_BxM.dtype)

  def _kl(self, params, logits_BxM, extra_BxE):
    components = params['prior']['component_logits']
    uniform_mixing = jnp.zeros((components.shape[0],), components.dtype)
    return bernoulli.mixture_prior_kl(logits_BxM, extra_BxE[:, self.num_bits:], components, uniform_mixing)


@dataclasses.dataclass(frozen=True, eq=False)
class BinaryAE(NASH):
  """Straight-through Bernoulli autoencoder: reconstruction only, no prior."""

  def _kl(self, params, logits_BxM, extra_BxE):
    del params, extra_BxE
    return jnp.zeros(logits_BxM.shape[:1], logits_BxM.dtype)

  def _negative_log_likelihood(self, decoder_logits_BxV, batch):
    if self.config.reconstruction == 'mse':
      target_BxV = bow_decoder.dense_rows(batch, self.vocab_size)
      return jnp.sum(jnp.square(target_BxV - decoder_logits_BxV), axis=-1)
    return super()._negative_log_likelihood(decoder_logits_BxV, batch)


def default_model_config(name: str = 'nash') -> ml_collections.ConfigDict:
  """`model` fields of NASH ('nash'), BMSH ('bmsh') or the binary autoencoder ('binary_ae')."""
  config = ml_collections.ConfigDict(dict(
      name=name,
      bits=32,
      encoder_hidden=(500, 500),  # NASH's inference network: 2 ReLU layers of 500 units
      learning_rate=1e-3,         # Adam, as in NASH and BMSH
      clip=0.0,                   # global-norm gradient clip (0 = off)
  ))
  if name in ('nash', 'bmsh'):
    config.kl_weight = 1.0
  if name == 'bmsh':
    config.num_components = 10    # C
    config.prior_init_scale = 1.0  # component logits ~ N(0, s^2)
    config.noise_scale = 1.0      # decoder noise std s(y) = noise_scale * sigmoid(FF_s(y)); 0 = off
  if name == 'binary_ae':
    config.reconstruction = 'softmax'  # 'softmax' (words present) or 'mse' (TF-IDF squared error)
  return config
