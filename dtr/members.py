"""The member axis of the training loop: P runs of one method in one compiled program.

`dtr.train` always trains a stack of members, state [P, ...]: a single run is one member, a population of
settings (`dtr.population`) or the label subsamples of a classifier (`data.label_seeds`) are several. What
a member is: a seed (initialisation and per-step randomness), the method's hyperparameters that change no
array shape (`method.default_hparams()`, kept in the state, so members differ by value only), and the rows
it trains on with the seed of their order.

How the stack runs:
  one member   the plain step on the squeezed state, state replicated and the example axis of every batch
               sharded over the mesh (data parallelism): the very computation of a single run;
  P members    `jax.vmap` of the step over the member axis; members sharded over the mesh when P is a
               multiple of the devices (else replicated), batches whole: one shared batch for all members
               (`shared`), or one per member ([P, K, ...]).
Members that have stopped (early stopping, pruning) leave the program: the running ones are gathered into
buckets of size P, P/2, P/4, ... (`bucket_rows`), so a stack compiles at most log2(P) + 1 times.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from dtr import input_pipeline as ip


@dataclasses.dataclass(frozen=True)
class Member:
  """One run of the stack: its seed, hyperparameters (None: the config's), training rows (None: all) and the
  seed of their order, and the search setting it belongs to (replicas of a setting share it)."""

  seed: int
  order_seed: int
  hparams: dict | None = None
  rows: np.ndarray | None = None
  setting: int = 0

  def describe(self) -> dict:
    out = {'seed': self.seed, 'setting': self.setting}
    if self.hparams:
      out.update({k: float(v) for k, v in self.hparams.items()})
    if self.rows is not None:
      out['train_rows'] = int(len(self.rows))
    return out


def shares_data(members: list[Member]) -> bool:
  """True when every member trains on the same rows in the same order: one host batch feeds them all."""
  first = members[0]
  return all(m.order_seed == first.order_seed and
             (m.rows is None and first.rows is None or
              m.rows is not None and first.rows is not None and np.array_equal(m.rows, first.rows))
             for m in members)


def scan_steps(method):
  """K consecutive train steps of `method` as one `lax.scan` over batches [K, ...] (not jitted).

  `batches['valid'][t]` is False for the steps that pad an epoch's last chunk to K: those are skipped by
  `lax.cond` (no compute, state unchanged, zero metrics), so every chunk has one shape and compiles once.
  Per-step randomness is fold_in(rng, step).
  """

  def train_chunk(state, batches):
    def body(st, xs):
      batch, valid = xs
      traced = {}

      def run(st):
        rng = jax.random.fold_in(st['rng'], st['step'])
        method_state, metrics = method.train_step(st['method'], batch, rng)
        traced['metrics'] = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), metrics)
        return {'method': method_state, 'rng': st['rng'], 'step': st['step'] + 1}, metrics

      def skip(st):
        # The metric shapes recorded while `run` was traced (cond traces its true branch first): tracing a
        # train step again only for its output shapes doubled the chunk's tracing time.
        shapes = traced['metrics'] if 'metrics' in traced else jax.eval_shape(run, st)[1]
        return st, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

      return jax.lax.cond(valid, run, skip, st)

    batches = dict(batches)
    valid = batches.pop('valid')
    return jax.lax.scan(body, state, (batches, valid))

  return train_chunk


def init_state(method, seed: int, sample_batch: dict, hparams=None) -> dict:
  """Method state, RNG (raw key data: checkpointable) and step of one member with this seed."""
  init_rng, train_rng = jax.random.split(jax.random.key(seed))
  method_state = method.init(init_rng, sample_batch) if hparams is None else method.init(
      init_rng, sample_batch, hparams)
  return {'method': method_state, 'rng': jax.random.key_data(train_rng), 'step': jnp.zeros((), jnp.int32)}


def init_states(method, members: list[Member], sample_batch: dict) -> dict:
  """The stacked states [P, ...] of all members (one jitted vmap over seeds and hyperparameters).

  The compiled initialiser is kept per method (methods are equal by value), so a second run of the same model
  in one process does not compile it again; seeds and the sample batch are its arguments."""
  seeds = jnp.asarray([m.seed for m in members], jnp.uint32)
  if members[0].hparams is None:
    if len(members) == 1:  # one compiled program instead of one per initialiser (the same values, tested)
      return _init_fn(method, 'one')(seeds[0], sample_batch)
    return _init_fn(method, 'seeds')(seeds, sample_batch)
  hparams = {k: jnp.asarray([m.hparams[k] for m in members], jnp.float32) for k in members[0].hparams}
  return _init_fn(method, 'hparams')(seeds, sample_batch, hparams)


@functools.lru_cache(maxsize=None)
def _init_fn(method, kind: str):
  """The jitted initialiser of one member ('one': its state with a member axis of 1), of members that differ
  by seed ('seeds') or by seed and hyperparameters ('hparams'), over the members by `over_members`."""
  if kind == 'one':
    return jax.jit(lambda seed, batch: jax.tree.map(lambda x: x[None], init_state(method, seed, batch)))
  if kind == 'seeds':
    return jax.jit(over_members(lambda seed, batch: init_state(method, seed, batch), (0, None)))
  return jax.jit(over_members(lambda seed, batch, hp: init_state(method, seed, batch, hp), (0, None, 0)))


def over_members(fn, in_axes: tuple):
  """`fn` over the leading member axis of the arguments whose `in_axes` entry is 0 (None: shared by all):
  `jax.vmap` on accelerators; on the CPU one member after another (`lax.map`). XLA:CPU runs vmap's batched
  products (a member dimension on every dot) several times slower than the same products member by member
  (docs/results/foundation.md, populations), and two independent batched LAPACK calls in one program (the
  member-batched QRs of two orthogonal initialisers, e.g. a GRU's recurrent kernels at 512 units) can deadlock
  its thread pool (jaxlib 0.10.2: each call waits, on a pool thread, for batch work queued on the same pool).
  """
  if jax.default_backend() != 'cpu':
    return jax.vmap(fn, in_axes=in_axes)
  mapped = [i for i, axis in enumerate(in_axes) if axis == 0]

  def one_by_one(*args):
    def one(xs):
      full = list(args)
      for i, x in zip(mapped, xs):
        full[i] = x
      return fn(*full)
    return jax.lax.map(one, tuple(args[i] for i in mapped))

  return one_by_one


def member_sharding(mesh, size: int) -> NamedSharding:
  """Members over the mesh when they split evenly over the devices, else replicated."""
  return NamedSharding(mesh, P(ip.DATA_AXIS) if size % jax.device_count() == 0 else P())


@functools.lru_cache(maxsize=None)
def train_chunk_fn(method, mesh, size: int, shared: bool):
  """The jitted K-step chunk for `size` members, state donated.

  One member: the squeezed state and a batch whose examples are sharded over `data` (as placed by
  `ip.to_global`); its shardings are kept. Several: vmap over members, the batch shared or per member.
  """
  body = scan_steps(method)
  if size == 1:
    def single(state, batch):
      state, metrics = body(jax.tree.map(lambda x: x[0], state), batch)
      return jax.tree.map(lambda x: x[None], (state, metrics))
    repl = ip.replicated(mesh)
    return jax.jit(single, in_shardings=(repl, None), out_shardings=(repl, repl), donate_argnums=0)

  def stacked(state, batch):
    axes = {k: None if k == 'valid' or shared else 0 for k in batch}
    return jax.vmap(body, in_axes=(0, axes))(state, batch)

  return jax.jit(stacked, donate_argnums=0)


def place_state(tree, mesh):
  size = jax.tree.leaves(tree)[0].shape[0]
  return jax.device_put(tree, ip.replicated(mesh) if size == 1 else member_sharding(mesh, size))


def place_batch(host_batch: dict, mesh, size: int, shared: bool) -> dict:
  """Global arrays of a host chunk for a stack of `size` members (see the module docstring)."""
  if size == 1:
    if not shared:  # one member's own rows: drop the member axis
      host_batch = {k: v if k == 'valid' else jax.tree.map(lambda x: x[0], v) for k, v in host_batch.items()}
    return ip.to_global(host_batch, ip.batch_sharding(mesh, 1))
  sharding = ip.replicated(mesh) if shared else member_sharding(mesh, size)
  return {k: jax.device_put(v, ip.replicated(mesh) if k == 'valid' else sharding) for k, v in host_batch.items()}


def bucket_rows(active: list[int], size: int, devices: int = 1) -> np.ndarray:
  """Member rows trained (or evaluated) together: `active` first, padded with other members up to a bucket size.

  Bucket sizes are size, size/2, size/4, ... (rounded up to whole devices): the smallest that holds the
  active members. At most log2(size) distinct sizes, so few compilations, while stopped members stop
  costing compute. The first len(active) rows are always the active members, in order.
  """
  whole_devices = lambda n: -(-n // devices) * devices
  bucket = size
  while len(active) <= whole_devices(-(-bucket // 2)) < bucket:
    bucket = whole_devices(-(-bucket // 2))
  running = set(active)
  others = [i for i in range(size) if i not in running]
  return np.asarray(list(active) + others[:bucket - len(active)])


def is_identity(rows, size: int) -> bool:
  """True when `rows` are all members in their own order (no gather needed)."""
  return len(rows) == size and bool(np.all(np.asarray(rows) == np.arange(size)))


def take(tree, rows):
  rows = jnp.asarray(rows)
  return jax.tree.map(lambda x: x[rows], tree)


def put(tree, rows, sub, count: int):
  """`tree` with members rows[:count] replaced by the first `count` members of `sub`."""
  rows = jnp.asarray(rows[:count])
  return jax.tree.map(lambda x, y: x.at[rows].set(y[:count]), tree, sub)


@jax.jit
def where_members(mask, new, old):
  """Per member: `new` where mask[i], else `old` (pytrees [P, ...]; one compiled program for all leaves)."""
  mask = jnp.asarray(mask)
  return jax.tree.map(lambda n, o: jnp.where(mask.reshape((-1,) + (1,) * (n.ndim - 1)), n, o), new, old)


@jax.jit
def copy(tree):
  """A copy of a pytree of arrays (one compiled program)."""
  return jax.tree.map(jnp.copy, tree)


def num_members(tree) -> int:
  return jax.tree.leaves(tree)[0].shape[0]
