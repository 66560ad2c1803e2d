"""The corpus contract between the data readers and the training loop.

A `Corpus` is three `Split`s ('train', 'valid', 'test') of L2-normalised
TF-IDF rows over one vocabulary, with multi-hot labels. Every reader in
`dtr.data` (hashing sets, raw text, user files, synthetic) returns one.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence, TYPE_CHECKING

from absl import logging
import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
  from dtr.data.featurize import Featurizer

SPLIT_NAMES = ('train', 'valid', 'test')
EMPTY_DOC_MODES = ('drop', 'error')


def as_csr(matrix, dtype) -> sp.csr_matrix:
  """`matrix` as CSR of `dtype` with sorted indices (copied if it had to change)."""
  csr = sp.csr_matrix(matrix, dtype=dtype)
  # sorted_indices() copies, so the caller's matrix is never reordered.
  return csr if csr.has_sorted_indices else csr.sorted_indices()


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
  """

  tfidf: sp.csr_matrix
  labels: np.ndarray
  counts: sp.csr_matrix | None = None
  doc_ids: np.ndarray | None = None

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

  @property
  def num_docs(self) -> int:
    return self.tfidf.shape[0]

  def take(self, rows: np.ndarray) -> Split:
    """The sub-split of the given row indices (or boolean mask)."""
    rows = np.asarray(rows)
    return Split(
        tfidf=self.tfidf[rows],
        labels=self.labels[rows],
        counts=None if self.counts is None else self.counts[rows],
        doc_ids=None if self.doc_ids is None else self.doc_ids[rows],
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
  """

  name: str
  splits: Mapping[str, Split]
  vocab: Sequence[str]
  label_names: Sequence[str]
  synthetic: bool = False
  featurizer: Featurizer | None = None

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

  @property
  def num_terms(self) -> int:
    return len(self.vocab)

  @property
  def num_labels(self) -> int:
    return len(self.label_names)

  def replace(self, **changes) -> Corpus:
    return dataclasses.replace(self, **changes)


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


def handle_empty_docs(corpus: Corpus, mode: str) -> Corpus:
  """Drops (mode='drop', with a warning) or rejects (mode='error') empty docs.

  A document is empty when its TF-IDF row is all zero, e.g. every word was out
  of vocabulary. Such rows have no direction, so an encoder sees no input and
  cosine-based evaluations are undefined for them.
  """
  if mode not in EMPTY_DOC_MODES:
    raise ValueError(f'empty_docs must be one of {EMPTY_DOC_MODES}, got {mode!r}')
  splits = dict(corpus.splits)
  for split_name in SPLIT_NAMES:
    split = splits[split_name]
    empty = empty_rows(split.tfidf)
    if not empty.size:
      continue
    if mode == 'error':
      raise ValueError(
          f'{corpus.name}: split {split_name!r} has {empty.size} empty '
          f'documents (all-zero TF-IDF rows), first rows {empty[:10].tolist()}; '
          "set empty_docs='drop' to drop them")
    logging.warning(
        '%s: dropping %d empty documents (all-zero TF-IDF rows) from split %r',
        corpus.name, empty.size, split_name)
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
  return True


def max_abs_diff(a: sp.spmatrix, b: sp.spmatrix) -> float:
  """max |a - b| over all entries of two sparse matrices of one shape."""
  diff = sp.csr_matrix(a, dtype=np.float64) - sp.csr_matrix(b, dtype=np.float64)
  return float(np.abs(diff.data).max()) if diff.nnz else 0.0
