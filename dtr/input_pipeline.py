"""Host-side batching of sparse documents and placement onto the device mesh.

The order of training documents is a pure function of (seed, epoch): epoch e visits
`np.random.default_rng([seed, e]).permutation(N)` in batches of `batch_size`, dropping the remainder.
The data position is therefore just (epoch, step within epoch), which checkpoints store, so a resumed run
sees exactly the batches an uninterrupted run would have seen.

Multi-host: every process computes the same permutation and pads only its own slice of each global
batch; `jax.make_array_from_process_local_data` stitches the slices into one global array sharded over
the mesh's `data` axis.

`prefetch` builds the next chunks on a background thread while the device runs the current one (numpy's
gathers release the GIL), so host batching overlaps the jitted steps.
"""

import queue
import threading
from typing import Iterable, Iterator, TypeVar

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dtr.data import Split, flat_rows
from dtr.data.batching import flat_width

DATA_AXIS = 'data'
T = TypeVar('T')


def prefetch(items: Iterable[T], size: int = 2) -> Iterator[T]:
  """Yields `items` in order, computed up to `size` ahead on a background thread.

  An exception in the producer is raised in the consumer at the same position; a consumer that stops early
  (break, exception, garbage collection) stops the producer.
  """
  buffer: queue.Queue = queue.Queue(maxsize=size)
  stop, done = threading.Event(), object()

  def produce():
    try:
      for item in items:
        while not stop.is_set():
          try:
            buffer.put((item, None), timeout=0.1)
            break
          except queue.Full:
            continue
        if stop.is_set():
          return
      buffer.put((done, None))
    except BaseException as error:  # handed to the consumer
      buffer.put((done, error))

  thread = threading.Thread(target=produce, daemon=True, name='dtr-prefetch')
  thread.start()
  try:
    while True:
      item, error = buffer.get()
      if item is done:
        if error is not None:
          raise error
        return
      yield item
  finally:
    stop.set()


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


def data_seed(config) -> int:
  """The seed of the data order: `config.data_seed` when set (>= 0), else `config.seed`.

  Population members share one data order (`dtr.population`); a single run reproduces member i with
  `seed` = the member's seed and `data_seed` = the population's.
  """
  value = int(config.get('data_seed', -1))
  return value if value >= 0 else int(config.seed)


def epoch_order(seed: int, epoch: int, num_docs: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_docs)


def steps_per_epoch(num_docs: int, batch_size: int) -> int:
  return num_docs // batch_size


def _local_slice(global_rows: np.ndarray) -> np.ndarray:
  """This process's share of a global batch (the trailing axis holds examples)."""
  n = global_rows.shape[-1] // jax.process_count()
  i = jax.process_index()
  return global_rows[..., i * n:(i + 1) * n]


def chunk_windows(num_steps: int, start_step: int, steps_per_call: int) -> Iterator[tuple[int, int]]:
  """(first step, k) of each chunk from `start_step` on; chunks start at multiples of `steps_per_call`."""
  step = start_step
  while step < num_steps:
    k = min(steps_per_call - step % steps_per_call, num_steps - step)
    yield step, k
    step += k


def chunk_rows(order: np.ndarray, step: int, k: int, batch_size: int, steps_per_call: int) -> np.ndarray:
  """Document rows [K, B] of steps step..step+k-1 of an epoch's `order`, the last repeated up to K steps."""
  rows_KxB = order[step * batch_size:(step + k) * batch_size].reshape(k, batch_size)
  return np.concatenate([rows_KxB, np.repeat(rows_KxB[-1:], steps_per_call - k, 0)])


def chunk_batches(split: Split, seed: int, epoch: int, batch_size: int, start_step: int,
                  steps_per_call: int) -> Iterator[tuple[int, int, dict]]:
  """Yields (first_step, num_steps k, host batch dict of arrays [K, D_local, ...]) from `start_step` on.

  Chunks start at multiples of K = `steps_per_call` within the epoch, so a run resumed at a chunk boundary
  runs the very same chunks as an uninterrupted one. Every chunk has K steps; in the epoch's last one,
  steps k..K-1 repeat the last batch and have `valid` False (the train step skips them).
  """
  order = epoch_order(seed, epoch, split.num_docs)
  for step, k in chunk_windows(steps_per_epoch(split.num_docs, batch_size), start_step, steps_per_call):
    batch = _flat_batch(split, chunk_rows(order, step, k, batch_size, steps_per_call))
    yield step, k, {**batch, 'valid': np.arange(steps_per_call) < k}


def eval_batches(split: Split, batch_size: int) -> Iterator[tuple[int, dict]]:
  """Yields (num_valid, host batch) over the whole split in order; the last batch wraps around to row 0."""
  n = split.num_docs
  padded = np.arange(-(-n // batch_size) * batch_size) % max(n, 1)
  width = flat_width(split.tfidf, padded.reshape(-1, batch_size // jax.device_count()))  # one shape per split
  for start in range(0, n, batch_size):
    rows = padded[start:start + batch_size]
    num_valid = min(batch_size, n - start)
    batch = _flat_batch(split, rows, width)
    local_positions = _local_slice(np.arange(batch_size))
    batch['mask'] = (local_positions < num_valid).astype(np.float32).reshape(batch['mask'].shape)
    yield num_valid, batch


def _flat_batch(split: Split, global_rows: np.ndarray, width: int | None = None) -> dict:
  """This process's share of global batches [..., B] in the flat layout of `dtr.data.flat_rows`, one
  group per device: arrays [..., D_local, T] and a mask [..., D_local, B / D]. T is computed over the
  global batch, so every process builds slices of the same global shape."""
  per_device = global_rows.shape[-1] // jax.device_count()
  if width is None:
    width = flat_width(split.tfidf, global_rows.reshape(-1, per_device))
  rows = _local_slice(global_rows)
  lead = rows.shape[:-1]
  ids, vals, seg = flat_rows(split.tfidf, rows.reshape(-1, per_device), width=width)
  shape = lead + (jax.local_device_count(), -1)
  return {'ids': ids.reshape(shape), 'vals': vals.reshape(shape), 'seg': seg.reshape(shape),
          'mask': np.ones(rows.shape, np.float32).reshape(shape)}


def to_global(batch: dict, sharding: NamedSharding) -> dict:
  """Global arrays from this process's slices; per-step flags (1-D, e.g. `valid`) are replicated."""
  repl = NamedSharding(sharding.mesh, P())
  return {k: jax.make_array_from_process_local_data(repl if v.ndim == 1 else sharding, v)
          for k, v in batch.items()}
