"""Methods: each owns its `init`, `train_step` and `encode`; `dtr.train` owns everything else.

Non-learned baselines (bow, lsh, spectral) have `fit(train_split, seed) -> params` instead of `train_step`:
the loop fits them once, then writes their codes and results like any other method's.
Predictive methods (pairs of texts, `dtr.methods.predictive`) have their own registry and loop
(`get_predictive_method`, `dtr.predictive_train`).
"""

import ml_collections

from dtr.methods import ammi, baselines, dvq, predictive, vae_hashing

_REGISTRY = {
    'ammi': ammi.AMMI,
    'nash': vae_hashing.NASH,
    'bmsh': vae_hashing.BMSH,
    'binary_ae': vae_hashing.BinaryAE,
    'dvq': dvq.DVQ,
    'bow': baselines.BOW,
    'lsh': baselines.LSH,
    'spectral': baselines.Spectral,
}


def get_method(model_config: ml_collections.ConfigDict, vocab_size: int):
  name = model_config.name
  if name not in _REGISTRY:
    raise ValueError(f'Unknown method model.name={name!r}; known: {sorted(_REGISTRY)}.')
  return _REGISTRY[name](model_config, vocab_size)


def get_predictive_method(model_config: ml_collections.ConfigDict, vocab_size: int):
  """A method of the predictive task (`config.task == 'predictive'`): trains on pair batches."""
  name = model_config.name
  if name not in predictive.PREDICTIVE:
    raise ValueError(f'Unknown predictive method model.name={name!r}; known: {sorted(predictive.PREDICTIVE)}.')
  return predictive.PREDICTIVE[name](model_config, vocab_size)


def is_fitted(method) -> bool:
  """True for closed-form baselines (`fit` on the training split, no training loop)."""
  return not hasattr(method, 'train_step')
