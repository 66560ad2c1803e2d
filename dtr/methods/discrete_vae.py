r"""Discrete VAEs over token sequences: VQ-VAE, categorical VAE and Hard EM, with global or local latents.

Jin, Wiseman, Stratos & Livescu, "Discrete Latent Variable Representations for Low-Resource Text
Classification", ACL 2020 (reference code: github.com/shuningjin/discrete-text-rep).

A document x = (x_1..x_n) is embedded (E[x_t] + sinusoidal positions, dropout), read by a Transformer
encoder (`dtr.nn.transformer`) into states h_1..h_n in R^d, and summarised by M discrete latents, each with
K values and its own code book e_i in R^{K x D}:

  global  one set per document: the masked mean of the states is projected to M inputs (VQ: M vectors of
          width d; categorical and Hard EM: M x K logits); D = d and the decoder's memory is the M code
          vectors e_{i, z_i};
  local   one set per token: each state is cut into M slices of width d/M (VQ) or projected to M x K logits;
          D = d/M and the memory is, per token, the concatenation [e_{1, z_t1}, ..., e_{M, z_tM}] in R^d
          (the source's padding masked). Local latents therefore need M | d (the reference's choice).

A one-layer Transformer decoder reads bos + x by causal self-attention and the memory by cross-attention and
predicts x + eos (n + 1 tokens; its input embeddings are the encoder's). Per document, teacher forcing,

  VQ-VAE   z_i = argmin_k ||u_i - e_ik||^2 for the encoder's inputs u_i, straight-through (`dtr.latent.vq`):
               loss = -log p(x | e_z) + beta sum_i ||u_i - sg(e_iz)||^2 [+ sum_i ||sg(u_i) - e_iz||^2]
           (bracketed: `codebook_update='loss'`; with 'ema' the code books follow moving averages of their
           assigned inputs, decay 0.99, Laplace smoothing, starting from the initial code books);
  CatVAE   z_i ~ q(z_i | x) = softmax(l_i) by the straight-through Gumbel-softmax at temperature tau
           (`dtr.latent.gumbel`): loss = -log p(x | e_z) + kl_weight * free-bits KL(q || U_K), with the
           floor lambda = gamma * M * L * log K applied per latent or by the reference's rule
           (`free_bits_mode`; both in `dtr.latent.gumbel`);
  Hard EM  E-steps: `em_iter` gradient steps on the encoder of -log p(x | sum_k q_ik e_ik) with the relaxed
           (softmax-weighted) codes, a `lax.fori_loop` inside the jitted step; then one M-step on the
           decoder and code books of -log p(x | e_z) with z_i = argmax_k l_ik.

Word dropout (Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016; dtr's addition, off
unless `model.word_dropout` is set): in training, each decoder input after bos becomes <unk> with
probability p, so that the decoder cannot model the text from its own prefix alone and must read the codes
(a strong autoregressive decoder otherwise learns to ignore a global code: posterior collapse).

Losses are summed over a document's tokens and latents and averaged over documents. `alternating=True`
trains VQ-VAE and CatVAE the same way (the paper's Table 6): `em_iter` steps on the encoder with the
method's own loss, then one on the decoder and code books (their own samples, not argmax codes). As in the
reference, the encoder group is the token embedding, the encoder and the latent projection; the decoder
group is the decoder, the output layer and the code books. Optimisation: Adam 1e-3 after global-norm
clipping at 5 (clipped per group when alternating), or the Noam schedule d^-1/2 min(s^-1/2, s w^-3/2).

Under `codebook_update='ema'` the code books move once per batch, to the inputs and codes of the (decoder)
step's forward pass; padding positions and padding documents never count.

With `restart_threshold` t > 0 (VQ-VAE; 0.1 by default, 0 in the reference, which collapses to a handful of
codes: docs/results/classification.md), after
every step the entries whose moving-average share of their slot's assignments is under t / K move onto the
inputs u of random real positions of the batch (`dtr.latent.vq.restart_dead`; the moving averages of EMA
code books follow). The usage averages start at zero, so the first step puts every entry the first batch
leaves unused on a data point. CatVAE and Hard EM take the same `restart_threshold` (0 by default, as the
reference): their dead values become copies of values in use, projection column, bias and code-book
vector, tilted towards one of the inputs of the value they copy (`dtr.latent.gumbel.split_dead`), counted on the codes of the step (the M-step's argmax codes for
Hard EM, the sampled codes for CatVAE).

Code books start as the reference's (`codebook_init`): Xavier-uniform for the VQ-VAE, N(0, 1) entries for
CatVAE and Hard EM (whose code vectors are then about sqrt(D) long, against about 0.6 for Xavier at K = 256).

Codes and features use the deterministic codes (nearest entry / argmax) without dropout. `features` are the
code-book vectors of those codes: global latents give their mean over the M latents ([B, d], the reference
classifier's mean pooling) or with `global_features='concat'` their concatenation ([B, M d]); local latents
give the mean over the document's tokens of each token's concatenated vectors ([B, d]).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dtr.latent import gumbel, vq
from dtr.methods.base import AdamMethod, BOS_ID, EOS_ID, PAD_ID, UNK_ID, setting
from dtr.nn import transformer
from dtr.nn.softmax import Affine, target_nll, weighted_target_nll
from dtr.nn.transformer import TransformerAutoencoder, masked_mean

LEVELS = ('global', 'local')
FREE_BITS_MODES = ('per_latent', 'reference')
CODEBOOK_INITS = ('xavier', 'normal')  # model.codebook_init (`init_codebook`)
ENCODER_GROUP = ('embed', 'encoder', 'to_latent')  # the rest (decoder, output, codebook): the decoder group
# The model fields a config may lack and what their absence means (`DiscreteVAE.absent_means`).
ABSENT = {'pack_targets': 0.0, 'word_dropout': 0.0, 'restart_threshold': 0.0, 'usage_decay': 0.99,
          'codebook_init': 'xavier', 'codebook_update': 'loss', 'alternating': False}


def validate_config(mc: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field for impossible discrete-VAE settings."""
  def need(ok, message):
    if not ok:
      raise ValueError(message)

  def get(name):
    return setting(mc, name, ABSENT)

  need(mc.level in LEVELS, f'model.level must be one of {LEVELS}, got {mc.level!r}.')
  need(mc.num_latents >= 1, f'model.num_latents (M) must be >= 1, got {mc.num_latents}.')
  need(mc.num_values >= 2, f'model.num_values (K) must be >= 2, got {mc.num_values}.')
  need(mc.model_dim >= 1 and mc.model_dim % mc.num_heads == 0,
       f'model.num_heads ({mc.num_heads}) must divide model.model_dim ({mc.model_dim}).')
  need(mc.level != 'local' or mc.model_dim % mc.num_latents == 0,
       f'model.num_latents (M={mc.num_latents}) must divide model.model_dim (d={mc.model_dim}) for local '
       'latents: each token is cut into M slices of width d/M.')
  need(mc.norm in transformer.NORMS, f'model.norm must be one of {transformer.NORMS}, got {mc.norm!r}.')
  need(0 <= mc.dropout < 1, f'model.dropout must be in [0, 1), got {mc.dropout}.')
  need(mc.learning_rate > 0, f'model.learning_rate must be > 0, got {mc.learning_rate}.')
  need(mc.clip >= 0, f'model.clip must be >= 0 (0 = no clipping), got {mc.clip}.')
  need(mc.noam_warmup >= 1, f'model.noam_warmup must be >= 1, got {mc.noam_warmup}.')
  need(mc.noam_factor > 0, f'model.noam_factor must be > 0, got {mc.noam_factor}.')
  need(0 <= get('pack_targets') <= 1, f"model.pack_targets must be in [0, 1] (0 = off), got {get('pack_targets')}.")
  need(0 <= get('word_dropout') < 1, f"model.word_dropout must be in [0, 1), got {get('word_dropout')}.")
  need(mc.em_iter >= 1, f'model.em_iter (E-steps per batch) must be >= 1, got {mc.em_iter}.')
  need(0 <= get('restart_threshold') <= 1,
       f"model.restart_threshold must be in [0, 1] (0 = no restarts), got {get('restart_threshold')}.")
  need(0 <= get('usage_decay') < 1, f"model.usage_decay must be in [0, 1), got {get('usage_decay')}.")
  need(get('codebook_init') in CODEBOOK_INITS,
       f"model.codebook_init must be one of {CODEBOOK_INITS}, got {get('codebook_init')!r}.")
  need(mc.global_features in ('mean', 'concat'),
       f"model.global_features must be 'mean' or 'concat', got {mc.global_features!r}.")
  if 'commitment' in mc:
    need(mc.commitment >= 0, f'model.commitment (beta) must be >= 0, got {mc.commitment}.')
    need(mc.codebook_update in ('loss', 'ema'),
         f"model.codebook_update must be 'loss' or 'ema', got {mc.codebook_update!r}.")
    need(0 <= mc.ema_decay < 1, f'model.ema_decay must be in [0, 1), got {mc.ema_decay}.')
  if 'tau' in mc:
    need(mc.tau > 0, f'model.tau (Gumbel-softmax temperature) must be > 0, got {mc.tau}.')
    need(not mc.tau_anneal or 0 < mc.tau_min <= mc.tau,
         f'model.tau_min must be in (0, tau={mc.tau}] when annealing, got {mc.tau_min}.')
    need(mc.tau_anneal_interval >= 1,
         f'model.tau_anneal_interval must be >= 1, got {mc.tau_anneal_interval}.')
    need(0 <= mc.free_bits_ratio <= 1, f'model.free_bits_ratio (gamma) must be in [0, 1], got '
         f'{mc.free_bits_ratio}.')
    need(mc.free_bits_mode in FREE_BITS_MODES,
         f'model.free_bits_mode must be one of {FREE_BITS_MODES}, got {mc.free_bits_mode!r}.')
    need(mc.kl_weight >= 0, f'model.kl_weight must be >= 0, got {mc.kl_weight}.')
    need(mc.free_bits_length >= 0, f'model.free_bits_length must be >= 0 (0 = the batch mean), got '
         f'{mc.free_bits_length}.')


def init_codebook(rng: jax.Array, kind: str, shape_MxKxD: tuple[int, int, int]) -> jax.Array:
  """M code books of K entries in R^D: 'xavier' (uniform, bound sqrt(6 / (K + D)) per K x D book; the
  reference's VQ-VAE) or 'normal' (N(0, 1) entries, norm about sqrt(D); the reference's CatVAE and Hard EM)."""
  if kind == 'normal':
    return jax.random.normal(rng, shape_MxKxD)
  _, num_values, dim = shape_MxKxD
  bound = math.sqrt(6.0 / (num_values + dim))
  return jax.random.uniform(rng, shape_MxKxD, minval=-bound, maxval=bound)


def token_layout(batch) -> dict[str, jax.Array]:
  """Encoder validity, decoder inputs (bos + words), targets (words + eos) of a 'tokens' batch; [B, L]."""
  tokens_BxL = jnp.asarray(batch['tokens'])
  lengths_B = jnp.asarray(batch['lengths'])
  position_BxL = jnp.arange(tokens_BxL.shape[1])[None, :]
  n_Bx1 = lengths_B[:, None]
  shifted_BxL = jnp.concatenate([jnp.full_like(tokens_BxL[:, :1], BOS_ID), tokens_BxL[:, :-1]], axis=1)
  targets_BxL = jnp.where(position_BxL < n_Bx1, tokens_BxL, jnp.where(position_BxL == n_Bx1, EOS_ID, PAD_ID))
  return {'tokens': tokens_BxL, 'valid': position_BxL < n_Bx1, 'target_valid': position_BxL <= n_Bx1,
          'decoder_inputs': jnp.where(position_BxL <= n_Bx1, shifted_BxL, PAD_ID), 'targets': targets_BxL,
          'doc_weight': jnp.asarray(batch['mask'], jnp.float32), 'lengths': lengths_B}


def codebook_usage(codes, num_values: int, mask=None) -> dict[str, np.ndarray]:
  """Use of each code slot: {'used': int [M] distinct values, 'perplexity': float [M] exp(H) of their
  empirical distribution} over codes int [B, M] or [B, L, M] (-1 = padding, ignored); `mask` [B] drops rows.
  Perplexity K means uniform use of every value, 1 a collapsed slot."""
  codes = np.asarray(codes)
  if mask is not None:
    codes = codes[np.asarray(mask) > 0]
  flat_NxM = codes.reshape(-1, codes.shape[-1])
  used, perplexity = [], []
  for column in flat_NxM.T:
    counts = np.bincount(column[column >= 0], minlength=num_values).astype(np.float64)
    p = counts / max(counts.sum(), 1.0)
    used.append(int(np.count_nonzero(counts)))
    perplexity.append(float(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0])))))
  return {'used': np.asarray(used, np.int32), 'perplexity': np.asarray(perplexity)}


def noam_schedule(model_dim: int, warmup: int, factor: float = 1.0):
  """lr(s) = factor d^-1/2 min(s^-1/2, s w^-3/2), s = update count + 1 (Vaswani et al. 2017)."""
  def schedule(count):
    s = jnp.asarray(count, jnp.float32) + 1.0
    return factor * model_dim**-0.5 * jnp.minimum(s**-0.5, s * warmup**-1.5)
  return schedule


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: Method's equality by value (a static jit argument)
class DiscreteVAE(AdamMethod):
  """Shared machinery; subclasses define the latent layer (`_latent_features`, `_latent`)."""

  reads: ClassVar[str] = 'tokens'
  emits: ClassVar[str] = 'symbols'
  validate = staticmethod(validate_config)
  conditional_hparams: ClassVar[dict] = {
      'dropout': ('when model.dropout > 0: whether dropout runs is fixed per program', lambda mc: mc.dropout > 0),
      'word_dropout': ('when model.word_dropout > 0: whether decoder inputs are dropped is fixed per program',
                       lambda mc: setting(mc, 'word_dropout', ABSENT) > 0)}
  absent_means: ClassVar[dict] = ABSENT
  always_alternating: ClassVar[bool] = False
  m_step_mode: ClassVar[str] = 'train'  # the codes of the decoder step: sampled ('train') or argmax ('hard')

  def __post_init__(self):
    super().__post_init__()
    if self.token_vocab_size <= EOS_ID + 1:
      raise ValueError(f'{type(self).__name__} reads token ids: DataInfo.token_vocab_size must exceed the '
                       f'{EOS_ID + 1} special ids, got {self.token_vocab_size}.')

  # --- sizes
  @property
  def token_vocab_size(self) -> int:
    """Token ids incl. the specials: `DataInfo.token_vocab_size`, else `vocab_size`."""
    return self.data.token_vocab_size or self.vocab_size

  @property
  def code_length(self) -> int:
    return self.config.num_latents

  @property
  def num_values(self) -> int:
    return self.config.num_values

  @property
  def code_dim(self) -> int:
    """D, the width of a code-book entry: d (global) or d / M (local)."""
    mc = self.config
    return mc.model_dim // mc.num_latents if mc.level == 'local' else mc.model_dim

  @property
  def alternating(self) -> bool:
    return self.always_alternating or bool(self.setting('alternating'))

  @property
  def ema(self) -> bool:
    return self.setting('codebook_update') == 'ema'

  @property
  def restarts(self) -> bool:
    """Dead values are restarted after each step (`restart`)."""
    return self.setting('restart_threshold') > 0

  def _latent_features(self) -> int:
    raise NotImplementedError

  def _latent(self, codebook, inputs_BxLxMxF, layout, rng, mode, step, values=None):
    """-> (code vectors [B, L, M, D], codes int32 [B, L, M], penalty (scalar per document), metrics, extra).

    L is 1 for global latents; `mode` is 'train' (the training codes) or 'hard' (deterministic codes);
    `values`: a member's `step_values` for the fields in `step_hparams` (None: the config's).
    """
    raise NotImplementedError

  def _assignments(self, extra) -> tuple[jax.Array, jax.Array]:
    """(codes [B, L, M], position weights [B, L]) of a training step's `extra` (what `restart` counts)."""
    return extra['codes'], extra['weight']

  def restart(self, params, usage_MxK, extra, rng) -> tuple[dict, jax.Array, jax.Array]:
    """Dead values of logits latents -> copies of live ones tilted towards their inputs
    (`dtr.latent.gumbel.split_dead`).
    -> (params, usage [M, K], dead bool [M, K])."""
    mc = self.config
    projection = params['to_latent']
    features = projection['kernel'].shape[0]
    kernel, bias, codebook, usage, dead_MxK = gumbel.split_dead(
        projection['kernel'].reshape(features, mc.num_latents, mc.num_values),
        projection['bias'].reshape(mc.num_latents, mc.num_values), params['codebook'], usage_MxK,
        extra['codes'], extra['states'], extra['weight'], rng, mc.restart_threshold)
    projection = {**projection, 'kernel': kernel.reshape(features, -1), 'bias': bias.reshape(-1)}
    return {**params, 'to_latent': projection, 'codebook': codebook}, usage, dead_MxK

  # --- network
  def _network(self, values=None) -> TransformerAutoencoder:
    """The network, its dropout rate `values['dropout']` (a member's `step_values`) or the config's."""
    mc = self.config
    return TransformerAutoencoder(self.token_vocab_size, mc.model_dim, mc.num_heads, mc.ff_dim,
                                  mc.num_encoder_layers, mc.num_decoder_layers, self.step_value('dropout', values),
                                  mc.norm, mc.level, self._latent_features())

  @property
  def rate_name(self) -> str:
    """The field that sets Adam's step size: 'learning_rate', or under the Noam schedule 'noam_factor'."""
    return 'noam_factor' if self.config.noam else 'learning_rate'

  def adam(self, rate) -> optax.GradientTransformation:
    """Adam at `rate`: the learning rate, or under the Noam schedule its factor."""
    mc = self.config
    if mc.noam:
      return optax.adam(noam_schedule(mc.model_dim, mc.noam_warmup, rate), b1=0.9, b2=0.98, eps=1e-9)
    return optax.adam(rate)

  def _groups(self, params) -> tuple[dict, dict]:
    """(encoder group, decoder group) of the trainable parameters (no code book under EMA)."""
    encoder = {k: v for k, v in params.items() if k in ENCODER_GROUP}
    frozen = ('codebook',) if self.ema else ()
    decoder = {k: v for k, v in params.items() if k not in ENCODER_GROUP + frozen}
    return encoder, decoder

  def init(self, rng: jax.Array, batch, hparams=None) -> dict[str, Any]:
    mc = self.config
    net_rng, book_rng = jax.random.split(rng)
    layout = token_layout(batch)
    params = dict(self._network().init(net_rng, layout['tokens'], layout['valid'])['params'])
    params['codebook'] = init_codebook(book_rng, self.setting('codebook_init'),
                                       (mc.num_latents, mc.num_values, self.code_dim))
    encoder, decoder = self._groups(params)
    tx = self.optimizer()
    if self.alternating:
      opt_state = {'encoder': tx.init(encoder), 'decoder': tx.init(decoder)}
    else:
      opt_state = tx.init({**encoder, **decoder})
    state = {'params': params, 'opt_state': opt_state, 'step': jnp.zeros((), jnp.int32)}
    if self.ema:
      state['ema'] = vq.ema_init(params['codebook'])
    if self.restarts:
      state['usage'] = jnp.zeros((mc.num_latents, mc.num_values), jnp.float32)
    return self.keep_hparams(state, hparams)

  # --- forward
  def _latents(self, params, batch, rng=None, mode='hard', step=0, values=None):
    """(layout, latent outputs, network variables, decoder rng) of the encoder and latent layer; rng None = no
    dropout; `values`: a member's `step_values` (None: the config's)."""
    mc, net = self.config, self._network(values)
    layout = token_layout(batch)
    enc_rng, dec_rng, latent_rng = jax.random.split(rng, 3) if rng is not None else (None,) * 3
    variables = {'params': {k: v for k, v in params.items() if k != 'codebook'}}
    states_BxLxD = net.apply(variables, layout['tokens'], layout['valid'], rng is None,
                             method=TransformerAutoencoder.encode_states,
                             rngs=None if rng is None else {'dropout': enc_rng})
    inputs_BxLxF = net.apply(variables, states_BxLxD, method=TransformerAutoencoder.latent_inputs)
    inputs_BxLxMxF = inputs_BxLxF.reshape(*inputs_BxLxF.shape[:2], mc.num_latents, -1)
    latent = self._latent(params['codebook'], inputs_BxLxMxF, layout, latent_rng, mode, step, values)
    if isinstance(latent[4], dict):  # logits latents: the projection's inputs, for `restart`
      latent = (*latent[:4], {**latent[4], 'states': states_BxLxD})
    return layout, latent, variables, dec_rng

  def forward(self, params, batch, rng=None, mode='hard', step=0, weighted=False, values=None):
    """(summed token NLL [B], layout, latent outputs); rng None = no dropout (evaluation). With `weighted`
    the first output is (the NLL's mean over the batch's documents, the loss term to differentiate; the NLL
    [B] without gradient), from `weighted_target_nll`, which computes its gradient in the forward pass.
    `values`: a member's `step_values` (None: the config's)."""
    mc, net = self.config, self._network(values)
    layout, latent, variables, dec_rng = self._latents(params, batch, rng, mode, step, values)
    deterministic = rng is None
    vectors_BxLxMxD = latent[0]
    if mc.level == 'global':
      memory, memory_valid = vectors_BxLxMxD[:, 0], jnp.ones((vectors_BxLxMxD.shape[0], mc.num_latents), bool)
    else:
      memory, memory_valid = vectors_BxLxMxD.reshape(*vectors_BxLxMxD.shape[:2], -1), layout['valid']
    decoder_inputs = layout['decoder_inputs']
    if self.setting('word_dropout') > 0 and not deterministic:  # training only: the decoder must lean on the codes
      position_BxT = jnp.arange(decoder_inputs.shape[1])[None, :]
      rate = jnp.asarray(self.step_value('word_dropout', values), jnp.float32)  # a member's, else the config's
      drop_BxT = jax.random.bernoulli(jax.random.fold_in(rng, 3), rate, decoder_inputs.shape)
      decoder_inputs = jnp.where(drop_BxT & (position_BxT > 0) & layout['target_valid'], UNK_ID, decoder_inputs)
    states_BxTxD = net.apply(variables, memory, memory_valid, decoder_inputs, layout['target_valid'],
                             deterministic, method=TransformerAutoencoder.decode_states,
                             rngs=None if deterministic else {'dropout': dec_rng})
    project = Affine(**variables['params']['output'])  # TransformerAutoencoder.project, as its parameters
    if weighted:
      weight_B = layout['doc_weight']
      nll = weighted_target_nll(project, states_BxTxD, layout['targets'], layout['target_valid'],
                                weight_B / jnp.maximum(jnp.sum(weight_B), 1.0), self.setting('pack_targets'))
    else:
      nll = target_nll(project, states_BxTxD, layout['targets'], layout['target_valid'],
                       self.setting('pack_targets'))
    return nll, layout, latent

  def position_weight(self, layout) -> jax.Array:
    """[B, L'] 1 where a latent exists: real documents, and (local) their real tokens."""
    if self.config.level == 'global':
      return layout['doc_weight'][:, None]
    return layout['doc_weight'][:, None] * layout['valid']

  def _codes_per_position(self, codes_BxLxM, layout):
    if self.config.level == 'global':
      return codes_BxLxM[:, 0]
    return jnp.where(layout['valid'][..., None], codes_BxLxM, -1)

  def loss(self, trainable, frozen, batch, rng, mode, step, values=None):
    params = {**frozen, **trainable}
    (nll, nll_B), layout, (_, codes, penalty, metrics, extra) = self.forward(params, batch, rng, mode, step,
                                                                             weighted=True, values=values)
    weight_B = layout['doc_weight']
    tokens = jnp.sum((layout['lengths'] + 1) * weight_B)
    counts_MxK = vq.code_counts(codes, self.position_weight(layout), self.num_values)
    p_MxK = counts_MxK / jnp.maximum(jnp.sum(counts_MxK, axis=1, keepdims=True), 1.0)
    code_perplexity = jnp.mean(jnp.exp(-jnp.sum(p_MxK * jnp.log(jnp.where(p_MxK > 0, p_MxK, 1.0)), axis=-1)))
    aux = {'nll': nll, 'token_nll': jnp.sum(nll_B * weight_B) / jnp.maximum(tokens, 1.0),
           'code_perplexity': code_perplexity, **metrics}
    return nll + penalty, (aux, extra)

  # --- training
  def _step(self, opt_state, group, other, batch, rng, mode, step, values=None):
    """One clipped Adam / Noam step on `group` (a dict of parameter subtrees) with `other` held fixed;
    `values`: a population member's step size and `step_hparams` (`step_values(state)`; None: the config's)."""
    (loss, (aux, extra)), grads = jax.value_and_grad(self.loss, has_aux=True)(group, other, batch, rng, mode,
                                                                              step, values)
    updates, opt_state = self.optimizer(self.step_value(self.rate_name, values)).update(grads, opt_state, group)
    return optax.apply_updates(group, updates), opt_state, loss, aux, extra, optax.tree.norm(grads)

  def e_step(self, encoder, encoder_opt_state, fixed, batch, rng, step, i, values=None):
    """E-step i: one step on the encoder group with the training-mode codes (relaxed for Hard EM) and the rng
    fold_in(rng, i). -> (encoder group, its optimiser state, loss)."""
    encoder, encoder_opt_state, loss, *_ = self._step(encoder_opt_state, encoder, fixed, batch,
                                                      jax.random.fold_in(rng, i), 'train', step, values)
    return encoder, encoder_opt_state, loss

  def e_steps(self, params, encoder_opt_state, batch, rng, step, values=None):
    """`em_iter` E-steps (i = 0, 1, ...), a `lax.fori_loop`. -> (encoder group, its opt state, last loss)."""
    encoder, _ = self._groups(params)
    fixed = {k: v for k, v in params.items() if k not in encoder}

    def body(i, carry):
      return self.e_step(carry[0], carry[1], fixed, batch, rng, step, i, values)

    carry = (encoder, encoder_opt_state, jnp.zeros((), jnp.float32))
    return jax.lax.fori_loop(0, self.config.em_iter, body, carry)

  def train_step(self, state, batch, rng):
    params, step, values = state['params'], state['step'], self.step_values(state)
    new_state = dict(state, step=step + 1)
    if self.alternating:
      encoder, encoder_opt, e_loss = self.e_steps(params, state['opt_state']['encoder'], batch, rng, step,
                                                   values)
      params = {**params, **encoder}
      _, decoder = self._groups(params)
      fixed = {k: v for k, v in params.items() if k not in decoder}
      m_rng = jax.random.fold_in(rng, self.config.em_iter)
      decoder, decoder_opt, loss, aux, extra, grad_norm = self._step(
          state['opt_state']['decoder'], decoder, fixed, batch, m_rng, self.m_step_mode, step, values)
      params = {**params, **decoder}
      new_state['opt_state'] = {'encoder': encoder_opt, 'decoder': decoder_opt}
      aux = {**aux, 'e_loss': e_loss}
    else:
      encoder, decoder = self._groups(params)
      trainable = {**encoder, **decoder}
      fixed = {k: v for k, v in params.items() if k not in trainable}
      trainable, new_state['opt_state'], loss, aux, extra, grad_norm = self._step(
          state['opt_state'], trainable, fixed, batch, rng, 'train', step, values)
      params = {**params, **trainable}
    if self.ema:  # the code books follow the inputs and codes of the (decoder) step's forward pass
      h, codes, weight = extra
      new_state['ema'], codebook = vq.ema_update_masked(state['ema'], h, codes, weight, self.config.ema_decay,
                                                        self.config.ema_epsilon)
      params = {**params, 'codebook': codebook}
    if self.restarts:  # after the step: values the batches stopped using restart (`restart`)
      codes, weight = self._assignments(extra)
      usage = vq.usage_update(state['usage'], codes, weight, self.setting('usage_decay'))
      params, new_state['usage'], dead_MxK = self.restart(params, usage, extra, jax.random.fold_in(rng, 7919))
      codebook = params['codebook']
      if self.ema:  # keep the moving averages consistent with the restarted entries
        ema = new_state['ema']
        count_MxK = jnp.where(dead_MxK, jnp.mean(ema['count'], axis=1, keepdims=True), ema['count'])
        new_state['ema'] = {'count': count_MxK,
                            'sum': jnp.where(dead_MxK[..., None], codebook * count_MxK[..., None], ema['sum'])}
      aux = {**aux, 'restarts': jnp.sum(dead_MxK).astype(jnp.float32)}
    new_state['params'] = params
    return new_state, {'loss': loss, 'grad_norm': grad_norm, **aux}

  # --- evaluation
  def encode(self, params, batch, rng=None) -> jax.Array:
    """Deterministic codes int32 [B, M] (global) or [B, L, M] with -1 at padding (local)."""
    del rng  # VQ and Hard EM codes are deterministic; CatVAE overrides
    layout, latent, _, _ = self._latents(params, batch)  # the decoder is not needed
    return self._codes_per_position(latent[1], layout)

  def score(self, params, batch, rng=None) -> dict[str, jax.Array]:
    """{'nll': [B] summed token NLL under the deterministic codes, 'tokens': [B] n + 1} (0 at mask-0 rows)."""
    del rng
    nll_B, layout, latent = self.forward(params, batch)
    weight_B = layout['doc_weight']
    out = {'nll': nll_B * weight_B, 'tokens': ((layout['lengths'] + 1) * weight_B).astype(jnp.float32)}
    if 'kl_B' in latent[4]:
      out['kl'] = latent[4]['kl_B'] * weight_B
    return out

  def features(self, params, batch) -> jax.Array:
    """Code-book vectors of the deterministic codes, pooled as the module docstring says: float32 [B, F]."""
    layout, latent, _, _ = self._latents(params, batch)
    vectors_BxLxMxD = latent[0]
    if self.config.level == 'global':
      if self.config.global_features == 'concat':
        return vectors_BxLxMxD[:, 0].reshape(vectors_BxLxMxD.shape[0], -1)
      return jnp.mean(vectors_BxLxMxD[:, 0], axis=1)
    return masked_mean(vectors_BxLxMxD.reshape(*vectors_BxLxMxD.shape[:2], -1), layout['valid'])


@dataclasses.dataclass(frozen=True, eq=False)
class VQVAE(DiscreteVAE):
  """Nearest code-book entries, straight-through; code books by loss or by moving averages."""

  step_hparams: ClassVar[tuple[str, ...]] = ('commitment',)  # beta

  def _latent_features(self) -> int:
    mc = self.config
    return mc.num_latents * mc.model_dim if mc.level == 'global' else 0  # local: slices of the states

  def _latent(self, codebook, inputs_BxLxMxF, layout, rng, mode, step, values=None):
    del rng, mode, step
    codes, quantised = vq.quantise(inputs_BxLxMxF, codebook)
    weight_BxL = self.position_weight(layout)
    valid_BxL = weight_BxL > 0

    def per_doc(sq_BxLxMxD):
      return jnp.sum(jnp.where(valid_BxL, jnp.sum(sq_BxLxMxD, axis=(2, 3)), 0.0), axis=1)

    num_docs = jnp.maximum(jnp.sum(layout['doc_weight']), 1.0)
    commit = jnp.sum(per_doc(jnp.square(inputs_BxLxMxF - jax.lax.stop_gradient(quantised)))
                     * layout['doc_weight']) / num_docs
    penalty = self.step_value('commitment', values) * commit
    if not self.ema:
      penalty += jnp.sum(per_doc(jnp.square(jax.lax.stop_gradient(inputs_BxLxMxF) - quantised))
                         * layout['doc_weight']) / num_docs
    vectors = vq.straight_through(inputs_BxLxMxF, quantised)
    return vectors, codes, penalty, {'commitment': commit}, (inputs_BxLxMxF, codes, weight_BxL)

  def _assignments(self, extra):
    return extra[1], extra[2]

  def restart(self, params, usage_MxK, extra, rng):
    """Dead code-book entries -> the inputs of random real positions (`dtr.latent.vq.restart_dead`)."""
    h, _, weight = extra
    codebook, usage, dead_MxK = vq.restart_dead(params['codebook'], usage_MxK, h, weight, rng,
                                                self.config.restart_threshold)
    return {**params, 'codebook': codebook}, usage, dead_MxK


@dataclasses.dataclass(frozen=True, eq=False)
class CatVAE(DiscreteVAE):
  """Straight-through Gumbel-softmax codes, KL to the uniform prior with free bits."""

  step_hparams: ClassVar[tuple[str, ...]] = ('kl_weight', 'free_bits_ratio', 'tau')  # KL weight, gamma, tau
  conditional_hparams: ClassVar[dict] = {
      **DiscreteVAE.conditional_hparams,
      **{name: ('when model.tau_anneal is on', lambda mc: bool(mc.tau_anneal))
         for name in ('tau_min', 'tau_anneal_rate')}}

  def _latent_features(self) -> int:
    return self.config.num_latents * self.config.num_values

  def temperature(self, step, values=None) -> jax.Array:
    """tau at training step `step` (batches; alternating steps use the batch's tau for all their passes);
    `values`: a member's `step_values` (its tau and, when annealed, floor and rate), None: the config's."""
    mc = self.config
    tau = jnp.asarray(self.step_value('tau', values), jnp.float32)
    if not mc.tau_anneal:
      return tau
    return gumbel.annealed_temperature(step, tau, self.step_value('tau_min', values),
                                       self.step_value('tau_anneal_rate', values), mc.tau_anneal_interval)

  def free_bits_kl(self, kl_BxLxM, layout, values=None) -> jax.Array:
    """The KL term of the loss (per document) under `free_bits_mode` (`dtr.latent.gumbel`).

    'per_latent': every latent's batch-mean KL is clamped at gamma log K. 'reference': the whole KL is kept
    only once the batch's KL reaches B * ceil(gamma M L log K) per document, as the reference code, which
    rounds up and takes L from a per-dataset mean length (AG News 34, DBpedia 49, Yelp 140): here
    `free_bits_length`, or the batch's mean length when 0; L = 1 for global latents. `values`: a member's
    `step_values` (its gamma), None: the config's. The threshold is formed in float32 from a float32 gamma
    either way, so a member rounds it up as its single run does.
    """
    mc = self.config
    weight_BxL = self.position_weight(layout)
    floor = jnp.asarray(self.step_value('free_bits_ratio', values), jnp.float32) * jnp.float32(math.log(mc.num_values))
    if mc.free_bits_mode == 'per_latent':
      return gumbel.free_bits_per_latent(kl_BxLxM, weight_BxL, layout['doc_weight'], floor)
    if mc.level == 'global':
      length = 1.0
    elif mc.free_bits_length > 0:
      length = float(mc.free_bits_length)
    else:
      length = masked_mean(layout['lengths'].astype(jnp.float32), layout['doc_weight'], axis=0)
    kl_B = jnp.sum(kl_BxLxM * (weight_BxL > 0)[..., None], axis=(1, 2))
    return gumbel.free_bits_reference(kl_B, layout['doc_weight'], jnp.ceil(floor * mc.num_latents * length))

  def _latent(self, codebook, inputs_BxLxMxF, layout, rng, mode, step, values=None):
    logits = inputs_BxLxMxF
    kl_BxLxM = gumbel.kl_to_uniform(logits)
    valid_BxL = self.position_weight(layout) > 0
    kl_B = jnp.sum(jnp.where(valid_BxL[..., None], kl_BxLxM, 0.0), axis=(1, 2))
    num_docs = jnp.maximum(jnp.sum(layout['doc_weight']), 1.0)
    metrics = {'kl': jnp.sum(kl_B * layout['doc_weight']) / num_docs}
    if mode == 'train':
      tau = self.temperature(step, values)
      z = gumbel.gumbel_straight_through(logits, rng, tau)
      penalty = self.step_value('kl_weight', values) * self.free_bits_kl(kl_BxLxM, layout, values)
      metrics.update(tau=tau, kl_penalty=penalty)
    else:
      z, penalty = gumbel.one_hot_argmax(logits), 0.0
    codes = jnp.argmax(z, axis=-1).astype(jnp.int32)
    extra = {'kl_B': kl_B, 'codes': codes, 'weight': self.position_weight(layout)}
    return vq.weighted_lookup(z, codebook), codes, penalty, metrics, extra

  def encode(self, params, batch, rng=None) -> jax.Array:
    """argmax_k q(z_i = k | x) codes; with an rng, codes sampled from q. int32 [B, M] or [B, L, M]."""
    if rng is None:
      return super().encode(params, batch)
    mc = self.config
    layout = token_layout(batch)
    variables = {'params': {k: v for k, v in params.items() if k != 'codebook'}}
    logits = self._network().apply(variables, layout['tokens'], layout['valid'],
                                   method=TransformerAutoencoder.encode)
    logits = logits.reshape(*logits.shape[:2], mc.num_latents, mc.num_values)
    return self._codes_per_position(jax.random.categorical(rng, logits).astype(jnp.int32), layout)


@dataclasses.dataclass(frozen=True, eq=False)
class HardEM(DiscreteVAE):
  """E-steps on the encoder with softmax-weighted codes, an M-step on the decoder with argmax codes."""

  always_alternating: ClassVar[bool] = True
  m_step_mode: ClassVar[str] = 'hard'

  def _latent_features(self) -> int:
    return self.config.num_latents * self.config.num_values

  def _latent(self, codebook, inputs_BxLxMxF, layout, rng, mode, step, values=None):
    del rng, step, values
    probs = jax.nn.softmax(inputs_BxLxMxF, axis=-1)
    if mode == 'train':  # an E-step
      z = probs if self.config.em_relax else gumbel.argmax_straight_through(probs)
    else:
      z = gumbel.one_hot_argmax(inputs_BxLxMxF)
    codes = jnp.argmax(inputs_BxLxMxF, axis=-1).astype(jnp.int32)
    return vq.weighted_lookup(z, codebook), codes, 0.0, {}, {'codes': codes, 'weight': self.position_weight(layout)}


METHODS = {'vq_vae': VQVAE, 'cat_vae': CatVAE, 'hard_em': HardEM}


def default_model_config(method: str = 'vq_vae', level: str = 'global') -> ml_collections.ConfigDict:
  """`model` fields of 'vq_vae', 'cat_vae' or 'hard_em' with 'global' or 'local' latents (the reference's
  config/base.conf values where the paper searched a grid)."""
  if method not in METHODS:
    raise ValueError(f'Unknown discrete VAE {method!r}; known: {sorted(METHODS)}.')
  config = ml_collections.ConfigDict(dict(
      name=method,               # 'vq_vae', 'cat_vae' or 'hard_em'
      level=level,               # 'global': M latents per document; 'local': M latents per token
      num_latents=4,             # M (paper grid 1, 2, 4, 8, 16); local latents need M | model_dim
      num_values=256,            # K (paper grid 128, 256, 512, 1024, 4096)
      model_dim=64,              # d: embeddings, Transformer width, code vectors (d, or d / M when local)
      num_heads=4,               # attention heads (must divide model_dim)
      ff_dim=256,                # feed-forward width (ReLU)
      num_encoder_layers=1,      # Transformer encoder layers (the paper: 1)
      num_decoder_layers=1,      # Transformer decoder layers (the paper: 1)
      dropout=0.2,               # on embeddings + positions, attention weights, residual branches, FF
      norm='post',               # 'post' (the reference, PyTorch's default) or 'pre' layer normalisation
      learning_rate=1e-3,        # Adam (unused under noam)
      clip=5.0,                  # global-norm gradient clip, per parameter group when alternating; 0 = off
      noam=False,                # Adam(0.9, 0.98, 1e-9) with the Noam schedule instead of a constant rate
      noam_warmup=2000,          # w
      noam_factor=1.0,           # the schedule's scale (peak rate factor * (d w)^-1/2)
      em_iter=1,                 # encoder steps per batch when alternating (paper 1 or 3)
      global_features='mean',    # global `features`: 'mean' over the M code vectors ([B, d]) or 'concat'
      pack_targets=0.75,         # > 0: the output layer on the predicted positions only (`target_nll`; exact)
  ))
  if method in ('vq_vae', 'cat_vae'):
    config.alternating = False   # True: em_iter encoder steps then one decoder step (the paper's Table 6)
  if method == 'vq_vae':
    config.commitment = 1e-3     # beta (paper grid 0.001, 0.01, 0.1)
    config.codebook_update = 'loss'  # 'loss' (the code-book loss) or 'ema' (moving averages)
    config.ema_decay = 0.99      # gamma of the moving averages
    config.ema_epsilon = 1e-5    # Laplace smoothing of the EMA counts
    config.restart_threshold = 0.1  # t > 0: entries used at < t / K of their slot's codes restart on inputs
                                    # (dtr's default; 0 = the reference, whose code books collapse)
    config.usage_decay = 0.99    # decay of the usage averages that find dead entries
  if method in ('cat_vae', 'hard_em'):
    config.codebook_init = 'normal'  # N(0, 1) code books as the reference's (VQ: 'xavier', the default)
  if method == 'cat_vae':
    config.tau = 0.67            # Gumbel-softmax temperature (the start when annealing)
    config.tau_anneal = False    # tau = max(tau_min, tau exp(-rate * step)), recomputed every interval steps
    config.tau_min = 0.5         # the annealing floor
    config.tau_anneal_rate = 1e-4  # r (per training step)
    config.tau_anneal_interval = 1000  # N: tau is recomputed every N training steps
    config.kl_weight = 1.0       # beta on the free-bits KL (0: an autoencoder)
    config.free_bits_ratio = 0.6  # gamma: floor lambda = gamma * M * L * log K (L = 1 for global latents)
    config.free_bits_mode = 'per_latent'  # 'per_latent' (max per latent) or 'reference' (drop the whole KL)
    config.free_bits_length = 0  # L of the 'reference' floor for local latents; 0 = the batch's mean length
  if method == 'hard_em':
    config.em_iter = 3           # the reference README's Hard EM command (em_iter=3, noam)
    config.noam = True           # the same command's Noam schedule (warm-up 2000)
    config.em_relax = True       # E-steps with softmax-weighted codes; False: straight-through argmax
  return config
