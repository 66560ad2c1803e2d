r"""Nearest training documents of a query by Hamming distance, with a trained workdir.

  python -m dtr.search --workdir=DIR --query="oil prices fell as opec output rose" --k=10
  python -m dtr.search --workdir=DIR --input=queries.txt --k=5          # one query a line
  python -m dtr.search --workdir=DIR --split=test --index=0 --k=5        # a document of a split as query

The database is the workdir's `codes/train_codes.npy`. Ties are broken by database index (smaller first).
"""

import json
import os

import numpy as np
from absl import app, flags

from dtr import encode as encode_lib
from dtr.evaluate import retrieval


def load_database(workdir: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """(packed train codes, train labels [N, C], label names) written by training."""
  codes_dir = os.path.join(workdir, 'codes')
  path = os.path.join(codes_dir, 'train_codes.npy')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: {workdir} holds no finished run.')
  names_path = os.path.join(codes_dir, 'label_names.json')
  names = json.load(open(names_path)) if os.path.exists(names_path) else []
  return np.load(path), np.load(os.path.join(codes_dir, 'train_labels.npy')), names


def search(db_packed: np.ndarray, query_codes: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """(indices [Q, k], Hamming distances [Q, k]) of the k nearest database codes of each query (int8 [Q, m])."""
  k = min(k, db_packed.shape[0])
  idx, dist = retrieval.hamming_topk(retrieval.pack_bits(query_codes), db_packed, k)
  return np.asarray(idx), np.asarray(dist)


def _define_flags():
  flags.DEFINE_string('workdir', None, 'Workdir of a finished training run.', required=True)
  flags.DEFINE_string('query', None, 'Query text.')
  flags.DEFINE_string('input', None, 'File with one query a line, or a folder of .txt files.')
  flags.DEFINE_string('split', None, 'Use documents of this split (valid/test) as queries.')
  flags.DEFINE_multi_integer('index', [0], 'Row(s) of --split to use as queries.')
  flags.DEFINE_integer('k', 10, 'Number of neighbours.')


def main(argv):
  del argv
  f = flags.FLAGS
  model = encode_lib.load_model(f.workdir)
  db, db_labels, label_names = load_database(f.workdir)
  if f.split:
    from dtr.data import load_corpus
    tfidf = load_corpus(model.config.data).splits[f.split].tfidf[f.index]
    names, codes = [f'{f.split}[{i}]' for i in f.index], encode_lib.encode_tfidf(model, tfidf)
  else:
    if f.query is not None:
      names, texts = ['query'], [f.query]
    elif f.input is not None:
      names, texts = encode_lib.read_texts(f.input)
    else:
      raise app.UsageError('Give --query, --input or --split.')
    codes = encode_lib.encode_texts(model, texts)
  idx, dist = search(db, codes, f.k)
  for name, code, row_i, row_d in zip(names, codes, idx, dist):
    print(f'{name}: code {"".join(map(str, code.tolist()))}')
    for rank, (i, d) in enumerate(zip(row_i, row_d)):
      labels = [label_names[c] if c < len(label_names) else str(c) for c in np.flatnonzero(db_labels[i])]
      print(f'  {rank + 1:3d}. train[{i}]  hamming {d:3d}  labels {",".join(labels) or "-"}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
