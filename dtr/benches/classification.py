r"""Discrete VAEs for low-resource text classification (Jin, Wiseman, Stratos & Livescu, ACL 2020): the study.

  # pretrain every variant, classify at 200/500/2500/all labels x 5 subsamples (code-book features and
  # re-embedded codes) and CBOW from scratch; the Table-3-style table (resumable: --cache_dir)
  python -m dtr.bench classification study --dataset=dbpedia14 --cache_dir=DIR --out=docs/results/classification.md
  # precision@100 of symbol-Hamming retrieval of the global variants (database train, queries test) and the
  # precision/recall-vs-radius curves (a PNG beside the table)
  python -m dtr.bench classification retrieval --dataset=dbpedia14 --cache_dir=DIR \
      --out=docs/results/classification_retrieval.md
  # pretraining steps/s and sentences/s per variant (batch 64), the E-step cost (em_iter 1 and 3), probe time
  # per budget, peak memory; the steps/s of a PyTorch twin of the global VQ-VAE and Hard EM on the same batches
  # (dtr.benches.discrete_torch, with the 'bench' extra)
  python -m dtr.bench classification speed --dataset=dbpedia14

A cell is `dtr.train.train_and_evaluate` in its own workdir under `cache_dir/<dataset>/`, named by the cell and
a digest of its config: a cell whose results.json exists is read back, an unfinished one resumes from its
checkpoint, and changed settings never read a stale cell; with --extend a cell with a higher --epochs starts
from the final checkpoint of the same variant's shorter cell (`extend_cell`). Pretraining is
configs/discrete_vae.py (early stopping on validation perplexity, at most --epochs epochs); the probes are
configs/classify.py on the pretrained workdir (`features=WORKDIR`, with `reembed=True` for re-embedded codes), CBOW is
configs/classify.py:method=cbow on the same corpus and token vocabulary. Every probe and CBOW run trains
the label budget's 5 random subsamples as 5 members, each early-stopped on validation accuracy; the table
reports test accuracy, mean ± std over them. The selected model (bold) is the one with the best validation
accuracy at the smallest budget; test numbers never choose anything.

The table of one corpus is written between marker lines of --out that name the corpus; text around them
(and other corpora's tables) is kept.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import resource
import shutil
import sys
import time

import numpy as np

from dtr import config_utils

# name -> configs/discrete_vae.py argument. The paper's best settings on AG News (200 labels): local CatVAE
# K=4096 M=1; local re-embedded Hard EM K=1024 M=1; global CatVAE K=256 M=4; global re-embedded Hard EM
# K=4096 M=4; plus VQ-VAE global (the original code's run, M=4 K=256) and local. VQ variants without '-rs'
# train as the reference does (restart=0); '-rs0.1' adds dtr's dead-entry restarts (its default).
VARIANTS = {
    'cat_vae-global-M4-K256': 'method=cat_vae,level=global,M=4,K=256',
    'hard_em-global-M4-K4096': 'method=hard_em,level=global,M=4,K=4096',
    'hard_em-global-M4-K256': 'method=hard_em,level=global,M=4,K=256',  # the K of global CatVAE and VQ
    'hard_em-global-M16-K256': 'method=hard_em,level=global,M=16,K=256',
    'vq_vae-global-M4-K256': 'method=vq_vae,level=global,M=4,K=256,commitment=0.001,restart=0',
    'cat_vae-local-M1-K4096': 'method=cat_vae,level=local,M=1,K=4096',
    'hard_em-local-M1-K1024': 'method=hard_em,level=local,M=1,K=1024',
    'vq_vae-local-M1-K1024': 'method=vq_vae,level=local,M=1,K=1024,commitment=0.001,restart=0',
    # global latents with word dropout on the decoder inputs (dtr's addition against posterior collapse)
    'hard_em-global-M4-K4096-wd0.5': 'method=hard_em,level=global,M=4,K=4096,word_dropout=0.5',
    'cat_vae-global-M4-K256-wd0.5': 'method=cat_vae,level=global,M=4,K=256,word_dropout=0.5',
    'vq_vae-global-M4-K256-wd0.5': 'method=vq_vae,level=global,M=4,K=256,commitment=0.001,restart=0,'
                                   'word_dropout=0.5',
    'hard_em-local-M1-K1024-wd0.5': 'method=hard_em,level=local,M=1,K=1024,word_dropout=0.5',
    # dead-entry restarts against code-book collapse (dtr's addition; `dtr.latent.vq.restart_dead`)
    'vq_vae-global-M4-K256-rs0.1': 'method=vq_vae,level=global,M=4,K=256,commitment=0.001,restart=0.1',
    'vq_vae-local-M1-K1024-rs0.1': 'method=vq_vae,level=local,M=1,K=1024,commitment=0.001,restart=0.1',
    'vq_vae-global-M4-K256-rs0.1-wd0.5': 'method=vq_vae,level=global,M=4,K=256,commitment=0.001,restart=0.1,'
                                         'word_dropout=0.5',
    # more latents per sentence with restarts: M = 8, 16 and 32 slots of 256 values (64, 128 and 256 bits)
    'vq_vae-global-M8-K256-rs0.1': 'method=vq_vae,level=global,M=8,K=256,commitment=0.001,restart=0.1',
    'vq_vae-global-M16-K256-rs0.1': 'method=vq_vae,level=global,M=16,K=256,commitment=0.001,restart=0.1',
    'vq_vae-global-M32-K256-rs0.1': 'method=vq_vae,level=global,M=32,K=256,commitment=0.001,restart=0.1',
    # restarts of the logits latents: dead values become noisy copies of live ones (`gumbel.split_dead`)
    'hard_em-global-M4-K256-rs0.1': 'method=hard_em,level=global,M=4,K=256,restart=0.1',
    'hard_em-global-M16-K256-rs0.1': 'method=hard_em,level=global,M=16,K=256,restart=0.1',
    'hard_em-global-M4-K256-rs0.1-wd0.5': 'method=hard_em,level=global,M=4,K=256,restart=0.1,word_dropout=0.5',
    'cat_vae-global-M4-K256-rs0.1': 'method=cat_vae,level=global,M=4,K=256,restart=0.1',
    # CatVAE and Hard EM with Xavier-uniform code books (dtr's init for them before it followed the
    # reference's N(0, 1); their cells keep their folder names, see `digest` and `cell_dir`)
    'cat_vae-global-M4-K256-xavier': 'method=cat_vae,level=global,M=4,K=256,book_init=xavier',
    'cat_vae-global-M4-K256-wd0.5-xavier': 'method=cat_vae,level=global,M=4,K=256,word_dropout=0.5,'
                                           'book_init=xavier',
    'hard_em-global-M4-K4096-xavier': 'method=hard_em,level=global,M=4,K=4096,book_init=xavier',
    'hard_em-global-M4-K256-rs0.1-xavier': 'method=hard_em,level=global,M=4,K=256,restart=0.1,book_init=xavier',
}
BUDGETS = ('200', '500', '2500', 'all')
READ_ONLY = [False]  # --read_only: report the finished cells, train none
KINDS = ('features', 'reembed')
BEGIN = '<!-- classification study {dataset}: begin (written by python -m dtr.bench classification study) -->'
END = '<!-- classification study {dataset}: end -->'
RBEGIN = '<!-- classification retrieval {dataset}: begin (python -m dtr.bench classification retrieval) -->'
REND = '<!-- classification retrieval {dataset}: end -->'


# ------------------------------------------------------------------------------------------------ configs
def _set(config, dotted: str, value: str) -> None:
  current = config_utils.get_dotted(config, dotted)
  if isinstance(current, str):
    config_utils.set_dotted(config, dotted, value)
  else:
    config_utils.set_dotted(config, dotted, type(current)(json.loads(value)))


def data_overrides(config, args) -> None:
  """The corpus settings every cell of a study shares (pretraining and CBOW read the same tokens)."""
  if args.token_vocab_size:
    config.data.token_vocab_size = args.token_vocab_size
  if getattr(args, 'extra_train', ''):  # absent unless given, so the cells trained without it keep their digests
    config.data.extra_train = args.extra_train
  if getattr(args, 'data_set', None):
    for key, value in args.data_set:
      _set(config, key, value)


def pretrain_config(variant: str, args):
  arg = VARIANTS[variant] + (',tiny' if args.tiny else f',dataset={args.dataset}')
  config = config_utils.load_config_module('discrete_vae').get_config(arg)
  config.progress_bar = config.tensorboard = False
  if not args.tiny:
    data_overrides(config, args)
  if args.epochs:
    config.num_epochs = args.epochs
  if config.model.name == 'hard_em':
    config.model.em_iter = args.em_iter
    config.model.noam = args.noam  # Noam's 2000 warm-up steps outlast a short pretraining
  config.model.dropout = args.dropout
  if args.buckets:  # absent unless asked, so the cells trained without it keep their digests
    config.data.length_buckets = args.buckets
  if getattr(args, 'pad_to_multiple_of', 0):  # the same
    config.data.pad_to_multiple_of = args.pad_to_multiple_of
  for key, value in args.pretrain_set:
    _set(config, key, value)
  return config


def probe_config(workdir: str, budget: str, kind: str, args):
  arg = f'features={workdir},labels={budget},seeds={args.seeds}' + (
      ',reembed=True' if kind == 'reembed' else f',normalize={args.normalize}')
  config = config_utils.load_config_module('classify').get_config(arg + (',tiny' if args.tiny else ''))
  if args.tiny:
    config.data.labels = budget if budget == 'all' else str(min(int(budget), 64))
  for key, value in args.probe_set:
    _set(config, key, value)
  return config


def cbow_config(budget: str, args):
  arg = f'method=cbow,labels={budget},seeds={args.seeds}' + (',tiny' if args.tiny else f',dataset={args.dataset}')
  config = config_utils.load_config_module('classify').get_config(arg)
  if args.tiny:
    config.data.labels = budget if budget == 'all' else str(min(int(budget), 64))
  else:
    data_overrides(config, args)
  return config


def digest(config) -> str:
  """8 hex digits of the whole config. `model.codebook_init='xavier'` hashes as absent: the field came after
  cells trained with Xavier-uniform code books, which keep their folders."""
  if config.get('model', {}).get('codebook_init') == 'xavier':
    config = copy.deepcopy(config)
    del config.model['codebook_init']
  return hashlib.sha1(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:8]


def cell_dir(root: str, name: str, config) -> str:
  """The cell's folder; a '-xavier' variant whose cell was trained before its rename keeps the old name."""
  key = digest(config)
  path = os.path.join(root, f'{name}-{key}')
  legacy = os.path.join(root, f"{name.removesuffix('-xavier')}-{key}")
  return legacy if name.endswith('-xavier') and not os.path.exists(path) and os.path.exists(legacy) else path


def _without_epochs(config: dict) -> dict:
  return {k: v for k, v in config.items() if k != 'num_epochs'}


def extend_cell(root: str, name: str, config, workdir: str, log=print) -> str | None:
  """Seeds a new pretraining cell with the checkpoints of a shorter one: a cell of the same variant under
  `root` whose config.json equals `config` but for a smaller `num_epochs`, the longest such. The epoch cap is
  only the training loop's bound (no schedule reads it), so resuming from its final checkpoint trains exactly
  what `config` from scratch would, minus the shared epochs. Returns the seed's folder, or None."""
  if os.path.exists(os.path.join(workdir, 'checkpoints')) or not os.path.isdir(root):
    return None
  want = json.loads(config.to_json_best_effort(sort_keys=True))
  best = None
  for entry in sorted(os.listdir(root)):
    folder = os.path.join(root, entry)
    if (entry.rpartition('-')[0] != name or folder == workdir
        or not os.path.isdir(os.path.join(folder, 'checkpoints'))
        or not os.path.exists(os.path.join(folder, 'config.json'))):
      continue
    with open(os.path.join(folder, 'config.json')) as f:
      have = json.load(f)
    if (_without_epochs(have) == _without_epochs(want) and have.get('num_epochs', 0) < want['num_epochs']
        and (best is None or have['num_epochs'] > best[0])):
      best = (have['num_epochs'], folder)
  if best is None:
    return None
  os.makedirs(workdir, exist_ok=True)
  shutil.copytree(os.path.join(best[1], 'checkpoints'), os.path.join(workdir, 'checkpoints'))
  log(f'  --extend: {workdir} starts from the final checkpoint of {best[1]} ({best[0]} of {want["num_epochs"]} '
      'epochs)')
  return best[1]


def run_cell(config, workdir: str, log=print, corpus=None) -> dict:
  """results.json of a finished cell, else trains it (resuming from its checkpoint) and returns its results.
  `corpus` (a callable returning the corpus `config.data` describes) saves loading it once per cell."""
  path = os.path.join(workdir, 'results.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  if READ_ONLY[0]:
    return None
  from dtr import train  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  results = train.train_and_evaluate(config, workdir, corpus=corpus() if corpus is not None else None)
  log(f'  {workdir}: done in {time.time() - t0:.0f}s')
  return results


# ------------------------------------------------------------------------------------------------ the study
def study(args, log=print) -> dict:
  """Every cell of one corpus; returns {'pretrain': {variant: results}, 'probe': {(variant, kind, budget):
  results}, 'cbow': {budget: results}}."""
  root = os.path.join(args.cache_dir, args.label)
  cells = {'pretrain': {}, 'probe': {}, 'cbow': {}, 'workdirs': {}}
  for variant in args.variants:
    config = pretrain_config(variant, args)
    workdir = cell_dir(root, variant, config)
    log(f'{variant}: pretraining in {workdir}')
    if args.extend and not READ_ONLY[0] and not os.path.exists(os.path.join(workdir, 'results.json')):
      extend_cell(root, variant, config, workdir, log)
    pretrained = run_cell(config, workdir, log)
    if pretrained is None:
      log(f'{variant}: not pretrained yet (--read_only); left out')
      continue
    cells['pretrain'][variant] = pretrained
    cells['workdirs'][variant] = workdir
    for kind in args.kinds:
      features = {}  # the frozen features of this kind, computed once for all budgets

      def load(data_config=None, features=features):
        if 'corpus' not in features:
          from dtr import probe as probe_lib  # pylint: disable=g-import-not-at-top
          features['corpus'] = probe_lib.load_features(data_config)
        return features['corpus']

      for budget in args.budgets:
        probe = probe_config(workdir, budget, kind, args)
        cells['probe'][(variant, kind, budget)] = run_cell(
            probe, os.path.join(workdir, f'probe-{kind}-{budget}-{digest(probe)}'), log,
            corpus=lambda probe=probe: load(probe.data))
  if args.cbow:
    for budget in args.budgets:
      config = cbow_config(budget, args)
      log(f'cbow {budget}')
      cells['cbow'][budget] = run_cell(config, cell_dir(root, f'cbow-{budget}', config), log)
  return cells


def _accuracy(results: dict | None, split: str = 'test') -> str:
  if results is None:
    return '-'
  return f'{results[f"{split}/accuracy"]:.2f} ± {results.get(f"{split}/accuracy_std", 0.0):.2f}'


def compression_bits(results: dict) -> float:
  """M log2 K for global latents (bits per document); M log2 K per token for local ones."""
  return results['code_length'] * math.log2(results['num_values'])


def table(cells: dict, args) -> str:
  """The Table-3-style markdown: test accuracy per budget, validation accuracy that selects, code-book use."""
  budgets = list(args.budgets)
  first = budgets[0]
  head = (['model', 'features'] + [f'{b} labels' for b in budgets] +
          [f'valid @{first}', 'codes used / K (per slot)', 'code perplexity', 'bits (M log2 K)', 'valid ppl'])
  rows = []
  for (variant, kind, _), _ in cells['probe'].items():
    if (variant, kind) in [(r[0], r[1]) for r in rows]:
      continue
    pre = cells['pretrain'][variant]
    per_budget = [cells['probe'].get((variant, kind, b)) for b in budgets]
    valid = per_budget[0]['valid/accuracy'] if per_budget[0] else float('nan')  # None: not run (--read_only)
    level = 'local' if '-local-' in variant else 'global'
    bits = f'{compression_bits(pre):.0f}' + (' per token' if level == 'local' else '')
    rows.append((variant, kind, per_budget, valid,
                 f'{pre["test/codes_used"]:.1f} / {pre["num_values"]}', f'{pre["test/code_perplexity"]:.1f}', bits,
                 f'{pre["valid/perplexity"]:.1f}'))
  selected = max(range(len(rows)), key=lambda i: rows[i][3] if rows[i][3] == rows[i][3] else -1.0) if rows else -1
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for i, (variant, kind, per_budget, valid, used, perp, bits, ppl) in enumerate(rows):
    accs = [_accuracy(r) for r in per_budget]
    name = f'**{variant}**' if i == selected else variant
    kind_name = 're-embedded codes' if kind == 'reembed' else 'code-book vectors'
    lines.append(f'| {name} | {kind_name} | ' + ' | '.join(accs) + f' | {valid:.2f} | {used} | {perp} | {bits} | '
                 f'{ppl} |')
  if cells['cbow']:
    accs = [_accuracy(cells['cbow'].get(b)) for b in budgets]
    valid = cells['cbow'][first]['valid/accuracy'] if cells['cbow'].get(first) else float('nan')
    lines.append('| CBOW (from scratch) | words | ' + ' | '.join(accs) + f' | {valid:.2f} | - | - | - | - |')
  return '\n'.join(lines)


def replace_block(path: str, begin: str, end: str, body: str) -> None:
  """Writes `body` between the marker lines `begin` / `end` of `path`, keeping everything else."""
  text = open(path).read() if os.path.exists(path) else ''
  block = f'{begin}\n{body}\n{end}'
  if begin in text and end in text:
    text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
  else:
    text = (text.rstrip() + '\n\n' if text.strip() else '') + block + '\n'
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)


def run_study(args) -> None:
  cells = study(args)
  text = table(cells, args)
  command = f'python -m dtr.bench classification {" ".join(args.argv)}'
  body = f'Command: `{command}`\n\n{text}'
  print(body)
  if args.out:
    replace_block(args.out, BEGIN.format(dataset=args.label), END.format(dataset=args.label), body)


# ------------------------------------------------------------------------------------------------ retrieval
TABLE_RADII = 8  # the retrieval table's widest Hamming radius (the plot shows every radius)


def code_bits(workdir: str) -> float:
  """M log2 K of the pretrained model in `workdir` (its config.json)."""
  with open(os.path.join(workdir, 'config.json')) as f:
    model = json.load(f)['model']
  return model['num_latents'] * math.log2(model['num_values'])


def retrieval_curves(workdir: str, radii=None):
  """(precision@100, RadiusCurve) of a global variant's saved symbol codes: database train, queries test."""
  from dtr.evaluate import codes as codes_lib, neighbours, radius  # pylint: disable=g-import-not-at-top
  codes_dir = os.path.join(workdir, 'codes')
  fmt = codes_lib.read_format(codes_dir)
  db, queries = codes_lib.read_codes(codes_dir, 'train', fmt), codes_lib.read_codes(codes_dir, 'test', fmt)
  if db.ndim != 2:
    raise ValueError(f'{workdir}: codes {db.shape[1:]} are per token (local latents); retrieval needs one code '
                     'per document (global latents).')
  db_labels, q_labels = codes_lib.read_labels(codes_dir, 'train'), codes_lib.read_labels(codes_dir, 'test')
  k = min(100, len(db))
  p_at_k = neighbours.precision_at_k_codes('symbols', queries, q_labels, db, db_labels, k)
  radii = np.arange(fmt.length + 1) if radii is None else np.asarray(radii)
  curve = radius.precision_recall_at_radius(queries, q_labels, db, db_labels, radii, 'symbols')
  return p_at_k, curve


def run_retrieval(args) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  root = os.path.join(args.cache_dir, args.label)
  found, curves, bits = {}, {}, {}
  for variant in args.variants:
    if '-global-' not in variant:
      continue
    workdir = cell_dir(root, variant, pretrain_config(variant, args))
    if not os.path.exists(os.path.join(workdir, 'results.json')):
      print(f'{variant}: no finished pretraining in {workdir} (run the study first); skipped')
      continue
    found[variant], curves[variant] = retrieval_curves(workdir)
    bits[variant] = code_bits(workdir)
  if not found:
    raise SystemExit('no finished global variant to evaluate')
  # Codes of M symbols have radii 0..M; the table shows radii up to TABLE_RADII of the longest codes (the
  # plot all of them), '-' where a code is shorter.
  longest = max((curve.radii for curve in curves.values()), key=len)
  radii = [int(r) for r in longest[:TABLE_RADII + 1]]
  head = '| model | M log2 K bits | precision@100 | ' + ' | '.join(f'P / R at r={r}' for r in radii) + ' |'
  rows = []
  for variant, curve in curves.items():
    at = {int(r): (p, q) for r, p, q in zip(curve.radii, curve.precision, curve.recall)}
    rows.append(f'| {variant} | {bits[variant]:g} | {100 * found[variant]:.2f} | ' + ' | '.join(
        f'{100 * at[r][0]:.1f} / {100 * at[r][1]:.1f}' if r in at else '-' for r in radii) + ' |')
  text = '\n'.join([head, '|' + '---|' * (3 + len(radii))] + rows)
  fig, (ax_p, ax_r) = plt.subplots(1, 2, figsize=(10, 4))
  for variant, curve in curves.items():
    ax_p.plot(curve.radii, 100 * curve.precision, marker='o', label=variant)
    ax_r.plot(curve.radii, 100 * curve.recall, marker='o', label=variant)
  for ax, name in ((ax_p, 'precision (%)'), (ax_r, 'recall (%)')):
    ax.set_xlabel('Hamming radius (unequal symbols)')
    ax.set_ylabel(name)
    ax.grid(alpha=0.3)
  ax_p.legend(fontsize=7)
  fig.suptitle(f'{args.label}: test queries against the training codes')
  fig.tight_layout()
  png = args.png or os.path.join(os.path.dirname(args.out) or '.', f'classification_radius_{args.label}.png')
  os.makedirs(os.path.dirname(png) or '.', exist_ok=True)
  fig.savefig(png, dpi=120)
  plt.close(fig)
  command = f'python -m dtr.bench classification {" ".join(args.argv)}'
  body = f'Command: `{command}`\n\n{text}\n\n![radius curves]({os.path.basename(png)})'
  print(body)
  if args.out:
    replace_block(args.out, RBEGIN.format(dataset=args.label), REND.format(dataset=args.label), body)


# ------------------------------------------------------------------------------------------------ speed
def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_chunks(config, corpus, method, steps: int, steps_per_call: int) -> list[dict]:
  """The host chunks of `steps_per_call` steps the speed rows time (whole chunks only, at least one), in the
  loop's order (`Run._order`: length-bucketed with data.length_buckets), over as many epochs as needed."""
  from dtr import input_pipeline as ip  # pylint: disable=g-import-not-at-top
  split = corpus.splits['train']
  ip.check_whole_chunk(split.num_docs, config.batch_size, steps_per_call)

  def chunks(epoch):
    order, widths = ip.epoch_rows(ip.epoch_order(0, epoch, split.num_docs), split,
                                  window=config.data.get('length_buckets', 0), batch_size=config.batch_size,
                                  steps_per_call=steps_per_call, seed=0, epoch=epoch,
                                  multiple=config.data.get('pad_to_multiple_of', 0))
    return ip.train_chunks(method.reads, split, [order], per_member=False, batch_size=config.batch_size,
                           start_step=0, steps_per_call=steps_per_call, sharded=True, fields=method.batch_fields,
                           widths=widths)

  host = []
  epoch = 0
  while len(host) * steps_per_call < steps:
    host += [b for _, k, b in chunks(epoch) if k == steps_per_call]
    epoch += 1
  return host[:max(1, steps // steps_per_call)]


def twin_batches(host: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
  """(tokens [B, W], lengths [B]) of every step of `host` chunks, padding documents (mask 0) left out."""
  batches = []
  for b in host:
    for i in range(b['tokens'].shape[0]):
      real = np.asarray(b['mask'][i]) > 0
      batches.append((np.asarray(b['tokens'][i])[real], np.asarray(b['lengths'][i])[real]))
  return batches


def train_rate(config, corpus, host: list[dict], count_flops: bool = True) -> tuple[float, float, float]:
  """(steady-state train steps/s, mean FLOPs per step, mean predicted tokens per step) of `config` on the
  `host` chunks of `corpus` (`bench_chunks`): one member, the loop's jitted chunk, every chunk width compiled
  first; FLOPs from XLA's cost
  analysis of one step at each width the timed steps had (an inner E-step loop counted at its trip count,
  `flops.loop_flops`; NaN when `count_flops` is off: it compiles two more programs per width)."""
  import jax  # pylint: disable=g-import-not-at-top
  from dtr import input_pipeline as ip, members, methods, train  # pylint: disable=g-import-not-at-top
  from dtr.benches import flops  # pylint: disable=g-import-not-at-top
  split = corpus.splits['train']
  info = train.data_info(corpus, split.num_docs)
  method = methods.get_method(config.model, info)
  mesh = ip.make_mesh()
  steps_per_call = host[0]['mask'].shape[0]
  sample = {k: v[0] for k, v in host[0].items() if k != 'valid'}
  state = members.place_state(members.init_states(method, [members.Member(0, 0)], sample), mesh)
  step = members.train_chunk_fn(method, mesh, 1, True)

  def width(b):
    return b['tokens'].shape[-1] if 'tokens' in b else 0

  widths = {}
  for b in host:  # compile every chunk width once
    if width(b) not in widths:
      state, m = step(state, members.place_batch(b, mesh, 1, True))
      widths[width(b)] = {k: v[0] for k, v in b.items() if k != 'valid'}
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for b in host:
    state, m = step(state, members.place_batch(b, mesh, 1, True))
  jax.block_until_ready(m)
  rate = len(host) * steps_per_call / (time.perf_counter() - t0)
  predicted = sum(float(np.sum((np.asarray(b['lengths']) + 1) * np.asarray(b['mask']))) for b in host)
  tokens = predicted / (len(host) * steps_per_call)
  if not count_flops:
    return rate, float('nan'), tokens

  one = jax.tree.map(lambda x: x[0], state['method'])
  inner = int(config.model.get('em_iter', 1)) if method.config.name == 'hard_em' or method.config.get(
      'alternating', False) else 0

  def counted(em_iter=None):
    """The method with the full output layer (pack_targets 0): the packed layer's loop over blocks has a
    traced trip count, which XLA's cost analysis counts once; the full layer's FLOPs bound it from above.
    em_iter = 0 is refused by the config check; only the FLOP count builds it."""
    model = config.model.copy_and_resolve_references()
    model.pack_targets = 0.0
    full = methods.get_method(model, info)
    if em_iter is not None:
      full.config.em_iter = em_iter
    return full

  def width_flops(batch):
    if not inner:
      return flops.step_flops(counted(), one, batch)
    return flops.loop_flops(counted, one, batch, inner)[0]

  per_width = {w: width_flops(batch) for w, batch in widths.items()}
  total = sum(per_width[width(b)] for b in host)
  return rate, total / len(host), tokens


def torch_rate(config, vocab: int, host: list[dict]) -> tuple[float, str] | None:
  """(steps/s, framework) of the PyTorch twin of `config`'s model (`dtr.benches.discrete_torch`) on the
  `host` chunks `train_rate` times; None without PyTorch or for a variant the twin does not cover."""
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return None
  from dtr.benches import discrete_torch  # pylint: disable=g-import-not-at-top
  if not discrete_torch.covers(config.model):
    return None
  return discrete_torch.steps_per_second(config.model, vocab, twin_batches(host))


def random_feature_corpus(corpus, kind: str, width: int, num_values: int, slots: int):
  """A `dtr.probe.FeatureCorpus` with the corpus' labels and random features (the probe's cost does not
  depend on the values): float32 [N, width], or int32 symbols [N, slots] for re-embedding."""
  from dtr import probe  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  splits = {}
  for name, split in corpus.splits.items():
    n = split.num_docs
    values = (rng.integers(0, num_values, (n, slots)).astype(np.int32) if kind == 'codes'
              else rng.normal(size=(n, width)).astype(np.float32))
    splits[name] = probe.FeatureSplit(values, split.labels, split.doc_ids)
  return probe.FeatureCorpus(name=f'{corpus.name}:random', splits=splits, label_names=list(corpus.label_names),
                             synthetic=corpus.synthetic, source='memory', kind=kind,
                             code_kind='symbols' if kind == 'codes' else None,
                             num_values=num_values if kind == 'codes' else 0)


def run_speed(args) -> None:
  import tempfile  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from dtr import input_pipeline as ip, methods, train  # pylint: disable=g-import-not-at-top
  from dtr.benches import flops  # pylint: disable=g-import-not-at-top
  from dtr.data import load_corpus  # pylint: disable=g-import-not-at-top
  print(f'devices: {jax.device_count()} x {jax.devices()[0].platform}; batch {args.batch_size}; '
        f'{args.steps} timed steps per row after compilation', flush=True)
  peak = flops.matmul_gflops()
  print(f'dense float32 1024 x 1024 matmul on this device: {peak:.1f} GFLOP/s (the best of 20; a step at that '
        f'rate would take its GFLOP / {peak:.1f} s)', flush=True)
  corpus = None
  ip.check_whole_windows(args.buckets, args.steps, args.steps_per_call)
  for variant in args.variants:
    config = pretrain_config(variant, args)
    config.batch_size = args.batch_size
    corpus = corpus or load_corpus(config.data)
    if corpus.synthetic and not args.tiny:
      raise SystemExit(f'{args.dataset}: no real data found (set DTR_DATA_DIR).')
    em_iters = (1, 3) if config.model.name == 'hard_em' else (None,)
    info = train.data_info(corpus, corpus.splits['train'].num_docs)
    host = bench_chunks(config, corpus, methods.get_method(config.model, info), args.steps, args.steps_per_call)
    rates = {}
    for em_iter in em_iters:
      if em_iter is not None:
        config.model.em_iter = em_iter
      rates[em_iter] = train_rate(config, corpus, host, count_flops=args.flops)
    for em_iter, (rate, flop, _) in rates.items():
      extra = f' em_iter {em_iter}' if em_iter is not None else ''
      counted = (f'{flop / 1e9:6.2f} GFLOP/step (XLA), {rate * flop / 1e9:6.1f} GFLOP/s | ' if args.flops else '')
      print(f'{variant}{extra}: {rate:8.2f} steps/s | {rate * args.batch_size:9,.0f} sentences/s | {counted}'
            f'token vocab {len(corpus.token_vocab)} | peak RSS {peak_rss_mib():,.0f} MiB', flush=True)
    if args.torch:
      for em_iter, (rate, _, _) in rates.items():
        extra = f' em_iter {em_iter}' if em_iter is not None else ''
        if em_iter is not None:
          config.model.em_iter = em_iter
        twin = torch_rate(config, info.token_vocab_size, host)
        if twin is None:
          print(f'{variant}{extra}: no PyTorch twin (PyTorch is not installed: pip install -e ".[bench]", or '
                'a variant other than global VQ-VAE with loss-trained code books / relaxed Hard EM, without word '
                'dropout)', flush=True)
          continue
        print(f'{variant}{extra}: {twin[0]:8.2f} steps/s with the {twin[1]} on the same batches | '
              f'dtr / PyTorch x{rate / twin[0]:.2f}', flush=True)
    predicted = rates[em_iters[0]][2]
    output = flops.output_layer_flops(predicted, len(corpus.token_vocab), int(config.model.model_dim))
    tokens = round(predicted)
    floor = flops.output_layer_seconds(tokens, len(corpus.token_vocab), int(config.model.model_dim))
    print(f'{variant}: the output layer alone ({tokens:,} predicted tokens per step x {len(corpus.token_vocab)} '
          f'words, d {config.model.model_dim}; {output / 1e9:.2f} GFLOP, at most {peak * 1e9 / output:.1f} steps/s '
          'at the matmul rate), forward and backward: ' + ', '.join(
              f'{name} {1e3 * s:.1f} ms (at most {1 / s:.1f} steps/s)' for name, s in floor.items()), flush=True)
    if len(rates) == 2:
      e_step = (1 / rates[3][0] - 1 / rates[1][0]) / 2
      print(f'{variant}: one E-step costs {1e3 * e_step:.1f} ms ({e_step * rates[1][0]:.2f} of an em_iter-1 step)',
            flush=True)
  for kind, feature_kind in (('features', 'features'), ('reembed', 'codes')):
    data = random_feature_corpus(corpus, feature_kind, 64, 256, 4)
    for budget in args.budgets:
      config = config_utils.load_config_module('classify').get_config(
          f'features=memory,labels={budget},seeds={args.seeds}' + (',reembed=True' if kind == 'reembed' else '')
          + (',tiny' if args.tiny else ''))
      if args.tiny:
        config.data.labels = budget if budget == 'all' else str(min(int(budget), 64))
      config.num_epochs = args.probe_epochs
      config.patience = args.probe_epochs + 1
      with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        train.train_and_evaluate(config, workdir, corpus=data)
        seconds = time.perf_counter() - t0
      print(f'probe {kind} {budget} labels x {args.seeds} subsamples, {args.probe_epochs} epochs: {seconds:.1f}s '
            f'(with compilation and the final evaluation) | peak RSS {peak_rss_mib():,.0f} MiB', flush=True)


# ------------------------------------------------------------------------------------------------ main
def _pairs(items) -> list[tuple[str, str]]:
  return [tuple(kv.split('=', 1)) for kv in items]


def main(argv=None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(prog='python -m dtr.bench classification', description=__doc__.split('\n\n')[0])
  sub = parser.add_subparsers(dest='cmd', required=True)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument('--dataset', default='dbpedia14')
  common.add_argument('--variants', default=','.join(VARIANTS), help=f'of {", ".join(VARIANTS)} (none: CBOW only)')
  common.add_argument('--token_vocab_size', type=int, default=0, help='data.token_vocab_size (0: the corpus\')')
  common.add_argument('--epochs', type=int, default=0, help='pretraining epochs at most (0: the config\'s 30)')
  common.add_argument('--em_iter', type=int, default=3, help='Hard EM E-steps per batch')
  common.add_argument('--noam', action=argparse.BooleanOptionalAction, default=True, help='Hard EM: Noam')
  common.add_argument('--dropout', type=float, default=0.2, help='pretraining dropout (features: always off)')
  common.add_argument('--seeds', type=int, default=5, help='label subsamples per budget')
  common.add_argument('--normalize', default='example', help='probe on code-book vectors: model.normalize')
  common.add_argument('--budgets', default=','.join(BUDGETS))
  common.add_argument('--cache_dir', default='/tmp/dtr_classification')
  common.add_argument('--pretrain_set', action='append', default=[], help='pretraining config key=value')
  common.add_argument('--probe_set', action='append', default=[], help='probe config key=value')
  common.add_argument('--data_set', action='append', default=[], help='config.data key=value (every cell)')
  common.add_argument('--extra_train', default='', help="data.extra_train of every cell: files of unlabelled "
                      "documents ('+' between them) added to the training split (dtr.data.extra)")
  common.add_argument('--tiny', action='store_true', help='synthetic tiny configs (a smoke run)')
  common.add_argument('--buckets', type=int, default=0, help='pretraining data.length_buckets: sentences sorted '
                      'by length within windows of this many chunks (0: random chunks, the reference\'s order)')
  common.add_argument('--pad_to_multiple_of', type=int, default=0, help='pretraining data.pad_to_multiple_of '
                      '(with --buckets): chunks pad to their longest sentence + 1 rounded up to a multiple of this')
  sp = sub.add_parser('study', parents=[common], help='pretrain, classify, the table (resumable)')
  sp.add_argument('--kinds', default=','.join(KINDS), help='features (code-book vectors), reembed (codes)')
  sp.add_argument('--cbow', action=argparse.BooleanOptionalAction, default=True)
  sp.add_argument('--out', default='')
  sp.add_argument('--read_only', action='store_true', help='table of the finished cells only (trains nothing)')
  sp.add_argument('--extend', action='store_true', help='a new pretraining cell starts from the final checkpoint '
                  'of the same variant trained with fewer --epochs (the same run, its shared epochs not repeated)')
  rp = sub.add_parser('retrieval', parents=[common], help='precision@100 and radius curves of global codes')
  rp.add_argument('--out', default='')
  rp.add_argument('--png', default='', help='default: classification_radius_<dataset>.png beside --out')
  pp = sub.add_parser('speed', parents=[common], help='steps/s, sentences/s, E-step cost, probe time, memory')
  pp.add_argument('--batch_size', type=int, default=64)
  pp.add_argument('--steps', type=int, default=64)
  pp.add_argument('--steps_per_call', type=int, default=16)
  pp.add_argument('--probe_epochs', type=int, default=5)
  pp.add_argument('--flops', action=argparse.BooleanOptionalAction, default=True,
                  help='XLA FLOP counts per step (Hard EM: two more compilations per batch width)')
  pp.add_argument('--torch', action=argparse.BooleanOptionalAction, default=True,
                  help="time the PyTorch twin of each global VQ-VAE / Hard EM row on the same batches "
                       "(dtr.benches.discrete_torch; needs the 'bench' extra)")
  args = parser.parse_args(argv)
  args.argv = argv
  args.label = 'tiny' if args.tiny else args.dataset
  args.variants = [v for v in args.variants.split(',') if v]
  unknown = [v for v in args.variants if v not in VARIANTS]
  if unknown:
    parser.error(f'unknown variants {unknown}; known: {", ".join(VARIANTS)}')
  args.budgets = [b for b in args.budgets.split(',') if b]
  if args.pad_to_multiple_of and not args.buckets:
    parser.error('--pad_to_multiple_of sets the widths of length-bucketed chunks: give --buckets too')
  args.pretrain_set, args.probe_set, args.data_set = (_pairs(args.pretrain_set), _pairs(args.probe_set),
                                                      _pairs(args.data_set))
  if args.cmd == 'study':
    args.kinds = [k for k in args.kinds.split(',') if k]
    READ_ONLY[0] = args.read_only
    run_study(args)
  elif args.cmd == 'retrieval':
    run_retrieval(args)
  else:
    run_speed(args)


if __name__ == '__main__':
  main()
