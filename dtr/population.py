"""Population training: P settings of one method trained in ONE compiled program.

Random search (the AMMI paper's protocol: N runs per cell, best on validation) becomes a `jax.vmap` over
members for everything that changes no array shape: each member has its own seed (initialisation),
learning rates, entropy weight, clip, init range and, with views, the view's drop rate (the method's
`default_hparams`, kept in its state).
Shape-changing choices (batch size, G, prior layers, code length) form separate populations: `dtr.sweep`.

Member 0 is the config's own setting; members 1..P-1 draw their settings from `config.population_search`
(specs such as 'log_uniform(0.001,0.03)', 'uniform(1.5,4)', 'choice(0,1,5,10)'), deterministically from
`config.seed`. Members share one data order by default (`population_data='shared'`, the order of
`config.seed`): one host batch feeds all of them. Member i is trained, early-stopped and evaluated exactly as
a single run with its settings, `seed` = its seed and `data_seed` = the population's seed would be (tested);
`population_data='per_member'` gives each member its own order instead (the single run with its seed).
The setting with the best validation precision (the mean over its `population_replicas` seeds, one by
default) is reported on test. `train_population` lists what makes members cheap: shared batches, stopped
members leaving the program, successive halving, a validation-query subset.
"""

import functools
import json
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from dtr import checkpoint, methods, train
from dtr import input_pipeline as ip
from dtr.data import Corpus, Split, flat_rows, load_corpus

_SPEC = re.compile(r'^\s*(log_uniform|uniform|choice)\((.*)\)\s*$')


def sample_value(spec: str, rng: np.random.Generator) -> float:
  match = _SPEC.match(spec)
  if not match:
    raise ValueError(f'Bad population_search spec {spec!r}: use log_uniform(a,b), uniform(a,b) or choice(x,y,...).')
  kind, args = match.group(1), [float(a) for a in match.group(2).split(',')]
  if kind == 'choice':
    return float(rng.choice(args))
  lo, hi = args
  return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if kind == 'log_uniform' else float(rng.uniform(lo, hi))


def member_settings(config, method, size: int) -> list[dict]:
  """[{'seed': ..., 'setting': j, hparam: value, ...}] for every member.

  Members come in `population_replicas` consecutive copies of one setting (the same hyperparameters, seeds
  that differ), so that settings can be ranked by their mean over seeds; setting 0 is the config's own.
  """
  defaults = {k: float(v) for k, v in method.default_hparams().items()}
  unknown = set(config.population_search) - set(defaults)
  if unknown:
    hint = (' (view_dropout only when model.view_dropout > 0: whether a view exists is fixed per program)'
            if 'view_dropout' in unknown else '')
    raise ValueError(f'population_search names {sorted(unknown)}; {config.model.name} can vary '
                     f'{sorted(defaults)}{hint}.')
  replicas = int(config.get('population_replicas', 1))
  if replicas < 1 or size % replicas:
    raise ValueError(f'population={size} must be a multiple of population_replicas={replicas} (>= 1): each '
                     'setting is trained with that many seeds.')
  rng = np.random.default_rng([config.seed, 7919])
  members = []
  for j in range(size // replicas):
    hp = dict(defaults)
    if j > 0:
      for name, spec in sorted(config.population_search.items()):
        hp[name] = sample_value(spec, rng)
      if 'prior_learning_rate' in hp and 'prior_learning_rate' not in config.population_search:
        hp['prior_learning_rate'] = hp['learning_rate']
    members += [{'seed': int(config.seed) + len(members) + r, 'setting': j, **hp} for r in range(replicas)]
  return members


def setting_means(members: list[dict], values) -> dict[int, float]:
  """{setting: mean of `values` over its replicas} (values indexed by member; None counts as -1)."""
  sums: dict[int, list] = {}
  for m, v in zip(members, values):
    sums.setdefault(m['setting'], []).append(-1.0 if v is None else v)
  return {j: float(np.mean(v)) for j, v in sums.items()}


def population_batches(split: Split, seeds, epoch: int, batch_size: int, start_step: int, steps_per_call: int):
  """Like `ip.chunk_batches`, one data order per member: arrays [P, K, 1, T], one group per member step."""
  orders = [ip.epoch_order(s, epoch, split.num_docs) for s in seeds]
  for step, k in ip.chunk_windows(ip.steps_per_epoch(split.num_docs, batch_size), start_step, steps_per_call):
    rows = np.stack([ip.chunk_rows(o, step, k, batch_size, steps_per_call) for o in orders])  # [P, K, B]
    groups = rows.reshape(-1, batch_size)
    ids, vals, seg = flat_rows(split.tfidf, groups)
    shape = rows.shape[:2] + (1, -1)
    yield step, k, {'ids': ids.reshape(shape), 'vals': vals.reshape(shape), 'seg': seg.reshape(shape),
                    'mask': np.ones(rows.shape[:2] + (1, batch_size), np.float32),
                    'valid': np.arange(steps_per_call) < k}


@functools.lru_cache(maxsize=None)
def _members_encoder(method):
  """jit(vmap(encode)) over members, built once per method (a new vmap each call would retrace and recompile)."""
  return jax.jit(jax.vmap(method.encode, in_axes=(0, None)))


@functools.lru_cache(maxsize=None)
def _members_codes_from_logits(method):
  return jax.jit(jax.vmap(method.codes_from_logits))


def encode_population(method, params_P, split: Split, batch_size: int = 1024) -> np.ndarray:
  """Codes [P, N, m] of every member for every document of `split`.

  A method whose encoder is one linear map of the TF-IDF (`linear_encoder`) is encoded for all members by
  one sparse product on the host, X [N, V] @ [V, P * F] (scipy streams contiguous rows of all members'
  weights: 0.40 s against 2.6 s for a vmapped gather, ng20 train split, 100 members, 2-core CPU); the logits go
  through the method's own `codes_from_logits`.
  """
  linear = getattr(method, 'linear_encoder', None)
  layer = linear(params_P) if linear is not None else None
  if layer is not None:
    kernel_PxVxF, bias_PxF = (np.asarray(x, np.float32) for x in layer)
    size, vocab, features = kernel_PxVxF.shape
    kernel_VxPF = np.ascontiguousarray(kernel_PxVxF.transpose(1, 0, 2)).reshape(vocab, size * features)
    codes = _members_codes_from_logits(method)
    out = []
    for start in range(0, split.num_docs, batch_size * 8):
      logits_NxPxF = np.asarray(split.tfidf[start:start + batch_size * 8] @ kernel_VxPF).reshape(-1, size, features)
      out.append(np.asarray(codes(jnp.asarray((logits_NxPxF + bias_PxF).transpose(1, 0, 2)))))
    return np.concatenate(out, axis=1) if out else np.zeros((size, 0, method.num_bits), np.int8)
  encode = _members_encoder(method)
  out = [np.asarray(encode(params_P, {k: jnp.asarray(v) for k, v in b.items()}))[:, :n]
         for n, b in ip.eval_batches(split, batch_size)]
  return np.concatenate(out, axis=1)


def _population_options(config) -> dict:
  """The population's cost options, checked: see `train_population`."""
  data = config.get('population_data', 'shared')
  if data not in ('shared', 'per_member'):
    raise ValueError(f"population_data={data!r}: use 'shared' (one data order for all members, one host batch "
                     "per step) or 'per_member' (each member its own order, as separate runs with its seed).")
  queries, rescore = int(config.get('population_valid_queries', 0)), int(config.get('population_rescore', 10))
  if queries < 0 or rescore < 1:
    raise ValueError(f'population_valid_queries must be >= 0 (0: all) and population_rescore >= 1, got '
                     f'{queries} and {rescore}.')
  spec = str(config.get('population_prune_epochs', '') or '')
  try:
    prune_epochs = sorted({int(e) for e in spec.replace(' ', '').split(',') if e})
  except ValueError:
    prune_epochs = [0]
  keep = float(config.get('population_prune_keep', 1 / 3))
  if any(e < 1 for e in prune_epochs) or not 0 < keep < 1:
    raise ValueError(f'population_prune_epochs={spec!r} must list epochs >= 1 (e.g. "4,8,16"; "" = no pruning) '
                     f'and population_prune_keep a fraction in (0, 1), got {keep}.')
  return {'shared': data == 'shared', 'valid_queries': queries, 'rescore': rescore,
          'prune_epochs': prune_epochs, 'prune_keep': keep}


def valid_subset(split: Split, num_queries: int, seed: int) -> Split:
  """A fixed random subset of `num_queries` validation documents (in split order), or the whole split."""
  if not 0 < num_queries < split.num_docs:
    return split
  rows = np.sort(np.random.default_rng([seed, 31337]).choice(split.num_docs, num_queries, replace=False))
  return split.take(rows)


def bucket_rows(active: list[int], size: int, devices: int = 1) -> np.ndarray:
  """Member rows trained (or encoded) together: `active` padded with other members up to a bucket size.

  Bucket sizes are size, size/2, size/4, ... (rounded up to whole devices): the smallest that holds the
  active members. At most log2(size) distinct sizes, so few compilations, while stopped members stop
  costing compute.
  """
  whole_devices = lambda n: -(-n // devices) * devices
  bucket = size
  while len(active) <= whole_devices(-(-bucket // 2)) < bucket:
    bucket = whole_devices(-(-bucket // 2))
  if bucket == size:
    return np.arange(size)
  running = set(active)
  others = [i for i in range(size) if i not in running]
  return np.asarray(list(active) + others[:bucket - len(active)])


def _take(tree, rows):
  return jax.tree.map(lambda x: x[rows], tree)


def _put(tree, rows, sub, count):
  """`tree` with members rows[:count] replaced by the first `count` members of `sub`."""
  rows = jnp.asarray(rows[:count])
  return jax.tree.map(lambda x, y: x.at[rows].set(y[:count]), tree, sub)


def train_population(config, workdir: str, corpus: Corpus | None = None) -> dict:
  """Trains `config.population` members; writes population_results.json and the best member's outputs.

  What a member costs on one host:
  - members share a data order by default (`population_data='shared'`): one host batch feeds every member;
  - members that have stopped (early stopping, pruning) are neither trained nor validated: the running ones
    are gathered into a smaller vmapped program (bucket sizes P, P/2, P/4, ...: few compilations);
  - `population_valid_queries=n` ranks members every epoch on a fixed random subset of n validation queries
    (the exact top-k precision of fewer queries: the same estimate with more noise); at the end the
    `population_rescore` best are re-validated on the whole split and the pick is made among them;
  - `population_prune_epochs='4,8,16'` is successive halving: after each listed epoch only the best
    `population_prune_keep` of the running settings (by best validation so far, the mean over a setting's
    `population_replicas` seeds) go on; the others stop there.
  Without pruning every member is trained and early-stopped exactly as a single run (tested).
  """
  size = int(config.population)
  if size < 1:
    raise ValueError(f'config.population must be >= 1 members, got {size}.')
  if jax.process_count() > 1:
    raise NotImplementedError('Population runs are single-process; run one population per host.')
  opts = _population_options(config)
  shared = opts['shared']
  os.makedirs(workdir, exist_ok=True)
  corpus = corpus or load_corpus(config.data)
  train.announce_data(corpus)
  split = corpus.splits['train']
  valid_split = valid_subset(corpus.splits['valid'], opts['valid_queries'], config.seed)
  method = methods.get_method(config.model, vocab_size=len(corpus.vocab))
  ip.check_batch_size(config.batch_size, split.num_docs)
  members = member_settings(config, method, size)
  seeds = [m['seed'] for m in members]
  hparams = {k: jnp.asarray([m[k] for m in members], jnp.float32) for k in method.default_hparams()}

  mesh = ip.make_mesh()
  devices = jax.device_count()
  members_sharding = NamedSharding(mesh, P(ip.DATA_AXIS))
  place = lambda t: jax.device_put(t, members_sharding) if len(jax.tree.leaves(t)[0]) % devices == 0 else t
  place_batch = (lambda t: jax.device_put(t, ip.replicated(mesh))) if shared else place
  _, _, sample = next(population_batches(split, seeds[:1], 0, config.batch_size, 0, 1))
  sample = {k: v[0, 0] for k, v in sample.items() if k != 'valid'}
  states = place(_init_members(method, seeds, sample, hparams))
  best_params = jax.tree.map(jnp.copy, states['method']['params'])
  meta = {'epoch': 0, 'step_in_epoch': 0, 'best_metric': [-1.0] * size, 'best_epoch': [-1] * size,
          'bad_epochs': [0] * size, 'done': [False] * size, 'pruned_at': [None] * size, 'history': []}
  mngr = checkpoint.manager(os.path.join(workdir, 'checkpoints'), max_to_keep=config.checkpoint_keep)
  restored = checkpoint.restore_latest(mngr, checkpoint.abstract_like({'train': states, 'best_params': best_params}))
  if restored is not None:
    (ckpt, meta, _) = restored
    states, best_params = ckpt['train'], ckpt['best_params']
    meta.setdefault('pruned_at', [None] * size)

  batch_axis = None if shared else 0
  step_fn = jax.jit(jax.vmap(train.scan_steps(method), in_axes=(0, {'ids': batch_axis, 'vals': batch_axis,
                                                                   'seg': batch_axis, 'mask': batch_axis,
                                                                   'valid': None})), donate_argnums=0)
  t_start = time.time()
  while not all(meta['done']) and meta['epoch'] < config.num_epochs:
    epoch, t0 = meta['epoch'], time.time()
    active = [i for i in range(size) if not meta['done'][i]]
    rows = bucket_rows(active, size, devices)
    sub = states if len(rows) == size else place(_take(states, rows))
    order_seeds = [ip.data_seed(config)] if shared else [seeds[i] for i in rows]
    for step_lo, k, batch in ip.prefetch(population_batches(split, order_seeds, epoch, config.batch_size,
                                                            meta['step_in_epoch'], config.steps_per_call)):
      valid = batch.pop('valid')
      if shared:
        batch = {name: v[0] for name, v in batch.items()}
      sub, metrics = step_fn(sub, {**place_batch(batch), 'valid': valid})
      meta['step_in_epoch'] = step_lo + k
    states = sub if len(rows) == size else _put(states, rows, sub, len(active))
    losses = np.full((size, k), np.nan)
    losses[rows] = np.asarray(metrics['loss'])[:, :k]
    finite = np.isfinite(losses).all(1)
    if not finite[active].all():
      logging.warning('Members %s have a non-finite loss at epoch %d; they stop improving.',
                      [i for i in active if not finite[i]], epoch)
    t_train = time.time() - t0
    params = states['method']['params']
    (scores,) = validate_members(config, method, params, active, split, valid_split)
    improved = [i in scores and finite[i] and scores[i] > meta['best_metric'][i] for i in range(size)]
    mask = jnp.asarray(improved)
    best_params = jax.tree.map(lambda new, old: jnp.where(mask.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
                               params, best_params)
    for i in active:
      if improved[i]:
        meta['best_metric'][i], meta['best_epoch'][i], meta['bad_epochs'][i] = scores[i], epoch, 0
      else:
        meta['bad_epochs'][i] += 1
      meta['done'][i] = meta['bad_epochs'][i] >= config.patience
    pruned = _prune(meta, members, epoch + 1, opts)
    meta['history'].append({'epoch': epoch, 'valid': [scores.get(i) for i in range(size)]})
    meta.update(epoch=epoch + 1, step_in_epoch=0)
    values = list(scores.values())
    print(f'epoch {epoch:3d} | valid P@{config.eval_k} best member {100 * max(values):.2f} '
          f'median {100 * float(np.median(values)):.2f} ({len(values)} trained) | {sum(meta["done"])}/{size} '
          f'stopped{f" ({pruned} pruned)" if pruned else ""} | {t_train:.1f}s train, '
          f'{time.time() - t0 - t_train:.1f}s valid', flush=True)
    checkpoint.save(mngr, epoch + 1, {'train': states, 'best_params': best_params}, meta)
  return _finish(config, workdir, corpus, method, members, best_params, meta, time.time() - t_start, opts,
                 valid_split)


def _prune(meta, members, epochs_done: int, opts) -> int:
  """Successive halving: after a listed epoch, stops all but the best running settings (by the mean over
  their replicas of the best validation so far). Returns how many members it stopped."""
  if epochs_done not in opts['prune_epochs']:
    return 0
  running = sorted({m['setting'] for m, done in zip(members, meta['done']) if not done})
  means = setting_means(members, meta['best_metric'])
  keep = max(1, int(np.ceil(len(running) * opts['prune_keep'])))
  dropped = set(sorted(running, key=lambda j: (-means[j], j))[keep:])
  stopped = [i for i, m in enumerate(members) if m['setting'] in dropped and not meta['done'][i]]
  for i in stopped:
    meta['done'][i], meta['pruned_at'][i] = True, epochs_done
  return len(stopped)


def validate_members(config, method, params_P, members: list[int], db_split: Split,
                     *query_splits: Split) -> list[dict]:
  """[{member: precision@k}] of the listed members, one dict per query split: each split's codes against the
  members' `db_split` codes (encoded once for all query splits)."""
  if not members:
    return [{} for _ in query_splits]
  size = _num_members(params_P)
  rows = bucket_rows(members, size)
  params = params_P if len(rows) == size else _take(params_P, jnp.asarray(rows))
  db = encode_population(method, params, db_split, config.eval_batch_size)
  position = {int(m): j for j, m in enumerate(rows)}
  scores = []
  for query_split in query_splits:
    queries = encode_population(method, params, query_split, config.eval_batch_size)
    scores.append({m: train.precision(queries[position[m]], query_split, db[position[m]], db_split,
                                      config.eval_k) for m in members})
  return scores


def _num_members(params_P) -> int:
  return jax.tree.leaves(params_P)[0].shape[0]


def _init_members(method, seeds, sample, hparams):
  """`train.init_train_state` of every member (jax.random.key takes the traced seed)."""
  init = jax.jit(jax.vmap(lambda seed, hp: train.init_train_state(method, seed, sample, hp)))
  return init(jnp.asarray(seeds, jnp.uint32), hparams)


def _finish(config, workdir, corpus, method, members, best_params, meta, seconds, opts, ranking_split) -> dict:
  """Picks the best setting on validation, scores the leading ones on test, writes population_results.json.

  A setting's score is the mean over its replicas (one member each without `population_replicas`). When
  members were ranked on a validation subset (`ranking_split`), the `population_rescore` settings best on
  it are re-validated on the whole split (their members' best parameters) and the pick is made among them;
  test precision is computed for the members of those settings only.
  """
  k = config.eval_k
  train_split, valid_split, test_split = (corpus.splits[s] for s in ('train', 'valid', 'test'))
  subset = ranking_split is not valid_split
  means = setting_means(members, meta['best_metric'])
  leading = sorted(means, key=lambda j: (-means[j], j))[:opts['rescore']]
  scored = [i for i, m in enumerate(members) if m['setting'] in leading]
  if subset:
    full_valid, test = validate_members(config, method, best_params, scored, train_split, valid_split, test_split)
  else:
    (test,) = validate_members(config, method, best_params, scored, train_split, test_split)
    full_valid = {i: meta['best_metric'][i] for i in scored}
  rows = []
  for i, m in enumerate(members):
    row = {**m, f'valid_precision@{k}': full_valid.get(i), 'best_epoch': meta['best_epoch'][i],
           'valid_history': [h['valid'][i] for h in meta['history'] if h['valid'][i] is not None],
           f'test_precision@{k}': test.get(i), 'pruned_at_epoch': meta['pruned_at'][i]}
    if subset:
      row[f'valid_subset_precision@{k}'] = meta['best_metric'][i]
    rows.append(row)
  valid_means = setting_means([members[i] for i in scored], [full_valid[i] for i in scored])
  test_means = setting_means([members[i] for i in scored], [test[i] for i in scored])
  best_setting = max(leading, key=lambda j: (valid_means[j], -j))
  replicas = [i for i, m in enumerate(members) if m['setting'] == best_setting]
  best = replicas[0]
  settings = {key: value for key, value in members[best].items() if key not in ('seed', 'setting')}
  results = {'dataset': corpus.name, 'synthetic': corpus.synthetic, 'bits': method.num_bits,
             'population': len(members), 'replicas': len(replicas), 'seconds': seconds,
             'epochs_run': meta['epoch'], 'best_member': best, 'best_setting': best_setting,
             'best_members': replicas, f'valid_precision@{k}': valid_means[best_setting],
             f'test_precision@{k}': test_means[best_setting], 'best_settings': members[best],
             'best_hparams': settings, 'members': rows, 'config': json.loads(config.to_json())}
  with open(os.path.join(workdir, 'population_results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  over = f' (mean of {len(replicas)} seeds)' if len(replicas) > 1 else ''
  print(f'best setting {best_setting}, member {best}: valid P@{k} {100 * valid_means[best_setting]:.2f}, test '
        f'P@{k} {100 * test_means[best_setting]:.2f}{over}; settings {settings}; {seconds:.0f}s for '
        f'{len(members)} members', flush=True)
  return results
