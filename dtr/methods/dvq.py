r"""DVQ: decomposed vector quantisation hashing (Kaiser et al., ICML 2018), one bit per segment.

The encoder maps a document's TF-IDF vector y to h = FF(y) in R^{m x D}; segment i is quantised against its
own 2-entry code book (`dtr.latent.vq`), and bit i of the code is the index of the nearest entry. The
softmax decoder (`dtr.nn.bow_decoder`) scores the words present in y from the quantised vectors
h~ in R^{m D}, with gradients passed straight through to h. Per document,

    loss = -log p(y | h~) + beta * sum_i ||h_i - sg(h~_i)||^2  [+ sum_i ||sg(h_i) - h~_i||^2]

where the bracketed code-book loss is used with `codebook_update='loss'` (VQ-VAE); with 'ema' the code books
follow exponential moving averages of their assigned segments instead (decay 0.99, Laplace smoothing).
Code books start at the segments of two distinct documents of the first batch (a data-dependent start: at
initialisation the encoder's outputs are tiny, and random entries would assign every document one code).
Encoding is deterministic: the nearest entries under the best parameters.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from dtr.methods.base import AdamMethod, check_bits
from dtr.latent import vq
from dtr.nn import bow_decoder
from dtr.nn.feedforward import SparseMLP

CODES_PER_SEGMENT = 2  # one bit per segment


def validate_config(mc: ml_collections.ConfigDict) -> None:
  check_bits(mc)
  if mc.segment_dim <= 0:
    raise ValueError(f'model.segment_dim (D) must be positive, got {mc.segment_dim}.')
  if mc.codebook_update not in ('ema', 'loss'):
    raise ValueError(f"model.codebook_update must be 'ema' or 'loss', got {mc.codebook_update!r}.")
  if not 0 <= mc.ema_decay < 1:
    raise ValueError(f'model.ema_decay must be in [0, 1), got {mc.ema_decay}.')
  if mc.commitment < 0:
    raise ValueError(f'model.commitment (beta) must be >= 0, got {mc.commitment}.')
  if mc.learning_rate <= 0:
    raise ValueError(f'model.learning_rate must be > 0, got {mc.learning_rate}.')


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: Method's equality by value (a static jit argument)
class DVQ(AdamMethod):
  """Pure functions for DVQ hashing: `init`, `train_step`, `encode`."""

  validate = staticmethod(validate_config)

  @property
  def _ema(self) -> bool:
    return self.config.codebook_update == 'ema'

  def _encoder(self) -> SparseMLP:
    return SparseMLP(self.vocab_size, tuple(self.config.encoder_hidden), self.num_bits * self.config.segment_dim)

  def _trainable(self, params) -> dict:
    """The parameters that gradient steps change (the code book only under `codebook_update='loss'`)."""
    return {k: v for k, v in params.items() if k != 'codebook' or not self._ema}

  def segments(self, params, batch) -> jax.Array:
    """Encoder outputs h [B, m, D]."""
    h_BxF = self._encoder().apply({'params': params['encoder']}, batch)
    return h_BxF.reshape(h_BxF.shape[0], self.num_bits, self.config.segment_dim)

  def init(self, rng: jax.Array, batch, hparams=None) -> dict[str, Any]:
    enc_rng, dec_rng, pick_rng = jax.random.split(rng, 3)
    mc = self.config
    encoder = self._encoder().init(enc_rng, self._source(batch))['params']
    h_BxMxD = self.segments({'encoder': encoder}, self._source(batch))
    if h_BxMxD.shape[0] >= CODES_PER_SEGMENT:
      docs = jax.random.choice(pick_rng, h_BxMxD.shape[0], (CODES_PER_SEGMENT,), replace=False)
      codebook_MxKxD = jnp.swapaxes(h_BxMxD[docs], 0, 1)
    else:  # a one-document batch (shape-only inits such as dtr.encode's)
      codebook_MxKxD = jnp.zeros((self.num_bits, CODES_PER_SEGMENT, mc.segment_dim))
    decoder = nn.Dense(self.vocab_size).init(dec_rng, jnp.zeros((1, self.num_bits * mc.segment_dim)))['params']
    params = {'encoder': encoder, 'decoder': decoder, 'codebook': codebook_MxKxD}
    state = {'params': params, 'opt_state': self.optimizer().init(self._trainable(params))}
    if self._ema:
      state['ema'] = vq.ema_init(codebook_MxKxD)
    return self.keep_hparams(state, hparams)

  def loss(self, trainable, codebook, batch):
    params = {**trainable, 'codebook': trainable.get('codebook', codebook)}
    source, target = self._source(batch), self._target(batch)
    h_BxMxD = self.segments(params, source)
    idx_BxM, quantised_BxMxD = vq.nearest(h_BxMxD, params['codebook'])
    z_BxMD = vq.straight_through(h_BxMxD, quantised_BxMxD).reshape(h_BxMxD.shape[0], -1)
    logits_BxV = nn.Dense(self.vocab_size).apply({'params': params['decoder']}, z_BxMD)
    nll = bow_decoder.masked_mean(-bow_decoder.present_word_log_likelihood(logits_BxV, target), target)
    commit = bow_decoder.masked_mean(vq.commitment_loss(h_BxMxD, quantised_BxMxD), source)
    loss = nll + self.config.commitment * commit
    if not self._ema:
      loss = loss + bow_decoder.masked_mean(vq.codebook_loss(h_BxMxD, quantised_BxMxD), source)
    return loss, ({'reconstruction': nll, 'commitment': commit, 'bit_rate': jnp.mean(idx_BxM)},
                  (h_BxMxD, idx_BxM))

  def train_step(self, state, batch, rng):
    del rng  # quantisation is deterministic
    params = state['params']
    trainable = self._trainable(params)
    (loss, (aux, (h, idx))), grads = jax.value_and_grad(self.loss, has_aux=True)(
        trainable, params['codebook'], batch)
    updates, opt_state = self.optimizer(self.rate(state)).update(grads, state['opt_state'], trainable)
    new_params = {**params, **optax.apply_updates(trainable, updates)}
    new_state = {**state, 'opt_state': opt_state}
    if self._ema:
      new_state['ema'], new_params['codebook'] = vq.ema_update(
          state['ema'], h, idx, self._source(batch)['mask'].reshape(-1), self.config.ema_decay,
          self.config.ema_epsilon)
    new_state['params'] = new_params
    return new_state, {'loss': loss, 'grad_norm': optax.tree.norm(grads), **aux}

  def encode(self, params, batch, rng=None) -> jax.Array:
    """Bit i = index of segment i's nearest code-book entry; int8 [B, m]."""
    idx_BxM, _ = vq.nearest(self.segments(params, batch), params['codebook'])
    return idx_BxM.astype(jnp.int8)


def default_model_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='dvq',
      bits=32,
      segment_dim=8,              # D: each bit is a 2-entry code book of D-dimensional vectors
      encoder_hidden=(500, 500),  # as the Bernoulli baselines (NASH's inference network)
      learning_rate=1e-3,
      clip=0.0,
      commitment=0.25,            # beta, the VQ-VAE value
      codebook_update='ema',      # 'ema' (moving averages) or 'loss' (the VQ-VAE code-book loss)
      ema_decay=0.99,
      ema_epsilon=1e-5,           # Laplace smoothing of the counts
  ))
