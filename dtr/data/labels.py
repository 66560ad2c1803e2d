"""Label budgets: which labelled training documents a semi-supervised or downstream run may use.

  pool          the training rows with at least one label
  labels='all'  every row of the pool, the same for every subsample
  labels=n      subsample i (i = 0..seeds-1) draws n rows of the pool without replacement with
                np.random.default_rng([seed, i]), returned sorted

Early stopping and model selection use the corpus' own valid split (all of it, with its labels): the budget
limits training labels only.
"""

from __future__ import annotations

import numpy as np

from dtr.data import corpus as corpus_lib


def class_ids(split: corpus_lib.Split, name: str = '') -> np.ndarray:
  """int32 [N] the class of each document of a single-label split (-1 for a document with no label).

  Raises ValueError for a split without label columns or with a document of several labels; `name` (the
  corpus' name) makes the message say which corpus.
  """
  corpus = f'corpus {name!r}' if name else 'this corpus'
  num_labels = split.labels.shape[1]
  if num_labels == 0:
    raise ValueError(f'class ids need labels, but {corpus} has none (num_labels == 0): it is an unlabelled '
                     'corpus; use a labelled one for classification or label budgets')
  per_doc = split.labels.sum(axis=1)
  if (per_doc > 1).any():
    row = int(np.argmax(per_doc > 1))
    raise ValueError(f'class ids need single-label documents, but {corpus} is multi-label: '
                     f'{int((per_doc > 1).sum())} documents have several labels (first: row {row}, '
                     f'{int(per_doc[row])} labels)')
  return np.where(per_doc == 1, np.argmax(split.labels, axis=1), -1).astype(np.int32)


def _budget(labels) -> int | None:
  """None for 'all', else the number of labels as an int (ValueError otherwise)."""
  if isinstance(labels, str):
    if labels.strip().lower() == 'all':
      return None
    try:
      labels = int(labels)
    except ValueError:
      raise ValueError(f"labels must be 'all' or a number of labelled documents, got {labels!r}") from None
  if isinstance(labels, (bool, np.bool_)) or not isinstance(labels, (int, np.integer)):
    raise ValueError(f"labels must be 'all' or a number of labelled documents, got {labels!r}")
  if labels < 1:
    raise ValueError(f"labels must be 'all' or at least 1 labelled document, got {labels}")
  return int(labels)


def label_subsets(split: corpus_lib.Split, labels, seeds: int, seed: int = 0, *, name: str = ''
                  ) -> list[np.ndarray]:
  """`seeds` sorted int64 arrays of labelled rows of `split` (the training split), by the module's rule.

  Args:
    split: the training split.
    labels: 'all' or n >= 1 (an int or a string of digits, as config.data.labels holds it).
    seeds: how many subsamples.
    seed: base seed; subsample i uses np.random.default_rng([seed, i]).
    name: the corpus' name, for error messages.
  """
  corpus = f'corpus {name!r}' if name else 'the corpus'
  budget = _budget(labels)
  if seeds < 1:
    raise ValueError(f'label_seeds must be >= 1, got {seeds}')
  pool = np.flatnonzero(split.labels.any(axis=1))
  if budget is None:
    return [pool.copy() for _ in range(seeds)]
  if budget > pool.size:
    raise ValueError(f'labels={budget} exceeds the pool of {pool.size} labelled training documents of '
                     f"{corpus}; use at most {pool.size} or labels='all'")
  return [np.sort(np.random.default_rng([seed, i]).choice(pool, size=budget, replace=False))
          for i in range(seeds)]
