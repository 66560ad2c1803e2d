"""The training loop of predictive hashing: pair batches, matching accuracy, checkpoints, results.

`dtr.main` calls `train_and_evaluate` when `config.task == 'predictive'` (configs/predictive.py). The epoch
loop is `dtr.train.run_epochs` (K-step `lax.scan` over the mesh, prefetching, orbax checkpoints with
auto-resume, early stopping, TensorBoard), with one-sided encoding by `train.encode_split`. What differs:
a batch is {'x': flat batch, 'y': flat batch} of the same pair rows (both sides batched by
`input_pipeline.chunk_batches` with one seed, hence one order), and the metric is matching accuracy.

Matching accuracy@K (the paper's evaluation): encode every X and Y of a split; query with the code of X_i
against the codes of all Y of the split (Hamming distance, ties by the smaller index, `retrieval.hamming_topk`);
a hit when Y_i is among the K nearest. A random hasher scores about K / N. Early stopping follows the
validation accuracy at `config.eval_k`; results.json reports every K of `config.report_ks` on valid and test.
"""

import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from dtr import checkpoint, methods, train
from dtr import input_pipeline as ip
from dtr.data import pairs as pairs_lib
from dtr.evaluate import retrieval


# ------------------------------------------------------------------------------------------------ data
def pair_chunks(split: pairs_lib.PairSplit, seed: int, epoch: int, batch_size: int, start_step: int,
                steps_per_call: int):
  """Yields (first step, k, host batch {'x': ..., 'y': ..., 'valid': [K]}) as `ip.chunk_batches` does.

  Both sides are batched with the same (seed, epoch) permutation of the same number of rows, so row b of
  the X batch and row b of the Y batch are the two texts of one pair.
  """
  args = (seed, epoch, batch_size, start_step, steps_per_call)
  for (step, k, x), (_, _, y) in zip(ip.chunk_batches(split.x, *args), ip.chunk_batches(split.y, *args)):
    valid = x.pop('valid')
    del y['valid']
    yield step, k, {'x': x, 'y': y, 'valid': valid}


def to_global(host_batch: dict, mesh) -> dict:
  """Global arrays of a pair chunk: examples over `data` (after the step axis), `valid` replicated."""
  sharding = ip.batch_sharding(mesh, 1)
  return {'x': ip.to_global(host_batch['x'], sharding), 'y': ip.to_global(host_batch['y'], sharding),
          **ip.to_global({'valid': host_batch['valid']}, sharding)}


# ------------------------------------------------------------------------------------------------ metric
def matching_accuracy(x_codes: np.ndarray, y_codes: np.ndarray, ks=(100, 10)) -> dict[int, float]:
  """{K: fraction of pairs i whose Y_i is among the K nearest Y codes of X_i}, codes int [N, m] of 0/1."""
  num_pairs = len(x_codes)
  if len(y_codes) != num_pairs:
    raise ValueError(f'matching needs one Y code per X code, got {num_pairs} and {len(y_codes)}')
  if max(ks) > num_pairs:
    raise ValueError(f'matching accuracy@{max(ks)} needs at least {max(ks)} pairs, the split has {num_pairs}; '
                     'lower config.eval_k / config.report_ks')
  idx_NxK, _ = retrieval.hamming_topk(retrieval.pack_bits(x_codes), retrieval.pack_bits(y_codes), max(ks))
  hit_NxK = np.asarray(idx_NxK) == np.arange(num_pairs)[:, None]
  # The neighbours are sorted by (distance, index), so the K nearest are a prefix of the max(ks) nearest.
  return {k: float(np.mean(np.any(hit_NxK[:, :k], axis=1))) for k in ks}


def encode_pairs(method, params, split: pairs_lib.PairSplit, mesh, batch_size: int):
  """(X codes, Y codes), int8 [N, m] each: q_phi / p_psi for AMMI, the one encoder for the baselines."""
  return (train.encode_split(method.x_side, params, split.x, mesh, batch_size),
          train.encode_split(method.y_side, params, split.y, mesh, batch_size))


def evaluate(config, split, method, params, mesh, ks) -> dict[int, float]:
  x_codes, y_codes = encode_pairs(method, params, split, mesh, config.eval_batch_size)
  return matching_accuracy(x_codes, y_codes, ks)


# ------------------------------------------------------------------------------------------------ loop
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       corpus: pairs_lib.PairCorpus | None = None) -> dict:
  """Trains `config.model` on the pairs of `config.data`, keeps the best model on validation matching
  accuracy@eval_k, writes codes and results.json (valid and test matching accuracy@K for K in report_ks)."""
  train.maybe_initialize_distributed(config)
  os.makedirs(workdir, exist_ok=True)
  t_start = time.time()

  # --- data
  corpus = corpus or pairs_lib.load_pair_corpus(config.data)
  sizes = {name: s.num_pairs for name, s in corpus.splits.items()}
  logging.info('Pairs %s: %d train / %d valid / %d test, vocab %d%s', corpus.name, sizes['train'],
               sizes['valid'], sizes['test'], len(corpus.vocab), ' (SYNTHETIC)' if corpus.synthetic else '')
  train_split = corpus.splits['train']
  method = methods.get_predictive_method(config.model, vocab_size=len(corpus.vocab))
  ip.check_batch_size(config.batch_size, train_split.num_pairs)
  ks = tuple(sorted({config.eval_k, *config.report_ks}, reverse=True))
  for name in ('valid', 'test'):
    if max(ks) > sizes[name]:
      raise ValueError(f'matching accuracy@{max(ks)} needs at least {max(ks)} pairs in {name!r}, which has '
                       f'{sizes[name]}; lower config.eval_k / config.report_ks')

  # --- mesh, state, and the shared epoch loop (checkpoints, early stopping on valid matching accuracy)
  mesh = ip.make_mesh()
  _, _, sample = next(pair_chunks(train_split, config.seed, 0, config.batch_size, 0, 1))
  sample = {side: {k: v[0] for k, v in sample[side].items()} for side in ('x', 'y')}
  state = train.init_train_state(method, config.seed, sample)
  best_params, meta = train.run_epochs(
      config, workdir, method, mesh, state,
      chunks=lambda epoch, start: pair_chunks(train_split, config.seed, epoch, config.batch_size, start,
                                              config.steps_per_call),
      place=lambda host_batch: to_global(host_batch, mesh),
      steps_per_epoch=ip.steps_per_epoch(train_split.num_pairs, config.batch_size),
      validate_fn=lambda params: evaluate(config, corpus.splits['valid'], method, params, mesh,
                                          (config.eval_k,))[config.eval_k],
      metric=f'matching_accuracy@{config.eval_k}', metric_label=f'valid matching acc@{config.eval_k}')
  return finish(config, workdir, corpus, method, best_params, mesh, meta, ks, time.time() - t_start)


def finish(config, workdir, corpus, method, best_params, mesh, meta, ks, wall_s) -> dict:
  """Encodes every split with the best model; writes codes, results.json, config.json and the featurizer."""
  codes = {name: encode_pairs(method, best_params, split, mesh, config.eval_batch_size)
           for name, split in corpus.splits.items()}
  results = {'dataset': corpus.name, 'synthetic': corpus.synthetic, 'method': config.model.name,
             'bits': method.num_bits, 'vocab_size': len(corpus.vocab),
             'num_pairs': {name: split.num_pairs for name, split in corpus.splits.items()}}
  for name in ('valid', 'test'):
    for k, acc in matching_accuracy(*codes[name], ks).items():
      results[f'{name}_matching_accuracy@{k}'] = acc
      results[f'{name}_chance@{k}'] = k / corpus.splits[name].num_pairs
  results.update({
      'best_epoch': meta['best_epoch'], 'epochs_run': meta['epoch'], 'wall_time_s': round(wall_s, 1),
      'distinct_test_codes': {side: int(len(np.unique(c, axis=0))) for side, c in zip('xy', codes['test'])},
      'train_loss_history': [h.get('train/loss') for h in meta['history']],
      'valid_history': [h.get(f'valid/matching_accuracy@{config.eval_k}') for h in meta['history']]})
  checkpoint.save_params(os.path.join(workdir, 'best_params'), best_params)  # every process: collective
  if jax.process_index() == 0:
    out = os.path.join(workdir, 'codes')
    os.makedirs(out, exist_ok=True)
    for name, (x_codes, y_codes) in codes.items():
      np.save(os.path.join(out, f'{name}_x_codes.npy'), retrieval.pack_bits(x_codes))
      np.save(os.path.join(out, f'{name}_y_codes.npy'), retrieval.pack_bits(y_codes))
    with open(os.path.join(out, 'FORMAT.txt'), 'w') as f:
      f.write(f'{{split}}_{{x,y}}_codes.npy: uint32 [N, ceil(m/32)], m={method.num_bits}, packed as '
              'dtr.evaluate.retrieval.pack_bits; row i of the x and y files are the two texts of pair i.\n')
    train.write_run_files(workdir, config, corpus, results)
    shown = ', '.join(f'@{k} {100 * results[f"test_matching_accuracy@{k}"]:.2f}' for k in ks)
    print(f'test matching accuracy {shown} ({corpus.name}{", SYNTHETIC DATA" if corpus.synthetic else ""}, '
          f'{config.model.name}, {method.num_bits} bits, best epoch {meta["best_epoch"]})', flush=True)
  return results
