"""Transformer layers: positions and attention against float64 NumPy twins; masks hide padded keys and later
target positions exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtr.nn import transformer


def _np(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def test_sinusoidal_positions_match_the_formula():
  length, dim = 7, 6
  expected = np.zeros((length, dim))
  for p in range(length):
    for i in range(0, dim, 2):
      expected[p, i] = np.sin(p / 10000 ** (i / dim))
      expected[p, i + 1] = np.cos(p / 10000 ** (i / dim))
  np.testing.assert_allclose(transformer.sinusoidal_positions(length, dim), expected, atol=1e-6)
  assert transformer.sinusoidal_positions(3, 5).shape == (3, 5)  # odd widths drop the last cosine


def _attention_numpy(p, x, m, allowed, num_heads):
  """Float64 multi-head attention; `allowed` [B, T, S] (True = may attend)."""
  def proj(name, v):
    return v @ p[name]['kernel'] + p[name].get('bias', 0.0)
  q, k, v = proj('query', x), proj('key', m), proj('value', m)
  batch, t, d = q.shape
  e = d // num_heads
  out = np.zeros_like(q)
  for b in range(batch):
    for h in range(num_heads):
      sl = slice(h * e, (h + 1) * e)
      logits = q[b, :, sl] @ k[b, :, sl].T / np.sqrt(e)
      logits = np.where(allowed[b], logits, -np.inf)
      w = np.exp(logits - logits.max(-1, keepdims=True))
      out[b, :, sl] = (w / w.sum(-1, keepdims=True)) @ v[b, :, sl]
  return out @ p['out']['kernel'] + p['out']['bias']


@pytest.mark.parametrize('causal', [False, True])
def test_multi_head_attention_matches_numpy(causal):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 8)).astype(np.float32)
  valid = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)
  mask = transformer.key_padding_mask(valid)
  allowed = np.broadcast_to(valid[:, None, :], (2, 5, 5))
  if causal:
    mask = mask & transformer.causal_mask(5)
    allowed = allowed & np.tril(np.ones((5, 5), bool))[None]
  attention = transformer.MultiHeadAttention(num_heads=2)
  params = attention.init(jax.random.key(0), x, x, mask)['params']
  out = attention.apply({'params': params}, x, x, mask)
  expected = _attention_numpy(_np(params), x.astype(np.float64), x.astype(np.float64), allowed, 2)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_a_query_with_no_key_gets_uniform_weights_not_nan():
  attention = transformer.MultiHeadAttention(num_heads=1)
  x = jnp.ones((1, 2, 4))
  mask = transformer.key_padding_mask(jnp.zeros((1, 2), bool))
  params = attention.init(jax.random.key(0), x, x, mask)
  assert np.all(np.isfinite(attention.apply(params, x, x, mask)))


@pytest.mark.parametrize('norm', ['post', 'pre'])
def test_padded_keys_never_change_encoder_outputs(norm):
  rng = np.random.default_rng(1)
  encoder = transformer.TransformerEncoder(num_layers=2, num_heads=2, ff_dim=16, dropout_rate=0.1, norm=norm)
  x = rng.normal(size=(2, 6, 8)).astype(np.float32)
  valid = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], bool)
  params = encoder.init(jax.random.key(0), x, valid)
  assert ('final_norm' in params['params']) == (norm == 'pre')
  out = encoder.apply(params, x, valid)
  noisy = np.where(valid[..., None], x, rng.normal(size=x.shape) * 100).astype(np.float32)
  wider = np.concatenate([x, rng.normal(size=(2, 3, 8)).astype(np.float32)], axis=1)
  wider_valid = np.concatenate([valid, np.zeros((2, 3), bool)], axis=1)
  for other, other_valid in ((noisy, valid), (wider, wider_valid)):
    again = encoder.apply(params, other, other_valid)
    np.testing.assert_allclose(np.asarray(again)[:, :6][valid], np.asarray(out)[valid], rtol=1e-5, atol=1e-5)
  # Dropout is on only when asked, with an rng.
  dropped = encoder.apply(params, x, valid, deterministic=False, rngs={'dropout': jax.random.key(1)})
  assert not np.allclose(dropped, out)


@pytest.mark.parametrize('norm', ['post', 'pre'])
def test_decoder_is_causal_and_ignores_padded_memory(norm):
  rng = np.random.default_rng(2)
  decoder = transformer.TransformerDecoder(num_layers=1, num_heads=2, ff_dim=16, norm=norm)
  y = rng.normal(size=(2, 5, 8)).astype(np.float32)
  memory = rng.normal(size=(2, 4, 8)).astype(np.float32)
  memory_valid = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
  target_valid = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
  params = decoder.init(jax.random.key(0), y, memory, memory_valid, target_valid)
  out = np.asarray(decoder.apply(params, y, memory, memory_valid, target_valid))
  for t in range(5):  # a change at position t leaves every earlier output unchanged, and changes position t
    changed = y.copy()
    changed[:, t] += rng.normal(size=(2, 8)).astype(np.float32) * 3
    again = np.asarray(decoder.apply(params, changed, memory, memory_valid, target_valid))
    np.testing.assert_allclose(again[:, :t], out[:, :t], rtol=1e-5, atol=1e-5)
    assert not np.allclose(again[1, t], out[1, t])
  noisy_memory = np.where(memory_valid[..., None], memory, 50.0).astype(np.float32)
  np.testing.assert_allclose(decoder.apply(params, y, noisy_memory, memory_valid, target_valid), out,
                             rtol=1e-5, atol=1e-5)


def test_token_embedding_adds_positions():
  embed = transformer.TokenEmbedding(vocab_size=10, dim=6)
  ids = jnp.array([[4, 4, 0]])
  params = embed.init(jax.random.key(0), ids)
  table = np.asarray(params['params']['embedding']['embedding'])
  expected = table[[4, 4, 0]] + np.asarray(transformer.sinusoidal_positions(3, 6))
  np.testing.assert_allclose(embed.apply(params, ids)[0], expected, rtol=1e-6, atol=1e-6)
