"""Dropout whose mask is a keyed hash of each element's position: no random-number array is formed.

`flax.linen.Dropout` draws a float32 uniform (32 Threefry bits) per element, and those bits are an array
of the input's size that XLA computes before the mask. On a CPU they were a large part of a small
Transformer's step. Here the 'dropout' rng gives two 32-bit key words (s1, s2), and the element at
row-major position i gets the 32-bit word

  h(i) = f(f(i * 0x9E3779B9 + s1) ^ s2),   f(z) = murmur3's finaliser (xor-shift, multiply, twice, xor-shift),

all in uint32 arithmetic. f and the odd multiply are bijections, so the words of one call are distinct; the
two keyed rounds make different keys give different functions rather than shifted copies of one sequence.
Its top 16 bits are a uniform u in [0, 65536), and an element is kept when u < k with
k = 65536 - round(rate * 65536): the keep probability is k / 65536 (rate 0.2: 0.80000305, within 2^-17 of
0.8 for any rate) and kept elements are scaled by 65536 / k, so the expected output equals the input exactly.

h is elementwise in i, so XLA fuses it into the multiply that applies the mask (nothing of the input's size
is stored for the mask), and i is the position in the whole array: a sharded input under `jax.jit` gets the
mask the same input gets on one device. (Inside `jax.shard_map` the array is the local shard, as with any
`jax.random` draw there: fold the shard's index into the rng to give shards different masks.) The hash is for
dropout's independent coin flips, not for cryptography or for other random draws (those use `jax.random`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import linen as nn

RESOLUTION = 1 << 16
WEYL = 0x9E3779B9  # the counter's odd multiplier (2^32 / golden ratio)


def keep_threshold(rate: float) -> int:
  """k: an element is kept when its 16-bit uniform is below k (keep probability k / 65536)."""
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f'dropout rate {rate} must be in [0, 1]')
  return RESOLUTION - round(rate * RESOLUTION)


def _finalise(z: jax.Array) -> jax.Array:
  z = (z ^ (z >> 16)) * jnp.uint32(0x85EBCA6B)
  z = (z ^ (z >> 13)) * jnp.uint32(0xC2B2AE35)
  return z ^ (z >> 16)


def _positions(shape: tuple[int, ...]) -> jax.Array:
  """uint32 row-major positions of an array of `shape`, from one iota per axis (each shards with its axis)."""
  position = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    position = position + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
    stride *= shape[axis]
  return position


def uniform16(rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint32 values in [0, 65536) of `shape`: the top 16 bits of h(i) at each row-major position i."""
  if math.prod(shape) > 1 << 32:
    raise ValueError(f'dropout over {math.prod(shape)} elements: positions must fit 32 bits (at most 2^32); '
                     'apply dropout to smaller pieces')
  s1, s2 = jax.random.bits(rng, (2,), jnp.uint32)
  words = _finalise(_finalise(_positions(shape) * jnp.uint32(WEYL) + s1) ^ s2)
  return words >> 16


def is_off(rate) -> bool:
  """Whether `rate` is a number that turns dropout off (0); a rate that is a JAX array (a population member's,
  traced) is on whatever its value."""
  return not isinstance(rate, jax.Array) and float(rate) == 0.0


def dropout(x: jax.Array, rate, rng: jax.Array) -> jax.Array:
  """x with each element zeroed with probability about `rate` (see the module docstring), others scaled.

  `rate`: a number, or a float32 scalar array (a population member's, `dtr.population`), whose k is the
  same round(rate * 65536), formed in float32 (a member draws its single run's masks).
  """
  if isinstance(rate, jax.Array):
    rate = jnp.asarray(rate, jnp.float32)
    keep = RESOLUTION - jnp.round(rate * RESOLUTION)  # an integer in float32 (65536 and below are exact)
    kept = uniform16(rng, x.shape) < keep.astype(jnp.uint32)
    scale = jnp.where(keep > 0, RESOLUTION / jnp.maximum(keep, 1.0), 0.0).astype(x.dtype)
    return jnp.where(kept, x * scale, jnp.zeros((), x.dtype))
  keep = keep_threshold(rate)
  if keep == RESOLUTION:
    return x
  if keep == 0:
    return jnp.zeros_like(x)
  kept = uniform16(rng, x.shape) < keep
  return jnp.where(kept, x * jnp.asarray(RESOLUTION / keep, x.dtype), jnp.zeros((), x.dtype))


class Dropout(nn.Module):
  """`flax.linen.Dropout`'s interface (rate, `deterministic`, the 'dropout' rng) on `dropout`."""
  rate: float
  rng_collection: str = 'dropout'

  @nn.compact
  def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
    if deterministic or is_off(self.rate):
      return x
    return dropout(x, self.rate, self.make_rng(self.rng_collection))
