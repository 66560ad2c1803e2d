r"""Whole-process time of a short run, split into imports, data, compilation, training and finishing.

  python -m dtr.bench startup [--config=configs/ammi.py:dataset=ng20,bits=16] [--epochs=3] [--reps=3]
      [--peer="python ammi.py ..."]   # a second command timed the same way, A B A B, with the ratio per pair

Each repetition runs `python -m dtr.main` as a fresh process twice: cold (an empty compilation cache) and warm
(the cache the cold run filled), and reads the phases the run recorded in results.json (`timings`: seconds
from process start to the loop, data, compilation inside the loop, training, finishing). `--help` of
`dtr.main` is timed too. With `--peer` (for example the original AMMI code on one thread), the peer and dtr's
warm run alternate and the ratio dtr / peer is printed pair by pair. Medians are the numbers to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time


def _timed(cmd: list[str], env: dict, cwd: str | None = None) -> tuple[float, subprocess.CompletedProcess]:
  t0 = time.perf_counter()
  out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
  return time.perf_counter() - t0, out


def dtr_run(config: str, epochs: int, cache_dir: str) -> tuple[float, dict]:
  env = dict(os.environ, DTR_COMPILATION_CACHE=cache_dir)
  with tempfile.TemporaryDirectory() as workdir:
    cmd = [sys.executable, '-m', 'dtr.main', f'--config={config}', f'--config.num_epochs={epochs}',
           '--config.patience=1000', '--config.progress_bar=False', '--config.tensorboard=False',
           f'--workdir={workdir}']
    seconds, out = _timed(cmd, env)
    if out.returncode:
      raise SystemExit(f'dtr failed:\n{out.stderr[-3000:]}')
    with open(os.path.join(workdir, 'results.json')) as f:
      results = json.load(f)
  return seconds, results['timings']


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='python -m dtr.bench startup')
  parser.add_argument('--config', default='configs/ammi.py:dataset=ng20,bits=16')
  parser.add_argument('--epochs', type=int, default=3)
  parser.add_argument('--reps', type=int, default=3)
  parser.add_argument('--peer', default='', help='a command to time beside dtr (one string, shell-split)')
  parser.add_argument('--peer_cwd', default='')
  args = parser.parse_args(argv)
  rows = {'cold': [], 'warm': []}
  peer, ratios = [], []
  help_times = [_timed([sys.executable, '-m', 'dtr.main', '--help'], dict(os.environ))[0] for _ in range(3)]
  if args.peer:  # warm-up of the peer (its data loading, the OS file cache)
    _timed(shlex.split(args.peer), dict(os.environ), args.peer_cwd or None)
  for rep in range(args.reps):
    with tempfile.TemporaryDirectory() as cache:
      for kind in ('cold', 'warm'):
        seconds, timings = dtr_run(args.config, args.epochs, cache)
        rows[kind].append((seconds, timings))
        print(f'rep {rep} {kind}: {seconds:.1f}s whole process | ' +
              ', '.join(f'{k} {v:.2f}' for k, v in timings.items()), flush=True)
      if args.peer:
        p_seconds, out = _timed(shlex.split(args.peer), dict(os.environ), args.peer_cwd or None)
        if out.returncode:
          raise SystemExit(f'the peer failed:\n{out.stderr[-3000:]}')
        peer.append(p_seconds)
        ratios.append(rows['warm'][-1][0] / p_seconds)
        print(f'rep {rep} peer: {p_seconds:.1f}s whole process; dtr warm / peer = {ratios[-1]:.2f}', flush=True)
  print(f'\n{args.config}, {args.epochs} epochs, {args.reps} repetitions (medians):')
  print(f'  python -m dtr.main --help: {statistics.median(help_times):.2f}s')
  for kind, items in rows.items():
    keys = items[0][1].keys()
    phases = ', '.join(f'{k} {statistics.median(t[k] for _, t in items):.2f}s' for k in keys)
    print(f'  dtr {kind:4s}: {statistics.median(s for s, _ in items):.1f}s whole process ({phases})')
  if peer:
    print(f'  peer     : {statistics.median(peer):.1f}s whole process ({args.peer})')
    print(f'  dtr warm / peer, pair by pair: {", ".join(f"{r:.2f}" for r in ratios)} '
          f'(median {statistics.median(ratios):.2f})')


if __name__ == '__main__':
  main()
