r"""What the codes of a sentence autoencoder hold: bit spoiling, bit statistics, Hamming-path interpolation,
HSVAE's spike probabilities per class, and Average Hoyer against the Beta prior.

  python -m dtr.analyze bits --workdir=DIR --out=FOLDER [--max_sentences=1000] [--pair=0,1] [--seed=0]
                                                       [--sample_seed=0]
  python -m dtr.analyze bits --workdir=HS1,HS2,HS3,HS4 --out=FOLDER      # several HSVAE runs: Hoyer(alpha, beta)

Bit spoiling (Baynazarov & Piontkovskaya 2019, Sec. 5): for the deterministic test codes c (bits 1[p > 1/2];
for dense codes the mean representation), and each dimension i, the decoder reads the spoiled code c^(i)
and the test perplexity rises from PPL(c) to PPL(c^(i)), both at corpus level, exp(sum NLL / sum tokens)
with eos:

  bits    c^(i)_j = 1 - c_j if j = i else c_j         (flip bit i of every code)
  dense   c^(i)_j = -c_j    if j = i else c_j         (multiply dimension i by -1: a Gaussian VAE's analogue)

A bit whose flip costs nothing carries nothing the decoder uses. Bit means mean_n c_ni and the covariance
of the bits over the split show unused (constant) and redundant (correlated) bits.

Hamming-path interpolation between codes a and b that differ in k bits: a random order of those k bits
(`numpy.random.default_rng(seed)`), path_0 = a and path_t = path_{t-1} with the t-th of them flipped, so
path_k = b and consecutive codes are at Hamming distance 1; every code is decoded greedily and shown as text
with the workdir's tokeniser.

HSVAE (Prokhorov et al. 2021): E[gamma | x] = a_q / (a_q + b_q) per dimension, averaged over each class's
sentences, as a [classes, d] heat map; and over several HSVAE workdirs, Average Hoyer of samples and means
(`dtr.evaluate.sparsity`, standardised as results.json reports it, and raw, without standardisation)
against the prior's mean spike probability alpha / (alpha + beta).

Information (Gaussian-posterior models: the sparse VAEs): per dimension 0.5 log(1 + Var_x[mu_j] /
E_x[sigma_j^2]) over the sentences, summed (`channel_information`): how much the code can say about its
sentence, which the KL alone does not tell (a posterior moved off the prior in the same way for every sentence
has KL but no information).

Files written to FOLDER: bit_spoiling.png, bit_means.png, bit_covariance.png, interpolation.txt,
gamma_per_class.png, hoyer_vs_prior.png (as apply) and analysis.json with the numbers.
"""

from __future__ import annotations

import argparse
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from dtr import input_pipeline as ip
from dtr.evaluate import evaluators


# ------------------------------------------------------------------------------------------------ loading
def load(workdir: str):
  """(model, corpus) of a finished sentence workdir (`dtr.encode.load_model`, the recorded corpus)."""
  from dtr import encode  # pylint: disable=g-import-not-at-top
  from dtr.methods.sentence_ae import SentenceMethod  # pylint: disable=g-import-not-at-top
  model = encode.load_model(workdir)
  if not isinstance(model.method, SentenceMethod):
    hint = ' (for its symbol codes: python -m dtr.analyze clusters)' if model.method.emits == 'symbols' else ''
    raise ValueError(f'{workdir}: method {model.config.model.name!r} is not a sentence autoencoder; the bits '
                     f'analysis is for the workdirs of configs/sentence_ae.py{hint}.')
  return model, encode.load_training_corpus(model)


def sample_rows(num_docs: int, max_sentences: int, seed: int = 0) -> np.ndarray:
  """`max_sentences` row indices drawn uniformly without replacement (`numpy.random.default_rng(seed)`),
  in increasing order; all rows when `max_sentences` is 0 or at least `num_docs`.

  A uniform draw, not the first rows: shared files such as dbpedia14's test split are sorted by class, so
  their first 1,000 sentences are all of one class (and harder to model than the split as a whole).
  """
  if not max_sentences or num_docs <= max_sentences:
    return np.arange(num_docs)
  return np.sort(np.random.default_rng(seed).choice(num_docs, max_sentences, replace=False))


def is_bits(method) -> bool:
  return method.emits == 'bits'


# ------------------------------------------------------------------------------------------------ spoiling
def spoil(codes_BxC: jax.Array, i, binary: bool) -> jax.Array:
  """Codes with dimension i spoiled: bit i flipped (binary) or multiplied by -1 (dense)."""
  column = codes_BxC[:, i]
  return codes_BxC.at[:, i].set(1.0 - column if binary else -column)


@functools.lru_cache(maxsize=None)
def _spoiled_nll_fn(method):
  binary = is_bits(method)

  def fn(params, batch):
    z_BxC = method._codes_to_z(method.encode(params, batch))  # pylint: disable=protected-access
    base_B = method._nll(params, z_BxC, batch)  # pylint: disable=protected-access
    spoiled_CxB = jax.lax.map(
        lambda i: method._nll(params, spoil(z_BxC, i, binary), batch),  # pylint: disable=protected-access
        jnp.arange(z_BxC.shape[1]))
    return base_B, spoiled_CxB

  return jax.jit(fn)


def bit_spoiling(method, params, split, batch_size: int = 256) -> dict:
  """Corpus perplexity of the split with its deterministic codes, and with each dimension spoiled.

  Returns {'base_perplexity', 'perplexity' [C], 'increase' [C] (perplexity - base), 'order' (dimensions by
  decreasing increase), 'tokens', 'sentences'}.
  """
  fn = _spoiled_nll_fn(method)
  base_total, spoiled_total, tokens = 0.0, None, 0.0
  for n, batch in ip.eval_batches('tokens', split, batch_size):
    mask_B = np.asarray(batch['mask'], np.float64)
    base_B, spoiled_CxB = jax.device_get(fn(params, batch))
    base_total += float(np.sum(np.asarray(base_B, np.float64) * mask_B))
    spoiled = np.sum(np.asarray(spoiled_CxB, np.float64) * mask_B, axis=1)
    spoiled_total = spoiled if spoiled_total is None else spoiled_total + spoiled
    tokens += float(np.sum((np.asarray(batch['lengths'], np.float64) + 1) * mask_B))
    del n
  base = float(np.exp(base_total / tokens))
  perplexity = np.exp(spoiled_total / tokens)
  increase = perplexity - base
  return {'base_perplexity': base, 'perplexity': perplexity, 'increase': increase,
          'order': np.argsort(-increase, kind='stable'), 'tokens': tokens, 'sentences': int(split.num_docs)}


# ------------------------------------------------------------------------------------------------ statistics
def bit_means(codes_NxC) -> np.ndarray:
  """mean_n c_ni per dimension [C] (float64)."""
  return np.asarray(codes_NxC, np.float64).mean(axis=0)


def bit_covariance(codes_NxC) -> np.ndarray:
  """The covariance [C, C] of the dimensions over the rows (ddof=1)."""
  return np.cov(np.asarray(codes_NxC, np.float64), rowvar=False)


# ------------------------------------------------------------------------------------------------ interpolation
def hamming_path(code_a, code_b, seed: int = 0) -> np.ndarray:
  """int8 [k + 1, m]: a random path of single-bit flips from bit code a to bit code b (k = Hamming distance)."""
  a, b = np.asarray(code_a).astype(np.int8), np.asarray(code_b).astype(np.int8)
  if a.shape != b.shape or a.ndim != 1:
    raise ValueError(f'codes must be two bit vectors of one length, got {a.shape} and {b.shape}')
  if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
    raise ValueError('a Hamming path needs 0/1 codes')
  differing = np.flatnonzero(a != b)
  order = np.random.default_rng(seed).permutation(differing)
  path = [a.copy()]
  for i in order:
    step = path[-1].copy()
    step[i] = b[i]
    path.append(step)
  return np.stack(path)


def decode_texts(model, codes) -> list[str]:
  """Greedy decoding of codes [N, m] with the workdir's tokeniser."""
  if model.tokenizer is None:
    raise ValueError(f'{model.workdir} has no tokeniser (featurizer/tokenizer.json) to show text.')
  ids = np.asarray(model.method.decode(model.params, jnp.asarray(codes)))
  return [model.tokenizer.decode(row) for row in ids]


def interpolate(model, code_a, code_b, seed: int = 0) -> list[tuple[int, str]]:
  """[(Hamming distance from a, greedy text)] along `hamming_path(code_a, code_b, seed)`."""
  path = hamming_path(code_a, code_b, seed)
  distances = np.sum(path != path[0], axis=1)
  return list(zip(distances.tolist(), decode_texts(model, path)))


# ------------------------------------------------------------------------------------------------ HSVAE
def gamma_per_class(method, params, split, batch_size: int = 256, mesh=None) -> tuple[np.ndarray, np.ndarray]:
  """(mean E[gamma | x] per class and dimension [K, d], sentences per class [K]) of an HSVAE on a split."""
  if not hasattr(method, 'spike_probabilities'):
    raise ValueError(f'method {method.config.name!r} has no spike probabilities (HSVAE only).')
  classes = ip.split_class_ids(split)
  gamma = evaluators.split_outputs(method, params, split, 'spike_probabilities', mesh, batch_size)
  gamma = gamma.astype(np.float64)
  num_classes = int(np.asarray(split.labels).shape[1])
  counts = np.bincount(classes[classes >= 0], minlength=num_classes)
  sums = np.zeros((num_classes, gamma.shape[1]))
  np.add.at(sums, classes[classes >= 0], gamma[classes >= 0])
  return sums / np.maximum(counts, 1)[:, None], counts


def channel_information(mu_NxD, sigma_NxD) -> np.ndarray:
  """Per dimension, 0.5 log(1 + Var_x[mu] / E_x[sigma^2]) nats over N sentences: an estimate of I(x; z_j).

  The capacity of a Gaussian channel whose signal is mu_j (varying between sentences) and whose noise is the
  posterior's sigma_j: exact when mu_j is Gaussian over sentences and sigma_j the same for all of them. A code
  whose KL comes from a posterior moved off the prior in the same way for every sentence scores 0 here.
  """
  mu, sigma = np.asarray(mu_NxD, np.float64), np.asarray(sigma_NxD, np.float64)
  return 0.5 * np.log1p(mu.var(0) / np.mean(np.square(sigma), 0))


def posterior_information(method, params, split, batch_size: int = 256, mesh=None) -> dict:
  """`channel_information` of a Gaussian-posterior model (`posterior`: the sparse VAEs) on a split, with the
  medians of mu's standard deviation between sentences and of sigma (for HSVAE the slab, spikes ignored)."""
  if not hasattr(method, 'posterior'):
    raise ValueError(f'method {method.config.name!r} has no Gaussian posterior (the sparse VAEs only).')
  mu, sigma = evaluators.split_outputs(method, params, split, 'posterior', mesh, batch_size)
  per_dim = channel_information(mu, sigma)
  return {'nats': float(per_dim.sum()), 'per_dimension': per_dim.tolist(), 'sentences': int(len(mu)),
          'mu_std_median': float(np.median(mu.std(0))), 'sigma_median': float(np.median(sigma))}


def hoyer_report(workdir: str, split_name: str = 'test') -> dict:
  """Average Hoyer of a dense-code workdir's samples and means, standardised and raw (cached in hoyer.json).

  The samples are `encode` with an rng exactly as the loop's evaluator draws them (the run's seed and
  evaluation batches), so the standardised numbers equal results.json's `test/hoyer_*`.
  """
  from dtr.evaluate import sparsity  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, f'hoyer_{split_name}.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  model, corpus = load(workdir)
  out = evaluators.Outputs.of_params(model.method, model.params, dict(corpus.splits), model.mesh,
                                     model.config.get('eval_batch_size', 1024), seed=int(model.config.seed))
  sampled, mean = out.codes(split_name, sampled=True)[0], out.codes(split_name)[0]
  report = {f'hoyer_{kind}{suffix}': sparsity.average_hoyer(codes, standardise=standardise)
            for kind, codes in (('sample', sampled), ('mean', mean))
            for suffix, standardise in (('', True), ('_raw', False))}
  mc = model.config.model
  report.update(method=mc.name, latent_size=int(mc.latent_size), split=split_name)
  if mc.name == 'hsvae':  # the trained prior: the parameters' (a population member's own), else the config's
    alpha, beta = (float(f'{float(v):.7g}') for v in model.method.prior(model.params))
    report.update(prior_alpha=alpha, prior_beta=beta)
  with open(path, 'w') as f:
    json.dump(report, f, indent=2)
  return report


def hoyer_against_prior(workdirs) -> list[dict]:
  """`hoyer_report` of several HSVAE workdirs, sorted by the prior's mean spike probability."""
  reports = [dict(hoyer_report(w), workdir=w) for w in workdirs]
  if any(r['method'] != 'hsvae' for r in reports):
    raise ValueError('Hoyer against (alpha, beta) needs HSVAE workdirs only.')
  return sorted(reports, key=lambda r: (r['prior_alpha'] / (r['prior_alpha'] + r['prior_beta']), r['prior_alpha']))


# ------------------------------------------------------------------------------------------------ plots
def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def plot_spoiling(spoiling: dict, path: str, binary: bool = True) -> str:
  plt = _pyplot()
  order = spoiling['order']
  fig, ax = plt.subplots(figsize=(max(6, 0.16 * len(order)), 3.2))
  ax.bar(np.arange(len(order)), spoiling['increase'][order])
  ax.set_xticks(np.arange(len(order)), [str(i) for i in order], fontsize=6, rotation=90)
  ax.set_xlabel('bit (sorted)' if binary else 'dimension (sorted)')
  ax.set_ylabel('perplexity increase')
  ax.set_title(f'{"flip bit i" if binary else "dimension i times -1"}: base PPL {spoiling["base_perplexity"]:.1f}'
               f' ({spoiling["sentences"]} sentences)', fontsize=9)
  return _save(plt, fig, path)


def _save(plt, fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def plot_means(means, path: str) -> str:
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(max(6, 0.16 * len(means)), 3))
  ax.bar(np.arange(len(means)), means)
  ax.set_xlabel('dimension')
  ax.set_ylabel('mean over sentences')
  return _save(plt, fig, path)


def plot_heatmap(matrix, path: str, title: str, xlabel: str, ylabel: str, yticklabels=None, cmap='coolwarm',
                 symmetric: bool = True) -> str:
  plt = _pyplot()
  matrix = np.asarray(matrix)
  fig, ax = plt.subplots(figsize=(max(5, 0.14 * matrix.shape[1] + 2), max(3, 0.25 * matrix.shape[0] + 1)))
  limit = float(np.max(np.abs(matrix))) if symmetric and matrix.size else None
  image = ax.imshow(matrix, cmap=cmap, aspect='auto', vmin=-limit if limit else None, vmax=limit)
  fig.colorbar(image, ax=ax)
  if yticklabels is not None:
    ax.set_yticks(np.arange(len(yticklabels)), yticklabels, fontsize=7)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  return _save(plt, fig, path)


def plot_hoyer_against_prior(reports, path: str) -> str:
  plt = _pyplot()
  x = [r['prior_alpha'] / (r['prior_alpha'] + r['prior_beta']) for r in reports]
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  for key, label in (('hoyer_sample', 'samples, standardised'), ('hoyer_mean', 'means, standardised'),
                     ('hoyer_sample_raw', 'samples, raw'), ('hoyer_mean_raw', 'means, raw')):
    ax.plot(x, [r[key] for r in reports], marker='o', label=label)
  for xi, r in zip(x, reports):
    ax.annotate(f'({r["prior_alpha"]:g}, {r["prior_beta"]:g})', (xi, r['hoyer_sample']), fontsize=7,
                textcoords='offset points', xytext=(2, 4))
  ax.set_xlabel('prior mean spike probability alpha / (alpha + beta)')
  ax.set_ylabel('Average Hoyer')
  ax.legend(fontsize=7)
  return _save(plt, fig, path)


# ------------------------------------------------------------------------------------------------ main
def analyse(workdir: str, out: str, split_name: str = 'test', max_sentences: int = 1000, pair=(0, 1),
            seed: int = 0, batch_size: int = 256, sample_seed: int = 0) -> dict:
  """Every analysis that applies to one workdir; PNGs and analysis.json in `out`; returns the numbers.

  The analyses read `max_sentences` sentences of the split drawn by `sample_rows(.., sample_seed)` (their
  indices in the split are `summary['rows']`); `pair` indexes that sample.
  """
  os.makedirs(out, exist_ok=True)
  model, corpus = load(workdir)
  method = model.method
  if method.emits is None:
    raise ValueError(f'{workdir}: method {model.config.model.name!r} has no codes (a language model).')
  split = corpus.splits[split_name]
  rows = sample_rows(split.num_docs, max_sentences, sample_seed)
  sub = split.take(rows)
  summary = {'workdir': workdir, 'method': model.config.model.name, 'split': split_name,
             'rows': rows.tolist(), 'files': []}
  spoiling = bit_spoiling(method, model.params, sub, batch_size)
  summary['spoiling'] = {'base_perplexity': spoiling['base_perplexity'], 'sentences': spoiling['sentences'],
                         'increase': spoiling['increase'].tolist(), 'order': spoiling['order'].tolist()}
  summary['files'].append(plot_spoiling(spoiling, os.path.join(out, 'bit_spoiling.png'), is_bits(method)))
  codes = evaluators.Outputs.of_params(method, model.params, {'sub': sub}, model.mesh, batch_size).codes('sub')[0]
  means, covariance = bit_means(codes), bit_covariance(codes)
  summary['means'] = means.tolist()
  summary['files'].append(plot_means(means, os.path.join(out, 'bit_means.png')))
  summary['files'].append(plot_heatmap(covariance, os.path.join(out, 'bit_covariance.png'),
                                       'covariance of the code dimensions', 'dimension', 'dimension'))
  if is_bits(method):
    a, b = (int(i) for i in pair)
    steps = interpolate(model, codes[a], codes[b], seed)
    summary['interpolation'] = {'pair': [a, b], 'texts': [sub.texts[a], sub.texts[b]] if sub.texts is not None
                                else None, 'path': steps}
    lines = [f'A: {summary["interpolation"]["texts"][0] if sub.texts is not None else a}',
             f'B: {summary["interpolation"]["texts"][1] if sub.texts is not None else b}', '']
    lines += [f'{d:3d}  {text}' for d, text in steps]
    path = os.path.join(out, 'interpolation.txt')
    with open(path, 'w') as f:
      f.write('\n'.join(lines) + '\n')
    summary['files'].append(path)
  if hasattr(method, 'spike_probabilities') and np.asarray(split.labels).shape[1]:
    gamma, counts = gamma_per_class(method, model.params, sub, batch_size, model.mesh)
    summary['gamma_per_class'] = gamma.tolist()
    summary['files'].append(plot_heatmap(
        gamma, os.path.join(out, 'gamma_per_class.png'), 'mean E[gamma | x] per class (spike probability)',
        'dimension', 'class', [f'{n} ({c})' for n, c in zip(corpus.label_names, counts)], 'viridis', False))
  if hasattr(method, 'posterior'):
    summary['information'] = posterior_information(method, model.params, sub, batch_size, model.mesh)
  if method.emits == 'dense':
    summary['hoyer'] = hoyer_report(workdir, split_name)
  with open(os.path.join(out, 'analysis.json'), 'w') as f:
    json.dump(summary, f, indent=2, default=float)
  return summary


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='python -m dtr.analyze bits', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--workdir', required=True, help='a finished sentence workdir; several (comma-separated) '
                      'HSVAE workdirs add the plot of Hoyer against (alpha, beta)')
  parser.add_argument('--out', required=True, help='folder for the PNGs and analysis.json')
  parser.add_argument('--split', default='test')
  parser.add_argument('--max_sentences', type=int, default=1000, help='N sentences of the split, drawn uniformly with --sample_seed (0: all)')
  parser.add_argument('--sample_seed', type=int, default=0, help='the draw of those sentences')
  parser.add_argument('--pair', default='0,1', help='the two sentences (rows of that sample) to interpolate between')
  parser.add_argument('--seed', type=int, default=0, help='order of the flips along the Hamming path')
  parser.add_argument('--batch_size', type=int, default=256)
  args = parser.parse_args(argv)
  workdirs = [w for w in args.workdir.split(',') if w]
  pair = tuple(int(i) for i in args.pair.split(','))
  if len(workdirs) == 1:
    summary = analyse(workdirs[0], args.out, args.split, args.max_sentences, pair, args.seed, args.batch_size,
                      args.sample_seed)
    print(f'{summary["method"]}: base perplexity {summary["spoiling"]["base_perplexity"]:.2f} on '
          f'{summary["spoiling"]["sentences"]} {args.split} sentences; largest increases '
          + ', '.join(f'dim {i}: +{summary["spoiling"]["increase"][i]:.2f}'
                      for i in summary['spoiling']['order'][:5]))
    if 'information' in summary:
      info = summary['information']
      print(f'information: {info["nats"]:.2f} nats (sum over dimensions of 0.5 log(1 + Var[mu] / E[sigma^2]); '
            f'median std of mu between sentences {info["mu_std_median"]:.4f}, median sigma '
            f'{info["sigma_median"]:.3f}; {info["sentences"]} sentences)')
    for distance, text in summary.get('interpolation', {}).get('path', []):
      print(f'{distance:3d}  {text}')
  else:
    os.makedirs(args.out, exist_ok=True)
    reports = hoyer_against_prior(workdirs)
    files = [plot_hoyer_against_prior(reports, os.path.join(args.out, 'hoyer_vs_prior.png'))]
    with open(os.path.join(args.out, 'analysis.json'), 'w') as f:
      json.dump({'hoyer_against_prior': reports, 'files': files}, f, indent=2)
    for r in reports:
      print(f'alpha={r["prior_alpha"]:g} beta={r["prior_beta"]:g}: Hoyer sample {r["hoyer_sample"]:.3f} mean '
            f'{r["hoyer_mean"]:.3f} (standardised), {r["hoyer_sample_raw"]:.3f} / {r["hoyer_mean_raw"]:.3f} (raw)')
    summary = {'files': files}
  print('wrote ' + ', '.join(summary['files']))
