r"""Perplexity of a test set from per-document negative log-likelihoods (in nats).

For documents d with negative log-likelihood nll_d = -log p(x_d) in nats (for a VAE usually its bound
-ELBO_d >= nll_d, which gives an upper bound on perplexity), token counts N_d > 0 and weights w_d (1 for a
document, 0 for a padding row; other nonnegative weights are allowed):
  corpus_perplexity   = exp( sum_d w_d nll_d / sum_d w_d N_d )               (per-token, language models)
  document_perplexity = exp( sum_d w_d (nll_d / N_d) / sum_d w_d )           (per-document average)
The second is the one of NVDM-style topic models (Miao et al. 2016, "Neural Variational Inference for
Text Processing": exp(-(1/D) sum_d log p(x_d) / N_d)); it weighs every document alike, so short
documents count as much as long ones, and the two differ unless all N_d are equal.

Host functions: sums are in float64 (NumPy), whatever the input dtype; pass device arrays as they are.
A row with nonzero weight and N_d <= 0 is an error (a document without tokens has no perplexity); rows of
weight 0 are ignored, whatever they hold. The base of exp matches nats: pass nll in nats.
"""

import numpy as np

__all__ = ['corpus_perplexity', 'document_perplexity']


def _checked(nll, tokens, weights):
  """(nll, tokens, weights) float64 [N] of the rows that count (weight > 0)."""
  nll, tokens = np.asarray(nll, np.float64), np.asarray(tokens, np.float64)
  if nll.ndim != 1 or nll.shape != tokens.shape:
    raise ValueError(f'nll and tokens must be [N] of the same length, got {nll.shape} and {tokens.shape}')
  weights = np.ones_like(nll) if weights is None else np.asarray(weights, np.float64)
  if weights.shape != nll.shape:
    raise ValueError(f'weights must be [N] like nll, got {weights.shape}')
  if not np.isfinite(weights).all() or (weights < 0).any():
    raise ValueError('weights must be finite and >= 0 (1 for documents, 0 for padding rows)')
  keep = weights > 0
  if not keep.any():
    raise ValueError('perplexity needs at least one row of positive weight')
  nll, tokens, weights = nll[keep], tokens[keep], weights[keep]
  if not (tokens > 0).all():
    bad = np.flatnonzero(keep)[~(tokens > 0)]
    raise ValueError(f'token counts must be > 0 for every weighted row; rows {bad[:10].tolist()} have '
                     f'{tokens[~(tokens > 0)][:10].tolist()} (give padding rows weight 0)')
  if not np.isfinite(nll).all():
    raise ValueError('nll must be finite for every weighted row')
  return nll, tokens, weights


def corpus_perplexity(nll, tokens, weights=None) -> float:
  """exp(sum_d w_d nll_d / sum_d w_d N_d): per-token perplexity of the whole set (nll in nats, [N])."""
  nll, tokens, weights = _checked(nll, tokens, weights)
  return float(np.exp(np.sum(weights * nll) / np.sum(weights * tokens)))


def document_perplexity(nll, tokens, weights=None) -> float:
  """exp(sum_d w_d (nll_d / N_d) / sum_d w_d): the per-document average perplexity of NVDM-style papers."""
  nll, tokens, weights = _checked(nll, tokens, weights)
  return float(np.exp(np.sum(weights * (nll / tokens)) / np.sum(weights)))
