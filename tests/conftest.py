"""Every test runs with 8 forced CPU devices, so sharded code paths are exercised on a laptop."""

import os
import pathlib

import jax

jax.config.update('jax_num_cpu_devices', 8)

REPO = pathlib.Path(__file__).resolve().parents[1]
# Real data (read-only) for tests that need it: $DTR_DATA_DIR, else ../shared/data beside the repo.
os.environ.setdefault('DTR_DATA_DIR', str(REPO.parent / 'shared' / 'data'))
