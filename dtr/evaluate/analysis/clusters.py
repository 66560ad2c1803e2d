r"""Browsing discrete codes as clusters: the most frequent codes of a split, with example texts and labels.

  python -m dtr.analyze clusters --workdir=DIR [--top=10] [--split=test] [--examples=3] [--words=8]

Jin et al. (ACL 2020), Tables 4 and 5, read what a discrete representation holds by listing documents that
share a code. For global latents a code is a document's whole symbol vector c in [0, K)^M and a cluster is
the set of documents with that vector; for local latents a code is one token's symbol vector, a cluster the
set of token occurrences with it (shown with the words most often given that code, in context). Each
cluster reports its size and share of the split, its majority label and purity (the share of its members
whose label set holds that label; for local codes the labels of the documents the tokens come from), and
example texts: the first `examples` members in split order (documents, or for local codes the first
`examples` documents with an occurrence, the coded word of its first one in [brackets]).

The codes are the workdir's saved ones (`codes/<split>_codes.npy`, deterministic: nearest entry or argmax),
the texts and tokens those of the corpus it was trained on (`dtr.encode.load_training_corpus`).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os

import numpy as np


@dataclasses.dataclass
class Cluster:
  """One code and the members that share it."""

  code: tuple            # the M symbols
  count: int             # documents (global) or token occurrences (local) with this code
  share: float           # count / all documents (or tokens) of the split
  label: str             # the majority label of the members ('' when the split has no labels)
  purity: float          # share of members whose label set holds `label`
  examples: list         # example texts
  words: list = dataclasses.field(default_factory=list)  # local codes: (word, count), most frequent first


def _majority(label_rows: np.ndarray, label_names) -> tuple[str, float]:
  """(majority label, purity) of bool label sets [n, C] (ties: the lower class id)."""
  if label_rows.size == 0 or label_rows.shape[1] == 0:
    return '', 0.0
  counts = label_rows.sum(axis=0)
  best = int(np.argmax(counts))
  return str(label_names[best]) if label_names is not None else str(best), float(counts[best] / len(label_rows))


def _most_frequent_rows(rows, top: int):
  """The distinct rows of a 2-D array, each row's index among them, their counts, and the indices of the
  `top` most frequent (ties: the row seen first)."""
  unique, first, inverse, counts = np.unique(rows, axis=0, return_index=True, return_inverse=True,
                                             return_counts=True)
  order = sorted(range(len(unique)), key=lambda u: (-counts[u], first[u]))[:top]
  return unique, inverse.reshape(-1), counts, order


def global_clusters(codes_NxM, labels_NxC, texts=None, label_names=None, top: int = 10,
                    examples: int = 3) -> list[Cluster]:
  """The `top` most frequent document codes [N, M] (ties: the code seen first), with their members."""
  codes_NxM = np.asarray(codes_NxM)
  if codes_NxM.ndim != 2:
    raise ValueError(f'global codes must be [N, M], got {codes_NxM.shape} (per-token codes: local_clusters)')
  labels_NxC = np.asarray(labels_NxC, bool)
  unique, inverse, counts, order = _most_frequent_rows(codes_NxM, top)
  out = []
  for u in order:
    members = np.flatnonzero(inverse == u)
    label, purity = _majority(labels_NxC[members], label_names)
    shown = [texts[i] for i in members[:examples]] if texts is not None else [f'document {i}' for i in
                                                                              members[:examples]]
    out.append(Cluster(tuple(int(s) for s in unique[u]), int(counts[u]), float(counts[u] / len(codes_NxM)),
                       label, purity, shown))
  return out


def local_clusters(codes_NxLxM, labels_NxC, token_rows, id_to_token, label_names=None, top: int = 10,
                   examples: int = 3, words: int = 8) -> list[Cluster]:
  """The `top` most frequent token codes of per-token codes [N, L, M] (-1 = padding).

  token_rows(i) gives document i's token ids (aligned with its valid code positions); id_to_token maps ids
  to words.
  """
  codes = np.asarray(codes_NxLxM)
  if codes.ndim != 3:
    raise ValueError(f'local codes must be [N, L, M], got {codes.shape}')
  labels_NxC = np.asarray(labels_NxC, bool)
  valid_NxL = codes[..., 0] >= 0
  doc_of, position_of = np.nonzero(valid_NxL)  # occurrences in split order
  flat = codes[doc_of, position_of]            # [T, M]
  unique, inverse, counts, order = _most_frequent_rows(flat, top)
  out = []
  for u in order:
    occurrences = np.flatnonzero(inverse == u)
    docs, positions = doc_of[occurrences], position_of[occurrences]
    word_ids = [int(token_rows(d)[p]) for d, p in zip(docs, positions)]
    common = collections.Counter(id_to_token[w] for w in word_ids).most_common(words)
    label, purity = _majority(labels_NxC[docs], label_names)
    shown = []
    _, distinct = np.unique(docs, return_index=True)  # the first occurrence in each document
    distinct = np.sort(distinct)[:examples]
    for d, p in zip(docs[distinct], positions[distinct]):
      row = [id_to_token[int(t)] for t in token_rows(d)]
      shown.append(' '.join(row[:p] + [f'[{row[p]}]'] + row[p + 1:]))
    out.append(Cluster(tuple(int(s) for s in unique[u]), int(counts[u]), float(counts[u] / len(flat)), label,
                       purity, shown, common))
  return out


def workdir_clusters(workdir: str, split: str = 'test', top: int = 10, examples: int = 3,
                     words: int = 8) -> tuple[list[Cluster], str]:
  """(clusters, 'global' | 'local') of a finished workdir's saved symbol codes of `split`."""
  from dtr import encode  # pylint: disable=g-import-not-at-top
  from dtr import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from dtr.evaluate import codes as codes_lib  # pylint: disable=g-import-not-at-top
  name = workdir_lib.read_json(workdir, 'config.json')['model']['name']  # no finished run: says so
  codes_dir = os.path.join(workdir, 'codes')
  if not os.path.exists(os.path.join(codes_dir, 'FORMAT.txt')):
    raise ValueError(f'{workdir}: method {name!r} saved no codes; clusters browse the symbol codes of the '
                     'discrete VAEs (configs/discrete_vae.py).')
  fmt = codes_lib.read_format(codes_dir)
  if fmt.kind != 'symbols':
    raise ValueError(f'{workdir} holds {fmt.kind} codes; clusters browse symbol codes (discrete VAEs)')
  codes = codes_lib.read_codes(codes_dir, split, fmt)
  model = encode.load_model(workdir)
  corpus = encode.load_training_corpus(model)
  data = corpus.splits[split]
  names = list(getattr(corpus, 'label_names', ()) or ()) or None
  if codes.ndim == 2:
    return global_clusters(codes, data.labels, data.texts, names, top, examples), 'global'
  vocab = corpus.token_vocab
  return local_clusters(codes, data.labels, data.tokens.row, vocab.id_to_token, names, top, examples,
                        words), 'local'


def format_clusters(clusters: list[Cluster], level: str) -> str:
  """A readable report: one block per code."""
  lines = []
  unit = 'documents' if level == 'global' else 'tokens'
  for rank, c in enumerate(clusters, 1):
    code = '-'.join(str(s) for s in c.code)
    label = f', majority label {c.label!r} ({100 * c.purity:.0f}%)' if c.label else ''
    lines.append(f'#{rank} code {code}: {c.count} {unit} ({100 * c.share:.1f}%){label}')
    if c.words:
      lines.append('   words: ' + ', '.join(f'{w} ({n})' for w, n in c.words))
    for text in c.examples:
      lines.append(f'   - {text[:200]}')
  return '\n'.join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='python -m dtr.analyze clusters', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='a finished workdir with symbol codes')
  parser.add_argument('--split', default='test')
  parser.add_argument('--top', type=int, default=10, help='how many of the most frequent codes')
  parser.add_argument('--examples', type=int, default=3, help='example texts per code')
  parser.add_argument('--words', type=int, default=8, help='local codes: most frequent words per code')
  args = parser.parse_args(argv)
  clusters, level = workdir_clusters(args.workdir, args.split, args.top, args.examples, args.words)
  print(f'{args.workdir}: the {len(clusters)} most frequent {level} codes of {args.split}')
  print(format_clusters(clusters, level))


if __name__ == '__main__':
  main()
