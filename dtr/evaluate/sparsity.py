r"""Sparsity of dense codes: Average Hoyer (Hurley & Rickard 2009, "Comparing measures of sparsity"), as
used for sparse VAEs (Prokhorov et al. 2021, HSVAE; after Mathieu et al. 2019).

For a vector z in R^d (d >= 2),
  Hoyer(z) = (sqrt(d) - ||z||_1 / ||z||_2) / (sqrt(d) - 1)   in [0, 1]:
1 for a one-hot vector (one nonzero entry), 0 when all |z_j| are equal. Since ||z||_1 / ||z||_2 is undefined
for z = 0, an all-zero vector counts as 1: it has no active dimension, as sparse as a code can be (and a
vector with a single nonzero entry has Hoyer 1 however small that entry). After standardisation a zero row
is an example at the mean of every dimension; that is rare for continuous codes.

Average Hoyer of codes Z [N, d] = mean_i Hoyer(z_i), by default after standardising each dimension over the
evaluation set, z_ij <- (z_ij - mean_j) / std_j (population std, ddof=0), so that a dimension with a large
scale or offset does not dominate; a dimension of zero std becomes 0. Float64 on the host.
"""

import numpy as np

__all__ = ['average_hoyer', 'hoyer', 'standardise_columns']


def standardise_columns(z) -> np.ndarray:
  """float64 [N, d]: (z_j - mean_j) / std_j per column (ddof=0); a column of zero std becomes 0."""
  z = np.asarray(z, np.float64)
  centred = z - z.mean(axis=0)
  std = np.sqrt(np.mean(centred**2, axis=0))
  return np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)


def hoyer(z) -> np.ndarray:
  """float64 [...]: Hoyer sparsity of each row of z [..., d] (d >= 2); an all-zero row counts as 1."""
  z = np.asarray(z, np.float64)
  if z.ndim < 1 or z.shape[-1] < 2:
    raise ValueError(f'Hoyer sparsity needs vectors of d >= 2 entries, got shape {z.shape}')
  if not np.isfinite(z).all():
    raise ValueError('codes must be finite')
  root_d = np.sqrt(z.shape[-1])
  l1, l2 = np.abs(z).sum(-1), np.sqrt(np.sum(z**2, axis=-1))
  ratio = np.divide(l1, l2, out=np.ones_like(l1), where=l2 > 0)  # ratio 1 <=> Hoyer 1
  return (root_d - ratio) / (root_d - 1)


def average_hoyer(z, standardise: bool = True) -> float:
  """mean_i Hoyer(z_i) of codes z [N, d], each dimension standardised over the N rows first by default."""
  z = np.asarray(z, np.float64)
  if z.ndim != 2 or not z.shape[0]:
    raise ValueError(f'codes must be [N >= 1, d], got shape {z.shape}')
  return float(np.mean(hoyer(standardise_columns(z) if standardise else z)))
