r"""Training and decoding speed of dtr's binary autoencoder against a PyTorch `nn.GRU` one of the same size.

  python -m dtr.bench sentences speed --dataset=yahoo_lm --steps=128     # the paper's sizes (E 300, H 512)
  python -m dtr.bench sentences speed --tiny --steps=8                    # a smoke run on synthetic data

One command measures both, side by side, each in its own child process (so that each one's peak memory is
its own): the parent builds the training batches once with dtr's input pipeline (batch 64, a seeded
order, each chunk of `--steps_per_call` steps padded to one of dtr's length buckets, `TOKEN_WIDTHS`; with
`--buckets=W` the order is first sorted by length within windows of W chunks, `data.length_buckets`, and
with `--pad_to_multiple_of=M` such chunks pad to a multiple of M, `data.pad_to_multiple_of`) and both
children train on exactly those arrays:

  dtr      `SentenceAE` (configs/sentence_ae.py:method=binary_ae; embeddings, bidirectional GRU encoder,
           50-bit straight-through code, GRU decoder from Dense(z), softmax without bias, Adam with a
           global-norm clip), K steps fused per call as the training loop runs them
           (`dtr.members.train_chunk_fn`)
  torch    the same network in PyTorch: `nn.Embedding`, `nn.GRU(bidirectional=True)` over
           `pack_padded_sequence` (final states at each sentence's own length), a 50-bit straight-through
           code, `nn.GRU` decoder from Linear(z), the output layer and cross entropy on the predicted
           positions only (dtr packs them too, `model.pack_targets`), `torch.optim.Adam` after
           `clip_grad_norm_`; one optimizer step per batch

Each child runs every batch once untimed (dtr compiles one program per bucket width; PyTorch warms its
allocator), then times `--repeats` passes over the same batches and keeps the fastest; the children run in
`--rounds` alternating rounds (dtr, PyTorch, dtr, PyTorch, ...), the table shows each figure's median over
the rounds and the training ratio of each round is printed, so that a drift of the machine's speed between
children shows instead of passing for a difference between the frameworks. Reported: training tokens/s
(predicted tokens, n + 1 per sentence with eos, over wall-clock), sentences/s, peak resident memory of the
child (ru_maxrss; and peak device memory where the platform reports it), greedy decoding sentences/s of
`--decode_batch` random codes up to max_len + 1 tokens (both stop when every row has emitted eos; the mean
number of decoder steps is shown, since untrained models of different initialisations stop at different
steps), and dtr / PyTorch.
Threads: JAX and PyTorch use all cores by default (`--threads` sets torch's intra-op threads).
Quiet machine only: timings on a shared machine are meaningless.

`--bound` (on by default) adds a third child that times the step's matrix products alone, at the step's own
shapes, with JAX and (when installed) PyTorch, keeping the faster library per shape (`run_bound`): every
product of the forward pass (input projections of both encoder directions and the decoder, the recurrent
products, the output layer on the predicted positions) and the two of its backward pass, counted on real
tokens only (as PyTorch's packed sequences run them). Their summed time is a lower bound on a training step of
this arithmetic on this machine, whatever the framework: it leaves out every elementwise operation, the
softmax, the optimiser and all loop overhead. The measured PyTorch step over that bound is the most any
implementation of the same network could gain over PyTorch here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

PAD, BOS, EOS = 0, 2, 3


def add_arguments(parser) -> None:
  parser.add_argument('--dataset', default='yahoo_lm')
  parser.add_argument('--size', default='paper', help="'paper' (E 300, H 512, 50 bits, 20000 ids) or 'small'")
  parser.add_argument('--steps', type=int, default=128, help='timed training steps per framework')
  parser.add_argument('--steps_per_call', type=int, default=16)
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--decode_batch', type=int, default=64)
  parser.add_argument('--decode_repeats', type=int, default=5)
  parser.add_argument('--max_len', type=int, default=-1, help='data.max_len (-1: the size preset\'s)')
  parser.add_argument('--buckets', type=int, default=0,
                      help='data.length_buckets: sort sentences by length within windows of this many chunks '
                           '(`length_bucketed`; 0: random chunks)')
  parser.add_argument('--pad_to_multiple_of', type=int, default=0,
                      help='data.pad_to_multiple_of (with --buckets): chunks pad to their longest sentence + 1 '
                           'rounded up to a multiple of this (0: the fine widths, `bucket_widths`)')
  parser.add_argument('--repeats', type=int, default=3, help='timed passes over the batches (the fastest counts)')
  parser.add_argument('--rounds', type=int, default=2, help='dtr, PyTorch, dtr, PyTorch, ...: children per framework')
  parser.add_argument('--threads', type=int, default=0, help='torch.set_num_threads (0: its default)')
  parser.add_argument('--tiny', action='store_true', help='synthetic tiny sizes (a smoke run)')
  parser.add_argument('--which', default='both', choices=('both', 'dtr', 'torch', 'bound'))
  parser.add_argument('--bound', action=argparse.BooleanOptionalAction, default=True,
                      help='also time the step\'s matrix products alone: the lower bound (`run_bound`)')
  parser.add_argument('--batches', default='', help='(internal) the batch file a child reads')


# ------------------------------------------------------------------------------------------------ parent
def make_batches(args, path: str) -> dict:
  """Writes the chunks both frameworks train on to `path` (npz); returns the network's sizes."""
  from dtr import input_pipeline as ip  # pylint: disable=g-import-not-at-top
  ip.check_whole_windows(args.buckets, args.steps, args.steps_per_call)
  if args.pad_to_multiple_of and not args.buckets:
    raise SystemExit('--pad_to_multiple_of sets the widths of length-bucketed chunks: give --buckets too.')
  from dtr.benches import sentences  # pylint: disable=g-import-not-at-top
  config = sentences.sentence_config('binary_ae', args.dataset, 0, args.size, tiny=args.tiny)
  if args.max_len >= 0:
    config.data.max_len = args.max_len
  corpus = sentences.Corpora(args.tiny)(config)
  split = corpus.splits['train']
  ip.check_whole_chunk(split.num_docs, args.batch_size, args.steps_per_call)
  chunks, steps, epoch = {}, 0, 0
  while steps < args.steps:
    order, widths = ip.epoch_rows(ip.epoch_order(0, epoch, split.num_docs), split, window=args.buckets,
                                  batch_size=args.batch_size, steps_per_call=args.steps_per_call, seed=0,
                                  epoch=epoch, multiple=args.pad_to_multiple_of)
    for _, k, host in ip.train_chunks('tokens', split, [order], per_member=False, batch_size=args.batch_size,
                                      start_step=0, steps_per_call=args.steps_per_call, sharded=True,
                                      widths=widths):
      if k < args.steps_per_call:
        continue  # whole chunks only: one program shape per width
      i = len(chunks) // 2
      chunks[f'tokens_{i}'], chunks[f'lengths_{i}'] = host['tokens'], host['lengths']
      steps += k
      if steps >= args.steps:
        break
    epoch += 1
  np.savez(path, **chunks)
  widths = [chunks[f'tokens_{i}'].shape[-1] for i in range(len(chunks) // 2)]
  predicted = sum(int((chunks[f'lengths_{i}'] + 1).sum()) for i in range(len(chunks) // 2))
  padded = sum(chunks[f'lengths_{i}'].size * w for i, w in enumerate(widths))
  mc = config.model
  max_len = max(int(np.diff(s.tokens.offsets).max(initial=0)) for s in corpus.splits.values())
  return {'vocab': len(corpus.token_vocab), 'embed': int(mc.embed_size), 'hidden': int(mc.hidden_size),
          'bits': int(mc.latent_size), 'dropout': float(mc.dropout), 'learning_rate': float(mc.learning_rate),
          'clip': float(mc.clip), 'max_len': max_len, 'chunks': len(chunks) // 2, 'steps': steps,
          'model': mc.to_dict(), 'dataset': corpus.name + (' (SYNTHETIC)' if corpus.synthetic else ''),
          'widths': widths, 'padding': padded / max(predicted, 1)}


def run(args) -> None:
  if args.which != 'both':
    sizes = json.loads(os.environ['DTR_SPEED_SIZES'])
    result = {'dtr': run_dtr, 'torch': run_torch, 'bound': run_bound}[args.which](args, sizes)
    print('RESULT ' + json.dumps(result), flush=True)
    return
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'batches.npz')
    sizes = make_batches(args, path)
    print(f'{sizes["dataset"]}: {sizes["steps"]} steps of batch {args.batch_size} in chunks of '
          f'{args.steps_per_call}; vocab {sizes["vocab"]}, embed {sizes["embed"]}, hidden {sizes["hidden"]}, '
          f'{sizes["bits"]} bits, max_len {sizes["max_len"]}; {os.cpu_count()} CPUs', flush=True)
    grouping = f'sorted by length in windows of {args.buckets} chunks' if args.buckets else 'random chunks'
    print(f'chunk widths {sizes["widths"]} ({grouping}): {sizes["padding"]:.2f} padded positions per predicted '
          'token (dtr\'s GRUs run over all of them, PyTorch\'s packed GRUs over the predicted ones)', flush=True)
    runs, missing = {}, set()
    for which in ['dtr', 'torch'] * max(args.rounds, 1) + (['bound'] if args.bound else []):
      if which in missing:
        continue
      command = [sys.executable, '-m', 'dtr.bench', 'sentences', 'speed', f'--which={which}', f'--batches={path}',
                 f'--decode_batch={args.decode_batch}', f'--decode_repeats={args.decode_repeats}',
                 f'--threads={args.threads}', f'--batch_size={args.batch_size}',
                 f'--steps_per_call={args.steps_per_call}', f'--repeats={args.repeats}']
      env = dict(os.environ, DTR_SPEED_SIZES=json.dumps(sizes))
      done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
      lines = [l for l in done.stdout.splitlines() if l.startswith('RESULT ')]
      if done.returncode or not lines:
        tail = (done.stderr or done.stdout)[-3000:]
        if which == 'torch' and 'No module named \'torch\'' in tail:
          print('torch is not installed: pip install torch (the `bench` extra); dtr measured alone.', flush=True)
          missing.add(which)
          continue
        raise SystemExit(f'the {which} child failed:\n{tail}')
      runs.setdefault(which, []).append(json.loads(lines[-1][len('RESULT '):]))
  bound = runs.pop('bound', [None])[0]
  results = {which: median_result(r) for which, r in runs.items()}
  print(table(results))
  if 'dtr' in runs and 'torch' in runs:
    ratios = [d['tokens_per_s'] / t['tokens_per_s'] for d, t in zip(runs['dtr'], runs['torch'])]
    print('dtr / PyTorch training tokens/s per round (each child its fastest of '
          f'{args.repeats} passes): ' + ', '.join(f'x{r:.2f}' for r in ratios))
  if bound:
    print(bound_table(bound, results))


def median_result(results: list[dict]) -> dict:
  """Per figure, the median over a framework's rounds (its children)."""
  out = dict(results[0])
  for key, value in results[0].items():
    if isinstance(value, (int, float)):
      out[key] = float(np.median([r[key] for r in results]))
  return out


def table(results: dict) -> str:
  lines = ['| framework | train tokens/s | train sentences/s | ms/step | peak RSS (MiB) | peak device (MiB) '
           '| decode sentences/s | decode steps |', '|---|---|---|---|---|---|---|---|']
  for which, r in results.items():
    device = f'{r["peak_device_mib"]:,.0f}' if r.get('peak_device_mib') else '-'
    lines.append(f'| {r["framework"]} | {r["tokens_per_s"]:,.0f} | {r["sentences_per_s"]:,.0f} | '
                 f'{r["ms_per_step"]:.1f} | {r["peak_rss_mib"]:,.0f} | {device} | '
                 f'{r["decode_sentences_per_s"]:,.0f} '
                 f'| {r["decode_steps"]:.1f} |')
    del which
  if 'dtr' in results and 'torch' in results:
    d, t = results['dtr'], results['torch']
    lines.append(f'\ndtr / PyTorch: training tokens/s x{d["tokens_per_s"] / t["tokens_per_s"]:.2f}, decoding '
                 f'sentences/s x{d["decode_sentences_per_s"] / t["decode_sentences_per_s"]:.2f}, peak RSS '
                 f'x{d["peak_rss_mib"] / t["peak_rss_mib"]:.2f}')
  return '\n'.join(lines)


def _load_chunks(path: str):
  data = np.load(path)
  count = len([k for k in data.files if k.startswith('tokens_')])
  return [(data[f'tokens_{i}'], data[f'lengths_{i}']) for i in range(count)]


def _peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ dtr child
def run_dtr(args, sizes: dict) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from dtr import input_pipeline as ip, members  # pylint: disable=g-import-not-at-top
  from dtr.methods.base import DataInfo  # pylint: disable=g-import-not-at-top
  from dtr.methods.sentence_ae import SentenceAE  # pylint: disable=g-import-not-at-top
  chunks = _load_chunks(args.batches)
  method = SentenceAE(ml_collections.ConfigDict(sizes['model']), 0,
                      DataInfo(token_vocab_size=sizes['vocab'], max_len=sizes['max_len']))
  mesh = ip.make_mesh()
  host = lambda tokens, lengths: {'tokens': tokens, 'lengths': lengths, 'mask': np.ones(lengths.shape, np.float32),
                                  'valid': np.ones(tokens.shape[0], bool)}
  sample = {'tokens': chunks[0][0][0], 'lengths': chunks[0][1][0],
            'mask': np.ones(chunks[0][1].shape[1:], np.float32)}
  state = members.place_state(members.init_states(method, [members.Member(seed=0, order_seed=0)], sample), mesh)
  train_chunk = members.train_chunk_fn(method, mesh, 1, True)

  def epoch(state):
    metrics = None
    for tokens, lengths in chunks:
      state, metrics = train_chunk(state, members.place_batch(host(tokens, lengths), mesh, 1, True))
    jax.block_until_ready(metrics)
    return state

  state = epoch(state)  # compiles every bucket width
  seconds = float('inf')
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    state = epoch(state)
    seconds = min(seconds, time.perf_counter() - t0)
  params = jax.tree.map(lambda x: x[0], state['method']['params'])
  codes = jax.random.bernoulli(jax.random.key(1), 0.5, (args.decode_batch, sizes['bits'])).astype(np.int8)
  max_len = sizes['max_len'] + 1
  decoded = jax.block_until_ready(method.decode(params, codes, max_len=max_len))  # compiles
  t0 = time.perf_counter()
  for _ in range(args.decode_repeats):
    decoded = jax.block_until_ready(method.decode(params, codes, max_len=max_len))
  decode_seconds = time.perf_counter() - t0
  steps = _decode_steps(np.asarray(decoded), max_len)
  stats = jax.devices()[0].memory_stats() or {}
  return _result('dtr (JAX ' + jax.__version__ + f', {jax.devices()[0].platform})', chunks, seconds,
                 args.decode_batch * args.decode_repeats / decode_seconds, steps,
                 stats.get('peak_bytes_in_use', 0) / 2**20)


def _decode_steps(decoded: np.ndarray, max_len: int) -> float:
  """Decoder steps the batch ran: until its longest row's eos (max_len when a row never stopped)."""
  lengths = (decoded != PAD).sum(axis=1)
  return float(min(lengths.max(initial=0) + 1, max_len))


def _result(framework, chunks, seconds, decode_rate, decode_steps, peak_device_mib) -> dict:
  tokens = sum(float((lengths + 1).sum()) for _, lengths in chunks)
  sentences = sum(float(lengths.size) for _, lengths in chunks)
  steps = sum(lengths.shape[0] for _, lengths in chunks)
  return {'framework': framework, 'tokens_per_s': tokens / seconds, 'sentences_per_s': sentences / seconds,
          'ms_per_step': 1000 * seconds / steps, 'peak_rss_mib': _peak_rss_mib(),
          'peak_device_mib': peak_device_mib, 'decode_sentences_per_s': decode_rate, 'decode_steps': decode_steps}


# ------------------------------------------------------------------------------------------------ bound child
def step_products(sizes: dict, chunks) -> list[tuple[str, int, int, int, float]]:
  """The matrix products of one training step: (group, m, k, n, repeats) per product [m, k] @ [k, n], at a
  batch of the mean real sizes of `chunks` (forward products and the two of each backward; rows counted on
  real tokens, the recurrent ones at the full batch, repeated once per step of the mean length)."""
  lengths = np.concatenate([l.reshape(-1, l.shape[-1]) for _, l in chunks]).astype(np.float64)
  batch = lengths.shape[-1]
  enc_rows = float(lengths.sum(axis=-1).mean())             # encoder tokens per batch (per direction)
  dec_rows = float((lengths + 1).sum(axis=-1).mean())       # decoder inputs = predicted positions
  e, h, v = sizes['embed'], sizes['hidden'], sizes['vocab']
  products = []

  def product(group, m, k, n, repeats=1.0):  # forward, then d input = dY W^T and d W = X^T dY
    products.extend([(group, m, k, n, repeats), (group, m, n, k, repeats), (group, k, m, n, repeats)])

  product('input projections', round(enc_rows), e, 3 * h, 2.0)
  product('input projections', round(dec_rows), e, 3 * h)
  product('recurrent products', batch, h, 3 * h, (2 * enc_rows + dec_rows) / batch)
  product('output layer', round(dec_rows), h, v)
  return products


def _time_jax(m, k, n, loops: int) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  @jax.jit
  def loop(x, w):
    def body(_, c):  # x + c keeps each product inside the loop (nothing to hoist)
      return c + 1e-30 * ((x + c) @ w)[0, 0]
    return jax.lax.fori_loop(0, loops, body, jnp.zeros((), x.dtype))

  x, w = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
  loop(x, w).block_until_ready()
  best = float('inf')
  for _ in range(3):
    t0 = time.perf_counter()
    loop(x, w).block_until_ready()
    best = min(best, (time.perf_counter() - t0) / loops)
  return best


def _time_torch(m, k, n, loops: int) -> float:
  import torch  # pylint: disable=g-import-not-at-top
  x, w = torch.ones(m, k), torch.ones(k, n)
  out = torch.empty(m, n)
  torch.mm(x, w, out=out)
  best = float('inf')
  for _ in range(3):
    t0 = time.perf_counter()
    for _ in range(loops):
      torch.mm(x, w, out=out)
    best = min(best, (time.perf_counter() - t0) / loops)
  return best


def run_bound(args, sizes: dict) -> dict:
  """Seconds per training step of the step's matrix products alone (`step_products`), per group."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
    if args.threads:
      torch.set_num_threads(args.threads)
    timers = {'jax': _time_jax, 'torch': _time_torch}
  except ImportError:
    timers = {'jax': _time_jax}
  groups, flops, libraries = {}, 0.0, set()
  for group, m, k, n, repeats in step_products(sizes, _load_chunks(args.batches)):
    loops = int(np.clip(1e10 / (2.0 * m * k * n), 1, 64))  # about 0.1 s a trial at 100 GFLOP/s
    times = {name: timer(m, k, n, loops) for name, timer in timers.items()}
    library = min(times, key=times.get)
    libraries.add(library)
    groups[group] = groups.get(group, 0.0) + repeats * times[library]
    flops += repeats * 2.0 * m * k * n
  return {'groups_ms': {g: 1000 * s for g, s in groups.items()}, 'ms_per_step': 1000 * sum(groups.values()),
          'gflop_per_step': flops / 1e9, 'libraries': sorted(libraries)}


def bound_table(bound: dict, results: dict) -> str:
  """The lower bound against each framework's measured step."""
  parts = ', '.join(f'{g} {ms:.1f}' for g, ms in bound['groups_ms'].items())
  lines = [f'\nmatrix products alone ({"/".join(bound["libraries"])}, the faster per shape): '
           f'{bound["ms_per_step"]:.1f} ms/step ({parts}); {bound["gflop_per_step"]:.2f} GFLOP a step']
  for which, r in results.items():
    lines.append(f'{which}: measured {r["ms_per_step"]:.1f} ms/step = x{r["ms_per_step"] / bound["ms_per_step"]:.2f} '
                 'the bound')
  if 'torch' in results:
    lines.append(f'the most any implementation of this arithmetic can gain over PyTorch here: '
                 f'x{results["torch"]["ms_per_step"] / bound["ms_per_step"]:.2f}')
  return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------ torch child
def torch_model(sizes: dict):
  """The PyTorch twin of dtr's binary autoencoder (see the module docstring)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top
  from torch.nn.utils.rnn import pack_padded_sequence  # pylint: disable=g-import-not-at-top

  class BinaryAutoencoder(nn.Module):
    def __init__(self, vocab, embed, hidden, bits, dropout):
      super().__init__()
      self.embed = nn.Embedding(vocab, embed)
      self.drop = nn.Dropout(dropout)
      self.encoder = nn.GRU(embed, hidden, batch_first=True, bidirectional=True)
      self.head = nn.Linear(2 * hidden, bits)
      self.bridge = nn.Linear(bits, hidden)
      self.decoder = nn.GRU(embed, hidden, batch_first=True)
      self.output = nn.Linear(hidden, vocab, bias=False)

    def loss(self, tokens, lengths):
      batch, width = tokens.shape
      embedded = self.drop(self.embed(tokens))
      packed = pack_padded_sequence(embedded, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
      _, final = self.encoder(packed)                       # [2, B, H]
      probs = torch.sigmoid(self.head(torch.cat([final[0], final[1]], dim=-1)))
      z = (torch.rand_like(probs) < probs).float() + probs - probs.detach()  # straight-through
      bos = torch.full((batch, 1), BOS, dtype=tokens.dtype, device=tokens.device)
      inputs = torch.cat([bos, tokens[:, :-1]], dim=1)
      positions = torch.arange(width, device=tokens.device)[None, :]
      targets = torch.where(positions == lengths[:, None], torch.full_like(tokens, EOS), tokens)
      valid = positions <= lengths[:, None]
      outputs, _ = self.decoder(self.drop(self.embed(inputs)), self.bridge(z)[None])
      logits = self.output(outputs[valid])  # the predicted positions only, as dtr's `target_nll`
      return nn.functional.cross_entropy(logits, targets[valid], reduction='sum') / batch

    @torch.no_grad()
    def decode(self, codes, max_len):
      batch = codes.shape[0]
      state = self.bridge(codes.float())[None]
      token = torch.full((batch,), BOS, dtype=torch.long, device=codes.device)
      done = torch.zeros(batch, dtype=torch.bool, device=codes.device)
      out = torch.full((batch, max_len), PAD, dtype=torch.long, device=codes.device)
      for t in range(max_len):
        output, state = self.decoder(self.embed(token)[:, None], state)
        logits = self.output(output[:, 0])
        logits[:, [PAD, BOS]] = -float('inf')
        token = logits.argmax(dim=-1)
        done = done | (token == EOS)
        out[:, t] = torch.where(done, torch.full_like(token, PAD), token)
        if bool(done.all()):
          break
      return out

  return BinaryAutoencoder(sizes['vocab'], sizes['embed'], sizes['hidden'], sizes['bits'], sizes['dropout'])


def run_torch(args, sizes: dict) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  if args.threads:
    torch.set_num_threads(args.threads)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.manual_seed(0)
  chunks = _load_chunks(args.batches)
  model = torch_model(sizes).to(device)
  optimizer = torch.optim.Adam(model.parameters(), lr=sizes['learning_rate'])
  batches = [(torch.as_tensor(tokens[i], dtype=torch.long, device=device),
              torch.as_tensor(lengths[i], dtype=torch.long, device=device))
             for tokens, lengths in chunks for i in range(tokens.shape[0])]

  def epoch():
    model.train()
    for tokens, lengths in batches:
      optimizer.zero_grad(set_to_none=True)
      loss = model.loss(tokens, lengths)
      loss.backward()
      if sizes['clip'] > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), sizes['clip'])
      optimizer.step()
    if device == 'cuda':
      torch.cuda.synchronize()

  epoch()  # warm-up
  seconds = float('inf')
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    epoch()
    seconds = min(seconds, time.perf_counter() - t0)
  model.eval()
  generator = torch.Generator().manual_seed(1)
  codes = (torch.rand((args.decode_batch, sizes['bits']), generator=generator) < 0.5).to(device)
  max_len = sizes['max_len'] + 1
  decoded = model.decode(codes, max_len)
  t0 = time.perf_counter()
  for _ in range(args.decode_repeats):
    decoded = model.decode(codes, max_len)
  if device == 'cuda':
    torch.cuda.synchronize()
  decode_seconds = time.perf_counter() - t0
  peak_device = torch.cuda.max_memory_allocated() / 2**20 if device == 'cuda' else 0.0
  return _result(f'PyTorch {torch.__version__} ({device}, {torch.get_num_threads()} threads)', chunks, seconds,
                 args.decode_batch * args.decode_repeats / decode_seconds,
                 _decode_steps(decoded.cpu().numpy(), max_len), peak_device)
