"""Metrics of every code kind against brute-force float64 NumPy twins and hand-worked values."""

import math

import numpy as np
import pytest

from dtr.evaluate import classify, matching, neighbours, perplexity, radius, retrieval, sparsity


# ------------------------------------------------------------------------------------------------ twins
def brute_order(dist, k):
  """The k smallest of each row of dist [Q, N] by (value, index), and their values."""
  index = np.arange(dist.shape[1])
  order = np.stack([np.lexsort((index, row))[:k] for row in dist])
  return order, np.take_along_axis(dist, order, axis=1)


def brute_symbol_distances(q, db):
  """Double loop: the number of unequal symbols of every (query, item) pair."""
  dist = np.zeros((len(q), len(db)), np.int64)
  for i in range(len(q)):
    for j in range(len(db)):
      dist[i, j] = sum(int(a != b) for a, b in zip(q[i], db[j]))
  return dist


def brute_bit_expansion_distances(q, db):
  """Hamming distance over binary expansions: sum over positions of popcount(a xor b)."""
  return np.array([[sum(bin(int(a) ^ int(b)).count('1') for a, b in zip(x, y)) for y in db] for x in q])


def brute_cosine(q, db):
  q, db = np.asarray(q, np.float64), np.asarray(db, np.float64)
  qn, dbn = np.linalg.norm(q, axis=1), np.linalg.norm(db, axis=1)
  sim = q @ db.T
  return np.divide(sim, np.outer(qn, dbn), out=np.zeros_like(sim), where=np.outer(qn, dbn) > 0)


def random_symbols(rng, n, m, num_values, distinct=None):
  if distinct is None:
    return rng.integers(0, num_values, (n, m))
  pool = rng.integers(0, num_values, (distinct, m))
  return pool[rng.integers(0, distinct, n)]


def label_sets(rng, n, num_labels, p_none=0.2):
  sets = rng.random((n, num_labels)) < 0.3
  sets[rng.random(n) < p_none] = False
  return sets


def shares(q_sets, db_sets):
  return (q_sets[:, None, :] & db_sets[None, :, :]).any(-1)


# ------------------------------------------------------------------------------------------------ top k
SYMBOL_CASES = [
    # M, K, queries, database, k, query_chunk, db_chunk, distinct codes (None: random)
    (3, 2, 13, 300, 40, 4, 64, None),  # 8 possible codes: distances tie hundreds of times
    (5, 16, 9, 200, 200, 256, 16384, None),  # k == N, one chunk each
    (4, 7, 11, 150, 150, 3, 17, 6),  # k == N with chunks smaller than k, heavy ties
    (8, 256, 7, 257, 10, 1, 1, None),  # one item per chunk
]


@pytest.mark.parametrize('m,num_values,num_q,num_db,k,query_chunk,db_chunk,distinct', SYMBOL_CASES)
def test_symbol_topk_matches_brute_force(m, num_values, num_q, num_db, k, query_chunk, db_chunk, distinct):
  rng = np.random.default_rng(num_db)
  q = random_symbols(rng, num_q, m, num_values)
  db = random_symbols(rng, num_db, m, num_values, distinct)
  idx, dist = neighbours.symbol_topk(q, db, k, query_chunk=query_chunk, db_chunk=db_chunk)
  assert idx.dtype == np.int32 and dist.dtype == np.int32 and idx.shape == (num_q, k)
  want_idx, want_dist = brute_order(brute_symbol_distances(q, db), k)
  np.testing.assert_array_equal(np.asarray(dist), want_dist)
  np.testing.assert_array_equal(np.asarray(idx), want_idx)


def test_symbol_topk_rejects_bad_arguments():
  q, db = np.zeros((2, 3), np.int32), np.zeros((5, 3), np.int32)
  for k in (0, 6):
    with pytest.raises(ValueError, match=f'k={k}'):
      neighbours.symbol_topk(q, db, k)
  with pytest.raises(ValueError, match='same n'):
    neighbours.symbol_topk(q, db[:, :2], 2)
  with pytest.raises(ValueError, match='integers'):
    neighbours.symbol_topk(q.astype(np.float32), db, 2)
  with pytest.raises(ValueError, match='chunk'):
    neighbours.symbol_topk(q, db, 2, db_chunk=0)
  assert neighbours.symbol_topk(q[:0], db, 2)[0].shape == (0, 2)


@pytest.mark.parametrize('query_chunk,db_chunk', [(256, 16384), (3, 10), (1, 1)])
def test_cosine_topk_matches_brute_force(query_chunk, db_chunk):
  rng = np.random.default_rng(query_chunk)
  # Rows are powers of two times one of 12 directions (equal similarities up to float32 rounding, which
  # may differ in the last bit between equal rows), and zero rows (similarity exactly 0 to everything).
  pool = rng.normal(size=(12, 6))
  db = pool[rng.integers(0, 12, 90)] * 2.0**rng.integers(-3, 4, (90, 1))
  db[rng.random(90) < 0.1] = 0
  q = np.concatenate([rng.normal(size=(6, 6)), pool[:3] * 4, np.zeros((1, 6))])
  sims = brute_cosine(q, db)
  k = 30
  idx, got = neighbours.cosine_topk(q.astype(np.float32), db.astype(np.float32), k, query_chunk=query_chunk,
                                    db_chunk=db_chunk)
  idx, got = np.asarray(idx), np.asarray(got)
  assert idx.dtype == np.int32 and got.dtype == np.float32 and idx.shape == (len(q), k)
  want = -np.sort(-sims, axis=1)[:, :k]
  np.testing.assert_allclose(got, want, atol=1e-6)  # the k largest similarities, largest first
  np.testing.assert_allclose(np.take_along_axis(sims, idx, 1), want, atol=1e-6)  # ... of the items returned
  for row_idx, row_sim in zip(idx, got):
    assert len(set(row_idx)) == k
    order = np.lexsort((row_idx, -row_sim))  # (similarity descending, index ascending): already in order
    np.testing.assert_array_equal(order, np.arange(k))
  np.testing.assert_array_equal(idx[-1], np.arange(k))  # the zero query: exact ties, broken by index
  with pytest.raises(ValueError, match='floats'):
    neighbours.cosine_topk(q.astype(np.int32), db, 3)


def test_cosine_topk_breaks_exact_ties_by_index():
  # Similarities of exactly 0 (zero vectors, orthogonal axes) and exactly 1 (copies of one axis).
  eye = np.eye(3, dtype=np.float32)
  db = np.stack([eye[1], np.zeros(3), eye[0], eye[2], eye[0], np.zeros(3), eye[0], eye[1]]).astype(np.float32)
  idx, sim = neighbours.cosine_topk(eye[:1], db, 8, db_chunk=3)
  np.testing.assert_array_equal(np.asarray(idx), [[2, 4, 6, 0, 1, 3, 5, 7]])
  np.testing.assert_array_equal(np.asarray(sim), [[1, 1, 1, 0, 0, 0, 0, 0]])


@pytest.mark.parametrize('num_values', [2, 3, 4, 5, 16, 17])
def test_symbols_to_bits_expansion_and_hamming(num_values):
  rng = np.random.default_rng(num_values)
  symbols = rng.integers(0, num_values, (9, 4))
  bits = neighbours.symbols_to_bits(symbols, num_values)
  b = math.ceil(math.log2(num_values))
  assert bits.dtype == np.int8 and bits.shape == (9, 4 * b)
  for i, j, t in np.ndindex(9, 4, b):  # symbol j, bit t (least significant first) at column j * b + t
    assert bits[i, j * b + t] == (symbols[i, j] >> t) & 1
  hamming = (bits[:, None, :] != bits[None, :, :]).sum(-1)
  np.testing.assert_array_equal(hamming, brute_bit_expansion_distances(symbols, symbols))
  np.testing.assert_array_equal(np.asarray(neighbours.symbols_to_bits(np.asarray(symbols, np.int32)[None],
                                                                      num_values))[0], bits)
  with pytest.raises(ValueError, match=r'\[0, '):
    neighbours.symbols_to_bits(symbols + num_values, num_values)


def test_nearest_over_bit_expansions_matches_brute_force():
  rng = np.random.default_rng(3)
  q, db = rng.integers(0, 6, (8, 5)), rng.integers(0, 6, (120, 5))
  want_idx, want_dist = brute_order(brute_bit_expansion_distances(q, db), 25)
  for num_values in (None, 6, 64):  # extra leading zero bits change nothing
    idx, dist = neighbours.nearest('symbols', q, db, 25, symbol_distance='bits', num_values=num_values)
    np.testing.assert_array_equal(np.asarray(dist), want_dist)
    np.testing.assert_array_equal(np.asarray(idx), want_idx)
  with pytest.raises(ValueError, match='symbol_distance'):
    neighbours.nearest('symbols', q, db, 3, symbol_distance='hamming')
  with pytest.raises(ValueError, match='kind'):
    neighbours.nearest('sparse', q, db, 3)


# ------------------------------------------------------------------------------------------------ precision
def test_precision_dispatch_for_bits_is_todays_precision_exactly():
  rng = np.random.default_rng(5)
  q, db = rng.integers(0, 2, (20, 12), dtype=np.int8), rng.integers(0, 2, (300, 12), dtype=np.int8)
  q_sets, db_sets = label_sets(rng, 20, 6), label_sets(rng, 300, 6)
  today = retrieval.precision_at_k(retrieval.pack_bits(q), q_sets, retrieval.pack_bits(db), db_sets, k=50)
  assert neighbours.precision_at_k_codes('bits', q, q_sets, db, db_sets, k=50) == today
  packed = (retrieval.pack_bits(q), q_sets, retrieval.pack_bits(db), db_sets)
  assert neighbours.precision_at_k_codes('bits', *packed, k=50) == today


@pytest.mark.parametrize('kind,symbol_distance', [('symbols', 'symbols'), ('symbols', 'bits'),
                                                   ('dense', None)])
def test_precision_of_symbols_and_dense_matches_brute_force(kind, symbol_distance):
  rng = np.random.default_rng(6)
  if kind == 'symbols':
    q, db = random_symbols(rng, 15, 4, 5), random_symbols(rng, 200, 4, 5, distinct=30)
    dist = (brute_symbol_distances if symbol_distance == 'symbols' else brute_bit_expansion_distances)(q, db)
  else:
    pool = rng.normal(size=(25, 5))
    q, db = rng.normal(size=(15, 5)), pool[rng.integers(0, 25, 200)]
    dist = -brute_cosine(q, db)
  q_sets, db_sets = label_sets(rng, 15, 40), label_sets(rng, 200, 40)  # 40 labels: two label words
  order, _ = brute_order(dist, 30)
  want = np.mean(shares(q_sets, db_sets)[np.arange(15)[:, None], order], axis=1)
  got = neighbours.precision_at_k_codes(kind, q, q_sets, db, db_sets, k=30,
                                        symbol_distance=symbol_distance or 'symbols', db_chunk=64)
  assert got == pytest.approx(want.mean(), abs=1e-6)
  with pytest.raises(ValueError, match='rows'):
    neighbours.precision_at_k_codes(kind, q, q_sets[:3], db, db_sets, k=30)


@pytest.mark.parametrize('kind,symbol_distance,chunks', [('bits', 'symbols', (64, 4096)),
                                                         ('bits', 'symbols', (3, 37)),
                                                         ('symbols', 'symbols', (4, 50)),
                                                         ('symbols', 'bits', (64, 4096))])
def test_precision_recall_at_radius_matches_brute_force(kind, symbol_distance, chunks):
  rng = np.random.default_rng(len(kind) + chunks[0])
  if kind == 'bits':
    q, db = rng.integers(0, 2, (14, 10), dtype=np.int8), rng.integers(0, 2, (250, 10), dtype=np.int8)
    dist = (q[:, None, :] != db[None, :, :]).sum(-1)
  else:
    q, db = rng.integers(0, 4, (14, 6)), rng.integers(0, 4, (250, 6))
    dist = (brute_symbol_distances if symbol_distance == 'symbols' else brute_bit_expansion_distances)(q, db)
  q_sets, db_sets = label_sets(rng, 14, 4), label_sets(rng, 250, 4)
  radii = np.array([0, 1, 2, 3, 5, 12])
  curve = radius.precision_recall_at_radius(q, q_sets, db, db_sets, radii, kind,
                                            symbol_distance=symbol_distance, query_chunk=chunks[0],
                                            db_chunk=chunks[1])
  relevant = shares(q_sets, db_sets)
  for r_i, r in enumerate(radii):
    precision, recall = [], []
    for i in range(len(q)):  # query by query, with the documented conventions for empty sets
      inside = dist[i] <= r
      hits = (inside & relevant[i]).sum()
      precision.append(hits / inside.sum() if inside.sum() else 0.0)
      recall.append(hits / relevant[i].sum() if relevant[i].sum() else 0.0)
    assert curve.precision[r_i] == pytest.approx(np.mean(precision), abs=1e-12)
    assert curve.recall[r_i] == pytest.approx(np.mean(recall), abs=1e-12)
    assert curve.empty[r_i] == pytest.approx(np.mean(~(dist <= r).any(1)))
  assert curve.no_relevant == pytest.approx(np.mean(~relevant.any(1)))
  assert 0 < curve.empty[0] and curve.empty[-1] == 0  # radius 12 > 10 bits, 6 symbols, 12 expansion bits
  assert curve.recall[-1] == pytest.approx(1 - curve.no_relevant)


def test_precision_recall_at_radius_rejects_bad_arguments():
  q, sets = np.zeros((2, 4), np.int8), np.ones((2, 1), bool)
  with pytest.raises(ValueError, match='radii'):
    radius.precision_recall_at_radius(q, sets, q, sets, [-1], 'bits')
  with pytest.raises(ValueError, match="'bits' or 'symbols'"):
    radius.precision_recall_at_radius(q, sets, q, sets, [1], 'dense')


# ------------------------------------------------------------------------------------------------ matching
def test_matching_accuracy_by_hand():
  y = np.array([[0, 0, 0], [1, 1, 1], [1, 1, 0], [0, 0, 1]])
  x = np.array([[0, 0, 0], [1, 1, 0], [1, 1, 0], [1, 1, 1]])  # X_1 sits on Y_2, X_3 on Y_1
  # Nearest Ys (distance, then index): X_0 -> 0, 3; X_1 -> 2, 1; X_2 -> 2, 1; X_3 -> 1, 2.
  assert matching.matching_accuracy(x, y, ks=(2, 1)) == {2: 0.75, 1: 0.5}  # int64: inferred as symbols
  for kind in ('bits', 'symbols'):  # on 0/1 codes the two distances are the same
    assert matching.matching_accuracy(x.astype(np.int8), y, ks=(2, 1), kind=kind) == {2: 0.75, 1: 0.5}
  with pytest.raises(ValueError, match='pass kind="symbols"'):
    matching.matching_accuracy(x + 1, y, ks=(2, 1), kind='bits')  # symbols are never packed as bits


@pytest.mark.parametrize('kind', ['bits', 'symbols', 'dense'])
def test_matching_accuracy_matches_brute_force(kind):
  rng = np.random.default_rng(7)
  if kind == 'dense':
    x = rng.normal(size=(60, 4))
    y = x + rng.normal(size=(60, 4))
    dist = -brute_cosine(x, y)
  else:
    num_values = 2 if kind == 'bits' else 5
    x = rng.integers(0, num_values, (60, 6))
    y = np.where(rng.random((60, 6)) < 0.3, rng.integers(0, num_values, (60, 6)), x)  # noisy copies
    dist = brute_symbol_distances(x, y)
  ks = (1, 5, 20)
  order, _ = brute_order(dist, max(ks))
  want = {k: np.mean((order[:, :k] == np.arange(60)[:, None]).any(1)) for k in ks}
  x = x.astype({'bits': np.int8, 'symbols': np.int32, 'dense': np.float32}[kind])
  got = matching.matching_accuracy(x, y, ks, kind=kind)
  assert got.keys() == want.keys() and matching.matching_accuracy(x, y, ks) == got  # kind from the dtype
  for k in ks:
    assert got[k] == pytest.approx(want[k])
  with pytest.raises(ValueError, match='at least 61 pairs'):
    matching.matching_accuracy(x, y, (61,), kind=kind)
  with pytest.raises(ValueError, match='one Y code per X'):
    matching.matching_accuracy(x, y[:5], ks, kind=kind)


# ------------------------------------------------------------------------------------------------ perplexity
def test_perplexity_of_a_unigram_model_by_hand():
  # Unigram model over 3 words with p = (1/2, 1/4, 1/4); document A = [w0, w0, w1], document B = [w2].
  log_p = np.log([0.5, 0.25, 0.25])
  counts = np.array([[2, 1, 0], [0, 0, 1]])
  nll, tokens = -(counts * log_p).sum(1), counts.sum(1)
  # -log p(A) = -(2 log 1/2 + log 1/4) = 4 ln 2, -log p(B) = -log 1/4 = 2 ln 2.
  np.testing.assert_allclose(nll, [4 * math.log(2), 2 * math.log(2)])
  # Corpus: exp(6 ln 2 / 4 tokens) = 2^1.5. Documents: exp(mean(4/3 ln 2, 2 ln 2)) = 2^(5/3).
  assert perplexity.corpus_perplexity(nll, tokens) == pytest.approx(2**1.5, rel=1e-12)
  assert perplexity.document_perplexity(nll, tokens) == pytest.approx(2 ** (5 / 3), rel=1e-12)
  # A padding row of weight 0 changes nothing, whatever it holds; float32 input is summed in float64.
  padded = np.append(nll, 99.0).astype(np.float32), np.append(tokens, 0)
  assert perplexity.corpus_perplexity(*padded, weights=[1, 1, 0]) == pytest.approx(2**1.5, rel=1e-6)
  assert perplexity.document_perplexity(*padded, weights=[1, 1, 0]) == pytest.approx(2 ** (5 / 3), rel=1e-6)
  # Equal token counts make the two agree.
  assert perplexity.corpus_perplexity([3.0, 5.0], [2, 2]) == pytest.approx(
      perplexity.document_perplexity([3.0, 5.0], [2, 2]))


def test_perplexity_errors():
  for fn in (perplexity.corpus_perplexity, perplexity.document_perplexity):
    with pytest.raises(ValueError, match='token counts must be > 0'):
      fn([1.0, 2.0], [3, 0])
    with pytest.raises(ValueError, match='token counts must be > 0'):
      fn([1.0, 2.0], [3, -2])
    with pytest.raises(ValueError, match='weights must be finite and >= 0'):
      fn([1.0, 2.0], [3, 2], weights=[1, -1])
    with pytest.raises(ValueError, match='at least one row'):
      fn([1.0], [3], weights=[0])
    with pytest.raises(ValueError, match='same length'):
      fn([1.0, 2.0], [3])
    with pytest.raises(ValueError, match='finite'):
      fn([np.inf], [3])


# ------------------------------------------------------------------------------------------------ classify
def test_accuracy_and_mean_std():
  logits = np.array([[0.1, 0.9], [2.0, 1.0], [0.5, 0.5], [0.0, 3.0], [1.0, 0.0]])
  labels = np.array([1, 1, 0, -1, 0])  # row 2 ties -> class 0; row 3 is unlabelled
  assert classify.accuracy(logits, labels) == 0.75
  assert classify.accuracy(np.argmax(logits, 1), labels) == 0.75
  with pytest.raises(ValueError, match='labelled'):
    classify.accuracy(logits, np.full(5, -1))
  with pytest.raises(ValueError, match='classes'):
    classify.accuracy(logits, np.array([1, 1, 2, 0, 0]))
  with pytest.raises(ValueError, match='integer predictions'):
    classify.accuracy(logits[:, 0], labels)
  with pytest.raises(ValueError, match='4 predictions'):
    classify.accuracy(logits[:4], labels)
  assert classify.mean_std([1, 2, 3, 4]) == pytest.approx((2.5, math.sqrt(5 / 3)))  # ddof=1
  assert classify.mean_std([0.7]) == (0.7, 0.0)
  with pytest.raises(ValueError, match='at least one'):
    classify.mean_std([])


# ------------------------------------------------------------------------------------------------ sparsity
def test_hoyer_by_hand():
  assert sparsity.hoyer([0.0, -2.5, 0.0, 0.0]) == pytest.approx(1.0)  # one-hot
  assert sparsity.hoyer([3.0, -3.0, 3.0]) == pytest.approx(0.0)  # all |z_j| equal
  assert sparsity.hoyer([3.0, 4.0, 0.0, 0.0]) == pytest.approx(0.6)  # (2 - 7 / 5) / (2 - 1)
  assert sparsity.hoyer(np.zeros(5)) == 1.0  # documented choice for the all-zero vector
  rng = np.random.default_rng(8)
  z = rng.normal(size=(20, 7)) * (rng.random((20, 7)) < 0.4)
  twin = [(math.sqrt(7) - np.abs(row).sum() / np.linalg.norm(row)) / (math.sqrt(7) - 1) if row.any() else 1.0
          for row in z]
  np.testing.assert_allclose(sparsity.hoyer(z), twin, rtol=1e-12)
  assert sparsity.average_hoyer(z, standardise=False) == pytest.approx(np.mean(twin))
  with pytest.raises(ValueError, match='d >= 2'):
    sparsity.hoyer([1.0])


def test_average_hoyer_standardises_each_dimension():
  # Columns (1, 3) and (10, 30) standardise to (-1, 1) each: every row becomes constant, Hoyer 0.
  assert sparsity.average_hoyer([[1.0, 10.0], [3.0, 30.0]]) == pytest.approx(0.0)
  # Row (1, 10): ||.||_1 / ||.||_2 = 11 / sqrt(101); row (3, 30) has the same ratio.
  raw = (math.sqrt(2) - 11 / math.sqrt(101)) / (math.sqrt(2) - 1)
  assert sparsity.average_hoyer([[1.0, 10.0], [3.0, 30.0]], standardise=False) == pytest.approx(raw)
  # A zero-std column stays 0: rows become (-1, 0, -1) and (1, 0, 1), ||.||_1 / ||.||_2 = sqrt(2).
  z = [[1.0, 5.0, 0.0], [3.0, 5.0, 2.0]]
  np.testing.assert_allclose(sparsity.standardise_columns(z), [[-1, 0, -1], [1, 0, 1]])
  want = (math.sqrt(3) - math.sqrt(2)) / (math.sqrt(3) - 1)
  assert sparsity.average_hoyer(z) == pytest.approx(want)
