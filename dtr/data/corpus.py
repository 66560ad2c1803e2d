"""The corpus contract between the data readers and the training loop.

A `Corpus` is three `Split`s ('train', 'valid', 'test') of L2-normalised
TF-IDF rows over one vocabulary, with multi-hot labels; corpora made from text
also carry each document's token ids (`Tokens`, over `Corpus.token_vocab`) and
raw text. Every reader in `dtr.data` (hashing sets, raw text, user files,
synthetic) returns one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Mapping, Sequence, TYPE_CHECKING

from absl import logging
import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
  from dtr.data.featurize import Featurizer
  from dtr.data.tokenize import Vocabulary

SPLIT_NAMES = ('train', 'valid', 'test')
EMPTY_DOC_MODES = ('drop', 'error')
# The corpora whose documents are text, so they carry token sequences (see dtr.data.load).
TEXT_CORPORA = ('dbpedia14', 'yahoo10', 'ptb', 'yahoo_lm', 'raw_20news', 'raw_reuters', 'csv', 'folder',
                'tfds:<name>', 'synthetic')


def as_csr(matrix, dtype) -> sp.csr_matrix:
  """`matrix` as CSR of `dtype` with sorted indices (copied if it had to change)."""
  csr = sp.csr_matrix(matrix, dtype=dtype)
  # sorted_indices() copies, so the caller's matrix is never reordered.
  return csr if csr.has_sorted_indices else csr.sorted_indices()


def _row_indices(rows, num_rows: int) -> np.ndarray:
  """int64 indices of `rows`, given as indices or as a boolean mask of `num_rows`."""
  rows = np.asarray(rows)
  if rows.dtype == bool:
    if rows.shape != (num_rows,):
      raise ValueError(f'a boolean mask of {rows.shape} rows for {num_rows} rows')
    return np.flatnonzero(rows)
  rows = rows.astype(np.int64).reshape(-1)
  return np.where(rows < 0, rows + num_rows, rows)  # Negative indices count from the end, as in NumPy.


@dataclasses.dataclass(frozen=True, eq=False)
class Tokens:
  """Ragged token id sequences: document i is `ids[offsets[i]:offsets[i + 1]]`.

  Attributes:
    ids: int32 [total] token ids of all documents back to back (no padding, no bos/eos).
    offsets: int64 [N + 1], offsets[0] = 0, non-decreasing, offsets[N] = total.
  """

  ids: np.ndarray
  offsets: np.ndarray

  def __post_init__(self):
    ids = np.asarray(self.ids, np.int32).reshape(-1)
    offsets = np.asarray(self.offsets, np.int64).reshape(-1)
    if offsets.size < 1 or offsets[0] != 0 or offsets[-1] != ids.size:
      raise ValueError(f'offsets must run from 0 to len(ids)={ids.size}, got '
                       f'{offsets[:1].tolist()}..{offsets[-1:].tolist()}')
    if np.any(np.diff(offsets) < 0):
      raise ValueError('offsets must be non-decreasing')
    object.__setattr__(self, 'ids', ids)
    object.__setattr__(self, 'offsets', offsets)

  @classmethod
  def from_lists(cls, sequences: Sequence[Sequence[int]]) -> Tokens:
    lengths = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
    ids = np.fromiter((i for s in sequences for i in s), np.int32, int(lengths.sum()))
    return cls(ids, np.concatenate([[0], np.cumsum(lengths)]))

  @property
  def num_docs(self) -> int:
    return self.offsets.size - 1

  def lengths(self) -> np.ndarray:
    """int64 [N] tokens per document."""
    return np.diff(self.offsets)

  def row(self, i: int) -> np.ndarray:
    """int32 [length] the token ids of document i (a view)."""
    return self.ids[self.offsets[i]:self.offsets[i + 1]]

  def take(self, rows) -> Tokens:
    """The sequences of the given row indices (or boolean mask), in that order."""
    rows = _row_indices(rows, self.num_docs)
    starts = self.offsets[rows]
    lengths = self.offsets[rows + 1] - starts
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lengths)
    return Tokens(self.ids[np.repeat(starts, lengths) + within], offsets)

  def equals(self, other: Tokens) -> bool:
    return np.array_equal(self.offsets, other.offsets) and np.array_equal(self.ids, other.ids)


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of a corpus.

  Attributes:
    tfidf: [N, V] float32 CSR, rows L2-normalised (sublinear tf * idf), sorted
      column indices.
    labels: [N, C] bool multi-hot label sets (single-label corpora are one-hot;
      C may be 0 for unlabelled corpora).
    counts: [N, V] int32 CSR of raw term counts, when known.
    doc_ids: [N] int64 ids of the documents in their source, when known.
    tokens: the documents' token ids over `Corpus.token_vocab`, for corpora made from text.
    texts: the N documents' raw text (as featurised), for corpora made from text; for showing results.
  """

  tfidf: sp.csr_matrix
  labels: np.ndarray
  counts: sp.csr_matrix | None = None
  doc_ids: np.ndarray | None = None
  tokens: Tokens | None = None
  texts: list[str] | None = None

  def __post_init__(self):
    # Coerce once here so every consumer can rely on the documented dtypes.
    tfidf = as_csr(self.tfidf, np.float32)
    labels = np.asarray(self.labels)
    if labels.ndim != 2:
      raise ValueError(f'labels must be [N, C], got shape {labels.shape}')
    labels = labels.astype(bool)
    n = tfidf.shape[0]
    if labels.shape[0] != n:
      raise ValueError(
          f'labels have {labels.shape[0]} rows but tfidf has {n} rows')
    object.__setattr__(self, 'tfidf', tfidf)
    object.__setattr__(self, 'labels', labels)
    if self.counts is not None:
      counts = as_csr(self.counts, np.int32)
      if counts.shape != tfidf.shape:
        raise ValueError(
            f'counts shape {counts.shape} != tfidf shape {tfidf.shape}')
      object.__setattr__(self, 'counts', counts)
    if self.doc_ids is not None:
      doc_ids = np.asarray(self.doc_ids, np.int64).reshape(-1)
      if doc_ids.shape[0] != n:
        raise ValueError(f'{doc_ids.shape[0]} doc_ids for {n} rows')
      object.__setattr__(self, 'doc_ids', doc_ids)
    if self.tokens is not None and self.tokens.num_docs != n:
      raise ValueError(f'tokens hold {self.tokens.num_docs} documents for {n} rows')
    if self.texts is not None:
      texts = list(self.texts)
      if len(texts) != n:
        raise ValueError(f'{len(texts)} texts for {n} rows')
      object.__setattr__(self, 'texts', texts)

  @property
  def num_docs(self) -> int:
    return self.tfidf.shape[0]

  def take(self, rows: np.ndarray) -> Split:
    """The sub-split of the given row indices (or boolean mask)."""
    rows = _row_indices(rows, self.num_docs)
    return Split(
        tfidf=self.tfidf[rows],
        labels=self.labels[rows],
        counts=None if self.counts is None else self.counts[rows],
        doc_ids=None if self.doc_ids is None else self.doc_ids[rows],
        tokens=None if self.tokens is None else self.tokens.take(rows),
        texts=None if self.texts is None else [self.texts[i] for i in rows],
    )


@dataclasses.dataclass(frozen=True)
class Corpus:
  """Train/valid/test splits over one vocabulary and label set.

  Attributes:
    name: e.g. 'ng20', 'raw_20news', 'synthetic'.
    splits: exactly the keys 'train', 'valid', 'test'.
    vocab: the V terms, column order of the TF-IDF matrices.
    label_names: the C label names, column order of `labels`.
    synthetic: True when the data is generated, not real; numbers measured on
      it say nothing about published results.
    featurizer: turns new raw text into TF-IDF rows with this corpus's vocab and
      idf, or None when that cannot be reconstructed.
    token_vocab: the token vocabulary of the splits' `tokens` (ids: 0 pad, 1 unk,
      2 bos, 3 eos, then words), or None for corpora without text.
    source: the resolved path(s) the corpus was read from ('' for synthetic).
  """

  name: str
  splits: Mapping[str, Split]
  vocab: Sequence[str]
  label_names: Sequence[str]
  synthetic: bool = False
  featurizer: Featurizer | None = None
  token_vocab: Vocabulary | None = None
  source: str = ''

  def __post_init__(self):
    if tuple(sorted(self.splits)) != tuple(sorted(SPLIT_NAMES)):
      raise ValueError(
          f'splits must be exactly {SPLIT_NAMES}, got {tuple(self.splits)}')
    for split_name, split in self.splits.items():
      if split.tfidf.shape[1] != len(self.vocab):
        raise ValueError(
            f'split {split_name!r} has {split.tfidf.shape[1]} columns but the '
            f'vocabulary has {len(self.vocab)} terms')
      if split.labels.shape[1] != len(self.label_names):
        raise ValueError(
            f'split {split_name!r} has {split.labels.shape[1]} label columns '
            f'but there are {len(self.label_names)} label names')
      if split.tokens is not None and self.token_vocab is not None and split.tokens.ids.size:
        low, high = split.tokens.ids.min(), split.tokens.ids.max()
        if low < 0 or high >= self.token_vocab.size:
          raise ValueError(
              f'split {split_name!r} has token ids in [{low}, {high}] outside the '
              f'token vocabulary [0, {self.token_vocab.size})')

  @property
  def num_terms(self) -> int:
    return len(self.vocab)

  @property
  def has_tokens(self) -> bool:
    """Whether every split carries token sequences over `token_vocab`."""
    return self.token_vocab is not None and all(
        s.tokens is not None for s in self.splits.values())

  @property
  def num_labels(self) -> int:
    return len(self.label_names)

  def replace(self, **changes) -> Corpus:
    return dataclasses.replace(self, **changes)


def require_tokens(corpus: Corpus, what: str) -> None:
  """Raises ValueError unless `corpus` has token sequences; `what` names who needs them."""
  if corpus.has_tokens:
    return
  raise ValueError(
      f'{what} needs token sequences, but corpus {corpus.name!r} has none: it has no '
      f'text (the hashing sets and 20news_clean are bags of words only) or was loaded '
      f'with config.data.tokens=False. Corpora with text: {", ".join(TEXT_CORPORA)}.')


def check_finite(corpus: Corpus, source: str = '') -> None:
  """Raises ValueError naming the split when a TF-IDF value is NaN or inf."""
  where = f' in {source}' if source else ''
  for split_name, split in corpus.splits.items():
    bad = ~np.isfinite(split.tfidf.data)
    if bad.any():
      row = int(np.searchsorted(split.tfidf.indptr, np.argmax(bad), 'right')) - 1
      raise ValueError(
          f'split {split_name!r}{where}: TF-IDF has {int(bad.sum())} NaN/inf '
          f'values (first in row {row})')


def empty_rows(tfidf: sp.csr_matrix) -> np.ndarray:
  """Indices of rows whose entries are all zero (or that have no entries)."""
  row_abs_sum = np.asarray(abs(tfidf).sum(axis=1)).reshape(-1)
  return np.flatnonzero(row_abs_sum == 0)


def handle_empty_docs(corpus: Corpus, mode: str, by: str = 'auto') -> Corpus:
  """Drops (mode='drop', with a warning) or rejects (mode='error') empty docs.

  What is empty (`by`): 'tfidf', an all-zero TF-IDF row (every word out of the bag-of-words vocabulary:
  an encoder of TF-IDF sees no input and cosine-based evaluations are undefined); 'tokens', no token at all;
  'auto' (loading), 'tokens' for corpora with token sequences (a sentence of stop words still has tokens to
  model) and 'tfidf' for the others. Methods that read TF-IDF drop the empty rows of a token corpus
  themselves (`by='tfidf'`, `dtr.train`). Tokens and texts stay aligned.
  """
  if mode not in EMPTY_DOC_MODES:
    raise ValueError(f'empty_docs must be one of {EMPTY_DOC_MODES}, got {mode!r}')
  if by not in ('auto', 'tfidf', 'tokens'):
    raise ValueError(f"by must be 'auto', 'tfidf' or 'tokens', got {by!r}")
  splits = dict(corpus.splits)
  for split_name in SPLIT_NAMES:
    split = splits[split_name]
    use_tokens = by == 'tokens' or (by == 'auto' and split.tokens is not None)
    if use_tokens and split.tokens is None:
      continue
    if use_tokens:
      empty = np.flatnonzero(split.tokens.lengths() == 0)
      what = f'{empty.size} with no tokens'
    else:
      empty = empty_rows(split.tfidf)
      what = f'{empty.size} with an all-zero TF-IDF row'
    if not empty.size:
      continue
    if mode == 'error':
      raise ValueError(
          f'{corpus.name}: split {split_name!r} has {empty.size} empty '
          f'documents ({what}), first rows {empty[:10].tolist()}; '
          "set empty_docs='drop' to drop them")
    logging.warning('%s: dropping %d empty documents (%s) from split %r',
                    corpus.name, empty.size, what, split_name)
    keep = np.ones(split.num_docs, bool)
    keep[empty] = False
    splits[split_name] = split.take(keep)
  return corpus.replace(splits=splits)


def splits_equal(a: Split, b: Split, atol: float = 0.0) -> bool:
  """Whether two splits hold the same data (TF-IDF to `atol`)."""
  if a.tfidf.shape != b.tfidf.shape or a.labels.shape != b.labels.shape:
    return False
  if not np.array_equal(a.labels, b.labels):
    return False
  if max_abs_diff(a.tfidf, b.tfidf) > atol:
    return False
  for x, y in ((a.counts, b.counts), (a.doc_ids, b.doc_ids)):
    if (x is None) != (y is None):
      return False
  if a.counts is not None and (a.counts != b.counts).nnz:
    return False
  if a.doc_ids is not None and not np.array_equal(a.doc_ids, b.doc_ids):
    return False
  if (a.tokens is None) != (b.tokens is None) or (a.texts is None) != (b.texts is None):
    return False
  if a.tokens is not None and not a.tokens.equals(b.tokens):
    return False
  return a.texts == b.texts


def max_abs_diff(a: sp.spmatrix, b: sp.spmatrix) -> float:
  """max |a - b| over all entries of two sparse matrices of one shape."""
  diff = sp.csr_matrix(a, dtype=np.float64) - sp.csr_matrix(b, dtype=np.float64)
  return float(np.abs(diff.data).max()) if diff.nnz else 0.0


def fingerprint(corpus: Corpus) -> str:
  """A 16-hex-digit digest of the corpus' content, the same however it was read.

  Covers the vocabulary, label names, and per split the TF-IDF shape, values,
  column indices and row pointers, the labels, the counts when present, and
  the token ids and offsets plus the token vocabulary when present. Not the
  name, doc ids, texts or source. Hashes each array once (about 20 ms for ng20).
  """
  digest = hashlib.blake2b(digest_size=8)

  def add(tag: str, array) -> None:
    array = np.ascontiguousarray(array)
    digest.update(f'{tag}:{array.dtype.str}:{array.shape};'.encode())
    digest.update(array.view(np.uint8).reshape(-1))

  def add_strings(tag: str, strings) -> None:
    joined = '\x00'.join(strings).encode('utf-8', 'surrogatepass')
    digest.update(f'{tag}:{len(strings)}:{len(joined)};'.encode())
    digest.update(joined)

  add_strings('vocab', list(corpus.vocab))
  add_strings('label_names', list(corpus.label_names))
  if corpus.token_vocab is not None:
    add_strings('token_vocab', corpus.token_vocab.id_to_token)
  for name in SPLIT_NAMES:
    split = corpus.splits[name]
    add(f'{name}.shape', np.array(split.tfidf.shape, np.int64))
    add(f'{name}.tfidf', split.tfidf.data.astype(np.float32, copy=False))
    # Index dtypes differ between readers (int32/int64); the content does not.
    add(f'{name}.indices', split.tfidf.indices.astype(np.int64, copy=False))
    add(f'{name}.indptr', split.tfidf.indptr.astype(np.int64, copy=False))
    add(f'{name}.labels', np.packbits(split.labels, axis=-1))
    if split.counts is not None:
      add(f'{name}.counts', split.counts.data.astype(np.int32, copy=False))
      add(f'{name}.count_indices', split.counts.indices.astype(np.int64, copy=False))
    if split.tokens is not None:
      add(f'{name}.tokens', split.tokens.ids)
      add(f'{name}.offsets', split.tokens.offsets)
  return digest.hexdigest()
