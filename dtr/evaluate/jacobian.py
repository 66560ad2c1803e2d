r"""The decoder's Jacobian: how a generative model's word log-probabilities move with the latent z.

For a decoder with word log-probabilities log p_v(z), v < V, z in R^d,

  J(z) = d log p(x|z) / dz,  J(z)_{v,i} = d log p_v(z) / d z_i     a V x d matrix.

Krishnan, Liang & Hoffman (AISTATS 2018) use
  E[J]      the expected Jacobian E_{z ~ r} J(z), r the prior N(0, I) or the aggregate posterior
            (`expected_jacobian` over samples z_s of r);
  its log singular values (`log_singular_values`): how strongly the decoder responds along each
            principal latent direction; the number of large ones is a measure of how much of the latent
            space the model uses;
  rows as word embeddings: row v of E[J] says how word v's log-probability moves along every latent
            direction, so words with similar rows (cosine) respond alike (`nearest_words`); at one
            document's z (e.g. its posterior mean) the rows of J(z) are contextual embeddings of the words
            in that document's context (`contextual_embeddings`): a polysemous word's neighbours change
            with the document.

J is computed with forward mode (`jax.jacfwd`: d JVPs, the cheap direction for V >> d), vmapped over
samples in chunks that a `lax.scan` sums, so memory is O(chunk V d) whatever the number of samples.
`decode_log_probs(params, z_D) -> [V]` is any function of one latent, such as
`dtr.methods.bow_vae.BowVAE.decode_log_probs`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ['jacobian', 'expected_jacobian', 'log_singular_values', 'nearest_words', 'contextual_embeddings',
           'prior_samples']


def jacobian(decode_log_probs: Callable, params, z_D: jax.Array) -> jax.Array:
  """J(z) [V, d]: d log p_v(z) / d z_i at one latent z [d]."""
  return jax.jacfwd(lambda z: decode_log_probs(params, z))(z_D)


def expected_jacobian(decode_log_probs: Callable, params, z_SxD: jax.Array, chunk_size: int = 16
                      ) -> jax.Array:
  """[V, d]: (1/S) sum_s J(z_s) over samples z [S, d] (from the prior, or from posteriors)."""
  z_SxD = jnp.asarray(z_SxD)
  num = z_SxD.shape[0]
  if num == 0:
    raise ValueError('expected_jacobian needs at least one sample z.')
  chunk = max(1, min(chunk_size, num))
  chunks = -(-num // chunk)
  pad = chunks * chunk - num
  z_CxKxD = jnp.concatenate([z_SxD, jnp.zeros((pad, z_SxD.shape[1]), z_SxD.dtype)]).reshape(chunks, chunk, -1)
  w_CxK = (jnp.arange(chunks * chunk) < num).astype(z_SxD.dtype).reshape(chunks, chunk)
  jac_K = jax.vmap(lambda z: jacobian(decode_log_probs, params, z))

  def add(total_VxD, xs):
    z_KxD, w_K = xs
    return total_VxD + jnp.einsum('k,kvd->vd', w_K, jac_K(z_KxD)), None

  shape = jax.eval_shape(lambda z: jacobian(decode_log_probs, params, z), z_SxD[0])
  total_VxD, _ = jax.lax.scan(add, jnp.zeros(shape.shape, shape.dtype), (z_CxKxD, w_CxK))
  return total_VxD / num


def log_singular_values(jacobian_VxD) -> jax.Array:
  """log sigma_1 >= log sigma_2 >= ...: the min(V, d) log singular values of J, sorted descending.

  A zero singular value gives log(tiny) of J's dtype (finite) rather than -inf.
  """
  j = jnp.asarray(jacobian_VxD)
  sigma = jnp.linalg.svd(j, compute_uv=False)
  return jnp.sort(jnp.log(jnp.maximum(sigma, jnp.finfo(j.dtype).tiny)))[::-1]


def nearest_words(jacobian_VxD, vocab: Sequence[str], words: Sequence[str], k: int = 10
                  ) -> dict[str, list[tuple[str, float]]]:
  """{word: [(neighbour, cosine), ...]}: the k rows of J most cosine-similar to each word's row.

  The word itself is left out; ties go to the smaller vocabulary index; a zero row has cosine 0 to all.
  Host-side (NumPy, float64).
  """
  j = np.asarray(jacobian_VxD, np.float64)
  if j.shape[0] != len(vocab):
    raise ValueError(f'nearest_words: J has {j.shape[0]} rows but the vocabulary {len(vocab)} words.')
  if not 0 < k < len(vocab):
    raise ValueError(f'nearest_words: k must be in [1, {len(vocab) - 1}], got {k}.')
  index = {w: i for i, w in enumerate(vocab)}
  missing = [w for w in words if w not in index]
  if missing:
    raise ValueError(f'nearest_words: not in the vocabulary: {missing}.')
  norms = np.linalg.norm(j, axis=1, keepdims=True)
  unit = np.divide(j, norms, out=np.zeros_like(j), where=norms > 0)
  out = {}
  for w in words:
    q = index[w]
    cos = unit @ unit[q]
    cos[q] = -np.inf
    order = np.lexsort((np.arange(len(vocab)), -cos))[:k]  # by cosine descending, then index
    out[w] = [(vocab[i], float(cos[i])) for i in order]
  return out


def contextual_embeddings(decode_log_probs: Callable, params, z_one_doc) -> jax.Array:
  """[V, d]: J at one document's latent (its posterior mean [d], or samples of its posterior [S, d],
  averaged): row v embeds word v in that document's context."""
  z = jnp.asarray(z_one_doc)
  if z.ndim == 1:
    return jacobian(decode_log_probs, params, z)
  return expected_jacobian(decode_log_probs, params, z)


def prior_samples(rng: jax.Array, num_samples: int, latent_dim: int) -> jax.Array:
  """[S, d] samples of the prior N(0, I), for `expected_jacobian`."""
  return jax.random.normal(rng, (num_samples, latent_dim))
