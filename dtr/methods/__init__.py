"""Methods: each owns its `init`, `train_step` and `encode`; `dtr.train` owns everything else."""

import ml_collections

from dtr.methods import ammi

_REGISTRY = {'ammi': ammi.AMMI}


def get_method(model_config: ml_collections.ConfigDict, vocab_size: int):
  name = model_config.name
  if name not in _REGISTRY:
    raise ValueError(f'Unknown method model.name={name!r}; known: {sorted(_REGISTRY)}.')
  return _REGISTRY[name](model_config, vocab_size)
