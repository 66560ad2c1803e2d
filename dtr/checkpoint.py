"""Checkpoints in two small functions around orbax: `save` and `restore_latest`.

A checkpoint holds the whole train state (parameters, every optimiser state, RNG, step, best parameters) as
arrays and a JSON `meta` dict with the data position (epoch, step within the epoch), the early-stopping
record and the metric history, so a killed run continues exactly where its last checkpoint left it.
"""

import ast
import contextlib
import json
import os
import sys

import jax
import orbax.checkpoint as ocp
from absl import logging


class CheckpointError(RuntimeError):
  pass


def manager(directory: str, max_to_keep: int = 2) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=('state', 'meta'))


def _to_write(tree):
  """What orbax is given to write: on one process the tree's values on the host (NumPy). Handed device
  arrays, orbax slices out every array's replica with a `jit(slice)` program of its own, compiled anew at
  every save (about 50 programs and 2.5 s per checkpoint of a small model on 8 CPU devices); the file format
  is the same, and restoring places each array back on the abstract state's sharding. Across processes
  the arrays stay global `jax.Array`s: orbax's write is collective and each process writes its shards."""
  return jax.device_get(tree) if jax.process_count() == 1 else tree


def save(mngr: ocp.CheckpointManager, step: int, state, meta: dict) -> None:
  """Saves (state, meta) as checkpoint `step`, replacing a checkpoint of the same step.

  The loop saves at most once per step, but a resumed run reaches the step it resumed from again (for
  instance an epoch's end whose validation was interrupted): the newer meta must win, never an error.
  """
  if step in mngr.all_steps():
    mngr.delete(step)
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_to_write(state)),
                                          meta=ocp.args.JsonSave(meta)), force=True)
  mngr.wait_until_finished()


def _leaves(tree, prefix: str = '') -> dict:
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for key, value in tree.items():
    out.update(_leaves(value, f'{prefix}.{key}' if prefix else str(key)))
  return out


_MISSING = object()


def settings_changes(saved: dict, current: dict, absent: dict | None = None) -> list[str]:
  """'name: saved -> current' for every setting (dotted name) whose value differs, compared as JSON.

  `absent` {dotted name: value}: what a setting's absence means (a method's `absent_values`, the loop's own);
  a side that lacks such a setting has that value, shown as "value (absent)". Without an entry, an absent
  setting differs from every value."""
  saved, current = (_leaves(json.loads(json.dumps(t, default=str))) for t in (saved, current))
  names = set(saved) | set(current)
  absent = {name: value for name, value in _leaves(json.loads(json.dumps(absent or {}, default=str))).items()
            if name in names}

  def value(side, name):
    if name in side:
      return side[name], repr(side[name])
    if name in absent:
      return absent[name], f'{absent[name]!r} (absent)'
    return _MISSING, '(absent)'

  out = []
  for name in sorted(names):
    (old, old_text), (new, new_text) = value(saved, name), value(current, name)
    if old != new:
      out.append(f'{name}: {old_text} -> {new_text}')
  return out


def _check_settings(mngr: ocp.CheckpointManager, step: int, path: str, settings: dict,
                    absent: dict | None = None) -> None:
  try:
    saved = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta'].get('settings')
  except Exception:  # pylint: disable=broad-except  (the full restore below names an unreadable checkpoint)
    return
  changes = settings_changes(saved, settings, absent) if saved is not None else []
  if changes:
    shown = '; '.join(changes[:8]) + (f'; and {len(changes) - 8} more' if len(changes) > 8 else '')
    raise CheckpointError(
        f'The checkpoint at {path} (step {step}) was written by a run with other settings ({shown}). '
        'Resuming would continue its state under a different model or data. Fix: run with the settings it '
        'was written with (for example --config.<name>=<saved value>) to continue it, or use a new '
        '--workdir to train with these.')


@contextlib.contextmanager
def _quiet_abandoned_reads():
  """Drops the "Event loop is closed" reports of a restore that failed (and leaves the filter in place then).

  When one array of a checkpoint cannot be read, orbax's event loop stops and closes while TensorStore's other
  reads are in flight; each of them, finishing, reports RuntimeError('Event loop is closed') through
  `sys.unraisablehook`, dozens of tracebacks around the one-line error. Only that exact report is dropped;
  after a successful restore the previous hook is back.
  """
  previous = sys.unraisablehook

  def hook(unraisable):
    if unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == 'Event loop is closed':
      return
    previous(unraisable)

  sys.unraisablehook = hook
  yield
  sys.unraisablehook = previous


def restore_latest(mngr: ocp.CheckpointManager, abstract_state, settings: dict | None = None,
                   absent: dict | None = None):
  """Returns (state, meta, step) of the latest checkpoint, or None when there is none.

  `abstract_state` is a pytree of `jax.ShapeDtypeStruct` (with shardings) describing the state to fill.
  A checkpoint that cannot be read raises CheckpointError naming its folder and the fix; nothing is
  silently skipped, since training over a half-read state would lose work without saying so. With
  `settings` (what the loop saves as meta['settings']: the fields that define the model and its data), a
  checkpoint whose meta holds other settings raises CheckpointError naming each changed field before any
  array is read (`absent`: what a setting's absence means, `settings_changes`); a checkpoint written before
  meta held them is not checked.
  """
  step = mngr.latest_step()
  if step is None:
    return None
  path = os.path.join(mngr.directory, str(step))
  if settings is not None:
    _check_settings(mngr, step, path, settings, absent)
  try:
    with _quiet_abandoned_reads():
      restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                            meta=ocp.args.JsonRestore()))
  except Exception as e:  # orbax raises many types for truncated files
    others = [s for s in mngr.all_steps() if s != step]
    hint = (f'delete {path} to resume from step {max(others)}' if others else
            'delete it (or use a new --workdir) to start afresh')
    # The first sentence of orbax's message says what failed; the rest is a TensorStore spec dump
    # (--verbose shows it with the traceback).
    reason = str(e).strip().split('\n')[0].split(' See full TensorStore details')[0][:300]
    raise CheckpointError(f'The checkpoint at {path} (step {step}) is unreadable or does not match this '
                          f'config ({type(e).__name__}: {reason}). Fix: {hint}.') from e
  logging.info('Restored checkpoint step %d from %s', step, path)
  return restored['state'], restored['meta'], step


def saved_keys(mngr: ocp.CheckpointManager, path: tuple[str, ...]) -> set[str] | None:
  """The keys of the dict at `path` in the latest checkpoint's state (read from orbax's tree metadata, no
  array read), or None when there is no checkpoint or its metadata cannot be read."""
  step = mngr.latest_step()
  if step is None:
    return None
  try:
    with open(os.path.join(mngr.directory, str(step), 'state', '_METADATA')) as f:
      names = json.load(f)['tree_metadata']
    keys = [ast.literal_eval(name) for name in names]  # "('train', 'method', 'hparams', 'dropout')"
  except (OSError, ValueError, KeyError, TypeError, SyntaxError):
    return None
  return {str(k[len(path)]) for k in keys
          if isinstance(k, tuple) and len(k) > len(path) and tuple(map(str, k[:len(path)])) == path}


def abstract_like(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
                      state)


def save_params(directory: str, params) -> None:
  """Writes a parameter pytree (the best model) on its own, for `dtr.encode` and `dtr.search`."""
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.abspath(directory), _to_write(params), force=True)
    ckptr.wait_until_finished()


def load_params(directory: str, abstract_params):
  path = os.path.abspath(directory)
  if not os.path.isdir(path):
    raise FileNotFoundError(f'No trained parameters at {path}: train first with '
                            '`python -m dtr.main --config=... --workdir=DIR` and pass that DIR.')
  try:
    with _quiet_abandoned_reads(), ocp.StandardCheckpointer() as ckptr:
      return ckptr.restore(path, abstract_params)
  except Exception as e:
    raise CheckpointError(f'The parameters at {path} are unreadable or do not match the saved config: '
                          f'{type(e).__name__}: {str(e)[:300]}. Retrain into a new --workdir.') from e
