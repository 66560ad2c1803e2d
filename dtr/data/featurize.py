"""Raw text -> sublinear TF-IDF rows, with a vocabulary fitted on training text.

The weighting is the one the document-hashing literature uses (VDSH, NASH,
AMMI; scikit-learn's `TfidfTransformer(sublinear_tf=True)` with its default
smooth idf), so featurised raw corpora and the shared hashing sets agree:

  tf(t, d)  = 1 + ln count(t, d)           for count(t, d) > 0, else 0
  idf(t)    = ln((1 + N) / (1 + df(t))) + 1  N training docs, df(t) of them hold t
  x(d)      = tf(., d) * idf / || tf(., d) * idf ||_2

`Featurizer.fit` picks the vocabulary on the training split only: terms with
min_df <= df <= max_df * N, minus stop words, the `vocab_size` most frequent by
total count (ties broken alphabetically), then sorted alphabetically.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from dtr.data import stopwords

# Lower-cased words of two or more characters that start with a letter
# ("don't", "x11", "mp3"); numbers alone are mostly noise for topical hashing.
REGEX_TOKEN_PATTERN = r"[a-z][a-z0-9']*[a-z0-9]"
# scikit-learn's CountVectorizer default: the pattern of the shared hashing sets.
SKLEARN_TOKEN_PATTERN = r'(?u)\b\w\w+\b'
TOKENIZERS = ('regex', 'sentencepiece')
_FORMAT_VERSION = 1


def smooth_idf(doc_freq: np.ndarray, num_docs: int) -> np.ndarray:
  """idf(t) = ln((1 + N) / (1 + df(t))) + 1 (scikit-learn's smooth idf)."""
  doc_freq = np.asarray(doc_freq, np.float64)
  return np.log((1.0 + num_docs) / (1.0 + doc_freq)) + 1.0


def document_frequency(counts: sp.csr_matrix) -> np.ndarray:
  """df(t): the number of rows with a positive count of term t."""
  counts = sp.csr_matrix(counts)
  counts.eliminate_zeros()
  return np.bincount(counts.indices, minlength=counts.shape[1])


def tfidf_from_counts(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
  """Sublinear tf times idf, rows L2-normalised, as float32 CSR.

  Computed in float64 and rounded once. Rows without terms stay all-zero.
  """
  x = sp.csr_matrix(counts, dtype=np.float64, copy=True)
  x.eliminate_zeros()
  x.sort_indices()
  x.data = (1.0 + np.log(x.data)) * np.asarray(idf, np.float64)[x.indices]
  row_len = np.diff(x.indptr)
  row_of_entry = np.repeat(np.arange(x.shape[0]), row_len)
  norms = np.sqrt(np.bincount(row_of_entry, x.data**2, minlength=x.shape[0]))
  x.data /= np.where(norms > 0, norms, 1.0)[row_of_entry]
  return sp.csr_matrix(x, dtype=np.float32)


def train_sentencepiece(texts: Iterable[str], vocab_size: int) -> bytes:
  """Trains a unigram SentencePiece model in memory; returns the model proto."""
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top

  def lines():
    # One line at a time: SentencePiece skips "sentences" over 4 KiB.
    for text in texts:
      for line in text.lower().splitlines():
        if line.strip():
          yield line
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=lines(), model_writer=model, vocab_size=vocab_size,
      model_type='unigram', hard_vocab_limit=False, character_coverage=1.0,
      input_sentence_size=300_000, shuffle_input_sentence=True,
      num_threads=min(4, os.cpu_count() or 1), minloglevel=2)
  return model.getvalue()


class Featurizer:
  """Tokenises text and maps it to TF-IDF rows over a fixed vocabulary.

  Build one with `Featurizer.fit(train_texts, ...)`; save it with `save(dir)` /
  `to_json()` so a trained model can featurise new text later.
  """

  def __init__(self, vocab: Sequence[str], idf: np.ndarray, *,
               tokenizer: str = 'regex',
               token_pattern: str = REGEX_TOKEN_PATTERN,
               sentencepiece_model: bytes | None = None):
    if tokenizer not in TOKENIZERS:
      raise ValueError(f'tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}')
    if tokenizer == 'sentencepiece' and not sentencepiece_model:
      raise ValueError('the sentencepiece tokenizer needs sentencepiece_model')
    self.vocab = list(vocab)
    self.idf = np.asarray(idf, np.float64)
    if self.idf.shape != (len(self.vocab),):
      raise ValueError(f'idf shape {self.idf.shape} != ({len(self.vocab)},)')
    self.tokenizer = tokenizer
    self.token_pattern = token_pattern
    self.sentencepiece_model = sentencepiece_model
    self.term_ids = {term: i for i, term in enumerate(self.vocab)}
    self._regex = re.compile(token_pattern)
    self._sp = None
    if tokenizer == 'sentencepiece':
      import sentencepiece as spm  # pylint: disable=g-import-not-at-top
      self._sp = spm.SentencePieceProcessor(model_proto=sentencepiece_model)

  @property
  def num_terms(self) -> int:
    return len(self.vocab)

  def tokenize_many(self, texts: Sequence[str]) -> list[list[str]]:
    texts = [t.lower() for t in texts]
    if self._sp is not None:
      return self._sp.encode(texts, out_type=str)
    return [self._regex.findall(t) for t in texts]

  def tokenize(self, text: str) -> list[str]:
    return self.tokenize_many([text])[0]

  def counts(self, texts: Sequence[str]) -> sp.csr_matrix:
    """[len(texts), V] int32 term counts; out-of-vocabulary tokens are ignored."""
    ids = [[self.term_ids[t] for t in tokens if t in self.term_ids]
           for tokens in self.tokenize_many(texts)]
    return _count_matrix(ids, len(self.vocab))

  def tfidf(self, counts: sp.csr_matrix) -> sp.csr_matrix:
    return tfidf_from_counts(counts, self.idf)

  def transform(self, texts: Sequence[str]) -> sp.csr_matrix:
    """[len(texts), V] float32 CSR of L2-normalised sublinear TF-IDF rows."""
    return self.tfidf(self.counts(texts))

  @classmethod
  def fit(cls, texts: Sequence[str], **kwargs) -> Featurizer:
    """Fits vocabulary and idf on (training) `texts`; see `fit_with_counts`."""
    return cls.fit_with_counts(texts, **kwargs)[0]

  @classmethod
  def fit_with_counts(
      cls, texts: Sequence[str], *, tokenizer: str = 'regex',
      vocab_size: int = 10000, min_df: int = 3, max_df: float = 0.8,
      stop_words: str = 'english', sentencepiece_vocab_size: int | None = None,
  ) -> tuple[Featurizer, sp.csr_matrix]:
    """Fits on (training) `texts`; also returns their counts (`self.counts(texts)`).

    The vocabulary rule is in the module docstring.

    Args:
      texts: the training documents.
      tokenizer: 'regex' (REGEX_TOKEN_PATTERN on lower-cased text) or
        'sentencepiece' (a unigram model trained here on `texts`; its pieces
        are the terms, and stop words are not applied to them).
      vocab_size: at most this many terms.
      min_df: keep terms in at least this many training documents.
      max_df: keep terms in at most this fraction of training documents.
      stop_words: 'english' (the built-in list) or 'none'.
      sentencepiece_vocab_size: pieces in the SentencePiece model; defaults to
        `vocab_size`.
    """
    if stop_words not in stopwords.STOP_WORD_LISTS:
      raise ValueError(f'stop_words must be one of '
                       f'{sorted(stopwords.STOP_WORD_LISTS)}, got {stop_words!r}')
    texts = list(texts)
    if not texts:
      raise ValueError('cannot fit a Featurizer on zero documents')
    spm_model = None
    if tokenizer == 'sentencepiece':
      spm_model = train_sentencepiece(texts, sentencepiece_vocab_size or vocab_size)
      stop = frozenset()
    else:
      stop = stopwords.STOP_WORD_LISTS[stop_words]
    # A throwaway featurizer with an empty vocabulary, just to tokenise.
    probe = cls([], np.zeros(0), tokenizer=tokenizer, sentencepiece_model=spm_model)
    term_ids: dict[str, int] = {}
    ids = [[term_ids.setdefault(t, len(term_ids)) for t in tokens]
           for tokens in probe.tokenize_many(texts)]
    terms = np.array(sorted(term_ids, key=term_ids.get), dtype=object)
    all_counts = _count_matrix(ids, len(terms))
    df = document_frequency(all_counts)
    total = np.asarray(all_counts.sum(axis=0)).reshape(-1)
    num_docs = len(texts)
    keep = (df >= min_df) & (df <= max_df * num_docs)
    keep &= np.array([t not in stop for t in terms], bool)
    candidates = np.flatnonzero(keep)
    # Most frequent first, ties alphabetical: lexsort's last key is primary.
    order = np.lexsort((terms[candidates].astype(str), -total[candidates]))
    chosen = candidates[order[:vocab_size]]
    chosen = chosen[np.argsort(terms[chosen].astype(str), kind='stable')]
    featurizer = cls([str(t) for t in terms[chosen]],
                     smooth_idf(df[chosen], num_docs), tokenizer=tokenizer,
                     sentencepiece_model=spm_model)
    return featurizer, sp.csr_matrix(all_counts[:, chosen])

  def to_json(self) -> str:
    return json.dumps({
        'format_version': _FORMAT_VERSION,
        'tokenizer': self.tokenizer,
        'token_pattern': self.token_pattern,
        'vocab': self.vocab,
        'idf': self.idf.tolist(),
        'sentencepiece_model': (
            base64.b64encode(self.sentencepiece_model).decode('ascii')
            if self.sentencepiece_model else None),
    })

  @classmethod
  def from_json(cls, text: str) -> Featurizer:
    state = json.loads(text)
    if state.get('format_version') != _FORMAT_VERSION:
      raise ValueError(f'unknown featurizer format {state.get("format_version")}')
    model = state['sentencepiece_model']
    return cls(state['vocab'], np.array(state['idf'], np.float64),
               tokenizer=state['tokenizer'], token_pattern=state['token_pattern'],
               sentencepiece_model=base64.b64decode(model) if model else None)

  def save(self, directory: str | os.PathLike) -> str:
    """Writes `featurizer.json` into `directory`; returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, 'featurizer.json')
    with open(path, 'w') as f:
      f.write(self.to_json())
    return path

  @classmethod
  def load(cls, directory: str | os.PathLike) -> Featurizer:
    with open(os.path.join(directory, 'featurizer.json')) as f:
      return cls.from_json(f.read())


def _count_matrix(ids_per_doc: Sequence[Sequence[int]], num_terms: int
                  ) -> sp.csr_matrix:
  """CSR of term counts from per-document lists of term ids."""
  lengths = np.fromiter((len(d) for d in ids_per_doc), np.int64, len(ids_per_doc))
  cols = np.fromiter((i for d in ids_per_doc for i in d), np.int64, lengths.sum())
  rows = np.repeat(np.arange(len(ids_per_doc)), lengths)
  counts = sp.csr_matrix((np.ones(cols.size, np.int32), (rows, cols)),
                         shape=(len(ids_per_doc), num_terms), dtype=np.int32)
  counts.sum_duplicates()
  return counts
