"""The user's own text: a folder of .txt files, a CSV, or a tfds catalog set.

All return a `raw.TextCorpus`; `raw.featurize_text_corpus` featurises it.
Corpora without their own train/valid/test split get a seeded random one.
"""

from __future__ import annotations

import csv
import os
import pathlib

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
            split_seed, max_docs_per_split) -> raw.TextCorpus:
  """Splits one TextSplit (or completes given splits), limits, names labels."""
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
  label_names = sorted({label for s in splits.values() for labels in s.labels
                        for label in labels})
  return raw.TextCorpus(name, splits, label_names)


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

def read_csv(path: str, *, text_column: str = 'text', label_column: str = 'label',
             label_separator: str = '', valid_fraction: float = 0.1,
             test_fraction: float = 0.1, split_seed: int = 0,
             max_docs_per_split: int = 0) -> raw.TextCorpus:
  """A CSV file with a header row; one document a row.

  `label_column=''` reads no labels; `label_separator` (e.g. '|') splits a
  cell into several labels. Doc ids are 0-based data row numbers.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'CSV file {path} does not exist (config.data.path)')
  with open(path, newline='', encoding='utf-8', errors='replace') as f:
    reader = csv.DictReader(f)
    columns = reader.fieldnames or []
    for column in filter(None, (text_column, label_column)):
      if column not in columns:
        raise ValueError(f'{path}: no column {column!r}; columns are {columns}')
    texts, labels = [], []
    for row in reader:
      texts.append(row[text_column] or '')
      cell = (row[label_column] or '').strip() if label_column else ''
      names = cell.split(label_separator) if label_separator else [cell]
      labels.append(tuple(sorted({n.strip() for n in names if n.strip()})))
  whole = raw.TextSplit(texts, labels, np.arange(len(texts), dtype=np.int64))
  return _finish(f'csv:{pathlib.Path(path).stem}', whole,
                 valid_fraction=valid_fraction, test_fraction=test_fraction,
                 split_seed=split_seed, max_docs_per_split=max_docs_per_split)


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
  missing valid or test split is carved out of train.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name, data_dir=catalog_dir or None)
  if not builder.is_prepared():
    raise FileNotFoundError(
        f'tfds:{name} is not prepared under {builder.data_dir}; dtr never '
        f'downloads. Prepare it where tfds looks (config.data.catalog_dir or '
        f'$TFDS_DATA_DIR), e.g. `tfds build {name} --file_format=array_record`.')
  features = builder.info.features
  text_key = _pick_feature(features, text_column, tfds.features.Text, 'text', name)
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
        text = record[text_key]
        texts.append(text.decode('utf-8', 'replace') if isinstance(text, bytes) else str(text))
        labels.append((label_names[int(record[label_key])],))
    splits[ours] = raw.TextSplit(
        texts, labels, np.arange(first_id, first_id + len(texts), dtype=np.int64))
    first_id += len(texts)
  return _finish(f'tfds:{name}', splits, valid_fraction=valid_fraction,
                 test_fraction=test_fraction, split_seed=split_seed,
                 max_docs_per_split=max_docs_per_split)
