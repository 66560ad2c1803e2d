r"""Benchmarks that print numbers (never timed unit tests).

  # training and encoding throughput (docs/s) at tuned cells, steady state after compilation
  python -m dtr.bench speed --cells=ng20:16,reuters:64
  # test precision@100 over seeds with the tuned settings; writes a markdown table
  python -m dtr.bench quality --datasets=ng20,reuters --bits=16,32,64,128 --seeds=3 --out=docs/results/ammi.md
  # leaderboard of hashing baselines and AMMI (dtr.leaderboard); --cache_dir makes it resumable
  python -m dtr.bench hashing --datasets=ng20,reuters --bits=16,32,64,128 --seeds=3 \
      --methods=lsh,bow,spectral,nash,bmsh,dvq,binary_ae,ammi --cache_dir=/tmp/lb --out=docs/results/hashing.md
  # a population of P settings in one program against N sequential single runs of its first members
  python -m dtr.bench population --cell=ng20:16 --members=100 --sequential=10 [--num_epochs=3]
  # Hamming top-100 search against FAISS IndexBinaryFlat
  python -m dtr.bench_search

Real data: set DTR_DATA_DIR (e.g. ../shared/data). Peak memory is the process's max RSS.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

import jax

from dtr import config_utils


def load_config(arg: str):
  return config_utils.load_config_module('ammi').get_config(arg)


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def speed(cells: list[str], epochs: int, steps_per_call: int) -> None:
  from dtr import input_pipeline as ip
  from dtr import members, methods, train
  from dtr.data import load_corpus
  print(f'devices: {jax.device_count()} x {jax.devices()[0].platform} ({jax.devices()[0].device_kind})')
  for cell in cells:
    dataset, bits = cell.split(':')
    config = load_config(f'dataset={dataset},bits={bits}')
    config.steps_per_call = steps_per_call
    corpus = load_corpus(config.data)
    split = corpus.splits['train']
    method = methods.get_method(config.model, train.data_info(corpus, split.num_docs))
    mesh = ip.make_mesh()

    def chunks(epoch):
      order = ip.epoch_order(0, epoch, split.num_docs)
      return ip.train_chunks(method.reads, split, [order], per_member=False, batch_size=config.batch_size,
                             start_step=0, steps_per_call=config.steps_per_call, sharded=True,
                             fields=method.batch_fields)

    _, _, sample = next(ip.train_chunks(method.reads, split, [ip.epoch_order(0, 0, split.num_docs)],
                                        per_member=False, batch_size=config.batch_size, start_step=0,
                                        steps_per_call=1, sharded=True, fields=method.batch_fields))
    sample.pop('valid')
    member = members.Member(seed=0, order_seed=0)
    state = members.place_state(members.init_states(method, [member], jax.tree.map(lambda v: v[0], sample)), mesh)
    train_chunk = members.train_chunk_fn(method, mesh, 1, True)
    # Warm-up epoch: compiles every chunk shape.
    for _, _, b in chunks(0):
      state, m = train_chunk(state, members.place_batch(b, mesh, 1, True))
    jax.block_until_ready(m)
    rates = []
    for epoch in range(1, epochs + 1):
      t0, docs = time.perf_counter(), 0
      for _, k, b in chunks(epoch):
        state, m = train_chunk(state, members.place_batch(b, mesh, 1, True))
        docs += k * config.batch_size
      jax.block_until_ready(m)
      rates.append(docs / (time.perf_counter() - t0))
    params = jax.tree.map(lambda x: x[0], state['method']['params'])
    train.encode_split(method, params, split, mesh, 1024)  # compile
    enc = []
    for _ in range(3):
      t0 = time.perf_counter()
      train.encode_split(method, params, split, mesh, 1024)
      enc.append(split.num_docs / (time.perf_counter() - t0))
    print(f'{cell:12s} batch {config.batch_size:4d} G={config.model.prior_steps} '
          f'| train {statistics.median(rates):10,.0f} docs/s (median of {epochs} epochs, min {min(rates):,.0f}, '
          f'max {max(rates):,.0f}) | encode {statistics.median(enc):10,.0f} docs/s '
          f'| peak RSS {peak_rss_mib():,.0f} MiB', flush=True)


def quality(datasets, bits_list, seeds, out, overrides, settings='published') -> None:
  from dtr import train
  from dtr.data import load_corpus
  rows = {}
  for dataset in datasets:
    corpus = None
    for bits in bits_list:
      scores = []
      for s in range(seeds):
        config = load_config(f'dataset={dataset},bits={bits},settings={settings}')
        config.seed = config.seed + s
        config.progress_bar = config.tensorboard = False
        for key, value in overrides.items():
          _set(config, key, value)
        corpus = corpus or load_corpus(config.data)
        if corpus.synthetic:
          sys.exit(f'{dataset}: no real data found (set DTR_DATA_DIR); refusing to benchmark synthetic data.')
        with tempfile.TemporaryDirectory() as workdir:
          t0 = time.time()
          res = train.train_and_evaluate(config, workdir, corpus=corpus)
        scores.append(100 * res['test/precision@100'])
        print(f'{dataset} {bits} bits seed {config.seed}: test P@100 {scores[-1]:.2f} '
              f'(valid {100 * res["valid/precision@100"]:.2f}, best epoch {res["best_epoch"]}, '
              f'{res["distinct_train_codes"]} distinct codes, {time.time() - t0:.0f}s)', flush=True)
      rows[(dataset, bits)] = scores
  lines = ['| dataset | bits | test P@100 (mean ± std) | seeds |', '|---|---|---|---|']
  for (dataset, bits), scores in rows.items():
    std = statistics.stdev(scores) if len(scores) > 1 else 0.0
    lines.append(f'| {dataset} | {bits} | {statistics.mean(scores):.2f} ± {std:.2f} | '
                 f'{", ".join(f"{s:.2f}" for s in scores)} |')
  table = '\n'.join(lines)
  print(table)
  if out:
    os.makedirs(os.path.dirname(out) or '.', exist_ok=True)
    with open(out, 'w') as f:
      f.write(f'Command: `python -m dtr.bench {" ".join(sys.argv[1:])}`\n\n{table}\n')


def population_vs_sequential(cell: str, members: int, sequential: int, num_epochs: int, settings: str,
                             overrides: dict) -> None:
  """Wall-clock of one `members`-setting population against `sequential` single runs of its first members
  (the same settings and seeds), in this process: data loaded once, compilation counted in both."""
  from dtr import train
  from dtr.data import load_corpus
  dataset, bits = cell.split(':')
  config = load_config(f'dataset={dataset},bits={bits},population={members},settings={settings}')
  config.progress_bar = config.tensorboard = False
  if num_epochs:
    config.num_epochs = num_epochs
  for key, value in overrides.items():
    _set(config, key, value)
  corpus = load_corpus(config.data)
  if corpus.synthetic:
    sys.exit(f'{dataset}: no real data found (set DTR_DATA_DIR); refusing to benchmark synthetic data.')
  print(f'devices: {jax.device_count()} x {jax.devices()[0].platform}; {cell} ({settings} settings), at most '
        f'{config.num_epochs} epochs, early stopping as configured; population data order: '
        f'{config.population_data}, validation queries per epoch: {config.population_valid_queries or "all"}',
        flush=True)
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.time()
    res = train.train_and_evaluate(config, workdir, corpus=corpus)
    with open(os.path.join(workdir, 'population_results.json')) as f:
      res['members'] = json.load(f)['members']
    t_population = time.time() - t0
  t0 = time.time()
  for member in res['members'][:sequential]:
    single = load_config(f'dataset={dataset},bits={bits},settings={settings}')
    single.progress_bar = single.tensorboard = False
    single.num_epochs, single.seed = config.num_epochs, member['seed']
    if config.population_data == 'shared':
      single.data_seed = config.seed
    single.model.update({k: member[k] for k in ('learning_rate', 'prior_learning_rate', 'entropy_weight',
                                                'clip', 'init_scale')})
    with tempfile.TemporaryDirectory() as workdir:
      train.train_and_evaluate(single, workdir, corpus=corpus)
  t_sequential = time.time() - t0
  per_single = t_sequential / max(sequential, 1)
  print(f'population of {members}: {t_population:.0f}s ({res["epochs_run"]} epochs, {t_population / members:.1f}s '
        f'per member) | {sequential} sequential single runs: {t_sequential:.0f}s ({per_single:.1f}s each) | '
        f'population / {sequential} sequential = {t_population / max(t_sequential, 1e-9):.2f}; '
        f'population / {members} sequential (estimated from the {sequential}) = '
        f'{t_population / (per_single * members):.2f}', flush=True)


def hashing(args) -> None:
  from dtr import leaderboard
  methods, datasets = args.methods.split(','), args.datasets.split(',')
  bits_list = [int(b) for b in args.bits.split(',')]
  seeds_per_method = {m: int(n) for m, n in (kv.split('=') for kv in filter(None, args.seeds_per_method.split(',')))}
  cells = leaderboard.run(methods, datasets, bits_list, args.seeds, args.cache_dir, args.tiny,
                          log=lambda line: print(line, flush=True), seeds_per_method=seeds_per_method)
  text = leaderboard.table(cells, methods, datasets, bits_list, args.seeds)
  print(text)
  if args.out:
    leaderboard.write(args.out, f'python -m dtr.bench {" ".join(sys.argv[1:])}', text)


def _overrides(pairs: list[str]) -> dict:
  """--set key=value flags as {key: value}."""
  return dict(kv.split('=', 1) for kv in pairs)


def _set(config, dotted, value):
  current = config_utils.get_dotted(config, dotted)
  config_utils.set_dotted(config, dotted, value if isinstance(current, str) else type(current)(json.loads(value)))


# Family benchmarks and study tables: python -m dtr.bench NAME ... runs dtr.benches.NAME.main(argv).
FAMILY_BENCHES = ('bow', 'sentences', 'classification', 'startup', 'tokens')


def main(argv=None):
  argv = list(sys.argv[1:] if argv is None else argv)
  from dtr import runtime  # pylint: disable=g-import-not-at-top
  runtime.quiet_logs()  # the data layer's tfds INFO lines, as in python -m dtr.main
  if argv and argv[0] in FAMILY_BENCHES:
    import importlib  # pylint: disable=g-import-not-at-top
    importlib.import_module(f'dtr.benches.{argv[0]}').main(argv[1:])
    return
  parser = argparse.ArgumentParser(prog='python -m dtr.bench')
  sub = parser.add_subparsers(dest='cmd', required=True)
  sp = sub.add_parser('speed')
  sp.add_argument('--cells', default='ng20:16,reuters:64')
  sp.add_argument('--epochs', type=int, default=3)
  sp.add_argument('--steps_per_call', type=int, default=64)
  qp = sub.add_parser('quality')
  qp.add_argument('--datasets', default='ng20,reuters')
  qp.add_argument('--bits', default='16,32,64,128')
  qp.add_argument('--seeds', type=int, default=3)
  qp.add_argument('--out', default='')
  qp.add_argument('--settings', default='published', help='published or dtr (configs/ammi.py), before --set')
  qp.add_argument('--set', action='append', default=[], help='config override key=value (JSON value)')
  pp = sub.add_parser('population', help='a P-member population against sequential single runs')
  pp.add_argument('--cell', default='ng20:16')
  pp.add_argument('--members', type=int, default=100)
  pp.add_argument('--sequential', type=int, default=10)
  pp.add_argument('--num_epochs', type=int, default=0, help='cap both (0: the config\'s own, 40)')
  pp.add_argument('--settings', default='published', help='published or dtr (configs/ammi.py)')
  pp.add_argument('--set', action='append', default=[], help='population config override key=value (JSON)')
  hp = sub.add_parser('hashing', help='leaderboard of hashing methods (dtr.leaderboard)')
  hp.add_argument('--datasets', default='ng20,reuters')
  hp.add_argument('--bits', default='16,32,64,128')
  hp.add_argument('--seeds', type=int, default=3)
  hp.add_argument('--methods', default='lsh,bow,spectral,nash,bmsh,dvq,binary_ae,ammi')
  hp.add_argument('--seeds_per_method', default='', help='fewer seeds for slow methods, e.g. nash=1,bmsh=1')
  hp.add_argument('--cache_dir', default='', help='per-cell workdirs; finished cells are reused (resumable)')
  hp.add_argument('--out', default='')
  hp.add_argument('--tiny', action='store_true', help='synthetic test configurations (a smoke run)')
  args = parser.parse_args(argv)
  if args.cmd == 'hashing':
    hashing(args)
  elif args.cmd == 'population':
    population_vs_sequential(args.cell, args.members, args.sequential, args.num_epochs, args.settings,
                             _overrides(args.set))
  elif args.cmd == 'speed':
    speed(args.cells.split(','), args.epochs, args.steps_per_call)
  else:
    quality(args.datasets.split(','), [int(b) for b in args.bits.split(',')], args.seeds, args.out,
            _overrides(args.set), args.settings)


if __name__ == '__main__':
  main()
