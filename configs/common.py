r"""The fields every config shares: the training loop (`dtr.train`), evaluation, checkpoints, populations.

A family's config starts from `get_config()` and sets `data`, `model`, `evals` and `select`:

  evals    what is measured on valid and test (`dtr.evaluate.evaluators`): 'precision@K', 'matching@K',
           'perplexity', 'accuracy', 'hoyer', 'codebook'
  select   ('valid/<metric>', 'max' | 'min'): early stopping and the kept best model follow it
"""

import ml_collections

from dtr.data import default_data_config


def get_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      seed=0,
      data_seed=-1,                  # seed of the data order (-1: seed); a population's members share one
      batch_size=64,
      num_epochs=40,
      patience=6,                    # epochs without a better validation `select` metric before stopping
      steps_per_call=64,             # train steps fused into one jitted lax.scan (one dispatch)
      checkpoint_every_steps=2000,   # plus one at the end of every epoch (at most one per step)
      checkpoint_keep=2,
      evals=('precision@100',),
      select=('valid/precision@100', 'max'),
      eval_batch_size=1024,
      tensorboard=True,
      progress_bar=True,
      multihost=False,               # jax.distributed.initialize() (also: env DTR_MULTIHOST=1)
      population=0,                  # >0: train this many settings at once (dtr.population), best on valid
      population_data='shared',      # members share one data order (one host batch); or 'per_member'
      population_valid_queries=0,    # >0: rank members every epoch on this many validation queries ...
      population_rescore=10,         # ... then re-validate this many leading settings on the whole split
      population_replicas=1,         # seeds per setting: settings are ranked by their mean over seeds
      population_prune_epochs='',    # successive halving, e.g. '4,8,16': after those epochs keep only ...
      population_prune_keep=1 / 3,   # ... this fraction of the running settings (best validation so far)
      population_search=ml_collections.ConfigDict(),  # what members 1..P-1 draw (member 0 = this config)
      data=default_data_config(),
      model=ml_collections.ConfigDict(),
  ))


def set_evals(config, evals, select_metric: str, mode: str = 'max') -> None:
  """config.evals and config.select in one call (select_metric without the 'valid/' prefix)."""
  config.evals = tuple(evals)
  config.select = (f'valid/{select_metric}', mode)


def tiny_synthetic(config, **synthetic) -> None:
  """The small synthetic corpus and loop settings of the test configurations (seconds on a laptop)."""
  config.data.name = 'synthetic'
  config.data.synthetic.update(dict(num_train=600, num_valid=100, num_test=100, vocab_size=300, num_classes=4),
                               **synthetic)
  config.update(batch_size=32, num_epochs=6, steps_per_call=8, checkpoint_every_steps=10, tensorboard=False,
                progress_bar=False)
