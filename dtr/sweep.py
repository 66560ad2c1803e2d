r"""Random search over shape-changing choices: one population (`dtr.population`) per group.

A population vmaps everything that keeps array shapes (its method's population hyperparameters: every
Adam-trained method's learning rate; AMMI's entropy weight, clip and init range; the sparse sentence VAEs' loss
weights and HSVAE's prior; and the seed); choices that change shapes or are no population hyperparameter of
the method (batch size, G, prior layers, raw prior, hidden size, code size, encoder order...) need their own
compiled program. A sweep is the cartesian product of `--grid` choices (or `--groups` points drawn from it),
each group one population of `config.population` members:

  DTR_DATA_DIR=../shared/data python -m dtr.sweep --config=configs/ammi.py:dataset=ng20,bits=64,population=12 \
      --grid=batch_size=64,128,256 --grid=model.prior_steps=1,2,4 --grid=model.prior_layers=0,1 \
      --groups=6 --workdir=/tmp/sweep_ng64

Group g runs in WORKDIR/group{g:03d} with seed config.seed + g * population (no two members share a seed), so
an interrupted sweep resumes: finished groups are read back, an unfinished one continues from its checkpoint.
The best member over all groups is chosen on config.select's validation metric (highest or lowest) and
reported on test; sweep_results.json holds every group's best and all members, sweep.md a table. The same as
a function: `run_sweep`. With an empty `config.population_search` each group is a population of seeds, so a
sweep is a grid search with several seeds per point; with one, each point searches the values too, e.g.
HSVAE's code size by grid and its KL weight psi within each population:

  python -m dtr.sweep --config=configs/sentence_ae.py:method=hsvae,population=6 \
      --grid=model.latent_size=32,768 "--config.population_search.z_kl_weight=uniform(0.1,1)" \
      --workdir=/tmp/hsvae_grid
"""

import itertools
import json
import os
import sys
import time

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from dtr import cli, config_utils

_CONFIG = config_flags.DEFINE_config_file('config', None, 'ml_collections config file (path[:arguments]).',
                                          lock_config=False)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of the sweep; one sub-folder per group.')
_GRID = flags.DEFINE_multi_string('grid', [], 'A shape-changing choice: dotted.field=v1,v2,... (repeatable).')
_SEARCH: dict[str, str] = {}  # --config.population_search.NAME=SPEC items (`cli.take_search_specs`)
_GROUPS = flags.DEFINE_integer('groups', 0, 'Draw this many distinct grid points at random (0: all of them).')


def parse_grid(specs: list[str], config) -> dict[str, list]:
  """{'model.prior_steps': [1, 2, 4], ...}; values take the type of the field they replace."""
  grid = {}
  for spec in specs:
    key, sep, values = spec.partition('=')
    if not sep or not values:
      raise ValueError(f'Bad --grid {spec!r}: write field=value1,value2,... (e.g. batch_size=64,128).')
    current = config_utils.get_dotted(config, key)
    if isinstance(current, (tuple, list)):
      raise ValueError(f'--grid {key}: sequence fields are not supported; use a scalar field.')
    grid[key] = [_cast(current, v.strip()) for v in values.split(',')]
  return grid


def grid_points(grid: dict[str, list], num_groups: int, seed: int) -> list[dict]:
  """All grid points in order, or `num_groups` of them drawn without replacement (deterministic)."""
  keys = sorted(grid)
  points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
  if 0 < num_groups < len(points):
    rng = np.random.default_rng([seed, 104729])
    points = [points[i] for i in sorted(rng.choice(len(points), num_groups, replace=False))]
  return points


def group_config(config, point: dict, index: int):
  group = config.copy_and_resolve_references()
  for key, value in point.items():
    config_utils.set_dotted(group, key, value)
  group.seed = int(config.seed) + index * int(config.population)
  group.progress_bar = False
  return group


def run_sweep(config, workdir: str, grid: dict[str, list], num_groups: int = 0, corpus=None) -> dict:
  """Trains every group's population (resuming finished ones); returns and writes the sweep's results."""
  from dtr import train
  from dtr.data import load_corpus
  from dtr.evaluate import evaluators
  if int(config.get('population', 0)) < 1:
    raise ValueError('A sweep trains one population per group: set population=P >= 1 in the config '
                     '(e.g. --config=configs/ammi.py:dataset=ng20,bits=64,population=12).')
  points = grid_points(grid, num_groups, int(config.seed))
  corpus = corpus or load_corpus(config.data)
  os.makedirs(workdir, exist_ok=True)
  t_start, groups = time.time(), []
  for index, point in enumerate(points):
    group_dir = os.path.join(workdir, f'group{index:03d}')
    results_path = os.path.join(group_dir, 'results.json')
    if os.path.exists(results_path):
      with open(results_path) as f:
        results = json.load(f)
    else:
      print(f'group {index + 1}/{len(points)}: {point}', flush=True)
      results = train.train_and_evaluate(group_config(config, point, index), group_dir, corpus=corpus)
    groups.append({'group': index, 'choices': point, 'results': results})
  metric, mode = evaluators.parse_select(config.select, None)
  summary = summarize(groups, metric, mode)
  summary['seconds'] = time.time() - t_start
  with open(os.path.join(workdir, 'sweep_results.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, 'sweep.md'), 'w') as f:
    f.write(table(summary) + '\n')
  return summary


def summarize(groups: list[dict], metric: str, mode: str = 'max') -> dict:
  """The best setting over all groups by the validation `metric` (config.select's: the highest for 'max',
  the lowest for 'min', such as a perplexity), and each group's best."""
  rows = []
  valid, test = f'valid/{metric}', f'test/{metric}'
  for g in groups:
    res = g['results']
    rows.append({'group': g['group'], 'choices': g['choices'], 'members': res['population'],
                 'seconds': res['population_seconds'], valid: res[valid], test: res[test],
                 'best_hparams': res['best_hparams']})
  winner = (min if mode == 'min' else max)(rows, key=lambda r: r[valid])
  return {'metric': metric, 'groups': rows, 'best_group': winner['group'], 'best_choices': winner['choices'],
          'best_hparams': winner['best_hparams'], valid: winner[valid], test: winner[test],
          'members': sum(r['members'] for r in rows)}


def _percent(metric: str, value: float) -> str:
  return f'{100 * value:.2f}' if metric.startswith(('precision@', 'matching@')) else f'{value:.2f}'


def table(summary: dict) -> str:
  m = summary['metric']
  lines = [f'| group | choices | members | best valid {m} | its test {m} | seconds |', '|---|---|---|---|---|---|']
  for r in summary['groups']:
    mark = ' **best**' if r['group'] == summary['best_group'] else ''
    choices = ', '.join(f'{key}={value}' for key, value in r['choices'].items())
    lines.append(f'| {r["group"]}{mark} | {choices} | {r["members"]} | {_percent(m, r[f"valid/{m}"])} | '
                 f'{_percent(m, r[f"test/{m}"])} | {r["seconds"]:.0f} |')
  return '\n'.join(lines)


def _cast(current, text: str):
  if isinstance(current, bool):
    if text.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'Expected a boolean (true/false), got {text!r}.')
    return text.lower() in ('true', '1')
  return type(current)(text) if current is not None else text


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  cli.apply_search_specs(config, _SEARCH)
  summary = run_sweep(config, _WORKDIR.value, parse_grid(_GRID.value, config), _GROUPS.value)
  m = summary['metric']
  print(table(summary))
  print(f'best: group {summary["best_group"]} {summary["best_choices"]}, settings {summary["best_hparams"]}: '
        f'valid {m} {_percent(m, summary[f"valid/{m}"])}, test {m} {_percent(m, summary[f"test/{m}"])}; '
        f'{summary["members"]} runs in {summary["seconds"]:.0f}s', flush=True)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  sys.argv, _specs = cli.take_search_specs(sys.argv)  # before absl: config_flags reads sys.argv
  _SEARCH.update(_specs)
  cli.run(main)  # user errors (a bad config field, missing data) as one message, exit 2
