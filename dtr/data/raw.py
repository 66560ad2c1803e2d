"""Raw-text corpora: the 20 Newsgroups and Reuters tarballs, featurised by dtr.

Readers return a `TextCorpus` (texts and label sets per split);
`featurize_text_corpus` fits a `Featurizer` (bag of words) and a token
`Vocabulary` on its training split and turns it into a `Corpus` that carries
TF-IDF rows, counts, token sequences and the texts. The tarballs are read in place with `tarfile` (nothing is
extracted to disk).
"""

from __future__ import annotations

import collections
import dataclasses
import re
import tarfile
from typing import Sequence

import numpy as np

from dtr.data import corpus as corpus_lib
from dtr.data import featurize
from dtr.data import tokenize


@dataclasses.dataclass
class TextSplit:
  texts: list[str]
  labels: list[tuple[str, ...]]  # Each document's label names (maybe none).
  doc_ids: np.ndarray            # [N] int64 ids in the source.

  def take(self, rows: Sequence[int]) -> TextSplit:
    return TextSplit([self.texts[i] for i in rows],
                     [self.labels[i] for i in rows],
                     self.doc_ids[np.asarray(rows, np.int64)])


@dataclasses.dataclass
class TextCorpus:
  name: str
  splits: dict[str, TextSplit]   # 'train', 'valid', 'test'.
  label_names: list[str]


def featurize_text_corpus(text_corpus: TextCorpus, *, tokenizer: str = 'regex',
                          vocab_size: int = 10000, min_df: int = 3,
                          max_df: float = 0.8, stop_words: str = 'english',
                          tokens: bool = True, token_tokenizer: str = 'regex',
                          token_vocab_size: int = 20000, token_min_count: int = 1,
                          max_len: int = 0) -> corpus_lib.Corpus:
  """Fits a Featurizer (and, with `tokens`, a token Vocabulary) on the training texts; featurises every split.

  The bag-of-words settings are those of `Featurizer.fit_with_counts`; the token settings those of
  `tokenize.Vocabulary.fit_with_tokens` (token_vocab_size is its max_size). Every split keeps its texts.
  """
  train_texts = text_corpus.splits['train'].texts
  if not train_texts:
    raise ValueError(f'{text_corpus.name}: the training split has no documents')
  featurizer, train_counts = featurize.Featurizer.fit_with_counts(
      train_texts, tokenizer=tokenizer,
      vocab_size=vocab_size, min_df=min_df, max_df=max_df,
      stop_words=stop_words)
  token_vocab = train_tokens = None
  if tokens:
    token_vocab, train_tokens = tokenize.Vocabulary.fit_with_tokens(
        train_texts, tokenizer=token_tokenizer, max_size=token_vocab_size,
        min_count=token_min_count, max_len=max_len, name=f'{text_corpus.name} train')
  label_index = {name: i for i, name in enumerate(text_corpus.label_names)}
  splits = {}
  for split_name in corpus_lib.SPLIT_NAMES:
    text_split = text_corpus.splits[split_name]
    counts = (train_counts if split_name == 'train'
              else featurizer.counts(text_split.texts))
    labels = np.zeros((len(text_split.texts), len(label_index)), bool)
    for row, names in enumerate(text_split.labels):
      labels[row, [label_index[n] for n in names]] = True
    split_tokens = None
    if token_vocab is not None:
      split_tokens = (train_tokens if split_name == 'train' else
                      token_vocab.encode(text_split.texts, name=f'{text_corpus.name} {split_name}'))
    splits[split_name] = corpus_lib.Split(
        tfidf=featurizer.tfidf(counts), labels=labels, counts=counts,
        doc_ids=text_split.doc_ids, tokens=split_tokens, texts=text_split.texts)
  return corpus_lib.Corpus(
      name=text_corpus.name, splits=splits, vocab=featurizer.vocab,
      label_names=list(text_corpus.label_names), featurizer=featurizer,
      token_vocab=token_vocab)


def halves(num_docs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A seeded split of range(num_docs) into two halves, each in sorted order."""
  order = np.random.default_rng(seed).permutation(num_docs)
  first = np.sort(order[:num_docs // 2])
  return first, np.sort(order[num_docs // 2:])


def subset_rows(num_rows: int, max_rows: int, seed: int) -> np.ndarray | None:
  """Sorted rows of a seeded random subset of at most `max_rows` of `num_rows` (None: keep all; 0: all)."""
  if not max_rows or num_rows <= max_rows:
    return None
  return np.sort(np.random.default_rng(seed).choice(num_rows, size=max_rows, replace=False))


def limit_docs(text_split: TextSplit, max_docs: int, seed: int) -> TextSplit:
  """A seeded random subset of at most `max_docs` documents (0: all)."""
  rows = subset_rows(len(text_split.texts), max_docs, seed)
  return text_split if rows is None else text_split.take(rows)


def _tar_texts(tar_path: str, wanted) -> dict[str, str]:
  """{member name: latin-1 text} for the regular files `wanted(name)` accepts."""
  texts = {}
  with tarfile.open(tar_path, 'r|*') as tar:  # Streaming: one forward pass.
    for member in tar:
      if member.isfile() and wanted(member.name):
        texts[member.name] = tar.extractfile(member).read().decode('latin-1')
  return texts


# ---------------------------------------------------------------- 20 Newsgroups

_QUOTE_INTRO = re.compile(r'(writes|wrote|says|said)\s*:$', re.IGNORECASE)


def clean_newsgroup_post(text: str) -> str:
  """Removes the header block, quoted lines and a '-- ' signature.

  Headers and quotes name the newsgroup or repeat other posts; keeping them
  lets a model "classify" by the From: line instead of the content.
  """
  _, _, body = text.partition('\n\n')
  lines = body.split('\n')
  for i in range(len(lines) - 1, -1, -1):
    if lines[i].rstrip() == '--':  # The Usenet signature delimiter.
      lines = lines[:i]
      break
  kept = []
  for line in lines:
    stripped = line.strip()
    if stripped.startswith(('>', '|')):
      continue
    if stripped.endswith(':') and _QUOTE_INTRO.search(stripped):
      continue
    kept.append(line)
  return '\n'.join(kept).strip()


def read_20news(tar_path: str, *, split_seed: int = 0,
                max_docs_per_split: int = 0) -> TextCorpus:
  """20 Newsgroups "bydate": train as is, the test posts halved into valid/test.

  Labels are the 20 group names. Post numbers (file names) count within each
  group, so a doc id is group index * 1_000_000 + post number.
  """
  tops = {'20news-bydate-train': 'train', '20news-bydate-test': 'test'}

  def wanted(name):
    parts = name.split('/')
    return len(parts) == 3 and parts[0] in tops and parts[2].isdigit()
  posts = _tar_texts(tar_path, wanted)
  if not posts:
    raise ValueError(f'{tar_path} holds no 20news-bydate-{{train,test}}/<group>/<id> files')
  by_split = collections.defaultdict(list)
  for name, text in posts.items():
    top, group, post_id = name.split('/')
    by_split[tops[top]].append((group, int(post_id), text))
  groups = sorted({group for group, _, _ in by_split['train']})
  splits = {}
  for split_name, docs in by_split.items():
    docs.sort(key=lambda d: (d[0], d[1]))
    splits[split_name] = TextSplit(
        texts=[text for _, _, text in docs],
        labels=[(group,) for group, _, _ in docs],
        doc_ids=np.array([groups.index(group) * 1_000_000 + post_id
                          for group, post_id, _ in docs], np.int64))
  valid_rows, test_rows = halves(len(splits['test'].texts), split_seed)
  splits['valid'] = splits['test'].take(valid_rows)
  splits['test'] = splits['test'].take(test_rows)
  splits = {name: limit_docs(splits[name], max_docs_per_split, split_seed + i)
            for i, name in enumerate(corpus_lib.SPLIT_NAMES)}
  for text_split in splits.values():
    text_split.texts = [clean_newsgroup_post(t) for t in text_split.texts]
  return TextCorpus('raw_20news', splits, groups)


# ---------------------------------------------------------------- Reuters

def read_reuters(tar_path: str, *, num_labels: int = 20, split_seed: int = 0,
                 max_docs_per_split: int = 0) -> TextCorpus:
  """Reuters-21578 ApteMod (NLTK layout), multi-label over the top categories.

  Labels are the `num_labels` categories most frequent in the training split.
  As in the VDSH recipe, training documents with none of them are kept (with
  an empty label set) and valid/test documents with none are dropped; the
  test documents are then halved into valid/test. Doc ids are the file ids.
  """
  def wanted(name):
    parts = name.split('/')
    return (name.endswith('/cats.txt') or
            (len(parts) >= 2 and parts[-2] in ('training', 'test')
             and parts[-1].isdigit()))
  files = _tar_texts(tar_path, wanted)
  cats_name = next((n for n in files if n.endswith('/cats.txt')), None)
  if cats_name is None:
    raise ValueError(f'{tar_path} has no cats.txt (expected the NLTK reuters layout)')
  categories = {}
  for line in files.pop(cats_name).splitlines():
    fields = line.split()
    if fields:
      categories[fields[0]] = fields[1:]  # 'training/9865' -> ['cocoa', ...]
  docs = collections.defaultdict(list)
  for name, text in files.items():
    kind, file_id = name.split('/')[-2:]
    docs[kind].append((int(file_id), text, categories.get(f'{kind}/{file_id}', [])))
  frequency = collections.Counter(c for _, _, cats in docs['training'] for c in cats)
  top = sorted(frequency, key=lambda c: (-frequency[c], c))[:num_labels]
  label_names = sorted(top)
  top = set(top)

  def to_split(entries):
    entries = sorted(entries)
    return TextSplit(
        texts=[text for _, text, _ in entries],
        labels=[tuple(sorted(top.intersection(cats))) for _, _, cats in entries],
        doc_ids=np.array([file_id for file_id, _, _ in entries], np.int64))
  train = to_split(docs['training'])
  heldout = to_split([d for d in docs['test'] if top.intersection(d[2])])
  valid_rows, test_rows = halves(len(heldout.texts), split_seed)
  splits = {'train': train, 'valid': heldout.take(valid_rows),
            'test': heldout.take(test_rows)}
  splits = {name: limit_docs(splits[name], max_docs_per_split, split_seed + i)
            for i, name in enumerate(corpus_lib.SPLIT_NAMES)}
  return TextCorpus('raw_reuters', splits, label_names)
