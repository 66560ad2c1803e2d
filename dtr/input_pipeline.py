"""Host-side batching of sparse documents and placement onto the device mesh.

The order of training documents is a pure function of (seed, epoch): epoch e visits
`np.random.default_rng([seed, e]).permutation(N)` in batches of `batch_size`, dropping the remainder.
The data position is therefore just (epoch, step within epoch), which checkpoints store, so a resumed run
sees exactly the batches an uninterrupted run would have seen.

Multi-host: every process computes the same permutation and pads only its own slice of each global
batch; `jax.make_array_from_process_local_data` stitches the slices into one global array sharded over
the mesh's `data` axis.
"""

from typing import Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dtr.data import Split, pad_rows

DATA_AXIS = 'data'


def make_mesh() -> jax.sharding.Mesh:
  """One mesh over every device of every process, a single data-parallel axis.

  Auto axis types: jit propagates the batch sharding through the model and inserts the gradient
  all-reduce itself (current `jax.make_mesh` defaults to Explicit sharding-in-types).
  """
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh, leading_unsharded: int = 0) -> NamedSharding:
  """Shards the example axis (after `leading_unsharded` axes, e.g. the step axis of a chunk)."""
  return NamedSharding(mesh, P(*([None] * leading_unsharded), DATA_AXIS))


def check_batch_size(batch_size: int, num_train: int) -> None:
  devices, hosts = jax.device_count(), jax.process_count()
  if batch_size % devices:
    raise ValueError(f'batch_size={batch_size} must be a multiple of the {devices} devices it is split over; '
                     f'use batch_size={max(devices, batch_size // devices * devices)} or a multiple of it.')
  if batch_size % hosts:
    raise ValueError(f'batch_size={batch_size} must be a multiple of the {hosts} processes.')
  if batch_size > num_train:
    raise ValueError(f'batch_size={batch_size} exceeds the {num_train} training documents; lower batch_size.')


def epoch_order(seed: int, epoch: int, num_docs: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_docs)


def steps_per_epoch(num_docs: int, batch_size: int) -> int:
  return num_docs // batch_size


def pad_length(split: Split) -> int:
  """One padded width per split (a power of two >= its longest document), so shapes never change."""
  longest = int(np.diff(split.tfidf.indptr).max(initial=0))
  return 1 << (max(longest, 8) - 1).bit_length()


def _local_slice(global_rows: np.ndarray) -> np.ndarray:
  """This process's share of a global batch (the trailing axis holds examples)."""
  n = global_rows.shape[-1] // jax.process_count()
  i = jax.process_index()
  return global_rows[..., i * n:(i + 1) * n]


def chunk_batches(split: Split, seed: int, epoch: int, batch_size: int, start_step: int,
                  steps_per_call: int) -> Iterator[tuple[int, int, dict]]:
  """Yields (first_step, num_steps k, host batch dict of arrays [K, B_local, ...]) from `start_step` on.

  Chunks start at multiples of K = `steps_per_call` within the epoch, so a run resumed at a chunk boundary
  runs the very same chunks as an uninterrupted one. Every chunk has K steps; in the epoch's last one,
  steps k..K-1 repeat the last batch and have `valid` False (the train step skips them).
  """
  order = epoch_order(seed, epoch, split.num_docs)
  total = steps_per_epoch(split.num_docs, batch_size)
  width = pad_length(split)
  step = start_step
  while step < total:
    k = min(steps_per_call - step % steps_per_call, total - step)
    rows_KxB = order[step * batch_size:(step + k) * batch_size].reshape(k, batch_size)
    rows_KxB = _local_slice(np.concatenate([rows_KxB, np.repeat(rows_KxB[-1:], steps_per_call - k, 0)]))
    ids, vals = pad_rows(split.tfidf, rows_KxB.reshape(-1), min_len=width)
    shape = rows_KxB.shape + (-1,)
    yield step, k, {'ids': ids.reshape(shape), 'vals': vals.reshape(shape),
                    'valid': np.arange(steps_per_call) < k}
    step += k


def eval_batches(split: Split, batch_size: int) -> Iterator[tuple[int, dict]]:
  """Yields (num_valid, host batch) over the whole split in order; the last batch is padded with row 0."""
  n, width = split.num_docs, pad_length(split)
  for start in range(0, n, batch_size):
    rows = np.arange(start, min(start + batch_size, n))
    num_valid = len(rows)
    rows = np.concatenate([rows, np.zeros(batch_size - num_valid, rows.dtype)])
    ids, vals = pad_rows(split.tfidf, _local_slice(rows), min_len=width)
    yield num_valid, {'ids': ids, 'vals': vals}


def to_global(batch: dict, sharding: NamedSharding) -> dict:
  """Global arrays from this process's slices; per-step flags (1-D, e.g. `valid`) are replicated."""
  repl = NamedSharding(sharding.mesh, P())
  return {k: jax.make_array_from_process_local_data(repl if v.ndim == 1 else sharding, v)
          for k, v in batch.items()}
