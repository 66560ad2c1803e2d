"""What every method shares: built from the `model` config and the vocabulary size, validated at once.

A method is a frozen dataclass of pure functions, hashed by identity so it can be a static jit argument:
  init(rng, batch) -> state           any pytree with 'params' (what is encoded and kept as best)
  train_step(state, batch, rng) -> (state, metrics with 'loss')   pure; `dtr.train` scans and jits it
  encode(params, batch) -> int8 [num_docs, m]                     deterministic codes
Closed-form baselines define `fit(split, seed) -> params` instead of `train_step`.
"""

import dataclasses

import ml_collections
import optax


def check_bits(mc: ml_collections.ConfigDict) -> None:
  if mc.bits <= 0:
    raise ValueError(f'model.bits must be a positive number of code bits, got {mc.bits}.')


def clipped_adam(learning_rate, clip) -> optax.GradientTransformation:
  """Adam after global-norm clipping of the gradient (clip <= 0: no clipping)."""
  parts = [optax.clip_by_global_norm(clip)] if clip > 0 else []
  return optax.chain(*parts, optax.adam(learning_rate))


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

  def _source(self, batch):
    """The documents the encoder reads (conditional variants: one side of a pair)."""
    return batch

  def _target(self, batch):
    """The documents the decoder reconstructs (the source itself; conditional variants: the other side)."""
    return batch
