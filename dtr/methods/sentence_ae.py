r"""Sentence autoencoders with binary, bottleneck, Gaussian or Gumbel codes, and the GRU language model.

Baynazarov & Piontkovskaya, "Binary Autoencoder for Text Modeling" (2019), reference code
hocop/binary-autoencoder. A sentence of n words w_1..w_n (the 'tokens' layout of `dtr.methods.base`):

  encoder   embeddings (300, shared with the decoder) -> bidirectional GRU (512 per direction, `dtr.nn.gru`)
            h = [h_fw; h_bw], the two final states (each direction's state after the sentence's own last word)
  code      model.code = 'binary'      l = W h + b (50), p = sigma(l);
                                       training z = 1[u < p] + p - sg(p), u ~ U(0, 1) (straight-through);
                                       evaluation z = 1[p > 1/2]
                         'bottleneck'  z = W h + b (50), no noise
                         'gaussian'    (mu, log sigma^2) = W h + b; z = mu + sigma eps; KL(q || N(0, I))
                         'gumbel'      training z = sigma((l + L) / tau), L logistic, tau = 1 (binary concrete);
                                       evaluation z = 1[p > 1/2]
            model.kl = True adds KL(Bern(p) || Bern(1/2)) to binary / gumbel codes (binary VAE, Gumbel VAE)
  decoder   initial state Dense(z) (512); GRU over bos w_1..w_n (embeddings, word dropout), softmax over the
            vocabulary; targets w_1..w_n eos: n + 1 predicted tokens
  loss      mean_b [ -log p(x_b | z_b) + kl_weight_t * KL_b ],
            kl_weight_t = min(kl_start + sentences seen / kl_anneal_sentences, 1) (the reference: 0.01 -> 1 over
            1e6 sentences; 0 sentences = no annealing)
  LM        the same decoder from a zero initial state, no encoder (model.name = 'lm').

Kept from the reference: 1-layer GRUs of 512, dropout 0.2 on the GRU inputs (its DropoutWrapper), word
dropout that zeroes whole input embeddings (not rescaled), a softmax layer with no bias, Adam 1e-3.
Departures: embeddings are learned (the reference loads fixed 300-d GloVe vectors), no residual layer-norm
wrapper around the GRU cells, and a global-norm clip of 2.0 (the reference's config value; its train.py
clips each tensor to norm 0.2). The Gumbel code uses one logit l for both the relaxation and the KL (the
reference relaxes the two-class logits (l, -l), i.e. Bern(sigma(2 l)), but takes the KL at sigma(l)).

Scores (`score`, per sentence, summed over its n + 1 tokens; 0 where batch['mask'] is 0):
  'nll'         z sampled as in training (the LM: no code)    'nll_mean'  binary/gumbel z = p; gaussian z = mu
  'nll_greedy'  binary/gumbel z = 1[p > 1/2]                  'kl'        KL_b (0 without model.kl)
  'tokens'      n + 1
'nll' is the reconstruction term only (the paper's perplexities); nll + kl is the negative ELBO of a VAE.
`perplexities()`: corpus level exp(sum NLL / sum tokens) as perplexity, perplexity_mean, perplexity_greedy,
and each also as the per-sentence average exp(mean_s NLL_s / N_s), `<name>_per_sentence`.

Inputs (documented behaviour): unknown words are the unknown-word id (1) from the tokeniser, a word like any
other, decoded as '<unk>'; a sentence longer than data.max_len keeps its first max_len words (the tokeniser
logs how many were cut; 0 = no limit); an empty sentence (0 words: a corpus drops them, data.empty_docs='drop',
or rejects them, 'error'; `dtr.encode.encode_texts([''])` makes one) is one predicted token (eos), and its
code is read from the encoder's zero state. `check_data` rejects ids
outside the token vocabulary and padding ids inside sentences before training. A non-finite gradient makes
the step's loss NaN, so the loop stops naming that step.
Paper, Table 1 (Yahoo, 9.2M sentences): LM 120.7; binary AE perplexity_mean 26.3, _greedy 30.9, sampled 36.3.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from dtr.latent import bernoulli, gaussian
from dtr.methods.base import BOS_ID, EOS_ID, PAD_ID, UNK_ID, AdamMethod, setting
from dtr.nn import gru
from dtr.nn.gru import TextAutoencoder
from dtr.nn.softmax import Affine, target_nll, weighted_target_nll

CODES = ('binary', 'bottleneck', 'gaussian', 'gumbel')
PROBE_FEATURES = ('probabilities', 'zeros_ones', 'logits')
# The model fields a config may lack and what their absence means (`SentenceMethod.absent_means`): the LM has
# no code.
ABSENT = {'pack_targets': 0.0, 'latent_size': 0}
# ... and those of `SentenceAE`: the binary concrete's temperature a constant of the program.
AE_ABSENT = {'temperature_in_params': False}
assert (gru.PAD_ID, gru.BOS_ID, gru.EOS_ID) == (PAD_ID, BOS_ID, EOS_ID)  # the network's defaults are dtr's ids
# variant -> (model.code, model.kl); a '_wd' suffix adds word dropout 0.5 (the paper's "+ WD" rows)
VARIANTS = {'binary': ('binary', False), 'binary_vae': ('binary', True), 'bottleneck': ('bottleneck', False),
            'gaussian_vae': ('gaussian', True), 'gumbel_ae': ('gumbel', False), 'gumbel_vae': ('gumbel', True)}


def masked_mean(per_sentence_B: jax.Array, batch) -> jax.Array:
  """Mean over the real sentences of the batch (mask 1)."""
  mask_B = jnp.asarray(batch['mask']).astype(per_sentence_B.dtype)
  return jnp.sum(per_sentence_B * mask_B) / jnp.maximum(jnp.sum(mask_B), 1.0)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _decode(method, params, codes, rng, max_len):
  return method.decode_unjitted(params, codes, rng, max_len)


# ------------------------------------------------------------------------------------------ method base
def check_sizes(mc: ml_collections.ConfigDict, fields) -> None:
  for field in fields:
    if mc[field] <= 0:
      raise ValueError(f'model.{field} must be a positive size, got {mc[field]}.')


def check_common(mc: ml_collections.ConfigDict) -> None:
  """Checks every sentence method shares: sizes, dropout rates, optimiser."""
  check_sizes(mc, ('embed_size', 'hidden_size'))
  if not 0 <= mc.word_dropout < 1:
    raise ValueError(f'model.word_dropout must be in [0, 1), got {mc.word_dropout}.')
  if not 0 <= mc.dropout < 1:
    raise ValueError(f'model.dropout must be in [0, 1), got {mc.dropout}.')
  if mc.learning_rate <= 0:
    raise ValueError(f'model.learning_rate must be > 0, got {mc.learning_rate}.')
  if mc.clip < 0:
    raise ValueError(f'model.clip must be >= 0 (0 = off), got {mc.clip}.')
  if not 0 <= setting(mc, 'pack_targets', ABSENT) <= 1:
    raise ValueError(f"model.pack_targets must be in [0, 1] (0 = off), got {mc.pack_targets}.")


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: Method's equality by value (a static jit argument)
class SentenceMethod(AdamMethod):
  """What sentence methods share: token batches, a `TextAutoencoder`, training, scores and decoding.

  Subclasses give the network (`_network`), the code (`_latent`), its training penalty (`_regulariser`),
  `encode` / `features`, and how `decode` reads codes (`_codes_to_z`). State: {'params', 'opt_state',
  'sentences' (real sentences seen, for KL annealing)} and, for a population's member, 'hparams' (its
  `member_fields`: the learning rate, `step_hparams` and, when the config turns them on, dropout, word dropout
  and the KL annealing's start).
  """

  reads: ClassVar[str] = 'tokens'
  validate = staticmethod(check_common)
  conditional_hparams: ClassVar[dict] = {
      'dropout': ('when model.dropout > 0: whether dropout runs is fixed per program', lambda mc: mc.dropout > 0),
      'word_dropout': ('when model.word_dropout > 0: whether decoder inputs are dropped is fixed per program',
                       lambda mc: mc.word_dropout > 0)}
  score_modes: ClassVar[dict[str, str]] = {'nll': 'sample'}  # score key -> `_latent` mode
  absent_means: ClassVar[dict] = ABSENT

  def __post_init__(self):
    super().__post_init__()
    if self.data.token_vocab_size <= EOS_ID + 1:
      raise ValueError(f'model.name={self.config.name!r} reads token sequences: DataInfo.token_vocab_size must '
                       f'count the words and the 4 special ids, got {self.data.token_vocab_size}.')

  # --- pieces the subclasses give
  def _network(self, values=None) -> TextAutoencoder:
    """The network, its dropout rate `values['dropout']` (a member's `step_values`) or the config's."""
    raise NotImplementedError

  def _latent(self, heads, rng, mode: str, values=None) -> tuple[jax.Array | None, dict]:
    """(z [B, C] or None, parts) for mode 'sample' (as in training), 'mean' or 'greedy'; `values`: a member's
    `step_values` in training (None: the config's)."""
    raise NotImplementedError

  def _regulariser(self, parts, z_BxC, batch, kl_weight, rng, values=None) -> tuple[jax.Array, dict]:
    """The scalar training penalty on the code, and its metrics; `values`: a member's `step_values` for this
    step (None: the config's), read with `step_value`."""
    del parts, z_BxC, batch, kl_weight, rng, values
    return jnp.zeros(()), {}

  def _kl(self, parts, lengths_B) -> jax.Array:
    """Per-sentence KL of the sampled code [B] (0 where the model has none)."""
    return parts.get('kl', jnp.zeros(lengths_B.shape, jnp.float32))

  def _kl_weight(self, sentences_seen, values=None) -> jax.Array:
    """The KL's weight after `sentences_seen` training sentences (`values`: a member's `step_values`)."""
    del sentences_seen, values
    return jnp.ones(())

  # --- shared
  @property
  def token_vocab_size(self) -> int:
    return self.data.token_vocab_size

  @property
  def num_bits(self) -> int:
    return self.setting('latent_size')

  @property
  def code_length(self) -> int:
    return self.setting('latent_size')

  def perplexities(self) -> dict[str, tuple[str, str]]:
    """Corpus-level perplexities (exp of total NLL over total tokens, eos included) of every code mode, and
    the same as a per-sentence average exp(mean_s NLL_s / N_s), named `<name>_per_sentence`."""
    names = {'nll': 'perplexity', 'nll_mean': 'perplexity_mean', 'nll_greedy': 'perplexity_greedy'}
    out = {names[key]: (key, 'corpus') for key in self.score_modes}
    out.update({f'{names[key]}_per_sentence': (key, 'document') for key in self.score_modes})
    return out

  def check_data(self, data) -> None:
    """Host checks of a token corpus before training: every id inside the token vocabulary (an id past the
    embedding table would read NaN rows silently), no padding id inside a sentence."""
    for name, split in data.splits.items():
      tokens = getattr(split, 'tokens', None)
      if tokens is None or not tokens.ids.size:
        continue
      ids = np.asarray(tokens.ids)
      bad = (ids < 0) | (ids >= self.token_vocab_size)
      if bad.any():
        raise ValueError(f'{name} split: token id {int(ids[bad][0])} is outside [0, {self.token_vocab_size}) '
                         '(the token vocabulary the model was built for); tokenise with the corpus vocabulary.')
      if (ids == PAD_ID).any():
        raise ValueError(f'{name} split: the padding id {PAD_ID} occurs inside a sentence; unknown words must '
                         f'map to the unknown-word id {UNK_ID} (dtr.data.tokenize does this).')

  def _apply(self, params, *args, method, rng=None, values=None, **kwargs):
    rngs = {'dropout': rng} if rng is not None else {}
    return self._network(values).apply({'params': params}, *args, method=method, rngs=rngs, **kwargs)

  def _heads(self, params, batch, train=False, rng=None, values=None) -> tuple:
    if not self._network().head_sizes:
      return ()
    tokens, lengths = jnp.asarray(batch['tokens'], jnp.int32), jnp.asarray(batch['lengths'], jnp.int32)
    return self._apply(params, tokens, lengths, train, method=TextAutoencoder.encode, rng=rng, values=values)

  def _nll(self, params, z_BxC, batch, train=False, rng=None, weighted=False, values=None):
    """Summed token NLL per sentence [B]; with `weighted`, (its mean over the real sentences, the loss term
    to differentiate; the NLL [B] without gradient), from `weighted_target_nll`. `values`: a member's
    `step_values` (its dropout and word dropout; None: the config's)."""
    tokens, lengths = jnp.asarray(batch['tokens'], jnp.int32), jnp.asarray(batch['lengths'], jnp.int32)
    word_dropout = self.step_value('word_dropout', values) if train else 0.0
    states, targets, mask = self._apply(params, z_BxC, tokens, lengths, train, word_dropout,
                                        method=TextAutoencoder.decoder_states, rng=rng, values=values)
    project = Affine(**params['decoder']['output'])  # TextAutoencoder.project, as its parameters
    pack = self.setting('pack_targets')
    if weighted:
      mask_B = jnp.asarray(batch['mask'], jnp.float32)
      return weighted_target_nll(project, states, targets, mask > 0, mask_B / jnp.maximum(jnp.sum(mask_B), 1.0),
                                 pack)
    return target_nll(project, states, targets, mask > 0, pack)

  def init(self, rng: jax.Array, batch, hparams=None) -> dict[str, Any]:
    tokens, lengths = jnp.asarray(batch['tokens'], jnp.int32), jnp.asarray(batch['lengths'], jnp.int32)
    network = self._network()
    z = jnp.zeros((tokens.shape[0], network.code_size), jnp.float32) if network.code_size else None
    params = jax.jit(network.init)(rng, tokens, lengths, z)['params']  # one compile, not op-by-op scans
    params = self._with_hparams(params, hparams)
    state = {'params': params, 'opt_state': self.optimizer().init(params), 'sentences': jnp.zeros((), jnp.float32)}
    return self.keep_hparams(state, hparams)

  def param_hparams(self) -> dict[str, tuple[str, str]]:
    """{model field: (group, key)}: the population hyperparameters kept as values in params[group][key],
    because evaluation reads them too (HSVAE's prior, a Gumbel code's temperature); never trained: read without
    gradient (`param_values`), so Adam leaves them unchanged. The others are kept in the state. {} here."""
    return {}

  @property
  def member_fields(self) -> tuple[str, ...]:
    """`AdamMethod.member_fields` but the `param_hparams`, kept in the parameters."""
    return tuple(f for f in super().member_fields if f not in self.param_hparams())

  def default_hparams(self) -> dict:
    """The `member_fields` (kept in the state) and the `param_hparams` (kept in the parameters)."""
    return {**super().default_hparams(), **{f: jnp.float32(self.config[f]) for f in self.param_hparams()}}

  def _with_hparams(self, params, hparams):
    """The parameters with the `param_hparams` set: a member's values, else the config's."""
    fields = self.param_hparams()
    if not fields:
      return params
    hp = {**self.default_hparams(), **(hparams or {})}
    out = dict(params)
    for field, (group, key) in fields.items():
      out[group] = {**out.get(group, {}), key: jnp.asarray(hp[field], jnp.float32)}
    return out

  def param_values(self, params) -> dict:
    """{field: value} of the `param_hparams`, read from the parameters without gradient."""
    return {f: jax.lax.stop_gradient(params[group][key]) for f, (group, key) in self.param_hparams().items()}

  def _latent_values(self, params, values=None):
    """What `_latent` reads: a member's `step_values` in training (None: the config's) and the values kept in
    the parameters (`param_values`), which evaluation reads too."""
    kept = self.param_values(params)
    return {**(values or {}), **kept} if kept else values

  def loss(self, params, batch, rng, kl_weight, values=None):
    """Mean over sentences of the summed token NLL plus the code's penalty, and metrics; `values`: a member's
    `step_values` (None: the config's)."""
    encoder_rng, latent_rng, decoder_rng, penalty_rng = jax.random.split(rng, 4)
    heads = self._heads(params, batch, train=True, rng=encoder_rng, values=values)
    z_BxC, parts = self._latent(heads, latent_rng, 'sample', self._latent_values(params, values))
    reconstruction, _ = self._nll(params, z_BxC, batch, train=True, rng=decoder_rng, weighted=True,
                                  values=values)
    penalty, metrics = self._regulariser(parts, z_BxC, batch, kl_weight, penalty_rng, values)
    return reconstruction + penalty, {'reconstruction': reconstruction, **metrics}

  def train_step(self, state, batch, rng):
    """One Adam step. A non-finite gradient makes the reported loss NaN, so the loop stops at the step that
    produced it (not one step later, when the NaN parameters first give a NaN loss)."""
    values = self.step_values(state)
    kl_weight = self._kl_weight(state['sentences'], values)
    (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(state['params'], batch, rng, kl_weight,
                                                                      values)
    updates, opt_state = self.optimizer(self.rate(state)).update(grads, state['opt_state'], state['params'])
    new_state = {**state, 'params': optax.apply_updates(state['params'], updates), 'opt_state': opt_state,
                 'sentences': state['sentences'] + jnp.sum(jnp.asarray(batch['mask'], jnp.float32))}
    grad_norm = optax.tree.norm(grads)
    loss = jnp.where(jnp.isfinite(grad_norm), loss, jnp.nan)
    return new_state, {'loss': loss, 'grad_norm': grad_norm, 'kl_weight': kl_weight, **aux}

  def score(self, params, batch, rng) -> dict[str, jax.Array]:
    """Per-sentence sums over the n + 1 predicted tokens (see the module docstrings); no dropout."""
    mask_B = jnp.asarray(batch['mask'], jnp.float32)
    lengths_B = jnp.asarray(batch['lengths'], jnp.int32)
    heads = self._heads(params, batch)
    scores, sampled_parts = {}, {}
    for key, mode in self.score_modes.items():
      z_BxC, parts = self._latent(heads, rng, mode, self._latent_values(params))
      sampled_parts = parts if mode == 'sample' else sampled_parts
      scores[key] = self._nll(params, z_BxC, batch) * mask_B
    scores['kl'] = self._kl(sampled_parts, lengths_B) * mask_B
    scores['tokens'] = (lengths_B + 1).astype(jnp.float32) * mask_B
    return scores

  def decode(self, params, codes, rng=None, max_len=None) -> jax.Array:
    """Greedy (rng None) or sampled sentences int32 [B, max_len] from codes [B, ...] (`dtr.nn.gru.decode`).

    max_len defaults to DataInfo.max_len + 1 (room for the eos). Rows are in the 'tokens' layout.
    """
    if max_len is None:
      if self.data.max_len <= 0:
        raise ValueError('decode needs max_len: pass it, or build the method with DataInfo.max_len > 0.')
      max_len = self.data.max_len + 1
    if max_len <= 0:
      raise ValueError(f'decode needs max_len > 0, got {max_len}.')
    return _decode(self, params, codes, rng, int(max_len))

  def decode_unjitted(self, params, codes, rng, max_len):
    z_BxC = self._codes_to_z(codes)
    batch_size = codes.shape[0]
    initial = self._apply(params, z_BxC, batch_size, method=TextAutoencoder.initial_state)

    def step(h_BxH, token_B):
      return self._apply(params, h_BxH, token_B, z_BxC, method=TextAutoencoder.decode_step)

    return gru.decode(step, initial, batch_size, max_len, rng, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID)

  def _codes_to_z(self, codes):
    return jnp.asarray(codes, jnp.float32)


# ------------------------------------------------------------------------------------------- the methods
def validate_sentence_ae(mc: ml_collections.ConfigDict) -> None:
  check_common(mc)
  check_sizes(mc, ('latent_size',))
  if mc.code not in CODES:
    raise ValueError(f'model.code must be one of {CODES}, got {mc.code!r}.')
  if mc.kl and mc.code == 'bottleneck':
    raise ValueError("model.kl needs a prior: use code='binary', 'gumbel' or 'gaussian' (not 'bottleneck').")
  if mc.temperature <= 0:
    raise ValueError(f'model.temperature (tau of the binary concrete) must be > 0, got {mc.temperature}.')
  if not 0 <= mc.kl_start <= 1:
    raise ValueError(f'model.kl_start must be in [0, 1], got {mc.kl_start}.')
  if mc.kl_anneal_sentences < 0:
    raise ValueError(f'model.kl_anneal_sentences must be >= 0 (0 = no annealing), '
                     f'got {mc.kl_anneal_sentences}.')
  if mc.probe_features not in PROBE_FEATURES:
    raise ValueError(f'model.probe_features must be one of {PROBE_FEATURES}, got {mc.probe_features!r}.')


@dataclasses.dataclass(frozen=True, eq=False)
class SentenceAE(SentenceMethod):
  """The binary autoencoder and its variants (model.code, model.kl): bits or dense codes of sentences."""

  validate = staticmethod(validate_sentence_ae)
  conditional_hparams: ClassVar[dict] = {
      **SentenceMethod.conditional_hparams,
      'kl_start': ("when a KL is annealed (a VAE's code, model.kl_anneal_sentences > 0)",
                   lambda mc: mc.kl and mc.code != 'bottleneck' and mc.kl_anneal_sentences > 0),
      'kl_anneal_sentences': ("when a KL is annealed (a VAE's code, model.kl_anneal_sentences > 0)",
                              lambda mc: mc.kl and mc.code != 'bottleneck' and mc.kl_anneal_sentences > 0),
      'temperature': ("when the code is the binary concrete's (model.code='gumbel') and its temperature is kept in "
                      "the parameters, which evaluation's sampled codes read (model.temperature_in_params=True; "
                      "configs/sentence_ae.py:method=gumbel_ae,temperature_in_params=True)",
                      lambda mc: mc.code == 'gumbel' and bool(setting(mc, 'temperature_in_params', AE_ABSENT)))}
  absent_means: ClassVar[dict] = AE_ABSENT

  def param_hparams(self) -> dict[str, tuple[str, str]]:
    """Under `model.temperature_in_params` (a 'gumbel' code): params['code']['temperature']."""
    return {'temperature': ('code', 'temperature')} if 'temperature' in self.conditional_hparams_on() else {}

  @property
  def emits(self) -> str:
    return 'bits' if self._binary else 'dense'

  @property
  def _binary(self) -> bool:
    return self.config.code in ('binary', 'gumbel')

  @property
  def score_modes(self) -> dict[str, str]:
    if self._binary:
      return {'nll': 'sample', 'nll_mean': 'mean', 'nll_greedy': 'greedy'}
    return {'nll': 'sample', 'nll_mean': 'mean'} if self.config.code == 'gaussian' else {'nll': 'sample'}

  def _network(self, values=None) -> TextAutoencoder:
    mc = self.config
    heads = (mc.latent_size,) * (2 if mc.code == 'gaussian' else 1)
    return TextAutoencoder(self.token_vocab_size, mc.embed_size, mc.hidden_size, heads, bidirectional=True,
                           code_size=mc.latent_size, code_to='state', dropout=self.step_value('dropout', values),
                           output_bias=mc.output_bias)

  def _latent(self, heads, rng, mode, values=None):
    mc = self.config
    if mc.code == 'bottleneck':
      return heads[0], {}
    if mc.code == 'gaussian':
      mu, logvar = heads
      z = gaussian.sample(mu, logvar, rng) if mode == 'sample' else mu
      return z, ({'kl': gaussian.kl_standard_normal(mu, logvar)} if mc.kl else {})
    (logits,) = heads
    if mode == 'greedy':
      z = bernoulli.threshold(logits).astype(jnp.float32)
    elif mode == 'mean':
      z = jax.nn.sigmoid(logits)
    elif mc.code == 'binary':
      z = bernoulli.sample_straight_through(logits, rng)
    else:
      z = bernoulli.sample_binary_concrete(logits, rng, self.step_value('temperature', values))
    parts = {'bit_rate': jnp.mean(jax.nn.sigmoid(logits))}
    if mc.kl:
      parts['kl'] = bernoulli.kl_to_uniform(logits)
    return z, parts

  def _kl_weight(self, sentences_seen, values=None):
    mc = self.config
    if mc.kl_anneal_sentences <= 0:
      return jnp.ones(())
    length = self.step_value('kl_anneal_sentences', values)  # a member's (float32, a whole number) or the config's
    start = self.step_value('kl_start', values)
    if not isinstance(length, jax.Array):
      return jnp.minimum(start + sentences_seen / length, 1.0)
    return jnp.where(length > 0, jnp.minimum(start + sentences_seen / jnp.maximum(length, 1.0), 1.0), 1.0)

  def _regulariser(self, parts, z_BxC, batch, kl_weight, rng, values=None):
    del z_BxC, rng, values
    metrics = {k: v for k, v in parts.items() if k == 'bit_rate'}
    if 'kl' not in parts:
      return jnp.zeros(()), metrics
    kl = masked_mean(parts['kl'], batch)
    return kl_weight * kl, {'kl': kl, **metrics}

  def encode(self, params, batch, rng=None) -> jax.Array:
    """Bits int8 [B, m] (1[p > 1/2]; z ~ Bern(p) with an rng), or dense codes [B, d] (mu; with an rng a sample)."""
    heads = self._heads(params, batch)
    if self._binary:
      if rng is None:
        return bernoulli.threshold(heads[0])
      return jax.random.bernoulli(rng, jax.nn.sigmoid(heads[0])).astype(jnp.int8)
    if self.config.code == 'gaussian' and rng is not None:
      return gaussian.sample(heads[0], heads[1], rng)
    return heads[0]

  def features(self, params, batch, kind: str | None = None) -> jax.Array:
    """Float codes for probes: binary/gumbel codes as `kind` (default model.probe_features) in
    'probabilities' (p), 'zeros_ones' (1[p > 1/2]) or 'logits'; dense codes: z (bottleneck) or mu."""
    heads = self._heads(params, batch)
    if not self._binary:
      return heads[0]
    kind = self.config.probe_features if kind is None else kind
    if kind not in PROBE_FEATURES:
      raise ValueError(f'features kind must be one of {PROBE_FEATURES}, got {kind!r}.')
    logits = heads[0]
    if kind == 'probabilities':
      return jax.nn.sigmoid(logits)
    return bernoulli.threshold(logits).astype(jnp.float32) if kind == 'zeros_ones' else logits


@dataclasses.dataclass(frozen=True, eq=False)
class LM(SentenceMethod):
  """The GRU language model: the decoder of `SentenceAE` with no code (emits nothing; `decode` samples)."""

  emits: ClassVar[str | None] = None

  @property
  def num_bits(self) -> int:
    return 0

  @property
  def code_length(self) -> int:
    return 0

  def _network(self, values=None) -> TextAutoencoder:
    mc = self.config
    return TextAutoencoder(self.token_vocab_size, mc.embed_size, mc.hidden_size,
                           dropout=self.step_value('dropout', values),
                           output_bias=mc.output_bias)

  def _latent(self, heads, rng, mode, values=None):
    del heads, rng, mode, values
    return None, {}

  def _codes_to_z(self, codes):
    del codes
    return None

  def decode(self, params, codes=None, rng=None, max_len=None, batch_size: int = 1) -> jax.Array:
    """Sentences [B, max_len]; `codes` only gives B (any array [B, ...]; None: `batch_size`)."""
    codes = jnp.zeros((batch_size, 0), jnp.float32) if codes is None else jnp.zeros((codes.shape[0], 0))
    return super().decode(params, codes, rng, max_len)


def default_model_config(name: str = 'sentence_ae', variant: str = 'binary') -> ml_collections.ConfigDict:
  """`model` fields of the sentence autoencoder ('sentence_ae', one of `VARIANTS`, '_wd' for word dropout)
  or the language model ('lm'); paper / reference defaults."""
  config = ml_collections.ConfigDict(dict(
      name=name,
      embed_size=300,        # word embeddings, shared by encoder and decoder (the paper: GloVe 300)
      hidden_size=512,       # GRU units: encoder (per direction) and decoder
      dropout=0.2,           # dropout on the GRU inputs (embeddings), training only
      word_dropout=0.0,      # P(a whole decoder input embedding is zeroed), training only; paper "+ WD": 0.5
      output_bias=False,     # bias of the softmax layer (the reference has none)
      learning_rate=1e-3,    # Adam
      clip=2.0,              # global-norm gradient clip (0 = off)
      pack_targets=0.75,     # > 0: the output layer on the predicted positions only (`target_nll`; exact)
  ))
  if name == 'lm':
    return config
  if name != 'sentence_ae':
    raise ValueError(f"Unknown sentence model {name!r}: 'sentence_ae' or 'lm'.")
  base = variant[:-3] if variant.endswith('_wd') else variant
  if base not in VARIANTS:
    raise ValueError(f'Unknown variant {variant!r}; known: {sorted(VARIANTS)} (each also with _wd).')
  config.code, config.kl = VARIANTS[base]  # code kind ('binary', 'bottleneck', 'gaussian', 'gumbel'); KL on/off
  config.latent_size = 50             # m bits or d dimensions
  config.temperature = 1.0            # tau of the binary concrete ('gumbel' codes); a population's hyperparameter
                                      # with temperature_in_params=True (absent: a constant)
  config.kl_start = 0.01              # KL weight at step 0; linear ramp to 1 ...
  config.kl_anneal_sentences = 1_000_000  # ... over this many training sentences (0 = weight 1 throughout)
  config.probe_features = 'probabilities'  # features() of bit codes: 'probabilities', 'zeros_ones', 'logits'
  if variant.endswith('_wd'):
    config.word_dropout = 0.5
  return config
