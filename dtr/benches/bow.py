r"""Bag-of-words VAEs (Krishnan, Liang & Hoffman, AISTATS 2018): the paper-style table and the speed of SVI.

  # the grid: decoder depth 0/2 x input counts/tfidf x regime none/finopt/none_finopt/finopt_none, and the
  # NVDM-style row; mean ± std over seeds; resumable (each cell is a workdir under --cache_dir)
  python -m dtr.bench bow table --dataset=20news_clean --seeds=3 --cache_dir=/tmp/bow_cells \
      --out=docs/results/bow.md
  # training documents/s of none and finopt (K = 10, 100), evaluation documents/s (K = 100), peak memory,
  # and the time and FLOP ratios of a finopt K=100 step to a none step
  python -m dtr.bench bow speed --dataset=20news_clean

A cell trains through the one loop (`dtr.train.train_and_evaluate`) with validation of the amortised
perp_0 only (the selection metric: `model.eval_svi_steps` = 0 and one importance sample while training, so
an epoch's validation costs one forward pass); the kept model is then evaluated on valid and test with the
full test-time SVI (`--eval_svi_steps` Adam steps at `--eval_svi_lr`, `--eval_is_samples` importance
samples; `dtr.evaluate.analysis.bow.refined_perplexities`) into `<workdir>/bow_eval_k<K>_lr<lr>_is<S>.json`
(one record per final setting, so a cell can be evaluated again with more test-time steps). With
`--validate_svi` every epoch's validation refines too (`--eval_svi_steps` steps) and the kept model is the
one with the best refined valid perp_f, which is what training-time SVI improves. A cell with that
file is read back, not retrained; a cell whose training stopped part-way resumes from its checkpoint
(`--read_only`: a table of the finished cells, nothing trained). The cell's folder name holds a digest of
its config, so changed settings never read stale cells; the SVI settings (--svi_steps, --svi_lr,
--switch_epoch) reach only the rows that refine in training, --set only the grid rows and --nvdm_set only
the NVDM row.

The table is written between two marker lines of --out; text around them is kept, so the study's notes
can live in the same file. The spectra plot (--spectra_out, default next to --out) shows the expected
decoder Jacobian's log singular values of the deepest decoder's rows (seed 0).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time

import numpy as np

from dtr import config_utils
from dtr.benches import flops as flops_lib

REGIMES = ('none', 'finopt', 'none_finopt', 'finopt_none')
BEGIN, END = '<!-- bow table: begin (written by python -m dtr.bench bow table) -->', '<!-- bow table: end -->'
COLUMNS = ('perp_0', 'perp_f', 'perp_is', 'perplexity')
EVAL_FILE = 'bow_eval.json'  # the records of earlier versions, one per cell, whatever their settings


def eval_file(settings: dict) -> str:
  """The cell's record of one final evaluation setting (several can sit in one workdir), e.g.
  bow_eval_k100_lr0.008_is100.json."""
  return (f"bow_eval_k{settings['eval_svi_steps']}_lr{settings['eval_svi_lr']:g}_"
          f"is{settings['eval_is_samples']}.json")


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of the table: a grid cell (depth, input, regime) or the NVDM-style configuration."""

  depth: int = 2
  input: str = 'tfidf'
  regime: str = 'none'
  nvdm: bool = False

  @property
  def name(self) -> str:
    return 'nvdm' if self.nvdm else f'd{self.depth}-{self.input}-{self.regime}'

  @property
  def refines(self) -> bool:
    """Whether training refines (finopt for some or all epochs)."""
    return not self.nvdm and self.regime != 'none'

  def config_arg(self, dataset: str, tiny: bool) -> str:
    arg = 'nvdm' if self.nvdm else f'regime={self.regime},decoder_layers={self.depth},input={self.input}'
    return arg + (',tiny' if tiny else f',dataset={dataset}')  # tiny: the synthetic corpus


def grid(depths, inputs, regimes, nvdm: bool) -> list[Row]:
  rows = [Row(int(d), i, r) for d in filter(None, depths) for i in filter(None, inputs)
          for r in filter(None, regimes)]
  return rows + ([Row(nvdm=True)] if nvdm else [])


def _load_config(arg: str):
  return config_utils.load_config_module('bow_vae').get_config(arg)


def _apply(config, overrides: dict) -> None:
  for dotted, value in overrides.items():
    current = config_utils.get_dotted(config, dotted)
    if isinstance(current, str):
      parsed = value
    elif isinstance(current, (tuple, list)):
      parsed = tuple(json.loads(value))
    else:
      parsed = type(current)(json.loads(value))
    config_utils.set_dotted(config, dotted, parsed)


def cell_config(row: Row, seed: int, args) -> object:
  """The config one cell trains with (validation of perp_0 only; see the module docstring)."""
  config = _load_config(row.config_arg(args.dataset, args.tiny))
  config.seed = int(config.seed) + seed
  config.progress_bar = config.tensorboard = False
  if row.nvdm:
    _apply(config, args.nvdm_overrides)
  else:
    _apply(config, args.overrides)
    if args.num_epochs:
      config.num_epochs = args.num_epochs
  # Only the rows that refine in training take the SVI settings (a 'none' row's config, and so its cell,
  # is the same whatever they are).
  if row.refines:
    if args.svi_steps >= 0:
      config.model.svi_steps = args.svi_steps
    if args.svi_lr > 0:
      config.model.svi_lr = args.svi_lr
    if args.switch_epoch >= 0:
      config.model.switch_epoch = args.switch_epoch
  if args.validate_svi:  # select on what refinement improves: the refined validation perplexity
    config.select = ('valid/perp_f', 'min')
  else:
    config.model.update(eval_svi_steps=0, eval_is_samples=1)
  return config


def cell_dir(cache_dir: str, row: Row, config) -> str:
  """<cache_dir>/<row>-<digest of the config without its seed>/seed<seed>."""
  return os.path.join(cache_dir, f'{row.name}-{config_utils.settings_digest(config)}', f'seed{config.seed}')


def final_settings(args) -> dict:
  return dict(eval_svi_steps=args.eval_svi_steps, eval_svi_lr=args.eval_svi_lr,
              eval_is_samples=args.eval_is_samples)


def run_cell(row: Row, seed: int, args, corpus=None, log=print) -> dict:
  """The cell's final numbers: read back from its workdir, or trained and evaluated there (None with
  --read_only when the cell is not finished)."""
  from dtr import train  # pylint: disable=g-import-not-at-top
  from dtr.evaluate.analysis import bow as analysis  # pylint: disable=g-import-not-at-top
  config = cell_config(row, seed, args)
  workdir = cell_dir(args.cache_dir, row, config)
  path = os.path.join(workdir, eval_file(final_settings(args)))
  for known in (path, os.path.join(workdir, EVAL_FILE)):
    if os.path.exists(known):
      with open(known) as f:
        record = json.load(f)
      if record.get('final_settings') == final_settings(args):
        return record
  if getattr(args, 'read_only', False):
    return None
  t0 = time.time()
  if not os.path.exists(os.path.join(workdir, 'results.json')):
    train.train_and_evaluate(config, workdir, corpus=corpus)
  t_train = time.time() - t0
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  run = analysis.load(workdir, corpus=corpus)
  t0 = time.time()
  scores = analysis.refined_perplexities(run, ('valid', 'test'), **final_settings(args))
  record = {'row': row.name, 'seed': int(config.seed), 'workdir': workdir,
            'final_settings': final_settings(args),
            'best_epoch': results['best_epoch'], 'epochs_run': results['epochs_run'],
            'synthetic': results['synthetic'], 'train_wall_s': round(t_train, 1),
            'model': {k: config.model[k] for k in ('input', 'latent_dim', 'learning_rate', 'regime',
                                                 'svi_steps', 'svi_lr', 'switch_epoch')},
            'batch_size': config.batch_size,
            'eval_wall_s': round(time.time() - t0, 1), **scores}
  with open(path, 'w') as f:
    json.dump(record, f, indent=1)
  log(f'{row.name} seed {config.seed}: ' + ', '.join(f'test {c} {scores[f"test/{c}"]:.1f}' for c in COLUMNS)
      + f' (valid perp_0 {scores["valid/perp_0"]:.1f}, best epoch {results["best_epoch"]} of '
      f'{results["epochs_run"]}, {t_train:.0f}s train, {record["eval_wall_s"]:.0f}s final evaluation)')
  return record


def _mean_std(values) -> str:
  std = statistics.stdev(values) if len(values) > 1 else 0.0
  return f'{statistics.mean(values):.1f} ± {std:.1f}'


def table(rows: list[Row], records: dict, seeds) -> str:
  """The markdown table: test perplexities mean ± std over seeds, and the per-row facts."""
  head = ('| decoder | q input | regime | test perp_0 | test perp_f | test perp_is | test corpus perp. '
          '| valid perp_0 | valid perp_f | perp_f < perp_0 | best / run epochs | seeds |')
  lines = [head, '|' + '---|' * 12]
  for row in rows:
    cells = records.get(row.name, [])
    if not cells:
      continue
    vals = {c: [r[f'test/{c}'] for r in cells] for c in COLUMNS}
    lower = sum(f < z for f, z in zip(vals['perp_f'], vals['perp_0']))
    model = cells[0].get('model', {})
    label = (f'NVDM-style: linear, d = {model.get("latent_dim", "?")}', model.get('input', '?'), 'none'
             ) if row.nvdm else (f'{row.depth}-layer' if row.depth else 'linear', row.input, row.regime)
    test = ' | '.join(_mean_std(vals[c]) for c in COLUMNS)
    valid = ' | '.join(_mean_std([r[f'valid/{c}'] for r in cells]) for c in ('perp_0', 'perp_f'))
    epochs = ', '.join(f'{r["best_epoch"]}/{r["epochs_run"]}' for r in cells)
    wanted = seeds.get(row.name, 0) if isinstance(seeds, dict) else seeds
    count = f'{len(cells)}{f" of {wanted}" if wanted and len(cells) < wanted else ""}'
    lines.append(f'| {" | ".join(label)} | {test} | {valid} | {lower}/{len(cells)} | {epochs} | {count} |')
  return '\n'.join(lines)


def spectra_rows(rows: list[Row]) -> list[Row]:
  """The rows whose spectra are plotted: every regime of the deepest decoder, one input (tfidf if run)."""
  grid_rows = [r for r in rows if not r.nvdm]
  if not grid_rows:
    return []
  depth = max(r.depth for r in grid_rows)
  inputs = [r.input for r in grid_rows if r.depth == depth]
  chosen = 'tfidf' if 'tfidf' in inputs else inputs[0]
  return [r for r in grid_rows if r.depth == depth and r.input == chosen]


def spectra(rows: list[Row], records: dict, path: str, samples: int, corpus=None) -> list[str]:
  """Plots the spectra of `spectra_rows` (seed 0 of each) over the prior and the aggregate posterior;
  returns markdown lines that count the large singular values."""
  from dtr.evaluate.analysis import bow as analysis  # pylint: disable=g-import-not-at-top
  chosen = [r for r in spectra_rows(rows) if records.get(r.name)]
  if not chosen:
    return []
  curves, lines = {}, []
  for row in chosen:
    run = analysis.load(records[row.name][0]['workdir'], corpus=corpus)
    counts = []
    for source in analysis.SOURCES:
      log_sv = analysis.spectrum(analysis.expected_jacobian(run, source, samples))
      curves[f'{row.regime} ({source})'] = log_sv
      counts.append(f'{analysis.large_singular_values(log_sv)} ({source})')
    lines.append(f'| {row.depth}-layer, {row.input}, {row.regime} | {" / ".join(counts)} |')
  analysis.plot_spectra(curves, path, f'{chosen[0].depth}-layer decoder, {chosen[0].input} input: '
                        f'log singular values of E[J] ({samples} samples)')
  return ['| row (seed 0) | singular values >= 0.1 x the largest, of d |', '|---|---|'] + lines


def write(out: str, block: str) -> None:
  """Writes `block` between the marker lines of `out`, keeping whatever the file holds around them."""
  text = ''
  if os.path.exists(out):
    with open(out) as f:
      text = f.read()
  generated = f'{BEGIN}\n{block}\n{END}'
  if BEGIN in text and END in text:
    text = text[:text.index(BEGIN)] + generated + text[text.index(END) + len(END):]
  else:
    head = text.rstrip() + '\n\n' if text.strip() else '# Bag-of-words VAEs with SVI refinement\n\n'
    text = head + generated + '\n'
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, 'w') as f:
    f.write(text)


def run_table(args) -> str:
  from dtr.data import load_corpus  # pylint: disable=g-import-not-at-top
  if not args.cache_dir:
    sys.exit('python -m dtr.bench bow table needs --cache_dir (a folder for the cells\' workdirs).')
  rows = grid(args.depths.split(','), args.inputs.split(','), args.regimes.split(','), args.nvdm)
  first = cell_config(rows[0], 0, args)
  corpus = load_corpus(first.data)
  if corpus.synthetic and not args.tiny:
    sys.exit(f'{args.dataset}: no real data found (set DTR_DATA_DIR); refusing to benchmark synthetic data.')
  records = {}
  for row in rows:
    for seed in range(args.seeds_per_row.get(row.name, args.seeds)):
      if args.only_seed >= 0 and seed != args.only_seed:
        continue
      record = run_cell(row, seed, args, corpus=corpus)
      if record is not None:
        records.setdefault(row.name, []).append(record)
  text = table(rows, records, {row.name: args.seeds_per_row.get(row.name, args.seeds) for row in rows})
  print(text, flush=True)
  if args.out:
    out_dir = os.path.dirname(os.path.abspath(args.out))
    spectra_out = args.spectra_out or os.path.join(out_dir, 'bow_spectra.png')
    spectrum_lines = ([] if spectra_out == '-' else
                      spectra(rows, records, spectra_out, args.spectra_samples, corpus=corpus))
    settings = cell_config(rows[0], 0, args)
    finopt = [cell_config(r, 0, args).model for r in rows if r.refines]
    svi = f'K = {finopt[0].svi_steps} SVI steps at lr {finopt[0].svi_lr}' if finopt else 'no SVI'
    block = [f'Command: `python -m dtr.bench bow {" ".join(args.argv)}`', '',
             f'Data: {corpus.name}, ' + ' / '.join(f'{corpus.splits[s].num_docs} {s}' for s in corpus.splits)
             + f' documents, V = {len(corpus.vocab)}'
             f'{" (SYNTHETIC)" if corpus.synthetic else ""}. Test perplexities: per document, '
             'exp(mean_d -ELBO_d / N_d) (perp_0 amortised, perp_f after test-time SVI, perp_is the '
             'importance-sampled bound from the refined posterior), and the corpus-level exp(sum -ELBO / '
             'sum N_d) of the amortised posterior; mean ± std over seeds.', '',
             f'Training: at most {settings.num_epochs} epochs (NVDM row: its own config), batch '
             f'{settings.batch_size}, early stopping on valid {settings.select[0].split("/")[-1]} '
             f'(patience {settings.patience}), '
             f'{svi} per training batch (finopt), switch after '
             f'{finopt[0].switch_epoch if finopt else "-"} epochs (none_finopt / finopt_none). '
             'Final evaluation: '
             f'{args.eval_svi_steps} SVI steps at lr {args.eval_svi_lr}, {args.eval_is_samples} importance '
             'samples.', '', text]
    if spectrum_lines:
      block += ['', f'![spectra]({os.path.relpath(spectra_out, out_dir)})', '']
      block += spectrum_lines
    write(args.out, '\n'.join(block))
    print(f'Wrote {args.out}' + (f' and {spectra_out}' if spectrum_lines else ''), flush=True)
  return text


# ------------------------------------------------------------------------------------------------ speed
def _peak_memory() -> str:
  import resource  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  parts = [f'peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB']
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    parts.append(f'device peak {stats["peak_bytes_in_use"] / 2**20:,.0f} MiB')
  return ', '.join(parts)


def run_speed(args) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  from dtr import input_pipeline as ip, members, methods, train  # pylint: disable=g-import-not-at-top
  from dtr.data import load_corpus  # pylint: disable=g-import-not-at-top
  from dtr.evaluate import evaluators  # pylint: disable=g-import-not-at-top
  ks = [int(k) for k in args.ks.split(',')]
  base = _load_config('regime=none,decoder_layers=2,input=tfidf,'
                      + ('tiny' if args.tiny else f'dataset={args.dataset}'))
  batch_size = args.batch_size or base.batch_size
  corpus = load_corpus(base.data)
  if corpus.synthetic and not args.tiny:
    sys.exit(f'{args.dataset}: no real data found (set DTR_DATA_DIR); refusing to benchmark synthetic data.')
  split = corpus.splits['train']
  info = train.data_info(corpus, split.num_docs)
  mesh = ip.make_mesh()
  print(f'devices: {jax.device_count()} x {jax.devices()[0].platform} ({jax.devices()[0].device_kind}); '
        f'{corpus.name}: {split.num_docs} training documents, V = {len(corpus.vocab)}; 2-layer decoder '
        f'{tuple(base.model.decoder_hidden)}, d = {base.model.latent_dim}, batch {batch_size}', flush=True)

  def make(regime, k):
    mc = base.model.copy_and_resolve_references()
    mc.update(regime=regime, svi_steps=k)
    return methods.get_method(mc, info)

  def chunks(method, epoch):
    order = ip.epoch_order(0, epoch, split.num_docs)
    return ip.train_chunks(method.reads, split, [order], per_member=False, batch_size=batch_size,
                           start_step=0, steps_per_call=args.steps_per_call, sharded=True,
                           fields=method.batch_fields)

  sample = None
  times, flops = {}, {}
  for regime, k in [('none', 0)] + [('finopt', k) for k in ks]:
    method = make(regime, k)
    if sample is None:
      _, _, sample = next(chunks(method, 0))
      sample.pop('valid')
      sample = jax.tree.map(lambda v: v[0], sample)
    member = members.Member(seed=0, order_seed=0)
    state = members.place_state(members.init_states(method, [member], sample), mesh)
    train_chunk = members.train_chunk_fn(method, mesh, 1, True)
    for _, _, b in chunks(method, 0):  # warm-up epoch: compiles every chunk shape
      state, m = train_chunk(state, members.place_batch(b, mesh, 1, True))
    jax.block_until_ready(m)
    t0, steps = time.perf_counter(), 0
    for epoch in range(1, args.epochs + 1):
      for _, kk, b in chunks(method, epoch):
        state, m = train_chunk(state, members.place_batch(b, mesh, 1, True))
        steps += kk
    jax.block_until_ready(m)
    seconds = (time.perf_counter() - t0) / steps
    one = jax.tree.map(lambda x: x[0], state['method'])
    if regime == 'none':
      flops[(regime, k)], body = flops_lib.step_flops(method, one, sample), 0.0
    else:
      flops[(regime, k)], body = flops_lib.loop_flops(lambda kk: make('finopt', kk), one, sample, k)
    times[(regime, k)] = seconds
    label = 'none' if regime == 'none' else f'finopt K={k}'
    print(f'train {label:13s} | {batch_size / seconds:10,.0f} docs/s | {1e3 * seconds:9.2f} ms/step | '
          f'{flops[(regime, k)] / 1e9:8.2f} GFLOP/step'
          + (f' ({body / 1e9:.3f} per SVI step)' if body else '') + f' | {_peak_memory()}', flush=True)

  # Evaluation: score() with K = eval_k test-time SVI steps and the importance-sampled bound.
  mc = base.model.copy_and_resolve_references()
  mc.update(eval_svi_steps=args.eval_k)
  method = methods.get_method(mc, info)
  params = jax.tree.map(lambda x: x[None], jax.tree.map(lambda x: x[0], state['method']['params']))
  test = corpus.splits['test']
  evaluators.Outputs(method, params, {'test': test.take(np.arange(min(test.num_docs, args.eval_batch_size)))},
                     mesh, args.eval_batch_size).scores('test')  # compile
  t0 = time.perf_counter()
  evaluators.Outputs(method, params, {'test': test}, mesh, args.eval_batch_size).scores('test')
  seconds = time.perf_counter() - t0
  print(f'evaluate K={args.eval_k} (+{mc.eval_is_samples} importance samples) | '
        f'{test.num_docs / seconds:10,.0f} docs/s over {test.num_docs} test documents (batch '
        f'{args.eval_batch_size}) | {_peak_memory()}', flush=True)
  top = max(ks)
  if ('finopt', top) in times:
    time_ratio = times[('finopt', top)] / times[('none', 0)]
    flop_ratio = flops[('finopt', top)] / flops[('none', 0)]
    within = max(time_ratio / flop_ratio, flop_ratio / time_ratio)
    print(f'finopt K={top} step / none step: time {time_ratio:.1f}x, FLOPs {flop_ratio:.1f}x (XLA cost '
          f'analysis); time ratio / FLOP ratio = {time_ratio / flop_ratio:.2f} '
          f'({"within" if within <= 1.5 else "NOT within"} 1.5x; '
          f'{"slower" if time_ratio > flop_ratio else "faster"} per FLOP than the none step)', flush=True)


# ------------------------------------------------------------------------------------------------ CLI
def _pairs(values: list[str]) -> dict:
  return dict(v.split('=', 1) for v in values)


def main(argv=None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(prog='python -m dtr.bench bow', description=__doc__.split('\n\n')[0])
  sub = parser.add_subparsers(dest='cmd', required=True)
  tp = sub.add_parser('table', help='the paper-style grid, mean ± std over seeds (resumable)')
  tp.add_argument('--dataset', default='20news_clean')
  tp.add_argument('--seeds', type=int, default=3)
  tp.add_argument('--depths', default='0,2', help='decoder hidden layers (0: linear softmax)')
  tp.add_argument('--inputs', default='counts,tfidf')
  tp.add_argument('--regimes', default=','.join(REGIMES))
  tp.add_argument('--nvdm', action=argparse.BooleanOptionalAction, default=True, help='the NVDM-style row')
  tp.add_argument('--seeds_per_row', default='', help='fewer (or more) seeds for some rows, e.g. '
                  'd2-counts-finopt=1,nvdm=3 (row names as in the cell folders)')
  tp.add_argument('--only_seed', type=int, default=-1,
                  help='train (or read) only this seed of each row, e.g. to run a row\'s seeds as parallel '
                  'processes into one --cache_dir; the table then shows that seed alone')
  tp.add_argument('--svi_steps', type=int, default=-1, help='K of training-time SVI (-1: the config\'s, 100)')
  tp.add_argument('--svi_lr', type=float, default=0.0, help='its Adam rate (0: the config\'s, 0.01)')
  tp.add_argument('--num_epochs', type=int, default=0, help='cap of the grid rows (0: the config\'s)')
  tp.add_argument('--switch_epoch', type=int, default=-1,
                  help='epoch of the switch of none_finopt / finopt_none (-1: the config\'s)')
  tp.add_argument('--eval_svi_steps', type=int, default=100)
  tp.add_argument('--eval_svi_lr', type=float, default=8e-3)
  tp.add_argument('--eval_is_samples', type=int, default=100)
  tp.add_argument('--validate_svi', action='store_true',
                  help='refine in every epoch\'s validation too and select on valid perp_f')
  tp.add_argument('--set', dest='overrides', action='append', default=[], help='grid rows: key=value (JSON)')
  tp.add_argument('--nvdm_set', dest='nvdm_overrides', action='append', default=[],
                  help='NVDM row: key=value (JSON)')
  tp.add_argument('--cache_dir', default='', help='workdirs of the cells (required; resumable)')
  tp.add_argument('--out', default='', help='markdown file (the table between marker lines)')
  tp.add_argument('--spectra_out', default='',
                  help="PNG of the spectra (default: bow_spectra.png beside --out; '-': none, e.g. for a "
                       'table of cells whose workdirs are elsewhere)')
  tp.add_argument('--spectra_samples', type=int, default=500)
  tp.add_argument('--tiny', action='store_true', help='synthetic tiny configs (a smoke run)')
  tp.add_argument('--read_only', action='store_true', help='table of the finished cells only; train none')
  spp = sub.add_parser('speed', help='training and evaluation documents/s, time and FLOP ratios')
  spp.add_argument('--dataset', default='20news_clean')
  spp.add_argument('--ks', default='10,100', help='K of the finopt rows')
  spp.add_argument('--batch_size', type=int, default=0, help='0: the config\'s (500; tiny: 40)')
  spp.add_argument('--epochs', type=int, default=1, help='timed epochs after a warm-up epoch')
  spp.add_argument('--steps_per_call', type=int, default=8)
  spp.add_argument('--eval_k', type=int, default=100)
  spp.add_argument('--eval_batch_size', type=int, default=512)
  spp.add_argument('--tiny', action='store_true', help='synthetic tiny sizes (a smoke run)')
  args = parser.parse_args(argv)
  args.argv = argv
  if args.cmd == 'table':
    args.overrides, args.nvdm_overrides = _pairs(args.overrides), _pairs(args.nvdm_overrides)
    args.seeds_per_row = {k: int(v) for k, v in _pairs(filter(None, args.seeds_per_row.split(','))).items()}
    if args.only_seed >= max([args.seeds, *args.seeds_per_row.values()]):
      parser.error(f'--only_seed={args.only_seed}: no row has that seed (seeds count from 0; --seeds={args.seeds}).')
    run_table(args)
  else:
    run_speed(args)
