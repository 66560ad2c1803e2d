r"""Nearest training documents of a query, with a trained workdir.

  python -m dtr.search --workdir=DIR --query="oil prices fell as opec output rose" --k=10
  python -m dtr.search --workdir=DIR --input=queries.txt --k=5          # one query a line
  python -m dtr.search --workdir=DIR --split=test --index=0 --k=5        # a document of a split as query
  python -m dtr.search --workdir=DIR --split=test --index=0 --json       # machine-readable output

The database is the workdir's `codes/train_codes.npy`. Distance by code kind: Hamming over bits, the number
of unequal symbols over symbol codes; dense codes are searched by cosine similarity. Ties are broken by
database index (smaller first). Each hit shows the training document's id, its labels and, when the corpus
has text, the start of the text; a `--split` query shows its own labels too.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from dtr import encode as encode_lib


def load_database(workdir: str):
  """(training codes as stored: packed bits, symbols or dense; train labels [N, C]; label names)."""
  from dtr.evaluate import codes as codes_lib  # pylint: disable=g-import-not-at-top
  codes_dir = os.path.join(workdir, 'codes')
  path = os.path.join(codes_dir, 'train_codes.npy')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: {workdir} holds no finished run with codes (classifiers and '
                            'probes emit none).')
  names_path = os.path.join(codes_dir, 'label_names.json')
  names = json.load(open(names_path)) if os.path.exists(names_path) else []
  fmt = codes_lib.read_format(codes_dir)
  db = codes_lib.read_packed(codes_dir, 'train', fmt) if fmt.kind == 'bits' else codes_lib.read_codes(
      codes_dir, 'train', fmt)
  return db, codes_lib.read_labels(codes_dir, 'train'), names


def search(db, query_codes: np.ndarray, k: int = 10, kind: str = 'bits') -> tuple[np.ndarray, np.ndarray]:
  """(indices [Q, k], distances [Q, k]) of the k nearest database codes of each query.

  bits: `db` packed (uint32 words), queries int8 [Q, m], Hamming distance; symbols: int32 [N, M] and
  [Q, M], the number of unequal symbols; dense: cosine similarity (larger first) in place of a distance.
  """
  from dtr.evaluate import neighbours, retrieval  # pylint: disable=g-import-not-at-top
  k = min(k, db.shape[0])
  if kind == 'bits':
    idx, dist = retrieval.hamming_topk(retrieval.pack_bits(query_codes), db, k)
  elif kind == 'symbols':
    idx, dist = neighbours.symbol_topk(np.asarray(query_codes, np.int32), db, k)
  elif kind == 'dense':
    idx, dist = neighbours.cosine_topk(np.asarray(query_codes, np.float32), db, k)
  else:
    raise ValueError(f'cannot search codes of kind {kind!r}')
  return np.asarray(idx), np.asarray(dist)


def _label_names(row, names):
  return [names[c] if c < len(names) else str(c) for c in np.flatnonzero(row)]


def _snippet(text: str | None, width: int = 100) -> str:
  if not text:
    return ''
  flat = ' '.join(text.split())
  return flat if len(flat) <= width else flat[:width - 3] + '...'


def _define_flags():
  flags.DEFINE_string('workdir', None, 'Workdir of a finished training run.', required=True)
  flags.DEFINE_string('query', None, 'Query text.')
  flags.DEFINE_string('input', None, 'File with one query a line, or a folder of .txt files.')
  flags.DEFINE_enum('split', None, ['train', 'valid', 'test'], 'Use documents of this split as queries.')
  flags.DEFINE_multi_integer('index', [0], 'Row(s) of --split to use as queries.')
  flags.DEFINE_integer('k', 10, 'Number of neighbours.')
  flags.DEFINE_bool('json', False, 'Print one JSON object (queries and their neighbours) instead of text.')


def main(argv):
  del argv
  from dtr import runtime  # pylint: disable=g-import-not-at-top
  runtime.setup()  # the compilation cache; library INFO noise off
  f = flags.FLAGS
  model = encode_lib.load_model(f.workdir)
  kind = model.method.emits
  db, db_labels, label_names = load_database(f.workdir)
  corpus = None
  query_labels = None
  if f.split:
    corpus = encode_lib.load_training_corpus(model)
    split = corpus.splits[f.split]
    rows = [i for i in f.index]
    bad = [i for i in rows if not 0 <= i < split.num_docs]
    if bad:
      raise app.UsageError(f'--index {bad} outside the {split.num_docs} documents of {f.split!r}.')
    part = split.take(np.asarray(rows))
    names, codes = [f'{f.split}[{i}]' for i in rows], encode_lib.encode_split(model, part)
    query_labels = [_label_names(r, label_names) for r in part.labels]
    query_texts = part.texts if getattr(part, 'texts', None) is not None else [None] * len(rows)
  else:
    if f.query is not None:
      names, texts = ['query'], [f.query]
    elif f.input is not None:
      names, texts = encode_lib.read_texts(f.input)
    else:
      raise app.UsageError('Give --query, --input or --split.')
    codes, query_texts = encode_lib.encode_texts(model, texts), texts
  train = None
  try:
    corpus = corpus or encode_lib.load_training_corpus(model)
    train = corpus.splits['train']
  except (FileNotFoundError, ValueError):
    pass  # the hits are shown without ids and texts when the corpus cannot be read
  idx, dist = search(db, codes, f.k, kind)
  measure = 'cosine' if kind == 'dense' else 'hamming'
  out = []
  for q, (name, code, row_i, row_d) in enumerate(zip(names, codes, idx, dist)):
    hits = []
    for rank, (i, d) in enumerate(zip(row_i, row_d)):
      hit = {'rank': rank + 1, 'train_row': int(i), measure: float(d) if kind == 'dense' else int(d),
             'labels': _label_names(db_labels[i], label_names)}
      if train is not None:
        if train.doc_ids is not None:
          hit['doc_id'] = int(train.doc_ids[i])
        texts = getattr(train, 'texts', None)
        if texts is not None:
          hit['text'] = _snippet(texts[i], 300 if f.json else 100)
      hits.append(hit)
    entry = {'query': name, 'code': np.asarray(code).tolist(), 'hits': hits}
    if query_labels is not None:
      entry['labels'] = query_labels[q]
    if query_texts[q]:
      entry['text'] = _snippet(query_texts[q], 300 if f.json else 100)
    out.append(entry)
  if f.json:
    print(json.dumps(out, indent=1))
    return
  for entry in out:
    code = entry['code']
    shown = ''.join(map(str, code)) if kind == 'bits' else ' '.join(f'{c:.3g}' if kind == 'dense' else str(c)
                                                                     for c in np.ravel(code)[:16])
    print(f'{entry["query"]}: code {shown}' + (f'  labels {",".join(entry["labels"]) or "-"}'
                                               if 'labels' in entry else ''))
    if entry.get('text'):
      print(f'  "{entry["text"]}"')
    for hit in entry['hits']:
      value = f'{measure} {hit[measure]:.3f}' if kind == 'dense' else f'{measure} {hit[measure]:3d}'
      doc = f' doc {hit["doc_id"]}' if 'doc_id' in hit else ''
      print(f'  {hit["rank"]:3d}. train[{hit["train_row"]}]{doc}  {value}  labels {",".join(hit["labels"]) or "-"}'
            + (f'  "{hit["text"]}"' if hit.get('text') else ''))


if __name__ == '__main__':
  _define_flags()
  from dtr import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)  # user errors (a missing workdir, a changed corpus) as one message, exit 2
