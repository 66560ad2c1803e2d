"""Population training: P settings of one method trained in ONE compiled program.

Random search (the AMMI paper's protocol: N runs per cell, best on validation) becomes a `jax.vmap` over
members for everything that changes no array shape: each member has its own seed (initialisation and data
order), learning rates, entropy weight, clip and init range (the method's `HPARAMS`, kept in its state).
Shape-changing choices (batch size, G, prior layers, code length) form separate populations: `dtr.sweep`.

Member 0 is the config's own setting; members 1..P-1 draw their settings from `config.population_search`
(specs such as 'log_uniform(0.001,0.03)', 'uniform(1.5,4)', 'choice(0,1,5,10)'), deterministically from
`config.seed`. Every member is trained, early-stopped and evaluated exactly as a single run with the same
settings would be (tested); the member with the best validation precision is reported on test.
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
  """[{'seed': ..., hparam: value, ...}] for every member; member 0 is the config's own setting."""
  defaults = {k: float(v) for k, v in method.default_hparams().items()}
  unknown = set(config.population_search) - set(defaults)
  if unknown:
    raise ValueError(f'population_search names {sorted(unknown)}; {config.model.name} can vary {sorted(defaults)}.')
  rng = np.random.default_rng([config.seed, 7919])
  members = []
  for i in range(size):
    hp = dict(defaults)
    if i > 0:
      for name, spec in sorted(config.population_search.items()):
        hp[name] = sample_value(spec, rng)
      if 'prior_learning_rate' in hp and 'prior_learning_rate' not in config.population_search:
        hp['prior_learning_rate'] = hp['learning_rate']
    members.append({'seed': int(config.seed) + i, **hp})
  return members


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


def encode_population(method, params_P, split: Split, batch_size: int = 1024) -> np.ndarray:
  """Codes [P, N, m] of every member for every document of `split`."""
  encode = _members_encoder(method)
  out = [np.asarray(encode(params_P, {k: jnp.asarray(v) for k, v in b.items()}))[:, :n]
         for n, b in ip.eval_batches(split, batch_size)]
  return np.concatenate(out, axis=1)


def train_population(config, workdir: str, corpus: Corpus | None = None) -> dict:
  """Trains `config.population` members; writes population_results.json and the best member's outputs."""
  size = int(config.population)
  if size < 1:
    raise ValueError(f'config.population must be >= 1 members, got {size}.')
  if jax.process_count() > 1:
    raise NotImplementedError('Population runs are single-process; run one population per host.')
  os.makedirs(workdir, exist_ok=True)
  corpus = corpus or load_corpus(config.data)
  train.announce_data(corpus)
  split = corpus.splits['train']
  method = methods.get_method(config.model, vocab_size=len(corpus.vocab))
  ip.check_batch_size(config.batch_size, split.num_docs)
  members = member_settings(config, method, size)
  seeds = [m['seed'] for m in members]
  hparams = {k: jnp.asarray([m[k] for m in members], jnp.float32) for k in method.default_hparams()}

  mesh = ip.make_mesh()
  members_sharding = NamedSharding(mesh, P(ip.DATA_AXIS)) if size % jax.device_count() == 0 else None
  place = (lambda t: jax.device_put(t, members_sharding)) if members_sharding else (lambda t: t)
  _, _, sample = next(population_batches(split, seeds[:1], 0, config.batch_size, 0, 1))
  sample = {k: v[0, 0] for k, v in sample.items() if k != 'valid'}
  states = place(_init_members(method, seeds, sample, hparams))
  best_params = jax.tree.map(jnp.copy, states['method']['params'])
  meta = {'epoch': 0, 'step_in_epoch': 0, 'best_metric': [-1.0] * size, 'best_epoch': [-1] * size,
          'bad_epochs': [0] * size, 'done': [False] * size, 'history': []}
  mngr = checkpoint.manager(os.path.join(workdir, 'checkpoints'), max_to_keep=config.checkpoint_keep)
  restored = checkpoint.restore_latest(mngr, checkpoint.abstract_like({'train': states, 'best_params': best_params}))
  if restored is not None:
    (ckpt, meta, _) = restored
    states, best_params = ckpt['train'], ckpt['best_params']

  step_fn = jax.jit(jax.vmap(train.scan_steps(method), in_axes=(0, {'ids': 0, 'vals': 0, 'seg': 0, 'mask': 0,
                                                                   'valid': None})), donate_argnums=0)
  t_start = time.time()
  while not all(meta['done']) and meta['epoch'] < config.num_epochs:
    epoch, t0 = meta['epoch'], time.time()
    for step_lo, k, batch in ip.prefetch(population_batches(split, seeds, epoch, config.batch_size,
                                                            meta['step_in_epoch'], config.steps_per_call)):
      valid = batch.pop('valid')
      states, metrics = step_fn(states, {**place(batch), 'valid': valid})
      meta['step_in_epoch'] = step_lo + k
    losses = np.asarray(metrics['loss'])[:, :k]
    if not np.all(np.isfinite(losses)):
      logging.warning('Members %s have a non-finite loss at epoch %d; they stop improving.',
                      np.flatnonzero(~np.isfinite(losses).all(1)).tolist(), epoch)
    params = states['method']['params']
    db = encode_population(method, params, split, config.eval_batch_size)
    valid_codes = encode_population(method, params, corpus.splits['valid'], config.eval_batch_size)
    scores = [train.precision(valid_codes[i], corpus.splits['valid'], db[i], split, config.eval_k)
              for i in range(size)]
    improved = [not meta['done'][i] and np.isfinite(losses[i]).all() and scores[i] > meta['best_metric'][i]
                for i in range(size)]
    mask = jnp.asarray(improved)
    best_params = jax.tree.map(lambda new, old: jnp.where(mask.reshape((-1,) + (1,) * (new.ndim - 1)), new, old),
                               params, best_params)
    for i in range(size):
      if meta['done'][i]:
        continue
      if improved[i]:
        meta['best_metric'][i], meta['best_epoch'][i], meta['bad_epochs'][i] = scores[i], epoch, 0
      else:
        meta['bad_epochs'][i] += 1
      meta['done'][i] = meta['bad_epochs'][i] >= config.patience
    meta['history'].append({'epoch': epoch, 'valid': [float(s) for s in scores]})
    meta.update(epoch=epoch + 1, step_in_epoch=0)
    print(f'epoch {epoch:3d} | valid P@{config.eval_k} best member {100 * max(scores):.2f} '
          f'median {100 * float(np.median(scores)):.2f} | {sum(meta["done"])}/{size} stopped | '
          f'{time.time() - t0:.1f}s', flush=True)
    checkpoint.save(mngr, epoch + 1, {'train': states, 'best_params': best_params}, meta)
  return _finish(config, workdir, corpus, method, members, best_params, meta, time.time() - t_start)


def _init_members(method, seeds, sample, hparams):
  """`train.init_train_state` of every member (jax.random.key takes the traced seed)."""
  init = jax.jit(jax.vmap(lambda seed, hp: train.init_train_state(method, seed, sample, hp)))
  return init(jnp.asarray(seeds, jnp.uint32), hparams)


def _finish(config, workdir, corpus, method, members, best_params, meta, seconds) -> dict:
  k = config.eval_k
  train_split, test_split = corpus.splits['train'], corpus.splits['test']
  db = encode_population(method, best_params, train_split, config.eval_batch_size)
  test_codes = encode_population(method, best_params, test_split, config.eval_batch_size)
  rows = []
  for i, m in enumerate(members):
    rows.append({**m, f'valid_precision@{k}': meta['best_metric'][i], 'best_epoch': meta['best_epoch'][i],
                 'valid_history': [h['valid'][i] for h in meta['history']],
                 f'test_precision@{k}': train.precision(test_codes[i], test_split, db[i], train_split, k)})
  best = int(np.argmax(meta['best_metric']))
  results = {'dataset': corpus.name, 'synthetic': corpus.synthetic, 'bits': method.num_bits,
             'population': len(members), 'seconds': seconds, 'epochs_run': meta['epoch'], 'best_member': best,
             f'test_precision@{k}': rows[best][f'test_precision@{k}'], 'best_settings': members[best],
             'members': rows, 'config': json.loads(config.to_json())}
  with open(os.path.join(workdir, 'population_results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  print(f'best member {best} (valid P@{k} {100 * rows[best][f"valid_precision@{k}"]:.2f}): test P@{k} '
        f'{100 * results[f"test_precision@{k}"]:.2f}; settings {members[best]}; {seconds:.0f}s for '
        f'{len(members)} members', flush=True)
  return results
