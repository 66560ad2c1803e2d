r"""Exact k nearest neighbours and top-k precision for every code kind (bits, symbols, dense).

Distances, by code kind (`dtr.evaluate.codes`):
  bits      Hamming distance between 0/1 codes, sum_j [a_j != b_j], over packed words
            (`retrieval.hamming_topk`: the numbers of `retrieval.precision_at_k`, unchanged).
  symbols   symbol Hamming distance, sum_{j<M} [a_j != b_j]: the number of unequal symbols (in [0, M]).
            With symbol_distance='bits', the Hamming distance over the M ceil(log2 K) bits of the symbols'
            binary expansions (`symbols_to_bits`): symbols that differ count 1 to ceil(log2 K).
  dense     cosine similarity <a, b> / (||a|| ||b||), largest first; a zero vector has similarity 0 to
            everything (so every item ties with it, broken by index).
Neighbours are sorted nearest first and ties go to the smaller database index, for every kind. For dense
codes a tie means equal float32 similarities: two copies of one vector may differ in the last bit (XLA
rounds rows and columns of one computation differently), so their order need not follow the index.

Algorithm of `symbol_topk` and `cosine_topk`: queries are processed `query_chunk` at a time (`lax.map`) and
the database `db_chunk` items at a time (`lax.scan`), carrying the k best (score, index) pairs so far,
sorted by (score descending, index ascending). A step concatenates the carried k with the chunk's scores (in
index order) and keeps the top k with `lax.top_k`, which keeps the lower position first among equal values:
carried items precede the chunk and have smaller indices, so the order (score, index) is kept. Padding items
(past N) score -inf, below any real item, and k <= N, so none survives. Scores are float32 (symbol distances
are exact in it for M < 2^24). Memory: the database plus O(query_chunk * (db_chunk + k)) scores, whatever Q
and N; one device (queries are not sharded).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from dtr.evaluate import retrieval

__all__ = ['SYMBOL_DISTANCES', 'cosine_topk', 'nearest', 'precision_at_k_codes', 'symbol_distances',
           'symbol_topk', 'symbols_to_bits']

SYMBOL_DISTANCES = ('symbols', 'bits')
_MAX_INDEX = 2**31 - 1


# ------------------------------------------------------------------------------------------------ distances
def symbol_distances(q_symbols, db_symbols) -> jax.Array:
  """int32 [Q, N]: the number of unequal symbols between int [Q, M] and [N, M] codes (materialises Q x N)."""
  return jnp.sum(q_symbols[:, None, :] != db_symbols[None, :, :], axis=-1, dtype=jnp.int32)


def bits_per_symbol(num_values: int) -> int:
  """ceil(log2 K) for K >= 2: the bits that hold a symbol in [0, K)."""
  if num_values < 2:
    raise ValueError(f'symbols need K >= 2 values, got {num_values}')
  return (int(num_values) - 1).bit_length()


def symbols_to_bits(symbols, num_values: int):
  """int [..., M] symbols in [0, K) -> int8 [..., M * ceil(log2 K)]: each symbol's binary expansion.

  Symbol j takes columns j * b ... j * b + b - 1 (b = ceil(log2 K)), least significant bit first, so the
  Hamming distance over these bits is sum_j popcount(a_j xor b_j). NumPy in gives NumPy out (values are
  checked); a jax.Array gives a jax.Array (also inside jit, unchecked).
  """
  b = bits_per_symbol(num_values)
  xp = jnp if isinstance(symbols, jax.Array) else np
  if xp is np:
    symbols = np.asarray(symbols)
    if np.dtype(symbols.dtype).kind not in 'iu' or symbols.ndim < 1:
      raise ValueError(f'symbols must be integers [..., M], got {symbols.dtype} {symbols.shape}')
    if symbols.size and (symbols.min() < 0 or symbols.max() >= num_values):
      raise ValueError(f'symbols must lie in [0, {num_values}), got [{symbols.min()}, {symbols.max()}]')
  bits = (symbols.astype(xp.int32)[..., None] >> xp.arange(b, dtype=xp.int32)) & 1
  return bits.reshape(symbols.shape[:-1] + (-1,)).astype(xp.int8)


def _neg_symbol_distances(q_c, db_c):
  # float32 keys: exact for M < 2^24, and XLA:CPU's top_k is ~70x faster on float32 than on int32 (jax 0.10).
  return -symbol_distances(q_c, db_c).astype(jnp.float32)


def _cosine_similarities(q_c, db_c):
  return jnp.matmul(q_c, db_c.T, precision=lax.Precision.HIGHEST)


def unit_rows(x):
  """Rows scaled to unit L2 norm (float32); zero rows stay zero."""
  x = jnp.asarray(x, jnp.float32)
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.where(norm > 0, norm, 1.0)


_SCORES = {'symbols': _neg_symbol_distances, 'cosine': _cosine_similarities}


# ------------------------------------------------------------------------------------------------ top k
@functools.partial(jax.jit, static_argnames=('k', 'metric', 'query_chunk', 'db_chunk'))
def _chunked_topk(q, db, *, k, metric, query_chunk, db_chunk):
  """(indices int32 [Q, k], float32 scores [Q, k]) of the k largest scores, ties by index (see the module
  docstring)."""
  score, low = _SCORES[metric], -jnp.inf  # padding items score below any real one
  num_q, num_db = q.shape[0], db.shape[0]
  num_chunks = -(-num_db // db_chunk)
  q = jnp.pad(q, ((0, -(-num_q // query_chunk) * query_chunk - num_q), (0, 0)))
  db = jnp.pad(db, ((0, num_chunks * db_chunk - num_db), (0, 0)))
  db_chunks = db.reshape(num_chunks, db_chunk, db.shape[1])
  starts = jnp.arange(num_chunks, dtype=jnp.int32) * db_chunk

  def query_chunk_topk(q_c):
    def step(carry, chunk):
      best, best_idx = carry
      db_c, start = chunk
      idx = start + jnp.arange(db_chunk, dtype=jnp.int32)
      s = jnp.where(idx < num_db, score(q_c, db_c), low)
      s = jnp.concatenate([best, s], axis=1)
      idx = jnp.concatenate([best_idx, jnp.broadcast_to(idx, (query_chunk, db_chunk))], axis=1)
      best, pos = lax.top_k(s, k)
      return (best, jnp.take_along_axis(idx, pos, axis=1)), None
    init = (jnp.full((query_chunk, k), low, jnp.float32), jnp.zeros((query_chunk, k), jnp.int32))
    (best, best_idx), _ = lax.scan(step, init, (db_chunks, starts))
    return best_idx, best

  idx, best = lax.map(query_chunk_topk, q.reshape(-1, query_chunk, q.shape[1]))
  return idx.reshape(-1, k)[:num_q], best.reshape(-1, k)[:num_q]


def _check_pair(q, db, k: int, name: str):
  if q.ndim != 2 or db.ndim != 2 or q.shape[1] != db.shape[1]:
    raise ValueError(f'{name}: queries and database must be [Q, n] and [N, n] with the same n, got '
                     f'{q.shape} and {db.shape}')
  if not 1 <= k <= db.shape[0]:
    raise ValueError(f'k={k} must be between 1 and the database size {db.shape[0]}')
  if db.shape[0] > _MAX_INDEX:
    raise ValueError(f'{db.shape[0]} database items do not fit int32 indices')


def _run_topk(q, db, k, metric, query_chunk, db_chunk):
  if query_chunk < 1 or db_chunk < 1:
    raise ValueError(f'chunk sizes must be positive, got {query_chunk=} {db_chunk=}')
  if q.shape[0] == 0:
    return jnp.zeros((0, k), jnp.int32), jnp.zeros((0, k), jnp.float32)
  return _chunked_topk(q, db, k=k, metric=metric, query_chunk=min(query_chunk, q.shape[0]),
                       db_chunk=min(db_chunk, db.shape[0]))


def symbol_topk(q_symbols, db_symbols, k: int, *, query_chunk: int = 256,
                db_chunk: int = 16384) -> tuple[jax.Array, jax.Array]:
  """The k nearest database codes by symbol Hamming distance: (indices int32 [Q, k], distances int32 [Q, k]).

  q_symbols int [Q, M], db_symbols int [N, M]; distance sum_j [q_j != db_j]; sorted by (distance, database
  index), exact. Call it from the host, not inside jit.
  """
  q, db = jnp.asarray(q_symbols), jnp.asarray(db_symbols)
  _check_pair(q, db, k, 'symbol_topk')
  if not (jnp.issubdtype(q.dtype, jnp.integer) and jnp.issubdtype(db.dtype, jnp.integer)):
    raise ValueError(f'symbols must be integers, got {q.dtype} and {db.dtype}')
  idx, neg_dist = _run_topk(q.astype(jnp.int32), db.astype(jnp.int32), k, 'symbols', query_chunk, db_chunk)
  return idx, (-neg_dist).astype(jnp.int32)


def cosine_topk(q, db, k: int, *, query_chunk: int = 256,
                db_chunk: int = 16384) -> tuple[jax.Array, jax.Array]:
  """The k most cosine-similar database vectors: (indices int32 [Q, k], similarities float32 [Q, k]).

  q [Q, d], db [N, d] floats (computed in float32); similarity <q, x> / (||q|| ||x||), 0 for a zero vector;
  sorted by (similarity descending, database index). Call it from the host, not inside jit.
  """
  q, db = jnp.asarray(q), jnp.asarray(db)
  _check_pair(q, db, k, 'cosine_topk')
  if not (jnp.issubdtype(q.dtype, jnp.floating) and jnp.issubdtype(db.dtype, jnp.floating)):
    raise ValueError(f'dense codes must be floats, got {q.dtype} and {db.dtype}')
  q, db = unit_rows(q), unit_rows(db)
  if not (bool(jnp.isfinite(q).all()) and bool(jnp.isfinite(db).all())):
    raise ValueError('dense codes must be finite')
  return _run_topk(q, db, k, 'cosine', query_chunk, db_chunk)


# ------------------------------------------------------------------------------------------------ dispatch
def as_packed(codes, name: str = 'codes'):
  """Bits as packed uint32 words: uint32 input is taken as already packed (`pack_bits` output)."""
  codes = codes if isinstance(codes, jax.Array) else np.asarray(codes)
  if np.dtype(codes.dtype) == np.uint32:
    return codes
  if np.ndim(codes) != 2 or not bool(((codes == 0) | (codes == 1)).all()):
    raise ValueError(f'{name}: bits must be 0/1 [N, m] (or packed uint32 [N, W]), got {codes.dtype} '
                     f'{np.shape(codes)} with other values (symbols? pass kind="symbols")')
  return retrieval.pack_bits(codes)


def symbols_as_packed_bits(q, db, num_values: int | None = None):
  """Packed bit expansions (uint32 words) of query and database symbols, for Hamming over their bits."""
  if num_values is None:  # leading zero bits add nothing to a Hamming distance, so any K that fits will do
    num_values = max(int(np.max(q, initial=0)), int(np.max(db, initial=0)), 1) + 1
  return (retrieval.pack_bits(symbols_to_bits(np.asarray(q), num_values)),
          retrieval.pack_bits(symbols_to_bits(np.asarray(db), num_values)))


def nearest(kind: str, q_codes, db_codes, k: int, *, symbol_distance: str = 'symbols',
            num_values: int | None = None, **search) -> tuple[jax.Array, jax.Array]:
  """(indices int32 [Q, k], distances or similarities [Q, k]) of the k nearest codes of `kind`.

  bits: 0/1 [N, m] or packed uint32 [N, W] (Hamming, `retrieval.hamming_topk`); symbols: int [N, M] (symbol
  Hamming, or Hamming over the bit expansions with symbol_distance='bits'; num_values K is then optional,
  any K above the largest symbol gives the same distances); dense: float [N, d] (cosine similarity).
  `search` takes the chunk keywords of the kind's top-k function.
  """
  if kind == 'bits':
    return retrieval.hamming_topk(as_packed(q_codes, 'q_codes'), as_packed(db_codes, 'db_codes'), k, **search)
  if kind == 'symbols':
    if symbol_distance not in SYMBOL_DISTANCES:
      raise ValueError(f'symbol_distance must be one of {SYMBOL_DISTANCES}, got {symbol_distance!r}')
    if symbol_distance == 'bits':
      return retrieval.hamming_topk(*symbols_as_packed_bits(q_codes, db_codes, num_values), k, **search)
    return symbol_topk(q_codes, db_codes, k, **search)
  if kind == 'dense':
    return cosine_topk(q_codes, db_codes, k, **search)
  raise ValueError(f"kind must be 'bits', 'symbols' or 'dense', got {kind!r}")


def precision_at_k_codes(kind: str, q_codes, q_labels, db_codes, db_labels, k: int = 100, *,
                         symbol_distance: str = 'symbols', num_values: int | None = None, **search) -> float:
  """Mean top-k precision of codes of any kind: the fraction of each query's k nearest database documents
  (distance of `nearest`, ties by index) that share a label with it, averaged over queries.

  Labels as in `retrieval.precision_at_k` (bool [N, C] label sets or bitmasks); for bits the number is
  exactly `retrieval.precision_at_k`'s.
  """
  if kind == 'bits':
    return retrieval.precision_at_k(as_packed(q_codes, 'q_codes'), q_labels, as_packed(db_codes, 'db_codes'),
                                    db_labels, k, **search)
  q_words = retrieval._label_words(q_labels, 'q_labels')  # pylint: disable=protected-access
  db_words = retrieval._label_words(db_labels, 'db_labels')  # pylint: disable=protected-access
  if q_words.shape[1] != db_words.shape[1]:
    raise ValueError(f'query labels have {q_words.shape[1]} words, database labels {db_words.shape[1]}')
  if q_words.shape[0] != np.shape(q_codes)[0] or db_words.shape[0] != np.shape(db_codes)[0]:
    raise ValueError('labels and codes must have the same number of rows')
  idx, _ = nearest(kind, q_codes, db_codes, k, symbol_distance=symbol_distance, num_values=num_values,
                   **search)
  per_query = retrieval._precision_of_neighbours(idx, q_words, db_words)  # pylint: disable=protected-access
  return float(jnp.mean(per_query)) if per_query.shape[0] else 0.0
