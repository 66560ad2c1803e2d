r"""Sentence autoencoders: the language-modelling table, the sparse-code probe table, and training speed.

  # Table 1 of Baynazarov & Piontkovskaya (2019): LM, binary AE, bottleneck, Gaussian VAE, Gumbel AE/VAE,
  # binary VAE, with and without word dropout; test PPL sampled / mean / greedy, NLL, KL over seeds
  python -m dtr.bench sentences lm --dataset=yahoo_lm --seeds=3 --cache_dir=/tmp/sent \
      --out=docs/results/sentences.md
  # Table 3 of Prokhorov et al. (2021): HSVAE at several Beta priors (alpha, beta), MAT-VAE, VAE, VAE+L1,
  # VAE+L2 at d = 32 and 768, each probed by a 2 x 32 LeakyReLU MLP on the mean of 5 sampled codes, and a
  # supervised CBOW classifier; accuracy and Average Hoyer (standardised, as results.json; and raw)
  python -m dtr.bench sentences sparse --dataset=dbpedia14 --dims=32,768 --cache_dir=/tmp/sent \
      --out=docs/results/sentences.md
  # training tokens/s of dtr's binary autoencoder against a PyTorch nn.GRU one of the same size (needs torch)
  python -m dtr.bench sentences speed --steps=50

Every cell is one `train.train_and_evaluate` on configs/sentence_ae.py (pretraining) or configs/classify.py
(probes, CBOW) with the study's sizes (`--size`: 'small', the reduced sizes docs/results/sentences.md was
measured with, or 'paper', the configs' own defaults) and `--set key=value` overrides on top. With
`--cache_dir` a cell runs in `cache_dir/<table>/<dataset>/<size>/.../<row>-<digest>/seed<n>` (the digest of
its config without the seed, `cell_dir`) and a finished cell (its results.json) is read back, so an
interrupted table resumes and changed settings train new cells; cells run seed by seed (every row's seed 0
first). `--out`
replaces the table's own block (between `<!-- BEGIN name -->` and `<!-- END name -->`) in the markdown file,
leaving the rest of the file as it is. `--tiny` runs the synthetic test configurations (a smoke run).
`--buckets=W` pretrains on length-bucketed chunks (`data.length_buckets`; a config field, so new cells).
`--config_args=a=x,b=y` appends configs/sentence_ae.py arguments to every pretraining cell's (e.g.
`kl_target=10,z_kl=joint`: fields that exist only when given, which `--set` cannot reach).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

from dtr import config_utils

# row -> (configs/sentence_ae.py method, word dropout or None for the config's own, label in the table)
LM_ROWS = {
    'lm': ('lm', None, 'LM'),
    'binary_ae': ('binary_ae', 0.0, 'binary AE'),
    'binary_ae_wd': ('binary_ae', 0.5, 'binary AE (WD)'),
    'bottleneck': ('bottleneck', 0.0, 'bottleneck AE'),
    'gaussian_vae': ('gaussian_vae', 0.0, 'Gaussian VAE'),
    'gaussian_vae_wd': ('gaussian_vae', 0.5, 'Gaussian VAE (WD)'),
    'gumbel_ae': ('gumbel_ae', 0.0, 'Gumbel AE'),
    'gumbel_vae': ('gumbel_vae', 0.0, 'Gumbel VAE'),
    'binary_vae': ('binary_vae', 0.0, 'binary VAE'),
    'binary_vae_wd': ('binary_vae', 0.5, 'binary VAE (WD)'),
}
# The study's reduced sizes (docs/results/sentences.md says why): data fields, model fields, loop fields.
SMALL = {
    'yahoo_lm': ({'max_len': 15, 'token_vocab_size': 3000}, {'embed_size': 64, 'hidden_size': 128},
                 {'num_epochs': 5, 'patience': 2}),
    'dbpedia14': ({'max_len': 15, 'token_vocab_size': 5000}, {'embed_size': 64, 'hidden_size': 128},
                  {'num_epochs': 5, 'patience': 2}),
}
KL_ANNEAL_EPOCHS = 2  # 'small': the KL weight reaches 1 after this many epochs (the paper: 1e6 sentences)
SPARSE_BASELINES = {'mat_vae': ('mat_vae', '', 'MAT-VAE'), 'vae': ('gauss_vae', '', 'VAE'),
                    'vae_l1': ('gauss_vae', 'l1=0.1', 'VAE + L1 (0.1)'),
                    'vae_l2': ('gauss_vae', 'l2=0.1', 'VAE + L2 (0.1)'),
                    # the VAE with HSVAE's default weight on z's KL (psi = 0.5; the plain VAE's is 1)
                    'vae_kl0.5': ('gauss_vae', 'kl_weight=0.5', 'VAE (KL weight 0.5)')}
# The paper's probe: a 2 x 32 LeakyReLU MLP on the mean of 5 sampled codes (kind=samples); kind=features
# probes the mean representation instead (HSVAE (1 - E[gamma]) mu, VAEs mu). Its workdir is probe_<kind>.
PROBE = 'labels=all,hidden=32-32,activation=leaky_relu,samples=5'


# ------------------------------------------------------------------------------------------------ cells
def _set(config, dotted, value):
  current = config_utils.get_dotted(config, dotted)
  if not isinstance(current, str):
    value = type(current)(json.loads(value)) if current is not None else json.loads(value)
  config_utils.set_dotted(config, dotted, value)


def apply_size(config, dataset: str, size: str, num_train: int | None = None) -> None:
  """The study's sizes for `dataset` ('small'), or nothing ('paper': the config's own)."""
  if size == 'paper':
    return
  if size != 'small':
    raise ValueError(f"--size must be 'small' or 'paper', got {size!r}")
  if dataset not in SMALL:
    raise ValueError(f"--size=small has sizes for {sorted(SMALL)}; use --size=paper for {dataset!r}")
  data, model, loop = SMALL[dataset]
  config.data.update(data)
  for key, value in model.items():
    if key in config.model:
      config.model[key] = value
  config.update(loop)
  if 'kl_anneal_sentences' in config.model and num_train:
    config.model.kl_anneal_sentences = KL_ANNEAL_EPOCHS * num_train


def sentence_config(method: str, dataset: str, seed: int, size: str, sets=(), extra: str = '',
                    tiny: bool = False, num_train: int | None = None, buckets: int = 0, config_args: str = ''):
  """configs/sentence_ae.py:method=...,dataset=...[,extra][,config_args] with the study's sizes, seed and
  overrides; `buckets` > 0 sets data.length_buckets (absent otherwise, so earlier cells keep their digests)."""
  data_arg = 'tiny' if tiny else f'dataset={dataset}'  # tiny: the synthetic corpus, whatever the dataset
  arg = ','.join(filter(None, [f'method={method}', extra, config_args, data_arg]))
  config = config_utils.load_config_module('sentence_ae').get_config(arg)
  if not tiny:
    apply_size(config, dataset, size, num_train)
  config.seed = int(config.seed) + seed
  config.progress_bar = config.tensorboard = False
  if buckets:
    config.data.length_buckets = int(buckets)
  for item in sets:
    _set(config, *item.split('=', 1))
  return config


def run_cell(config, workdir: str | None, corpus=None, log=print, label='') -> dict:
  """results.json of a cell: read back when `workdir` holds a finished run, else trained there."""
  from dtr import train  # pylint: disable=g-import-not-at-top
  if workdir and os.path.exists(os.path.join(workdir, 'results.json')):
    with open(os.path.join(workdir, 'results.json')) as f:
      return json.load(f)
  t0 = time.time()
  if workdir:
    results = train.train_and_evaluate(config, workdir, corpus=corpus)
    shutil.rmtree(os.path.join(workdir, 'checkpoints'), ignore_errors=True)  # best_params/ is what is kept
  else:
    with tempfile.TemporaryDirectory() as tmp:
      results = train.train_and_evaluate(config, tmp, corpus=corpus)
  log(f'{label}: done in {time.time() - t0:.0f}s (best epoch {results.get("best_epoch")})')
  return results


class Corpora:
  """Corpora loaded once per data config (the cells of a table share them)."""

  def __init__(self, tiny: bool):
    self.tiny, self._cache = tiny, {}

  def __call__(self, config):
    from dtr.data import load_corpus  # pylint: disable=g-import-not-at-top
    key = json.dumps(config.data.to_dict(), sort_keys=True, default=str)
    if key not in self._cache:
      corpus = load_corpus(config.data)
      if corpus.synthetic and not self.tiny:
        raise SystemExit(f'{config.data.name}: no real data found (set DTR_DATA_DIR); refusing to tabulate '
                         'synthetic data.')
      self._cache[key] = corpus
    return self._cache[key]


def _workdir(cache_dir, *parts):
  return os.path.join(cache_dir, *parts) if cache_dir else None


def cell_dir(parent: str | None, name: str, config, seed_folder: str = '') -> str | None:
  """The folder of a cell: <parent>/<name>-<digest>[/<seed_folder>], the digest that of the config without
  its seed, so that changed settings (--set, --probe_set, sizes) never read a cell trained with others. A
  folder without the digest (a cell of an earlier version) is used when the run it holds had this config."""
  if not parent:
    return None
  tail = [seed_folder] if seed_folder else []
  legacy = os.path.join(parent, name, *tail)
  try:
    with open(os.path.join(legacy, 'config.json')) as f:
      if json.load(f) == json.loads(config.to_json_best_effort()):
        return legacy
  except (OSError, ValueError):
    pass
  return os.path.join(parent, f'{name}-{config_utils.settings_digest(config)}', *tail)


# ------------------------------------------------------------------------------------------------ stats
def mean_std(values) -> tuple[float, float, int]:
  values = [float(v) for v in values if v is not None]
  if not values:
    return float('nan'), float('nan'), 0
  return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)


def fmt(values, digits: int = 1, runs: int | None = None) -> str:
  """'mean ± std' (or the single value, '(1 run)' when fewer runs than asked), '-' for none."""
  mean, std, n = mean_std(values)
  if not n:
    return '-'
  value = f'{mean:.{digits}e}' if abs(mean) >= 1e5 else f'{mean:.{digits}f}'
  if n > 1:
    spread = f'{std:.{digits}e}' if abs(std) >= 1e5 else f'{std:.{digits}f}'
    value += f' ± {spread}'
  if runs is not None and n < runs:
    value += f' ({n} run{"s" if n > 1 else ""})'
  return value


def write_block(path: str, name: str, command: str, text: str) -> None:
  """Replaces the block `name` of the markdown file `path` (appends it, or creates the file)."""
  begin, end = f'<!-- BEGIN {name} -->', f'<!-- END {name} -->'
  block = f'{begin}\nCommand: `{command}`\n\n{text}\n{end}'
  old = open(path).read() if os.path.exists(path) else '# Sentence autoencoders with binary and sparse codes\n'
  if begin in old and end in old:
    head, rest = old.split(begin, 1)
    new = head + block + rest.split(end, 1)[1]
  else:
    new = old.rstrip('\n') + '\n\n' + block + '\n'
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    f.write(new)


def _command(argv) -> str:
  return 'python -m dtr.bench sentences ' + ' '.join(argv)


# ------------------------------------------------------------------------------------------------ LM table
LM_COLUMNS = (('perplexity', 'PPL sampled'), ('perplexity_mean', 'PPL mean'), ('perplexity_greedy', 'PPL greedy'),
              ('perplexity_per_sentence', 'PPL sampled, per sentence'), ('nll', 'NLL'), ('kl', 'KL'))


def lm_table(dataset: str, rows, seeds: int, cache_dir: str = '', size: str = 'small', sets=(), tiny=False,
             seeds_per_row=None, log=print, buckets: int = 0, config_args: str = '') -> tuple[str, dict]:
  """(markdown table, {row: [results.json per seed]}) of the language-modelling table."""
  seeds_per_row = seeds_per_row or {}
  corpora = Corpora(tiny)
  cells = {row: [] for row in rows}
  for seed in range(seeds):
    for row in rows:
      if seed >= seeds_per_row.get(row, seeds):
        continue
      method, word_dropout, label = LM_ROWS[row]
      extra = f'word_dropout={word_dropout}' if word_dropout is not None else ''
      config = sentence_config(method, dataset, seed, size, sets, extra, tiny, buckets=buckets,
                               config_args=config_args)
      corpus = corpora(config)
      if 'kl_anneal_sentences' in config.model and not tiny and size == 'small':
        config.model.kl_anneal_sentences = KL_ANNEAL_EPOCHS * corpus.splits['train'].num_docs
      workdir = cell_dir(_workdir(cache_dir, 'lm', 'tiny' if tiny else dataset, size), row, config,
                         f'seed{seed}')
      results = run_cell(config, workdir, corpus, log, f'{dataset} {label} seed {seed}')
      cells[row].append(results)
      log(f'{dataset} {label} seed {seed}: test ' + ', '.join(
          f'{name} {results.get("test/" + key, float("nan")):.2f}' for key, name in LM_COLUMNS
          if f'test/{key}' in results))
  header = '| model | ' + ' | '.join(name for _, name in LM_COLUMNS) + ' | seeds |'
  lines = [header, '|' + '---|' * (len(LM_COLUMNS) + 2)]
  for row in rows:
    runs = cells[row]
    values = [fmt([r.get(f'test/{key}') for r in runs], 2 if key == 'kl' else 1) for key, _ in LM_COLUMNS]
    lines.append(f'| {LM_ROWS[row][2]} | ' + ' | '.join(values) + f' | {len(runs)} |')
  return '\n'.join(lines), cells


# ------------------------------------------------------------------------------------------------ sparse table
def hsvae_rows(settings: str) -> dict:
  rows = {}
  for item in filter(None, settings.split(',')):
    alpha, beta = item.split(':')
    label = f'HSVAE (alpha={alpha}, beta={beta})'
    rows[f'hsvae_a{alpha}_b{beta}'] = ('hsvae', f'alpha={alpha},beta={beta}', label)
  return rows


def probe_config(workdir: str, seeds: int, tiny: bool, sets=(), kind: str = 'samples', normalize: str = ''):
  arg = (f'features={workdir},{PROBE},kind={kind},seeds={seeds}' + (f',normalize={normalize}' if normalize else '')
         + (',tiny' if tiny else ''))
  config = config_utils.load_config_module('classify').get_config(arg)
  config.progress_bar = config.tensorboard = False
  for item in sets:
    _set(config, *item.split('=', 1))
  return config


def cbow_config(dataset: str, seeds: int, size: str, tiny: bool):
  config = config_utils.load_config_module('classify').get_config(
      f'method=cbow,labels=all,seeds={seeds},' + ('tiny' if tiny else f'dataset={dataset}'))
  if not tiny and size == 'small':
    config.data.update(SMALL[dataset][0])
  config.progress_bar = config.tensorboard = False
  return config


def sparse_table(dataset: str, dims, settings: str, baselines, seeds: int, probe_seeds: int, cache_dir='',
                 size='small', sets=(), probe_sets=(), tiny=False, dims_rows=None, log=print,
                 probe_kind: str = 'samples', probe_normalize: str = '', buckets: int = 0,
                 config_args: str = '') -> tuple[str, dict]:
  """(markdown table, {(d, row): [cells]}) of the probe table; a cell is {'pretrain', 'probe', 'hoyer'}.
  `probe_normalize` is configs/classify.py's normalize ('example', or 'feature': per-dimension z-scores over
  the training split)."""
  from dtr.evaluate.analysis import bits  # pylint: disable=g-import-not-at-top
  rows = {**hsvae_rows(settings), **{b: SPARSE_BASELINES[b] for b in baselines}}
  corpora = Corpora(tiny)
  cells = {}
  for seed in range(seeds):
    for d in dims:
      for row, (method, extra, label) in rows.items():
        if dims_rows and d in dims_rows and row not in dims_rows[d]:
          continue
        config = sentence_config(method, dataset, seed, size, sets, ','.join(filter(None, [extra, f'latent={d}'])),
                                 tiny, buckets=buckets, config_args=config_args)
        base = cell_dir(_workdir(cache_dir, 'sparse', 'tiny' if tiny else dataset, size, f'd{d}'), row, config,
                        f'seed{seed}')
        tmp = None
        if base is None:
          tmp = tempfile.mkdtemp(prefix='dtr_sparse_')
          base = tmp
        pretrain = run_cell(config, base, corpora(config), log, f'{dataset} d={d} {label} seed {seed}')
        hoyer = bits.hoyer_report(base)
        probe_cfg = probe_config(base, probe_seeds, tiny, probe_sets, probe_kind, probe_normalize)
        probe = run_cell(probe_cfg, cell_dir(base, f'probe_{probe_kind}', probe_cfg), None, log,
                         f'{dataset} d={d} {label} seed {seed} probe')
        if tmp:
          shutil.rmtree(tmp, ignore_errors=True)
        cells.setdefault((d, row), []).append({'pretrain': pretrain, 'probe': probe, 'hoyer': hoyer})
        log(f'{dataset} d={d} {label} seed {seed}: probe accuracy {probe["test/accuracy"]:.2f}, Hoyer '
            f'sample {hoyer["hoyer_sample"]:.3f} / mean {hoyer["hoyer_mean"]:.3f} (standardised), '
            f'{hoyer["hoyer_sample_raw"]:.3f} / {hoyer["hoyer_mean_raw"]:.3f} (raw)')
  cbow_cfg = cbow_config(dataset, probe_seeds, size, tiny)
  cbow = run_cell(cbow_cfg, cell_dir(_workdir(cache_dir, 'sparse', 'tiny' if tiny else dataset, size), 'cbow',
                                     cbow_cfg), None, log, f'{dataset} CBOW')
  probe_label = probe_kind + {'feature': ', standardised per dimension', 'example': ', standardised per example'}.get(
      probe_normalize, '')
  lines = [f'| model | d | probe accuracy (%, {probe_label}) | Hoyer sample | Hoyer mean | Hoyer sample, raw '
           '| Hoyer mean, raw | test PPL | KL | runs |', '|---|---|---|---|---|---|---|---|---|---|']
  for d in dims:
    for row, (_, _, label) in rows.items():
      runs = cells.get((d, row), [])
      if not runs:
        continue
      accuracy = [c['probe']['test/accuracy'] for c in runs]
      if len(runs) == 1:  # one pretraining seed: the spread over the probe's own seeds
        shown = f'{accuracy[0]:.2f} ± {runs[0]["probe"].get("test/accuracy_std", 0.0):.2f} (probe seeds)'
      else:
        shown = fmt(accuracy, 2)
      lines.append(f'| {label} | {d} | {shown} | ' + ' | '.join(
          fmt([c['hoyer'][k] for c in runs], 3) for k in ('hoyer_sample', 'hoyer_mean', 'hoyer_sample_raw',
                                                          'hoyer_mean_raw'))
          + f' | {fmt([c["pretrain"]["test/perplexity"] for c in runs], 1)} | '
          f'{fmt([c["pretrain"]["test/kl"] for c in runs], 1)} | {len(runs)} |')
  lines.append(f'| CBOW (supervised, all labels) | - | {cbow["test/accuracy"]:.2f} ± '
               f'{cbow.get("test/accuracy_std", 0.0):.2f} (seeds) | - | - | - | - | - | - | 1 |')
  cells['cbow'] = cbow
  return '\n'.join(lines), cells


# ------------------------------------------------------------------------------------------------ main
def _pairs(text: str) -> dict:
  return {k: int(v) for k, v in (item.split('=') for item in filter(None, text.split(',')))}


def main(argv=None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(prog='python -m dtr.bench sentences', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest='cmd', required=True)
  lp = sub.add_parser('lm', help='the language-modelling table (Baynazarov & Piontkovskaya 2019, Table 1)')
  lp.add_argument('--dataset', default='yahoo_lm')
  lp.add_argument('--rows', default=','.join(LM_ROWS), help=f'of {",".join(LM_ROWS)}')
  lp.add_argument('--seeds', type=int, default=3)
  lp.add_argument('--seeds_per_row', default='', help='fewer seeds for some rows, e.g. bottleneck=1')
  sp = sub.add_parser('sparse', help='the sparse-code probe table (Prokhorov et al. 2021, Table 3)')
  sp.add_argument('--dataset', default='dbpedia14')
  sp.add_argument('--dims', default='32,768')
  sp.add_argument('--settings', default='10:30,20:20,30:10,36:4', help="HSVAE Beta priors 'alpha:beta,...'")
  sp.add_argument('--baselines', default=','.join(SPARSE_BASELINES), help=f'of {",".join(SPARSE_BASELINES)}')
  sp.add_argument('--dims_rows', default='', help="rows run at some d only, e.g. '768=hsvae_a30_b10+vae'")
  sp.add_argument('--seeds', type=int, default=1, help='pretraining seeds')
  sp.add_argument('--probe_seeds', type=int, default=3, help='probe (and CBOW) seeds, members of one run')
  sp.add_argument('--probe_kind', default='samples', choices=('samples', 'features'),
                  help='the mean of 5 sampled codes (the paper) or the mean representation')
  sp.add_argument('--probe_normalize', default='', choices=('', 'example', 'feature'),
                  help="the probe's input: as it is (''), each example standardised, or each dimension "
                  'standardised over the training split (feature)')
  sp.add_argument('--probe_set', action='append', default=[], help='probe config override key=value, e.g. '
                  'model.normalize=example')
  for p in (lp, sp):
    p.add_argument('--size', default='small', help="'small' (the study's sizes) or 'paper' (the configs')")
    p.add_argument('--set', action='append', default=[], help='pretraining config override key=value (JSON)')
    p.add_argument('--config_args', default='', help='configs/sentence_ae.py arguments for every pretraining '
                   "cell, e.g. 'kl_target=10,z_kl=joint'")
    p.add_argument('--cache_dir', default='', help='cell workdirs; finished cells are read back (resumable)')
    p.add_argument('--out', default='', help='markdown file whose table block is replaced')
    p.add_argument('--tiny', action='store_true', help='synthetic test configurations (a smoke run)')
    p.add_argument('--buckets', type=int, default=0, help='pretraining data.length_buckets: sentences sorted by '
                   'length within windows of this many chunks (0: random chunks)')
  tp = sub.add_parser('speed', help='training tokens/s: dtr against a PyTorch nn.GRU autoencoder (needs torch)')
  from dtr.benches import sentences_speed as sentence_speed  # pylint: disable=g-import-not-at-top
  sentence_speed.add_arguments(tp)
  args = parser.parse_args(argv)
  log = lambda line: print(line, flush=True)
  if args.cmd == 'speed':
    sentence_speed.run(args)
    return
  if args.cmd == 'lm':
    rows = [r for r in args.rows.split(',') if r]
    unknown = sorted(set(rows) - set(LM_ROWS))
    if unknown:
      parser.error(f'unknown rows {unknown}; known: {", ".join(LM_ROWS)}')
    text, _ = lm_table(args.dataset, rows, args.seeds, args.cache_dir, args.size, args.set, args.tiny,
                       _pairs(args.seeds_per_row), log, args.buckets, args.config_args)
  else:
    dims = [int(d) for d in args.dims.split(',')]
    baselines = [b for b in args.baselines.split(',') if b]
    unknown = sorted(set(baselines) - set(SPARSE_BASELINES))
    if unknown:
      parser.error(f'unknown baselines {unknown}; known: {", ".join(SPARSE_BASELINES)}')
    dims_rows = {int(k): set(v.split('+')) for k, v in (item.split('=') for item in
                                                         filter(None, args.dims_rows.split(',')))}
    text, _ = sparse_table(args.dataset, dims, args.settings, baselines, args.seeds, args.probe_seeds,
                           args.cache_dir, args.size, args.set, args.probe_set, args.tiny, dims_rows, log,
                           args.probe_kind, args.probe_normalize, args.buckets, args.config_args)
  print(text)
  if args.out:
    write_block(args.out, f'{args.cmd} {args.dataset}', _command(argv), text)


if __name__ == '__main__':
  main()
