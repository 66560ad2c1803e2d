"""Host-side batching for every input kind, and placement onto the device mesh.

Input kinds (what a method `reads`, `dtr.methods.base`): 'bow' (flat sparse TF-IDF rows, optionally with term
counts), 'tokens' (padded token ids), 'pairs' (two bow batches of the same rows), 'features' (rows of a
precomputed array). One function per kind turns global row indices [..., B] into this process's host
arrays (`gather`); the ordering and chunking below is the same for all of them.

The order of training examples is a pure function of (seed, epoch): epoch e visits
`np.random.default_rng([seed, e]).permutation(N)` in batches of `batch_size`, dropping the remainder. A
member trained on a subset of the rows (a label budget) visits `rows[permutation(len(rows))]`. The data
position is therefore just (epoch, step within epoch), which checkpoints store, so a resumed run sees
exactly the batches an uninterrupted run would have seen.

Layouts. A single run shards the example axis over the mesh's `data` axis: a bow batch has one flat group
per device ([..., D_local, T]), a token batch is [..., B_local, L]; multi-host, every process computes the
same permutation and gathers only its own slice of each global batch, and
`jax.make_array_from_process_local_data` stitches the slices into one global array. Members of a
population (`dtr.train`) see whole, unsharded batches: a shared batch ([K, ...], one bow group of B) or one
batch per member ([P, K, ...]).

Token batches are padded to one of a few fixed widths (`TOKEN_WIDTHS`, the smallest that leaves one free
slot after the longest sequence of the chunk over the global batch), so a jitted step compiles at most a
few times. With `data.length_buckets` = W > 0 the epoch's order is regrouped by `length_bucketed` (sorted by
length within windows of W chunks, chunks shuffled), so a chunk's sequences have similar lengths and little
padding (still a pure function of (seed, epoch)), and training chunks take the finer `bucket_widths`
(or, with `data.pad_to_multiple_of` = m, every multiple of m).

`prefetch` builds the next chunks on a background thread while the device runs the current one (numpy's
gathers release the GIL), so host batching overlaps the jitted steps.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, Sequence, TypeVar

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dtr.data import flat_rows
from dtr.data.batching import flat_width

DATA_AXIS = 'data'
KINDS = ('bow', 'tokens', 'pairs', 'features')
TOKEN_WIDTHS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
# With length buckets a chunk's lengths are close, so the padding is mostly the rounding up to a width: there
# the widths step by 1.5 and 4/3 instead of 2 (more programs to compile, a third less padding at most).
FINE_TOKEN_WIDTHS = tuple(sorted(set(TOKEN_WIDTHS) | {3 * w // 2 for w in TOKEN_WIDTHS[:-1]}))
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


# ------------------------------------------------------------------------------------------------ mesh
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


def check_batch_size(batch_size: int, num_train: int, what: str = 'training documents') -> None:
  devices, hosts = jax.device_count(), jax.process_count()
  if batch_size < 1:
    raise ValueError(f'batch_size={batch_size} must be >= 1.')
  if batch_size % devices:
    raise ValueError(f'batch_size={batch_size} must be a multiple of the {devices} devices it is split over; '
                     f'use batch_size={max(devices, batch_size // devices * devices)} or a multiple of it.')
  if batch_size % hosts:
    raise ValueError(f'batch_size={batch_size} must be a multiple of the {hosts} processes.')
  if num_train == 0:
    raise ValueError(f'there are no {what} to train on (the training split is empty).')
  if batch_size > num_train:
    raise ValueError(f'batch_size={batch_size} exceeds the {num_train} {what}; lower batch_size to at most '
                     f'{num_train // devices * devices or devices}.')


def data_seed(config) -> int:
  """The seed of the data order: `config.data_seed` when set (>= 0), else `config.seed`.

  Population members share one data order (`dtr.population`); a single run reproduces member i with
  `seed` = the member's seed and `data_seed` = the population's.
  """
  value = int(config.get('data_seed', -1))
  return value if value >= 0 else int(config.seed)


def num_examples(split) -> int:
  """Examples of a split of any kind (documents, pairs, feature rows)."""
  return split.num_pairs if hasattr(split, 'num_pairs') else split.num_docs


# ------------------------------------------------------------------------------------------------ order
def epoch_order(seed: int, epoch: int, num_docs: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(num_docs)


def member_order(rows: np.ndarray | None, seed: int, epoch: int, num_docs: int) -> np.ndarray:
  """The epoch's order of a member's training rows (all `num_docs` rows when `rows` is None)."""
  if rows is None:
    return epoch_order(seed, epoch, num_docs)
  return np.asarray(rows)[epoch_order(seed, epoch, len(rows))]


def length_bucketed(order: np.ndarray, lengths: np.ndarray, *, batch_size: int, steps_per_call: int,
                    window: int, seed: int, epoch: int) -> np.ndarray:
  """`order` regrouped so that each chunk of K = `steps_per_call` batches holds sequences of similar lengths.

  The rows the epoch trains on (the first `steps_per_epoch` x B of `order`; the dropped remainder stays at the
  end) are cut into windows of `window` chunks (W K B rows, the last window shorter). Within a window the
  rows are sorted by `lengths[row]` (stably, so equal lengths keep `order`'s random order) and cut into
  chunks of K B rows; the window's whole chunks are shuffled, a last partial chunk stays last (so later
  chunks still start at multiples of K B), and the batches of each chunk are shuffled. A chunk is padded to
  its own longest sequence (`token_width`), so sorting cuts the padding a chunk of random rows pays for; the
  shuffles are seeded by (seed, epoch), so the order stays a pure function of them and a resumed run sees
  the same batches. Every row keeps its window: W bounds how far a row can move within the epoch.
  """
  if window < 1:
    raise ValueError(f'data.length_buckets (chunks per sorting window) must be >= 1 here, got {window}.')
  order = np.asarray(order)
  used = steps_per_epoch(len(order), batch_size) * batch_size
  chunk, span = steps_per_call * batch_size, window * steps_per_call * batch_size
  rng = np.random.default_rng([seed, epoch, 0x6c656e])
  pieces = []
  for start in range(0, used, span):
    rows = order[start:min(start + span, used)]
    rows = rows[np.argsort(np.asarray(lengths)[rows], kind='stable')]
    whole = len(rows) // chunk
    chunks = [rows[i * chunk:(i + 1) * chunk] for i in range(whole)]
    for i in rng.permutation(whole):
      batches = chunks[i].reshape(steps_per_call, batch_size)
      pieces.append(batches[rng.permutation(steps_per_call)].reshape(-1))
    if len(rows) > whole * chunk:
      batches = rows[whole * chunk:].reshape(-1, batch_size)
      pieces.append(batches[rng.permutation(len(batches))].reshape(-1))
  pieces.append(order[used:])
  return np.concatenate(pieces)


def epoch_rows(order: np.ndarray, split, *, window: int, batch_size: int, steps_per_call: int, seed: int,
               epoch: int, multiple: int = 0) -> tuple[np.ndarray, tuple[int, ...]]:
  """(order, token widths) of an epoch: `order` regrouped by `length_bucketed` with `bucket_widths` (of
  `multiple`, data.pad_to_multiple_of) when `window` (data.length_buckets) > 0, else `order` as it is with
  `TOKEN_WIDTHS`."""
  if not window:
    return order, TOKEN_WIDTHS
  lengths = token_lengths(split)
  return length_bucketed(order, lengths, batch_size=batch_size, steps_per_call=steps_per_call, window=window,
                         seed=seed, epoch=epoch), bucket_widths(int(lengths.max(initial=0)), multiple)


def bucket_widths(longest: int, multiple: int = 0) -> tuple[int, ...]:
  """The widths length-bucketed chunks pad to, for a split whose longest sequence has `longest` tokens.

  multiple = 0: `FINE_TOKEN_WIDTHS` and the split's own widest batch, its longest sequence + 1 rounded up to
  8: the chunk of the longest sequences (usually far above the next longest chunk) pads to that, not to the
  next fine width (a split cut at 200 tokens: 208 instead of 256).
  multiple = m > 0 (data.pad_to_multiple_of): every multiple of m up to the first above `longest`, so a chunk
  pads to its longest sequence + 1 rounded up to m: for sequences much longer than m, less padding than the
  fine widths (which step by 1.5 and 4/3), at the cost of one compiled program per width a run meets (at
  most longest / m + 1 of them).
  """
  if multiple:
    return tuple(range(multiple, longest + 1 + multiple, multiple))
  return tuple(sorted(set(FINE_TOKEN_WIDTHS) | {-(-(longest + 1) // 8) * 8}))


def check_whole_windows(window: int, steps: int, steps_per_call: int) -> None:
  """A speed bench times whole windows of length-sorted chunks, or none (a part of a window is its shortest
  or longest chunks, not a sample of the corpus)."""
  if window and (steps // steps_per_call) % window:
    raise SystemExit(f'--buckets={window}: time whole windows, --steps / --steps_per_call a multiple of it '
                     '(a part of a window is its shortest or longest chunks, not a sample of the corpus).')


def check_whole_chunk(num_docs: int, batch_size: int, steps_per_call: int) -> None:
  """A speed bench times whole chunks of `steps_per_call` steps: an epoch with fewer steps than that has none
  (looking for one would never end)."""
  if steps_per_epoch(num_docs, batch_size) < steps_per_call:
    raise ValueError(f'an epoch of {num_docs} training documents has fewer than --steps_per_call={steps_per_call} '
                     f'steps of batch {batch_size}; lower --steps_per_call or --batch_size.')


def token_lengths(split) -> np.ndarray:
  """int [N] tokens per document of a token split (what `length_bucketed` sorts by)."""
  if getattr(split, 'tokens', None) is None:
    raise ValueError('data.length_buckets sorts token sequences by length, but this corpus has no token '
                     'sequences (TF-IDF only); unset data.length_buckets or use a corpus with text.')
  return np.diff(split.tokens.offsets)


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


def train_chunks(kind: str, split, orders: Sequence[np.ndarray], *, per_member: bool, batch_size: int,
                 start_step: int, steps_per_call: int, sharded: bool, fields: Sequence[str] = (),
                 widths: Sequence[int] = TOKEN_WIDTHS) -> Iterator[tuple[int, int, dict]]:
  """Yields (first_step, k, host batch) of one epoch from `start_step` on.

  `orders` are the epoch's row orders: one (shared by every member, batches [K, ...]) or one per member
  (`per_member`, batches [P, K, ...]); all of one length. Chunks start at multiples of K = `steps_per_call`
  within the epoch, so a run resumed at a chunk boundary runs the very same chunks as an uninterrupted one.
  Every chunk has K steps; in the epoch's last one, steps k..K-1 repeat the last batch and have `valid`
  False (the train step skips them). Token chunks are padded to the smallest of `widths` that fits
  (`token_width`; `bucket_widths` for length-bucketed orders).
  """
  lengths = {len(o) for o in orders}
  if len(lengths) != 1:
    raise ValueError(f'members must train on equally many rows, got {sorted(lengths)}')
  num_steps = steps_per_epoch(lengths.pop(), batch_size)
  for step, k in chunk_windows(num_steps, start_step, steps_per_call):
    rows = np.stack([chunk_rows(o, step, k, batch_size, steps_per_call) for o in orders])  # [P, K, B]
    batch = gather(kind, split, rows if per_member else rows[0], sharded=sharded, fields=fields, widths=widths)
    yield step, k, {**batch, 'valid': np.arange(steps_per_call) < k}


def eval_batches(kind: str, split, batch_size: int, fields: Sequence[str] = ()) -> Iterator[tuple[int, dict]]:
  """Yields (num_valid, host batch) over the whole split in order, sharded layout; the last batch wraps
  around to row 0 and its padding rows have mask 0."""
  n = num_examples(split)
  padded = np.arange(-(-n // batch_size) * batch_size) % max(n, 1)
  # One bow width per split (few shapes); token batches bucket their own width.
  width = None
  if kind in ('bow', 'pairs'):
    sides = (split,) if kind == 'bow' else (split.x, split.y)
    width = [flat_width(s.tfidf, padded.reshape(-1, batch_size // jax.device_count())) for s in sides]
  for start in range(0, n, batch_size):
    rows = padded[start:start + batch_size]
    num_valid = min(batch_size, n - start)
    batch = gather(kind, split, rows, sharded=True, fields=fields, width=width)
    local_positions = _local_slice(np.arange(batch_size))
    real = (local_positions < num_valid).astype(np.float32)
    for part in (batch['x'], batch['y']) if kind == 'pairs' else (batch,):
      part['mask'] = real.reshape(part['mask'].shape)
    yield num_valid, batch


# ------------------------------------------------------------------------------------------------ gather
def gather(kind: str, split, global_rows: np.ndarray, *, sharded: bool, fields: Sequence[str] = (),
           width=None, widths: Sequence[int] = TOKEN_WIDTHS) -> dict:
  """Host arrays of the examples `global_rows` [..., B] of `split` in the layout of `kind`.

  `sharded`: this process's slice, grouped per local device (single runs); else the whole batch (members).
  `fields`: optional extras, 'counts' (bow term counts at the positions of the TF-IDF entries) and 'label'
  (int32 class ids, -1 for none).
  """
  if kind == 'bow':
    batch = _bow(split, global_rows, sharded, 'counts' in fields, width if width is None else width[0])
  elif kind == 'pairs':
    wx, wy = (None, None) if width is None else width
    return {'x': _bow(split.x, global_rows, sharded, 'counts' in fields, wx),
            'y': _bow(split.y, global_rows, sharded, 'counts' in fields, wy)}
  elif kind == 'tokens':
    batch = _tokens(split, global_rows, sharded, widths)
  elif kind == 'features':
    rows = _local_slice(global_rows) if sharded else global_rows
    batch = {'features': np.asarray(split.features[rows]), 'mask': np.ones(rows.shape, np.float32)}
  else:
    raise ValueError(f'unknown input kind {kind!r}; known: {KINDS}')
  if 'label' in fields:
    rows = _local_slice(global_rows) if sharded else global_rows
    batch['label'] = split_class_ids(split)[rows].reshape(batch['mask'].shape)
  return batch


def _bow(split, global_rows: np.ndarray, sharded: bool, with_counts: bool, width: int | None) -> dict:
  """The flat layout of `dtr.data.flat_rows`: [..., groups, T] with one group per local device (sharded) or
  one group of the whole batch. T is computed over the global batch, so every process builds slices of the
  same global shape."""
  batch_size = global_rows.shape[-1]
  per_group = batch_size // jax.device_count() if sharded else batch_size
  if width is None:
    width = flat_width(split.tfidf, global_rows.reshape(-1, per_group))
  rows = _local_slice(global_rows) if sharded else global_rows
  lead = rows.shape[:-1]
  groups = rows.reshape(-1, per_group)
  ids, vals, seg = flat_rows(split.tfidf, groups, width=width)
  shape = lead + (jax.local_device_count() if sharded else 1, -1)
  batch = {'ids': ids.reshape(shape), 'vals': vals.reshape(shape), 'seg': seg.reshape(shape),
           'mask': np.ones(rows.shape, np.float32).reshape(shape)}
  if with_counts:
    if split.counts is None:
      raise ValueError('this method reads term counts, but the corpus has none (e.g. a .mat hashing set); '
                       'use a corpus with counts (the .npz hashing sets, raw text, 20news_clean, csv).')
    _, counts, _ = flat_rows(split.counts, groups, width=width)
    batch['counts'] = counts.astype(np.float32).reshape(shape)
  return batch


def token_width(longest: int, widths: Sequence[int] = TOKEN_WIDTHS) -> int:
  """The smallest of `widths` that holds `longest` tokens and one free slot (for eos)."""
  for width in widths:
    if width > longest:
      return width
  raise ValueError(f'a sequence of {longest} tokens is longer than the widest batch ({widths[-1] - 1}); '
                   'set data.max_len to truncate sequences.')


def _tokens(split, global_rows: np.ndarray, sharded: bool, widths: Sequence[int] = TOKEN_WIDTHS) -> dict:
  """{'tokens': int32 [..., B, L] (pad 0), 'lengths': int32 [..., B], 'mask': [..., B]}; L over the global
  batch, so every process pads to the same width."""
  tokens = split.tokens
  if tokens is None:
    raise ValueError('this method reads token sequences, but the corpus has none (TF-IDF only); use a corpus '
                     'with text: dbpedia14, yahoo10, ptb, yahoo_lm, raw_20news, raw_reuters, csv, folder, '
                     'tfds:<name> or synthetic.')
  offsets = tokens.offsets
  width = token_width(int((offsets[global_rows + 1] - offsets[global_rows]).max(initial=0)), widths)
  rows = _local_slice(global_rows) if sharded else global_rows
  flat = rows.reshape(-1)
  starts, lengths = offsets[flat], offsets[flat + 1] - offsets[flat]
  within = np.arange(width)
  take = within[None, :] < lengths[:, None]
  source = np.where(take, starts[:, None] + within[None, :], 0)
  ids = np.where(take, tokens.ids[source] if tokens.ids.size else 0, 0).astype(np.int32)
  return {'tokens': ids.reshape(rows.shape + (width,)), 'lengths': lengths.astype(np.int32).reshape(rows.shape),
          'mask': np.ones(rows.shape, np.float32)}


_CLASS_IDS: dict[int, tuple] = {}


def split_class_ids(split) -> np.ndarray:
  """int32 [N] class ids of a single-label split (-1 for unlabelled rows), computed once per split."""
  key = id(split)
  cached = _CLASS_IDS.get(key)
  if cached is not None and cached[0] is split:
    return cached[1]
  labels = np.asarray(split.labels, bool)
  if labels.ndim != 2 or labels.shape[1] == 0:
    raise ValueError('this method trains on class labels, but the corpus has none; use a labelled corpus '
                     '(dbpedia14, yahoo10, ng20, raw_20news, a csv with a label column, ...).')
  if (labels.sum(1) > 1).any():
    raise ValueError(f'this method needs one class per document, but {int((labels.sum(1) > 1).sum())} documents '
                     'have several labels (a multi-label corpus such as reuters); use a single-label corpus.')
  ids = np.where(labels.any(1), labels.argmax(1), -1).astype(np.int32)
  _CLASS_IDS[key] = (split, ids)
  return ids


# ------------------------------------------------------------------------------------------------ placement
def to_global(batch: dict, sharding: NamedSharding) -> dict:
  """Global arrays from this process's slices (nested dicts of pairs too); the per-step flags `valid` are
  replicated."""
  repl = NamedSharding(sharding.mesh, P())

  def place(key, v):
    if isinstance(v, dict):
      return {k: place(k, x) for k, x in v.items()}
    return jax.make_array_from_process_local_data(repl if key == 'valid' else sharding, v)

  return {k: place(k, v) for k, v in batch.items()}
