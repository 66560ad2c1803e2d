r"""Matching accuracy@K of paired texts (predictive hashing: a pair is (X_i, Y_i), e.g. a question and its
answer).

Encode every X and Y of a split; query with the code of X_i against the codes of all Y of the split
(distance of `dtr.evaluate.neighbours.nearest`: Hamming for bits, unequal symbols for symbols, cosine for
dense; ties by the smaller index). A hit when Y_i is among the K nearest:
  accuracy@K = (1 / N) sum_i [Y_i in top_K(X_i)].
A random hasher scores about K / N.
"""

import numpy as np

from dtr.evaluate import codes as codes_lib
from dtr.evaluate import neighbours

__all__ = ['matching_accuracy']


def matching_accuracy(x_codes, y_codes, ks=(100, 10), *, kind: str | None = None,
                      **search) -> dict[int, float]:
  """{K: fraction of pairs i whose Y_i is among the K nearest Y codes of X_i}, for each K in ks.

  Codes of `kind` ('bits': 0/1 [N, m]; 'symbols': int [N, M]; 'dense': float [N, d]), row i of x_codes and
  y_codes the two sides of pair i. Without `kind` it follows the dtype (`codes.infer_kind`: int8 / uint8 /
  bool bits, other integers symbols, floats dense); 0/1 codes give the same numbers as bits or as symbols.
  `search` goes to `neighbours.nearest` (symbol_distance, chunk sizes).
  """
  num_pairs = len(x_codes)
  if len(y_codes) != num_pairs:
    raise ValueError(f'matching needs one Y code per X code, got {num_pairs} and {len(y_codes)}')
  ks = tuple(int(k) for k in ks)
  if not ks or min(ks) < 1:
    raise ValueError(f'ks must be positive integers, got {ks}')
  if max(ks) > num_pairs:
    raise ValueError(f'matching accuracy@{max(ks)} needs at least {max(ks)} pairs, the split has '
                     f'{num_pairs}; lower config.eval_k / config.report_ks')
  if kind is None:
    kind = codes_lib.infer_kind(x_codes if hasattr(x_codes, 'dtype') else np.asarray(x_codes))
  idx_NxK, _ = neighbours.nearest(kind, x_codes, y_codes, max(ks), **search)
  hit_NxK = np.asarray(idx_NxK) == np.arange(num_pairs)[:, None]
  # The neighbours are sorted by (distance, index), so the K nearest are a prefix of the max(ks) nearest.
  return {k: float(np.mean(np.any(hit_NxK[:, :k], axis=1))) for k in ks}
