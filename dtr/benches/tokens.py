r"""The token batcher against the Transformer step it feeds: batches/s of each, side by side.

  python -m dtr.bench tokens [--dataset=dbpedia14] [--batch_size=64] [--steps=200] [--method=vq_vae]

The batcher alone (`dtr.input_pipeline.train_chunks` over the training split, host arrays of padded token ids,
widths bucketed per chunk) against the jitted train step of a discrete VAE (configs/discrete_vae.py, one layer,
d = 64) on the same batches, steady state after compilation. The batcher should be at least 10x faster than
the step, so that host batching (on its prefetch thread) never starves the device.
"""

from __future__ import annotations

import argparse
import time

import jax


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='python -m dtr.bench tokens')
  parser.add_argument('--dataset', default='dbpedia14')
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--steps_per_call', type=int, default=16)
  parser.add_argument('--method', default='vq_vae')
  args = parser.parse_args(argv)
  from dtr import config_utils, members, methods, train  # pylint: disable=g-import-not-at-top
  from dtr import input_pipeline as ip  # pylint: disable=g-import-not-at-top
  from dtr.data import load_corpus  # pylint: disable=g-import-not-at-top
  config = config_utils.load_config_module('discrete_vae').get_config(
      f'method={args.method},dataset={args.dataset}')
  corpus = load_corpus(config.data)
  if corpus.synthetic:
    raise SystemExit(f'{args.dataset}: no real data found (set DTR_DATA_DIR).')
  split = corpus.splits['train']
  method = methods.get_method(config.model, train.data_info(corpus, split.num_docs))
  mesh = ip.make_mesh()
  K, B = args.steps_per_call, args.batch_size

  def chunks(epoch):
    return ip.train_chunks('tokens', split, [ip.epoch_order(0, epoch, split.num_docs)], per_member=False,
                           batch_size=B, start_step=0, steps_per_call=K, sharded=True, fields=method.batch_fields)

  # The batcher alone: host batches per second over whole epochs.
  made, t0 = 0, time.perf_counter()
  epoch = 0
  while made < args.steps * 5:
    for _, k, _ in chunks(epoch):
      made += k
    epoch += 1
  batcher = made / (time.perf_counter() - t0)

  # The train step on the same batches (compiled for every width first).
  _, _, sample = next(chunks(0))
  sample.pop('valid')
  state = members.place_state(members.init_states(method, [members.Member(0, 0)], jax.tree.map(lambda v: v[0], sample)),
                              mesh)
  step = members.train_chunk_fn(method, mesh, 1, True)
  host = list(chunks(1))
  for _, _, b in host:  # compile every chunk shape
    state, m = step(state, members.place_batch(b, mesh, 1, True))
  jax.block_until_ready(m)
  done, t0 = 0, time.perf_counter()
  while done < args.steps:
    for _, k, b in host:
      state, m = step(state, members.place_batch(b, mesh, 1, True))
      done += k
  jax.block_until_ready(m)
  stepper = done / (time.perf_counter() - t0)
  print(f'devices: {jax.device_count()} x {jax.devices()[0].platform}; {args.dataset} train '
        f'({split.num_docs} sentences), batch {B}, {args.method} {config.model.level} M={config.model.num_latents} '
        f'K={config.model.num_values}')
  print(f'token batcher alone: {batcher:,.0f} batches/s | train step: {stepper:,.1f} steps/s | '
        f'batcher / step = {batcher / stepper:,.1f}x')


if __name__ == '__main__':
  main()
