"""Tests for dtr.latent.markov against a brute-force float64 NumPy twin.

The twin enumerates all 2^m codes and multiplies the conditionals position by
position, reading column c = sum_k z_{i-1-k} 2^k (bits before the start are 0).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtr.latent import markov

# Every order at m = 7; for the short chains (often m < order) a few cases keep the file
# fast, since each new shape costs an XLA compilation.
ALL_ORDER_PAIRS = [(o, r) for r in range(5) for o in range(r + 1)]  # 0 <= o <= r <= 4
CROSS_ENTROPY_CASES = ([(7, o, r) for o, r in ALL_ORDER_PAIRS]
                       + [(1, 0, 0), (1, 2, 4), (3, 0, 3), (3, 1, 1), (3, 4, 4)])
SINGLE_ORDER_CASES = [(7, o) for o in range(5)] + [(1, 0), (1, 4), (3, 2), (3, 3)]


# ---------------------------------------------------------------- brute force


def _np_log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def all_codes(m):
  """Every code in {0,1}^m, shape [2^m, m]."""
  return np.array(list(itertools.product([0, 1], repeat=m)), dtype=np.int64)


def bf_log_prob(codes, logits):
  """log p(z) for each row of codes [N, m] under one chain with logits [m, 2^o]."""
  logits = np.asarray(logits, np.float64)
  m, n = logits.shape
  o = int(np.log2(n))
  total = np.zeros(len(codes))
  for i in range(m):
    col = np.zeros(len(codes), np.int64)
    for k in range(o):
      if i - 1 - k >= 0:
        col += codes[:, i - 1 - k] * 2**k
    x = logits[i, col]
    total += _np_log_sigmoid(np.where(codes[:, i] == 1, x, -x))
  return total


def bf_cross_entropy(p, q):
  codes = all_codes(p.shape[0])
  return -np.sum(np.exp(bf_log_prob(codes, p)) * bf_log_prob(codes, q))


def bf_viterbi(logits):
  codes = all_codes(logits.shape[0])
  lp = bf_log_prob(codes, logits)
  return codes[np.argmax(lp)], np.max(lp)


def make_logits(rng, shape, kind):
  normal = 3.0 * rng.standard_normal(shape)
  extreme = 50.0 * rng.choice([-1.0, 1.0], size=shape)
  if kind == 'random':
    return normal
  if kind == 'extreme':
    return extreme
  if kind == 'mixed':
    return np.where(rng.random(shape) < 0.5, extreme, normal)
  raise ValueError(kind)


def batch_of_kinds(rng, shape):
  """A batch [3, *shape] holding random, extreme and mixed logits."""
  return np.stack([make_logits(rng, shape, kind) for kind in ('random', 'extreme', 'mixed')])


# Jitted once here so that repeated shapes reuse one compilation.
_cross_entropy = jax.jit(markov.cross_entropy)
_entropy = jax.jit(markov.entropy)
_log_prob = jax.jit(markov.log_prob)
_viterbi = jax.jit(markov.viterbi)


# ---------------------------------------------------------------- log_prob


def test_column_convention_by_hand():
  # Order 2, z = (1, 0, 1): columns 0, 1 (z_0 = 1) and 2 (z_1 = 0, z_0 = 1).
  logits = np.arange(12, dtype=np.float64).reshape(3, 4) / 4 - 1.2
  expected = (_np_log_sigmoid(logits[0, 0]) + _np_log_sigmoid(-logits[1, 1])
              + _np_log_sigmoid(logits[2, 2]))
  got = markov.log_prob(jnp.array([1, 0, 1]), jnp.asarray(logits, jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-6)


@pytest.mark.parametrize('m,o', SINGLE_ORDER_CASES)
def test_log_prob_matches_brute_force_and_normalises(m, o):
  rng = np.random.default_rng(10 * m + o)
  logits = batch_of_kinds(rng, (m, 2**o))  # [B=3, m, 2^o]
  codes = all_codes(m)
  # codes [N, 1, m] against logits [B, m, 2^o] broadcast to [N, B].
  got = _log_prob(codes[:, None, :], jnp.asarray(logits, jnp.float32))
  assert got.shape == (len(codes), 3)
  expected = np.stack([bf_log_prob(codes, lg) for lg in logits], axis=1)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
  # The random chain is far from deterministic: its probabilities must sum to 1.
  np.testing.assert_allclose(jax.nn.logsumexp(got[:, 0]), 0.0, atol=1e-5)
  np.testing.assert_allclose(np.exp(expected).sum(axis=0), 1.0, rtol=1e-12)


# ---------------------------------------------------------------- cross entropy / entropy


@pytest.mark.parametrize('m,o,r', CROSS_ENTROPY_CASES)
def test_cross_entropy_matches_brute_force(m, o, r):
  rng = np.random.default_rng(100 * m + 10 * o + r)
  p = batch_of_kinds(rng, (m, 2**o))  # batch [3]
  for q_kind in ('random', 'mixed'):
    q = make_logits(rng, (m, 2**r), q_kind)  # no batch dims
    got = _cross_entropy(jnp.asarray(p, jnp.float32), jnp.asarray(q, jnp.float32))
    assert got.shape == (3,) and got.dtype == jnp.float32
    expected = np.array([bf_cross_entropy(pb, q) for pb in p])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('m,o', SINGLE_ORDER_CASES)
def test_entropy_matches_brute_force(m, o):
  rng = np.random.default_rng(1000 + 10 * m + o)
  logits = batch_of_kinds(rng, (m, 2**o))
  got = _entropy(jnp.asarray(logits, jnp.float32))
  expected = np.array([bf_cross_entropy(lg, lg) for lg in logits])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  # Near-deterministic chains have tiny entropies; they should still be accurate relatively.
  np.testing.assert_allclose(got[1], expected[1], rtol=1e-4)
  assert np.all(expected >= 0)


def test_cross_entropy_bounds_entropy():
  rng = np.random.default_rng(7)
  p = jnp.asarray(make_logits(rng, (4, 6, 4), 'random'), jnp.float32)
  q = jnp.asarray(make_logits(rng, (6, 16), 'random'), jnp.float32)
  assert np.all(_cross_entropy(p, q) >= _entropy(p))
  # A higher-order q that ignores its extra bits is the same chain as p.
  q_same = jnp.tile(p, 4)
  np.testing.assert_allclose(_cross_entropy(p, q_same), _entropy(p), rtol=1e-5)


def test_errors():
  with pytest.raises(ValueError, match=r'order\(q\) >= order\(p\).*order\(p\)=3.*order\(q\)=1'):
    markov.cross_entropy(jnp.zeros((5, 8)), jnp.zeros((5, 2)))
  with pytest.raises(ValueError, match='same code length'):
    markov.cross_entropy(jnp.zeros((5, 2)), jnp.zeros((6, 2)))
  with pytest.raises(ValueError, match='power of 2'):
    markov.entropy(jnp.zeros((5, 3)))
  with pytest.raises(ValueError, match='power of 2'):
    markov.viterbi(jnp.zeros((5, 6)))
  with pytest.raises(ValueError, match='shape'):
    markov.order(jnp.zeros(4))
  with pytest.raises(ValueError, match='m=5'):
    markov.log_prob(jnp.zeros(4, jnp.int32), jnp.zeros((5, 2)))
  assert markov.order(jnp.zeros((5, 1))) == 0
  assert markov.order(jnp.zeros((5, 1024))) == 10


# ---------------------------------------------------------------- viterbi / sample


@pytest.mark.parametrize('m,o', SINGLE_ORDER_CASES)
def test_viterbi_matches_brute_force(m, o):
  rng = np.random.default_rng(2000 + 10 * m + o)
  logits = 3.0 * rng.standard_normal((3, m, 2**o))
  z, lp = _viterbi(jnp.asarray(logits, jnp.float32))
  assert z.shape == (3, m) and z.dtype == jnp.int32 and lp.shape == (3,)
  for b in range(3):
    z_bf, lp_bf = bf_viterbi(logits[b])
    np.testing.assert_array_equal(z[b], z_bf)
    np.testing.assert_allclose(lp[b], lp_bf, rtol=1e-5, atol=1e-5)  # = log p(z*) as z* = z_bf


def test_viterbi_extreme_logits():
  rng = np.random.default_rng(3)
  logits = jnp.asarray(make_logits(rng, (4, 7, 8), 'extreme'), jnp.float32)
  z, lp = _viterbi(logits)
  # With +-50 logits the greedy path is optimal and has log prob ~ 0.
  np.testing.assert_allclose(lp, 0.0, atol=1e-5)
  np.testing.assert_allclose(lp, _log_prob(z, logits), atol=1e-6)
  for b in range(4):
    np.testing.assert_array_equal(z[b], bf_viterbi(np.asarray(logits[b], np.float64))[0])


def test_sample_frequencies_match_brute_force():
  m, o, n = 3, 2, 40_000
  logits = 1.5 * np.random.default_rng(4).standard_normal((m, 2**o))
  z = markov.sample(jax.random.key(0), jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (n, m, 2**o)))
  assert z.shape == (n, m) and z.dtype == jnp.int32
  idx = np.asarray(z) @ (2 ** np.arange(m)[::-1])  # same ordering as all_codes
  freq = np.bincount(idx, minlength=2**m) / n
  prob = np.exp(bf_log_prob(all_codes(m), logits))
  tolerance = 5 * np.sqrt(prob * (1 - prob) / n) + 1e-3  # ~5 standard errors
  assert np.all(np.abs(freq - prob) <= tolerance), (freq, prob)


def test_sample_deterministic_and_vmaps_over_keys():
  logits = jnp.asarray(make_logits(np.random.default_rng(5), (6, 4), 'extreme'), jnp.float32)
  keys = jax.random.split(jax.random.key(1), 8)
  z = jax.jit(jax.vmap(markov.sample, in_axes=(0, None)))(keys, logits)
  greedy, _ = markov.viterbi(logits)
  np.testing.assert_array_equal(z, jnp.broadcast_to(greedy, z.shape))


# ---------------------------------------------------------------- gradients


def _directional_check(f, args, rng, h=1e-5):
  """grad(f) . v against a central difference along a random direction v."""
  f = jax.jit(f)
  grads = jax.jit(jax.grad(f, argnums=tuple(range(len(args)))))(*args)
  dirs = [jnp.asarray(rng.standard_normal(a.shape)) for a in args]
  plus = f(*[a + h * v for a, v in zip(args, dirs)])
  minus = f(*[a - h * v for a, v in zip(args, dirs)])
  numeric = (plus - minus) / (2 * h)
  analytic = sum(jnp.vdot(g, v) for g, v in zip(grads, dirs))
  np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize('o,r', [(0, 2), (3, 4)])
def test_gradients_match_finite_differences_float64(o, r):
  rng = np.random.default_rng(6 + o + 10 * r)
  with jax.enable_x64(True):
    p = jnp.asarray(make_logits(rng, (2, 5, 2**o), 'random'), jnp.float64)
    q = jnp.asarray(make_logits(rng, (5, 2**r), 'random'), jnp.float64)
    codes = jnp.asarray(all_codes(5)[::3])

    def objective(p, q):  # weights keep the three terms from cancelling
      return (jnp.sum(markov.cross_entropy(p, q)) + 0.7 * jnp.sum(markov.entropy(p))
              + 0.3 * jnp.sum(markov.log_prob(codes, q)))

    _directional_check(objective, (p, q), rng)
  assert jnp.ones(()).dtype == jnp.float32  # x64 did not leak out of the context


# ---------------------------------------------------------------- long chains, jit and vmap


@jax.jit
def _values_and_grads(p, q, e, z):
  def total(p, q, e):
    ce, ent, lp = markov.cross_entropy(p, q), markov.entropy(e), markov.log_prob(z, e)
    return jnp.sum(ce) + jnp.sum(ent) + jnp.sum(lp), (ce, ent, lp)

  (_, values), grads = jax.value_and_grad(total, argnums=(0, 1, 2), has_aux=True)(p, q, e)
  return (*values, *grads)


def test_long_high_order_chain_float32_matches_float64():
  m, o = 1024, 10
  rng = np.random.default_rng(9)
  p = np.stack([make_logits(rng, (m, 2**3), kind) for kind in ('random', 'extreme')])
  q = make_logits(rng, (m, 2**o), 'mixed')
  e = np.stack([make_logits(rng, (m, 2**o), kind) for kind in ('random', 'mixed', 'extreme')])
  z = rng.integers(0, 2, (m,))

  out32 = _values_and_grads(*(jnp.asarray(a, jnp.float32) for a in (p, q, e)), z)
  with jax.enable_x64(True):
    out64 = [np.asarray(a) for a in _values_and_grads(*(jnp.asarray(a, jnp.float64) for a in (p, q, e)), z)]
  assert out64[0].dtype == np.float64
  for a in out32:  # values and gradients, including those at +-50 logits
    assert a.dtype == jnp.float32 and np.all(np.isfinite(a))
  # Observed errors are ~1e-7 relative, also for the ~1e-17 entropy of the +-50 chain.
  for v32, v64 in zip(out32[:3], out64[:3]):  # cross entropy, entropy, log prob
    np.testing.assert_allclose(v32, v64, rtol=1e-5)
  for g32, g64 in zip(out32[3:], out64[3:]):
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-5 * np.abs(g64).max())


def test_jit_vmap_matches_batched_call():
  rng = np.random.default_rng(11)
  p = jnp.asarray(make_logits(rng, (4, 6, 4), 'random'), jnp.float32)
  q = jnp.asarray(make_logits(rng, (6, 8), 'random'), jnp.float32)
  z = jax.jit(markov.sample)(jax.random.key(2), p)

  def all_outputs(p, q, z):
    return (markov.cross_entropy(p, q), markov.entropy(p), markov.log_prob(z, p), *markov.viterbi(p))

  batched = jax.jit(all_outputs)(p, q, z)
  mapped = jax.jit(jax.vmap(all_outputs, in_axes=(0, None, 0)))(p, q, z)
  for a, b in zip(mapped, batched):
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize('r', [0, 3, 10])
def test_order_zero_closed_form_matches_the_recursion(r):
  """o = 0 takes a closed-form path; an order-1 p with equal columns is the same chain via the scan."""
  rng = np.random.default_rng(r)
  m = 1024 if r == 10 else 37
  p0 = rng.normal(size=(2, m, 1)) * np.where(rng.random((2, m, 1)) < 0.3, 50.0, 3.0)
  q = rng.normal(size=(m, 2 ** r)) * 4
  p1 = np.repeat(p0, 2, axis=-1)  # order 1, both columns equal: independent bits again
  fast = markov.cross_entropy(jnp.float32(p0), jnp.float32(q))
  if r >= 1:
    scan = markov.cross_entropy(jnp.float32(p1), jnp.float32(q))
    np.testing.assert_allclose(fast, scan, rtol=2e-5)
  with jax.enable_x64(True):
    exact = markov.cross_entropy(jnp.asarray(p0, jnp.float64), jnp.asarray(q, jnp.float64))
  np.testing.assert_allclose(fast, exact, rtol=2e-5)
  grads = jax.grad(lambda a, b: markov.cross_entropy(a, b).sum(), argnums=(0, 1))(jnp.float32(p0), jnp.float32(q))
  assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize('o,r', [(0, 0), (0, 3), (1, 1), (2, 4)])
def test_context_marginals_match_brute_force_and_give_the_cross_entropy(o, r):
  m = 6
  rng = np.random.default_rng(10 * o + r)
  p = rng.normal(size=(2, m, 2 ** o)) * 3
  q = rng.normal(size=(m, 2 ** r)) * 3
  mu = np.asarray(markov.context_marginals(jnp.float32(p), r), np.float64)
  assert mu.shape == (2, m, 2 ** r, 2)
  for b in range(2):
    codes = all_codes(m)
    probs = np.exp(bf_log_prob(codes, p[b]))
    expected = np.zeros((m, 2 ** r, 2))
    for z, pz in zip(codes, probs):
      for i in range(m):
        c = sum(int(z[i - 1 - k]) << k for k in range(r) if i - 1 - k >= 0)
        expected[i, c, int(z[i])] += pz
    np.testing.assert_allclose(mu[b], expected, atol=2e-6)
  via_mu = markov.cross_entropy_from_marginals(jnp.float32(mu).mean(0), jnp.float32(q))
  np.testing.assert_allclose(via_mu, np.mean(markov.cross_entropy(jnp.float32(p), jnp.float32(q))), rtol=1e-5)
  with pytest.raises(ValueError, match='r >= order'):
    markov.context_marginals(jnp.zeros((m, 2 ** (r + 1))), r)
