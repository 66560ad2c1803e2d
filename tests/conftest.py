"""Every test runs with 8 forced CPU devices, so sharded code paths are exercised on a laptop."""

import gc
import os
import pathlib
import tempfile

import jax
import pytest

jax.config.update('jax_num_cpu_devices', 8)

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


@pytest.fixture(scope='module')
def quick_compiles():
  """XLA's cheaper optimisation level, which compiles in about half the time, for the modules that mark
  themselves with it (tests of plumbing and semantics, not of speed)."""
  previous = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


@pytest.fixture(autouse=True, scope='module')
def release_compiled_programs():
  """Drops JAX's in-memory caches of compiled programs after each test module: the suite compiles thousands
  of programs, and one process holding all of them grew past 5 GiB."""
  yield
  jax.clear_caches()
  gc.collect()
