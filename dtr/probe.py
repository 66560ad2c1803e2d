r"""The probe stage: the frozen features of a finished workdir as a corpus a classifier trains on.

  python -m dtr.main --config=configs/classify.py:features=WORKDIR,labels=200 --workdir=DIR

`load_features(config.data)` reads the pretraining workdir (`data.path`): its best parameters, config and
the corpus it was trained on (from the location recorded in the workdir, checked by fingerprint), and
computes once, with dropout off, every split's features:

  data.feature_kind='features'  `method.features(params, batch)`: float32 [N, F] (code-book vectors, code
                                probabilities, posterior means: what the method offers)
  data.feature_kind='codes'     `method.encode(params, batch)`: the discrete codes themselves (symbols
                                int32 [N, M] or [N, L, M] with -1 padding, bits int8 [N, m]), for a probe
                                that re-embeds them (`model.reembed`)
  data.feature_kind='samples'   the mean of `data.feature_samples` sampled codes, `method.encode(params, batch,
                                rng)` (Monte-Carlo features of a stochastic encoder, e.g. HSVAE's 5 samples)

`data.feature_standardize=True` standardises every feature dimension j of every split with the mean m_j and
standard deviation s_j of the **training split's** features (all its rows, labelled or not: the unlabelled
pool a low-resource setting has; never valid or test), x_j <- (x_j - m_j) / s_j, and s_j = 1 where a
dimension is constant over the training split. A probe with Adam 3e-4 and early stopping cannot learn from
features whose spread between documents is tiny (HSVAE's mean representation varies by about 1e-3 per
dimension: docs/results/sentences.md); per-dimension z-scores make the probe see that spread. The statistics
are in `FeatureCorpus.standardize` (None without it). Features only, not codes.

`data.feature_overrides` ('field=value,...') changes fields of the pretrained model's config before its
features are computed, e.g. 'probe_features=zeros_ones' for a binary autoencoder's 0/1 codes.

The classifier (`dtr.methods.probe`) then trains through the one loop like any method: the label budget's
subsamples (`data.labels`, `data.label_seeds`) are members of one compiled program, each early-stopped on
validation accuracy; results report the mean and std over them.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from absl import logging
import numpy as np


@dataclasses.dataclass(frozen=True)
class FeatureSplit:
  """Precomputed features [N, ...] of one split, with its label sets [N, C] and document ids."""

  features: np.ndarray
  labels: np.ndarray
  doc_ids: np.ndarray | None = None

  def __post_init__(self):
    if len(self.features) != len(self.labels):
      raise ValueError(f'{len(self.features)} feature rows for {len(self.labels)} label rows')

  @property
  def num_docs(self) -> int:
    return len(self.features)

  def take(self, rows) -> FeatureSplit:
    rows = np.asarray(rows)
    return FeatureSplit(self.features[rows], self.labels[rows],
                        None if self.doc_ids is None else self.doc_ids[rows])


@dataclasses.dataclass(frozen=True)
class FeatureCorpus:
  """train/valid/test FeatureSplits of a pretraining workdir (the `Corpus` fields the loop reads)."""

  name: str
  splits: Mapping[str, FeatureSplit]
  label_names: Sequence[str]
  synthetic: bool
  source: str
  kind: str                 # 'features' or 'codes'
  code_kind: str | None     # the pretraining method's code kind
  num_values: int = 0       # K of symbol codes
  vocab: Sequence[str] = ()
  featurizer: object = None
  token_vocab: object = None
  standardize: tuple | None = None  # (mean [F], std [F]) of the training features when standardised


def standardize_splits(splits: Mapping[str, FeatureSplit]) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
  """Every split's features as per-dimension z-scores under the training split's mean and std (float64
  statistics; std 1 for a dimension constant over the training split). -> (splits, (mean, std))."""
  train = np.asarray(splits['train'].features, np.float64).reshape(splits['train'].num_docs, -1)
  mean = train.mean(axis=0)
  std = train.std(axis=0)
  std = np.where(std > 0, std, 1.0)
  out = {}
  for name, split in splits.items():
    flat = np.asarray(split.features, np.float64).reshape(split.num_docs, -1)
    z = ((flat - mean) / std).astype(np.float32).reshape(split.features.shape)
    out[name] = FeatureSplit(z, split.labels, split.doc_ids)
  return out, (mean.astype(np.float32), std.astype(np.float32))


# Below this median spread (per-dimension std between training documents) a probe trained by Adam at its
# step size moves its logits too little to learn in the budget's steps: load_features warns.
FLAT_SPREAD = 0.02


def feature_spread(split: FeatureSplit) -> float:
  """The median over feature dimensions of each dimension's standard deviation over the split's documents."""
  flat = np.asarray(split.features, np.float64).reshape(split.num_docs, -1)
  return float(np.median(flat.std(axis=0))) if flat.size else 0.0


def flat_features_warning(split: FeatureSplit, source: str) -> str | None:
  """A warning for features that vary too little between documents for an unstandardised probe, or None."""
  spread = feature_spread(split)
  if spread >= FLAT_SPREAD:
    return None
  return (f'The features of {source} vary little between documents (median per-dimension std {spread:.2g} over '
          'the training split): a probe trained by Adam at its step size learns slowly from them and may stay '
          'near chance. normalize=feature in configs/classify.py (data.feature_standardize=True) standardises '
          'each dimension over the training split.')


def _with_overrides(model, overrides: str):
  """The model with `field=value,...` applied to its `model` config (values parsed as JSON, else strings)."""
  import dataclasses as dc  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  from dtr import methods  # pylint: disable=g-import-not-at-top
  config = model.config.copy_and_resolve_references()
  for item in filter(None, overrides.split(',')):
    key, _, value = item.partition('=')
    if key not in config.model:
      raise ValueError(f'data.feature_overrides: the pretrained model has no field {key!r}; its fields: '
                       f'{sorted(config.model.keys())}.')
    try:
      config.model[key] = json.loads(value)
    except json.JSONDecodeError:
      config.model[key] = value
  method = methods.get_method(config.model, model.method.data)
  return dc.replace(model, config=config, method=method)


def load_features(data_config) -> FeatureCorpus:
  """Features of every split of the workdir `data_config.path` (see the module docstring)."""
  from dtr import encode  # pylint: disable=g-import-not-at-top
  from dtr.evaluate import evaluators  # pylint: disable=g-import-not-at-top
  workdir = data_config.get('path', '')
  if not workdir:
    raise ValueError('the probe reads the features of a finished workdir: set data.path (configs/classify.py:'
                     'features=WORKDIR).')
  kind = data_config.get('feature_kind', 'features')
  if kind not in ('features', 'codes', 'samples'):
    raise ValueError(f"data.feature_kind={kind!r}: use 'features' (method.features), 'codes' (the codes, for a "
                     "re-embedding probe) or 'samples' (the mean of sampled codes).")
  standardize = bool(data_config.get('feature_standardize', False))
  if standardize and kind == 'codes':
    raise ValueError('data.feature_standardize=True standardises feature values; data.feature_kind=codes gives '
                     'symbols to re-embed. Use feature_kind=features or samples, or feature_standardize=False.')
  model = encode.load_model(workdir)
  overrides = data_config.get('feature_overrides', '')
  if overrides:
    model = _with_overrides(model, overrides)
  method = model.method
  if method.emits is None and not hasattr(method, 'features'):
    raise ValueError(f'{workdir}: method {model.config.model.name!r} learns no representation (a language model '
                     'without a latent) to classify from; pretrain a method with codes or features.')
  if kind == 'features' and not hasattr(method, 'features'):
    raise ValueError(f'{workdir}: method {model.config.model.name!r} has no features function; use '
                     'data.feature_kind=codes (its codes) or another pretraining method.')
  if kind == 'codes' and method.emits is None:
    raise ValueError(f'{workdir}: method {model.config.model.name!r} emits no codes to re-embed.')
  corpus = encode.load_training_corpus(model)
  out = evaluators.Outputs.of_params(method, model.params, dict(corpus.splits), model.mesh,
                                     model.config.get('eval_batch_size', 1024))
  samples = int(data_config.get('feature_samples', 5))
  splits = {}
  for name, split in corpus.splits.items():
    if kind == 'features':
      values = out.features(name)[0]
    elif kind == 'codes':
      values = out.codes(name)[0]
    else:
      values = np.mean([evaluators.Outputs.of_params(method, model.params, dict(corpus.splits), model.mesh,
                                                     model.config.get('eval_batch_size', 1024),
                                                     seed=s).codes(name, True)[0]
                        for s in range(samples)], axis=0).astype(np.float32)
    splits[name] = FeatureSplit(np.asarray(values), split.labels, split.doc_ids)
  stats = None
  if standardize:
    splits, stats = standardize_splits(splits)
  elif kind != 'codes':
    message = flat_features_warning(splits['train'], workdir)
    if message:
      logging.warning(message)
  return FeatureCorpus(name=f'{corpus.name}:{kind}:{model.config.model.name}', splits=splits,
                       label_names=list(corpus.label_names), synthetic=corpus.synthetic, source=workdir,
                       kind=kind, code_kind=method.emits,
                       num_values=method.num_values if method.emits == 'symbols' else 0, standardize=stats)
