"""Readers for the document-hashing sets (20 Newsgroups, Reuters, TMC).

Two layouts hold the same data (see the data README):

* `<name>_vdsh.npz`: per split `s` in train/cv/test the CSR parts
  `s_tfidf_{data,indices,indptr}`, `s_shape`, `s_labels` (int class ids or a
  0/1 matrix), optionally raw counts `s_tf_{data,indices,indptr}` and
  `s_doc_ids`; plus `vocab` and `label_names`.
* `<name>_vdsh.tfidf.mat` or the original VDSH `<name>.tfidf.mat` (MATLAB v5):
  sparse `train`, `cv`, `test` and 0/1 label matrices `gnd_train`, `gnd_cv`,
  `gnd_test`.

The files call the validation split 'cv'; here it becomes 'valid'.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np
import scipy.io
import scipy.sparse as sp

from dtr.data import corpus as corpus_lib
from dtr.data import featurize

# Set name -> number of labels.
HASHING_SETS = {'ng20': 20, 'reuters': 20, 'tmc': 22}
FILE_SPLITS = {'train': 'train', 'valid': 'cv', 'test': 'test'}
FORMATS = ('npz', 'mat')
DATA_HELP = (
    'The hashing sets ship in the dtr data bundle (hashing/ng20, '
    'hashing/reuters, hashing/tmc); the .tfidf.mat files are those of the '
    'VDSH code base (github.com/unsuthee/VariationalDeepSemanticHashing, '
    'dataset/). Set DTR_DATA_DIR (or config.data.data_dir) to the folder '
    'that holds hashing/.')


class MissingTrainSplitError(FileNotFoundError):
  """The data exists but has no training split (the shared TMC file)."""


def candidate_files(data_dir: str, name: str, fmt: str) -> list[str]:
  """Paths where `name` in format `fmt` may live under `data_dir`, best first."""
  folder = os.path.join(data_dir, 'hashing', name)
  if fmt == 'npz':
    return [os.path.join(folder, f'{name}_vdsh.npz')]
  if fmt == 'mat':
    return [os.path.join(folder, f'{name}_vdsh.tfidf.mat'),
            os.path.join(folder, f'{name}.tfidf.mat')]
  raise ValueError(f'format must be one of {FORMATS}, got {fmt!r}')


def find_file(data_dir: str, name: str, fmt: str) -> str:
  """The existing file for `name`, or FileNotFoundError saying what to do."""
  if name not in HASHING_SETS:
    raise ValueError(f'unknown hashing set {name!r}; known: {sorted(HASHING_SETS)}')
  candidates = candidate_files(data_dir, name, fmt)
  for path in candidates:
    if os.path.isfile(path):
      return path
  partial = os.path.join(data_dir, 'hashing', name, f'{name}_vdsh_cvtest.npz')
  if os.path.isfile(partial):
    raise MissingTrainSplitError(
        f'{name}: the train split is missing. {partial} holds only the cv and '
        f'test splits; training needs a full file at {candidates[0]} '
        f"(format='npz') or {candidates[-1]} (format='mat'), e.g. VDSH's "
        f'{name}.tfidf.mat. {DATA_HELP}')
  raise FileNotFoundError(missing_file_message(candidates[0], name, fmt))


def missing_file_message(path: str, name: str, fmt: str) -> str:
  layout = (f'<data_dir>/hashing/{name}/{os.path.basename(path)}')
  return (
      f'hashing set {name!r} not found: {path} does not exist. Expected '
      f'layout: {layout} ({fmt}). {DATA_HELP} For example: '
      f'export DTR_DATA_DIR=/path/to/data, the folder that holds '
      f'hashing/{name}/{os.path.basename(path)}.')


def read_file(path: str, name: str | None = None) -> corpus_lib.Corpus:
  """Reads a `.npz` or `.mat` hashing file into a Corpus."""
  name = name or os.path.basename(path).split('_vdsh')[0].split('.')[0]
  if not os.path.isfile(path):
    raise FileNotFoundError(missing_file_message(path, name, _format_of(path)))
  if _format_of(path) == 'mat':
    return read_mat(path, name)
  return read_npz(path, name)


def _format_of(path: str) -> str:
  return 'mat' if path.endswith('.mat') else 'npz'


def _fail(path: str, problem: str):
  raise ValueError(f'malformed hashing file {path}: {problem}')


def _labels_matrix(path, split_name, labels, num_rows, num_labels):
  """Class ids [N] or a 0/1 matrix [N, C] -> bool [N, C]."""
  labels = np.asarray(labels)
  if labels.shape[0] != num_rows:
    _fail(path, f'split {split_name!r} has {labels.shape[0]} label rows but '
          f'{num_rows} matrix rows')
  if labels.ndim == 1:
    if num_labels is None:
      num_labels = int(labels.max(initial=-1)) + 1
    if labels.size and (labels.min() < 0 or labels.max() >= num_labels):
      _fail(path, f'split {split_name!r} has class ids outside [0, {num_labels})')
    return np.eye(num_labels, dtype=bool)[labels.astype(np.int64)]
  if labels.ndim != 2:
    _fail(path, f'split {split_name!r} labels have shape {labels.shape}')
  if not np.isin(labels, (0, 1)).all():
    _fail(path, f'split {split_name!r} label matrix is not 0/1')
  return labels.astype(bool)


def _csr(path, archive, prefix, split_name):
  """Checked CSR matrix from `<prefix>_{data,indices,indptr}` and `_shape`."""
  parts = [archive[f'{prefix}_{part}'] for part in ('data', 'indices', 'indptr')]
  data, indices, indptr = parts
  shape = tuple(int(d) for d in archive[f'{split_name}_shape'])
  what = f'split {split_name!r} ({prefix})'
  if len(shape) != 2:
    _fail(path, f'{what}: shape {shape} is not 2-D')
  if indptr.shape != (shape[0] + 1,):
    _fail(path, f'{what}: indptr has {indptr.shape[0]} entries for {shape[0]} rows')
  if data.shape != indices.shape or indptr[-1] != data.shape[0] or indptr[0] != 0:
    _fail(path, f'{what}: data/indices/indptr lengths disagree')
  if np.any(np.diff(indptr) < 0):
    _fail(path, f'{what}: indptr is not non-decreasing')
  if indices.size and (indices.min() < 0 or indices.max() >= shape[1]):
    _fail(path, f'{what}: column indices outside [0, {shape[1]})')
  if not np.all(np.isfinite(data)):
    _fail(path, f'{what}: {int((~np.isfinite(data)).sum())} NaN/inf values')
  return sp.csr_matrix((data, indices, indptr), shape=shape)


def read_npz(path: str, name: str) -> corpus_lib.Corpus:
  """Reads the `.npz` layout; validates shapes, keys and values."""
  try:
    archive = np.load(path, allow_pickle=False)
    keys = set(archive.files)
  except (zipfile.BadZipFile, OSError, ValueError) as e:
    raise ValueError(f'malformed hashing file {path}: cannot read it ({e})') from e
  with archive:
    if 'train_tfidf_data' not in keys and 'cv_tfidf_data' in keys:
      raise MissingTrainSplitError(
          f'{path} has no train split (only {sorted(k for k in keys if k.endswith("_shape"))}); '
          f'training needs a file with train_* arrays. {DATA_HELP}')
    label_names = ([str(x) for x in archive['label_names']]
                   if 'label_names' in keys else None)
    splits, counts_ok = {}, True
    for split_name, file_split in FILE_SPLITS.items():
      required = [f'{file_split}_tfidf_{p}' for p in ('data', 'indices', 'indptr')]
      required += [f'{file_split}_shape', f'{file_split}_labels']
      missing = [k for k in required if k not in keys]
      if missing:
        _fail(path, f'missing keys {missing}')
      tfidf = _csr(path, archive, f'{file_split}_tfidf', file_split)
      counts = None
      if f'{file_split}_tf_data' in keys:
        counts = _csr(path, archive, f'{file_split}_tf', file_split)
      counts_ok &= counts is not None
      labels = _labels_matrix(path, file_split, archive[f'{file_split}_labels'],
                              tfidf.shape[0],
                              None if label_names is None else len(label_names))
      doc_ids = (archive[f'{file_split}_doc_ids']
                 if f'{file_split}_doc_ids' in keys else np.arange(tfidf.shape[0]))
      if len(doc_ids) != tfidf.shape[0]:
        _fail(path, f'split {file_split!r} has {len(doc_ids)} doc ids for '
              f'{tfidf.shape[0]} rows')
      splits[split_name] = corpus_lib.Split(tfidf, labels, counts, doc_ids)
    num_terms = splits['train'].tfidf.shape[1]
    if any(s.tfidf.shape[1] != num_terms for s in splits.values()):
      _fail(path, 'splits have different numbers of columns')
    vocab = ([str(x) for x in archive['vocab']] if 'vocab' in keys
             else [f'term{i}' for i in range(num_terms)])
    if len(vocab) != num_terms:
      _fail(path, f'vocab has {len(vocab)} terms but the matrices {num_terms} columns')
    if label_names is None:
      label_names = [f'label{i}' for i in range(splits['train'].labels.shape[1])]
  corpus = corpus_lib.Corpus(name=name, splits=splits, vocab=vocab,
                             label_names=label_names)
  if counts_ok and 'vocab' in keys:
    corpus = corpus.replace(featurizer=_reconstruct_featurizer(corpus))
  return corpus


def _reconstruct_featurizer(corpus: corpus_lib.Corpus):
  """The featurizer that made the file's TF-IDF from its counts, if it did.

  The shared files use scikit-learn's token pattern and smooth idf fitted on
  the train counts; we check that this reproduces the stored rows.
  """
  train = corpus.splits['train']
  idf = featurize.smooth_idf(featurize.document_frequency(train.counts),
                             train.num_docs)
  head = slice(0, min(500, train.num_docs))
  remade = featurize.tfidf_from_counts(train.counts[head], idf)
  if corpus_lib.max_abs_diff(remade, train.tfidf[head]) > 1e-5:
    return None
  return featurize.Featurizer(corpus.vocab, idf,
                              token_pattern=featurize.SKLEARN_TOKEN_PATTERN)


def read_mat(path: str, name: str) -> corpus_lib.Corpus:
  """Reads the VDSH `.tfidf.mat` layout (no vocabulary or counts in it)."""
  try:
    mat = scipy.io.loadmat(path)
  except Exception as e:  # scipy raises several types for a bad file.
    raise ValueError(f'malformed hashing file {path}: cannot read it ({e})') from e
  splits = {}
  for split_name, file_split in FILE_SPLITS.items():
    missing = [k for k in (file_split, f'gnd_{file_split}') if k not in mat]
    if missing:
      if file_split == 'train' and 'cv' in mat:
        raise MissingTrainSplitError(f'{path} has no train split. {DATA_HELP}')
      _fail(path, f'missing keys {missing}')
    matrix = mat[file_split]
    if not sp.issparse(matrix):
      _fail(path, f'{file_split!r} is {type(matrix).__name__}, not sparse')
    tfidf = sp.csr_matrix(matrix)
    if not np.all(np.isfinite(tfidf.data)):
      _fail(path, f'split {file_split!r}: '
            f'{int((~np.isfinite(tfidf.data)).sum())} NaN/inf values')
    labels = _labels_matrix(path, file_split, mat[f'gnd_{file_split}'],
                            tfidf.shape[0], None)
    splits[split_name] = corpus_lib.Split(tfidf, labels,
                                          doc_ids=np.arange(tfidf.shape[0]))
  num_terms = splits['train'].tfidf.shape[1]
  if any(s.tfidf.shape[1] != num_terms for s in splits.values()):
    _fail(path, 'splits have different numbers of columns')
  num_labels = splits['train'].labels.shape[1]
  if any(s.labels.shape[1] != num_labels for s in splits.values()):
    _fail(path, 'splits have different numbers of label columns')
  return corpus_lib.Corpus(
      name=name, splits=splits, vocab=[f'term{i}' for i in range(num_terms)],
      label_names=[f'label{i}' for i in range(num_labels)])
