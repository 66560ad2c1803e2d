"""Multi-host for real: two processes joined by `jax.distributed` on localhost give the losses of one.

Each process loads the corpus and gathers only its own share of every global batch; the loop stitches them
into global arrays (`jax.make_array_from_process_local_data`). Two processes of one CPU device each must
train exactly as one process with two devices (the same global batches, the same sharded program).
"""

import json
import os
import socket
import subprocess
import sys

import pytest

_SCRIPT = r"""
import json, os, sys
import jax
pid, n, port, workdir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
if n > 1:
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}', num_processes=n, process_id=pid)
from dtr import config_utils, train
config = config_utils.load_config_module('ammi').get_config('tiny')
config.num_epochs = 2
results = train.train_and_evaluate(config, workdir)
if pid == 0:
  print('RESULT' + json.dumps({'loss': results['train_loss_history'], 'precision': results['test/precision@10'],
                               'devices': jax.device_count(), 'processes': jax.process_count()}))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _result(stdout: str) -> dict:
  return json.loads(stdout.split('RESULT', 1)[1])


def test_two_processes_train_like_one(tmp_path):
  env = dict(os.environ, DTR_COMPILATION_CACHE='0')
  one = subprocess.run([sys.executable, '-c', _SCRIPT, '0', '1', '0', str(tmp_path / 'one')],
                       env=dict(env, JAX_NUM_CPU_DEVICES='2'), capture_output=True, text=True, timeout=600)
  assert one.returncode == 0, one.stderr[-3000:]
  port = str(_free_port())
  env1 = dict(env, JAX_NUM_CPU_DEVICES='1')
  procs = [subprocess.Popen([sys.executable, '-c', _SCRIPT, str(i), '2', port, str(tmp_path / 'two')], env=env1,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=600) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  a, b = _result(one.stdout), _result(outs[0][0])
  assert a['devices'] == b['devices'] == 2 and b['processes'] == 2
  assert b['loss'] == pytest.approx(a['loss'], rel=1e-6)
  assert b['precision'] == pytest.approx(a['precision'], abs=1e-6)
