"""Hashing baselines: latent-layer math against hand / float64 NumPy references, and every method end to end
on the tiny synthetic configuration through the shared loop."""

import importlib.util
import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from dtr import leaderboard, methods, train
from dtr.evaluate import retrieval
from dtr.latent import bernoulli, vq
from dtr.methods import baselines

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def hashing_config(arg):
  spec = importlib.util.spec_from_file_location('hashing_config', REPO / 'configs' / 'hashing.py')
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def _sigmoid(x):
  return 1 / (1 + np.exp(-x))


# ------------------------------------------------------------------------------------------------ latent math
def test_straight_through_bernoulli_forward_is_a_sample_backward_is_the_sigmoid_gradient():
  logits = jnp.array([-3.0, -0.5, 0.0, 0.7, 4.0])
  weights = jnp.array([1.0, -2.0, 0.5, 3.0, 1.5])
  rng = jax.random.key(0)
  z = bernoulli.sample_straight_through(logits, rng)
  u = jax.random.uniform(rng, logits.shape)
  np.testing.assert_array_equal(np.asarray(z), np.asarray(u < jax.nn.sigmoid(logits)).astype(np.float32))
  grad = jax.grad(lambda l: jnp.sum(weights * bernoulli.sample_straight_through(l, rng)))(logits)
  p = _sigmoid(np.asarray(logits, np.float64))
  np.testing.assert_allclose(grad, np.asarray(weights) * p * (1 - p), rtol=1e-5)
  # With respect to the probability the estimator is the identity.
  probs = jnp.array([0.2, 0.9])
  grad_p = jax.grad(lambda q: jnp.sum(jnp.array([2.0, -1.0]) * bernoulli.straight_through(q > 0.5, q)))(probs)
  np.testing.assert_allclose(grad_p, [2.0, -1.0])
  # VQ's straight-through: quantised forward, identity backward.
  h, q = jnp.array([0.3, -1.2]), jnp.array([1.0, -1.0])
  np.testing.assert_allclose(vq.straight_through(h, q), q)
  np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(jnp.array([3.0, 4.0]) * vq.straight_through(x, q)))(h),
                             [3.0, 4.0])


def test_kl_to_uniform_matches_numpy_and_stays_finite():
  logits = np.array([[-2.0, 0.0, 1.5], [30.0, -30.0, 0.3]])
  p = _sigmoid(logits)
  expected = np.sum(p * np.log(np.clip(p, 1e-300, 1)) + (1 - p) * np.log(np.clip(1 - p, 1e-300, 1)) + np.log(2),
                    axis=-1)
  np.testing.assert_allclose(bernoulli.kl_to_uniform(jnp.asarray(logits)), expected, rtol=1e-5, atol=1e-6)
  extreme = bernoulli.kl_bernoulli(jnp.array([200.0, -200.0]), jnp.array([-200.0, 200.0]))
  assert np.all(np.isfinite(extreme))
  grads = jax.grad(lambda l: jnp.sum(bernoulli.kl_to_uniform(l)))(jnp.array([[500.0, -500.0]]))
  assert np.all(np.isfinite(grads))


def test_mixture_prior_kl_matches_the_joint_kl_by_enumeration():
  """KL(q(c) q(z) || pi_c p(z|c)) summed over every (c, z), C = 2, m = 3, float64 NumPy."""
  rng = np.random.default_rng(0)
  q_logits = rng.normal(size=(2, 3))            # two documents
  c_logits = rng.normal(size=(2, 2))            # q(c|y)
  prior_logits = rng.normal(size=(2, 3)) * 2    # component means sigma(.)
  mixing_logits = np.array([0.3, -0.4])         # a non-uniform pi
  pi = np.exp(mixing_logits) / np.exp(mixing_logits).sum()
  expected = []
  for b in range(2):
    qc = np.exp(c_logits[b]) / np.exp(c_logits[b]).sum()
    qz_bits, total = _sigmoid(q_logits[b]), 0.0
    for c, z in itertools.product(range(2), itertools.product([0, 1], repeat=3)):
      z = np.array(z)
      qz = np.prod(np.where(z, qz_bits, 1 - qz_bits))
      pz = np.prod(np.where(z, _sigmoid(prior_logits[c]), 1 - _sigmoid(prior_logits[c])))
      total += qc[c] * qz * np.log(qc[c] * qz / (pi[c] * pz))
    expected.append(total)
  got = bernoulli.mixture_prior_kl(*(jnp.asarray(a, jnp.float32) for a in
                                     (q_logits, c_logits, prior_logits, mixing_logits)))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_vq_nearest_and_ema_update_by_hand():
  """2 segments, D = 2, 3 vectors, decay 0.5, epsilon 0.1: every number worked out below."""
  codebook = jnp.array([[[0.0, 0.0], [1.0, 1.0]],     # segment 0: entries e00, e01
                        [[0.0, 0.0], [2.0, 0.0]]])    # segment 1: entries e10, e11
  h = jnp.array([[[0.1, 0.2], [1.8, 0.1]],
                 [[0.9, 0.7], [0.2, -0.1]],
                 [[0.2, 0.0], [1.5, 0.5]]])
  idx, quantised = vq.nearest(h, codebook)
  np.testing.assert_array_equal(idx, [[0, 1], [1, 0], [0, 1]])
  np.testing.assert_allclose(quantised[1], [[1.0, 1.0], [0.0, 0.0]])
  ema, new_codebook = vq.ema_update(vq.ema_init(codebook), h, idx, jnp.ones(3), decay=0.5, epsilon=0.1)
  # counts: N = 0.5 * 1 + 0.5 * n, with n = [[2, 1], [1, 2]]
  np.testing.assert_allclose(ema['count'], [[1.5, 1.0], [1.0, 1.5]])
  # sums: M = 0.5 * e + 0.5 * s; s00 = [0.3, 0.2], s01 = [0.9, 0.7], s10 = [0.2, -0.1], s11 = [3.3, 0.6]
  sums = [[[0.15, 0.1], [0.95, 0.85]], [[0.1, -0.05], [2.65, 0.3]]]
  np.testing.assert_allclose(ema['sum'], sums, rtol=1e-6)
  # Laplace: total 2.5 per segment; N~ = (N + 0.1) / (2.5 + 0.2) * 2.5
  big, small = 1.6 / 2.7 * 2.5, 1.1 / 2.7 * 2.5
  expected = [[[0.15 / big, 0.1 / big], [0.95 / small, 0.85 / small]],
              [[0.1 / small, -0.05 / small], [2.65 / big, 0.3 / big]]]
  np.testing.assert_allclose(new_codebook, expected, rtol=1e-5)
  # A padding document (weight 0) changes nothing.
  h4 = jnp.concatenate([h, 100 * jnp.ones((1, 2, 2))])
  idx4 = jnp.concatenate([idx, jnp.ones((1, 2), jnp.int32)])
  _, padded = vq.ema_update(vq.ema_init(codebook), h4, idx4, jnp.array([1.0, 1, 1, 0]), decay=0.5, epsilon=0.1)
  np.testing.assert_allclose(padded, new_codebook, rtol=1e-6)


def test_pca_codes_match_numpy_svd():
  rng = np.random.default_rng(1)
  dense = rng.normal(size=(40, 15)) * (rng.random((40, 15)) < 0.6)  # even N: no document on the median
  bits = 3
  got = baselines.fit('spectral', sp.csr_matrix(dense), bits).encode(sp.csr_matrix(dense))
  centred = dense - dense.mean(0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  proj = centred @ vt[:bits].T
  expected = (proj > np.median(proj, axis=0)).astype(np.int8)
  for j in range(bits):  # a singular vector's sign is arbitrary: a bit may be flipped for every document
    assert np.array_equal(got[:, j], expected[:, j]) or np.array_equal(got[:, j], 1 - expected[:, j]), j
  assert np.all(got.sum(0) == 20)  # the median splits the training set in half


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize('method', ['lsh', 'spectral', 'bow'])
def test_fitted_baselines_run_through_the_loop_and_beat_chance(method, tmp_path):
  config = hashing_config(f'method={method},tiny')
  results = train.train_and_evaluate(config, str(tmp_path))
  # 4 balanced classes: a random hasher scores about 0.25.
  assert results['test/precision@10'] > 0.35, results
  assert results['bits'] == (300 if method == 'bow' else 16)
  # The loop's jitted encoder equals the host NumPy one of `baselines.fit`.
  from dtr.data import load_corpus
  corpus = load_corpus(config.data)
  hasher = baselines.fit(method, corpus.splits['train'], config.model.bits, config.seed)
  saved = np.load(tmp_path / 'codes' / 'test_codes.npy')
  np.testing.assert_array_equal(retrieval.pack_bits(hasher.encode(corpus.splits['test'])), saved)
  if method == 'lsh':  # dtr.encode reloads a fitted baseline like a trained model
    from dtr import encode
    codes = encode.encode_tfidf(encode.load_model(str(tmp_path)), corpus.splits['test'].tfidf)
    np.testing.assert_array_equal(retrieval.pack_bits(codes), saved)


@pytest.mark.parametrize('arg', ['method=nash', 'method=bmsh', 'method=binary_ae', 'method=dvq'])
def test_learned_baselines_train_and_their_loss_falls(arg, tmp_path):
  config = hashing_config(f'{arg},tiny')
  config.num_epochs = 4
  results = train.train_and_evaluate(config, str(tmp_path))
  losses = results['train_loss_history']
  assert len(losses) == 4 and np.all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 5, losses
  assert results['distinct_train_codes'] > 4, results
  if config.model.name == 'dvq':  # params include the EMA code book: dtr.encode reproduces the codes
    from dtr import encode
    from dtr.data import load_corpus
    codes = encode.encode_tfidf(encode.load_model(str(tmp_path)), load_corpus(config.data).splits['test'].tfidf)
    np.testing.assert_array_equal(retrieval.pack_bits(codes), np.load(tmp_path / 'codes' / 'test_codes.npy'))


def test_dvq_loss_codebook_and_binary_ae_mse_variants_take_a_step():
  for arg, field, value in [('method=dvq', 'codebook_update', 'loss'),
                            ('method=binary_ae', 'reconstruction', 'mse')]:
    config = hashing_config(f'{arg},tiny')
    config.model[field] = value
    method = methods.get_method(config.model, vocab_size=30)
    rows = sp.random(8, 30, density=0.2, format='csr', random_state=0, dtype=np.float32)
    from dtr.data import flat_rows
    ids, vals, seg = flat_rows(rows, np.arange(8)[None])
    batch = {'ids': ids, 'vals': vals, 'seg': seg, 'mask': np.ones((1, 8), np.float32)}
    state = method.init(jax.random.key(0), batch)
    step = jax.jit(method.train_step)
    losses = []
    for t in range(20):
      state, metrics = step(state, batch, jax.random.key(t))
      losses.append(float(metrics['reconstruction']))  # (DVQ's commitment term may grow meanwhile)
    assert losses[-1] < losses[0], (arg, losses)
    if value == 'loss':  # the code book learns by gradient
      assert 'ema' not in state


def test_configs_load_and_reject_unknown_methods():
  for method in ('bow', 'lsh', 'spectral', 'nash', 'bmsh', 'dvq', 'binary_ae'):
    for arg in (f'method={method}', f'method={method},tiny', f'method={method},dataset=reuters,bits=128'):
      config = hashing_config(arg)
      methods.get_method(config.model, vocab_size=1000)  # validates
  with pytest.raises(ValueError, match='Unknown hashing method'):
    hashing_config('method=vdsh')
  with pytest.raises(ValueError, match='codebook_update'):
    config = hashing_config('method=dvq')
    config.model.codebook_update = 'kmeans'
    methods.get_method(config.model, vocab_size=10)


def test_leaderboard_reuses_cached_cells_and_writes_the_table(tmp_path):
  bits_list = [16, 32]
  for method, bits, seed, p, distinct in [('lsh', 16, 0, 0.10, 900), ('lsh', 16, 1, 0.20, 950),
                                          ('lsh', 32, 0, 0.30, 1000), ('lsh', 32, 1, 0.30, 1000),
                                          ('bow', 16, 0, 0.50, 1200)]:
    workdir = leaderboard.cell_workdir(str(tmp_path), method, 'ng20', bits, seed)
    os.makedirs(workdir)
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump({'test_precision@100': p, 'distinct_train_codes': distinct,
                 'bits': 10000 if method == 'bow' else bits}, f)
  cells = leaderboard.run(['lsh', 'bow'], ['ng20'], bits_list, seeds=2, cache_dir=str(tmp_path))
  text = leaderboard.table(cells, ['lsh', 'bow'], ['ng20'], bits_list, seeds=2)
  assert '| method | ng20 16 | ng20 32 | ng20 avg |' in text
  assert '| lsh | 15.00 ± 7.07 | 30.00 ± 0.00 | 22.50 |' in text
  assert '| bow | 50.00 (m = 10000) |  |  |' in text
  assert '| lsh | 925 | 1000 |' in text
  capped = leaderboard.run(['lsh'], ['ng20'], bits_list, seeds=2, cache_dir=str(tmp_path),
                           seeds_per_method={'lsh': 1})
  assert [len(runs) for runs in capped.values()] == [1, 1]
  assert '| lsh | 10.00 (1 run) | 30.00 (1 run) | 20.00 |' in leaderboard.table(
      capped, ['lsh'], ['ng20'], bits_list, seeds=2)
  out = tmp_path / 'board.md'
  leaderboard.write(str(out), 'python -m dtr.bench hashing --x', text)
  assert out.read_text().startswith('# Document hashing leaderboard\n\nCommand: `python -m dtr.bench hashing --x`')
