"""What every method shares: built from the `model` config and the vocabulary size, validated at once.

A method is a frozen dataclass of pure functions, hashed by identity so it can be a static jit argument:
  init(rng, batch) -> state           any pytree with 'params' (what is encoded and kept as best)
  train_step(state, batch, rng) -> (state, metrics with 'loss')   pure; `dtr.train` scans and jits it
  encode(params, batch) -> int8 [num_docs, m]                     deterministic codes
Closed-form baselines define `fit(split, seed) -> params` instead of `train_step`.
"""

import dataclasses

import ml_collections


@dataclasses.dataclass(frozen=True, eq=False)
class Method:
  config: ml_collections.ConfigDict  # the `model` sub-config
  vocab_size: int

  def __post_init__(self):
    self.validate(self.config)

  @staticmethod
  def validate(mc: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the field for impossible settings."""
    del mc

  @property
  def num_bits(self) -> int:
    return self.config.bits
