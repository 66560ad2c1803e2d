"""Host-side batch layouts: padded sparse rows and label bitmasks."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def pad_rows(csr: sp.csr_matrix, rows: np.ndarray, min_len: int = 8
             ) -> tuple[np.ndarray, np.ndarray]:
  """Gathers rows of a CSR matrix into a padded (ids, vals) layout.

  Row i of the result holds the nonzeros of `csr[rows[i]]` in column order,
  then padding with id 0 and value 0 (so a value-weighted sum of embeddings
  ignores it). The width L is the smallest power of two >= max(nnz of the
  chosen rows, min_len), so jitted consumers see few distinct shapes.

  Args:
    csr: [N, V] CSR matrix.
    rows: [n] row indices into `csr`.
    min_len: the smallest width.

  Returns:
    ids: [n, L] int32 column indices; vals: [n, L] float32 values.
  """
  rows = np.asarray(rows, np.int64).reshape(-1)
  starts = csr.indptr[rows]
  lengths = csr.indptr[rows + 1] - starts
  width = max(int(lengths.max(initial=0)), int(min_len), 1)
  width = 1 << (width - 1).bit_length()
  # For entry k of the gathered rows: which output row, which slot, which source.
  out_row = np.repeat(np.arange(rows.size), lengths)
  row_first = np.repeat(np.cumsum(lengths) - lengths, lengths)
  slot = np.arange(out_row.size) - row_first
  source = np.repeat(starts, lengths) + slot
  ids = np.zeros((rows.size, width), np.int32)
  vals = np.zeros((rows.size, width), np.float32)
  ids[out_row, slot] = csr.indices[source]
  vals[out_row, slot] = csr.data[source]
  return ids, vals


def labels_to_bits(labels: np.ndarray) -> np.ndarray:
  """Packs [N, C] bool label sets into [N] bitmasks (bit c <=> label c).

  Two documents share a label iff `bits_a & bits_b != 0`. C <= 32 gives
  uint32, C <= 64 gives uint64.
  """
  labels = np.asarray(labels, bool)
  if labels.ndim != 2:
    raise ValueError(f'labels must be [N, C], got shape {labels.shape}')
  num_labels = labels.shape[1]
  if num_labels > 64:
    raise ValueError(f'at most 64 labels fit in a bitmask, got {num_labels}')
  dtype = np.uint32 if num_labels <= 32 else np.uint64
  weights = np.left_shift(dtype(1), np.arange(num_labels, dtype=dtype))
  # Distinct powers of two: their sum is their bitwise or.
  return (labels.astype(dtype) * weights).sum(axis=1, dtype=dtype)
