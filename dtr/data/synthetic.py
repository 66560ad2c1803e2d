"""A small labelled corpus generated on the fly, for tests, demos and CI.

Generative process (all draws from `numpy.random.default_rng(seed)`):

  word frequencies  z_w ∝ 1 / (w + 10),                 w = 0..V-1 (Zipf-like)
  topics            phi_k ~ Dirichlet(topic_concentration * V * z),  k = 1..K
  class priors      alpha_c = 0.1 + 5 * [topic k is owned by class c]; class c
                    owns topics c, c + C, c + 2C, ... (K // C each)
  document d        c_d ~ Uniform(C); with prob. multi_label_prob a second
                    class c'_d != c_d joins and alpha = (alpha_c + alpha_c') / 2
                    theta_d ~ Dirichlet(alpha)
                    n_d = 5 + Poisson(doc_length - 5)
                    counts_d ~ Multinomial(n_d, (1 - b) theta_d^T phi + b z)

with background weight b = 0.4. Token sequences (`tokens=True`) come after, from a separate
generator `default_rng([seed, 1])`, so TF-IDF and counts do not depend on them: document d's
sequence is the multiset of its counted words in a random order, its text those words joined by
spaces ('w00012 w00003 ...'), and the token vocabulary holds all V words, most frequent in the
training split first (ties alphabetical), so np.bincount of a document's token ids, mapped back to
words, is its counts row. Counts become TF-IDF with the featurizer's
formula (sublinear tf, smooth idf fitted on train, rows L2-normalised), so
a hasher trained on it meets the same input statistics as on real data, and
documents of one class share topics: with the defaults, TF-IDF cosine
retrieval has top-100 precision about 0.90 against 1/C = 0.125 by chance
(and a 16-bit AMMI hasher on the tiny test configuration about 0.7).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from dtr.data import corpus as corpus_lib
from dtr.data import featurize
from dtr.data import tokenize

_BACKGROUND_WEIGHT = 0.4
_OWNED_TOPIC_ALPHA = 5.0


def background_and_topics(rng: np.random.Generator, vocab_size: int, num_topics: int,
                          topic_concentration: float) -> tuple[np.ndarray, np.ndarray]:
  """The Zipf-like background z [V] and topics phi_k ~ Dirichlet(topic_concentration * V * z) [K, V]."""
  zipf = 1.0 / (np.arange(vocab_size) + 10.0)
  zipf /= zipf.sum()
  return zipf, rng.dirichlet(topic_concentration * vocab_size * zipf, size=num_topics)


def make_corpus(num_train: int = 3000, num_valid: int = 500,
                num_test: int = 500, vocab_size: int = 2000,
                num_classes: int = 8, num_topics: int = 16,
                doc_length: int = 80, topic_concentration: float = 0.05,
                multi_label_prob: float = 0.0, seed: int = 0, tokens: bool = True
                ) -> corpus_lib.Corpus:
  """The synthetic corpus described in the module docstring; same seed, same data."""
  if num_topics < num_classes:
    raise ValueError(f'need num_topics >= num_classes, got {num_topics} < {num_classes}')
  rng = np.random.default_rng(seed)
  zipf, topics = background_and_topics(rng, vocab_size, num_topics, topic_concentration)
  owner = np.arange(num_topics) % num_classes
  class_alpha = 0.1 + _OWNED_TOPIC_ALPHA * (owner[None, :] == np.arange(num_classes)[:, None])

  num_docs = num_train + num_valid + num_test
  first = rng.integers(num_classes, size=num_docs)
  # A second class, different from the first, for a multi_label_prob share.
  second = (first + rng.integers(1, max(num_classes, 2), size=num_docs)) % num_classes
  has_second = (rng.random(num_docs) < multi_label_prob) & (num_classes > 1)
  alpha = np.where(has_second[:, None],
                   (class_alpha[first] + class_alpha[second]) / 2,
                   class_alpha[first])
  # Dirichlet rows via normalised gammas (rng.dirichlet takes one alpha only).
  theta = rng.gamma(alpha)
  theta /= theta.sum(axis=1, keepdims=True)
  lengths = 5 + rng.poisson(max(doc_length - 5, 0), size=num_docs)
  blocks = []
  for lo in range(0, num_docs, 1024):  # Bounds the dense [docs, V] buffers.
    probs = ((1 - _BACKGROUND_WEIGHT) * theta[lo:lo + 1024] @ topics
             + _BACKGROUND_WEIGHT * zipf)
    probs /= probs.sum(axis=1, keepdims=True)
    blocks.append(sp.csr_matrix(rng.multinomial(lengths[lo:lo + 1024], probs),
                                dtype=np.int32))
  counts = sp.vstack(blocks, format='csr')

  labels = np.zeros((num_docs, num_classes), bool)
  labels[np.arange(num_docs), first] = True
  labels[np.flatnonzero(has_second), second[has_second]] = True

  bounds = np.cumsum([0, num_train, num_valid, num_test])
  train_counts = counts[:num_train]
  idf = featurize.smooth_idf(featurize.document_frequency(train_counts), num_train)
  vocab = [f'w{i:05d}' for i in range(vocab_size)]
  token_vocab = all_tokens = None
  if tokens:
    token_vocab = tokenize.Vocabulary.from_counts(
        dict(zip(vocab, np.asarray(train_counts.sum(axis=0)).reshape(-1).tolist())),
        max_size=0, min_count=0)
    all_tokens = _shuffled_words(counts, np.random.default_rng([seed, 1]))
  splits = {}
  for name, lo, hi in zip(corpus_lib.SPLIT_NAMES, bounds[:-1], bounds[1:]):
    split_counts = counts[lo:hi]
    split_tokens = texts = None
    if tokens:
      words = all_tokens.take(np.arange(lo, hi))
      texts = [' '.join(vocab[w] for w in words.row(i)) for i in range(hi - lo)]
      token_of_word = np.array([token_vocab.token_id(w) for w in vocab], np.int32)
      split_tokens = corpus_lib.Tokens(token_of_word[words.ids], words.offsets)
    splits[name] = corpus_lib.Split(
        tfidf=featurize.tfidf_from_counts(split_counts, idf),
        labels=labels[lo:hi], counts=split_counts,
        doc_ids=np.arange(lo, hi), tokens=split_tokens, texts=texts)
  return corpus_lib.Corpus(
      name='synthetic', splits=splits, vocab=vocab,
      label_names=[f'class{c}' for c in range(num_classes)], synthetic=True,
      featurizer=featurize.Featurizer(vocab, idf), token_vocab=token_vocab)


def _shuffled_words(counts: sp.csr_matrix, rng: np.random.Generator) -> corpus_lib.Tokens:
  """Each row's words (column ids, each repeated count times) in a random order, as Tokens of word ids."""
  words = np.repeat(counts.indices, counts.data)
  offsets = np.concatenate([[0], np.cumsum(np.asarray(counts.sum(axis=1)).reshape(-1))])
  doc = np.repeat(np.arange(counts.shape[0]), np.diff(offsets))
  order = np.lexsort((rng.random(words.size), doc))  # A random order within each document.
  return corpus_lib.Tokens(words[order], offsets)
