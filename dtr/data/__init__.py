"""Corpora for dtr: document-hashing sets, raw text, user files, synthetic data.

  corpus = dtr.data.load_corpus(config.data)   # -> Corpus of train/valid/test
  ids, vals = dtr.data.pad_rows(corpus.splits['train'].tfidf, rows)

See `default_data_config()` for every field of `config.data`.
"""

from dtr.data.batching import flat_rows
from dtr.data.batching import labels_to_bits
from dtr.data.batching import pad_rows
from dtr.data.corpus import Corpus
from dtr.data.corpus import Split
from dtr.data.featurize import Featurizer
from dtr.data.load import default_data_config
from dtr.data.load import load_corpus

__all__ = [
    'Corpus', 'Featurizer', 'Split', 'default_data_config', 'flat_rows', 'labels_to_bits',
    'load_corpus', 'pad_rows',
]
