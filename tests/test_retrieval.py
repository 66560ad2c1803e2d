"""Hamming retrieval and precision@k against brute-force NumPy twins, with heavy ties and odd chunk sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtr.evaluate import retrieval


def brute_topk(q_bits, db_bits, k):
  """(indices, distances) of the k nearest rows by (Hamming distance, index), from unpacked 0/1 codes."""
  dist = (q_bits[:, None, :] != db_bits[None, :, :]).sum(-1)
  index = np.arange(db_bits.shape[0])
  order = np.stack([np.lexsort((index, row))[:k] for row in dist])
  return order, np.take_along_axis(dist, order, axis=1)


def brute_precision(q_bits, q_sets, db_bits, db_sets, k):
  """Per-query precision from bool [n, C] label sets."""
  order, _ = brute_topk(q_bits, db_bits, k)
  relevant = (db_sets[order] & q_sets[:, None, :]).any(-1)
  return relevant.mean(-1)


def random_codes(rng, n, m, distinct=None):
  """0/1 codes; with `distinct`, only that many different codes, so that distances tie a lot."""
  if distinct is None:
    return rng.integers(0, 2, (n, m), dtype=np.int8)
  pool = rng.integers(0, 2, (distinct, m), dtype=np.int8)
  return pool[rng.integers(0, distinct, n)]


@pytest.mark.parametrize('m', [1, 16, 31, 32, 33, 64, 128])
def test_pack_unpack_roundtrip_and_bit_order(m):
  rng = np.random.default_rng(m)
  codes = rng.integers(0, 2, (5, m), dtype=np.int8)
  packed = retrieval.pack_bits(codes)
  assert packed.dtype == np.uint32 and packed.shape == (5, -(-m // 32))
  expected = np.zeros(packed.shape, np.uint64)
  for j in range(m):  # bit j -> word j // 32, bit j % 32, least significant first
    expected[:, j // 32] |= codes[:, j].astype(np.uint64) << np.uint64(j % 32)
  np.testing.assert_array_equal(packed, expected)
  np.testing.assert_array_equal(retrieval.unpack_bits(packed, m), codes)
  packed_jnp = retrieval.pack_bits(jnp.asarray(codes))
  np.testing.assert_array_equal(np.asarray(packed_jnp), packed)
  np.testing.assert_array_equal(np.asarray(retrieval.unpack_bits(packed_jnp, m)), codes)
  np.testing.assert_array_equal(retrieval.pack_bits(codes.astype(bool)), packed)


def test_hamming_distances_match_naive():
  rng = np.random.default_rng(0)
  for m in (7, 32, 100):
    q, db = rng.integers(0, 2, (9, m)), rng.integers(0, 2, (23, m))
    d = retrieval.hamming_distances(retrieval.pack_bits(q), retrieval.pack_bits(db))
    assert d.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(d), (q[:, None, :] != db[None, :, :]).sum(-1))


TOPK_CASES = [
    # m, queries, database, k, query_chunk, db_chunk, block_size, distinct codes (None: random)
    (4, 37, 1000, 100, 8, 333, 16, None),  # 16 possible codes: every distance ties hundreds of times
    (4, 30, 5000, 100, 64, 1 << 20, None, None),  # default block size, one chunk
    (4, 10, 257, 257, 3, 50, 7, None),  # k == N, chunks smaller than k
    (6, 21, 700, 64, 64, 1 << 18, 16, 5),  # 5 distinct codes: huge runs of equal distances
    (13, 19, 999, 100, 5, 100, 4, None),
    (33, 17, 513, 31, 4, 129, 16, None),  # two words, partial last word
    (64, 12, 2000, 100, 7, 512, 32, 40),
    (96, 12, 2000, 10, 7, 700, None, 40),  # three words, default block size
    (128, 9, 300, 7, 2, 1 << 18, 1, None),  # block of one item: plain top-k
]


@pytest.mark.parametrize('m,num_q,num_db,k,query_chunk,db_chunk,block_size,distinct', TOPK_CASES)
def test_hamming_topk_matches_brute_force(m, num_q, num_db, k, query_chunk, db_chunk, block_size, distinct):
  rng = np.random.default_rng(m + num_db)
  q, db = random_codes(rng, num_q, m), random_codes(rng, num_db, m, distinct)
  idx, dist = retrieval.hamming_topk(retrieval.pack_bits(q), retrieval.pack_bits(db), k,
                                     query_chunk=query_chunk, db_chunk=db_chunk, block_size=block_size)
  assert idx.dtype == jnp.int32 and dist.dtype == jnp.int32 and idx.shape == (num_q, k)
  want_idx, want_dist = brute_topk(q, db, k)
  np.testing.assert_array_equal(np.asarray(dist), want_dist)
  np.testing.assert_array_equal(np.asarray(idx), want_idx)


def test_hamming_topk_on_one_device_equals_all_devices():
  rng = np.random.default_rng(4)
  q, db = retrieval.pack_bits(random_codes(rng, 13, 20)), retrieval.pack_bits(random_codes(rng, 500, 20))
  one = retrieval.hamming_topk(q, db, 50, devices=jax.local_devices()[:1])
  every = retrieval.hamming_topk(jnp.asarray(q), jnp.asarray(db), 50)
  for a, b in zip(one, every):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_hamming_topk_all_codes_equal_returns_first_indices():
  db = np.zeros((1000, 32), np.int8)
  idx, dist = retrieval.hamming_topk(retrieval.pack_bits(db[:3]), retrieval.pack_bits(db), 100, db_chunk=300)
  np.testing.assert_array_equal(np.asarray(idx), np.tile(np.arange(100), (3, 1)))
  assert not np.asarray(dist).any()


def test_hamming_topk_rejects_bad_arguments():
  q, db = np.zeros((2, 1), np.uint32), np.zeros((10, 1), np.uint32)
  with pytest.raises(ValueError, match='k=11'):
    retrieval.hamming_topk(q, db, 11)
  with pytest.raises(ValueError, match='k=0'):
    retrieval.hamming_topk(q, db, 0)
  with pytest.raises(ValueError, match='words'):
    retrieval.hamming_topk(np.zeros((2, 2), np.uint32), db, 3)
  with pytest.raises(ValueError, match='uint32'):
    retrieval.hamming_topk(q.astype(np.int32), db, 3)
  with pytest.raises(ValueError, match='k=11'):
    retrieval.precision_at_k(q, np.ones(2, np.uint32), db, np.ones(10, np.uint32), k=11)


def label_sets(rng, n, num_labels, max_labels, p_none=0.0):
  """bool [n, C] with 1..max_labels labels per row, and a fraction p_none of rows without any."""
  sets = np.zeros((n, num_labels), bool)
  for row in range(n):
    if rng.random() >= p_none:
      sets[row, rng.choice(num_labels, rng.integers(1, max_labels + 1), replace=False)] = True
  return sets


PRECISION_CASES = [
    # m, queries, database, k, classes, labels per doc, fraction without labels, chunks (q, db, block)
    (4, 30, 800, 100, 5, 1, 0.0, (7, 301, 16)),  # single label, heavy ties
    (8, 25, 600, 50, 20, 3, 0.2, (4, 77, 8)),  # multi-label, docs and queries without labels
    (16, 20, 500, 40, 45, 4, 0.1, (64, 1 << 18, 16)),  # C > 32: two label words
    (32, 11, 333, 333, 3, 2, 0.0, (5, 100, 32)),  # k == N
]


@pytest.mark.parametrize('m,num_q,num_db,k,num_labels,max_labels,p_none,chunks', PRECISION_CASES)
def test_precision_matches_brute_force(m, num_q, num_db, k, num_labels, max_labels, p_none, chunks):
  rng = np.random.default_rng(num_db)
  q, db = random_codes(rng, num_q, m), random_codes(rng, num_db, m, distinct=12)
  q_sets = label_sets(rng, num_q, num_labels, max_labels, p_none)
  db_sets = label_sets(rng, num_db, num_labels, max_labels, p_none)
  want = brute_precision(q, q_sets, db, db_sets, k)
  query_chunk, db_chunk, block_size = chunks
  kw = dict(k=k, query_chunk=query_chunk, db_chunk=db_chunk, block_size=block_size)
  q_packed, db_packed = retrieval.pack_bits(q), retrieval.pack_bits(db)
  for q_labels, db_labels in ((q_sets, db_sets), (retrieval.pack_bits(q_sets), retrieval.pack_bits(db_sets))):
    got = retrieval.precision_at_k_per_query(q_packed, q_labels, db_packed, db_labels, **kw)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
    assert retrieval.precision_at_k(q_packed, q_labels, db_packed, db_labels, **kw) == pytest.approx(want.mean())
  assert np.all(np.asarray(got)[~q_sets.any(1)] == 0)  # a query without labels scores 0


def test_precision_label_forms_agree():
  rng = np.random.default_rng(1)
  q, db = random_codes(rng, 15, 8), random_codes(rng, 200, 8)
  q_ids, db_ids = rng.integers(-1, 6, 15), rng.integers(-1, 6, 200)  # -1: no label
  want = brute_precision(q, q_ids[:, None] == np.arange(6), db, db_ids[:, None] == np.arange(6), 20)
  args = (retrieval.pack_bits(q), retrieval.class_ids_to_bits(q_ids, 6),
          retrieval.pack_bits(db), retrieval.class_ids_to_bits(db_ids, 6))
  np.testing.assert_allclose(np.asarray(retrieval.precision_at_k_per_query(*args, k=20)), want, rtol=1e-6)
  masks_1d = [retrieval.class_ids_to_bits(ids, 6)[:, 0] for ids in (q_ids, db_ids)]  # uint32 [N]
  masks_64 = [m.astype(np.uint64) << np.uint64(32) for m in masks_1d]  # uint64, labels in the high word
  for q_mask, db_mask in (masks_1d, masks_64):
    got = retrieval.precision_at_k(args[0], q_mask, args[2], db_mask, k=20)
    assert got == pytest.approx(want.mean())
  with pytest.raises(ValueError, match='class_ids_to_bits'):
    retrieval.precision_at_k(args[0], q_ids, args[2], db_ids, k=20)
