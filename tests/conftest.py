"""Every test runs with 8 forced CPU devices, so sharded code paths are exercised on a laptop."""

import gc
import os
import pathlib
import subprocess
import sys
import tempfile

# XLA's CPU compiler with its older loop emitters (the fusion emitters off) compiles the suite's programs in
# about three quarters of the time (measured on the tiny HSVAE and VQ-VAE runs, backend compile 12.6 against
# 16.1 s and 6.9-8.1 against 9.2-10.5 s; tests/test_discrete_vae.py 141 against 163 s). It is set for the suite
# and the processes it starts, before JAX reads XLA_FLAGS, and only where the installed XLA knows the flag (an
# unknown one aborts the process): probed once in a child process, and the workers of pytest-xdist and the
# suite's subprocesses inherit the result. The golden values, bitwise XLA's default code, run in a child
# process with the default flags (`default_xla_env`). DTR_TESTS_OPTIMIZE=1 keeps XLA's defaults throughout.
CHEAP_CODEGEN = '--xla_cpu_use_fusion_emitters=false'
if os.environ.get('DTR_TESTS_OPTIMIZE') != '1' and 'DTR_TESTS_XLA_PROBED' not in os.environ:
  _flags = f"{os.environ.get('XLA_FLAGS', '')} {CHEAP_CODEGEN}".strip()
  _probe = subprocess.run([sys.executable, '-c', 'import jax; jax.devices()'], capture_output=True, check=False,
                          env={**os.environ, 'XLA_FLAGS': _flags, 'JAX_PLATFORMS': 'cpu'})
  os.environ['DTR_TESTS_XLA_PROBED'] = '1'
  if _probe.returncode == 0:
    os.environ['XLA_FLAGS'] = _flags

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update('jax_num_cpu_devices', 8)

# XLA's cheaper optimisation level for the whole suite and the processes it starts (`python -m dtr.main`,
# the notebooks): it compiles in about 60 % of the time, and compiling the tiny configs' programs is most of
# the suite's time. Tests of exact numbers between two differently built programs ask for the default level
# with the `full_optimizations` fixture; the golden values run in a child process with XLA's defaults
# (`default_xla_env`). DTR_TESTS_OPTIMIZE=1 runs everything at the default level.
if os.environ.get('DTR_TESTS_OPTIMIZE') != '1':
  os.environ['JAX_DISABLE_MOST_OPTIMIZATIONS'] = 'true'
  jax.config.update('jax_disable_most_optimizations', True)

REPO = pathlib.Path(__file__).resolve().parents[1]
# Real data (read-only) for tests that need it: $DTR_DATA_DIR, else ../shared/data beside the repo.
os.environ.setdefault('DTR_DATA_DIR', str(REPO.parent / 'shared' / 'data'))
# The suite's own compilation cache and prepared-corpus folder (its subprocesses share them): never the user's
# ~/.cache/dtr/{jax,tfds}, which other dtr processes on the machine may be writing at the same time. Under
# pytest-xdist (`-n`, on by default in pyproject.toml) every worker gets its own pair: the controller's
# conftest runs first and its settings would otherwise be inherited by every worker.
if os.environ.get('DTR_TESTS_OWN_DIRS') != os.environ.get('PYTEST_XDIST_WORKER', 'main'):
  worker = os.environ.get('PYTEST_XDIST_WORKER', 'main')
  os.environ['DTR_COMPILATION_CACHE'] = tempfile.mkdtemp(prefix=f'dtr_tests_jax_cache_{worker}_')
  os.environ['DTR_TFDS_DIR'] = tempfile.mkdtemp(prefix=f'dtr_tests_tfds_{worker}_')
  os.environ['DTR_TESTS_OWN_DIRS'] = worker


def default_xla_env() -> dict:
  """The environment of a child process that compiles as a user's run does: XLA's default optimisation level
  and code generation."""
  env = dict(os.environ)
  env.pop('JAX_DISABLE_MOST_OPTIMIZATIONS', None)
  flags = env.get('XLA_FLAGS', '').replace(CHEAP_CODEGEN, '').strip()
  if flags:
    env['XLA_FLAGS'] = flags
  else:
    env.pop('XLA_FLAGS', None)
  return env


@pytest.fixture
def full_optimizations(monkeypatch):
  """XLA's default optimisation level for one test and its subprocesses (the flag is not part of JAX's
  in-memory cache keys, hence the cleared caches on both sides)."""
  previous = jax.config.values['jax_disable_most_optimizations']
  monkeypatch.delenv('JAX_DISABLE_MOST_OPTIMIZATIONS', raising=False)
  jax.clear_caches()
  jax.config.update('jax_disable_most_optimizations', False)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)
  jax.clear_caches()


@pytest.fixture
def fresh_programs():
  """No compiled program from before the test, and none of the test's after it: for tests that patch what
  tracing reads (a module constant, a method's step). Methods are equal by value, so a program compiled
  for an equal method would otherwise be reused on either side of the patch."""
  jax.clear_caches()
  yield
  jax.clear_caches()


# The resident memory above which a worker drops its compiled programs after a test module.
RELEASE_ABOVE_BYTES = float(os.environ.get('DTR_TESTS_RELEASE_GIB', '3')) * 2**30


def _resident_bytes() -> int:
  try:
    with open('/proc/self/statm') as f:
      return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
  except (OSError, ValueError):
    return 1 << 62  # unknown: release after every module


@pytest.fixture(autouse=True, scope='module')
def release_compiled_programs():
  """Drops JAX's in-memory caches of compiled programs after a test module once the worker holds more than
  RELEASE_ABOVE_BYTES: the suite compiles thousands of programs, and one process holding all of them grew
  past 5 GiB. Below it they are kept, so that later modules training the same tiny models (methods are equal
  by value) compile nothing."""
  yield
  if _resident_bytes() > RELEASE_ABOVE_BYTES:
    jax.clear_caches()
    gc.collect()


# The longest test files first (most worker time in a full run), so that no worker starts one of them near the
# end while the others sit idle: pytest-xdist hands whole files out in collection order
# (`--dist=loadfile --no-loadscope-reorder` in pyproject.toml).
SLOW_FIRST = ('test_notebooks', 'test_discrete_vae', 'test_classification', 'test_families', 'test_population',
              'test_sentence_ae', 'test_sparse_latents', 'test_sentence_analysis', 'test_bow_analysis',
              'test_sentences_bench', 'test_resume', 'test_multihost', 'test_markov', 'test_cli', 'test_train')


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  rank = {name: i for i, name in enumerate(SLOW_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: each file keeps its order
