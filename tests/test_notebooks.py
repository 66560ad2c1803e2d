"""Every notebook in notebooks/ runs top to bottom on its tiny configs (the code cells, in order, as one
script in a fresh process; shell lines such as `!pip install` are skipped: CI installed dtr already)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / 'notebooks').glob('*.ipynb'))


def notebook_script(path: pathlib.Path) -> str:
  cells = json.loads(path.read_text())['cells']
  lines = []
  for cell in cells:
    if cell['cell_type'] != 'code':
      continue
    source = ''.join(cell['source'])
    lines += [line for line in source.splitlines() if not line.lstrip().startswith(('!', '%'))]
    lines.append('')
  return '\n'.join(lines)


def test_there_is_a_notebook_per_family():
  names = {p.stem for p in NOTEBOOKS}
  assert 'ammi_quickstart' in names and len(names) >= 1


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
  script = tmp_path / 'notebook.py'
  script.write_text(notebook_script(path))
  env = dict(os.environ, DTR_NOTEBOOK_DIR=str(tmp_path / 'work'), MPLBACKEND='Agg', JAX_NUM_CPU_DEVICES='1')
  out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
