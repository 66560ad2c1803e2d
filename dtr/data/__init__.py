"""Corpora for dtr: document-hashing sets, raw text, shared text sets, user files, synthetic data.

  corpus = dtr.data.load_corpus(config.data)   # -> Corpus of train/valid/test
  ids, vals = dtr.data.pad_rows(corpus.splits['train'].tfidf, rows)
  tokens = corpus.splits['train'].tokens       # Tokens over corpus.token_vocab (text corpora)

See `default_data_config()` for every field of `config.data`, `dtr.data.load` for every corpus' recipe.
"""

from dtr.data.batching import flat_rows
from dtr.data.batching import labels_to_bits
from dtr.data.batching import pad_rows
from dtr.data.corpus import Corpus
from dtr.data.corpus import fingerprint
from dtr.data.corpus import require_tokens
from dtr.data.corpus import Split
from dtr.data.corpus import Tokens
from dtr.data.featurize import Featurizer
from dtr.data.labels import class_ids
from dtr.data.labels import label_subsets
from dtr.data.load import default_data_config
from dtr.data.load import load_corpus
from dtr.data.tokenize import Vocabulary

__all__ = [
    'Corpus', 'Featurizer', 'Split', 'Tokens', 'Vocabulary', 'class_ids', 'default_data_config',
    'fingerprint', 'flat_rows', 'label_subsets', 'labels_to_bits', 'load_corpus', 'pad_rows',
    'require_tokens',
]
