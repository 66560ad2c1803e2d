r"""Hamming-distance retrieval over packed binary codes, and top-k precision.

Packed code format (a file format: workdirs save packed codes as `.npy`):
  A code of m bits is a row of W = ceil(m / 32) uint32 words. Bit j of the code is bit j % 32 of word j // 32,
  least-significant bit first; the unused high bits of the last word are zero. `pack_bits` / `unpack_bits`
  convert between [..., m] arrays of 0/1 and this format.

Exact k-nearest neighbours (`hamming_topk`), ties broken by database index (the smaller index first):
  Split the database into blocks of `block_size` consecutive items. For each query, let a block's key be
  (its minimum distance, its index), and keep the k blocks with the smallest keys. They hold the exact top k:
  if an item of the top k lies in a block that was left out, that block's minimum is at least the item's
  distance and each of the k kept blocks precedes it, so each kept block holds an item that precedes the
  item in (distance, index) order: k items precede it, a contradiction. The kept blocks, sorted back into
  index order, hold k * block_size candidates; a second top-k over them gives the answer, because
  `lax.top_k` keeps the lower position first among equal values (documented), and positions follow the
  database index. Block minima cost one elementwise pass (about the cost of the distances alone), and
  `lax.top_k` sees N / block_size + k * block_size values per query instead of N. The database is processed
  in chunks; the chunks' top k, in index order, are merged by a last top-k on -distance (exact in float32).
  Queries are processed in chunks and split over the local devices.

Why no distance histogram (counting sort by distance, no top-k at all): on XLA:CPU (jax 0.10) a per-query
histogram over 0..m costs 10-100x the distances themselves, whether by scatter-add or by compare-and-count
passes, and the cumsum + scatter that would compact the chosen items costs about as much as a top-k.

Limits: indices are int32, so the database (padded to whole chunks) must hold fewer than 2^31 items, else
ValueError. Memory per device: the database plus O(query_chunk * db_chunk / block_size), whatever Q and N.

Labels for precision: a label set is a bitmask (bit c <=> label c), uint32 [N] or [N, L] words for more than
32 labels; bool [N, C] label sets are packed with `pack_bits`, uint64 [N] masks split into two words.
A retrieved document is relevant when it shares a label with the query. A document without labels is never
relevant, so a query without labels scores 0 (Reuters has training documents without any of its 20 labels).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    'class_ids_to_bits', 'hamming_distances', 'hamming_topk', 'pack_bits', 'precision_at_k',
    'precision_at_k_per_query', 'unpack_bits',
]

_MAX_INDEX = 2**31 - 1
_FAR = 2**24  # distance given to padding items: larger than any real one, still exact in float32


# ------------------------------------------------------------------------------------------------ packing
def pack_bits(codes):
  """Packs [..., m] codes of 0/1 (any int or bool dtype) into uint32 [..., ceil(m / 32)] words.

  Bit j goes to bit j % 32 of word j // 32, least-significant first. Nonzero counts as 1. NumPy in gives
  NumPy out (host); a jax.Array in gives a jax.Array out (also inside jit).
  """
  if isinstance(codes, jax.Array):
    return _pack_bits_jnp(codes)
  bits = np.asarray(codes).astype(bool)
  if bits.ndim < 1 or bits.shape[-1] < 1:
    raise ValueError(f'codes must be [..., m] with m >= 1, got shape {bits.shape}')
  m = bits.shape[-1]
  words = -(-m // 32)
  padded = np.zeros(bits.shape[:-1] + (words * 32,), bool)
  padded[..., :m] = bits
  little_bytes = np.packbits(padded, axis=-1, bitorder='little')
  return np.ascontiguousarray(little_bytes).view('<u4').astype(np.uint32, copy=False)


def _pack_bits_jnp(codes: jax.Array) -> jax.Array:
  if codes.ndim < 1 or codes.shape[-1] < 1:
    raise ValueError(f'codes must be [..., m] with m >= 1, got shape {codes.shape}')
  m = codes.shape[-1]
  words = -(-m // 32)
  bits = (codes != 0).astype(jnp.uint32)
  bits = jnp.pad(bits, [(0, 0)] * (codes.ndim - 1) + [(0, words * 32 - m)])
  bits = bits.reshape(codes.shape[:-1] + (words, 32))
  # Distinct powers of two: their sum is their bitwise or.
  return jnp.sum(bits << jnp.arange(32, dtype=jnp.uint32), axis=-1, dtype=jnp.uint32)


def unpack_bits(packed, m: int):
  """Inverse of `pack_bits`: uint32 [..., W] words -> uint8 [..., m] of 0/1 (jax.Array in, jax.Array out)."""
  if not 1 <= m <= 32 * packed.shape[-1]:
    raise ValueError(f'm={m} does not fit {packed.shape[-1]} words of 32 bits')
  if isinstance(packed, jax.Array):
    shifts = jnp.arange(32, dtype=jnp.uint32)
    bits = (packed.astype(jnp.uint32)[..., None] >> shifts) & 1
    return bits.reshape(packed.shape[:-1] + (-1,))[..., :m].astype(jnp.uint8)
  little_bytes = np.ascontiguousarray(np.asarray(packed, np.uint32).astype('<u4')).view(np.uint8)
  return np.unpackbits(little_bytes, axis=-1, bitorder='little')[..., :m]


def class_ids_to_bits(class_ids, num_classes: int) -> np.ndarray:
  """Single-label class ids int [N] -> uint32 [N, ceil(C / 32)] label bitmasks; a negative id means no label."""
  class_ids = np.asarray(class_ids)
  if class_ids.ndim != 1 or class_ids.max(initial=-1) >= num_classes:
    raise ValueError(f'class ids must be [N] below num_classes={num_classes}, got shape {class_ids.shape}')
  one_hot = class_ids[:, None] == np.arange(num_classes)
  return pack_bits(one_hot)


def _label_words(labels, name: str) -> jax.Array:
  """Label sets in any accepted form -> uint32 [N, L] bitmask words."""
  dtype = np.dtype(labels.dtype)
  if dtype == bool:
    if labels.ndim != 2:
      raise ValueError(f'{name}: bool label sets must be [N, C], got shape {labels.shape}')
    return jnp.asarray(pack_bits(labels if isinstance(labels, jax.Array) else np.asarray(labels)))
  if dtype.kind != 'u' or labels.ndim not in (1, 2):
    raise ValueError(f'{name}: labels must be bool [N, C] label sets or unsigned bitmasks [N] / [N, L], got '
                     f'{dtype} {labels.shape}; for single-label class ids use class_ids_to_bits')
  if dtype == np.uint64:
    words = np.asarray(labels).astype('<u8')
    words = words.reshape(words.shape[0], -1).view('<u4').astype(np.uint32)
  else:
    words = jnp.asarray(labels).astype(jnp.uint32)
  return jnp.asarray(words).reshape(labels.shape[0], -1)


# ------------------------------------------------------------------------------------------------ distances
def _popcount_xor(a, b) -> jax.Array:
  """Hamming distances int32: XOR then popcount, summed over the last (word) axis of broadcastable a, b."""
  return jnp.sum(lax.population_count(a ^ b).astype(jnp.int32), axis=-1)


@jax.jit
def hamming_distances(q_packed, db_packed) -> jax.Array:
  """int32 [Q, N] Hamming distances between uint32 [Q, W] and [N, W] packed codes (materialises Q x N)."""
  _check_codes(q_packed, db_packed)
  return _popcount_xor(q_packed[:, None, :], db_packed[None, :, :])


def _check_codes(q_packed, db_packed) -> None:
  for name, x in (('q_packed', q_packed), ('db_packed', db_packed)):
    if np.ndim(x) != 2 or np.dtype(x.dtype) != np.uint32:
      raise ValueError(f'{name} must be uint32 [n, W] packed codes (see pack_bits), got '
                       f'{getattr(x, "dtype", type(x))} {np.shape(x)}')
  if q_packed.shape[1] != db_packed.shape[1]:
    raise ValueError(f'queries have {q_packed.shape[1]} words per code, the database {db_packed.shape[1]}')


# ------------------------------------------------------------------------------------------------ top k
def hamming_topk(q_packed, db_packed, k: int, *, query_chunk: int | None = None, db_chunk: int = 1 << 20,
                 block_size: int | None = None, devices=None) -> tuple[jax.Array, jax.Array]:
  """The k nearest database codes of each query: (indices int32 [Q, k], distances int32 [Q, k]).

  Sorted by (distance, database index), so ties go to the smaller index; exact (the algorithm is in the
  module docstring). Call it from the host, not inside jit. Queries are split over `devices` (default: all
  local devices), the database is copied to each. Per device, `query_chunk` queries (default 64 on CPU,
  256 on accelerators) meet `db_chunk` database items at a time, in blocks of `block_size` items (default
  about sqrt(db_chunk / k)); memory is O(N W + query_chunk db_chunk / block_size) per device.
  """
  _check_codes(q_packed, db_packed)
  devices = tuple(jax.local_devices() if devices is None else devices)
  on_cpu = devices[0].platform == 'cpu'
  if query_chunk is None:
    query_chunk = 64 if on_cpu else 256
  geometry = _geometry(db_packed.shape[0], db_packed.shape[1], k, query_chunk, db_chunk, block_size, on_cpu)
  num_q = q_packed.shape[0]
  if num_q == 0:
    return jnp.zeros((0, k), jnp.int32), jnp.zeros((0, k), jnp.int32)
  # Whole query chunks on every device, so that no device compiles a ragged remainder.
  per_device = -(-num_q // len(devices))
  query_chunk = min(query_chunk, per_device)
  padded = len(devices) * (-(-per_device // query_chunk) * query_chunk)
  queries = np.zeros((padded - num_q, q_packed.shape[1]), np.uint32)
  queries = jnp.concatenate([jnp.asarray(q_packed), jnp.asarray(queries)]) if padded > num_q else q_packed
  topk, in_shardings = _sharded_topk(devices, k=k, query_chunk=query_chunk, **geometry)
  queries, db = jax.device_put((queries, db_packed), in_shardings)
  idx, dist = topk(queries, db)
  return idx[:num_q], dist[:num_q]


def _geometry(num_db: int, num_words: int, k: int, query_chunk: int, db_chunk: int,
              block_size: int | None, on_cpu: bool = True) -> dict:
  """Chunk, tile and block sizes (static arguments); ValueError on impossible requests."""
  if not 1 <= k <= num_db:
    raise ValueError(f'k={k} must be between 1 and the database size {num_db}')
  if query_chunk < 1 or db_chunk < 1 or (block_size is not None and block_size < 1):
    raise ValueError(f'chunk sizes must be positive, got {query_chunk=} {db_chunk=} {block_size=}')
  chunk = min(db_chunk, num_db)
  if block_size is None:
    # Balances the two top-k passes: over chunk / block_size block minima, then over k * block_size items.
    block_size = int(np.clip(round(np.sqrt(chunk / k)), 1, 32))
  blocks_per_chunk = -(-chunk // block_size)
  # On CPU, block minima are computed a tile of blocks at a time: 16 KiB of codes, which stay in cache
  # for every query of a chunk (2-3x faster than one pass over the chunk for 64-128 bits).
  num_tiles = -(-blocks_per_chunk * block_size * num_words // 4096) if on_cpu else 1
  tile_blocks = -(-blocks_per_chunk // num_tiles)
  blocks_per_chunk = num_tiles * tile_blocks
  chunk = blocks_per_chunk * block_size
  num_chunks = -(-num_db // chunk)
  if num_chunks * chunk > _MAX_INDEX:
    raise ValueError(f'{num_db} database items (padded to whole chunks of {chunk}) do not fit int32 indices; '
                     'split the database below 2^31 items')
  return dict(block_size=block_size, tile_blocks=tile_blocks, blocks_per_chunk=blocks_per_chunk,
              num_chunks=num_chunks)


@functools.lru_cache(maxsize=64)
def _sharded_topk(devices, **static):
  """jit(shard_map(_topk_on_device)): queries split over `devices`, the database replicated."""
  mesh = jax.sharding.Mesh(np.array(devices), ('queries',))
  specs = (jax.P('queries'), jax.P())
  body = functools.partial(_topk_on_device, **static)
  # No collectives inside: every device searches its own queries, so no replication checks are needed.
  mapped = jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=(jax.P('queries'), jax.P('queries')),
                         check_vma=False)
  return jax.jit(mapped), tuple(jax.sharding.NamedSharding(mesh, spec) for spec in specs)


def _topk_on_device(q_packed, db_packed, *, k, query_chunk, block_size, tile_blocks, blocks_per_chunk,
                    num_chunks):
  """Exact top k of every query against the whole database, on one device (see the module docstring)."""
  num_q, num_words = q_packed.shape
  num_db = db_packed.shape[0]
  chunk = blocks_per_chunk * block_size
  db = jnp.pad(db_packed, ((0, num_chunks * chunk - num_db), (0, 0)))
  # Two views of the database: blocks of consecutive items, to gather a query's chosen blocks, and
  # [chunk, tile, position in block, word, block in tile], so that block minima are elementwise.
  db_blocks = db.reshape(num_chunks * blocks_per_chunk, block_size, num_words)
  db_tiles = db.reshape(num_chunks, blocks_per_chunk // tile_blocks, tile_blocks, block_size, num_words)
  db_tiles = db_tiles.transpose(0, 1, 3, 4, 2)
  kept_blocks = min(k, blocks_per_chunk)
  chunk_top = min(k, chunk)

  def block_minima(q_c, first, tiles):
    """int32 [Qc, blocks_per_chunk]: each block's smallest distance to each query (padding is _FAR)."""
    def tile(t, out):
      lanes = tiles[t]  # [block_size, W, tile_blocks]
      block_first = first + (t * tile_blocks + jnp.arange(tile_blocks, dtype=jnp.int32)) * block_size
      block_min = None
      for u in range(block_size):  # unrolled: one elementwise fusion over [query, block]
        d = sum(lax.population_count(q_c[:, w, None] ^ lanes[u, w][None, :]).astype(jnp.int32)
                for w in range(num_words))
        d = jnp.where(block_first + u < num_db, d, _FAR)
        block_min = d if block_min is None else jnp.minimum(block_min, d)
      return lax.dynamic_update_slice_in_dim(out, block_min, t * tile_blocks, axis=1)
    out = jnp.zeros((q_c.shape[0], blocks_per_chunk), jnp.int32)
    return lax.fori_loop(0, blocks_per_chunk // tile_blocks, tile, out)

  def chunk_topk(q_c, c, tiles):
    """(-distance float32, index int32) [Qc, chunk_top] of one chunk, by (distance, index)."""
    first = c * chunk
    # Among equal minima top_k keeps the lower block: the (minimum, block) order of the proof.
    _, blocks = lax.top_k(-block_minima(q_c, first, tiles).astype(jnp.float32), kept_blocks)
    blocks = jnp.sort(blocks, axis=1)  # candidates in index order, for the tie-break below
    codes = db_blocks[c * blocks_per_chunk + blocks]  # [Qc, kept_blocks, block_size, W]
    d = _popcount_xor(codes, q_c[:, None, None, :]).reshape(q_c.shape[0], -1)
    local = (blocks[:, :, None] * block_size + jnp.arange(block_size, dtype=jnp.int32)).reshape(d.shape)
    key = jnp.where(first + local < num_db, -d.astype(jnp.float32), -jnp.inf)
    neg_dist, pos = lax.top_k(key, chunk_top)
    return neg_dist, first + jnp.take_along_axis(local, pos, axis=1)

  def query_chunk_topk(q_c):
    if num_chunks == 1:
      return chunk_topk(q_c, 0, db_tiles[0])
    neg_dist, idx = lax.map(lambda xs: chunk_topk(q_c, *xs), (jnp.arange(num_chunks, dtype=jnp.int32),
                                                              db_tiles))
    # Chunks in index order, each sorted by (distance, index): among equal distances the stable top_k
    # keeps the earlier position, which is the smaller index.
    neg_dist = neg_dist.transpose(1, 0, 2).reshape(q_c.shape[0], -1)
    neg_dist, pos = lax.top_k(neg_dist, k)
    return neg_dist, jnp.take_along_axis(idx.transpose(1, 0, 2).reshape(q_c.shape[0], -1), pos, axis=1)

  neg_dist, idx = lax.map(query_chunk_topk, q_packed.reshape(-1, query_chunk, num_words))
  return idx.reshape(num_q, k), (-neg_dist.reshape(num_q, k)).astype(jnp.int32)


# ------------------------------------------------------------------------------------------------ precision
def precision_at_k_per_query(q_codes_packed, q_label_bits, db_codes_packed, db_label_bits, k: int = 100,
                             **search) -> jax.Array:
  """float32 [Q]: the fraction of each query's k nearest database documents (ties by index) that share a label.

  Labels: bool [N, C] label sets or unsigned bitmasks [N] / [N, L] (see the module docstring). `search`
  takes the keyword arguments of `hamming_topk` (chunk sizes, devices).
  """
  q_words = _label_words(q_label_bits, 'q_label_bits')
  db_words = _label_words(db_label_bits, 'db_label_bits')
  if q_words.shape[1] != db_words.shape[1]:
    raise ValueError(f'query labels have {q_words.shape[1]} words, database labels {db_words.shape[1]}')
  if q_words.shape[0] != np.shape(q_codes_packed)[0] or db_words.shape[0] != np.shape(db_codes_packed)[0]:
    raise ValueError('labels and codes must have the same number of rows')
  idx, _ = hamming_topk(q_codes_packed, db_codes_packed, k, **search)
  return _precision_of_neighbours(idx, q_words, db_words)


@jax.jit
def _precision_of_neighbours(idx, q_words, db_words):
  shared = (db_words[idx] & q_words[:, None, :]) != 0  # [Q, k, L]
  return jnp.mean(jnp.any(shared, axis=-1), axis=-1, dtype=jnp.float32)


def precision_at_k(q_codes_packed, q_label_bits, db_codes_packed, db_label_bits, k: int = 100,
                   **search) -> float:
  """Mean over queries of `precision_at_k_per_query` (top-k precision of semantic hashing)."""
  per_query = precision_at_k_per_query(q_codes_packed, q_label_bits, db_codes_packed, db_label_bits, k,
                                       **search)
  return float(jnp.mean(per_query)) if per_query.shape[0] else 0.0
