r"""Precision and recall of everything within a Hamming radius: the radius curves of hashing papers.

For a query q and radius r, retrieve every database item x with d(q, x) <= r (d: Hamming distance for bits;
for symbols the number of unequal symbols, or Hamming over their bit expansions with symbol_distance='bits',
as in `dtr.evaluate.neighbours`). With R_q(r) the retrieved set and T_q the database items that share a
label with q:
  precision_q(r) = |R_q(r) & T_q| / |R_q(r)|,   recall_q(r) = |R_q(r) & T_q| / |T_q|,
each averaged over all queries (Jin et al., Figure 4, plot these against r).

Choices: a query with nothing within r has precision 0 (it retrieved nothing useful; leaving it out would
let a code that retrieves nothing for most queries look precise), and the curve reports the fraction of
such queries (`RadiusCurve.empty`) so the two effects can be told apart. A query without any relevant
database item (e.g. one without labels) has recall 0, as it scores 0 in `retrieval.precision_at_k`; the
fraction of such queries is `RadiusCurve.no_relevant`.

Cost: O(Q N (W + R)) on one device, Q x N never materialised: queries `query_chunk` at a time, the
database `db_chunk` items at a time (memory O(query_chunk db_chunk R)).
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dtr.evaluate import neighbours, retrieval

__all__ = ['RadiusCurve', 'precision_recall_at_radius']


class RadiusCurve(NamedTuple):
  """Per radius r (arrays [R], float64 except `radii`), averaged over queries."""
  radii: np.ndarray  # int32 [R], as given
  precision: np.ndarray  # mean precision within r (0 for a query with nothing within r)
  recall: np.ndarray  # mean recall within r (0 for a query without relevant items)
  empty: np.ndarray  # fraction of queries with no database item within r
  no_relevant: float  # fraction of queries without any relevant database item


def _packed_distances(q_c, db_c):
  return jnp.sum(lax.population_count(q_c[:, None, :] ^ db_c[None, :, :]).astype(jnp.int32), axis=-1)


_DISTANCES = {'packed': _packed_distances, 'symbols': neighbours.symbol_distances}


@functools.partial(jax.jit, static_argnames=('metric', 'query_chunk', 'db_chunk'))
def _radius_counts(q, q_words, db, db_words, radii, *, metric, query_chunk, db_chunk):
  """int32 counts per query: within [Q, R], relevant within [Q, R], relevant in the whole database [Q]."""
  distance = _DISTANCES[metric]
  num_q, num_db, num_r = q.shape[0], db.shape[0], radii.shape[0]
  num_chunks = -(-num_db // db_chunk)
  pad_q = ((0, -(-num_q // query_chunk) * query_chunk - num_q), (0, 0))
  pad_db = ((0, num_chunks * db_chunk - num_db), (0, 0))
  q, q_words = jnp.pad(q, pad_q), jnp.pad(q_words, pad_q)
  db = jnp.pad(db, pad_db).reshape(num_chunks, db_chunk, -1)
  db_words = jnp.pad(db_words, pad_db).reshape(num_chunks, db_chunk, -1)
  starts = jnp.arange(num_chunks, dtype=jnp.int32) * db_chunk

  def query_chunk_counts(query):
    q_c, qw_c = query

    def step(counts, chunk):
      within, relevant_within, relevant = counts
      db_c, dbw_c, start = chunk
      valid = (start + jnp.arange(db_chunk, dtype=jnp.int32) < num_db)[None, :]
      rel = jnp.any((qw_c[:, None, :] & dbw_c[None, :, :]) != 0, axis=-1) & valid  # [Qc, Dc]
      inside = (distance(q_c, db_c)[:, :, None] <= radii) & valid[:, :, None]  # [Qc, Dc, R]
      return (within + jnp.sum(inside, axis=1, dtype=jnp.int32),
              relevant_within + jnp.sum(inside & rel[:, :, None], axis=1, dtype=jnp.int32),
              relevant + jnp.sum(rel, axis=1, dtype=jnp.int32)), None

    zeros = jnp.zeros((query_chunk, num_r), jnp.int32)
    counts, _ = lax.scan(step, (zeros, zeros, zeros[:, 0]), (db, db_words, starts))
    return counts

  chunks = (q.reshape(-1, query_chunk, q.shape[1]), q_words.reshape(-1, query_chunk, q_words.shape[1]))
  within, relevant_within, relevant = lax.map(query_chunk_counts, chunks)
  return (within.reshape(-1, num_r)[:num_q], relevant_within.reshape(-1, num_r)[:num_q],
          relevant.reshape(-1)[:num_q])


def precision_recall_at_radius(q_codes, q_labels, db_codes, db_labels, radii, kind: str = 'bits', *,
                               symbol_distance: str = 'symbols', num_values: int | None = None,
                               query_chunk: int = 64, db_chunk: int = 4096) -> RadiusCurve:
  """Precision and recall of all database items within Hamming radius r of each query, for each r in radii.

  kind 'bits' (0/1 [N, m] or packed uint32 [N, W]) or 'symbols' (int [N, M]); labels as in
  `retrieval.precision_at_k`. Averages and the conventions for empty sets are in the module docstring.
  """
  radii = np.asarray(radii)
  if radii.ndim != 1 or not radii.size or np.dtype(radii.dtype).kind not in 'iu' or radii.min() < 0:
    raise ValueError(f'radii must be a non-empty [R] array of integers >= 0, got {radii!r}')
  if query_chunk < 1 or db_chunk < 1:
    raise ValueError(f'chunk sizes must be positive, got {query_chunk=} {db_chunk=}')
  if kind == 'bits':
    q, db = neighbours.as_packed(q_codes, 'q_codes'), neighbours.as_packed(db_codes, 'db_codes')
    metric = 'packed'
  elif kind == 'symbols':
    if symbol_distance not in neighbours.SYMBOL_DISTANCES:
      raise ValueError(f'symbol_distance must be one of {neighbours.SYMBOL_DISTANCES}, '
                       f'got {symbol_distance!r}')
    if symbol_distance == 'bits':
      q, db = neighbours.symbols_as_packed_bits(q_codes, db_codes, num_values)
      metric = 'packed'
    else:
      q, db = np.asarray(q_codes), np.asarray(db_codes)
      if np.dtype(q.dtype).kind not in 'iu' or np.dtype(db.dtype).kind not in 'iu':
        raise ValueError(f'symbols must be integers, got {q.dtype} and {db.dtype}')
      q, db, metric = q.astype(np.int32), db.astype(np.int32), 'symbols'
  else:
    raise ValueError(f"radius curves need kind 'bits' or 'symbols' (Hamming distances), got {kind!r}")
  q, db = jnp.asarray(q), jnp.asarray(db)
  if q.ndim != 2 or db.ndim != 2 or q.shape[1] != db.shape[1] or db.shape[0] == 0:
    raise ValueError(f'codes must be [Q, n] and [N >= 1, n] with the same n, got {q.shape} and {db.shape}')
  q_words = retrieval._label_words(q_labels, 'q_labels')  # pylint: disable=protected-access
  db_words = retrieval._label_words(db_labels, 'db_labels')  # pylint: disable=protected-access
  if q_words.shape[1] != db_words.shape[1]:
    raise ValueError(f'query labels have {q_words.shape[1]} words, database labels {db_words.shape[1]}')
  if q_words.shape[0] != q.shape[0] or db_words.shape[0] != db.shape[0]:
    raise ValueError('labels and codes must have the same number of rows')
  if q.shape[0] == 0:
    raise ValueError('radius curves need at least one query')
  counts = _radius_counts(q, q_words, db, db_words, jnp.asarray(radii, jnp.int32), metric=metric,
                          query_chunk=min(query_chunk, q.shape[0]), db_chunk=min(db_chunk, db.shape[0]))
  within, relevant_within, relevant = (np.asarray(c, np.float64) for c in counts)
  precision = np.divide(relevant_within, within, out=np.zeros_like(within), where=within > 0)
  relevant = relevant[:, None]
  recall = np.divide(relevant_within, relevant, out=np.zeros_like(within), where=relevant > 0)
  return RadiusCurve(radii.astype(np.int32), precision.mean(0), recall.mean(0), (within == 0).mean(0),
                     float((relevant == 0).mean()))
