r"""Transformer encoder and decoder layers (Vaswani et al., "Attention Is All You Need", NeurIPS 2017), Linen.

Multi-head attention of queries x in R^{T x d} over keys/values m in R^{S x d}, h heads of width d/h:

    A_j = softmax(Q_j K_j^T / sqrt(d/h) + bias),   Q_j = x W^Q_j, K_j = m W^K_j, V_j = m W^V_j
    MHA(x, m) = [A_1 V_1, ..., A_h V_h] W^O

where bias is 0 where a query may attend to a key and the dtype's most negative number where it may not (a
padded key, or a later position under the causal mask); a query that may attend to nothing gets uniform
weights rather than NaN. Keys have no bias: b^K would add the same q.b^K to all of a query's logits, which
the softmax ignores (its gradient is zero, and Adam would turn rounding noise into steps). Dropout acts on
the attention weights, on each residual branch and after the feed-forward activation, as in PyTorch's
`nn.TransformerEncoderLayer` (what the discrete-VAE reference of Jin et al. 2020 uses). Layer
normalisation is 'post' (x = LN(x + f(x)), the original Transformer and the reference) or 'pre'
(x = x + f(LN(x)), Xiong et al. 2020; the stacks then end with a final LN).

`TransformerAutoencoder` joins them for sequence autoencoders with a latent bottleneck: one token embedding
read by both sides, an encoder whose states (or their masked mean) feed a latent projection, and a decoder
that reads its memory by cross-attention and predicts the next token.

Positions are the fixed sinusoids PE[p, 2i] = sin(p / 10000^{2i/d}), PE[p, 2i+1] = cos(p / 10000^{2i/d}),
added to unscaled token embeddings (as the reference). Weight matrices are Xavier-uniform, biases zero.
Masks are boolean, True = may attend: `key_padding_mask(valid_BxS)` is [B, 1, 1, S], `causal_mask(T)` is
[1, 1, T, T]; they combine with `&`.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from dtr.nn.dropout import Dropout

NORMS = ('post', 'pre')
LAYER_NORM_EPSILON = 1e-5  # PyTorch's default
xavier = nn.initializers.xavier_uniform()


def sinusoidal_positions(length: int, dim: int) -> jax.Array:
  """float32 [length, dim]: PE[p, 2i] = sin(p w_i), PE[p, 2i+1] = cos(p w_i), w_i = 10000^{-2i/dim}."""
  position_Lx1 = jnp.arange(length, dtype=jnp.float32)[:, None]
  rate_H = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * (-math.log(10000.0) / dim))
  angle_LxH = position_Lx1 * rate_H[None, :]
  pe_LxHx2 = jnp.stack([jnp.sin(angle_LxH), jnp.cos(angle_LxH)], axis=-1)
  return pe_LxHx2.reshape(length, -1)[:, :dim]


def key_padding_mask(valid_BxS: jax.Array) -> jax.Array:
  """bool [B, 1, 1, S]: every query may attend to the valid keys only."""
  return valid_BxS.astype(bool)[:, None, None, :]


def causal_mask(length: int) -> jax.Array:
  """bool [1, 1, T, T]: query t may attend to keys s <= t."""
  return jnp.tril(jnp.ones((length, length), bool))[None, None]


class MultiHeadAttention(nn.Module):
  """MHA(x, m) of the module docstring; `mask` broadcasts to [B, heads, T, S] (None: attend everywhere)."""

  num_heads: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, query_BxTxD, memory_BxSxD, mask=None, deterministic: bool = True):
    dim = query_BxTxD.shape[-1]
    if dim % self.num_heads:
      raise ValueError(f'the model width {dim} must be a multiple of num_heads={self.num_heads}.')
    head_dim = dim // self.num_heads

    def project(x, name, use_bias=True):
      y = nn.Dense(dim, use_bias=use_bias, kernel_init=xavier, name=name)(x)
      return y.reshape(*y.shape[:-1], self.num_heads, head_dim)

    q_BxTxHxE = project(query_BxTxD, 'query')
    k_BxSxHxE = project(memory_BxSxD, 'key', use_bias=False)  # a key bias only shifts a query's logits
    v_BxSxHxE = project(memory_BxSxD, 'value')
    logits_BxHxTxS = jnp.einsum('bthe,bshe->bhts', q_BxTxHxE, k_BxSxHxE) / math.sqrt(head_dim)
    if mask is not None:
      logits_BxHxTxS = jnp.where(mask, logits_BxHxTxS, jnp.finfo(logits_BxHxTxS.dtype).min)
    weights_BxHxTxS = jax.nn.softmax(logits_BxHxTxS, axis=-1)
    weights_BxHxTxS = Dropout(self.dropout_rate)(weights_BxHxTxS, deterministic=deterministic)
    out_BxTxHxE = jnp.einsum('bhts,bshe->bthe', weights_BxHxTxS, v_BxSxHxE)
    return nn.Dense(dim, kernel_init=xavier, name='out')(out_BxTxHxE.reshape(*out_BxTxHxE.shape[:2], dim))


class FeedForward(nn.Module):
  """W_2 dropout(relu(W_1 x + b_1)) + b_2."""

  hidden: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x_BxTxD, deterministic: bool = True):
    h = nn.relu(nn.Dense(self.hidden, kernel_init=xavier)(x_BxTxD))
    h = Dropout(self.dropout_rate)(h, deterministic=deterministic)
    return nn.Dense(x_BxTxD.shape[-1], kernel_init=xavier)(h)


def _residual(x, f, norm: str, layer_norm: nn.LayerNorm, dropout: Dropout, deterministic: bool):
  """x = LN(x + dropout(f(x))) ('post') or x + dropout(f(LN(x))) ('pre')."""
  if norm == 'pre':
    return x + dropout(f(layer_norm(x)), deterministic=deterministic)
  return layer_norm(x + dropout(f(x), deterministic=deterministic))


class EncoderLayer(nn.Module):
  """Self-attention over the valid positions, then the feed-forward block."""

  num_heads: int = 4
  ff_dim: int = 256
  dropout_rate: float = 0.0
  norm: str = 'post'

  @nn.compact
  def __call__(self, x_BxTxD, valid_BxT, deterministic: bool = True):
    attend = MultiHeadAttention(self.num_heads, self.dropout_rate, name='self_attention')
    ff = FeedForward(self.ff_dim, self.dropout_rate, name='feed_forward')
    mask = key_padding_mask(valid_BxT)

    def sublayer(x, f, name):
      layer_norm = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name=f'{name}_norm')
      return _residual(x, f, self.norm, layer_norm, Dropout(self.dropout_rate), deterministic)

    x = sublayer(x_BxTxD, lambda h: attend(h, h, mask, deterministic), 'self_attention')
    return sublayer(x, lambda h: ff(h, deterministic), 'feed_forward')


class DecoderLayer(nn.Module):
  """Causal self-attention over the target, cross-attention to the valid memory, feed-forward.

  `target_valid_BxT` (optional) also masks padded target keys; under the causal mask they only follow the
  last real token, so it changes no output at a real position.
  """

  num_heads: int = 4
  ff_dim: int = 256
  dropout_rate: float = 0.0
  norm: str = 'post'

  @nn.compact
  def __call__(self, y_BxTxD, memory_BxSxD, memory_valid_BxS, target_valid_BxT=None,
               deterministic: bool = True):
    self_attend = MultiHeadAttention(self.num_heads, self.dropout_rate, name='self_attention')
    cross_attend = MultiHeadAttention(self.num_heads, self.dropout_rate, name='cross_attention')
    ff = FeedForward(self.ff_dim, self.dropout_rate, name='feed_forward')
    self_mask = causal_mask(y_BxTxD.shape[1])
    if target_valid_BxT is not None:
      self_mask = self_mask & key_padding_mask(target_valid_BxT)
    cross_mask = key_padding_mask(memory_valid_BxS)

    def sublayer(x, f, name):
      layer_norm = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name=f'{name}_norm')
      return _residual(x, f, self.norm, layer_norm, Dropout(self.dropout_rate), deterministic)

    y = sublayer(y_BxTxD, lambda h: self_attend(h, h, self_mask, deterministic), 'self_attention')
    y = sublayer(y, lambda h: cross_attend(h, memory_BxSxD, cross_mask, deterministic), 'cross_attention')
    return sublayer(y, lambda h: ff(h, deterministic), 'feed_forward')


class TransformerEncoder(nn.Module):
  """`num_layers` encoder layers (and a final LN under pre-normalisation): states [B, T, d]."""

  num_layers: int = 1
  num_heads: int = 4
  ff_dim: int = 256
  dropout_rate: float = 0.0
  norm: str = 'post'

  @nn.compact
  def __call__(self, x_BxTxD, valid_BxT, deterministic: bool = True):
    for i in range(self.num_layers):
      x_BxTxD = EncoderLayer(self.num_heads, self.ff_dim, self.dropout_rate, self.norm, name=f'layer_{i}')(
          x_BxTxD, valid_BxT, deterministic)
    if self.norm == 'pre':
      x_BxTxD = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name='final_norm')(x_BxTxD)
    return x_BxTxD


class TransformerDecoder(nn.Module):
  """`num_layers` decoder layers (and a final LN under pre-normalisation): states [B, T, d]."""

  num_layers: int = 1
  num_heads: int = 4
  ff_dim: int = 256
  dropout_rate: float = 0.0
  norm: str = 'post'

  @nn.compact
  def __call__(self, y_BxTxD, memory_BxSxD, memory_valid_BxS, target_valid_BxT=None,
               deterministic: bool = True):
    for i in range(self.num_layers):
      y_BxTxD = DecoderLayer(self.num_heads, self.ff_dim, self.dropout_rate, self.norm, name=f'layer_{i}')(
          y_BxTxD, memory_BxSxD, memory_valid_BxS, target_valid_BxT, deterministic)
    if self.norm == 'pre':
      y_BxTxD = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, name='final_norm')(y_BxTxD)
    return y_BxTxD


class TokenEmbedding(nn.Module):
  """dropout(E[ids] + PE): token embeddings (Xavier-uniform, as the reference) plus sinusoidal positions."""

  vocab_size: int
  dim: int
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, ids_BxT, deterministic: bool = True):
    x_BxTxD = nn.Embed(self.vocab_size, self.dim, embedding_init=xavier, name='embedding')(ids_BxT)
    x_BxTxD = x_BxTxD + sinusoidal_positions(ids_BxT.shape[1], self.dim)[None]
    return Dropout(self.dropout_rate)(x_BxTxD, deterministic=deterministic)


def masked_mean(x_Bx, valid_Bx, axis=1):
  """Mean of x over the valid entries of `axis` (0 where there are none)."""
  w = valid_Bx.astype(x_Bx.dtype)
  while w.ndim < x_Bx.ndim:
    w = w[..., None]
  return jnp.sum(x_Bx * w, axis=axis) / jnp.maximum(jnp.sum(w, axis=axis), 1.0)


class TransformerAutoencoder(nn.Module):
  """Token embedding (shared by both sides), encoder, latent projection, decoder, output layer.

  `encode` gives the latent inputs: per token ('local'), or the masked mean of the states projected
  ('global'); the caller turns them into a memory that `decode` reads by cross-attention.
  """

  vocab_size: int
  model_dim: int
  num_heads: int
  ff_dim: int
  num_encoder_layers: int
  num_decoder_layers: int
  dropout_rate: float
  norm: str
  level: str
  latent_features: int  # projection width of the pooled (global) or each (local) state; 0: the states

  def setup(self):
    self.embed = TokenEmbedding(self.vocab_size, self.model_dim, self.dropout_rate)
    self.encoder = TransformerEncoder(self.num_encoder_layers, self.num_heads, self.ff_dim, self.dropout_rate,
                                      self.norm)
    self.to_latent = nn.Dense(self.latent_features, kernel_init=xavier) if self.latent_features else None
    self.decoder = TransformerDecoder(self.num_decoder_layers, self.num_heads, self.ff_dim, self.dropout_rate,
                                      self.norm)
    self.output = nn.Dense(self.vocab_size, kernel_init=xavier)

  def encode_states(self, tokens_BxL, valid_BxL, deterministic: bool = True):
    """The states the latent projection reads: [B, 1, d] (global: their masked mean) or [B, L, d] (local)."""
    states_BxLxD = self.encoder(self.embed(tokens_BxL, deterministic), valid_BxL, deterministic)
    if self.level == 'global':
      states_BxLxD = masked_mean(states_BxLxD, valid_BxL)[:, None, :]
    return states_BxLxD

  def latent_inputs(self, states_BxLxD):
    """The latent projection of `encode_states` [.., F] (the states themselves when there is none)."""
    return states_BxLxD if self.to_latent is None else self.to_latent(states_BxLxD)

  def encode(self, tokens_BxL, valid_BxL, deterministic: bool = True):
    """Latent inputs [B, 1, F] (global) or [B, L, F] (local)."""
    return self.latent_inputs(self.encode_states(tokens_BxL, valid_BxL, deterministic))

  def decode_states(self, memory_BxSxD, memory_valid_BxS, inputs_BxT, target_valid_BxT,
                    deterministic: bool = True):
    """The decoder's last states [B, T, d] (before the output layer)."""
    return self.decoder(self.embed(inputs_BxT, deterministic), memory_BxSxD, memory_valid_BxS,
                        target_valid_BxT, deterministic)

  def project(self, states_xD):
    """The output layer: next-token logits [..., V] of decoder states [..., d]."""
    return self.output(states_xD)

  def decode(self, memory_BxSxD, memory_valid_BxS, inputs_BxT, target_valid_BxT, deterministic: bool = True):
    """Next-token logits [B, T, V]."""
    return self.project(self.decode_states(memory_BxSxD, memory_valid_BxS, inputs_BxT, target_valid_BxT,
                                           deterministic))

  def __call__(self, tokens_BxL, valid_BxL):  # builds every parameter (init only)
    self.encode(tokens_BxL, valid_BxL)
    memory_BxLxD = jnp.zeros((*tokens_BxL.shape, self.model_dim))
    return self.decode(memory_BxLxD, valid_BxL, tokens_BxL, valid_BxL)
