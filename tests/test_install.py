"""Configs work after install: `configs/` is the package `dtr.configs`, found from any directory."""

import os
import pathlib
import subprocess
import sys
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
  listed = set(tomllib.loads((REPO / 'pyproject.toml').read_text())['tool']['setuptools']['packages'])
  on_disk = {'.'.join(p.parent.relative_to(REPO).parts) for p in (REPO / 'dtr').rglob('__init__.py')}
  assert on_disk | {'dtr.configs'} == listed, 'add new packages to [tool.setuptools] packages in pyproject.toml'


def test_a_plain_install_runs_a_config_from_another_directory(tmp_path):
  target = tmp_path / 'site'
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                  '--target', str(target), str(REPO)], check=True, capture_output=True, timeout=600)
  assert (target / 'dtr' / 'configs' / 'ammi.py').exists() and (target / 'dtr' / 'configs' / 'common.py').exists()
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  env = dict(os.environ, PYTHONPATH=str(target), JAX_NUM_CPU_DEVICES='1')
  check = subprocess.run([sys.executable, '-c', 'import dtr.configs.ammi as a, dtr; print(a.__file__, dtr.__file__)'],
                         cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
  assert str(target) in check.stdout and str(REPO) not in check.stdout
  out = subprocess.run([sys.executable, '-m', 'dtr.main', '--config=configs/ammi.py:tiny', '--config.num_epochs=1',
                        f'--workdir={tmp_path / "w"}'], cwd=elsewhere, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'test precision@10' in out.stdout
