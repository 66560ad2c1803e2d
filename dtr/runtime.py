"""Process-wide settings of a dtr run: JAX's persistent compilation cache and quieter logs.

Compilation cache. Compiled programs are kept on disk, so a second run of the same config (or a resumed one)
skips XLA compilation: `$DTR_COMPILATION_CACHE` names the folder, default `~/.cache/dtr/jax` (under
`$XDG_CACHE_HOME` when set); `DTR_COMPILATION_CACHE=0` turns it off. A folder already set through JAX's own
`JAX_COMPILATION_CACHE_DIR` / `jax_compilation_cache_dir` is left as it is. The cache is trusted code: keep
it private to your user (JAX's warning).
"""

from __future__ import annotations

import logging as py_logging
import os
import time

_IMPORTED = time.time()

_DONE = False
_COMPILE_SECONDS = [0.0]
_COMPILE_EVENTS = ('/jax/core/compile/backend_compile_duration', '/jax/core/compile/jaxpr_trace_duration',
                   '/jax/core/compile/jaxpr_to_mlir_module_duration')
# absl INFO lines that say nothing to a dtr user on every run.
_NOISE = ('Unable to initialize backend', 'Downloading and preparing dataset', 'Dataset dtr_corpus',
          'Constructing tf.data', 'Reusing dataset', 'Load dataset info from', 'Fields info.',
          'Creating a tf.data', 'For \'dtr_corpus', 'Generating dataset dtr_corpus', 'Done writing ',
          'is illegal; using')
# Warnings that are not: tfds names every prepared corpus a 'custom data configuration'; TensorBoard renames
# 'valid/precision@100' to a legal summary name.
_WARNING_NOISE = ('Using custom data configuration', 'is illegal; using')


def cache_dir() -> str:
  """The folder of the persistent compilation cache ('' when it is off)."""
  value = os.environ.get('DTR_COMPILATION_CACHE', '')
  if value == '0':
    return ''
  if value:
    return os.path.expanduser(value)
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'dtr', 'jax')


def setup() -> None:
  """Turns the compilation cache on and filters log noise; idempotent, call before compiling anything."""
  global _DONE
  if _DONE:
    return
  _DONE = True
  import jax  # pylint: disable=g-import-not-at-top
  folder = cache_dir()
  if folder and not jax.config.jax_compilation_cache_dir:
    try:
      os.makedirs(folder, exist_ok=True)
      jax.config.update('jax_compilation_cache_dir', folder)
      # Even small programs: a dtr run compiles tens of them, each 0.1-2 s on a laptop CPU.
      jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.05)
      jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
    except OSError:
      pass  # an unwritable home: run without the cache
  quiet_logs()
  try:
    jax.monitoring.register_event_duration_secs_listener(_on_duration)
  except AttributeError:  # an older JAX without monitoring: compile time is reported as 0
    pass


def _on_duration(event: str, duration: float, **kwargs) -> None:
  del kwargs
  if event in _COMPILE_EVENTS:
    _COMPILE_SECONDS[0] += duration


def compile_seconds() -> float:
  """Seconds this process spent tracing, lowering and compiling JAX programs (cache hits cost ~0)."""
  return _COMPILE_SECONDS[0]


def process_seconds() -> float:
  """Seconds since this process started (Linux: /proc; elsewhere since dtr.runtime was imported)."""
  try:
    with open('/proc/self/stat') as f:
      start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/uptime') as f:
      uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError):
    return time.time() - _IMPORTED


class _Filter(py_logging.Filter):
  def filter(self, record: py_logging.LogRecord) -> bool:
    if 'orbax' in record.pathname:  # orbax reports every save step by step at INFO
      return record.levelno >= py_logging.WARNING
    message = record.getMessage()
    if record.levelno >= py_logging.WARNING:
      return record.levelno > py_logging.WARNING or not any(n in message for n in _WARNING_NOISE)
    return not any(n in message for n in _NOISE)


def quiet_logs() -> None:
  from absl import logging  # pylint: disable=g-import-not-at-top
  handler = logging.get_absl_handler()
  if not any(isinstance(f, _Filter) for f in handler.filters):
    handler.addFilter(_Filter())
  for name in ('jax._src.xla_bridge', 'absl'):
    logger = py_logging.getLogger(name)
    if not any(isinstance(f, _Filter) for f in logger.filters):
      logger.addFilter(_Filter())
