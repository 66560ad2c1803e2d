"""The user's own text: a folder of .txt files, a CSV, or a tfds catalog set.

All return a `raw.TextCorpus`; `raw.featurize_text_corpus` featurises it.
Corpora without their own train/valid/test split get a seeded random one.
"""

from __future__ import annotations

import csv
import os
import pathlib

from absl import logging
import numpy as np

from dtr.data import corpus as corpus_lib
from dtr.data import raw


def random_split(num_docs: int, valid_fraction: float, test_fraction: float,
                 seed: int) -> dict[str, np.ndarray]:
  """Seeded disjoint row indices for train/valid/test, each in sorted order."""
  num_valid = int(round(num_docs * valid_fraction))
  num_test = int(round(num_docs * test_fraction))
  if num_docs - num_valid - num_test < 1:
    raise ValueError(f'{num_docs} documents leave none for training with '
                     f'valid_fraction={valid_fraction}, test_fraction={test_fraction}')
  order = np.random.default_rng(seed).permutation(num_docs)
  parts = np.split(order, [num_valid, num_valid + num_test])
  return {'valid': np.sort(parts[0]), 'test': np.sort(parts[1]),
          'train': np.sort(parts[2])}


def _finish(name, whole_or_splits, *, valid_fraction, test_fraction,
            split_seed, max_docs_per_split, label_names=None) -> raw.TextCorpus:
  """Splits one TextSplit (or completes given splits), limits, names labels.

  Label names are the sorted label strings found, unless `label_names` are given.
  """
  if isinstance(whole_or_splits, raw.TextSplit):
    rows = random_split(len(whole_or_splits.texts), valid_fraction,
                        test_fraction, split_seed)
    splits = {k: whole_or_splits.take(v) for k, v in rows.items()}
  else:
    splits = dict(whole_or_splits)
    if 'train' not in splits:
      raise ValueError(f'{name}: a pre-split corpus needs a train split, got '
                       f'{sorted(splits)}')
    missing = [s for s in ('valid', 'test') if s not in splits]
    if missing:
      fractions = {'valid': valid_fraction if 'valid' in missing else 0.0,
                   'test': test_fraction if 'test' in missing else 0.0}
      rows = random_split(len(splits['train'].texts), fractions['valid'],
                          fractions['test'], split_seed)
      train = splits['train']
      splits.update({k: train.take(rows[k]) for k in ['train'] + missing})
  splits = {name_: raw.limit_docs(splits[name_], max_docs_per_split, split_seed + i)
            for i, name_ in enumerate(corpus_lib.SPLIT_NAMES)}
  if label_names is None:
    label_names = sorted({label for s in splits.values() for labels in s.labels
                          for label in labels})
  return raw.TextCorpus(name, splits, list(label_names))


# ---------------------------------------------------------------- folder

def _read_text_dir(root: pathlib.Path, first_id: int) -> raw.TextSplit:
  """root/*.txt (unlabelled) or root/<label>/*.txt (labelled by folder name)."""
  files = sorted(p for p in root.rglob('*.txt') if p.is_file())
  depths = {len(p.relative_to(root).parts) for p in files}
  if not files:
    raise FileNotFoundError(f'no .txt files under {root}')
  if len(depths) > 1 or depths.pop() > 2:
    raise ValueError(
        f'{root}: put .txt files either all directly in the folder (no labels) '
        f'or all in one level of subfolders named by label, not both')
  texts = [p.read_text(encoding='utf-8', errors='replace') for p in files]
  labels = [tuple(p.relative_to(root).parts[:-1]) for p in files]
  return raw.TextSplit(texts, labels,
                       np.arange(first_id, first_id + len(files), dtype=np.int64))


def read_folder(path: str, *, valid_fraction: float = 0.1,
                test_fraction: float = 0.1, split_seed: int = 0,
                max_docs_per_split: int = 0) -> raw.TextCorpus:
  """A folder of .txt files; labels are subfolder names (or none).

  Layouts: `path/*.txt`, `path/<label>/*.txt`, or either of those inside
  `path/train`, `path/valid`, `path/test` (valid/test optional: carved out of
  train when absent). Doc ids number the files in sorted path order.
  """
  root = pathlib.Path(path)
  if not root.is_dir():
    raise FileNotFoundError(f'text folder {path} does not exist (config.data.path)')
  split_dirs = {s: root / s for s in corpus_lib.SPLIT_NAMES if (root / s).is_dir()}
  if split_dirs:
    splits, first_id = {}, 0
    for split_name, split_dir in split_dirs.items():
      splits[split_name] = _read_text_dir(split_dir, first_id)
      first_id += len(splits[split_name].texts)
  else:
    splits = _read_text_dir(root, 0)
  return _finish(f'folder:{root.name}', splits, valid_fraction=valid_fraction,
                 test_fraction=test_fraction, split_seed=split_seed,
                 max_docs_per_split=max_docs_per_split)


# ---------------------------------------------------------------- CSV

def _column(spec, columns: list[str] | None, path: str, what: str) -> int:
  """The 0-based index of column `spec` (a header name, or a column number)."""
  spec = str(spec).strip()
  if columns is not None and spec in columns:
    return columns.index(spec)
  if spec.isdigit():
    return int(spec)
  if columns is None:
    raise ValueError(f'{path}: {what} {spec!r} is a name, but the file is read without a header '
                     f'(csv_header=False); give 0-based column numbers instead')
  raise ValueError(f'{path}: no column {spec!r} ({what}); columns are {columns}')


def _text_columns(spec, columns, path) -> list[int]:
  """Column indices of a text spec: one column, or several joined with '+' ('title+description', '1+2')."""
  spec = str(spec)
  if columns is not None and spec in columns:  # A header name that itself holds a '+'.
    return [columns.index(spec)]
  return [_column(part, columns, path, 'text_column') for part in spec.split('+')]


def _integer_label(cell: str, offset: int, path: str, line: int, column) -> str:
  try:
    value = int(cell)
  except ValueError:
    raise ValueError(f'{path}, line {line}: label column {column!r} holds {cell!r}, not an integer '
                     f'(integer class numbers were asked for: label_offset={offset} or '
                     f'integer_labels=True)') from None
  if value - offset < 0:
    raise ValueError(f'{path}, line {line}: label {value} is below label_offset={offset}')
  return str(value - offset)


def read_csv(path: str, *, text_column='text', label_column='label',
             label_separator: str = '', header: bool = True, label_offset: int = 0,
             integer_labels: bool = False, valid_fraction: float = 0.1,
             test_fraction: float = 0.1, split_seed: int = 0,
             max_docs_per_split: int = 0) -> raw.TextCorpus:
  """A CSV file, one document a row.

  Columns are header names or 0-based numbers (`header=False`: a headerless
  file, numbers only); `text_column` may join several with '+' ('title+
  description', '1+2'), separated by a space. `label_column=''` reads no
  labels; `label_separator` (e.g. '|') splits a cell into several labels.
  Labels are the cell strings (label names sorted), or with `integer_labels`
  or a nonzero `label_offset` integers: class = value - label_offset (1 for
  1-based classes), label names '0'..'K-1'. A row whose text is empty after
  stripping is dropped (with a warning giving the count). Doc ids are 0-based
  data row numbers.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'CSV file {path} does not exist (config.data.path)')
  integer_labels = integer_labels or label_offset != 0
  with open(path, newline='', encoding='utf-8', errors='replace') as f:
    reader = csv.reader(f)
    columns = None
    if header:
      columns = next(reader, None)
      if columns is None:
        raise ValueError(f'{path} is empty: no header row')
      columns = [c.strip() for c in columns]
    text_ids = _text_columns(text_column, columns, path)
    label_id = _column(label_column, columns, path, 'label_column') if label_column != '' else None
    needed = max(text_ids + ([label_id] if label_id is not None else []))
    texts, labels, doc_ids, num_rows = [], [], [], 0
    for row in reader:
      if not row:
        continue  # A blank line.
      num_rows += 1
      if len(row) <= needed:
        raise ValueError(f'{path}, line {reader.line_num}: {len(row)} fields, but column {needed} '
                         f'is needed (columns are numbered from 0)')
      text = ' '.join(row[i] for i in text_ids)
      if not text.strip():
        continue
      names = ()
      if label_id is not None:
        cell = row[label_id].strip()
        parts = cell.split(label_separator) if label_separator else [cell]
        parts = [p.strip() for p in parts if p.strip()]
        if integer_labels:
          parts = [_integer_label(p, label_offset, path, reader.line_num, label_column) for p in parts]
        names = tuple(sorted(set(parts)))
      texts.append(text)
      labels.append(names)
      doc_ids.append(num_rows - 1)
  if num_rows == 0:
    raise ValueError(f'{path} has no data rows')
  if not texts:
    raise ValueError(f'{path}: no document has any text: all {num_rows} rows read have an empty '
                     f'text column {text_column!r}')
  if len(texts) < num_rows:
    logging.warning('%s: dropped %d of %d rows whose text column %r is empty', path,
                    num_rows - len(texts), num_rows, text_column)
  label_names = None
  if integer_labels:
    largest = max((int(n) for names in labels for n in names), default=-1)
    label_names = [str(i) for i in range(largest + 1)]
  whole = raw.TextSplit(texts, labels, np.array(doc_ids, np.int64))
  return _finish(f'csv:{pathlib.Path(path).stem}', whole,
                 valid_fraction=valid_fraction, test_fraction=test_fraction,
                 split_seed=split_seed, max_docs_per_split=max_docs_per_split,
                 label_names=label_names)


# ---------------------------------------------------------------- tfds catalog

_SPLIT_ALIASES = {'train': 'train', 'validation': 'valid', 'valid': 'valid',
                  'dev': 'valid', 'test': 'test'}


def _pick_feature(features, wanted: str, kind, what: str, name: str) -> str:
  if wanted in features:
    return wanted
  candidates = [k for k, f in features.items() if isinstance(f, kind)]
  if len(candidates) != 1:
    raise ValueError(f'tfds:{name}: no {what} feature {wanted!r} and no single '
                     f'{kind.__name__} feature to use; features: {list(features)}')
  return candidates[0]


def read_tfds_catalog(name: str, *, catalog_dir: str = '',
                      text_column: str = 'text', label_column: str = 'label',
                      valid_fraction: float = 0.1, test_fraction: float = 0.1,
                      split_seed: int = 0, max_docs_per_split: int = 0
                      ) -> raw.TextCorpus:
  """A tfds catalog text-classification set, already prepared as array_record.

  Nothing is downloaded: prepare it first (e.g. `tfds build NAME
  --file_format=array_record`). Its 'validation' split becomes 'valid'; a
  missing valid or test split is carved out of train. Label names are the
  ClassLabel names in id order. `text_column` may join
  several text features with '+' ('title+description'), separated by a space.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name, data_dir=catalog_dir or None)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'tfds:{name} is not prepared under {builder.data_dir}; dtr never '
        f'downloads. Prepare it where tfds looks (config.data.catalog_dir or '
        f'$TFDS_DATA_DIR), e.g. `tfds build {name} --file_format=array_record`.')
  features = builder.info.features
  if '+' in text_column and text_column not in features:
    text_keys = text_column.split('+')
    missing = [k for k in text_keys if k not in features]
    if missing:
      raise ValueError(f'tfds:{name}: no features {missing} (text_column={text_column!r}); '
                       f'features: {list(features)}')
  else:
    text_keys = [_pick_feature(features, text_column, tfds.features.Text, 'text', name)]
  label_key = _pick_feature(features, label_column, tfds.features.ClassLabel,
                            'label', name)
  label_names = features[label_key].names
  sources = tfds.data_source(name, data_dir=catalog_dir or None, download=False,
                             try_gcs=False)
  splits, first_id = {}, 0
  for tfds_split, source in sources.items():
    ours = _SPLIT_ALIASES.get(str(tfds_split))
    if ours is None:
      continue
    texts, labels = [], []
    for lo in range(0, len(source), 1024):
      for record in source.__getitems__(list(range(lo, min(lo + 1024, len(source))))):
        parts = [record[key] for key in text_keys]
        texts.append(' '.join(p.decode('utf-8', 'replace') if isinstance(p, bytes) else str(p)
                              for p in parts))
        labels.append((label_names[int(record[label_key])],))
    splits[ours] = raw.TextSplit(
        texts, labels, np.arange(first_id, first_id + len(texts), dtype=np.int64))
    first_id += len(texts)
  # Label column c is ClassLabel id c, as in the catalog.
  return _finish(f'tfds:{name}', splits, valid_fraction=valid_fraction,
                 test_fraction=test_fraction, split_seed=split_seed,
                 max_docs_per_split=max_docs_per_split, label_names=label_names)
