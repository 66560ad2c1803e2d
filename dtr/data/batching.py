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


def flat_width(csr: sp.csr_matrix, rows_GxN: np.ndarray, min_width: int = 128) -> int:
  """The width `flat_rows` uses for these groups: their largest total of nonzeros, rounded up."""
  rows = np.asarray(rows_GxN, np.int64)
  totals = (csr.indptr[rows + 1] - csr.indptr[rows]).sum(axis=-1)
  widest = max(int(totals.max(initial=0)), min_width)
  step = max(min_width, 1 << max(widest.bit_length() - 3, 0))
  return -(-widest // step) * step


def flat_rows(csr: sp.csr_matrix, rows_GxN: np.ndarray, min_width: int = 128, width: int | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Gathers groups of CSR rows into a flat layout: each group's nonzeros back to back.

  Group g holds documents rows_GxN[g, 0..n-1]; its row of the result lists their nonzeros in order, with
  `seg` naming the document (0..n-1) of each entry, then padding (id 0, value 0: it adds nothing).
  A group is what one device sees, so padding follows the group's total number of nonzeros rather than
  its longest document (for 20 Newsgroups, about 8x fewer entries than padding every row to the longest).
  Padding carries the last slot (n-1), so `seg` is sorted within every group.
  The width T is rounded up to a multiple of a quarter of its leading power of two (at least `min_width`),
  so jitted consumers see few distinct shapes. Processes of a multi-host job pass the `width` computed
  over the global batch (`flat_width`), so their slices agree.

  Returns:
    ids: [G, T] int32 column indices; vals: [G, T] float32 values; seg: [G, T] int32 document slots.
  """
  rows = np.asarray(rows_GxN, np.int64)
  num_groups, per_group = rows.shape
  flat = rows.reshape(-1)
  starts = csr.indptr[flat]
  lengths = (csr.indptr[flat + 1] - starts).astype(np.int64)
  lengths_GxN = lengths.reshape(num_groups, per_group)
  needed = int(lengths_GxN.sum(1).max(initial=0))
  width = flat_width(csr, rows, min_width) if width is None else width
  if needed > width:
    raise ValueError(f'flat_rows: a group holds {needed} nonzeros, more than width={width}.')
  entry_doc = np.repeat(np.arange(flat.size), lengths)        # which gathered row each entry comes from
  entry_first = np.repeat(np.cumsum(lengths) - lengths, lengths)
  within = np.arange(entry_doc.size) - entry_first             # position inside its row
  offset_in_group = (np.cumsum(lengths_GxN, axis=1) - lengths_GxN).reshape(-1)
  group, pos = entry_doc // per_group, offset_in_group[entry_doc] + within
  source = np.repeat(starts, lengths) + within
  ids = np.zeros((num_groups, width), np.int32)
  vals = np.zeros((num_groups, width), np.float32)
  seg = np.full((num_groups, width), per_group - 1, np.int32)
  ids[group, pos] = csr.indices[source]
  vals[group, pos] = csr.data[source]
  seg[group, pos] = entry_doc % per_group
  return ids, vals, seg
