"""Pairs (X, Y) of related texts for predictive document hashing, featurised into a `PairCorpus`.

The AMMI paper's second task (Stratos & Wiseman, ICML 2020) pairs distinct Who-Did-What articles about one
event. That data is not available offline, so `read_20news_pairs` builds the same kind of pairs from the
20 Newsgroups "bydate" tarball (train and test folders together), read in place with `tarfile`:

  thread   posts whose Subject: line is equal once any number of leading 'Re:' prefixes, case and extra
           whitespace are removed (`normalise_subject`); an empty normalised subject belongs to no thread
  body     `raw.clean_newsgroup_post`: no header block (so no subject either: the pairing key never leaks
           into the text), no quoted lines ('>' or '|'), no "... writes:" lines, no signature
  posts    a body with fewer than `min_tokens` word tokens is dropped as empty, and so is a body equal to
           an earlier one of its thread (cross-posts), so the two texts of a pair always differ
  pairs    a thread's posts in (folder, group, post number) order, roughly chronological, are paired
           consecutively, (1st, 2nd), (3rd, 4th), ...: X the earlier post, Y the later one; every post is
           in at most one pair, and a thread's odd last post is left out
  splits   threads, not pairs, are assigned to test, valid and train in a seeded random order until each
           held-out split has its share of the pairs: no thread crosses splits

On the tarball this gives 6,116 pairs from 2,866 threads (train / valid / test 4,891 / 611 / 612 pairs once
the two with no vocabulary word are dropped). `read_pairs_csv` reads the user's own pairs instead (one pair a
row). `featurize_pairs` fits one `Featurizer` on the training X and Y texts together (sublinear TF-IDF, L2
rows), so X and Y share a vocabulary. Building takes seconds, so nothing is cached on disk.
`make_synthetic_pairs` is the stand-in when no data is found, announced loudly.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
import re
import sys
from typing import Mapping, Sequence

from absl import logging
import ml_collections
import numpy as np
import scipy.sparse as sp

from dtr.data import corpus as corpus_lib
from dtr.data import featurize
from dtr.data import raw
from dtr.data import synthetic

RAW_20NEWS = '20news-bydate.tar.xz'
_RE_PREFIX = re.compile(r'^\s*re\s*:', re.IGNORECASE)
_WORD = re.compile(featurize.REGEX_TOKEN_PATTERN)


# ------------------------------------------------------------------------------------------------ containers
@dataclasses.dataclass
class TextPairs:
  """Pairs of raw texts; pair i is (x[i], y[i]) and belongs to thread (group) `groups[i]`."""

  x: list[str]
  y: list[str]
  groups: np.ndarray  # [N] int64: pairs of one group always land in the same split

  def take(self, rows: Sequence[int]) -> TextPairs:
    rows = np.asarray(rows, np.int64)
    return TextPairs([self.x[i] for i in rows], [self.y[i] for i in rows], self.groups[rows])

  def __len__(self) -> int:
    return len(self.x)


@dataclasses.dataclass(frozen=True)
class PairSplit:
  """One split of a pair corpus: row i of `x` and row i of `y` are the two texts of pair i.

  `x` and `y` are `corpus.Split`s (TF-IDF CSR rows over the shared vocabulary, no labels), so the batching
  and encoding helpers of `dtr.input_pipeline` and `dtr.train` apply to each side unchanged.
  """

  x: corpus_lib.Split
  y: corpus_lib.Split
  groups: np.ndarray  # [N] int64 thread ids

  def __post_init__(self):
    if not self.x.num_docs == self.y.num_docs == len(self.groups):
      raise ValueError(f'a PairSplit needs as many X rows as Y rows and group ids, got {self.x.num_docs}, '
                       f'{self.y.num_docs} and {len(self.groups)}')

  @property
  def num_pairs(self) -> int:
    return self.x.num_docs


@dataclasses.dataclass(frozen=True)
class PairCorpus:
  """'train', 'valid' and 'test' `PairSplit`s over one vocabulary (see `corpus.Corpus` for the fields)."""

  name: str
  splits: Mapping[str, PairSplit]
  vocab: Sequence[str]
  synthetic: bool = False
  featurizer: featurize.Featurizer | None = None


def text_split(tfidf: sp.csr_matrix, counts: sp.csr_matrix | None = None) -> corpus_lib.Split:
  """An unlabelled `corpus.Split` (labels [N, 0]) of TF-IDF rows."""
  return corpus_lib.Split(tfidf=tfidf, labels=np.zeros((tfidf.shape[0], 0), bool), counts=counts)


# ------------------------------------------------------------------------------------------------ 20 Newsgroups
def normalise_subject(subject: str) -> str:
  """'Re: RE:  Engine  Noise ' -> 'engine noise': the thread key of a post."""
  previous = None
  while previous != subject:
    previous, subject = subject, _RE_PREFIX.sub('', subject, count=1)
  return ' '.join(subject.lower().split())


def subject_of(post: str) -> str:
  """The Subject: header of a raw post ('' when it has none)."""
  header, _, _ = post.partition('\n\n')
  for line in header.split('\n'):
    if line.lower().startswith('subject:'):
      return line[len('subject:'):]
  return ''


def num_words(text: str) -> int:
  return len(_WORD.findall(text.lower()))


def pair_threads(posts: Sequence[tuple[str, str]], min_tokens: int = 5) -> TextPairs:
  """Pairs of cleaned posts of one thread, from (sort key, raw post) items (the rules: module docstring).

  Group ids number the normalised subjects in sorted order, so they do not depend on the input order.
  """
  threads = collections.defaultdict(list)
  for key, post in sorted(posts):
    subject = normalise_subject(subject_of(post))
    body = raw.clean_newsgroup_post(post)
    if subject and num_words(body) >= min_tokens and body not in threads[subject]:
      threads[subject].append(body)
  xs, ys, groups = [], [], []
  for thread_id, subject in enumerate(sorted(threads)):
    bodies = threads[subject]
    for first in range(0, len(bodies) - 1, 2):
      xs.append(bodies[first])
      ys.append(bodies[first + 1])
      groups.append(thread_id)
  return TextPairs(xs, ys, np.asarray(groups, np.int64))


def read_20news_pairs(tar_path: str, min_tokens: int = 5) -> TextPairs:
  """Every thread pair of the 20news-bydate tarball (train and test folders together)."""

  def wanted(name):
    parts = name.split('/')
    return len(parts) == 3 and parts[0].startswith('20news-bydate-') and parts[2].isdigit()

  posts = raw._tar_texts(tar_path, wanted)  # pylint: disable=protected-access
  if not posts:
    raise ValueError(f'{tar_path} holds no 20news-bydate-{{train,test}}/<group>/<id> files')
  # The train folder holds the older posts: order by (folder, group, post number).
  order = {'20news-bydate-train': 0, '20news-bydate-test': 1}
  keyed = []
  for name, text in posts.items():
    top, group, post_id = name.split('/')
    keyed.append(((order.get(top, 2), group, int(post_id)), text))
  return pair_threads(keyed, min_tokens)


# ------------------------------------------------------------------------------------------------ user CSV
def read_pairs_csv(path: str, x_column: str = 'x', y_column: str = 'y', group_column: str = '') -> TextPairs:
  """The user's pairs: a CSV file with a header row, one pair a row.

  `group_column` (optional) names related rows, e.g. a thread or event id: rows of one group always land in
  the same split. Without it every row is its own group. A row with an empty X or Y is an error naming the
  rows (data row numbers, 1-based after the header), since a silently dropped pair shifts every index.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'pairs CSV file {path} does not exist (config.data.path)')
  with open(path, newline='', encoding='utf-8', errors='replace') as f:
    reader = csv.DictReader(f)
    columns = reader.fieldnames or []
    for what, column in (('x_column', x_column), ('y_column', y_column), ('group_column', group_column)):
      if column and column not in columns:
        raise ValueError(f'{path}: no column {column!r} (config.data.{what}); the header has {columns}')
    rows = list(reader)
  xs = [(r[x_column] or '').strip() for r in rows]
  ys = [(r[y_column] or '').strip() for r in rows]
  empty = [i + 1 for i, (x, y) in enumerate(zip(xs, ys)) if not x or not y]
  if empty:
    raise ValueError(f'{path}: {len(empty)} rows have an empty {x_column!r} or {y_column!r} text (data rows '
                     f'{empty[:10]}{" ..." if len(empty) > 10 else ""}); fill or remove them')
  if not xs:
    raise ValueError(f'{path}: no data rows under the header {columns}')
  if group_column:
    names = {name: i for i, name in enumerate(sorted({r[group_column] for r in rows}))}
    groups = np.array([names[r[group_column]] for r in rows], np.int64)
  else:
    groups = np.arange(len(xs), dtype=np.int64)
  return TextPairs(xs, ys, groups)


# ------------------------------------------------------------------------------------------------ splits
def split_by_group(groups: np.ndarray, valid_fraction: float, test_fraction: float, seed: int
                   ) -> dict[str, np.ndarray]:
  """Sorted pair rows of each split; whole groups go to test, then valid, then train in a seeded order.

  A held-out split takes groups until it holds at least its fraction of the pairs, so with large groups
  it may hold a little more.
  """
  groups = np.asarray(groups)
  total = len(groups)
  ids, sizes = np.unique(groups, return_counts=True)
  order = np.random.default_rng(seed).permutation(len(ids))
  split_of_group = np.full(len(ids), 'train', dtype=object)
  filled, position = 0, 0
  for name, fraction in (('test', test_fraction), ('valid', valid_fraction)):
    target = filled + fraction * total
    while position < len(order) and filled < target:
      split_of_group[order[position]] = name
      filled += sizes[order[position]]
      position += 1
  split_of_row = split_of_group[np.searchsorted(ids, groups)]
  rows = {name: np.flatnonzero(split_of_row == name) for name in corpus_lib.SPLIT_NAMES}
  for name, r in rows.items():
    if not len(r):
      raise ValueError(f'{total} pairs in {len(ids)} groups leave the {name!r} split empty with '
                       f'valid_fraction={valid_fraction}, test_fraction={test_fraction}; use more pairs')
  return rows


# ------------------------------------------------------------------------------------------------ featurise
def featurize_pairs(name: str, text_splits: Mapping[str, TextPairs], **featurize_kw) -> PairCorpus:
  """One `Featurizer` fitted on the training X and Y texts together; TF-IDF rows of both sides of every split.

  Pairs where either side has no in-vocabulary word (an all-zero row: no direction to encode) are dropped
  with a warning.
  """
  train = text_splits['train']
  featurizer = featurize.Featurizer.fit(train.x + train.y, **featurize_kw)
  splits = {}
  for split_name in corpus_lib.SPLIT_NAMES:
    pairs = text_splits[split_name]
    x_counts, y_counts = featurizer.counts(pairs.x), featurizer.counts(pairs.y)
    keep = (np.diff(x_counts.indptr) > 0) & (np.diff(y_counts.indptr) > 0)
    if not keep.all():
      logging.warning('%s: dropping %d pairs of split %r with an empty X or Y (no vocabulary word)', name,
                      int((~keep).sum()), split_name)
    x_counts, y_counts = x_counts[keep], y_counts[keep]
    splits[split_name] = PairSplit(x=text_split(featurizer.tfidf(x_counts), x_counts),
                                   y=text_split(featurizer.tfidf(y_counts), y_counts),
                                   groups=pairs.groups[keep])
  return PairCorpus(name, splits, featurizer.vocab, featurizer=featurizer)


# ------------------------------------------------------------------------------------------------ synthetic
def make_synthetic_pairs(num_train: int = 2000, num_valid: int = 300, num_test: int = 300,
                         vocab_size: int = 1000, num_topics: int = 32, doc_length: int = 60,
                         topic_concentration: float = 0.05, mixture_concentration: float = 0.1,
                         seed: int = 0) -> PairCorpus:
  """Two noisy views of one topic mixture per pair: a pair corpus for tests and demos.

  The topics and background follow `dtr.data.synthetic` (Zipf-like background z, topics
  phi_k ~ Dirichlet(topic_concentration * V * z)). Pair i draws theta_i ~ Dirichlet(mixture_concentration)
  over K topics, and X_i and Y_i are independent draws counts ~ Multinomial(n, 0.6 theta_i^T phi + 0.4 z)
  with n = 5 + Poisson(doc_length - 5): they share what the mixture says and nothing else.
  """
  rng = np.random.default_rng(seed)
  zipf, topics_KxV = synthetic.background_and_topics(rng, vocab_size, num_topics, topic_concentration)
  num_pairs = num_train + num_valid + num_test
  theta_NxK = rng.dirichlet(np.full(num_topics, mixture_concentration), size=num_pairs)
  probs_NxV = 0.6 * theta_NxK @ topics_KxV + 0.4 * zipf
  probs_NxV /= probs_NxV.sum(axis=1, keepdims=True)

  def view():
    lengths = 5 + rng.poisson(max(doc_length - 5, 0), size=num_pairs)
    return sp.csr_matrix(rng.multinomial(lengths, probs_NxV), dtype=np.int32)

  x_counts, y_counts = view(), view()
  bounds = np.cumsum([0, num_train, num_valid, num_test])
  idf = featurize.smooth_idf(featurize.document_frequency(sp.vstack([x_counts[:num_train],
                                                                     y_counts[:num_train]])), 2 * num_train)
  splits = {}
  for name, lo, hi in zip(corpus_lib.SPLIT_NAMES, bounds[:-1], bounds[1:]):
    splits[name] = PairSplit(x=text_split(featurize.tfidf_from_counts(x_counts[lo:hi], idf), x_counts[lo:hi]),
                             y=text_split(featurize.tfidf_from_counts(y_counts[lo:hi], idf), y_counts[lo:hi]),
                             groups=np.arange(lo, hi, dtype=np.int64))
  vocab = [f'w{i:05d}' for i in range(vocab_size)]
  return PairCorpus('synthetic_pairs', splits, vocab, synthetic=True, featurizer=featurize.Featurizer(vocab, idf))


def _synthetic_banner(reason: str) -> None:
  rule = '=' * 78
  print('\n'.join([
      rule, 'dtr: NO REAL PAIR DATA: USING THE SYNTHETIC PAIR CORPUS INSTEAD.', reason,
      'Numbers measured on synthetic data are meaningless for papers and comparisons.',
      f'To use the real pairs: export DTR_DATA_DIR=/path/to/data, the folder that holds raw/{RAW_20NEWS} '
      '(or set config.data.data_dir), or give your own CSV (config.data.source=csv, config.data.path=...). '
      'Set config.data.allow_synthetic=False to make missing data an error.', rule]),
      file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ config
def default_pairs_config() -> ml_collections.ConfigDict:
  """The `config.data` fields of the predictive task.

  Fields:
    source: 'raw_20news' (thread pairs of <data_dir>/raw/20news-bydate.tar.xz), 'csv' (`path`: one pair a
      row, columns `x_column`, `y_column`, optional `group_column`) or 'synthetic'.
    data_dir: the folder that holds raw/; '' means $DTR_DATA_DIR.
    allow_synthetic: when the 20news tarball is not found, use the synthetic pairs (loudly) instead of
      raising FileNotFoundError.
    min_tokens: 20news posts with fewer word tokens after cleaning are dropped as empty.
    valid_fraction, test_fraction, split_seed: the seeded split by thread (group).
    max_pairs_per_split: keep a seeded random subset of at most this many pairs a split (0: all).
    vocab_size, min_df, max_df, stop_words, tokenizer: the `Featurizer` fitted on training X and Y texts.
    synthetic: arguments of `make_synthetic_pairs`.
  """
  return ml_collections.ConfigDict(dict(
      source='raw_20news', data_dir='', allow_synthetic=True, path='', x_column='x', y_column='y',
      group_column='', min_tokens=5, valid_fraction=0.1, test_fraction=0.1, split_seed=0,
      max_pairs_per_split=0, tokenizer='regex', vocab_size=10000, min_df=3, max_df=0.8, stop_words='english',
      synthetic=dict(num_train=2000, num_valid=300, num_test=300, vocab_size=1000, num_topics=32,
                     doc_length=60, topic_concentration=0.05, mixture_concentration=0.1, seed=0)))


def _limit(pairs: TextPairs, max_pairs: int, seed: int) -> TextPairs:
  rows = raw.subset_rows(len(pairs), max_pairs, seed)
  return pairs if rows is None else pairs.take(rows)


def load_pair_corpus(cfg) -> PairCorpus:
  """The pair corpus `cfg` (a `config.data` of the predictive task) describes."""
  if cfg.source == 'synthetic':
    return make_synthetic_pairs(**cfg.synthetic)
  if cfg.source == 'raw_20news':
    data_dir = cfg.data_dir or os.environ.get('DTR_DATA_DIR', '')
    path = os.path.join(data_dir or '$DTR_DATA_DIR', 'raw', RAW_20NEWS)
    if not data_dir or not os.path.isfile(path):
      reason = (f'raw_20news pairs: {path} does not exist. Set DTR_DATA_DIR (or config.data.data_dir) to the '
                'folder that holds raw/.')
      if not cfg.allow_synthetic:
        raise FileNotFoundError(reason)
      _synthetic_banner(reason)
      return make_synthetic_pairs(**cfg.synthetic)
    pairs, name = read_20news_pairs(path, cfg.min_tokens), 'pairs_20news'
  elif cfg.source == 'csv':
    pairs = read_pairs_csv(cfg.path, cfg.x_column, cfg.y_column, cfg.group_column)
    name = f'pairs_csv:{os.path.splitext(os.path.basename(cfg.path))[0]}'
  else:
    raise ValueError(f"unknown pair source config.data.source={cfg.source!r}; use 'raw_20news', 'csv' or "
                     "'synthetic'")
  rows = split_by_group(pairs.groups, cfg.valid_fraction, cfg.test_fraction, cfg.split_seed)
  text_splits = {name_: _limit(pairs.take(r), cfg.max_pairs_per_split, cfg.split_seed + i)
                 for i, (name_, r) in enumerate(rows.items())}
  logging.info('%s: %d pairs in %d groups (train %d / valid %d / test %d)', name, len(pairs),
               len(np.unique(pairs.groups)), *(len(text_splits[s]) for s in corpus_lib.SPLIT_NAMES))
  return featurize_pairs(name, text_splits, tokenizer=cfg.tokenizer, vocab_size=cfg.vocab_size,
                         min_df=cfg.min_df, max_df=cfg.max_df, stop_words=cfg.stop_words)
