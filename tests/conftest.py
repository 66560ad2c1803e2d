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
# The suite's own compilation cache (its subprocesses share it): never the user's ~/.cache/dtr/jax, which
# other dtr processes on the machine may be writing at the same time.
# Under pytest-xdist every worker gets its own (the controller's conftest runs first and its setting would be
# inherited): concurrent writers of one cache directory are what this avoids.
if 'DTR_COMPILATION_CACHE' not in os.environ or os.environ.get('DTR_TESTS_OWN_CACHE') == '1':
  worker = os.environ.get('PYTEST_XDIST_WORKER', 'main')
  os.environ['DTR_COMPILATION_CACHE'] = tempfile.mkdtemp(prefix=f'dtr_tests_jax_cache_{worker}_')
  os.environ['DTR_TESTS_OWN_CACHE'] = '1'


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
