"""AMMI's objective and settings, against an independent brute-force computation in float64 NumPy."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtr.methods import ammi

CONFIG_PATH = str(__import__('pathlib').Path(__file__).resolve().parents[1] / 'configs' / 'ammi.py')


def _model_config(**overrides):
  mc = ammi.default_model_config()
  mc.update(overrides)
  return mc


def _all_codes(m):
  return np.array(list(itertools.product([0, 1], repeat=m)))


def _brute_probs(logits):
  """p(z) of an order-o chain for every z in {0,1}^m (column c = sum_k z_{i-1-k} 2^k)."""
  m, s = logits.shape
  order = int(np.log2(s))
  codes = _all_codes(m)
  out = np.ones(len(codes))
  for n, z in enumerate(codes):
    for i in range(m):
      c = sum(z[i - 1 - k] << k for k in range(order) if i - 1 - k >= 0)
      p1 = 1 / (1 + np.exp(-logits[i, c]))
      out[n] *= p1 if z[i] else 1 - p1
  return codes, out


def _batch(rng, b, v, nnz=5):
  """b random documents with nnz terms each, in the flat layout, as one group."""
  import scipy.sparse as sp
  from dtr.data import flat_rows
  csr = sp.random(b, v, density=nnz / v, format='csr', random_state=rng, dtype=np.float32)
  ids, vals, seg = flat_rows(csr, np.arange(b)[None])
  return {'ids': ids, 'vals': vals, 'seg': seg, 'mask': np.ones((1, b), np.float32)}


@pytest.mark.parametrize('order_o,order_r,bmmi', [(0, 3, False), (1, 2, False), (0, 0, True), (1, 1, True)])
def test_encoder_loss_matches_brute_force(order_o, order_r, bmmi):
  m, v, b, beta = 4, 12, 3, 2.5
  method = ammi.AMMI(_model_config(bits=m, encoder_order=order_o, prior_order=order_r, prior_raw=True,
                                   prior_steps=0, entropy_weight=beta, bmmi=bmmi, clip=0.0), vocab_size=v)
  batch = _batch(np.random.default_rng(0), b, v)
  state = method.init(jax.random.key(1), batch)
  _, metrics = method.train_step(state, batch)
  p_logits = np.asarray(method.encoder_logits(state['params']['encoder'], batch), np.float64)
  q_logits = np.asarray(method.prior_logits(state['params']['prior']), np.float64)
  probs = np.stack([_brute_probs(p_logits[i])[1] for i in range(b)])  # [B, 2^m]
  cond_entropy = -np.mean(np.sum(probs * np.log(probs), axis=1))
  if bmmi:
    pz = probs.mean(0)
    code_entropy = -np.sum(pz * np.log(pz))
  else:
    q = _brute_probs(q_logits)[1]
    code_entropy = -np.mean(probs @ np.log(q))
  np.testing.assert_allclose(metrics['cond_entropy'], cond_entropy, rtol=1e-4)
  np.testing.assert_allclose(metrics['code_entropy'], code_entropy, rtol=1e-4)
  np.testing.assert_allclose(metrics['loss'], cond_entropy - beta * code_entropy, rtol=1e-4, atol=1e-5)


def test_dropout_entries_drops_at_the_rate_and_rescales_the_kept_entries():
  batch = _batch(np.random.default_rng(0), 200, 500, nnz=50)
  vals = np.asarray(batch['vals'])
  same = ammi.dropout_entries(batch, 0.0, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(same['vals']), vals)
  out = np.asarray(ammi.dropout_entries(batch, 0.75, jax.random.key(0))['vals'])
  real = vals != 0
  kept = real & (out != 0)
  np.testing.assert_allclose(out[kept], vals[kept] * 4, rtol=1e-6)
  assert np.all(out[~real] == 0)
  assert abs(kept.sum() / real.sum() - 0.25) < 0.02  # about 10,000 entries
  half = ammi.dropout_entries(batch, 0.5, jax.random.key(1))
  for key in ('ids', 'seg', 'mask'):  # only the values change
    np.testing.assert_array_equal(np.asarray(half[key]), np.asarray(batch[key]))


@pytest.mark.parametrize('order_o', [0, 1])
def test_view_objective_is_the_cross_entropy_from_the_document_to_its_view(order_o):
  """With views, the conditional term is H+(p(.|y), p(.|y~)) by brute force over all codes; y~ is the
  document with the step's dropped entries; the code entropy term is unchanged."""
  m, v, b, beta, rate = 4, 12, 3, 2.5, 0.5
  method = ammi.AMMI(_model_config(bits=m, encoder_order=order_o, prior_order=2, prior_raw=True, prior_steps=0,
                                   entropy_weight=beta, clip=0.0, view_dropout=rate), vocab_size=v)
  batch = _batch(np.random.default_rng(0), b, v, nnz=6)
  state = method.init(jax.random.key(1), batch)
  assert float(state['hparams']['view_dropout']) == rate
  rng = jax.random.key(7)
  _, metrics = method.train_step(state, batch, rng)
  view = ammi.dropout_entries(batch, rate, rng)
  assert 0 < np.count_nonzero(view['vals']) < np.count_nonzero(batch['vals'])
  enc = state['params']['encoder']
  p = np.stack([_brute_probs(l)[1] for l in np.asarray(method.encoder_logits(enc, batch), np.float64)])
  p_view = np.stack([_brute_probs(l)[1] for l in np.asarray(method.encoder_logits(enc, view), np.float64)])
  cross = -np.mean(np.sum(p * np.log(p_view), axis=1))
  assert cross > -np.mean(np.sum(p * np.log(p), axis=1)) + 1e-4  # the view's code differs: KL > 0
  np.testing.assert_allclose(metrics['cond_entropy'], cross, rtol=1e-4)
  q = _brute_probs(np.asarray(method.prior_logits(state['params']['prior']), np.float64))[1]
  np.testing.assert_allclose(metrics['code_entropy'], -np.mean(p @ np.log(q)), rtol=1e-4)
  with pytest.raises(ValueError, match='rng'):
    method.train_step(state, batch)


def test_prior_steps_lower_the_cross_entropy():
  method = ammi.AMMI(_model_config(bits=8, prior_steps=20, learning_rate=0.05, prior_raw=True), vocab_size=30)
  batch = _batch(np.random.default_rng(0), 16, 30)
  state = method.init(jax.random.key(0), batch)
  p = method.encoder_logits(state['params']['encoder'], batch)
  from dtr.latent import markov
  before = jnp.mean(markov.cross_entropy(p, method.prior_logits(state['params']['prior'])))
  new_state, _ = method.train_step(state, batch)
  after = jnp.mean(markov.cross_entropy(p, method.prior_logits(new_state['params']['prior'])))
  assert after < before - 1e-3


def test_encode_is_viterbi_threshold_for_order_zero():
  method = ammi.AMMI(_model_config(bits=8), vocab_size=20)
  batch = _batch(np.random.default_rng(3), 5, 20)
  state = method.init(jax.random.key(0), batch)
  codes = method.encode(state['params'], batch)
  logits = method.encoder_logits(state['params']['encoder'], batch)[..., 0]
  np.testing.assert_array_equal(np.asarray(codes), np.asarray(logits > 0).astype(np.int8))


@pytest.mark.parametrize('overrides,match', [
    (dict(bits=0), 'bits'),
    (dict(bits=-3), 'bits'),
    (dict(encoder_order=3, prior_order=1), 'prior_order'),
    (dict(bmmi=True, bits=32), 'bmmi'),
    (dict(entropy_weight=0.0), 'entropy_weight'),
    (dict(view_dropout=1.0), 'view_dropout'),
    (dict(view_dropout=-0.1), 'view_dropout'),
])
def test_impossible_settings_raise(overrides, match):
  with pytest.raises(ValueError, match=match):
    ammi.AMMI(_model_config(**overrides), vocab_size=10)


def test_every_config_loads():
  import importlib.util
  spec = importlib.util.spec_from_file_location('ammi_config', CONFIG_PATH)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  args = [None, 'tiny', 'runlocal', 'bmmi,bits=16', 'tiny,bmmi'] + [
      f'dataset={d},bits={b}{s}' for d in mod.TUNED for b in mod.TUNED[d] for s in ('', ',settings=dtr')]
  for arg in args:
    config = mod.get_config(arg)
    ammi.AMMI(config.model, vocab_size=100)  # validates
    assert config.batch_size > 0 and config.model.bits > 0
  ng16 = mod.get_config('dataset=ng20,bits=16')
  assert (ng16.batch_size, ng16.seed, ng16.model.prior_steps, ng16.model.prior_raw) == (64, 57000, 4, True)
  with pytest.raises(ValueError, match='Unknown config argument'):
    mod.get_config('datasett=ng20')
  # settings=dtr applies RETUNED on top of the published cell, and nothing else
  def node_of(tree, dotted):
    *parents, leaf = dotted.split('.')
    for part in parents:
      tree = tree[part]
    return tree, leaf

  for (dataset, bits), changes in mod.RETUNED.items():
    published = mod.get_config(f'dataset={dataset},bits={bits}').to_dict()
    retuned = mod.get_config(f'dataset={dataset},bits={bits},settings=dtr').to_dict()
    for dotted, value in changes.items():
      node, leaf = node_of(retuned, dotted)
      assert node[leaf] == value
      original, _ = node_of(published, dotted)
      node[leaf] = original[leaf]
    # The printed description of the settings names which ones were applied.
    assert published.pop('settings').startswith('published')
    assert retuned.pop('settings').startswith('dtr')
    assert retuned == published
  with pytest.raises(ValueError, match='settings'):
    mod.get_config('settings=best')
