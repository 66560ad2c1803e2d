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


@pytest.fixture(scope='module')
def padded():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(4, 7, 5)).astype(np.float32)
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


def test_gru_cell_is_one_step_of_the_scan(padded):
  x, _ = padded
  layer = gru.GRU(6)
  params = layer.init(jax.random.key(1), x, np.full(4, 7, np.int32))['params']
  _, final = layer.apply({'params': params}, x[:, :1], np.ones(4, np.int32))
  np.testing.assert_allclose(gru.gru_cell(params, jnp.zeros((4, 6)), x[:, 0]), final, rtol=1e-6, atol=1e-6)


def test_padding_never_changes_an_encoding(padded):
  x, lengths = padded
  wider = np.concatenate([x, np.random.default_rng(3).normal(size=(4, 5, 5)).astype(np.float32)], axis=1)
  wider[np.arange(12)[None, :] >= lengths[:, None]] = 9.0  # garbage on the padding, both widths
  narrow = wider[:, :7]
  layer = gru.BiGRU(6)
  params = layer.init(jax.random.key(4), narrow, lengths)
  out_narrow, final_narrow = layer.apply(params, narrow, lengths)
  out_wide, final_wide = layer.apply(params, wider, lengths)
  np.testing.assert_allclose(final_narrow, final_wide, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(out_narrow, out_wide[:, :7], rtol=1e-6, atol=1e-6)
  assert np.all(np.asarray(out_wide)[np.arange(12)[None, :] >= lengths[:, None]] == 0)
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
