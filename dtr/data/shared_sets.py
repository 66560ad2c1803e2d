"""Readers for the text/, lm/ and bow/ sets of the dtr data bundle (see the data README).

Recipes (paths under the data folder; `split_seed` seeds every random split):

  dbpedia14   text/dbpedia14/{valid,test}.txt with {valid,test}_class_label.txt (one 0-based class a line,
              14 classes). valid.txt (14000 sentences) is the training pool: a random permutation of it,
              default_rng(split_seed), gives 12000 train and 2000 valid documents (held-out share 1/7);
              test.txt is the test set (14000).
  yahoo10     text/yahoo10/, the same layout, 10 classes: the pool of 10000 gives 8500 train / 1500 valid
              (held-out share 0.15); test 10000.
  ptb         lm/ptb/{val,test}.txt, one sentence a line, no labels: val.txt (3370) is the training pool,
              split 90/10 into train/valid (3033 / 337) the same way; test.txt (3761) the test set.
  yahoo_lm    lm/yahoo/{val,test}.txt, the same: 9000 / 1000 / 10000.
  20news_clean  bow/20news_clean/{train,test}.feat (NVDM: `1 id:count ...` a line, the first token a
              placeholder, ids 1-based) and `vocab` (`word id` a line, V = 1994): 11258 training documents of
              which a random 10% (1126) become valid, 7487 test; no labels, no text. The counts are the source;
              TF-IDF is `featurize.tfidf_from_counts` with the smooth idf of the training split.

The text files are tokenised and lower-cased already; a document's text is its line without surrounding
whitespace. Doc ids number the lines of the pool file and then those of the test file. `max_docs_per_split`
keeps a seeded subset of each split after splitting (as for the raw corpora). The text sets become `Corpus`es
through `raw.featurize_text_corpus` in `dtr.data.load`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import scipy.sparse as sp

from dtr.data import corpus as corpus_lib
from dtr.data import featurize
from dtr.data import raw

DBPEDIA14_CLASSES = ('Company', 'EducationalInstitution', 'Artist', 'Athlete', 'OfficeHolder',
                     'MeanOfTransportation', 'Building', 'NaturalPlace', 'Village', 'Animal', 'Plant', 'Album',
                     'Film', 'WrittenWork')
YAHOO10_CLASSES = ('Society & Culture', 'Science & Mathematics', 'Health', 'Education & Reference',
                   'Computers & Internet', 'Sports', 'Business & Finance', 'Entertainment & Music',
                   'Family & Relationships', 'Politics & Government')


@dataclasses.dataclass(frozen=True)
class TextSet:
  """A shared text set: its folder, pool and test files, held-out share of the pool, class names."""
  folder: str
  pool: str
  test: str
  valid_share: float
  label_names: tuple[str, ...] = ()

  def files(self) -> list[str]:
    """The files the set needs, relative to the data folder."""
    names = [self.pool, self.test]
    if self.label_names:
      names += [f'{os.path.splitext(n)[0]}_class_label.txt' for n in (self.pool, self.test)]
    return [f'{self.folder}/{n}' for n in names]


TEXT_SETS = {
    'dbpedia14': TextSet('text/dbpedia14', 'valid.txt', 'test.txt', 1 / 7, DBPEDIA14_CLASSES),
    'yahoo10': TextSet('text/yahoo10', 'valid.txt', 'test.txt', 0.15, YAHOO10_CLASSES),
    'ptb': TextSet('lm/ptb', 'val.txt', 'test.txt', 0.1),
    'yahoo_lm': TextSet('lm/yahoo', 'val.txt', 'test.txt', 0.1),
}
NEWS_CLEAN_FILES = ['bow/20news_clean/train.feat', 'bow/20news_clean/test.feat', 'bow/20news_clean/vocab']


def _lines(path: str) -> list[str]:
  """The lines of a UTF-8 file (split on '\\n' only: the texts may hold other line-break characters)."""
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = f.read().split('\n')
  return lines[:-1] if lines and not lines[-1] else lines


def pool_split(num_docs: int, valid_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Sorted (train, valid) rows of a seeded permutation of range(num_docs); round(share * N) are valid."""
  num_valid = int(round(num_docs * valid_share))
  order = np.random.default_rng(seed).permutation(num_docs)
  return np.sort(order[num_valid:]), np.sort(order[:num_valid])


def _class_labels(path: str, num_docs: int, label_names) -> list[tuple[str, ...]]:
  lines = _lines(path)
  if len(lines) != num_docs:
    raise ValueError(f'{path} has {len(lines)} labels for {num_docs} documents')
  labels = []
  for line_number, line in enumerate(lines, 1):
    try:
      class_id = int(line)
    except ValueError:
      raise ValueError(f'{path}, line {line_number}: {line!r} is not a class number') from None
    if not 0 <= class_id < len(label_names):
      raise ValueError(f'{path}, line {line_number}: class {class_id} outside [0, {len(label_names)})')
    labels.append((label_names[class_id],))
  return labels


def read_text_set(data_dir: str, name: str, *, split_seed: int = 0, max_docs_per_split: int = 0
                  ) -> raw.TextCorpus:
  """The shared text set `name` (a key of TEXT_SETS) under `data_dir`, by the module docstring's recipe."""
  spec = TEXT_SETS[name]
  folder = os.path.join(data_dir, spec.folder)
  parts = {}
  first_id = 0
  for part, file_name in (('pool', spec.pool), ('test', spec.test)):
    path = os.path.join(folder, file_name)
    texts = [line.strip() for line in _lines(path)]
    labels = ([()] * len(texts) if not spec.label_names else _class_labels(
        os.path.join(folder, f'{os.path.splitext(file_name)[0]}_class_label.txt'), len(texts),
        spec.label_names))
    parts[part] = raw.TextSplit(texts, labels, np.arange(first_id, first_id + len(texts), dtype=np.int64))
    first_id += len(texts)
  train_rows, valid_rows = pool_split(len(parts['pool'].texts), spec.valid_share, split_seed)
  splits = {'train': parts['pool'].take(train_rows), 'valid': parts['pool'].take(valid_rows),
            'test': parts['test']}
  splits = {s: raw.limit_docs(splits[s], max_docs_per_split, split_seed + i)
            for i, s in enumerate(corpus_lib.SPLIT_NAMES)}
  return raw.TextCorpus(name, splits, list(spec.label_names))


# ---------------------------------------------------------------- 20news_clean (NVDM bag of words)

def read_nvdm_vocab(path: str) -> list[str]:
  """Words of a `word id` file (ids 1..V, each once), in id order."""
  words = {}
  for line_number, line in enumerate(_lines(path), 1):
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 2 or not fields[1].isdigit():
      raise ValueError(f'{path}, line {line_number}: expected `word id`, got {line!r}')
    words[int(fields[1])] = fields[0]
  if sorted(words) != list(range(1, len(words) + 1)):
    raise ValueError(f'{path}: ids must be 1..{len(words)}, each once')
  return [words[i] for i in range(1, len(words) + 1)]


def read_nvdm_counts(path: str, num_terms: int) -> sp.csr_matrix:
  """[N, V] int32 counts of an NVDM `.feat` file (`placeholder id:count ...` a line, ids 1-based)."""
  lines = _lines(path)
  lengths = np.zeros(len(lines), np.int64)
  entries = []
  for row, line in enumerate(lines):
    fields = line.split()[1:]
    lengths[row] = len(fields)
    entries.extend(fields)
  try:
    pairs = np.array(' '.join(entries).replace(':', ' ').split(), np.int64).reshape(-1, 2)
  except ValueError:
    raise ValueError(f'{path}: entries must be id:count with integers') from None
  if pairs.shape[0] != lengths.sum():
    raise ValueError(f'{path}: every entry must be one id:count pair')
  ids, counts = pairs[:, 0] - 1, pairs[:, 1]
  if ids.size and (ids.min() < 0 or ids.max() >= num_terms):
    row = int(np.searchsorted(np.cumsum(lengths), np.argmax((ids < 0) | (ids >= num_terms)), 'right'))
    raise ValueError(f'{path}, line {row + 1}: term ids must be in 1..{num_terms}')
  if (counts < 0).any():
    raise ValueError(f'{path}: negative counts')
  matrix = sp.csr_matrix((counts.astype(np.int32), (np.repeat(np.arange(len(lines)), lengths), ids)),
                         shape=(len(lines), num_terms), dtype=np.int32)
  matrix.sum_duplicates()
  matrix.eliminate_zeros()
  return matrix


def read_20news_clean(data_dir: str, *, split_seed: int = 0, max_docs_per_split: int = 0,
                      valid_share: float = 0.1) -> corpus_lib.Corpus:
  """The 20news_clean bag of words, by the module docstring's recipe.

  Its featurizer maps new text onto the 1994 words with dtr's regex tokenizer: an approximation, since the
  set's own preprocessing (lemmatised, it seems: 'write', 'say') is not known.
  """
  folder = os.path.join(data_dir, 'bow', '20news_clean')
  vocab = read_nvdm_vocab(os.path.join(folder, 'vocab'))
  train_all = read_nvdm_counts(os.path.join(folder, 'train.feat'), len(vocab))
  test = read_nvdm_counts(os.path.join(folder, 'test.feat'), len(vocab))
  train_rows, valid_rows = pool_split(train_all.shape[0], valid_share, split_seed)
  rows = {'train': train_rows, 'valid': valid_rows,
          'test': np.arange(test.shape[0]) + train_all.shape[0]}
  everything = sp.vstack([train_all, test], format='csr')
  for i, name in enumerate(corpus_lib.SPLIT_NAMES):
    keep = raw.subset_rows(rows[name].size, max_docs_per_split, split_seed + i)
    if keep is not None:
      rows[name] = rows[name][keep]
  train_counts = everything[rows['train']]
  idf = featurize.smooth_idf(featurize.document_frequency(train_counts), train_counts.shape[0])
  splits = {}
  for name in corpus_lib.SPLIT_NAMES:
    counts = everything[rows[name]]
    splits[name] = corpus_lib.Split(tfidf=featurize.tfidf_from_counts(counts, idf),
                                    labels=np.zeros((counts.shape[0], 0), bool), counts=counts,
                                    doc_ids=rows[name])
  return corpus_lib.Corpus(name='20news_clean', splits=splits, vocab=vocab, label_names=[],
                           featurizer=featurize.Featurizer(vocab, idf))
