r"""The document-hashing leaderboard: every (method, dataset, bits, seed) cell trained, one markdown table.

  python -m dtr.bench hashing --datasets=ng20,reuters --bits=16,32,64,128 --seeds=3 \
      --methods=lsh,bow,spectral,nash,bmsh,dvq,binary_ae,ammi --cache_dir=/tmp/lb --out=docs/results/hashing.md

A cell is `train.train_and_evaluate` on configs/hashing.py:method=M,dataset=D,bits=B (ammi: the tuned cell
configs/ammi.py:dataset=D,bits=B; ammi_dtr: the same with settings=dtr) with seed s (AMMI: its tuned seed
+ s). With `cache_dir`, a cell runs in `cache_dir/D/M/B/seed{s}` and a finished cell's results.json is
reused, so an interrupted leaderboard resumes where it stopped (an unfinished cell resumes from its own
checkpoint). BOW has one code length, the vocabulary size, and BOW and PCA are deterministic: each runs
once per dataset (and PCA once per length).
The table reports test precision@100 (mean ± std over seeds, in %) as in Table 1 of Stratos & Wiseman
(2020), with each dataset's average over the code lengths, and a second table the number of distinct codes
of the training documents. `seeds_per_method` (e.g. {'nash': 1}) caps the seeds of slow methods; a cell
with fewer runs than `seeds` says how many it has.
"""

import json
import os
import statistics
import tempfile
import time

from dtr import config_utils

DETERMINISTIC = ('bow', 'spectral')
# AMMI rows: the reference's tuned settings, and dtr's re-tuned ones (configs/ammi.py RETUNED).
AMMI_ROWS = {'ammi': 'published', 'ammi_dtr': 'dtr'}


def cell_config(method: str, dataset: str, bits: int, seed_index: int, tiny: bool = False):
  """The config of one leaderboard cell (tiny: the synthetic test configuration instead of `dataset`)."""
  if method in AMMI_ROWS:
    settings = AMMI_ROWS[method]
    arg = 'tiny' if tiny else f'dataset={dataset},bits={bits},settings={settings}'
    config = config_utils.load_config_module('ammi').get_config(arg)
    config.model.bits = bits
  else:
    arg = f'method={method},bits={bits},' + ('tiny' if tiny else f'dataset={dataset}')
    config = config_utils.load_config_module('hashing').get_config(arg)
    config.seed = 0
  config.seed += seed_index
  config.progress_bar = config.tensorboard = False
  return config


def cell_workdir(cache_dir: str, method: str, dataset: str, bits: int, seed_index: int) -> str:
  return os.path.join(cache_dir, dataset, method, 'vocab' if method == 'bow' else str(bits), f'seed{seed_index}')


def run_cell(method, dataset, bits, seed_index, cache_dir, corpus_cache, tiny=False, log=print) -> dict:
  """results.json of one cell: read from `cache_dir` when finished there, else trained (and written)."""
  from dtr import train
  from dtr.data import load_corpus
  if cache_dir:
    workdir = cell_workdir(cache_dir, method, dataset, bits, seed_index)
    results_path = os.path.join(workdir, 'results.json')
    if os.path.exists(results_path):
      with open(results_path) as f:
        return json.load(f)
  config = cell_config(method, dataset, bits, seed_index, tiny)
  if dataset not in corpus_cache:
    corpus_cache[dataset] = load_corpus(config.data)
    if corpus_cache[dataset].synthetic and not tiny:
      raise SystemExit(f'{dataset}: no real data found (set DTR_DATA_DIR); refusing to rank synthetic data.')
  t0 = time.time()
  if cache_dir:
    results = train.train_and_evaluate(config, workdir, corpus=corpus_cache[dataset])
  else:
    with tempfile.TemporaryDirectory() as workdir:
      results = train.train_and_evaluate(config, workdir, corpus=corpus_cache[dataset])
  log(f'{dataset} {method} {results["bits"]} bits seed {config.seed}: test P@100 {_precision(results):.2f} '
      f'({results["distinct_train_codes"]} distinct codes, {time.time() - t0:.0f}s)')
  return results


def _precision(results: dict) -> float:
  """Test precision@k (%) of a cell's results.json (`test/precision@k`; older workdirs: `test_precision@k`)."""
  key = next(k for k in results if k.startswith(('test/precision@', 'test_precision@')))
  return 100 * results[key]


def run(methods, datasets, bits_list, seeds, cache_dir='', tiny=False, log=print, seeds_per_method=None) -> dict:
  """{(method, dataset, bits): [results per seed]} for every cell (BOW under bits_list[0] only)."""
  corpus_cache, cells = {}, {}
  seeds_per_method = seeds_per_method or {}
  for dataset in datasets:
    for method in methods:
      for bits in (bits_list[:1] if method == 'bow' else bits_list):
        runs = 1 if method in DETERMINISTIC else min(seeds, seeds_per_method.get(method, seeds))
        cells[(method, dataset, bits)] = [run_cell(method, dataset, bits, s, cache_dir, corpus_cache, tiny, log)
                                          for s in range(runs)]
  return cells


def _mean_std(values) -> str:
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return f'{statistics.mean(values):.2f} ± {std:.2f}'


def average_over_bits(cells: dict, method: str, dataset: str, bits_list) -> float | None:
  """Mean over code lengths of the per-length mean precision (None when a length is missing)."""
  means = []
  for bits in bits_list:
    runs = cells.get((method, dataset, bits))
    if not runs:
      return None
    means.append(statistics.mean(_precision(r) for r in runs))
  return statistics.mean(means)


def table(cells: dict, methods, datasets, bits_list, seeds: int | None = None) -> str:
  """Two markdown tables: test precision@100 (mean ± std, %, and the average over code lengths per
  dataset) and distinct training codes (mean). Cells with fewer runs than `seeds` show their count."""
  heads = [f'{d} {b}' for d in datasets for b in bits_list]
  header = '| method | ' + ' | '.join(heads + [f'{d} avg' for d in datasets]) + ' |'
  rule = '|---|' + '---|' * (len(heads) + len(datasets))
  codes_header = '| method | ' + ' | '.join(heads) + ' |'
  codes_rule = '|---|' + '---|' * len(heads)

  def cell_texts(method, cell_text):
    texts = []
    for dataset in datasets:
      for bits in bits_list:
        runs = cells.get((method, dataset, bits))
        texts.append(cell_text(method, runs) if runs else '')
    return texts

  def precision_text(method, runs):
    values = [_precision(r) for r in runs]
    text = _mean_std(values) if len(values) > 1 else f'{values[0]:.2f}'  # no spread to show for one run
    if method == 'bow':
      return f'{text} (m = {runs[0]["bits"]})'
    if seeds and method not in DETERMINISTIC and len(runs) < seeds:
      text += f' ({len(runs)} run{"s" if len(runs) > 1 else ""})'
    return text

  def codes_text(method, runs):
    del method
    return f'{statistics.mean(r["distinct_train_codes"] for r in runs):.0f}'

  precision_rows, codes_rows = [], []
  for method in methods:
    averages = []
    for dataset in datasets:
      avg = None if method == 'bow' else average_over_bits(cells, method, dataset, bits_list)
      averages.append('' if avg is None else f'{avg:.2f}')
    precision_rows.append(f'| {method} | ' + ' | '.join(cell_texts(method, precision_text) + averages) + ' |')
    codes_rows.append(f'| {method} | ' + ' | '.join(cell_texts(method, codes_text)) + ' |')
  return '\n'.join(['Test precision@100 (%), mean ± std over seeds, and the average over the code lengths '
                    '(BOW and PCA are deterministic: one run; BOW has one code per word of the vocabulary, '
                    'shown under the first code length):', '',
                    header, rule, *precision_rows, '',
                    'Distinct codes among the training documents (mean over seeds):', '',
                    codes_header, codes_rule, *codes_rows])


def write(path: str, command: str, text: str) -> None:
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    f.write(f'# Document hashing leaderboard\n\nCommand: `{command}`\n\n{text}\n')
