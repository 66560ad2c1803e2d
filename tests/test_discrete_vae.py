"""Discrete VAEs (Jin et al. 2020) and the CBOW baseline: Gumbel / KL / free-bits and EMA code-book math
against hand values and NumPy twins, masking invariances, the E-step loop, every method and level end to end
on a tiny repeated batch, and the refused settings."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtr.latent import gumbel, vq
from dtr.methods import cbow, discrete_vae
from dtr.methods.base import DataInfo
from dtr.nn import softmax

VOCAB = 24


def token_batch(lengths, width, seed=0, mask=None):
  rng = np.random.default_rng(seed)
  tokens = np.zeros((len(lengths), width), np.int32)
  for b, n in enumerate(lengths):
    tokens[b, :n] = rng.integers(4, VOCAB, n)
  mask = np.ones(len(lengths), np.float32) if mask is None else np.asarray(mask, np.float32)
  return {'tokens': tokens, 'lengths': np.asarray(lengths, np.int32), 'mask': mask,
          'label': np.zeros(len(lengths), np.int32)}


def tiny(name, level, **overrides):
  mc = discrete_vae.default_model_config(name, level)
  mc.update(num_latents=2, num_values=8, model_dim=16, num_heads=2, ff_dim=32, dropout=0.0, noam=False,
            learning_rate=3e-3)  # dropout off unless a test asks: it doubles compile times
  mc.update(**overrides)
  return discrete_vae.METHODS[name](mc, VOCAB, DataInfo(token_vocab_size=VOCAB))


# ------------------------------------------------------------------------------------------ categorical math
def test_kl_to_uniform_hand_values():
  logits = jnp.array([[0.0, 0.0], [math.log(3.0), 0.0], [100.0, -100.0]])
  expected = [0.0, 0.75 * math.log(0.75) + 0.25 * math.log(0.25) + math.log(2.0), math.log(2.0)]
  np.testing.assert_allclose(gumbel.kl_to_uniform(logits), expected, rtol=1e-5, atol=1e-6)
  assert np.all(np.isfinite(jax.grad(lambda l: gumbel.kl_to_uniform(l).sum())(logits)))


def test_gumbel_straight_through_forward_is_a_sample_backward_is_the_relaxation():
  rng, tau = jax.random.key(3), 0.67
  logits = jnp.array([[0.3, -1.0, 2.0, 0.1], [1.5, 1.4, -0.2, 0.0]])
  weights = np.array([[1.0, -2.0, 0.5, 3.0], [0.2, 1.0, -1.0, 2.0]])

  @jax.jit
  def run(logits):
    z = gumbel.gumbel_straight_through(logits, rng, tau)
    grad = jax.grad(lambda l: jnp.sum(weights * gumbel.gumbel_straight_through(l, rng, tau)))(logits)
    many = gumbel.gumbel_straight_through(jnp.broadcast_to(logits[0], (20000, 4)), jax.random.key(0), tau)
    return jax.random.gumbel(rng, logits.shape), z, grad, jnp.mean(many, axis=0)

  g, z, grad, frequencies = run(logits)
  g = np.asarray(g, np.float64)
  np.testing.assert_array_equal(z, np.eye(4)[np.argmax(np.asarray(logits) + g, axis=-1)])
  a = (np.asarray(logits, np.float64) + g) / tau
  y = np.exp(a - a.max(-1, keepdims=True))
  y /= y.sum(-1, keepdims=True)
  expected = np.stack([(np.diag(y[b]) - np.outer(y[b], y[b])) @ weights[b] / tau for b in range(2)])
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
  # The hard samples follow softmax(l).
  np.testing.assert_allclose(frequencies, jax.nn.softmax(logits[0]), atol=0.015)
  # Hard EM without relaxation: argmax forward, identity backward.
  probs = jnp.array([0.2, 0.5, 0.3])
  np.testing.assert_array_equal(gumbel.argmax_straight_through(probs), [0, 1, 0])
  np.testing.assert_allclose(jax.grad(lambda p: jnp.sum(jnp.array([1.0, 2.0, 3.0])
                                                        * gumbel.argmax_straight_through(p)))(probs), [1, 2, 3])


def test_free_bits_per_latent_hand_values():
  kl = jnp.array([[[0.1], [0.5]], [[0.3], [9.9]]])      # B = 2 documents, L = 2 positions, M = 1
  position_weight = jnp.array([[1.0, 1.0], [1.0, 0.0]])  # document 1 has one token: (1, 1) is padding
  doc_weight = jnp.ones(2)
  # position 0: mean (0.1 + 0.3) / 2 = 0.2 -> floor 0.4, weight 2/2; position 1: 0.5 (one document), weight 1/2
  value, grad = jax.jit(jax.value_and_grad(gumbel.free_bits_per_latent))(kl, position_weight, doc_weight, 0.4)
  np.testing.assert_allclose(value, 0.4 + 0.5 * 0.5, rtol=1e-6)
  np.testing.assert_allclose(grad[..., 0], [[0.0, 0.5], [0.0, 0.0]], atol=1e-7)
  # No floor: the batch-mean KL over the real positions.
  no_floor = gumbel.free_bits_per_latent(kl, position_weight, doc_weight, 0.0)
  np.testing.assert_allclose(no_floor, (0.1 + 0.5 + 0.3) / 2, rtol=1e-6)


def test_free_bits_reference_drops_the_whole_kl_under_the_floor():
  kl, weight = jnp.array([1.0, 2.0]), jnp.ones(2)
  value_and_grad = jax.jit(jax.value_and_grad(gumbel.free_bits_reference))
  value, grad = value_and_grad(kl, weight, 2.0)  # 3 < 2 * 2
  assert float(value) == 0.0 and np.all(np.asarray(grad) == 0)
  value, grad = value_and_grad(kl, weight, 1.0)  # 3 >= 2 * 1
  np.testing.assert_allclose([value, *grad], [1.5, 0.5, 0.5])
  np.testing.assert_allclose(gumbel.free_bits_reference(kl, jnp.array([1.0, 0.0]), 0.5), 1.0)


def test_catvae_free_bits_floors():
  """gamma = 0.5, M = 2, K = 4: per-latent floor 0.5 log 4; the reference floor ceil(0.5 M L log 4)."""
  kl = jnp.full((2, 3, 2), 0.3)
  layout = {'doc_weight': jnp.ones(2), 'valid': jnp.array([[1, 1, 0], [1, 1, 1]], bool),
            'lengths': jnp.array([2, 3])}
  floor = 0.5 * math.log(4)
  local = tiny('cat_vae', 'local', num_values=4, free_bits_ratio=0.5)
  np.testing.assert_allclose(local.free_bits_kl(kl, layout), floor * 2 * (2 + 3) / 2, rtol=1e-6)
  reference = tiny('cat_vae', 'local', num_values=4, free_bits_ratio=0.5, free_bits_mode='reference')
  assert math.ceil(floor * 2 * 2.5) == 4  # the floor per document at the batch's mean length 2.5
  np.testing.assert_allclose(reference.free_bits_kl(kl, layout), 0.0)  # KL 0.3 * 2 * 2.5 = 1.5 < 4
  big = kl * 3  # 4.5 >= 4: kept in full
  np.testing.assert_allclose(reference.free_bits_kl(big, layout), 0.9 * 2 * 2.5, rtol=1e-6)
  fixed = tiny('cat_vae', 'local', num_values=4, free_bits_ratio=0.5, free_bits_mode='reference',
               free_bits_length=1)  # ceil(1.39) = 2 < 4.5
  np.testing.assert_allclose(fixed.free_bits_kl(big, layout), 4.5, rtol=1e-6)
  glob = tiny('cat_vae', 'global', num_values=4, free_bits_ratio=0.5, free_bits_mode='reference')
  kl_global = jnp.array([[[0.5, 0.6]], [[1.0, 0.9]]])  # sums 1.1 and 1.9 < 2 * ceil(1.39) = 4
  np.testing.assert_allclose(glob.free_bits_kl(kl_global, layout), 0.0)
  # A member's gamma (float32, `step_values`) and the single run's (its config) give one threshold: here
  # gamma M L log K = 0.585 * 16 * 140 * log 1024 rounds up to 9084 in float64 and to 9083 in float32.
  edge = dict(num_values=1024, num_latents=16, free_bits_ratio=0.585, free_bits_mode='reference',
              free_bits_length=140)
  assert math.ceil(0.585 * 16 * 140 * math.log(1024)) == 9084
  one = {'doc_weight': jnp.ones(1), 'valid': jnp.ones((1, 1), bool), 'lengths': jnp.array([1])}
  kl_edge = jnp.full((1, 1, 16), 9083.5 / 16)  # between the two thresholds
  single = tiny('cat_vae', 'local', **edge).free_bits_kl(kl_edge, one)
  member = tiny('cat_vae', 'local', **{**edge, 'free_bits_ratio': 0.5}).free_bits_kl(
      kl_edge, one, {'free_bits_ratio': jnp.float32(0.585)})
  np.testing.assert_allclose(single, 9083.5, rtol=1e-6)
  np.testing.assert_array_equal(member, single)


def test_annealed_temperature():
  args = dict(tau0=1.0, tau_min=0.5, rate=1e-4, interval=1000)
  np.testing.assert_allclose(gumbel.annealed_temperature(999, **args), 1.0)
  np.testing.assert_allclose(gumbel.annealed_temperature(2499, **args), math.exp(-0.2), rtol=1e-6)
  np.testing.assert_allclose(gumbel.annealed_temperature(10**6, **args), 0.5)


# ----------------------------------------------------------------------------------------- code-book math
def test_quantise_and_lookups_match_brute_force():
  rng = np.random.default_rng(0)
  codebook = rng.normal(size=(3, 5, 4)).astype(np.float32)
  h = rng.normal(size=(2, 6, 3, 4)).astype(np.float32)
  idx, quantised = vq.quantise(jnp.asarray(h), jnp.asarray(codebook))
  d = ((h[..., None, :] - codebook[None, None]) ** 2).sum(-1)  # [2, 6, 3, 5]
  np.testing.assert_array_equal(idx, d.argmin(-1))
  np.testing.assert_allclose(quantised, codebook[np.arange(3), d.argmin(-1)], rtol=1e-6)
  weights = rng.dirichlet(np.ones(5), size=(2, 3)).astype(np.float32)
  np.testing.assert_allclose(vq.weighted_lookup(weights, codebook),
                             np.einsum('bmk,mkd->bmd', weights, codebook),
                             rtol=1e-5)


def test_masked_ema_update_matches_numpy():
  """Two steps over per-token vectors [B, L, M, D]; masked positions never count."""
  rng = np.random.default_rng(1)
  m, k, d, decay, eps = 2, 3, 4, 0.9, 1e-3
  codebook = rng.normal(size=(m, k, d))
  ema = vq.ema_init(jnp.asarray(codebook, jnp.float32))
  count, total = np.ones((m, k)), codebook.copy()
  for step in range(2):
    h = rng.normal(size=(2, 5, m, d))
    idx = rng.integers(0, k, size=(2, 5, m))
    real = (np.arange(5)[None, :] < np.array([[3], [5]])).astype(np.float64)
    weight = real * np.array([[1.0], [float(step)]])  # document 1 is padding at the first step
    h_masked = np.where(weight[..., None, None] > 0, h, 1e6)  # garbage at padding must not leak
    ema, book = vq.ema_update_masked(ema, jnp.asarray(h_masked, jnp.float32), jnp.asarray(idx),
                                     jnp.asarray(weight, jnp.float32), decay, eps)
    n, s = np.zeros((m, k)), np.zeros((m, k, d))
    for b in range(2):
      for t in range(5):
        if weight[b, t] > 0:
          for i in range(m):
            n[i, idx[b, t, i]] += 1
            s[i, idx[b, t, i]] += h[b, t, i]
    count, total = decay * count + (1 - decay) * n, decay * total + (1 - decay) * s
    all_counts = count.sum(1, keepdims=True)
    smoothed = (count + eps) / (all_counts + k * eps) * all_counts
    np.testing.assert_allclose(ema['count'], count, rtol=1e-5)
    np.testing.assert_allclose(book, total / smoothed[..., None], rtol=1e-4, atol=1e-5)


def test_usage_average_and_dead_entry_restarts_match_numpy():
  """U <- g U + (1 - g) n over real positions; entries under t / K of their slot's share move onto real
  inputs of the same slot, their usage to the slot mean; live entries and padding never move."""
  rng = np.random.default_rng(2)
  m, k, d, g, t = 2, 6, 3, 0.9, 0.5
  usage = np.abs(rng.normal(size=(m, k)))
  h = rng.normal(size=(3, 4, m, d))
  idx = rng.integers(0, k, size=(3, 4, m))
  weight = (np.arange(4)[None, :] < np.array([[2], [4], [0]])).astype(np.float64)  # row 2: padding only
  n = np.zeros((m, k))
  for b, p, i in np.ndindex(3, 4, m):
    n[i, idx[b, p, i]] += weight[b, p]
  expected_usage = g * usage + (1 - g) * n
  new_usage = vq.usage_update(jnp.asarray(usage, jnp.float32), jnp.asarray(idx), jnp.asarray(weight), g)
  np.testing.assert_allclose(new_usage, expected_usage, rtol=1e-5)

  expected_dead = expected_usage / expected_usage.sum(1, keepdims=True) < t / k
  assert expected_dead.any() and not expected_dead.all()
  h_padded = np.where(weight[..., None, None] > 0, h, 1e6)  # padding inputs must never become entries
  codebook = rng.normal(size=(m, k, d))
  book, restarted_usage, dead = vq.restart_dead(jnp.asarray(codebook, jnp.float32), new_usage,
                                                jnp.asarray(h_padded, jnp.float32), jnp.asarray(weight),
                                                jax.random.key(0), t)
  book, dead = np.asarray(book), np.asarray(dead)
  np.testing.assert_array_equal(dead, expected_dead)
  np.testing.assert_allclose(book[~dead], codebook[~dead], rtol=1e-6)
  real_inputs = h[weight > 0]  # [N, m, d]
  for i, j in zip(*np.nonzero(dead)):
    assert np.min(np.abs(real_inputs[:, i] - book[i, j]).max(-1)) < 1e-6, (i, j)
  np.testing.assert_allclose(np.asarray(restarted_usage),
                             np.where(dead, expected_usage.mean(1, keepdims=True), expected_usage), rtol=1e-5)
  unused, _, none_dead = vq.restart_dead(jnp.asarray(codebook, jnp.float32), new_usage, jnp.asarray(h_padded),
                                         jnp.zeros_like(jnp.asarray(weight)), jax.random.key(0), t)
  assert not np.asarray(none_dead).any()  # a batch of padding restarts nothing
  np.testing.assert_allclose(unused, codebook, rtol=1e-6)


def test_first_step_with_restarts_puts_unused_entries_on_the_batch_inputs():
  method = tiny('vq_vae', 'global', restart_threshold=0.1, num_values=16)
  batch = token_batch([3, 7, 5, 1, 6, 2], 9, mask=[1, 1, 1, 1, 1, 0])
  state = method.init(jax.random.key(0), batch)
  assert state['usage'].shape == (2, 16) and not np.asarray(state['usage']).any()
  new_state, metrics = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  _, _, (_, codes, _, _, (inputs, _, _)) = method.forward(state['params'], batch, jax.random.key(1), 'train', 0)
  used = [set(np.asarray(codes)[:5, 0, i].tolist()) for i in range(2)]
  book = np.asarray(new_state['params']['codebook'])
  real_inputs = np.asarray(inputs)[:5, 0]  # the five real documents' inputs u [5, M, D] of that step
  assert float(metrics['restarts']) == sum(16 - len(u) for u in used)
  for i in range(2):
    for j in set(range(16)) - used[i]:
      assert np.min(np.abs(real_inputs[:, i] - book[i, j]).max(-1)) < 1e-5, (i, j)
  assert (np.asarray(new_state['usage']) > 0).all()


def test_split_dead_matches_a_numpy_twin():
  """A dead value (share under t / K) = the value c some real position p chose in its slot, tilted towards p:
  w + eps v, b - eps v . mean, eps = scale / |v|^2, v = u_p - mean over real positions; its code-book vector
  is c's plus noise. Live values, and everything when the batch is padding, stay."""
  rng = np.random.default_rng(3)
  f, m, k, d, t, scale, noise = 5, 2, 6, 3, 0.5, 2.0, 0.1
  usage = np.abs(rng.normal(size=(m, k))) + 0.01
  usage[0, 4] = usage[1, 1] = 0.0  # certainly dead
  kernel, bias, book = rng.normal(size=(f, m, k)), rng.normal(size=(m, k)), rng.normal(size=(m, k, d))
  codes = rng.integers(0, k, size=(3, 4, m))
  inputs = rng.normal(size=(3, 4, f)) + 3.0
  weight = (np.arange(4)[None, :] < np.array([[2], [4], [0]])).astype(np.float64)
  inputs[weight == 0] = 1e3  # padding: never a donor, never in the mean
  args = [jnp.asarray(a, jnp.float32) for a in (kernel, bias, book, usage)]
  new_kernel, new_bias, new_book, new_usage, dead = map(np.asarray, gumbel.split_dead(
      *args, jnp.asarray(codes), jnp.asarray(inputs, jnp.float32), jnp.asarray(weight), jax.random.key(0), t,
      scale, noise))
  expected_dead = usage / usage.sum(1, keepdims=True) < t / k
  np.testing.assert_array_equal(dead, expected_dead)
  assert expected_dead.any() and not expected_dead.all()
  np.testing.assert_allclose(new_kernel[:, ~dead], kernel[:, ~dead], rtol=1e-6)
  np.testing.assert_allclose(new_bias[~dead], bias[~dead], rtol=1e-6)
  np.testing.assert_allclose(new_book[~dead], book[~dead], rtol=1e-6)
  np.testing.assert_allclose(new_usage, np.where(dead, usage.mean(1, keepdims=True), usage), rtol=1e-5)
  real_u, real_codes = inputs[weight > 0], codes[weight > 0]  # [N, f], [N, m]
  mean = real_u.mean(0)
  for i, j in zip(*np.nonzero(dead)):
    matches = []
    for p in range(len(real_u)):
      c, v = real_codes[p, i], real_u[p] - mean
      eps = scale / (v @ v)
      if (np.allclose(new_kernel[:, i, j], kernel[:, i, c] + eps * v, rtol=1e-4, atol=1e-5)
          and np.isclose(new_bias[i, j], bias[i, c] - eps * v @ mean, rtol=1e-4, atol=1e-4)):
        matches.append(c)
    assert matches, (i, j)
    c = matches[0]
    rms = np.sqrt(np.mean(book[i, c] ** 2))
    assert 0 < np.abs(new_book[i, j] - book[i, c]).max() < 6 * noise * rms
  same = gumbel.split_dead(*args, jnp.asarray(codes), jnp.asarray(inputs, jnp.float32), jnp.zeros((3, 4)),
                           jax.random.key(0), t)
  assert not np.asarray(same[4]).any()  # a batch of padding restarts nothing
  np.testing.assert_allclose(same[0], kernel, rtol=1e-6)


def test_split_dead_splits_a_collapsed_slot_into_several_codes():
  """A slot whose argmax is one value for every input, inputs with a large common part: after the split,
  argmax over the same inputs (brute force) uses many values."""
  rng = np.random.default_rng(4)
  f, k, n = 8, 16, 200
  u = rng.normal(size=(n, f)) + 20.0
  kernel = rng.normal(size=(f, 1, k)) * 0.01
  bias = np.zeros((1, k))
  bias[0, 3] = 5.0  # value 3 wins everywhere
  codes = np.argmax(u @ kernel[:, 0] + bias[0], axis=1)
  assert set(codes.tolist()) == {3}
  usage = np.zeros((1, k))
  usage[0, 3] = 1.0
  new_kernel, new_bias, _, _, dead = gumbel.split_dead(
      jnp.asarray(kernel, jnp.float32), jnp.asarray(bias, jnp.float32), jnp.zeros((1, k, 2)),
      jnp.asarray(usage, jnp.float32), jnp.asarray(codes[:, None]), jnp.asarray(u, jnp.float32), jnp.ones(n),
      jax.random.key(1), 0.1)
  assert int(np.sum(dead)) == k - 1
  after = np.argmax(u @ np.asarray(new_kernel)[:, 0] + np.asarray(new_bias)[0], axis=1)
  assert len(set(after.tolist())) >= 12, np.bincount(after, minlength=k)


@pytest.mark.parametrize('name', ['hard_em', 'cat_vae'])
def test_restarts_of_logits_latents_in_a_training_step(name):
  method = tiny(name, 'global', restart_threshold=0.1, num_values=16, em_iter=1)
  assert method.restarts and not tiny(name, 'global').restarts  # off by default, as the reference
  batch = token_batch([3, 7, 5, 1, 6, 2], 9, mask=[1, 1, 1, 1, 1, 0])
  state = method.init(jax.random.key(0), batch)
  assert state['usage'].shape == (2, 16)
  new_state, metrics = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  assert 0 < float(metrics['restarts']) <= 2 * 15  # five documents use at most five values a slot
  usage = np.asarray(new_state['usage'])
  assert (usage > 0).all()  # the first step's unused values took the slot's mean
  params, old = new_state['params'], state['params']
  assert not np.allclose(params['to_latent']['kernel'], old['to_latent']['kernel'])
  codes = np.asarray(method.encode(params, batch))[:5]
  assert np.all((codes >= 0) & (codes < 16))


# ---------------------------------------------------------------------------------------- layout, helpers
def test_token_layout_shifts_and_appends_eos():
  layout = discrete_vae.token_layout({'tokens': np.array([[5, 6, 7, 0, 0], [8, 0, 0, 0, 0]], np.int32),
                                      'lengths': np.array([3, 1], np.int32), 'mask': np.ones(2, np.float32)})
  np.testing.assert_array_equal(layout['decoder_inputs'], [[2, 5, 6, 7, 0], [2, 8, 0, 0, 0]])
  np.testing.assert_array_equal(layout['targets'], [[5, 6, 7, 3, 0], [8, 3, 0, 0, 0]])
  np.testing.assert_array_equal(layout['target_valid'], [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
  np.testing.assert_array_equal(layout['valid'], [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])


def test_word_dropout_acts_in_training_only():
  plain, dropped = tiny('vq_vae', 'global'), tiny('vq_vae', 'global', word_dropout=0.5)
  batch = token_batch([6, 7, 5], 8)

  @jax.jit
  def run(rng):
    params = plain.init(rng, batch)['params']
    train_losses = [m.loss(params, {}, batch, jax.random.key(1), 'train', 0)[0] for m in (plain, dropped)]
    return train_losses, plain.score(params, batch), dropped.score(params, batch)

  (loss_plain, loss_dropped), score_plain, score_dropped = run(jax.random.key(0))
  assert float(loss_plain) != float(loss_dropped)
  jax.tree.map(np.testing.assert_array_equal, score_plain, score_dropped)


@pytest.mark.parametrize('name,level', [('vq_vae', 'global'), ('hard_em', 'local')])
def test_packed_output_layer_gives_the_full_layers_loss_and_gradients(name, level, pack=0.75):
  """The 22 predicted positions of 3 x 12 go through a packed buffer (the tiny configs turn packing off;
  `tests/test_softmax.py` covers every buffer and the full path): the training loss and every gradient equal
  the output layer applied at all B x T positions."""
  batch = token_batch([6, 7, 6], 12)
  full, packed = tiny(name, level, pack_targets=0.0), tiny(name, level, pack_targets=pack)
  params = full.init(jax.random.key(0), batch)['params']

  @jax.jit
  def run(params):
    return [jax.value_and_grad(lambda p, m=m: m.loss(p, {}, batch, jax.random.key(1), 'train', 0)[0])(params)
            for m in (full, packed)]

  (value_full, grads_full), (value_packed, grads_packed) = run(params)
  np.testing.assert_allclose(value_packed, value_full, rtol=1e-5)
  for g_packed, g_full in zip(jax.tree.leaves(grads_packed), jax.tree.leaves(grads_full)):
    np.testing.assert_allclose(g_packed, g_full, rtol=1e-4, atol=1e-6)


def test_the_loss_passes_the_networks_own_output_layer():
  """The loss gives the output layer as its parameters (`softmax.Affine`): it is the network's own output
  layer (with a nonzero bias)."""
  method = tiny('vq_vae', 'global')
  params = method.init(jax.random.key(0), token_batch([6, 7, 6], 12))['params']
  states = jax.random.normal(jax.random.key(2), (5, method.config.model_dim))
  output = {'kernel': params['output']['kernel'], 'bias': jax.random.normal(jax.random.key(3), (VOCAB,))}  # not 0
  variables = {'params': {**{k: v for k, v in params.items() if k != 'codebook'}, 'output': output}}
  np.testing.assert_allclose(softmax.Affine(**output)(states), method._network().apply(
      variables, states, method=discrete_vae.TransformerAutoencoder.project), rtol=1e-6, atol=1e-6)


def test_codebook_usage_and_noam():
  usage = discrete_vae.codebook_usage(np.array([[0, 1], [0, 1], [2, 1], [5, 5]]), 8, mask=[1, 1, 1, 0])
  np.testing.assert_array_equal(usage['used'], [2, 1])
  entropy = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
  np.testing.assert_allclose(usage['perplexity'], [math.exp(entropy), 1.0])
  local = discrete_vae.codebook_usage(np.array([[[3], [4], [-1]], [[3], [-1], [-1]]]), 8)
  np.testing.assert_array_equal(local['used'], [2])
  schedule = discrete_vae.noam_schedule(64, 100)
  np.testing.assert_allclose([schedule(0), schedule(99), schedule(399)],
                             [64**-0.5 * 100**-1.5, 64**-0.5 * 100**-0.5, 64**-0.5 * 400**-0.5], rtol=1e-5)


# ------------------------------------------------------------------------------------------ the methods
def test_e_step_loop_equals_unrolled_steps():
  """The fori_loop of em_iter = 3 E-steps equals 3 single E-steps run one after another. Alternating CatVAE
  runs the same loop as Hard EM, and its Gumbel samples show that every step draws its own rng."""
  method = tiny('cat_vae', 'global', alternating=True, em_iter=3)
  batch = token_batch([3, 5, 2, 4], 7)
  rng = jax.random.key(5)

  @jax.jit
  def init_and_loop(init_rng):
    state = method.init(init_rng, batch)
    return state, method.e_steps(state['params'], state['opt_state']['encoder'], batch, rng, state['step'])

  state, looped = init_and_loop(jax.random.key(0))
  params = state['params']
  encoder, _ = method._groups(params)
  fixed = {k: v for k, v in params.items() if k not in encoder}
  one_step = jax.jit(method.e_step)
  unrolled = (encoder, state['opt_state']['encoder'], None)
  for i in range(3):
    unrolled = one_step(unrolled[0], unrolled[1], fixed, batch, rng, state['step'], i)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), looped, unrolled)
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), encoder, looped[0])
  assert min(jax.tree.leaves(moved)) > 0  # every encoder parameter took the steps


STEP_HPARAMS = [('vq_vae', {'word_dropout': 0.2, 'dropout': 0.1},
                 {'commitment': 0.5, 'word_dropout': 0.6, 'dropout': 0.3}),
                ('cat_vae', {'alternating': True, 'em_iter': 2, 'tau_anneal': True, 'tau_anneal_interval': 1},
                 {'kl_weight': 0.5, 'free_bits_ratio': 0.05, 'tau': 1.5, 'tau_min': 1.2, 'tau_anneal_rate': 0.5})]
# (the annealed tau of the second step, max(1.2, 1.5 exp(-0.5)), is the member's floor: a member that read
# the config's floor or rate would step with another tau)


@pytest.mark.parametrize('name,overrides,values', STEP_HPARAMS, ids=[n for n, _, _ in STEP_HPARAMS])
def test_step_hyperparameters_are_population_values(name, overrides, values):
  """VQ's commitment and CatVAE's KL weight, free-bits ratio and temperature are population hyperparameters
  kept in the state (the alternating CatVAE reads them in its E-step loop too), and so are dropout, word
  dropout and the annealing's floor and rate where the config has them: a member given other values steps as
  a single run configured with them, and differently from a member with the config's."""
  batch = token_batch([3, 5, 2, 4], 7)
  configured = tiny(name, 'global', **{**overrides, **values})  # a single run with these values
  method = tiny(name, 'global', **overrides)  # a population's, whose config has the defaults
  defaults = method.default_hparams()
  assert set(defaults) == {'learning_rate', *values}
  step = jax.jit(method.train_step)
  single = configured.init(jax.random.key(0), batch)
  member = method.init(jax.random.key(0), batch, {**defaults, **values})
  default = method.init(jax.random.key(0), batch, defaults)
  assert set(member['hparams']) == set(defaults)
  for i in range(2):
    single, single_metrics = jax.jit(configured.train_step)(single, batch, jax.random.key(i))
    member, member_metrics = step(member, batch, jax.random.key(i))
    default, default_metrics = step(default, batch, jax.random.key(i))
    for key in ('loss', 'e_loss') if 'e_loss' in single_metrics else ('loss',):
      assert float(member_metrics[key]) == pytest.approx(float(single_metrics[key]), rel=1e-5)
    trained_with = 'e_loss' if 'e_loss' in single_metrics else 'loss'  # the alternating M-step's codes are hard
    assert abs(float(default_metrics[trained_with]) - float(member_metrics[trained_with])) > 1e-3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), single['params'],
               member['params'])


@pytest.mark.parametrize('name,level', [('vq_vae', 'local'), ('cat_vae', 'local'), ('hard_em', 'global')])
def test_padding_never_changes_codes_scores_or_features(name, level):
  method = tiny(name, level)
  narrow, wide = token_batch([3, 6, 1], 7, seed=4), token_batch([3, 6, 1], 12, seed=4)
  wide['tokens'][:, 7:] = 0

  @jax.jit
  def run(rng):
    params = method.init(rng, narrow)['params']
    return [(method.encode(params, b), method.score(params, b, None), method.features(params, b))
            for b in (narrow, wide)]

  (codes_n, score_n, feat_n), (codes_w, score_w, feat_w) = run(jax.random.key(0))
  if level == 'local':
    np.testing.assert_array_equal(codes_w[:, :7], codes_n)
    assert np.all(np.asarray(codes_w)[:, 7:] == -1)
    valid = np.arange(7)[None, :] < np.array([[3], [6], [1]])
    assert np.all(np.asarray(codes_n)[~valid] == -1) and np.all(np.asarray(codes_n)[valid] >= 0)
  else:
    np.testing.assert_array_equal(codes_w, codes_n)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), (score_n, feat_n),
               (score_w, feat_w))


TRAIN_CASES = [
    ('vq_vae', 'global', dict(global_features='concat', commitment=0.1, restart_threshold=0.2)),
    ('vq_vae', 'local', dict(codebook_update='ema', alternating=True, restart_threshold=0.5)),
    ('cat_vae', 'global', dict(alternating=True, em_iter=2)),
    ('cat_vae', 'local', dict(free_bits_mode='reference', tau_anneal=True, tau_anneal_interval=5, norm='pre')),
    ('hard_em', 'global', dict(noam=True, noam_warmup=10, noam_factor=0.1)),
    ('hard_em', 'local', dict(em_relax=False, em_iter=1, restart_threshold=0.5)),
]


@pytest.mark.parametrize('name,level,overrides', TRAIN_CASES, ids=[f'{n}-{l}' for n, l, _ in TRAIN_CASES])
def test_training_lowers_the_loss_and_evaluation_shapes(name, level, overrides):
  method = tiny(name, level, **overrides)
  assert (method.reads, method.emits, method.code_length, method.num_values) == ('tokens', 'symbols', 2, 8)
  lengths = [3, 7, 5, 1, 6, 0]
  batch = token_batch(lengths, 9, mask=[1, 1, 1, 1, 1, 0])  # the last row pads an evaluation batch

  @jax.jit
  def run(rng):
    state = method.init(rng, batch)
    def body(state, step_rng):
      state, metrics = method.train_step(state, batch, step_rng)
      return state, metrics['loss']
    final, losses = jax.lax.scan(body, state, jax.random.split(rng, 30))
    params = final['params']
    codes = method.encode(params, batch)
    sampled = method.encode(params, batch, jax.random.key(1)) if name == 'cat_vae' else codes  # from q(z|x)
    evaluation = (codes, sampled, method.score(params, batch, None), method.features(params, batch))
    return state, final, losses, *evaluation

  first, state, losses, codes, sampled, score, features = run(jax.random.key(0))
  losses = np.asarray(losses)
  assert np.all(np.isfinite(losses)), losses
  assert losses[-5:].mean() < 0.95 * losses[:5].mean(), losses
  expected_shape = (6, 2) if level == 'global' else (6, 9, 2)
  assert codes.shape == expected_shape and codes.dtype == jnp.int32
  codes = np.asarray(codes)
  if level == 'local':
    valid = np.arange(9)[None, :] < np.array(lengths)[:, None]
    assert np.all(codes[~valid] == -1) and np.all((codes[valid] >= 0) & (codes[valid] < 8))
  else:
    assert np.all((codes >= 0) & (codes < 8))
  assert sampled.shape == codes.shape and np.all(np.asarray(sampled)[codes >= 0] >= 0)
  assert set(score) == ({'nll', 'tokens', 'kl'} if name == 'cat_vae' else {'nll', 'tokens'})
  np.testing.assert_array_equal(score['tokens'], [4, 8, 6, 2, 7, 0])
  assert np.all(np.isfinite(score['nll'])) and np.all(np.asarray(score['nll'])[:5] > 0)
  assert float(score['nll'][5]) == 0.0
  width = 2 * 16 if overrides.get('global_features') == 'concat' else 16
  assert features.shape == (6, width) and features.dtype == jnp.float32
  assert np.all(np.isfinite(features))
  assert int(state['step']) == 30
  assert ('ema' in state) == (overrides.get('codebook_update') == 'ema')
  assert ('usage' in state) == method.restarts
  if 'ema' in state and 'usage' in state:  # restarted entries keep the moving averages consistent
    np.testing.assert_allclose(state['ema']['sum'] / state['ema']['count'][..., None],
                               state['params']['codebook'], rtol=5e-3, atol=5e-3)
  assert not np.allclose(first['params']['codebook'], state['params']['codebook'])
  if method.alternating:
    assert set(state['opt_state']) == {'encoder', 'decoder'}


# --------------------------------------------------------------------------------------------------- CBOW
def test_cbow_learns_a_separable_task_and_ignores_unlabelled_rows():
  rng = np.random.default_rng(0)
  labels = np.tile([0, 1], 16)
  lengths = rng.integers(2, 7, size=32)
  tokens = np.zeros((32, 8), np.int32)
  for b, (y, n) in enumerate(zip(labels, lengths)):
    tokens[b, :n] = rng.integers(4, 8, n) if y == 0 else rng.integers(8, 12, n)
  batch = {'tokens': tokens, 'lengths': lengths.astype(np.int32), 'mask': np.ones(32, np.float32),
           'label': labels.astype(np.int32)}
  mc = cbow.default_model_config()
  assert (mc.embedding_dim, mc.learning_rate) == (64, 3e-4)
  mc.update(embedding_dim=8, learning_rate=0.05)
  method = cbow.CBOW(mc, 12, DataInfo(token_vocab_size=12, num_labels=2))
  assert (method.reads, method.emits) == ('tokens', None)
  # Unlabelled (-1) and padding (mask 0) rows change neither the loss nor the gradient.
  extra = {'tokens': np.concatenate([tokens, rng.integers(4, 12, (3, 8)).astype(np.int32)]),
           'lengths': np.concatenate([lengths, [8, 8, 8]]).astype(np.int32),
           'mask': np.array([1.0] * 32 + [1.0, 1.0, 0.0], np.float32),
           'label': np.concatenate([labels, [-1, -1, 1]]).astype(np.int32)}

  @jax.jit
  def run(rng):
    state = method.init(rng, batch)
    state, _ = jax.lax.scan(lambda s, r: method.train_step(s, batch, r), state, jax.random.split(rng, 60))
    p = state['params']
    losses = method.loss(p, extra)[0], method.loss(p, batch)[0]
    return method.predict(p, batch), method.features(p, batch), *losses

  logits, features, loss_extra, loss = run(jax.random.key(0))
  assert logits.shape == (32, 2) and features.shape == (32, 8)
  np.testing.assert_array_equal(np.argmax(logits, -1), labels)
  np.testing.assert_allclose(loss_extra, loss, rtol=1e-6)


# ------------------------------------------------------------------------------------------ refused settings
BAD = [
    ('vq_vae', 'global', 'num_values', 1, 'num_values'),
    ('cat_vae', 'global', 'num_latents', 0, 'num_latents'),
    ('vq_vae', 'local', 'num_latents', 3, 'num_latents'),
    ('hard_em', 'local', 'num_latents', 5, 'num_latents'),
    ('cat_vae', 'local', 'num_latents', 6, 'num_latents'),
    ('cat_vae', 'global', 'free_bits_ratio', 1.5, 'free_bits_ratio'),
    ('cat_vae', 'global', 'free_bits_ratio', -0.1, 'free_bits_ratio'),
    ('cat_vae', 'global', 'free_bits_mode', 'batch', 'free_bits_mode'),
    ('hard_em', 'global', 'em_iter', 0, 'em_iter'),
    ('vq_vae', 'global', 'commitment', -0.1, 'commitment'),
    ('cat_vae', 'global', 'tau', 0.0, 'tau'),
    ('vq_vae', 'global', 'codebook_update', 'kmeans', 'codebook_update'),
    ('vq_vae', 'global', 'restart_threshold', 1.5, 'restart_threshold'),
    ('vq_vae', 'local', 'usage_decay', 1.0, 'usage_decay'),
    ('hard_em', 'global', 'restart_threshold', -0.1, 'restart_threshold'),
    ('vq_vae', 'global', 'level', 'sentence', 'level'),
    ('vq_vae', 'global', 'num_heads', 3, 'num_heads'),
    ('cat_vae', 'global', 'codebook_init', 'orthogonal', 'codebook_init'),
]


@pytest.mark.parametrize('name,level,field,value,match', BAD)
def test_impossible_settings_are_refused_naming_the_field(name, level, field, value, match):
  mc = discrete_vae.default_model_config(name, level)
  mc[field] = value
  with pytest.raises(ValueError, match=f'model.{match}'):
    discrete_vae.METHODS[name](mc, VOCAB, DataInfo(token_vocab_size=VOCAB))


@pytest.mark.parametrize('method,key,field,value', [('vq_vae', 'commitment', 'commitment', -0.5),
                                                      ('vq_vae', 'restart', 'restart_threshold', -0.1),
                                                      ('hard_em', 'em_iter', 'em_iter', 0),
                                                      ('cat_vae', 'word_dropout', 'word_dropout', -0.2)])
def test_config_arguments_are_taken_as_given_and_the_method_refuses_bad_ones(method, key, field, value):
  """No value of an argument stands for "not given": a negative commitment or em_iter=0 reaches the model
  config (and is refused naming its field) instead of falling back to the default."""
  from dtr import config_utils  # pylint: disable=g-import-not-at-top
  module = config_utils.load_config_module('discrete_vae')
  mc = module.get_config(f'method={method},{key}={value}').model
  assert mc[field] == value
  with pytest.raises(ValueError, match=f'model.{field}'):
    discrete_vae.METHODS[method](mc, VOCAB, DataInfo(token_vocab_size=VOCAB))
  default = module.get_config(f'method={method}').model
  assert default.get(field) != value
  with pytest.raises(ValueError, match=f"Config argument {key}='x' must be of type"):
    module.get_config(f'method={method},{key}=x')


def test_defaults_are_valid_and_global_latents_need_no_divisibility():
  for name in discrete_vae.METHODS:
    for level in discrete_vae.LEVELS:
      mc = discrete_vae.default_model_config(name, level)
      assert mc.name == name and mc.level == level
      discrete_vae.METHODS[name](mc, VOCAB, DataInfo(token_vocab_size=VOCAB))
  mc = discrete_vae.default_model_config('vq_vae', 'global')
  mc.num_latents = 3  # d = 64: M vectors of width d each, no slicing
  assert discrete_vae.VQVAE(mc, VOCAB).code_dim == 64
  with pytest.raises(ValueError, match='Unknown discrete VAE'):
    discrete_vae.default_model_config('gumbel_vae')
  with pytest.raises(ValueError, match='token_vocab_size'):
    discrete_vae.VQVAE(discrete_vae.default_model_config(), 4, DataInfo(token_vocab_size=0))
  assert cbow.CBOW.batch_fields == ('label',)
  with pytest.raises(ValueError, match='num_labels'):
    cbow.CBOW(cbow.default_model_config(), VOCAB, DataInfo(token_vocab_size=VOCAB, num_labels=1))
  bad = cbow.default_model_config()
  bad.embedding_dim = 0
  with pytest.raises(ValueError, match='model.embedding_dim'):
    cbow.CBOW(bad, VOCAB, DataInfo(token_vocab_size=VOCAB, num_labels=3))


def test_code_books_start_as_the_reference_s():
  """N(0, 1) entries for CatVAE and Hard EM, Xavier-uniform for the VQ-VAE (and wherever asked)."""
  for name, kind in (('cat_vae', 'normal'), ('hard_em', 'normal'), ('vq_vae', 'xavier')):
    mc = discrete_vae.default_model_config(name, 'global')
    assert mc.get('codebook_init', 'xavier') == kind
  rng = jax.random.key(0)
  normal = np.asarray(discrete_vae.init_codebook(rng, 'normal', (2, 512, 64)))
  assert abs(normal.mean()) < 0.01 and abs(normal.std() - 1.0) < 0.01
  bound = math.sqrt(6.0 / (512 + 64))
  xavier = np.asarray(discrete_vae.init_codebook(rng, 'xavier', (2, 512, 64)))
  assert np.abs(xavier).max() <= bound and np.abs(xavier).max() > 0.99 * bound
  assert abs(xavier.std() - bound / math.sqrt(3.0)) < 0.01 * bound
  for kind in ('normal', 'xavier'):
    method = tiny('hard_em', 'global', num_values=16, codebook_init=kind)
    book = np.asarray(method.init(jax.random.key(1), token_batch([3, 5], 6))['params']['codebook'])
    scale = 1.0 if kind == 'normal' else math.sqrt(6.0 / (16 + method.code_dim) / 3.0)
    assert book.shape == (method.config.num_latents, 16, method.code_dim)
    assert 0.6 * scale < book.std() < 1.4 * scale
