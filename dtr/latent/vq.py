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

Dead-entry restarts (Dhariwal et al. 2020, "Jukebox", random restarts; Zeghidour et al. 2021, "SoundStream"):
a moving average of each entry's assignment counts, started at zero,

    U_ik <- g U_ik + (1 - g) n_ik,        share  p_ik = U_ik / sum_k U_ik,

marks entry k of slot i dead when p_ik < t / K (used at under t times the uniform rate); a dead entry is
replaced by the input of a random real position of the batch, and its average is set to the slot's mean
(a grace period: it is marked dead again only after about log(t) / log(g) steps without use). Since U starts
at zero, the first step restarts every entry the first batch does not use: the code book starts on data.
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


def code_counts(idx_xM: jax.Array, weight_x: jax.Array, num_values: int) -> jax.Array:
  """n [M, K]: n_ik = weighted count of the positions (leading shape x) with code k in slot i; `weight_x` 0
  at padding. A scatter-add: a one-hot [..., M, K] would cost as much as a layer for local K = 4096."""
  m = idx_xM.shape[-1]
  idx_NxM = idx_xM.reshape(-1, m)
  weight_NxM = jnp.broadcast_to(jnp.reshape(weight_x, (-1, 1)).astype(jnp.float32), idx_NxM.shape)
  slot_NxM = jnp.broadcast_to(jnp.arange(m), idx_NxM.shape)
  return jnp.zeros((m, num_values), jnp.float32).at[slot_NxM, idx_NxM].add(weight_NxM)


def usage_update(usage_MxK: jax.Array, idx_xM: jax.Array, weight_x: jax.Array, decay: float) -> jax.Array:
  """U <- decay U + (1 - decay) n, n = `code_counts` of the positions."""
  counts_MxK = code_counts(idx_xM, weight_x, usage_MxK.shape[1]).astype(usage_MxK.dtype)
  return decay * usage_MxK + (1 - decay) * counts_MxK


def dead_entries(usage_MxK: jax.Array, threshold: float) -> jax.Array:
  """bool [M, K]: share U_ik / sum_k U_ik below threshold / K (never in a slot with no usage yet)."""
  total_Mx1 = jnp.sum(usage_MxK, axis=1, keepdims=True)
  return (usage_MxK * usage_MxK.shape[1] < threshold * total_Mx1) & (total_Mx1 > 0)


def restart_dead(codebook_MxKxD: jax.Array, usage_MxK: jax.Array, h_xMxD: jax.Array, weight_x: jax.Array,
                 rng: jax.Array, threshold: float) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Dead entries (`dead_entries`) -> the inputs h of random real positions (weight_x > 0; drawn
  independently per entry, with replacement); their usage -> the slot's mean. A batch with no real position
  changes nothing. Returns (code book [M, K, D], usage [M, K], dead bool [M, K])."""
  m, k = usage_MxK.shape
  h_NxMxD = jax.lax.stop_gradient(h_xMxD).reshape(-1, m, h_xMxD.shape[-1])
  real_N = weight_x.reshape(-1) > 0
  dead_MxK = dead_entries(usage_MxK, threshold) & jnp.any(real_N)
  pick_MxK = jax.random.categorical(rng, jnp.where(real_N, 0.0, -jnp.inf), shape=(m, k))
  candidates_MxKxD = h_NxMxD[pick_MxK, jnp.arange(m)[:, None]]
  codebook = jnp.where(dead_MxK[..., None], candidates_MxKxD.astype(codebook_MxKxD.dtype), codebook_MxKxD)
  usage = jnp.where(dead_MxK, jnp.mean(usage_MxK, axis=1, keepdims=True), usage_MxK)
  return codebook, usage, dead_MxK
