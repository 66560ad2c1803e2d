"""The one training loop shared by every method: mesh, data, init, jitted steps, checkpoints, evals.

Methods own `init`, `train_step` and `encode` (pure functions); this file owns everything else.
"""

import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from dtr import checkpoint, methods
from dtr import input_pipeline as ip
from dtr.data import Corpus, Split, load_corpus
from dtr.evaluate import retrieval


def maybe_initialize_distributed(config) -> None:
  """Multi-host (TPU pod / multi-node GPU): `jax.distributed` when asked by config or `DTR_MULTIHOST=1`."""
  if config.get('multihost') or os.environ.get('DTR_MULTIHOST') == '1':
    jax.distributed.initialize()


# ------------------------------------------------------------------------------------------------ steps
def scan_steps(method):
  """K consecutive train steps of `method` as one `lax.scan` over batches [K, ...] (not jitted).

  `batches['valid'][t]` is False for the steps that pad an epoch's last chunk to K: those are skipped by
  `lax.cond` (no compute, state unchanged, zero metrics), so every chunk has one shape and compiles once.
  """

  def train_chunk(state, batches):
    def body(st, xs):
      batch, valid = xs

      def run(st):
        rng = jax.random.fold_in(st['rng'], st['step'])
        method_state, metrics = method.train_step(st['method'], batch, rng)
        return {'method': method_state, 'rng': st['rng'], 'step': st['step'] + 1}, metrics

      def skip(st):
        shapes = jax.eval_shape(run, st)[1]
        return st, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

      return jax.lax.cond(valid, run, skip, st)

    batches = dict(batches)
    valid = batches.pop('valid')
    return jax.lax.scan(body, state, (batches, valid))

  return train_chunk


def make_train_chunk(method, mesh):
  """jit of `scan_steps`: state replicated and donated, batches sharded over `data` as placed."""
  repl = ip.replicated(mesh)
  # Batches arrive already placed by `ip.to_global` (examples over `data`), so their shardings are kept.
  return jax.jit(scan_steps(method), in_shardings=(repl, None), out_shardings=(repl, repl), donate_argnums=0)


def init_train_state(method, seed: int, sample_batch: dict, hparams=None) -> dict:
  """Method state, RNG (raw key data: checkpointable) and step of a run with this seed."""
  init_rng, train_rng = jax.random.split(jax.random.key(seed))
  method_state = method.init(init_rng, sample_batch) if hparams is None else method.init(
      init_rng, sample_batch, hparams)
  return {'method': method_state, 'rng': jax.random.key_data(train_rng), 'step': jnp.zeros((), jnp.int32)}


@functools.lru_cache(maxsize=None)
def _jitted_encode(method, mesh):
  return jax.jit(method.encode, in_shardings=(ip.replicated(mesh), ip.batch_sharding(mesh)),
                 out_shardings=ip.replicated(mesh))


def encode_split(method, params, split: Split, mesh, batch_size: int = 1024) -> np.ndarray:
  """Codes int8 [N, m] of every document of `split` (Viterbi / the method's deterministic encoder)."""
  devices = jax.device_count()
  batch_size = -(-batch_size // devices) * devices
  encode = _jitted_encode(method, mesh)
  out = [np.asarray(encode(params, ip.to_global(b, ip.batch_sharding(mesh))))[:n]
         for n, b in ip.eval_batches(split, batch_size)]
  return np.concatenate(out) if out else np.zeros((0, method.num_bits), np.int8)


def precision(query_codes, query_split: Split, db_codes, db_split: Split, k: int) -> float:
  return float(retrieval.precision_at_k(retrieval.pack_bits(query_codes), query_split.labels,
                                        retrieval.pack_bits(db_codes), db_split.labels, k=k))


def validate(config, corpus: Corpus, method, params, mesh) -> float:
  """Validation precision@k: validation codes as queries against the training codes."""
  db_codes = encode_split(method, params, corpus.splits['train'], mesh, config.eval_batch_size)
  valid_codes = encode_split(method, params, corpus.splits['valid'], mesh, config.eval_batch_size)
  return precision(valid_codes, corpus.splits['valid'], db_codes, corpus.splits['train'], config.eval_k)


# ------------------------------------------------------------------------------------------------ loop
def announce_data(corpus: Corpus) -> None:
  s = corpus.splits
  logging.info('Data %s: %d train / %d valid / %d test docs, vocab %d, %d labels%s', corpus.name,
               s['train'].num_docs, s['valid'].num_docs, s['test'].num_docs, len(corpus.vocab),
               len(corpus.label_names), ' (SYNTHETIC)' if corpus.synthetic else '')


def _write_scalars(writer, step, scalars):
  if writer is not None:
    for k, v in scalars.items():
      writer.add_scalar(k, v, step)
    writer.flush()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, corpus: Corpus | None = None) -> dict:
  """Trains `config.model` on `config.data`, keeps the best model on validation, writes codes and results."""
  maybe_initialize_distributed(config)
  os.makedirs(workdir, exist_ok=True)

  # --- data
  corpus = corpus or load_corpus(config.data)
  announce_data(corpus)
  train_split = corpus.splits['train']
  method = methods.get_method(config.model, vocab_size=len(corpus.vocab))
  ip.check_batch_size(config.batch_size, train_split.num_docs)
  if config.eval_k > train_split.num_docs:
    raise ValueError(f'eval_k={config.eval_k} exceeds the {train_split.num_docs} training documents '
                     '(the retrieval database); lower eval_k.')

  # --- mesh and state
  mesh = ip.make_mesh()
  logging.info('Mesh: %d devices (%s) over %d processes', jax.device_count(), jax.devices()[0].platform,
               jax.process_count())
  if methods.is_fitted(method):
    return fit_and_evaluate(config, workdir, corpus, method, mesh)
  _, _, sample = next(ip.chunk_batches(train_split, config.seed, 0, config.batch_size, 0, 1))
  state = init_train_state(method, config.seed, {k: v[0] for k, v in sample.items() if k != 'valid'})
  sharding = ip.batch_sharding(mesh, 1)
  order_seed = ip.data_seed(config)
  best_params, meta = run_epochs(
      config, workdir, method, mesh, state,
      chunks=lambda epoch, start: ip.chunk_batches(train_split, order_seed, epoch, config.batch_size, start,
                                                   config.steps_per_call),
      place=lambda host_batch: ip.to_global(host_batch, sharding),
      steps_per_epoch=ip.steps_per_epoch(train_split.num_docs, config.batch_size),
      validate_fn=lambda params: validate(config, corpus, method, params, mesh),
      metric=f'precision_at_{config.eval_k}', metric_label=f'valid P@{config.eval_k}')
  return finish(config, workdir, corpus, method, best_params, mesh, meta)


def run_epochs(config, workdir, method, mesh, state, *, chunks, place, steps_per_epoch, validate_fn, metric,
               metric_label):
  """The epoch loop every trained method shares; returns (best parameters, meta).

  K jitted steps per call (`make_train_chunk`), host chunks built ahead on a thread (`ip.prefetch`);
  validation after every epoch (`validate_fn(params) -> float`, higher is better) with early stopping after
  `config.patience` epochs without improvement, the best parameters kept; orbax checkpoints of everything
  (state, best parameters, data position, early-stopping counters) every `checkpoint_every_steps` and at
  every epoch's end, resumed from the latest one in `workdir`; TensorBoard scalars and a progress bar.
  `chunks(epoch, first_step)` yields (first step, k, host batch) from a step of an epoch on; `place` turns a
  host batch into global arrays. The history records `valid/{metric}` and the mean train metrics.
  """
  is_main = jax.process_index() == 0
  state = jax.device_put(state, ip.replicated(mesh))
  best_params = jax.tree.map(jnp.copy, state['method']['params'])
  meta = {'epoch': 0, 'step_in_epoch': 0, 'best_metric': -1.0, 'best_epoch': -1, 'bad_epochs': 0,
          'history': [], 'done': False}

  # --- checkpoint
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  mngr = checkpoint.manager(ckpt_dir, max_to_keep=config.checkpoint_keep)
  restored = checkpoint.restore_latest(mngr, checkpoint.abstract_like({'train': state, 'best_params': best_params}))
  if restored is not None:
    ckpt, meta, ckpt_step = restored
    state, best_params = ckpt['train'], ckpt['best_params']
    logging.info('Resuming at step %d (epoch %d, step %d of the epoch)', ckpt_step, meta['epoch'],
                 meta['step_in_epoch'])
  last_good = restored[2] if restored else None  # step of the latest checkpoint on disk

  def save():
    nonlocal last_good
    step = int(state['step'])
    checkpoint.save(mngr, step, {'train': state, 'best_params': best_params}, meta)
    last_good = step

  # --- the jitted step; per-step randomness is fold_in(rng, step) inside it
  train_chunk = make_train_chunk(method, mesh)
  writer = None
  if is_main and config.get('tensorboard', False):
    from tensorboardX import SummaryWriter
    writer = SummaryWriter(os.path.join(workdir, 'tensorboard'))

  def check_finite(step_lo, metrics):
    if not np.all(np.isfinite(metrics['loss'])):
      bad = step_lo + int(np.argmin(np.isfinite(metrics['loss'])))
      where = f'step {last_good} in {ckpt_dir}' if last_good is not None else 'none saved yet'
      raise FloatingPointError(
          f'Non-finite loss at step {bad} (epoch {meta["epoch"]}). Last good checkpoint: {where}. Lower the '
          'learning rate or set a gradient clip (config.model.clip); the run resumes from that checkpoint.')

  while not meta['done'] and meta['epoch'] < config.num_epochs:
    epoch, t0 = meta['epoch'], time.time()
    sums, count, docs = {}, 0, 0
    bar = _progress(steps_per_epoch, meta['step_in_epoch'], f'epoch {epoch}',
                    enabled=is_main and config.get('progress_bar', False))
    for step_lo, k, host_batch in ip.prefetch(chunks(epoch, meta['step_in_epoch'])):
      state, metrics = train_chunk(state, place(host_batch))
      metrics = jax.tree.map(lambda v: v[:k], jax.device_get(metrics))
      check_finite(step_lo, metrics)
      for key, v in metrics.items():
        sums[key] = sums.get(key, 0.0) + float(np.sum(v))
      count, docs = count + k, docs + k * config.batch_size
      meta['step_in_epoch'] = step_lo + k
      bar.update(k)
      if int(state['step']) - (last_good or 0) >= config.checkpoint_every_steps:
        save()
    bar.close()
    train_time = time.time() - t0
    scalars = {f'train/{k}': v / max(count, 1) for k, v in sums.items()}
    scalars['train/docs_per_sec'] = docs / max(train_time, 1e-9)

    # --- validation, early stopping, best model
    params = state['method']['params']
    score = validate_fn(params)
    scalars[f'valid/{metric}'] = score
    improved = score > meta['best_metric']
    if improved:
      best_params = jax.tree.map(jnp.copy, params)
      meta.update(best_metric=score, best_epoch=epoch, bad_epochs=0)
    else:
      meta['bad_epochs'] += 1
    meta['history'].append({'epoch': epoch, **{k: float(v) for k, v in scalars.items()}})
    meta.update(epoch=epoch + 1, step_in_epoch=0)
    meta['done'] = meta['bad_epochs'] >= config.patience
    _write_scalars(writer, int(state['step']), scalars)
    if is_main:
      print(f'epoch {epoch:3d} | loss {scalars.get("train/loss", float("nan")):+.4f} | '
            f'{metric_label} {100 * score:.2f}{" *" if improved else "  "} | '
            f'{scalars["train/docs_per_sec"]:,.0f} docs/s | {time.time() - t0:.1f}s', flush=True)
    save()
  return best_params, meta


def fit_and_evaluate(config, workdir, corpus, method, mesh) -> dict:
  """Closed-form baselines (no train_step): fit on the training split, validate once, write like `finish`."""
  t0 = time.time()
  params = jax.device_put(method.fit(corpus.splits['train'], config.seed), ip.replicated(mesh))
  p_valid = validate(config, corpus, method, params, mesh)
  logging.info('Fitted %s in %.1fs: valid P@%d %.2f', config.model.name, time.time() - t0, config.eval_k,
               100 * p_valid)
  meta = {'epoch': 0, 'best_metric': p_valid, 'best_epoch': -1, 'history': []}
  return finish(config, workdir, corpus, method, params, mesh, meta)


def finish(config, workdir, corpus, method, best_params, mesh, meta) -> dict:
  """Encodes every split with the best model, writes codes, labels and test precision to the workdir."""
  codes = {name: encode_split(method, best_params, split, mesh, config.eval_batch_size)
           for name, split in corpus.splits.items()}
  p_test = precision(codes['test'], corpus.splits['test'], codes['train'], corpus.splits['train'], config.eval_k)
  results = {'dataset': corpus.name, 'synthetic': corpus.synthetic, 'bits': method.num_bits,
             'vocab_size': len(corpus.vocab),
             f'test_precision@{config.eval_k}': p_test, f'valid_precision@{config.eval_k}': meta['best_metric'],
             'best_epoch': meta['best_epoch'], 'epochs_run': meta['epoch'],
             'distinct_train_codes': int(len(np.unique(codes['train'], axis=0))),
             'train_loss_history': [h.get('train/loss') for h in meta['history']],
             'valid_history': [h.get(f'valid/precision_at_{config.eval_k}') for h in meta['history']]}
  checkpoint.save_params(os.path.join(workdir, 'best_params'), best_params)  # every process: orbax is collective
  if jax.process_index() == 0:
    write_outputs(workdir, config, corpus, codes, results)
    print(f'test precision@{config.eval_k}: {100 * p_test:.2f} '
          f'({corpus.name}{", SYNTHETIC DATA" if corpus.synthetic else ""}, {method.num_bits} bits, '
          f'best epoch {meta["best_epoch"]})', flush=True)
  return results


def write_outputs(workdir, config, corpus, codes, results) -> None:
  out = os.path.join(workdir, 'codes')
  os.makedirs(out, exist_ok=True)
  for name, z in codes.items():
    np.save(os.path.join(out, f'{name}_codes.npy'), retrieval.pack_bits(z))
    np.save(os.path.join(out, f'{name}_labels.npy'), corpus.splits[name].labels)
  with open(os.path.join(out, 'FORMAT.txt'), 'w') as f:
    f.write(f'{{split}}_codes.npy: uint32 [N, ceil(m/32)], m={results["bits"]}; bit j of a code is bit j % 32 '
            '(least significant first) of word j // 32 (dtr.evaluate.retrieval.pack_bits / unpack_bits).\n'
            '{split}_labels.npy: bool [N, C] label sets; a retrieved document is relevant when it shares a label.\n')
  with open(os.path.join(out, 'label_names.json'), 'w') as f:
    json.dump([str(n) for n in corpus.label_names], f)
  write_run_files(workdir, config, corpus, results)


def write_run_files(workdir, config, corpus, results) -> None:
  """results.json, config.json and the featuriser (to encode new text the same way) of a finished run."""
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  if corpus.featurizer is not None:
    corpus.featurizer.save(os.path.join(workdir, 'featurizer'))


class _NoBar:
  def update(self, n):
    pass

  def close(self):
    pass


def _progress(total, initial, desc, enabled):
  if not enabled:
    return _NoBar()
  from tqdm import tqdm
  return tqdm(total=total, initial=initial, desc=desc, leave=False, file=sys.stderr, unit='step')
