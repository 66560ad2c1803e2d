r"""Bag-of-words decoders for generative hashing models, over the flat sparse batch layout.

The softmax decoder of VDSH / NASH (Chaidaroon & Fang 2017; Shen et al. 2018) scores a document y from a
code z (or any latent vector) as

    log p(y | z) = sum_{w present in y} log softmax(W z + b)_w

where "present" means the entry's TF-IDF is > 0 (TF-IDF > 0 iff the word's count is > 0). The [B, V]
logits are dense (B = batch, V = vocabulary), the targets are gathered from the flat layout of
`dtr.nn.feedforward`, so no dense document matrix is built for the likelihood.
"""

import jax
import jax.numpy as jnp

from dtr.nn.feedforward import num_docs


def flat_doc_index(batch) -> jax.Array:
  """int32 [G, T]: the document (0..G*n-1, group order) of every flat entry."""
  per_group = batch['mask'].shape[-1]
  groups = jnp.arange(batch['mask'].shape[0], dtype=jnp.int32)[:, None]
  return groups * per_group + batch['seg'].astype(jnp.int32)


def present_word_log_likelihood(logits_BxV: jax.Array, batch) -> jax.Array:
  """[B]: sum over the words present in each document of log softmax(logits)_w (padding adds 0)."""
  log_probs_BxV = jax.nn.log_softmax(logits_BxV, axis=-1)
  doc_GxT = flat_doc_index(batch)
  picked_GxT = log_probs_BxV[doc_GxT, batch['ids']]
  present_GxT = batch['vals'] > 0
  return jax.ops.segment_sum(jnp.where(present_GxT, picked_GxT, 0.0).reshape(-1), doc_GxT.reshape(-1),
                             num_docs(batch))


def dense_rows(batch, vocab_size: int) -> jax.Array:
  """[B, V] dense TF-IDF rows of the batch's documents (scatter-add of the flat entries)."""
  doc_GxT = flat_doc_index(batch)
  out = jnp.zeros((num_docs(batch), vocab_size), batch['vals'].dtype)
  return out.at[doc_GxT, batch['ids']].add(batch['vals'])


def masked_mean(per_doc_B: jax.Array, batch) -> jax.Array:
  """Mean over the real documents of the batch (mask 1)."""
  mask_B = batch['mask'].reshape(-1).astype(per_doc_B.dtype)
  return jnp.sum(per_doc_B * mask_B) / jnp.maximum(jnp.sum(mask_B), 1.0)
