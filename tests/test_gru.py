"""The GRU layers against a NumPy step-by-step twin; masking, teacher forcing and the decoding loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtr.nn import gru

PAD, BOS, EOS = gru.PAD_ID, gru.BOS_ID, gru.EOS_ID


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def numpy_gru(p, x_BxLxD, lengths, reverse=False):
  """Step-by-step twin: each sequence read over its own length only (backwards from its last token)."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  B, L, _ = x_BxLxD.shape
  H = p['recurrent_kernel'].shape[0]
  outputs, finals = np.zeros((B, L, H)), np.zeros((B, H))
  for b in range(B):
    h = np.zeros(H)
    steps = range(lengths[b] - 1, -1, -1) if reverse else range(lengths[b])
    for t in steps:
      xp = x_BxLxD[b, t] @ p['input_kernel'] + p['input_bias']
      hp = h @ p['recurrent_kernel'] + p['recurrent_bias']
      r = _sigmoid(xp[:H] + hp[:H])
      u = _sigmoid(xp[H:2 * H] + hp[H:2 * H])
      n = np.tanh(xp[2 * H:] + r * hp[2 * H:])
      h = (1 - u) * n + u * h
      outputs[b, t] = h
    finals[b] = h
  return outputs, finals


@pytest.fixture(scope='module', params=[7, 10], ids=['width7', 'width10'])
def padded(request):
  """Lengths 7, 3, 1, 0 at width 7, and at width 10, whose last 3 steps no sequence reaches."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, request.param, 5)).astype(np.float32)
  lengths = np.array([7, 3, 1, 0], np.int32)
  return x, lengths


@pytest.mark.parametrize('reverse', [False, True])
def test_gru_matches_numpy_twin(padded, reverse):
  x, lengths = padded
  layer = gru.GRU(6, reverse=reverse)
  params = layer.init(jax.random.key(1), x, lengths)['params']
  params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(2), a.shape), params)  # bias != 0
  outputs, final = layer.apply({'params': params}, x, lengths)
  expected_outputs, expected_final = numpy_gru(params, x.astype(np.float64), lengths, reverse)
  np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(final, expected_final, rtol=1e-5, atol=1e-5)


def _loop_gru(p, x_BxLxD, lengths, initial_BxH, reverse):
  """Autodiff reference: a Python loop over each sequence's own real steps, no masks."""
  outputs, finals = [], []
  for b in range(x_BxLxD.shape[0]):
    h, out = initial_BxH[b], [jnp.zeros_like(initial_BxH[b])] * x_BxLxD.shape[1]
    steps = range(int(lengths[b]) - 1, -1, -1) if reverse else range(int(lengths[b]))
    for t in steps:
      h = gru.gru_cell(p, h[None], x_BxLxD[b, t][None])[0]
      out[t] = h
    outputs.append(jnp.stack(out))
    finals.append(h)
  return jnp.stack(outputs), jnp.stack(finals)


@pytest.mark.parametrize('reverse', [False, True])
def test_gru_gradients_match_a_loop_and_finite_differences(padded, reverse):
  """The hand-written backward pass of the recurrence (`_recurrence`) against autodiff of a plain loop over
  each sequence's real steps, and against central differences, in float64, for every input."""
  x, lengths = padded
  with jax.enable_x64(True):
    rng = np.random.default_rng(3)
    p = {'input_kernel': rng.normal(size=(5, 18)), 'input_bias': rng.normal(size=18),
         'recurrent_kernel': 0.5 * rng.normal(size=(6, 18)), 'recurrent_bias': rng.normal(size=18)}
    h0 = rng.normal(size=(4, 6))
    w_out, w_final = rng.normal(size=(4, x.shape[1], 6)), rng.normal(size=(4, 6))

    def loss(scan):
      def f(p, x, h0):
        outputs, final = scan(p, x, lengths, h0, reverse)
        return jnp.sum(jnp.sin(outputs) * w_out) + jnp.sum(final ** 2 * w_final)
      return f

    args = (p, jnp.asarray(x, jnp.float64), jnp.asarray(h0))
    grads = jax.grad(loss(gru.gru_scan), (0, 1, 2))(*args)
    expected = jax.grad(loss(_loop_gru), (0, 1, 2))(*args)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert float(jnp.abs(grads[1][3]).max()) == 0.0  # the empty sequence's inputs get no gradient
    np.testing.assert_allclose(grads[2][3], 2 * h0[3] * w_final[3])  # ... its initial state is its final one
    for i in range(3):  # random directions, central differences
      direction = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=np.shape(a))), args)
      eps = 1e-6
      shifted = lambda sign: loss(gru.gru_scan)(*jax.tree.map(lambda a, d: a + sign * eps * d, args, direction))
      numeric = (shifted(1) - shifted(-1)) / (2 * eps)
      analytic = sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
      np.testing.assert_allclose(analytic, numeric, rtol=1e-6)


def test_bigru_scan_equals_two_scans_and_their_gradients(padded):
  """Both directions in one scan (`bigru_scan`) against `gru_scan` per direction, values and gradients."""
  x, lengths = padded
  rng = np.random.default_rng(5)
  make = lambda: {'input_kernel': jnp.asarray(rng.normal(size=(5, 18)), jnp.float32),
                  'input_bias': jnp.asarray(rng.normal(size=18), jnp.float32),
                  'recurrent_kernel': jnp.asarray(0.5 * rng.normal(size=(6, 18)), jnp.float32),
                  'recurrent_bias': jnp.asarray(rng.normal(size=18), jnp.float32)}
  forward, backward = make(), make()
  weights = (jnp.asarray(rng.normal(size=(4, x.shape[1], 12)), jnp.float32),
             jnp.asarray(rng.normal(size=(4, 12)), jnp.float32))
  zeros = jnp.zeros((4, 6))

  def fused(fw, bw, x):
    return gru.bigru_scan(fw, bw, x, lengths)

  def separate(fw, bw, x):
    out_fw, final_fw = gru.gru_scan(fw, x, lengths, zeros)
    out_bw, final_bw = gru.gru_scan(bw, x, lengths, zeros, reverse=True)
    return jnp.concatenate([out_fw, out_bw], -1), jnp.concatenate([final_fw, final_bw], -1)

  for got, want in zip(fused(forward, backward, x), separate(forward, backward, x)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  loss = lambda f: lambda *a: (jnp.sum(jnp.tanh(f(*a)[0]) * weights[0]) + jnp.sum(f(*a)[1] ** 2 * weights[1]))
  grads = jax.grad(loss(fused), (0, 1, 2))(forward, backward, jnp.asarray(x))
  expected = jax.grad(loss(separate), (0, 1, 2))(forward, backward, jnp.asarray(x))
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_gru_cell_is_one_step_of_the_scan(padded):
  x, _ = padded
  layer = gru.GRU(6)
  params = layer.init(jax.random.key(1), x, np.full(4, 7, np.int32))['params']
  _, final = layer.apply({'params': params}, x[:, :1], np.ones(4, np.int32))
  np.testing.assert_allclose(gru.gru_cell(params, jnp.zeros((4, 6)), x[:, 0]), final, rtol=1e-6, atol=1e-6)


def test_padding_never_changes_an_encoding(padded):
  x, lengths = padded
  wider = np.concatenate([x, np.random.default_rng(3).normal(size=(4, 5, 5)).astype(np.float32)], axis=1)
  wider[np.arange(wider.shape[1])[None, :] >= lengths[:, None]] = 9.0  # garbage on the padding, both widths
  narrow = wider[:, :7]
  layer = gru.BiGRU(6)
  params = layer.init(jax.random.key(4), narrow, lengths)
  out_narrow, final_narrow = layer.apply(params, narrow, lengths)
  out_wide, final_wide = layer.apply(params, wider, lengths)
  np.testing.assert_allclose(final_narrow, final_wide, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(out_narrow, out_wide[:, :7], rtol=1e-6, atol=1e-6)
  assert np.all(np.asarray(out_wide)[np.arange(wider.shape[1])[None, :] >= lengths[:, None]] == 0)
  np.testing.assert_array_equal(final_wide[3], 0)  # an empty sentence keeps the initial state


def test_teacher_forcing_layout():
  tokens = np.array([[5, 6, 7, 0], [8, 0, 0, 0], [0, 0, 0, 0]], np.int32)
  inputs, targets, mask = gru.teacher_forcing(tokens, np.array([3, 1, 0]))
  np.testing.assert_array_equal(inputs, [[BOS, 5, 6, 7], [BOS, 8, 0, 0], [BOS, 0, 0, 0]])
  np.testing.assert_array_equal(targets, [[5, 6, 7, EOS], [8, EOS, 0, 0], [EOS, 0, 0, 0]])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])


def test_word_dropout_zeroes_whole_tokens():
  embedded = jnp.ones((50, 40, 3))
  dropped = np.asarray(gru.word_dropout(embedded, 0.5, jax.random.key(0)))
  per_token = dropped.sum(-1)
  assert set(np.unique(per_token)) <= {0.0, 3.0}
  assert 0.45 < np.mean(per_token == 0) < 0.55
  np.testing.assert_array_equal(gru.word_dropout(embedded, 0.0, jax.random.key(0)), embedded)


def _toy_step(vocab=7, hidden=5, seed=0):
  rng = np.random.default_rng(seed)
  embed = rng.normal(size=(vocab, 3)).astype(np.float32)
  params = {'input_kernel': rng.normal(size=(3, 3 * hidden)), 'input_bias': rng.normal(size=3 * hidden),
            'recurrent_kernel': rng.normal(size=(hidden, 3 * hidden)), 'recurrent_bias': np.zeros(3 * hidden)}
  params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
  out = jnp.asarray(rng.normal(size=(hidden, vocab)) * 3, jnp.float32)

  def step(h, token):
    h = gru.gru_cell(params, h, jnp.asarray(embed)[token])
    return h, h @ out

  return step


def test_greedy_decoding_equals_stepwise_argmax():
  step, batch, max_len = _toy_step(), 6, 9
  h0 = jax.random.normal(jax.random.key(0), (batch, 5))
  decoded = np.asarray(jax.jit(lambda h: gru.decode(step, h, batch, max_len))(h0))
  for b in range(batch):  # the twin: one row at a time, argmax over all but pad and bos, stop at eos
    h, token, row = h0[b:b + 1], np.array([BOS]), []
    for _ in range(max_len):
      h, logits = step(h, token)
      logits = np.array(logits[0])
      logits[[PAD, BOS]] = -np.inf
      token = np.array([int(np.argmax(logits))])
      if token[0] == EOS:
        break
      row.append(int(token[0]))
    np.testing.assert_array_equal(decoded[b], row + [PAD] * (max_len - len(row)))


def test_sampled_decoding_is_in_tokens_layout():
  step, batch, max_len = _toy_step(seed=1), 64, 12
  h0 = jax.random.normal(jax.random.key(1), (batch, 5))
  decoded = np.asarray(gru.decode(step, h0, batch, max_len, jax.random.key(2)))
  assert decoded.shape == (batch, max_len)
  assert not np.isin(decoded, [BOS, EOS]).any()
  lengths = (decoded != PAD).sum(1)
  assert np.all(decoded[np.arange(max_len)[None, :] >= lengths[:, None]] == PAD)  # nothing after a pad
  again = np.asarray(gru.decode(step, h0, batch, max_len, jax.random.key(2)))
  np.testing.assert_array_equal(decoded, again)
  assert len({tuple(r) for r in decoded}) > 1
