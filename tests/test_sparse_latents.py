"""Binary concrete, Beta KL, spike-and-slab and IMQ-MMD against closed forms, scipy and NumPy twins;
the sparse sentence VAEs (HSVAE, MAT-VAE, GaussVAE) train, encode and reject bad settings."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from dtr.latent import bernoulli, mmd, spike_slab
from dtr.methods import sparse_vae
from dtr.methods.base import DataInfo


# ------------------------------------------------------------------------------ straight-through layers
def test_straight_through_passes_the_probability_gradient_exactly():
  probs = jnp.array([0.1, 0.5, 0.8, 0.97])
  weights = jnp.array([1.0, -2.0, 3.0, 0.5])
  hard = jnp.array([0.0, 1.0, 1.0, 0.0])
  value, grad = jax.value_and_grad(lambda p: jnp.sum(weights * bernoulli.straight_through(hard, p)))(probs)
  assert value == pytest.approx(float(jnp.sum(weights * hard)))
  np.testing.assert_array_equal(grad, weights)  # d z / d p = 1: the identity, exactly


def test_sample_straight_through_gradient_is_the_sigmoid_derivative():
  logits = jnp.linspace(-3.0, 3.0, 7)
  weights = jnp.arange(1.0, 8.0)
  f = lambda l: jnp.sum(weights * bernoulli.sample_straight_through(l, jax.random.key(0)))
  p = jax.nn.sigmoid(logits)
  np.testing.assert_allclose(jax.grad(f)(logits), weights * p * (1 - p), rtol=1e-6)
  z = bernoulli.sample_straight_through(logits, jax.random.key(0))
  assert set(np.unique(z)) <= {0.0, 1.0}


def test_binary_concrete_closed_form_and_hard_gradient():
  logits, noise, tau = jnp.array([-1.0, 0.3, 2.0]), jnp.array([0.5, -2.0, 0.1]), 0.7
  soft = 1 / (1 + np.exp(-(np.asarray(logits) + np.asarray(noise)) / tau))
  np.testing.assert_allclose(bernoulli.binary_concrete(logits, noise, tau), soft, rtol=1e-6)
  key = jax.random.key(3)
  s = bernoulli.sample_binary_concrete(logits, key, tau)
  hard = bernoulli.sample_hard_concrete(logits, key, tau)
  np.testing.assert_array_equal(hard, (np.asarray(s) > 0.5).astype(np.float32))
  grad = jax.grad(lambda l: jnp.sum(bernoulli.sample_hard_concrete(l, key, tau)))(logits)
  np.testing.assert_allclose(grad, np.asarray(s) * (1 - np.asarray(s)) / tau, rtol=1e-5)


def test_hard_concrete_is_an_exact_bernoulli_and_noise_is_logistic():
  logits = jnp.full((200_000,), 0.8)
  for tau in (0.3, 2.0):  # the temperature never changes the hard sample's law
    frequency = float(jnp.mean(bernoulli.sample_hard_concrete(logits, jax.random.key(1), tau)))
    assert frequency == pytest.approx(1 / (1 + np.exp(-0.8)), abs=4e-3)
  noise = np.asarray(bernoulli.logistic_noise(jax.random.key(2), (20_000,)))
  assert np.isfinite(noise).all()
  assert stats.kstest(noise, stats.logistic.cdf).pvalue > 1e-3



def test_hard_concrete_takes_the_same_values_at_every_temperature():
  """The hard sample is 1[l + L > 0] (one noise draw L), bit for bit at every tau, also where sigma((l + L) / tau)
  rounds to 1/2 in float32, and no rounding of hard - soft moves its value; its gradient is the soft one's."""
  key = jax.random.key(5)
  noise = bernoulli.logistic_noise(key, (4096,))
  logits = jax.random.normal(jax.random.key(6), (4096,)) * 3
  logits = logits.at[:3].set(-noise[:3] + jnp.array([3e-8, -3e-8, 1e-7]) * jnp.abs(noise[:3]))  # l + L ~ 0
  expected = np.asarray(logits + noise > 0, np.float32)
  assert expected[:3].tolist() == [float(v) for v in np.asarray(logits[:3] + noise[:3]) > 0]
  for tau in (0.05, 0.5, 1.0, 3.0):
    np.testing.assert_array_equal(bernoulli.sample_hard_concrete(logits, key, tau), expected)
    soft = np.asarray(bernoulli.binary_concrete(logits[3:], noise[3:], tau), np.float64)
    np.testing.assert_allclose(jax.grad(lambda l: jnp.sum(bernoulli.sample_hard_concrete(l, key, tau)[3:]))(logits)[3:],
                               soft * (1 - soft) / tau, rtol=1e-5, atol=1e-30)

# ----------------------------------------------------------------------------------- Beta, spike-and-slab
@pytest.mark.parametrize('a1,b1,a2,b2', [(2.0, 3.0, 30.0, 10.0), (0.7, 0.4, 1.0, 1.0), (5.0, 1.5, 2.0, 8.0)])
def test_kl_beta_matches_numerical_integral(a1, b1, a2, b2):
  q, p = stats.beta(a1, b1), stats.beta(a2, b2)
  expected, _ = integrate.quad(lambda g: q.pdf(g) * (q.logpdf(g) - p.logpdf(g)), 0, 1, limit=200)
  assert float(spike_slab.kl_beta(a1, b1, a2, b2)) == pytest.approx(expected, rel=1e-4, abs=1e-5)
  assert float(spike_slab.beta_mean(a1, b1)) == pytest.approx(q.mean(), rel=1e-6)


def test_beta_samples_are_reparameterised_in_alpha_and_beta():
  a, b = 2.0, 5.0
  n = 20_000

  def mean_sample(params):
    return jnp.mean(spike_slab.sample_beta(jax.random.key(0), jnp.full(n, params[0]), jnp.full(n, params[1])))

  grad = jax.jit(jax.grad(mean_sample))(jnp.array([a, b]))
  # d E[gamma] / d(a, b) = (b, -a) / (a + b)^2
  np.testing.assert_allclose(grad, np.array([b, -a]) / (a + b) ** 2, rtol=0.05)


def test_spike_slab_log_density_matches_scipy():
  rng = np.random.default_rng(0)
  z, gamma = rng.normal(size=50), rng.uniform(0.05, 0.95, 50)
  mu, sigma = rng.normal(size=50), rng.uniform(0.3, 2.0, 50)
  expected = np.log(gamma * stats.norm.pdf(z, 0, 0.05) + (1 - gamma) * stats.norm.pdf(z, mu, sigma))
  got = spike_slab.log_density(*(jnp.asarray(v, jnp.float32) for v in (z, gamma, mu, sigma)), eps=0.0)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_spike_slab_samples_have_the_mixture_moments():
  n, gamma, mu, sigma = 200_000, 0.3, 1.5, 0.5
  z, c = spike_slab.sample(jax.random.key(5), jnp.full(n, gamma), jnp.full(n, mu), jnp.full(n, sigma), 0.5)
  assert float(jnp.mean(c)) == pytest.approx(gamma, abs=5e-3)
  assert float(jnp.mean(z)) == pytest.approx(float(spike_slab.mean(gamma, mu)), abs=1e-2)
  variance = gamma * 0.05**2 + (1 - gamma) * (sigma**2 + mu**2) - ((1 - gamma) * mu) ** 2
  assert float(jnp.var(z)) == pytest.approx(variance, rel=2e-2)
  prior = spike_slab.sample_prior(jax.random.key(6), (n,), 0.8)
  expected = 0.8 + 0.2 * (2 * stats.norm.cdf(0.2) - 1)  # the whole spike, the slab's mass in (-0.2, 0.2)
  assert float(jnp.mean(jnp.abs(prior) < 0.2)) == pytest.approx(expected, abs=5e-3)


@pytest.mark.parametrize('gamma,mu,sigma', [(0.25, 0.8, 0.6), (0.9, -1.5, 1.7), (0.02, 0.1, 0.2)])
def test_joint_kl_is_the_slab_kl_weighted_and_bounds_the_mixture_kl(gamma, mu, sigma):
  slab_q, slab_p, spike = stats.norm(mu, sigma), stats.norm(0, 1), stats.norm(0, 0.05)

  def integral(f):  # over the slab's and the spike's mass, in pieces (the spike is narrow)
    points = sorted({-0.5, 0.5, mu - 6 * sigma, mu + 6 * sigma})
    return sum(integrate.quad(f, a, b, limit=400, points=[0.0] if a < 0 < b else None)[0]
               for a, b in zip([-30.0] + points, points + [30.0]))

  slab_kl = integral(lambda z: slab_q.pdf(z) * (slab_q.logpdf(z) - slab_p.logpdf(z)))
  got = float(spike_slab.kl_joint(jnp.float32(gamma), jnp.float32(mu), jnp.float32(sigma)))
  assert got == pytest.approx((1 - gamma) * slab_kl, rel=1e-4)
  q = lambda z: gamma * spike.pdf(z) + (1 - gamma) * slab_q.pdf(z)
  p = lambda z: gamma * spike.pdf(z) + (1 - gamma) * slab_p.pdf(z)
  mixture_kl = integral(lambda z: q(z) * (np.log(q(z)) - np.log(p(z))) if q(z) > 0 else 0.0)
  assert 0.0 <= mixture_kl < got


def test_hsvae_joint_kl_of_z_is_analytic_in_the_drawn_gamma():
  method = sparse_vae.HSVAE(tiny('hsvae', z_kl='joint'), 0, INFO)
  batch = make_batch()
  params = method.init(jax.random.key(0), batch)['params']
  heads = method._heads(params, batch)
  z, parts = method._latent(heads, jax.random.key(3), 'sample')
  mu, sigma = (np.asarray(h, np.float64) for h in method._gaussian(heads))
  gamma = np.asarray(parts['gamma'], np.float64)
  expected = np.sum((1 - gamma) * (0.5 * (mu**2 + sigma**2 - 1) - np.log(sigma)), axis=-1)
  np.testing.assert_allclose(parts['kl_z'], expected, rtol=1e-5, atol=1e-6)
  sampled = sparse_vae.HSVAE(tiny('hsvae'), 0, INFO)._latent(heads, jax.random.key(3), 'sample')
  np.testing.assert_array_equal(sampled[0], z)  # the same draw; only the KL estimate differs
  assert not np.allclose(sampled[1]['kl_z'], parts['kl_z'])


# ----------------------------------------------------------------------------------------------------- MMD
def numpy_mmd(x, y, wx, wy, scales=mmd.IMQ_SCALES):
  def k(a, b):
    return sum(np.sum(2 * c / (2 * c + (a - b) ** 2)) for c in scales)
  n, m = len(x), len(y)
  num = den = 0.0
  for i in range(n):
    for j in range(n):
      if i != j:
        num, den = num + wx[i] * wx[j] * k(x[i], x[j]), den + wx[i] * wx[j]
  xx = num / den
  num = den = 0.0
  for i in range(m):
    for j in range(m):
      if i != j:
        num, den = num + wy[i] * wy[j] * k(y[i], y[j]), den + wy[i] * wy[j]
  yy = num / den
  xy = sum(wx[i] * wy[j] * k(x[i], y[j]) for i in range(n) for j in range(m)) / (np.sum(wx) * np.sum(wy))
  return xx + yy - 2 * xy


def test_mmd_matches_numpy_twin():
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(6, 4)), rng.normal(1.0, 2.0, size=(5, 4))
  ones_x, ones_y = np.ones(6), np.ones(5)
  wx = np.array([1, 1, 0, 1, 1, 0], np.float32)
  estimate = jax.jit(mmd.mmd_imq)
  xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
  assert float(estimate(xj, yj)) == pytest.approx(numpy_mmd(x, y, ones_x, ones_y), rel=1e-5)
  weighted = float(estimate(xj, yj, jnp.asarray(wx)))
  assert weighted == pytest.approx(numpy_mmd(x, y, wx, ones_y), rel=1e-5)
  assert weighted == pytest.approx(float(estimate(xj[wx > 0], yj)), rel=1e-5)  # weight 0 = left out


# ------------------------------------------------------------------------------------------- the methods
V, B, L = 16, 4, 7


def tiny(name, **overrides):
  mc = sparse_vae.default_model_config(name)
  mc.update({'embed_size': 8, 'hidden_size': 12, 'latent_size': 5, 'learning_rate': 1e-2, **overrides})
  return mc


CLASSES = {'hsvae': sparse_vae.HSVAE, 'mat_vae': sparse_vae.MATVAE, 'gauss_vae': sparse_vae.GaussVAE}
INFO = DataInfo(token_vocab_size=V, max_len=L - 1)


def make_batch():
  rng = np.random.default_rng(0)
  lengths = np.array([5, 3, 6, 2], np.int32)
  tokens = np.zeros((B, L), np.int32)
  for b, n in enumerate(lengths):
    tokens[b, :n] = rng.integers(4, V, n)
  return {'tokens': tokens, 'lengths': lengths, 'mask': np.ones(B, np.float32)}


@functools.lru_cache(maxsize=None)
def trained(name):
  """(method, jitted train step, state after 30 steps on one repeated batch, losses, reconstructions)."""
  overrides = {'l1_mu': 0.01, 'l2_sigma': 0.01} if name == 'gauss_vae' else {}
  method = CLASSES[name](tiny(name, **overrides), 0, INFO)
  batch = make_batch()
  state = method.init(jax.random.key(0), batch)
  step = jax.jit(method.train_step)
  losses, reconstructions = [], []
  for i in range(30):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics['loss']))
    reconstructions.append(float(metrics['reconstruction']))
  return method, step, state, metrics, losses, reconstructions


@pytest.mark.parametrize('name', ['hsvae', 'mat_vae', 'gauss_vae'])
def test_loss_finite_and_decreasing(name):
  method, _, state, metrics, losses, reconstructions = trained(name)
  assert method.reads == 'tokens' and method.emits == 'dense' and method.code_length == 5
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < np.mean(losses[:3])  # MAT-VAE's MMD of 4 samples is noisy
  assert np.mean(reconstructions[-5:]) < 0.8 * np.mean(reconstructions[:3])
  if name == 'hsvae':
    assert float(metrics['nan_gamma']) == 0.0


# (method, the population's config fields, a member's values)
WEIGHTS = [('hsvae', {}, {'gamma_kl_weight': 0.1, 'z_kl_weight': 2.0}),
           ('mat_vae', {}, {'kl_weight': 0.3, 'mmd_weight': 3.0, 'prior_gamma': 0.6}),
           ('gauss_vae', {'word_dropout': 0.2, 'dropout': 0.1},
            {'kl_weight': 0.5, 'l1_mu': 0.1, 'l2_mu': 0.05, 'l1_sigma': 0.2, 'l2_sigma': 0.3, 'word_dropout': 0.6,
             'dropout': 0.3})]


@pytest.mark.parametrize('name,fields,weights', WEIGHTS, ids=[n for n, _, _ in WEIGHTS])
def test_loss_weights_are_population_values(name, fields, weights):
  """The KL, MMD and L1 / L2 weights are population hyperparameters kept in the state, and so are dropout
  and word dropout where the config has some; MAT-VAE's prior gamma is one kept in the parameters: a member given other
  values steps as a single run configured with them, and differently from a member with the config's, and
  is evaluated as that single run."""
  batch = make_batch()
  configured = CLASSES[name](tiny(name, **{**fields, **weights}), 0, INFO)  # a single run with these values
  method = CLASSES[name](tiny(name, **fields), 0, INFO)  # a population's, whose config has the defaults
  defaults = method.default_hparams()
  assert set(weights) <= set(defaults) and set(defaults) - set(weights) >= {'learning_rate'}
  single_step, member_step = jax.jit(configured.train_step), jax.jit(method.train_step)
  single = configured.init(jax.random.key(0), batch)
  member = method.init(jax.random.key(0), batch, {**defaults, **weights})
  default = method.init(jax.random.key(0), batch, defaults)
  for i in range(2):
    single, single_metrics = single_step(single, batch, jax.random.key(i))
    member, member_metrics = member_step(member, batch, jax.random.key(i))
    default, default_metrics = member_step(default, batch, jax.random.key(i))
    assert float(member_metrics['loss']) == pytest.approx(float(single_metrics['loss']), rel=1e-5)
    assert abs(float(default_metrics['loss']) - float(member_metrics['loss'])) > 1e-3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), single['params'],
               member['params'])
  if 'prior_gamma' in weights:  # evaluation reads the member's gamma from its parameters
    single_scores = jax.jit(configured.score)(single['params'], batch, jax.random.key(5))
    member_scores = jax.jit(method.score)(member['params'], batch, jax.random.key(5))
    default_scores = jax.jit(method.score)({**member['params'], 'prior': default['params']['prior']}, batch,
                                           jax.random.key(5))
    np.testing.assert_allclose(member_scores['kl'], single_scores['kl'], rtol=1e-5, atol=1e-5)
    assert not np.allclose(default_scores['kl'], member_scores['kl'], rtol=1e-3)


@pytest.mark.parametrize('name', ['hsvae', 'mat_vae'])
def test_scores_codes_and_decoding(name):
  method, _, state, _, _, _ = trained(name)
  params, batch = state['params'], make_batch()

  @jax.jit
  def evaluate(params):  # one compile for everything the evaluators call
    return (method.score(params, batch, jax.random.key(0)), method.encode(params, batch),
            method.encode(params, batch, jax.random.key(1)), method.features(params, batch))

  scores, mean, sample, features = evaluate(params)
  assert set(scores) == {'nll', 'nll_mean', 'kl', 'tokens'}
  np.testing.assert_array_equal(scores['tokens'], batch['lengths'] + 1)
  assert np.all(np.asarray(scores['nll']) > 0) and np.all(np.isfinite(scores['kl']))
  assert method.perplexities() == {'perplexity': ('nll', 'corpus'), 'perplexity_mean': ('nll_mean', 'corpus'),
                                   'perplexity_per_sentence': ('nll', 'document'),
                                   'perplexity_mean_per_sentence': ('nll_mean', 'document')}
  assert mean.shape == sample.shape == (B, 5) and not np.allclose(mean, sample)
  np.testing.assert_allclose(features, mean, rtol=1e-6)
  assert method.decode(params, mean).shape == (B, L)


def test_hsvae_mean_representation_uses_the_beta_mean():
  method, _, state, _, _, _ = trained('hsvae')
  params, batch = state['params'], make_batch()
  mu, _, a_raw, b_raw, prior = method._heads(params, batch)
  np.testing.assert_array_equal(prior, (method.config.prior_alpha, method.config.prior_beta))  # params['prior']
  shift_a, shift_b = (np.log(np.expm1(v)) for v in (method.config.prior_alpha, method.config.prior_beta))
  a, b = jax.nn.softplus(a_raw + shift_a) + 1e-5, jax.nn.softplus(b_raw + shift_b) + 1e-5  # beta_init 'prior'
  np.testing.assert_allclose(method.encode(params, batch), (1 - a / (a + b)) * mu, rtol=1e-5, atol=1e-6)
  mu_method = sparse_vae.HSVAE(tiny('hsvae', probe_features='mu'), 0, INFO)
  np.testing.assert_allclose(mu_method.features(params, batch), mu, rtol=1e-6)



def test_hsvae_prior_lives_in_the_parameters_and_a_config_saved_before_keeps_it_in_the_config():
  method = sparse_vae.HSVAE(tiny('hsvae', prior_alpha=3.0, prior_beta=1.5), 0, INFO)
  batch = make_batch()
  state = method.init(jax.random.key(0), batch)
  assert {k: float(v) for k, v in state['params']['prior'].items()} == {'alpha': 3.0, 'beta': 1.5}
  other = method.init(jax.random.key(0), batch, {'prior_alpha': jnp.float32(7.0), 'prior_beta': jnp.float32(2.0)})
  assert float(other['params']['prior']['alpha']) == 7.0
  # no gradient reaches the prior, so Adam leaves it exactly where it was
  new_state, _ = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  assert float(new_state['params']['prior']['alpha']) == 3.0 and float(new_state['params']['prior']['beta']) == 1.5
  legacy_config = tiny('hsvae', prior_alpha=3.0, prior_beta=1.5)
  del legacy_config['prior_in_params']  # a config saved before the field: the parameters it was saved with
  legacy = sparse_vae.HSVAE(legacy_config, 0, INFO)
  legacy_params = legacy.init(jax.random.key(0), batch)['params']
  assert 'prior' not in legacy_params
  assert set(legacy.default_hparams()) == {'learning_rate', 'gamma_kl_weight', 'z_kl_weight', 'temperature'}
  assert legacy.prior(legacy_params) == (3.0, 1.5)
  network = {k: v for k, v in state['params'].items() if k != 'prior'}
  encoded = jax.jit(method.encode)(state['params'], batch)
  np.testing.assert_allclose(jax.jit(legacy.encode)(legacy_params, batch), encoded, rtol=1e-5)
  np.testing.assert_allclose(jax.jit(legacy.encode)(network, batch), encoded, rtol=1e-5)
  kl = jax.jit(method.score)(state['params'], batch, jax.random.key(2))['kl']
  np.testing.assert_allclose(jax.jit(legacy.score)(network, batch, jax.random.key(2))['kl'], kl, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match='no population hyperparameters'):
    sparse_vae.GaussVAE(tiny('gauss_vae'), 0, INFO).init(jax.random.key(0), batch, {'prior_alpha': jnp.ones(())})


def test_mat_vae_gamma_lives_in_the_parameters_and_a_config_saved_before_keeps_it_in_the_config():
  method = sparse_vae.MATVAE(tiny('mat_vae', prior_gamma=0.6), 0, INFO)
  batch = make_batch()
  params = method.init(jax.random.key(0), batch)['params']
  assert float(params['prior']['gamma']) == pytest.approx(0.6)
  legacy_config = tiny('mat_vae', prior_gamma=0.6)
  del legacy_config['prior_in_params']  # a config saved before the field: the parameters it was saved with
  legacy = sparse_vae.MATVAE(legacy_config, 0, INFO)
  assert 'prior' not in legacy.init(jax.random.key(0), batch)['params']
  assert 'prior_gamma' not in legacy.default_hparams() and 'prior_gamma' in method.default_hparams()
  network = {k: v for k, v in params.items() if k != 'prior'}
  kl = jax.jit(method.score)(params, batch, jax.random.key(2))['kl']
  np.testing.assert_allclose(jax.jit(legacy.score)(network, batch, jax.random.key(2))['kl'], kl, rtol=1e-5, atol=1e-5)


def test_hsvae_beta_heads_start_at_the_prior_with_beta_init_prior():
  heads = [None, None, jnp.zeros((3, 5)), jnp.full((3, 5), 0.7), (jnp.float32(10.0), jnp.float32(30.0))]
  at_prior = sparse_vae.HSVAE(tiny('hsvae', prior_alpha=10.0, prior_beta=30.0, beta_init='prior'), 0, INFO)
  a, b = at_prior._beta_params(heads)
  np.testing.assert_allclose(a, 10.0 + 1e-5, rtol=1e-6)
  np.testing.assert_allclose(b, np.log1p(np.expm1(30.0) * np.exp(0.7)) + 1e-5, rtol=1e-6)  # softplus(x + 0.7)
  reference = tiny('hsvae', beta_init='zero')
  legacy = tiny('hsvae')
  del legacy['beta_init']  # a config saved before the field existed means the start it was trained with
  for config in (reference, legacy):
    a0, b0 = sparse_vae.HSVAE(config, 0, INFO)._beta_params(heads)  # the reference: softplus(head)
    np.testing.assert_allclose(a0, np.log(2.0) + 1e-5, rtol=1e-6)
    np.testing.assert_allclose(b0, np.log1p(np.exp(0.7)) + 1e-5, rtol=1e-6)
  assert sparse_vae.default_model_config('hsvae').beta_init == 'prior'


def test_hsvae_reports_a_failed_beta_sample():
  _, step, state, _, _, _ = trained('hsvae')
  params = jax.tree_util.tree_map_with_path(
      lambda path, a: a * jnp.nan if 'heads_2' in jax.tree_util.keystr(path) else a, state['params'])
  _, metrics = step({**state, 'params': params}, make_batch(), jax.random.key(0))
  assert float(metrics['nan_gamma']) == 1.0
  assert not np.isfinite(float(metrics['loss']))


@pytest.mark.parametrize('name', ['hsvae', 'mat_vae', 'gauss_vae'])
def test_kl_target_makes_the_weighted_kl_its_distance_to_c(name):
  batch = {'mask': np.array([1, 1, 1, 0], np.float32)}
  kl_B = np.array([3.0, 9.0, 1.5, 50.0], np.float32)  # the padded row's 50 is never counted
  weight_field = 'z_kl_weight' if name == 'hsvae' else 'kl_weight'
  rng = jax.random.key(0)
  z = jax.random.normal(rng, (B, 5))
  parts = ({'kl_gamma': np.zeros(B, np.float32), 'kl_z': kl_B, 'gamma': np.full((B, 5), 0.5, np.float32),
            'spikes': np.zeros((B, 5), np.float32)} if name == 'hsvae'
           else {'kl': kl_B, 'norms': {'l1_mu': np.zeros(B, np.float32)}, 'prior_gamma': np.float32(0.8)})
  values = {}
  for target in (0.0, 2.0, 10.0):
    method = CLASSES[name](tiny(name, kl_target=target, **{weight_field: 0.5}), 0, INFO)
    values[target] = float(method._regulariser(parts, z, batch, None, rng)[0])
  mean_kl = (3.0 + 9.0 + 1.5) / 3  # 4.5
  assert values[2.0] - values[0.0] == pytest.approx(0.5 * (abs(mean_kl - 2.0) - mean_kl), abs=1e-5)
  assert values[10.0] - values[0.0] == pytest.approx(0.5 * (abs(mean_kl - 10.0) - mean_kl), abs=1e-5)


@pytest.mark.parametrize('name,field,value', [
    ('hsvae', 'prior_alpha', 0.0), ('hsvae', 'prior_beta', -1.0), ('hsvae', 'temperature', 0.0),
    ('hsvae', 'word_dropout', 1.0), ('hsvae', 'latent_size', 0), ('hsvae', 'hidden_size', 0),
    ('hsvae', 'gamma_kl_weight', -0.1), ('hsvae', 'probe_features', 'sample'), ('hsvae', 'z_kl', 'mc'),
    ('hsvae', 'beta_init', 'uniform'),
    ('mat_vae', 'prior_gamma', 1.0), ('mat_vae', 'mmd_scales', (0.1, -1.0)), ('mat_vae', 'dropout', -0.1),
    ('gauss_vae', 'l1_mu', -1.0), ('gauss_vae', 'kl_target', -1.0), ('mat_vae', 'kl_target', -0.5),
    ('gauss_vae', 'embed_size', 0), ('gauss_vae', 'learning_rate', 0.0)])
def test_bad_settings_name_the_field(name, field, value):
  mc = tiny(name)
  mc[field] = value
  with pytest.raises(ValueError, match=f'model.{field}'):
    CLASSES[name](mc, 0, INFO)


def test_needs_a_token_vocabulary():
  with pytest.raises(ValueError, match='token_vocab_size'):
    sparse_vae.HSVAE(tiny('hsvae'), 100, DataInfo(vocab_size=100))


def test_a_nan_beta_sample_stops_the_loop_naming_the_step(monkeypatch, tmp_path):
  """The Beta reparameterisation returns NaN from the third step on: the loop raises at step 2."""
  from dtr import config_utils, train
  original = spike_slab.sample_beta
  failing = {'now': False}

  def sample_beta(key, alpha, beta):
    return jnp.where(failing['now'], jnp.nan, original(key, alpha, beta))

  class FailingHSVAE(sparse_vae.HSVAE):
    def train_step(self, state, batch, rng):
      failing['now'] = state['sentences'] >= 64  # traced: true from the third step of 32 sentences
      try:
        return super().train_step(state, batch, rng)
      finally:
        failing['now'] = False

  monkeypatch.setattr(spike_slab, 'sample_beta', sample_beta)
  monkeypatch.setattr(sparse_vae, 'HSVAE', FailingHSVAE)
  config = config_utils.load_config_module('sentence_ae').get_config('method=hsvae,tiny')
  assert config.batch_size == 32
  with pytest.raises(FloatingPointError, match='Non-finite loss at step 2 '):
    train.train_and_evaluate(config, str(tmp_path))


def test_nan_gamma_reaches_the_loss_even_on_masked_rows():
  method, step, state, _, _, _ = trained('hsvae')
  batch = make_batch()
  parts = {'kl_gamma': jnp.zeros(B), 'kl_z': jnp.zeros(B), 'spikes': jnp.zeros((B, 1)),
           'gamma': jnp.array([[0.5], [jnp.nan], [0.5], [0.5]])}
  masked = {**batch, 'mask': np.array([1, 0, 1, 1], np.float32)}
  penalty, metrics = method._regulariser(parts, None, masked, 1.0, None)
  assert not np.isfinite(float(penalty))  # the NaN sits on a padding row, and still stops the run
  assert float(metrics['nan_gamma']) == 0.25
  finite, _ = method._regulariser({**parts, 'gamma': jnp.full((B, 1), 0.5)}, None, masked, 1.0, None)
  assert np.isfinite(float(finite))


def test_a_non_finite_gradient_makes_the_step_loss_nan():
  class InfiniteGradient(sparse_vae.GaussVAE):
    def loss(self, params, batch, rng, kl_weight, values=None):
      leaf = jax.tree.leaves(params)[0]
      return jnp.sqrt(jnp.sum(leaf * 0.0)), {}  # value 0, gradient inf * 0 = NaN

  method = InfiniteGradient(tiny('gauss_vae'), 0, INFO)
  state = method.init(jax.random.key(0), make_batch())
  _, metrics = jax.jit(method.train_step)(state, make_batch(), jax.random.key(0))
  assert not np.isfinite(float(metrics['grad_norm'])) and np.isnan(float(metrics['loss']))


@pytest.mark.parametrize('arg,field', [('alpha=0', 'prior_alpha'), ('beta=-2', 'prior_beta'),
                                       ('alpha=0.0,beta=1', 'prior_alpha')])
def test_config_alpha_beta_are_taken_as_given(arg, field):
  from dtr import config_utils, methods
  config = config_utils.load_config_module('sentence_ae').get_config(f'method=hsvae,tiny,{arg}')
  with pytest.raises(ValueError, match=f'model.{field}'):
    methods.get_method(config.model, DataInfo(token_vocab_size=V))


def test_config_alpha_beta_only_for_hsvae():
  from dtr import config_utils
  config = config_utils.load_config_module('sentence_ae').get_config('method=hsvae,alpha=5,beta=2')
  assert (config.model.prior_alpha, config.model.prior_beta) == (5.0, 2.0)
  with pytest.raises(ValueError, match='method=hsvae'):
    config_utils.load_config_module('sentence_ae').get_config('method=gauss_vae,alpha=5')


def test_config_population_of_seeds_or_of_priors():
  from dtr import config_utils, methods, population
  load = config_utils.load_config_module('sentence_ae').get_config
  seeds = load('method=gauss_vae,population=3')
  assert seeds.population == 3 and not seeds.population_search
  priors = load('method=hsvae,population=4,prior_search,alpha=5,beta=2')
  assert priors.population == 4 and set(priors.population_search) == {'prior_alpha', 'prior_beta'}
  settings = population.member_settings(priors, methods.get_method(priors.model, DataInfo(token_vocab_size=V)), 4)
  assert (settings[0]['prior_alpha'], settings[0]['prior_beta']) == (5.0, 2.0)  # member 0: the config's prior
  assert all(1 <= m[k] <= 40 for m in settings[1:] for k in ('prior_alpha', 'prior_beta'))
  assert len({m['prior_alpha'] for m in settings}) == 4
  for bad in ('method=lm,population=2,prior_search', 'method=hsvae,prior_search'):
    with pytest.raises(ValueError, match='prior_search draws the Beta prior'):
      load(bad)


def test_config_kl_weight_sets_the_weight_on_z_kl_of_each_sparse_method():
  from dtr import config_utils
  load = config_utils.load_config_module('sentence_ae').get_config
  assert load('method=hsvae,kl_weight=0.2').model.z_kl_weight == 0.2
  assert load('method=hsvae').model.z_kl_weight == 0.5
  assert load('method=gauss_vae,kl_weight=0.5').model.kl_weight == 0.5
  assert load('method=mat_vae,kl_weight=0.3').model.kl_weight == 0.3
  with pytest.raises(ValueError, match='method=binary_vae'):
    load('method=binary_vae,kl_weight=0.5')


def test_config_kl_target_and_z_kl_are_absent_unless_given():
  from dtr import config_utils
  load = config_utils.load_config_module('sentence_ae').get_config
  plain = load('method=hsvae,dataset=dbpedia14')
  assert 'kl_target' not in plain.model and 'z_kl' not in plain.model  # earlier cells keep their digests
  given = load('method=hsvae,dataset=dbpedia14,kl_target=10,z_kl=joint,beta_init=prior')
  assert (given.model.kl_target, given.model.z_kl, given.model.beta_init) == (10.0, 'joint', 'prior')
  assert plain.model.beta_init == 'prior'  # HSVAE's default; beta_init=zero gives the reference's start
  assert load('method=hsvae,beta_init=zero').model.beta_init == 'zero'
  assert config_utils.settings_digest(plain) != config_utils.settings_digest(given)
  assert load('method=gauss_vae,kl_target=5').model.kl_target == 5.0
  for arg in ('method=binary_ae,kl_target=5', 'method=gauss_vae,z_kl=joint', 'method=mat_vae,beta_init=prior'):
    with pytest.raises(ValueError, match='kl_target is an option'):
      load(arg)
