"""Text -> token id sequences: four tokenizers and a `Vocabulary` fitted on training text.

Token ids (every dtr vocabulary; `dtr.methods.base` uses the same numbers):

  0 <pad>   1 <unk>   2 <bos>   3 <eos>   4.. words of the training split

`Vocabulary.fit` counts the words of the training texts and keeps those with count >= min_count, most frequent
first (ties alphabetical), at most `max_size` ids in all (the four specials included; 0 = no limit). Encoded
sequences hold word ids only (no bos/eos: a model adds them); words not in the vocabulary become <unk>, and so do
the shared files' own unknown-word markers (`UNK_MARKERS`: PTB's '<unk>', the dbpedia/yahoo '_UNK') and any text
token spelled like a special, so text can never inject padding. A sequence longer than `max_len` tokens (0: no
limit) keeps its first `max_len` tokens; how many documents were cut is logged.

Tokenizers:
  whitespace     str.split(), case kept: for files already tokenised and lower-cased (the shared text/ and lm/
                 sets, where PTB's 'N' is the number token).
  regex          the lower-cased text's words: runs of letters or digits, with inner apostrophes ("don't",
                 "o'neill"); punctuation is dropped.
  kim            Kim (2014)'s `clean_str` for sentence classification: characters other than letters, digits and
                 ( ) , ! ? ' ` become spaces; the clitics 's 've n't 're 'd 'll are split off ("don't" ->
                 "do n't"); , ! ( ) ? become tokens; then whitespace is collapsed, the text lower-cased and split.
  sentencepiece  a unigram SentencePiece model trained in memory on the (lower-cased) training texts, with
                 max_size - 4 pieces; the pieces are the words. The model is saved with the vocabulary.
"""

from __future__ import annotations

import base64
import collections
import itertools
import json
import os
import re
from typing import Iterable, Mapping, Sequence

from absl import logging
import numpy as np

from dtr.data import corpus as corpus_lib

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIALS = ('<pad>', '<unk>', '<bos>', '<eos>')
TOKENIZERS = ('whitespace', 'regex', 'kim', 'sentencepiece')
UNK_MARKERS = frozenset({'<unk>', '<UNK>', '_UNK'})
WORD_PATTERN = r"[^\W_]+(?:'[^\W_]+)*"
_RESERVED = frozenset(SPECIALS) | UNK_MARKERS
_WORD = re.compile(WORD_PATTERN)
_FORMAT_VERSION = 1

_KIM_DROP = re.compile(r"[^A-Za-z0-9(),!?'`]")
_KIM_CLITIC = re.compile(r"(n't|'s|'ve|'re|'d|'ll)")
_KIM_PUNCT = re.compile(r'([(),!?])')


def kim_clean(text: str) -> str:
  """Kim (2014)'s sentence cleaning (see the module docstring); tokens are `kim_clean(text).split()`."""
  text = _KIM_DROP.sub(' ', text)
  text = _KIM_CLITIC.sub(r' \1', text)
  text = _KIM_PUNCT.sub(r' \1 ', text)
  return ' '.join(text.split()).lower()


def _check_tokenizer(tokenizer: str) -> None:
  if tokenizer not in TOKENIZERS:
    raise ValueError(f'token tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}')


class Vocabulary:
  """Maps text to token ids and back; see the module docstring for the rules.

  Build one with `Vocabulary.fit(train_texts, ...)`; `save(dir)` / `to_json()` keep the tokenizer settings (and
  the SentencePiece model), so a trained workdir can tokenise new text the same way.
  """

  def __init__(self, words: Sequence[str], *, tokenizer: str = 'whitespace', max_len: int = 0,
               sentencepiece_model: bytes | None = None):
    """`words` are the non-special entries in id order: words[i] has id len(SPECIALS) + i."""
    _check_tokenizer(tokenizer)
    if tokenizer == 'sentencepiece' and not sentencepiece_model:
      raise ValueError('the sentencepiece tokenizer needs sentencepiece_model')
    words = [str(w) for w in words]
    reserved = sorted(_RESERVED.intersection(words))
    if reserved:
      raise ValueError(f'vocabulary words may not be special or unknown-word markers, got {reserved}')
    if len(set(words)) != len(words):
      raise ValueError('vocabulary words must be distinct')
    if max_len < 0:
      raise ValueError(f'max_len must be >= 0 (0: no limit), got {max_len}')
    self.words = words
    self.tokenizer = tokenizer
    self.max_len = int(max_len)
    self.sentencepiece_model = sentencepiece_model
    self.id_to_token = list(SPECIALS) + words
    self._ids = {w: i for i, w in enumerate(words, len(SPECIALS))}
    self._sp = None
    if tokenizer == 'sentencepiece':
      import sentencepiece as spm  # pylint: disable=g-import-not-at-top
      self._sp = spm.SentencePieceProcessor(model_proto=sentencepiece_model)

  @property
  def size(self) -> int:
    """Number of token ids, the specials included."""
    return len(self.id_to_token)

  def __len__(self) -> int:
    return self.size

  def token_id(self, word: str) -> int:
    return self._ids.get(word, UNK_ID)

  # ------------------------------------------------------------------------------ text <-> ids
  def tokenize_many(self, texts: Sequence[str]) -> list[list[str]]:
    return split_words(texts, self.tokenizer, self._sp)

  def encode(self, texts: Sequence[str], *, name: str = '') -> corpus_lib.Tokens:
    """Token ids of each text (unknown words -> UNK_ID), cut to `max_len`; logs how many were cut."""
    return self.encode_words(self.tokenize_many(texts), name=name)

  def encode_words(self, words_per_doc: Sequence[Sequence[str]], *, name: str = '') -> corpus_lib.Tokens:
    """`encode` for texts already split into words by `tokenize_many`."""
    ids_per_doc = [[self._ids.get(w, UNK_ID) for w in words] for words in words_per_doc]
    if self.max_len:
      cut = sum(len(ids) > self.max_len for ids in ids_per_doc)
      if cut:
        logging.info('%s: truncated %d of %d documents to max_len=%d tokens', name or 'encode', cut,
                     len(ids_per_doc), self.max_len)
        ids_per_doc = [ids[:self.max_len] for ids in ids_per_doc]
    return corpus_lib.Tokens.from_lists(ids_per_doc)

  def decode(self, ids: Iterable[int]) -> str:
    """The text of token ids: <pad> and <bos> skipped, stops at the first <eos>, unknown words as '<unk>'."""
    pieces = []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i not in (PAD_ID, BOS_ID):
        pieces.append(self.id_to_token[i] if 0 <= i < self.size else SPECIALS[UNK_ID])
    if self._sp is not None:
      return ''.join(pieces).replace('\u2581', ' ').strip()
    return ' '.join(pieces)

  # ------------------------------------------------------------------------------ fitting
  @classmethod
  def from_counts(cls, counts: Mapping[str, int], *, max_size: int = 20000, min_count: int = 1,
                  **kwargs) -> Vocabulary:
    """The words of `counts` with count >= min_count, most frequent first (ties alphabetical), at most
    `max_size` ids in all including the specials (0: no limit)."""
    if max_size and max_size < len(SPECIALS):
      raise ValueError(f'max_size must be 0 (no limit) or >= {len(SPECIALS)} (the special tokens), '
                       f'got {max_size}')
    kept = sorted(((w, c) for w, c in counts.items() if c >= min_count and w not in _RESERVED),
                  key=lambda wc: (-wc[1], wc[0]))
    if max_size:
      kept = kept[:max_size - len(SPECIALS)]
    return cls([w for w, _ in kept], **kwargs)

  @classmethod
  def fit(cls, texts: Sequence[str], **kwargs) -> Vocabulary:
    """Fits on (training) `texts`; see `fit_with_tokens`."""
    return cls.fit_with_tokens(texts, **kwargs)[0]

  @classmethod
  def fit_with_tokens(cls, texts: Sequence[str], *, tokenizer: str = 'whitespace', max_size: int = 20000,
                      min_count: int = 1, max_len: int = 0, name: str = ''
                      ) -> tuple[Vocabulary, corpus_lib.Tokens]:
    """Fits on (training) `texts` by the rule of `from_counts`; also returns their `encode(texts)`.

    Args:
      texts: the training documents.
      tokenizer: one of TOKENIZERS (see the module docstring); 'sentencepiece' trains its model here.
      max_size: at most this many ids, the specials included (0: no limit).
      min_count: keep words seen at least this often in `texts`.
      max_len: `encode` keeps the first max_len tokens of a document (0: all).
      name: what to call the texts when logging truncation.
    """
    _check_tokenizer(tokenizer)
    texts = list(texts)
    model = None
    if tokenizer == 'sentencepiece':
      from dtr.data import featurize  # pylint: disable=g-import-not-at-top
      pieces = (max_size - len(SPECIALS)) if max_size else 32000
      model = featurize.train_sentencepiece(texts, max(pieces, 8))
    words = cls([], tokenizer=tokenizer, sentencepiece_model=model).tokenize_many(texts)
    counts = collections.Counter(itertools.chain.from_iterable(words))
    vocab = cls.from_counts(counts, max_size=max_size, min_count=min_count, tokenizer=tokenizer,
                            max_len=max_len, sentencepiece_model=model)
    return vocab, vocab.encode_words(words, name=name)

  # ------------------------------------------------------------------------------ saving
  def to_json(self) -> str:
    return json.dumps({
        'format_version': _FORMAT_VERSION, 'tokenizer': self.tokenizer, 'word_pattern': WORD_PATTERN,
        'max_len': self.max_len, 'specials': list(SPECIALS), 'words': self.words,
        'sentencepiece_model': (base64.b64encode(self.sentencepiece_model).decode('ascii')
                                if self.sentencepiece_model else None),
    })

  @classmethod
  def from_json(cls, text: str) -> Vocabulary:
    state = json.loads(text)
    if state.get('format_version') != _FORMAT_VERSION:
      raise ValueError(f'unknown vocabulary format {state.get("format_version")}')
    if tuple(state['specials']) != SPECIALS or state['word_pattern'] != WORD_PATTERN:
      raise ValueError('this vocabulary was saved with other special tokens or word pattern')
    model = state['sentencepiece_model']
    return cls(state['words'], tokenizer=state['tokenizer'], max_len=state['max_len'],
               sentencepiece_model=base64.b64decode(model) if model else None)

  def save(self, directory: str | os.PathLike) -> str:
    """Writes `tokenizer.json` into `directory`; returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, 'tokenizer.json')
    with open(path, 'w') as f:
      f.write(self.to_json())
    return path

  @classmethod
  def load(cls, directory: str | os.PathLike) -> Vocabulary:
    with open(os.path.join(directory, 'tokenizer.json')) as f:
      return cls.from_json(f.read())


def split_words(texts: Sequence[str], tokenizer: str, sentencepiece_processor=None) -> list[list[str]]:
  """The word strings of each text under `tokenizer` (see the module docstring)."""
  _check_tokenizer(tokenizer)
  if tokenizer == 'whitespace':
    return [t.split() for t in texts]
  if tokenizer == 'regex':
    return [_WORD.findall(t.lower()) for t in texts]
  if tokenizer == 'kim':
    return [kim_clean(t).split() for t in texts]
  if sentencepiece_processor is None:
    raise ValueError('the sentencepiece tokenizer needs a trained model')
  return sentencepiece_processor.encode([t.lower() for t in texts], out_type=str)
