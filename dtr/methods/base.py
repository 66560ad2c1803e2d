"""The method protocol: what every method declares and provides; `dtr.train` owns everything else.

A method is a frozen dataclass of pure functions, built from the `model` config and a `DataInfo`, equal to
another of its class built from the same config values and data (compared as they were at construction), so
that it can be a static jit argument and a second run of the same model in one process reuses the first run's
compiled programs. It declares

  reads    the batches it consumes: 'bow' (flat sparse TF-IDF rows with term counts), 'tokens' (padded token
           ids), 'pairs' ({'x': bow batch, 'y': bow batch}) or 'features' (precomputed vectors or codes);
  emits    its codes: 'bits' (int8 0/1 [B, m]), 'symbols' (int32 [B, M] in [0, K)), 'dense' (float32 [B, d]),
           or None (a classifier: no codes, `predict` instead);
  fitted   True for closed-form baselines: `fit(split, seed) -> params` replaces `train_step`;
  batch_fields  the optional batch entries it needs: 'counts' (bow term counts), 'label' (class ids);

and provides, where they apply (params in, arrays out; all jittable):

  init(rng, batch, hparams=None) -> state         any pytree with 'params' (what is evaluated and kept as
                                                  best); `hparams` are population members' values
  default_hparams() -> {name: scalar}             the settings a population can vary by value (every
                                                  Adam-trained method: its learning rate; {}: seeds only)
  train_step(state, batch, rng) -> (state, metrics with a scalar 'loss')
                                                  one update; the method owns its inner loops (AMMI's G prior
                                                  steps, Hard EM's E-steps, SVI refinement)
  encode(params, batch, rng=None) -> codes [B, ...]   deterministic codes; with an rng, sampled codes
  score(params, batch, rng) -> {'nll': [B], 'tokens': [B], ...}
                                                  per-example negative log-likelihood (or its bound) summed
                                                  over the example's tokens, and the token count; further
                                                  'nll_<name>' entries (other codes, refined posteriors) give
                                                  further perplexities (`perplexities`)
  features(params, batch) -> float32 [B, F]       frozen features for downstream classifiers (no dropout)
  predict(params, batch) -> logits [B, C]         classifiers
  decode(params, codes, rng, max_len) -> token ids [B, L]   generation (greedy without an rng)

Batch layouts (host arrays, then global jax.Arrays sharded over the example axis):
  bow       {'ids', 'vals', 'seg': [G, T], 'mask': [G, n]} the flat layout of `dtr.data.flat_rows`, one group
            per device (`vals` = TF-IDF), plus 'counts' [G, T] float32 term counts at the same positions
  tokens    {'tokens': int32 [B, L] word ids (pad 0, no bos/eos; L > every length), 'lengths': int32 [B],
            'mask': float32 [B] (1 = a real document; 0 = padding of an evaluation batch)}, 'label': int32 [B]
            where the corpus has single labels (-1: none)
  features  {'features': [B, ...], 'mask': float32 [B], 'label': int32 [B]}
  pairs     {'x': bow batch, 'y': bow batch}, row b of both sides one pair
"""

from __future__ import annotations

import dataclasses
import json
from typing import Callable, ClassVar

import jax.numpy as jnp
import ml_collections
import optax

from dtr.data.tokenize import BOS_ID, EOS_ID, PAD_ID, UNK_ID  # token ids every dtr vocabulary reserves

READS = ('bow', 'tokens', 'pairs', 'features')
EMITS = ('bits', 'symbols', 'dense', None)


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What a method needs to know about its data to build its arrays.

  vocab_size: terms of the bag-of-words vocabulary (TF-IDF columns); token_vocab_size: token ids incl. the
  four specials (0 when the corpus has no token sequences); num_labels: classes; feature_shape: the shape of
  one example's precomputed features; feature_dtype: their dtype ('float32', or 'int32' for codes);
  num_values: K of symbol features; max_len: the longest token sequence of the corpus; train_size: the
  training examples one member sees per epoch (a label budget's subsample size for classifiers).
  """

  vocab_size: int = 0
  token_vocab_size: int = 0
  num_labels: int = 0
  feature_shape: tuple = ()
  feature_dtype: str = 'float32'
  num_values: int = 0
  max_len: int = 0
  train_size: int = 0


def setting(mc: ml_collections.ConfigDict, name: str, absent: dict):
  """Model field `name` of `mc`, or what its absence means, `absent[name]` (a method's `absent_means`)."""
  return mc.get(name, absent[name])


def check_bits(mc: ml_collections.ConfigDict) -> None:
  if mc.bits <= 0:
    raise ValueError(f'model.bits must be a positive number of code bits, got {mc.bits}.')


@dataclasses.dataclass(frozen=True, eq=False)
class Method:
  """Base of every method: validated at construction; `vocab_size` is the bag-of-words vocabulary."""

  config: ml_collections.ConfigDict  # the `model` sub-config
  vocab_size: int
  data: DataInfo | None = None

  reads: ClassVar[str] = 'bow'
  emits: ClassVar[str | None] = 'bits'
  fitted: ClassVar[bool] = False
  batch_fields: ClassVar[tuple] = ()  # optional batch extras it reads: 'counts' (bow), 'label'
  # {field: (when, applies)} for the population hyperparameters a method has under some settings only:
  # `applies(model config)` decides it (`conditional_hparams_on`, which `default_hparams` reads) and `when`
  # says it in words (named when a population_search asks for one the config leaves out), side by side
  conditional_hparams: ClassVar[dict[str, tuple[str, Callable[[ml_collections.ConfigDict], bool]]]] = {}
  # {field: value}: the model fields a config may lack (optional ones, and those added after runs were saved
  # without them) and what their absence means. They are read with `setting`, never with a default of their
  # own, because the checkpoint's settings check reads the same values (`absent_values`): a run saved before a
  # field resumes under a config that gives the field that value. Each class lists its own fields.
  absent_means: ClassVar[dict] = {}

  def __post_init__(self):
    if self.data is None:
      object.__setattr__(self, 'data', DataInfo(vocab_size=self.vocab_size))
    self.validate(self.config)
    # What the method's functions depend on, frozen now: a config changed after construction changes
    # neither the method's behaviour in programs already compiled nor its place in jit caches.
    settings = json.dumps(self.config.to_dict(), sort_keys=True, default=repr)
    object.__setattr__(self, '_value', (type(self), settings, self.vocab_size, self.data))

  def __eq__(self, other):
    return isinstance(other, Method) and self._value == other._value

  def __hash__(self):
    return hash(self._value)

  @staticmethod
  def validate(mc: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the field for impossible settings."""
    del mc

  @classmethod
  def absent_values(cls) -> dict:
    """The `absent_means` of the class and of every class it derives from (the nearest class's first)."""
    out = {}
    for klass in reversed(cls.__mro__):
      out.update(vars(klass).get('absent_means', {}))
    return out

  def setting(self, name: str):
    """Model field `name`, or what its absence means (`absent_values`)."""
    return setting(self.config, name, self.absent_values())

  def default_hparams(self) -> dict:
    """Population hyperparameters: {name: float32 scalar} of settings that change no array shape, which
    `init(rng, batch, hparams)` keeps per member in the state (or the parameters), so that a population of
    settings is one compiled program over a member axis (`dtr.population`); a single run (hparams None) reads
    the same settings from its config. {}: the method has none, and a population's members differ by seed only.
    """
    return {}

  def conditional_hparams_on(self) -> tuple[str, ...]:
    """The fields of `conditional_hparams` that this config's settings make population hyperparameters."""
    return tuple(name for name, (_, applies) in self.conditional_hparams.items() if applies(self.config))

  def check_hparams(self, hparams) -> None:
    """For `init`: refuses population hyperparameters the method does not have (`default_hparams`)."""
    unknown = sorted(set(hparams or {}) - set(self.default_hparams()))
    if unknown:
      known = sorted(self.default_hparams())
      raise ValueError(f'{self.config.name} has no population hyperparameters {unknown}; '
                       + (f'it has {known}.' if known else 'it has none (default_hparams): a population of it '
                          'varies seeds only.'))

  @property
  def num_bits(self) -> int:
    """m, for methods that emit bits."""
    return self.config.bits

  @property
  def code_length(self) -> int:
    """Length of a code: m bits, M symbols or d dimensions."""
    return self.num_bits

  @property
  def num_values(self) -> int:
    """K, the values a symbol takes (2 for bits, 0 for dense codes)."""
    return 2 if self.emits == 'bits' else 0

  def perplexities(self) -> dict[str, tuple[str, str]]:
    """{result name: (score key, 'corpus' | 'document')} that the perplexity evaluator reports."""
    return {'perplexity': ('nll', 'corpus')}

  def _source(self, batch):
    """The documents the encoder reads (conditional variants: one side of a pair)."""
    return batch

  def _target(self, batch):
    """The documents the decoder reconstructs (the source itself; conditional variants: the other side)."""
    return batch


@dataclasses.dataclass(frozen=True, eq=False)
class AdamMethod(Method):
  """A method trained by one Adam, after global-norm clipping of the gradient at `model.clip` (<= 0 or absent:
  none), whose step size (the field `rate_name`) and the fields `step_hparams` that its train step reads are
  population hyperparameters, with the `conditional_hparams` that the config turns on. `init` keeps a member's
  values in state['hparams'] (`keep_hparams`) and the train step reads them back (`rate(state)`,
  `step_values(state)`); a single run keeps none and reads its config, so its state and its checkpoints hold
  no 'hparams'."""

  # model fields that the train step reads through `step_value` (loss weights, temperatures, ...): population
  # hyperparameters beside the step size, kept in the state
  step_hparams: ClassVar[tuple[str, ...]] = ()
  absent_means: ClassVar[dict] = {'clip': 0.0}

  @property
  def member_fields(self) -> tuple[str, ...]:
    """The fields a population member keeps in state['hparams']: the step size, `step_hparams` and the
    conditional hyperparameters this config turns on (`conditional_hparams_on`)."""
    return (self.rate_name, *self.step_hparams, *self.conditional_hparams_on())

  @property
  def rate_name(self) -> str:
    """The field that sets Adam's step size."""
    return 'learning_rate'

  def default_hparams(self) -> dict:
    return {name: jnp.float32(self.config[name]) for name in self.member_fields}

  def keep_hparams(self, state: dict, hparams) -> dict:
    """`state` with a population member's `member_fields` in state['hparams'], after `check_hparams` (values
    the method keeps elsewhere, HSVAE's prior, are not kept here); a single run (hparams None) keeps none."""
    self.check_hparams(hparams)
    kept = {k: jnp.asarray(v, jnp.float32) for k, v in (hparams or {}).items() if k in self.member_fields}
    return {**state, 'hparams': kept} if kept else state

  def hparam(self, state: dict, name: str):
    """The value of population hyperparameter `name` for `state`: its member's, else the config's."""
    return state.get('hparams', {}).get(name, self.config[name])

  def rate(self, state: dict):
    """Adam's step size for `state` (`hparam(state, rate_name)`)."""
    return self.hparam(state, self.rate_name)

  def step_values(self, state: dict) -> dict:
    """{field: value} of the `member_fields` for `state` (`hparam`), for the train step."""
    return {name: self.hparam(state, name) for name in self.member_fields}

  def step_value(self, name: str, values=None):
    """The value of field `name` in `values` (`step_values(state)`, a member's), else the config's."""
    return (values or {}).get(name, self.config[name])

  def adam(self, rate) -> optax.GradientTransformation:
    """Adam at step size `rate`."""
    return optax.adam(rate)

  def optimizer(self, rate=None) -> optax.GradientTransformation:
    """`adam` at `rate` (a member's, `rate(state)`; None: the config's) after the gradient clip."""
    rate = self.config[self.rate_name] if rate is None else rate
    clip = self.setting('clip')
    return optax.chain(*([optax.clip_by_global_norm(clip)] if clip > 0 else []), self.adam(rate))
