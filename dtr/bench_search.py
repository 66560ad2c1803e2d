r"""Hamming top-k search throughput: dtr (`hamming_topk`, `precision_at_k`) against FAISS IndexBinaryFlat.

  python -m dtr.bench_search                                    # NG20 sizes: 10257 db x 3405 queries
  python -m dtr.bench_search --num_db=100000,1000000 --num_queries=10000,1000 --bits=64,128
  python -m dtr.bench_search --cpu_devices=1                    # dtr on one CPU device (one thread)

Random codes, random single labels out of 20 for P@k. Both libraries get the same number of CPU threads:
FAISS `omp_set_num_threads(threads)`, JAX as many CPU devices (`jax_num_cpu_devices`), over which
`hamming_topk` splits the queries; both are also timed on one thread (one device). "ratio" is dtr / FAISS
(above 1: dtr is faster). FAISS's OpenMP threads slow down badly when other processes load the cores, so
compare the one-thread columns on a busy machine.
Every measurement is compiled / warmed up first; the median of --reps runs is printed, FAISS and dtr runs
interleaved so that load from other processes hits both alike. Peak memory is the process's max RSS.
"""

import argparse
import os
import resource
import statistics
import time

import numpy as np


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--num_db', default='10257', help='database sizes, comma separated')
  parser.add_argument('--num_queries', default='3405', help='query counts, comma separated, paired with --num_db')
  parser.add_argument('--bits', default='16,32,64,128')
  parser.add_argument('--k', type=int, default=100)
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--threads', type=int, default=os.cpu_count(), help='FAISS threads = JAX CPU devices')
  parser.add_argument('--cpu_devices', type=int, default=None, help='JAX CPU devices (default: --threads)')
  parser.add_argument('--no_faiss', action='store_true')
  args = parser.parse_args()

  import jax  # after parsing: the device count must be set before JAX starts its CPU backend
  jax.config.update('jax_num_cpu_devices', args.cpu_devices or args.threads)
  from dtr.evaluate import retrieval
  faiss = None
  if not args.no_faiss:
    import faiss
    faiss.omp_set_num_threads(args.threads)

  devices = jax.local_devices()
  print(f'dtr: {len(devices)} x {devices[0].platform} device(s) (and 1 device); FAISS: {args.threads} '
        f'OpenMP thread(s) (and 1 thread); {os.cpu_count()} cores; k={args.k}; queries/s, median of {args.reps}')
  print(f'{"db":>8} {"queries":>7} {"bits":>4} | {"dtr topk":>8} {"dtr P@k":>8} {"faiss":>8} {"ratio":>5} | '
        f'{"dtr 1dev":>8} {"faiss 1t":>8} {"ratio":>5} | {"same dist":>9} {"same idx":>8} | {"peak RSS":>9}')
  for num_db, num_q in zip(_ints(args.num_db), _ints(args.num_queries), strict=True):
    for bits in _ints(args.bits):
      rng = np.random.default_rng(bits)
      q, db = (_random_packed(rng, n, bits) for n in (num_q, num_db))
      q_labels, db_labels = (retrieval.class_ids_to_bits(rng.integers(0, 20, n), 20) for n in (num_q, num_db))
      runs = {
          'topk': lambda: jax.block_until_ready(retrieval.hamming_topk(q, db, args.k)),
          'precision': lambda: retrieval.precision_at_k(q, q_labels, db, db_labels, args.k),
          'topk_1dev': lambda: jax.block_until_ready(retrieval.hamming_topk(q, db, args.k, devices=devices[:1])),
      }
      if faiss is not None:
        index = faiss.IndexBinaryFlat(32 * db.shape[1])  # the packed words' bytes: same distances
        index.add(db.view(np.uint8))
        runs['faiss'] = lambda: _faiss_search(faiss, index, q, args.k, args.threads)
        runs['faiss_1t'] = lambda: _faiss_search(faiss, index, q, args.k, 1)
      rate = {name: num_q / s for name, s in _interleaved_medians(runs, args.reps).items()}
      line = f'{num_db:8d} {num_q:7d} {bits:4d} | {rate["topk"]:8.0f} {rate["precision"]:8.0f} '
      if faiss is not None:
        idx, dist = (np.asarray(x) for x in retrieval.hamming_topk(q, db, args.k))
        faiss_dist, faiss_idx = runs['faiss']()
        line += (f'{rate["faiss"]:8.0f} {rate["topk"] / rate["faiss"]:5.2f} | {rate["topk_1dev"]:8.0f} '
                 f'{rate["faiss_1t"]:8.0f} {rate["topk_1dev"] / rate["faiss_1t"]:5.2f} | '
                 f'{str(np.array_equal(dist, faiss_dist)):>9} {np.mean(idx == faiss_idx):8.3f} | ')
      else:
        line += f'{"-":>8} {"-":>5} | {rate["topk_1dev"]:8.0f} {"-":>8} {"-":>5} | {"-":>9} {"-":>8} | '
      print(line + f'{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:6.0f} MiB', flush=True)


def _random_packed(rng, n: int, bits: int) -> np.ndarray:
  """Uniform random codes, packed (drawn as words, so that 1M x 128 bits needs no 128 MB of 0/1 bytes)."""
  words = rng.integers(0, 2**32, (n, -(-bits // 32)), dtype=np.uint32)
  if bits % 32:
    words[:, -1] &= np.uint32((1 << (bits % 32)) - 1)
  return words


def _faiss_search(faiss, index, q, k, threads):
  faiss.omp_set_num_threads(threads)
  return index.search(q.view(np.uint8), k)


def _interleaved_medians(runs: dict, reps: int) -> dict:
  for run in runs.values():  # compile and warm up
    run()
  times = {name: [] for name in runs}
  for _ in range(reps):
    for name, run in runs.items():
      start = time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(',') if x]


if __name__ == '__main__':
  main()
