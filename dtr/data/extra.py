"""More unlabelled training text for a corpus made from text: `config.data.extra_train`.

Pretraining (a discrete VAE's, a sentence autoencoder's) reads the training split without its labels, so
text with no labels at all can join it: `extra_train` names files of one document a line ('+' between
several files; a path is absolute, or relative to the data folder, or to the working directory). Their lines
become unlabelled documents appended to the training split after the corpus' own split, before the
vocabularies are fitted; valid and test are untouched. Label budgets draw from labelled rows only
(`dtr.data.labels`), so probes and classifiers see the same labelled documents as without them. Retrieval
evaluators (precision@K, database = the training split) count them as database documents that are never
relevant (no label), so compare retrieval numbers only between runs with the same extra text.

Held-out overlap. An extra document that repeats a valid or test document would show the pretraining
model its evaluation text, so `append_unlabelled` drops it. Both are lower-cased, split on whitespace and
mapped onto the labelled corpus' words: a word that no labelled document (train, valid or test) contains
becomes the unknown marker, as do the markers themselves (UNKNOWN), since the two sources may each have
replaced different rare words by their own markers. A held-out document h with at least MIN_OVERLAP words
that are not markers is repeated by an extra document e when e's first len(h) tokens agree with h's position
by position, a marker on either side agreeing with anything. So e = "how do i fix my carburetor ? it leaks"
repeats h = "how do i fix my _UNK ?", and so does e = "how do i fix my <unk> ? ..." or e = "how do i fix my
gearbox ? ..." when no labelled document contains "gearbox"; e = "how do i fix my car ? ..." does not repeat
h = "how do i fix my bike ?". What this misses: repeats that do not start e.
"""

from __future__ import annotations

import os

from absl import logging
import numpy as np

from dtr.data import raw

VERSION = 2  # of the held-out repeat rule: part of a cached corpus' fingerprint (`dtr.data.load`)
MIN_OVERLAP = 4  # shorter held-out documents are too generic to call a longer text a repeat of them
UNKNOWN = ('_unk', '<unk>', '[unk]', 'unk')
_MARK = '\x00unk'


def resolve(spec: str, data_dir: str) -> list[str]:
  """The files `spec` names ('+' between them), each absolute, or relative to `data_dir`, or to the
  working directory, in that order; FileNotFoundError naming every place looked at."""
  paths = []
  for name in filter(None, (part.strip() for part in spec.split('+'))):
    tried = [name] if os.path.isabs(name) else (
        ([os.path.join(data_dir, name)] if data_dir else []) + [os.path.abspath(name)])
    found = next((p for p in tried if os.path.isfile(p)), None)
    if found is None:
      raise FileNotFoundError(
          f'config.data.extra_train: {name!r} is not a file (looked at {tried}). Name files of one document '
          "a line, '+' between them: absolute, relative to the data folder ($DTR_DATA_DIR or "
          'config.data.data_dir) or to the working directory.')
    paths.append(os.path.abspath(found))
  if not paths:
    raise ValueError(f'config.data.extra_train={spec!r} names no file')
  return paths


def read_lines(paths: list[str]) -> list[str]:
  """The non-blank lines of the files, stripped, in order (split on '\\n' only)."""
  texts = []
  for path in paths:
    with open(path, encoding='utf-8', errors='replace') as f:
      texts.extend(line.strip() for line in f.read().split('\n') if line.strip())
  return texts


def _words(text: str, known: set[str] | None) -> tuple[str, ...]:
  words = text.lower().split()
  return tuple(_MARK if w in UNKNOWN or (known is not None and w not in known) else w for w in words)


def _agree(h: tuple[str, ...], e: tuple[str, ...]) -> bool:
  return len(e) >= len(h) and all(a == b or a == _MARK or b == _MARK for a, b in zip(h, e))


def repeats(extra_texts: list[str], held_out_texts: list[str], labelled_texts: list[str]) -> np.ndarray:
  """bool [len(extra_texts)]: whether each extra document repeats a held-out one (the module docstring's
  rule; `labelled_texts` are every document of the labelled corpus, whose words are the known ones)."""
  known = {w for text in labelled_texts for w in text.lower().split()} - set(UNKNOWN)
  held = {_words(text, None) for text in held_out_texts}
  held = sorted(h for h in held if sum(w != _MARK for w in h) >= MIN_OVERLAP)
  out = np.zeros(len(extra_texts), bool)
  if not held:
    return out
  # Candidates by the first two tokens: a held-out document can agree with e only where each of its first
  # two tokens is e's or a marker (and anything, where e has the marker).
  first, second, start = {}, {}, {}
  for h in held:
    first.setdefault(h[0], []).append(h)
    second.setdefault(h[1], []).append(h)
    start.setdefault(h[:2], []).append(h)
  longest = max(len(h) for h in held)
  for row, text in enumerate(extra_texts):
    e = _words(' '.join(text.split()[:longest]), known)
    if len(e) < 2:
      continue
    if e[0] == _MARK and e[1] == _MARK:
      candidates = held
    elif e[0] == _MARK:
      candidates = second.get(e[1], []) + second.get(_MARK, [])
    elif e[1] == _MARK:
      candidates = first.get(e[0], []) + first.get(_MARK, [])
    else:
      candidates = [h for key in ((e[0], e[1]), (e[0], _MARK), (_MARK, e[1]), (_MARK, _MARK))
                    for h in start.get(key, [])]
    out[row] = any(_agree(h, e) for h in candidates)
  return out


def append_unlabelled(corpus: raw.TextCorpus, extra_texts: list[str], source: str) -> raw.TextCorpus:
  """`corpus` with `extra_texts` (less the held-out repeats, logged) appended to its training split as
  unlabelled documents, their doc ids after the corpus' largest."""
  splits = corpus.splits
  labelled = [t for s in splits.values() for t in s.texts]
  dropped = repeats(extra_texts, splits['valid'].texts + splits['test'].texts, labelled)
  kept = [t for t, d in zip(extra_texts, dropped) if not d]
  if not kept:
    raise ValueError(f'config.data.extra_train ({source}): every one of its {len(extra_texts)} documents '
                     'repeats a valid or test document of the corpus, so none is left to add')
  logging.warning('%s: %d unlabelled training documents added from %s; %d more dropped as repeats of valid or '
                  'test documents', corpus.name, len(kept), source, int(dropped.sum()))
  start = max(int(s.doc_ids.max()) + 1 for s in splits.values() if s.doc_ids.size) if labelled else 0
  train = splits['train']
  extended = raw.TextSplit(train.texts + kept, train.labels + [()] * len(kept),
                           np.concatenate([train.doc_ids, np.arange(start, start + len(kept), dtype=np.int64)]))
  return raw.TextCorpus(corpus.name, dict(splits, train=extended), corpus.label_names)
