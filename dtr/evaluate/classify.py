r"""Classification accuracy, and the mean and spread of a metric over runs (seeds or folds)."""

import numpy as np

__all__ = ['accuracy', 'mean_std']

UNLABELLED = -1


def accuracy(logits_or_predictions, labels) -> float:
  """Fraction of labelled rows predicted right: (1 / |L|) sum_{i in L} [pred_i == y_i], L = {i : y_i != -1}.

  logits_or_predictions: float logits [N, C] (prediction argmax_c, ties to the smaller class) or integer
  predictions [N]; labels int [N], -1 for an unlabelled row (excluded). ValueError if no row is labelled.
  """
  scores, labels = np.asarray(logits_or_predictions), np.asarray(labels)
  if labels.ndim != 1 or np.dtype(labels.dtype).kind not in 'iu':
    raise ValueError(f'labels must be integer class ids [N], got {labels.dtype} {labels.shape}')
  if scores.ndim == 2:
    if labels.max(initial=-1) >= scores.shape[1]:
      raise ValueError(f'labels go up to {labels.max()} but logits have {scores.shape[1]} classes')
    predictions = np.argmax(scores, axis=1)
  elif scores.ndim == 1 and np.dtype(scores.dtype).kind in 'iu':
    predictions = scores
  else:
    raise ValueError(f'expected logits [N, C] or integer predictions [N], got {scores.dtype} {scores.shape}')
  if predictions.shape[0] != labels.shape[0]:
    raise ValueError(f'{predictions.shape[0]} predictions for {labels.shape[0]} labels')
  if (labels < UNLABELLED).any():
    raise ValueError(f'labels must be class ids >= 0, or {UNLABELLED} for unlabelled rows')
  labelled = labels != UNLABELLED
  if not labelled.any():
    raise ValueError('accuracy needs at least one labelled row (label != -1)')
  return float(np.mean(predictions[labelled] == labels[labelled]))


def mean_std(values) -> tuple[float, float]:
  """(mean, sample standard deviation) of values [n], float64.

  std = sqrt(sum_i (v_i - mean)^2 / (n - 1)) (ddof=1, the unbiased variance of a few runs); 0 for n = 1.
  """
  values = np.asarray(values, np.float64).reshape(-1)
  if not values.size:
    raise ValueError('mean_std needs at least one value')
  std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
  return float(np.mean(values)), std
