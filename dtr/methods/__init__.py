"""One registry of methods: name -> (module, class, default `model` config).

Each method is one file of this package (the protocol is in `dtr.methods.base`): it declares what it reads
and emits and provides its pure functions; `dtr.train` owns everything else. Modules are imported when a
method is asked for, so a run pays only for the methods it uses.

  get_method(config.model, data_info)      the method object (validated)
  method_class(name)                       its class (reads, emits, fitted, batch_fields) before any data
  default_model_config(name)               its `model` fields with their defaults
"""

from __future__ import annotations

import importlib

import ml_collections

from dtr.methods.base import DataInfo

# name: (module, class, factory of the default model config, its argument or None)
_REGISTRY = {
    'ammi': ('ammi', 'AMMI', 'default_model_config', None),
    'nash': ('vae_hashing', 'NASH', 'default_model_config', 'nash'),
    'bmsh': ('vae_hashing', 'BMSH', 'default_model_config', 'bmsh'),
    'binary_ae': ('vae_hashing', 'BinaryAE', 'default_model_config', 'binary_ae'),
    'dvq': ('dvq', 'DVQ', 'default_model_config', None),
    'bow': ('baselines', 'BOW', 'default_model_config', 'bow'),
    'lsh': ('baselines', 'LSH', 'default_model_config', 'lsh'),
    'spectral': ('baselines', 'Spectral', 'default_model_config', 'spectral'),
    'predictive_ammi': ('predictive', 'PredictiveAMMI', 'default_model_config', 'predictive_ammi'),
    'conditional_bmsh': ('predictive', 'ConditionalBMSH', 'default_model_config', 'conditional_bmsh'),
    'conditional_dvq': ('predictive', 'ConditionalDVQ', 'default_model_config', 'conditional_dvq'),
    'probe': ('probe', 'Probe', 'default_model_config', None),
    'cbow': ('cbow', 'CBOW', 'default_model_config', None),
    'bow_vae': ('bow_vae', 'BowVAE', 'default_model_config', 'krishnan'),
    'sentence_ae': ('sentence_ae', 'SentenceAE', 'default_model_config', 'sentence_ae'),
    'lm': ('sentence_ae', 'LM', 'default_model_config', 'lm'),
    'hsvae': ('sparse_vae', 'HSVAE', 'default_model_config', 'hsvae'),
    'mat_vae': ('sparse_vae', 'MATVAE', 'default_model_config', 'mat_vae'),
    'gauss_vae': ('sparse_vae', 'GaussVAE', 'default_model_config', 'gauss_vae'),
    'vq_vae': ('discrete_vae', 'VQVAE', 'default_model_config', 'vq_vae'),
    'cat_vae': ('discrete_vae', 'CatVAE', 'default_model_config', 'cat_vae'),
    'hard_em': ('discrete_vae', 'HardEM', 'default_model_config', 'hard_em'),
}


def names() -> list[str]:
  return sorted(_REGISTRY)


def _entry(name: str):
  if name not in _REGISTRY:
    raise ValueError(f'Unknown method model.name={name!r}; known: {names()}.')
  return _REGISTRY[name]


def method_class(name: str):
  module, cls, _, _ = _entry(name)
  return getattr(importlib.import_module(f'dtr.methods.{module}'), cls)


def default_model_config(name: str) -> ml_collections.ConfigDict:
  module, _, factory, arg = _entry(name)
  make = getattr(importlib.import_module(f'dtr.methods.{module}'), factory)
  return make() if arg is None else make(arg)


def get_method(model_config: ml_collections.ConfigDict, data=None, *, vocab_size: int | None = None):
  """The method `model_config.name` names, for data described by `data` (a DataInfo, or a vocabulary size)."""
  if data is None:
    data = DataInfo(vocab_size=vocab_size or 0)
  elif isinstance(data, int):
    data = DataInfo(vocab_size=data)
  return method_class(model_config.name)(model_config, data.vocab_size, data)


def is_fitted(method) -> bool:
  """True for closed-form baselines (`fit` on the training split, no training loop)."""
  return bool(getattr(method, 'fitted', False))
