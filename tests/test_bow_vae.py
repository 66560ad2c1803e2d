"""The bag-of-words VAE (Krishnan et al. 2018): SVI refinement against a float64 NumPy Adam, the
stop-gradients of the finopt step, the likelihood / KL / perplexity against hand values, the
importance-sampled bound, the decoder Jacobian against finite differences, every training regime end to end,
and the bad inputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from dtr.data import flat_rows
from dtr.evaluate import jacobian
from dtr.latent import gaussian
from dtr.methods import bow_vae
from dtr.methods.base import DataInfo
from dtr.nn import bow_decoder


def _counts(num_docs=8, vocab=12, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.poisson(0.8, size=(num_docs, vocab)).astype(np.float32)
  x[:, 0] += 1  # no empty document
  return sp.csr_matrix(x)


def _bow_batch(counts_csr, rows_GxN):
  """The 'bow' layout: TF-IDF-like 'vals' and the term counts at the same flat positions."""
  tfidf = counts_csr.copy()
  tfidf.data = np.log1p(tfidf.data)
  ids, vals, seg = flat_rows(tfidf, rows_GxN)
  count_ids, counts, _ = flat_rows(counts_csr, rows_GxN)
  np.testing.assert_array_equal(ids, count_ids)
  return {'ids': ids, 'vals': vals, 'seg': seg, 'counts': counts,
          'mask': np.ones(np.shape(rows_GxN), np.float32)}


def _config(**overrides):
  mc = bow_vae.default_model_config()
  mc.update(latent_dim=3, encoder_hidden=(8,), decoder_hidden=(8,), svi_steps=4, eval_svi_steps=4,
            eval_is_samples=4, learning_rate=3e-2)
  mc.update(**overrides)
  return mc


def _method(vocab=12, train_size=0, **overrides):
  return bow_vae.BowVAE(_config(**overrides), vocab, DataInfo(vocab_size=vocab, train_size=train_size))


def _init(method, batch, seed=0):
  return jax.jit(method.init)(jax.random.key(seed), batch)


@functools.lru_cache(maxsize=None)
def _tiny_state():
  """One initial state of the `_config()` architecture on V = 12, shared by the tests that train or score it
  (parameters and Adam state depend on the architecture only, not on the regime or the batch size)."""
  return _init(_method(), _bow_batch(_counts(8, 12), np.arange(8)[None]))


def _random_decoder(latent_dim, vocab, hidden=(), scale=0.5, seed=0):
  """SoftmaxDecoder parameters drawn by hand (float64), with at most one hidden layer."""
  rng = np.random.default_rng(seed)
  dense = lambda i, o: {'kernel': rng.uniform(-scale, scale, (i, o)), 'bias': rng.uniform(-scale, scale, o)}
  widths = (latent_dim, *hidden)
  return {**({'Dense_0': dense(latent_dim, hidden[0])} if hidden else {}), 'logits': dense(widths[-1], vocab)}


# ------------------------------------------------------------------------------------------------ batches
def test_counts_and_encoder_inputs_follow_the_flat_layout():
  csr = _counts(8, 12)
  batch = _bow_batch(csr, np.arange(8).reshape(2, 4))  # two groups (devices)
  x = csr.toarray()
  counts = _method()
  np.testing.assert_array_equal(counts.counts_BxV(batch), x)
  normalised = bow_decoder.dense_rows(counts.encoder_input(batch), 12)
  np.testing.assert_allclose(normalised, x / x.sum(1, keepdims=True), rtol=1e-6)
  tfidf = _method(input='tfidf')
  np.testing.assert_allclose(bow_decoder.dense_rows(tfidf.encoder_input(batch), 12), np.log1p(x), rtol=1e-6)


# ------------------------------------------------------------------------------------------------ hand values
_HAND_COUNTS = np.array([[1, 0, 2, 0], [0, 1, 1, 4], [3, 0, 0, 0]], np.float64)


@functools.lru_cache(maxsize=None)
def _hand_model():
  """Linear networks on V = 4, d = 2 (one method, one compiled `score` for every hand-set case)."""
  method = _method(vocab=4, latent_dim=2, encoder_hidden=(), decoder_hidden=(), eval_svi_steps=5,
                   eval_is_samples=3)
  return method, jax.jit(method.score), _bow_batch(sp.csr_matrix(_HAND_COUNTS.astype(np.float32)),
                                                   np.arange(3)[None])


def _hand_set(p_V, mu_D, logvar_D):
  """Posterior N(mu, exp(logvar)) for every document (encoder biases), softmax p whatever z (decoder bias)."""
  vocab, d = len(p_V), len(mu_D)
  head = lambda bias: {'kernel': jnp.zeros((vocab, d)), 'bias': jnp.asarray(bias, jnp.float32)}
  return {'encoder': {'mu': head(mu_D), 'logvar': head(logvar_D)},
          'decoder': {'logits': {'kernel': jnp.zeros((d, vocab)),
                                 'bias': jnp.log(jnp.asarray(p_V, jnp.float32))}}}


def _perplexity(scores, key, level):
  nll, tokens = np.asarray(scores[key], np.float64), np.asarray(scores['tokens'], np.float64)
  return float(np.exp(np.mean(nll / tokens)) if level == 'document' else np.exp(nll.sum() / tokens.sum()))


def test_multinomial_log_likelihood_and_kl_match_hand_values():
  log_p = np.log(np.array([[0.5, 0.25, 0.25]]))
  ll = bow_vae.multinomial_log_likelihood(jnp.asarray(log_p), jnp.array([[2.0, 0.0, 1.0]]))
  np.testing.assert_allclose(ll, [2 * np.log(0.5) + np.log(0.25)], rtol=1e-6)
  _, score, batch = _hand_model()
  p = np.array([0.4, 0.3, 0.2, 0.1])
  mu, logvar = np.array([1.0, 0.0]), np.array([0.0, np.log(2.0)])
  scores = score(_hand_set(p, mu, logvar), batch, jax.random.key(3))
  kl = 0.5 * (1 + 1 - 1 - 0) + 0.5 * (2 + 0 - 1 - np.log(2))
  neg_log_lik = -(_HAND_COUNTS @ np.log(p))
  np.testing.assert_allclose(scores['nll'], neg_log_lik + kl, rtol=1e-6)
  np.testing.assert_allclose(scores['kl'], [kl] * 3, rtol=1e-6)
  np.testing.assert_array_equal(scores['tokens'], [3, 6, 3])
  # The decoder ignores z, so SVI only lowers the KL: neg_log_lik < nll_refined < nll.
  assert np.all(scores['nll_refined'] < scores['nll'] - 1e-3) and np.all(scores['nll_refined'] > neg_log_lik)


def test_perplexity_of_documents_with_known_probabilities():
  """q = the prior and a z-independent decoder: every bound is exact, SVI stays put, perplexities by hand."""
  method, score, batch = _hand_model()
  zeros = np.zeros(2)
  uniform = score(_hand_set(np.full(4, 0.25), zeros, zeros), batch, jax.random.key(0))
  for key in ('nll', 'nll_refined', 'nll_is'):
    np.testing.assert_allclose(uniform[key], _HAND_COUNTS.sum(1) * np.log(4), rtol=1e-6)
  assert _perplexity(uniform, 'nll', 'document') == pytest.approx(4.0, rel=1e-6)
  assert _perplexity(uniform, 'nll', 'corpus') == pytest.approx(4.0, rel=1e-6)

  p, x = np.array([0.4, 0.3, 0.2, 0.1]), _HAND_COUNTS
  scores = score(_hand_set(p, zeros, zeros), batch, jax.random.key(1))
  expected = {'document': np.exp(np.mean(-(x @ np.log(p)) / x.sum(1))),
              'corpus': np.exp(-(x @ np.log(p)).sum() / x.sum())}
  names = method.perplexities()
  assert names == {'perp_0': ('nll', 'document'), 'perp_f': ('nll_refined', 'document'),
                   'perp_is': ('nll_is', 'document'), 'perplexity': ('nll', 'corpus')}
  for key, level in names.values():
    assert _perplexity(scores, key, level) == pytest.approx(expected[level], rel=1e-5)


def test_without_test_time_svi_there_is_no_refined_perplexity():
  """eval_svi_steps = 0: perp_f is not declared and no nll_refined is scored (nothing was refined); the
  importance-sampled bound comes from q_phi itself. With q = the prior and a decoder that ignores z, every
  importance weight is p(x) exactly, so nll_is = -log p(x) for any sample."""
  method = _method(vocab=4, latent_dim=2, encoder_hidden=(), decoder_hidden=(), eval_svi_steps=0,
                   eval_is_samples=3)
  batch = _bow_batch(sp.csr_matrix(_HAND_COUNTS.astype(np.float32)), np.arange(3)[None])
  assert set(method.perplexities()) == {'perp_0', 'perp_is', 'perplexity'}
  p, zeros = np.array([0.4, 0.3, 0.2, 0.1]), np.zeros(2)
  scores = jax.jit(method.score)(_hand_set(p, zeros, zeros), batch, jax.random.key(3))
  assert set(scores) == {'nll', 'nll_is', 'tokens', 'kl'}
  neg_log_lik = -(_HAND_COUNTS @ np.log(p))
  np.testing.assert_allclose(scores['nll_is'], neg_log_lik, rtol=1e-6)
  np.testing.assert_allclose(scores['nll'], neg_log_lik, rtol=1e-6)


# ------------------------------------------------------------------------------------------------ refine
def _numpy_neg_elbo_grad(dec, x, mu, logvar, eps, hidden):
  """-ELBO of one sample per document and its gradient in (mu, logvar), float64, backpropagated by hand."""
  std = np.exp(0.5 * logvar)
  z = mu + std * eps
  if hidden:
    pre = z @ dec['Dense_0']['kernel'] + dec['Dense_0']['bias']
    h = np.tanh(pre)
  else:
    h = z
  logits = h @ dec['logits']['kernel'] + dec['logits']['bias']
  log_p = logits - logits.max(1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
  n = x.sum(1, keepdims=True)
  d_logits = x - n * np.exp(log_p)                       # d log p(x|z) / d logits
  d_h = d_logits @ dec['logits']['kernel'].T
  d_z = ((d_h * (1 - h**2)) @ dec['Dense_0']['kernel'].T) if hidden else d_h
  kl = 0.5 * np.sum(np.exp(logvar) + mu**2 - 1 - logvar, 1)
  value = kl - np.sum(x * log_p, 1)
  g_mu = -d_z + mu
  g_logvar = -d_z * 0.5 * std * eps + 0.5 * (np.exp(logvar) - 1)
  return value, g_mu, g_logvar


def _numpy_refine(dec, x, mu, logvar, noises, lr, beta1, beta2, keep, hidden):
  theta, m, v = [mu.copy(), logvar.copy()], [0 * mu, 0 * mu], [0 * mu, 0 * mu]
  best, best_val = [mu.copy(), logvar.copy()], np.full(len(x), np.inf)
  for t, eps in enumerate(noises[:-1], start=1):
    val, g_mu, g_lv = _numpy_neg_elbo_grad(dec, x, theta[0], theta[1], eps, hidden)
    better = val < best_val
    best = [np.where(better[:, None], p, b) for p, b in zip(theta, best)]
    best_val = np.minimum(val, best_val)
    for i, g in enumerate((g_mu, g_lv)):
      m[i] = beta1 * m[i] + (1 - beta1) * g
      v[i] = beta2 * v[i] + (1 - beta2) * g**2
      theta[i] = theta[i] - lr * (m[i] / (1 - beta1**t)) / (np.sqrt(v[i] / (1 - beta2**t)) + 1e-8)
  if keep == 'last':
    return theta
  final = _numpy_neg_elbo_grad(dec, x, theta[0], theta[1], noises[-1], hidden)[0]
  return [np.where((final < best_val)[:, None], p, b) for p, b in zip(theta, best)]


@pytest.mark.parametrize('hidden,beta1,keep', [((), 0.1, 'last'), ((5,), 0.9, 'last'), ((5,), 0.1, 'best')])
def test_refine_equals_explicit_adam_steps_in_numpy(hidden, beta1, keep):
  steps, lr, vocab = 7, 0.05, 12
  method = _method(vocab=vocab, decoder_hidden=hidden, decoder_activation='tanh', svi_beta1=beta1,
                   svi_return=keep)
  x = _counts(5, vocab, seed=1).toarray().astype(np.float64)
  rng = np.random.default_rng(3)
  mu0, logvar0 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)) * 0.3
  key = jax.random.key(4)
  p64 = {'decoder': _random_decoder(3, vocab, hidden, seed=2)}
  with jax.enable_x64(True):
    mu, logvar = method.refine(p64, jnp.asarray(x), jnp.asarray(mu0), jnp.asarray(logvar0), key, steps, lr)
    noises = [np.asarray(bow_vae.svi_noise(key, k, (5, 3), jnp.float64)) for k in range(steps + 1)]
    assert mu.dtype == jnp.float64
  expected = _numpy_refine(p64['decoder'], x, mu0, logvar0, noises, lr, beta1, 0.999, keep, bool(hidden))
  np.testing.assert_allclose(mu, expected[0], rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(logvar, expected[1], rtol=1e-9, atol=1e-12)
  assert not np.allclose(mu, mu0)
  if keep == 'best':  # zero steps return the amortised posterior itself
    with jax.enable_x64(True):
      same = method.refine(p64, jnp.asarray(x), jnp.asarray(mu0), jnp.asarray(logvar0), key, 0, lr)
    np.testing.assert_array_equal(same[0], mu0)


# ------------------------------------------------------------------------------------------------ finopt
def test_finopt_updates_q_then_p_and_stops_the_gradient_through_the_refined_posterior():
  method = _method(regime='finopt', svi_steps=3)
  batch = _bow_batch(_counts(6, 12), np.arange(6)[None])
  state = _tiny_state()
  beta = jnp.float32(1.0)
  step_rng, loss_rng = jax.random.key(9), jax.random.key(5)
  q_rng, p_rng = jax.random.split(step_rng)
  svi_rng, sample_rng = jax.random.split(loss_rng)

  @jax.jit
  def pieces(params, opt_state):
    q_params, q_opt, _ = method.q_step(params, opt_state, batch, q_rng, beta)    # (1)
    p_params, _, _ = method.p_step(q_params, q_opt, batch, p_rng, beta)          # (2) and (3)
    grads = jax.grad(lambda p: method.refined_loss(p, batch, loss_rng, beta)[0])(params)
    # The same loss with psi_K computed outside and held constant.
    x = method.counts_BxV(batch)
    mu0, logvar0 = method.posterior(params, batch)
    mu_f, logvar_f = method.refine(params, x, mu0, logvar0, svi_rng, 3, method.config.svi_lr)

    def loss_at_constants(decoder):
      log_lik, kl = method.elbo_terms({**params, 'decoder': decoder}, x, mu_f, logvar_f, sample_rng)
      return bow_decoder.masked_mean(kl - log_lik, batch)

    return q_params, p_params, grads, jax.grad(loss_at_constants)(params['decoder'])

  params = state['params']
  q_params, p_params, grads, expected = pieces(params, state['opt_state'])
  equal = lambda a, b: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
  # The q-step moves the encoder only; the p-step the decoder only.
  assert equal(q_params['decoder'], params['decoder'])
  assert not equal(q_params['encoder'], params['encoder'])
  assert equal(p_params['encoder'], q_params['encoder'])
  assert not equal(p_params['decoder'], q_params['decoder'])
  # The p-step objective sends no gradient into q through psi_K, and the decoder's is that at constant psi_K.
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads['encoder']))
  for got, want in zip(jax.tree.leaves(grads['decoder']), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads['decoder']))
  # train_step is the q-step, then the p-step on the updated encoder.
  new_state, _ = jax.jit(method.train_step)(state, batch, step_rng)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), new_state['params'],
               p_params)
  assert int(new_state['step']) == 1


# ------------------------------------------------------------------------------------------------ IS bound
def test_importance_sampled_bound_is_above_the_elbo_and_equals_it_with_one_sample_from_q():
  method = _method()
  batch = _bow_batch(_counts(5, 12, seed=2), np.arange(5)[None])
  params = jax.tree.map(lambda a: 5 * a, _tiny_state()['params'])  # U(-0.5, 0.5): a less trivial posterior
  samples = 1000

  @jax.jit
  def weights_and_references(params, key):
    x = method.counts_BxV(batch)
    mu, logvar = method.posterior(params, batch)
    log_w = method.importance_log_weights(params, x, mu, logvar, key, samples)
    # Sample s uses key s of split(key, S): the same z_s as the ELBO's reparameterised sample with that key.
    keys = jax.random.split(key, samples)
    log_lik_SxB, kl_SxB = jax.vmap(lambda k: method.elbo_terms(params, x, mu, logvar, k))(keys)
    z_SxBxD = jax.vmap(lambda k: gaussian.sample(mu, logvar, k))(keys)
    by_hand = log_lik_SxB + gaussian.log_standard_normal(z_SxBxD) - gaussian.log_density(z_SxBxD, mu, logvar)
    # S = 1 with q = the sampling distribution (here q = the prior: log p(z) - log q(z) = 0 = KL).
    zeros = jnp.zeros_like(mu)
    one = method.importance_log_weights(params, x, zeros, zeros, key, 1)
    log_lik_prior, kl_prior = method.elbo_terms(params, x, zeros, zeros, keys[0])
    return log_w, by_hand, jnp.mean(log_lik_SxB, 0) - kl_SxB[0], one, log_lik_prior - kl_prior

  log_w, by_hand, elbo, one, elbo_prior = weights_and_references(params, jax.random.key(1))
  np.testing.assert_allclose(log_w, by_hand, rtol=1e-5, atol=1e-4)
  bound = np.asarray(bow_vae.importance_bound(log_w))
  assert np.all(bound >= np.asarray(jnp.mean(log_w, 0)) - 1e-4)  # log-mean-exp >= mean, sample by sample
  # In expectation E_q log w = E_q log p(x|z) - KL: the ELBO with the analytic KL, below the IS bound.
  np.testing.assert_allclose(np.mean(log_w, 0), elbo, atol=0.15)
  assert np.all(bound >= elbo)
  np.testing.assert_allclose(bow_vae.importance_bound(one), elbo_prior, rtol=1e-6)


# ------------------------------------------------------------------------------------------------ Jacobian
def test_decoder_jacobian_matches_finite_differences():
  vocab, d = 6, 3
  method = _method(vocab=vocab, latent_dim=d, decoder_hidden=(4,), decoder_activation='tanh')
  p64 = {'decoder': _random_decoder(d, vocab, (4,), scale=0.8, seed=1)}
  # The hand-drawn parameters have the tree of SoftmaxDecoder's own.
  assert (jax.tree.structure(_random_decoder(3, 12, (8,)))
          == jax.tree.structure(jax.tree.map(np.asarray, _tiny_state()['params']['decoder'])))
  zs = np.random.default_rng(1).normal(size=(5, d))
  h = 1e-6
  with jax.enable_x64(True):
    log_probs = jax.jit(method.decode_log_probs)
    finite_difference = np.stack([(log_probs(p64, zs + h * e) - log_probs(p64, zs - h * e)) / (2 * h)
                                  for e in np.eye(d)], axis=-1)  # [S, V, d]
    j0 = jacobian.jacobian(method.decode_log_probs, p64, jnp.asarray(zs[0]))
    assert j0.shape == (vocab, d) and j0.dtype == jnp.float64
    np.testing.assert_allclose(j0, finite_difference[0], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(jacobian.contextual_embeddings(method.decode_log_probs, p64, zs[0]), j0)
    expected = jacobian.expected_jacobian(method.decode_log_probs, p64, jnp.asarray(zs), chunk_size=2)
    np.testing.assert_allclose(expected, finite_difference.mean(0), rtol=1e-6, atol=1e-9)
    # sum_v p_v d log p_v / dz = d (sum_v p_v) / dz = 0.
    np.testing.assert_allclose(np.exp(log_probs(p64, zs[0])) @ np.asarray(j0), 0, atol=1e-12)
    svals = np.linalg.svd(np.asarray(expected), compute_uv=False)
    np.testing.assert_allclose(jacobian.log_singular_values(expected), np.sort(np.log(svals))[::-1],
                               rtol=1e-9)
  samples = jacobian.prior_samples(jax.random.key(3), 4, d)
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p64)
  assert jacobian.expected_jacobian(method.decode_log_probs, params, samples).shape == (vocab, d)


def test_nearest_words_by_cosine_of_jacobian_rows():
  j = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])
  vocab = ['a', 'b', 'c', 'd', 'e']
  out = jacobian.nearest_words(j, vocab, ['a', 'c'], k=3)
  assert [w for w, _ in out['a']] == ['b', 'c', 'e']  # c and e tie at cosine 0: the smaller index first
  assert out['a'][0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1))
  assert [w for w, _ in out['c']] == ['b', 'a', 'd']
  with pytest.raises(ValueError, match='not in the vocabulary'):
    jacobian.nearest_words(j, vocab, ['zebra'], k=2)


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize('regime', bow_vae.REGIMES)
def test_every_regime_trains_and_switches_at_its_epoch(regime):
  num_docs, vocab, steps_per_epoch = 8, 12, 5
  method = _method(vocab=vocab, train_size=steps_per_epoch * num_docs, regime=regime, switch_epoch=1)
  batch = _bow_batch(_counts(num_docs, vocab, seed=4), np.arange(num_docs).reshape(2, 4))
  state = _tiny_state()
  assert set(state) == {'params', 'opt_state', 'step'}
  step = jax.jit(method.train_step)
  losses, flags = [], []
  for t in range(20):
    state, metrics = step(state, batch, jax.random.fold_in(jax.random.key(1), t))
    losses.append(float(metrics['loss']))
    flags.append(float(metrics['finopt']))
  assert np.all(np.isfinite(losses)) and np.mean(losses[-5:]) < np.mean(losses[:5])
  expected_flags = {'none': [0] * 20, 'finopt': [1] * 20, 'none_finopt': [0] * 5 + [1] * 15,
                    'finopt_none': [1] * 5 + [0] * 15}[regime]
  assert flags == expected_flags and int(state['step']) == 20
  assert {'loss', 'loss_refined', 'reconstruction', 'kl', 'kl_weight'} <= set(metrics)


def test_svi_step_size_and_kl_annealing_are_population_values():
  """Beside the learning rate, the training SVI step size (when training refines) and the KL annealing's
  start and length (when annealed) are population hyperparameters kept in the state: a member given other
  values steps as a single run configured with them, and differently from a member with the config's."""
  assert set(_method().default_hparams()) == {'learning_rate', 'svi_lr', 'svi_steps'}  # finopt, no annealing
  assert set(_method(regime='none').default_hparams()) == {'learning_rate'}
  values = {'svi_lr': 0.2, 'kl_start': 0.3, 'anneal_steps': 4}
  for t in (0, 3, 12):  # a member's length (float32) weighs as the config's int; a member's 0 is no annealing
    assert float(bow_vae.kl_weight(t, 0.3, jnp.float32(10))) == float(bow_vae.kl_weight(t, 0.3, 10))
    assert float(bow_vae.kl_weight(t, 0.3, jnp.float32(0))) == 1.0
  configured = _method(regime='finopt', **values)  # a single run with these values
  method = _method(regime='finopt', anneal_steps=10)
  defaults = method.default_hparams()
  assert set(defaults) == {'learning_rate', 'svi_steps', *values}
  batch = _bow_batch(_counts(6, 12), np.arange(6)[None])
  single_step, step = jax.jit(configured.train_step), jax.jit(method.train_step)
  single = _tiny_state()
  member = jax.jit(method.init)(jax.random.key(0), batch, {**defaults, **values})
  default = jax.jit(method.init)(jax.random.key(0), batch, defaults)
  jax.tree.map(np.testing.assert_array_equal, single['params'], member['params'])
  for i in range(2):
    rng = jax.random.key(i)
    single, single_metrics = single_step(single, batch, rng)
    member, member_metrics = step(member, batch, rng)
    default, default_metrics = step(default, batch, rng)
    for key in ('loss', 'loss_refined', 'kl_weight'):
      assert float(member_metrics[key]) == pytest.approx(float(single_metrics[key]), rel=1e-5)
    for key in ('loss_refined', 'kl_weight'):  # the refined loss reads svi_lr, the KL weight its start and length
      assert abs(float(default_metrics[key]) - float(member_metrics[key])) > 1e-3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), single['params'],
               member['params'])


@pytest.mark.parametrize('keep', ['last', 'best'])
def test_the_training_svi_step_count_is_a_population_value_also_under_the_member_axis(keep):
  """The training refinement's step count (when training refines) is a member's: members at 1 and 4 steps in
  one vmapped program (its loop runs to 4, the first member's iterates frozen after 1) step as single runs
  configured with 1 and 4, and differently from each other."""
  method = _method(regime='finopt', svi_return=keep, svi_lr=0.3)
  defaults = method.default_hparams()
  assert float(defaults['svi_steps']) == method.config.svi_steps
  batch = _bow_batch(_counts(6, 12), np.arange(6)[None])
  counts = (1, 4)
  members = [jax.jit(method.init)(jax.random.key(0), batch, {**defaults, 'svi_steps': k}) for k in counts]
  members = jax.tree.map(lambda *x: jnp.stack(x), *members)
  member_step = jax.jit(jax.vmap(method.train_step, in_axes=(0, None, None)))
  for i in range(2):
    members, member_metrics = member_step(members, batch, jax.random.key(i))
  for j, k in enumerate(counts):
    configured = _method(regime='finopt', svi_return=keep, svi_lr=0.3, svi_steps=k)
    single, single_step = jax.jit(configured.init)(jax.random.key(0), batch), jax.jit(configured.train_step)
    for i in range(2):
      single, single_metrics = single_step(single, batch, jax.random.key(i))
    assert float(member_metrics['loss_refined'][j]) == pytest.approx(float(single_metrics['loss_refined']),
                                                                     rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[j], b, rtol=1e-5, atol=1e-6), members['params'],
                 single['params'])
  assert abs(float(member_metrics['loss_refined'][0]) - float(member_metrics['loss_refined'][1])) > 5e-3


@pytest.mark.parametrize('overrides', [
    {'input': 'tfidf', 'svi_return': 'best'},
    # NVDM-shaped: tanh encoder, linear softmax decoder
    {'latent_dim': 4, 'encoder_hidden': (6,), 'encoder_activation': 'tanh', 'decoder_hidden': ()},
])
def test_encode_features_and_score_shapes(overrides):
  """encode / features / score do not depend on the regime: one model per architecture."""
  num_docs, vocab = 8, 12
  method = _method(vocab=vocab, **overrides)
  batch = _bow_batch(_counts(num_docs, vocab, seed=4), np.arange(num_docs).reshape(2, 4))
  batch['mask'][1, 3] = 0.0  # an evaluation batch's padding slot: scored like any document
  params = (_tiny_state() if 'latent_dim' not in overrides else _init(method, batch))['params']
  d = method.code_length
  declared = (method.emits, method.reads, method.batch_fields, method.fitted)
  assert declared == ('dense', 'bow', ('counts',), False)
  codes, features, sampled, scores = jax.jit(lambda p, b, k: (
      method.encode(p, b), method.features(p, b), method.encode(p, b, k), method.score(p, b, k)))(
          params, batch, jax.random.key(3))
  assert codes.shape == sampled.shape == (num_docs, d) and codes.dtype == jnp.float32
  np.testing.assert_allclose(features, codes, rtol=1e-6)
  assert not np.allclose(sampled, codes)
  assert set(scores) == {'nll', 'nll_refined', 'nll_is', 'tokens', 'kl'}
  for v in scores.values():
    assert v.shape == (num_docs,) and np.all(np.isfinite(v))
  np.testing.assert_array_equal(scores['tokens'], _counts(num_docs, vocab, seed=4).toarray().sum(1))


def test_default_configs_build():
  krishnan, nvdm = bow_vae.default_model_config(), bow_vae.default_model_config('nvdm')
  assert krishnan.name == nvdm.name == 'bow_vae'
  assert (krishnan.latent_dim, tuple(krishnan.encoder_hidden), tuple(krishnan.decoder_hidden)) == (
      100, (400, 400), (400, 400))
  assert (krishnan.svi_steps, krishnan.eval_svi_steps, krishnan.eval_svi_lr, krishnan.svi_beta1) == (
      100, 100, 8e-3, 0.1)
  nvdm_shape = (nvdm.latent_dim, tuple(nvdm.encoder_hidden), nvdm.encoder_activation,
                tuple(nvdm.decoder_hidden))
  assert nvdm_shape == (50, (500,), 'tanh', ())
  for mc in (krishnan, nvdm):
    assert bow_vae.BowVAE(mc, 30).code_length == mc.latent_dim
  with pytest.raises(ValueError, match='variant'):
    bow_vae.default_model_config('lda')


# ------------------------------------------------------------------------------------------------ bad inputs
def test_check_counts_rejects_negative_non_integer_and_non_finite_counts():
  bow_vae.check_counts(sp.csr_matrix(np.array([[0, 2], [1, 0]], np.int32)))
  bow_vae.check_counts(sp.csr_matrix(np.array([[0.0, 2.0], [1.0, 0.0]], np.float32)))
  with pytest.raises(ValueError, match='negative'):
    bow_vae.check_counts(sp.csr_matrix(np.array([[0, -2], [1, 0]], np.int32)))
  with pytest.raises(ValueError, match='non-integer'):
    bow_vae.check_counts(sp.csr_matrix(np.array([[0.5, 2.0]], np.float32)))
  with pytest.raises(ValueError, match='non-finite'):
    bow_vae.check_counts(np.array([[np.nan, 1.0]]))
  counts = _counts(4, 6)
  tfidf = counts.copy()
  tfidf.data = np.log1p(tfidf.data)
  bow_vae.check_counts(counts, tfidf)
  tfidf.data[0] = 0.0
  tfidf.eliminate_zeros()  # a TF-IDF that dropped an entry the counts keep
  with pytest.raises(ValueError, match='different entries'):
    bow_vae.check_counts(counts, tfidf)


@pytest.mark.parametrize('field,value', [
    ('svi_steps', -1), ('eval_svi_steps', -3), ('svi_lr', 0.0), ('eval_svi_lr', -1e-3),
    ('learning_rate', 0.0),
    ('latent_dim', 0), ('regime', 'sometimes'), ('input', 'binary'), ('svi_return', 'median'),
    ('eval_is_samples', 0), ('encoder_hidden', (4, 0)), ('svi_beta1', 1.0),
])
def test_bad_model_fields_are_named(field, value):
  with pytest.raises(ValueError, match=f'model.{field}'):
    _method(**{field: value})


def test_bad_vocabulary_train_size_hparams_and_svi_arguments():
  with pytest.raises(ValueError, match='vocabulary'):
    _method(vocab=0)
  with pytest.raises(ValueError, match='train_size'):
    _method(regime='none_finopt')
  method = _method()
  batch = _bow_batch(_counts(2, 12), np.arange(2)[None])
  with pytest.raises(ValueError, match='population'):
    method.init(jax.random.key(0), batch, {'kl_weight': jnp.ones(())})
  zeros = jnp.zeros((2, 3))
  for steps, lr in ((-1, 0.1), (2, 0.0)):
    with pytest.raises(ValueError, match='SVI'):
      bow_vae.adam_svi(lambda m, lv, e, x: jnp.sum(m), zeros, zeros, zeros, jax.random.key(0), steps, lr)
