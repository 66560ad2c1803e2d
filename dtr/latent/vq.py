r"""Decomposed vector quantisation (Kaiser et al., "Fast Decoding in Sequence Models Using Discrete Latent
Variables", ICML 2018), as pure functions.

An encoder output h in R^{m x D} is split into m segments h_i in R^D; segment i has its own code book
e_i in R^{K x D} and is quantised to its nearest entry

    k_i = argmin_k ||h_i - e_ik||^2,    h~_i = e_{i k_i}

(ties go to the smaller k). With K = 2 every segment is one bit, k_i. Gradients pass h~ -> h straight
through (h + sg(h~ - h), van den Oord et al. 2017). The VQ-VAE losses per document are

    commitment  beta * sum_i ||h_i - sg(h~_i)||^2        (pulls the encoder to its codes)
    code book   sum_i ||sg(h_i) - h~_i||^2               (only when code books learn by gradient)

Exponential moving-average code books (van den Oord et al. 2017, appendix; Kaiser et al. 2018), decay g:

    N_ik <- g N_ik + (1 - g) n_ik,        n_ik = #{b : k_bi = k}
    M_ik <- g M_ik + (1 - g) s_ik,        s_ik = sum_{b : k_bi = k} h_bi
    N~_ik = (N_ik + eps) / (sum_k N_ik + K eps) * sum_k N_ik     (Laplace smoothing: no empty entry)
    e_ik = M_ik / N~_ik

The averages start from the initial code book (N = 1, M = e), so the first update is a weighted average
of the initial entries and the batch means.
"""

import jax
import jax.numpy as jnp


def nearest(h_BxMxD: jax.Array, codebook_MxKxD: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(indices int32 [B, m] of the nearest entries, quantised vectors [B, m, D])."""
  d_BxMxK = jnp.sum(jnp.square(h_BxMxD[:, :, None, :] - codebook_MxKxD[None]), axis=-1)
  idx_BxM = jnp.argmin(d_BxMxK, axis=-1).astype(jnp.int32)
  quantised = jnp.take_along_axis(codebook_MxKxD[None], idx_BxM[:, :, None, None], axis=2)[:, :, 0, :]
  return idx_BxM, quantised


def straight_through(h: jax.Array, quantised: jax.Array) -> jax.Array:
  """`quantised` forward, identity gradient to `h` backward."""
  return h + jax.lax.stop_gradient(quantised - h)


def commitment_loss(h_BxMxD: jax.Array, quantised_BxMxD: jax.Array) -> jax.Array:
  """[B]: sum_i ||h_i - sg(h~_i)||^2."""
  return jnp.sum(jnp.square(h_BxMxD - jax.lax.stop_gradient(quantised_BxMxD)), axis=(1, 2))


def codebook_loss(h_BxMxD: jax.Array, quantised_BxMxD: jax.Array) -> jax.Array:
  """[B]: sum_i ||sg(h_i) - h~_i||^2 (gradient to the code book only)."""
  return jnp.sum(jnp.square(jax.lax.stop_gradient(h_BxMxD) - quantised_BxMxD), axis=(1, 2))


def ema_init(codebook_MxKxD: jax.Array) -> dict:
  """Moving averages that reproduce `codebook`: counts 1, sums = the entries."""
  return {'count': jnp.ones(codebook_MxKxD.shape[:2], codebook_MxKxD.dtype), 'sum': jnp.copy(codebook_MxKxD)}


def ema_update(ema: dict, h_BxMxD: jax.Array, idx_BxM: jax.Array, weight_B: jax.Array, decay: float,
               epsilon: float) -> tuple[dict, jax.Array]:
  """One moving-average step over a batch (documents weighted by `weight_B`, 0 for padding).

  Returns (new averages, new code book [m, K, D]); the formulas are in the module docstring.
  """
  num_codes = ema['count'].shape[1]
  onehot_BxMxK = jax.nn.one_hot(idx_BxM, num_codes, dtype=h_BxMxD.dtype) * weight_B[:, None, None]
  h = jax.lax.stop_gradient(h_BxMxD)
  count_MxK = decay * ema['count'] + (1 - decay) * jnp.sum(onehot_BxMxK, axis=0)
  sum_MxKxD = decay * ema['sum'] + (1 - decay) * jnp.einsum('bmk,bmd->mkd', onehot_BxMxK, h)
  total_Mx1 = jnp.sum(count_MxK, axis=1, keepdims=True)
  smoothed_MxK = (count_MxK + epsilon) / (total_Mx1 + num_codes * epsilon) * total_Mx1
  return {'count': count_MxK, 'sum': sum_MxKxD}, sum_MxKxD / smoothed_MxK[..., None]


# --- any leading shape ([B, M, D] per document, [B, L, M, D] per token): the discrete VAEs of Jin et al. 2020
def squared_distances(h_xMxD: jax.Array, codebook_MxKxD: jax.Array) -> jax.Array:
  """[..., M, K]: ||h_i - e_ik||^2 as ||h||^2 - 2 h.e + ||e||^2 (no [.., M, K, D] difference tensor)."""
  cross_xMxK = jnp.einsum('...md,mkd->...mk', h_xMxD, codebook_MxKxD)
  return (jnp.sum(jnp.square(h_xMxD), axis=-1, keepdims=True) - 2 * cross_xMxK
          + jnp.sum(jnp.square(codebook_MxKxD), axis=-1))


def lookup(codebook_MxKxD: jax.Array, idx_xM: jax.Array) -> jax.Array:
  """[..., M, D]: e_{i, k_i} for every slot i."""
  return jax.vmap(lambda book_KxD, idx: book_KxD[idx], in_axes=(0, -1), out_axes=-2)(codebook_MxKxD, idx_xM)


def weighted_lookup(weights_xMxK: jax.Array, codebook_MxKxD: jax.Array) -> jax.Array:
  """[..., M, D]: sum_k w_ik e_ik (one-hot weights pick entries; softmax weights mix them)."""
  return jnp.einsum('...mk,mkd->...md', weights_xMxK, codebook_MxKxD)


def quantise(h_xMxD: jax.Array, codebook_MxKxD: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`nearest` for any leading shape: (indices int32 [..., M], quantised vectors [..., M, D])."""
  idx_xM = jnp.argmin(squared_distances(h_xMxD, codebook_MxKxD), axis=-1).astype(jnp.int32)
  return idx_xM, lookup(codebook_MxKxD, idx_xM)


def ema_update_masked(ema: dict, h_xMxD: jax.Array, idx_xM: jax.Array, weight_x: jax.Array, decay: float,
                      epsilon: float) -> tuple[dict, jax.Array]:
  """`ema_update` over vectors with any leading shape, each weighted by `weight_x` (that leading shape).

  For latents per token, weight_BxL = document mask x (position < length), so padding positions never move
  the code books: n_ik and s_ik of the module docstring sum over the real positions only.
  """
  m, d = h_xMxD.shape[-2:]
  weight_N = weight_x.reshape(-1).astype(h_xMxD.dtype)
  return ema_update(ema, h_xMxD.reshape(-1, m, d), idx_xM.reshape(-1, m), weight_N, decay, epsilon)
