r"""Decoder Jacobians of a finished bag-of-words VAE workdir (`dtr.methods.bow_vae`; Krishnan, Liang &
Hoffman, AISTATS 2018): which latent directions the generative model uses, and word embeddings from it.

  python -m dtr.analyze jacobian --workdir=DIR --words=god,space --out=spectrum.png [--source=prior]
      [--samples=500] [--k=10] [--doc=0 --split=test]

For word log-probabilities log p_v(z) and a distribution r over z (`dtr.evaluate.jacobian`):

  E_r[J] = E_{z ~ r} d log p(x|z) / dz   [V, d], r = the prior N(0, I) ('prior') or the aggregate posterior
           (1/D) sum_d q(z|x_d) over documents of a split ('posterior': one z ~ q(z|x_d) per document);
  spectrum log sigma_1 >= ... >= log sigma_d of E_r[J]: a model that uses more of its latent space has
           more large singular values (the paper: training with SVI, 'finopt', keeps more of them than
           'none' for deeper decoders);
  neighbours of a word: the words whose rows of E_r[J] have the largest cosine with its row;
  contextual embeddings of one document: the rows of J at the document's posterior mean mu(x_d), whose
           neighbours show a word's sense in that document.

Library functions take a `Workdir` (the model and its training corpus, loaded once by `load`), so notebooks
and `dtr.benches.bow` call them directly; `plot_spectra` / `spectra_figure` draw one or several workdirs'
spectra in one PNG (matplotlib, Agg).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dtr import encode
from dtr.evaluate import jacobian

SOURCES = ('prior', 'posterior')


@dataclasses.dataclass
class Workdir:
  """A finished run: its model (`dtr.encode.Model`) and the corpus it was trained on."""

  model: encode.Model
  corpus: object

  @property
  def method(self):
    return self.model.method

  @property
  def vocab(self) -> list[str]:
    return list(self.corpus.vocab)


def load(workdir: str, corpus=None) -> Workdir:
  """The workdir's best model and its training corpus (read from the recorded location unless given)."""
  model = encode.load_model(workdir)
  if getattr(model.method, 'decode_log_probs', None) is None:
    raise ValueError(f'{workdir}: method {model.config.model.name!r} has no decoder of word '
                     'log-probabilities (decode_log_probs); the Jacobian analysis is for bow_vae.')
  return Workdir(model, corpus if corpus is not None else encode.load_training_corpus(model))


@dataclasses.dataclass(frozen=True)
class _PosteriorView:
  """The method seen by `Outputs` with `encode` = (mu, logvar) stacked [B, 2, d] (hashed by the method, so
  its compiled functions are reused)."""

  method: object

  @property
  def reads(self):
    return self.method.reads

  @property
  def batch_fields(self):
    return self.method.batch_fields

  emits = 'dense'

  def encode(self, params, batch):
    return jnp.stack(self.method.posterior(params, batch), axis=1)


def posterior_params(run: Workdir, split: str = 'train', rows=None) -> tuple[np.ndarray, np.ndarray]:
  """(mu [N, d], logvar [N, d]) of q(z|x) for the split's documents (all, or the given rows)."""
  from dtr.evaluate import evaluators  # pylint: disable=g-import-not-at-top
  data = run.corpus.splits[split]
  if rows is not None:
    data = data.take(np.asarray(rows))
  out = evaluators.Outputs.of_params(_PosteriorView(run.method), run.model.params, {'s': data},
                                     run.model.mesh, run.model.config.get('eval_batch_size', 512))
  both = out.codes('s')[0]
  return both[:, 0], both[:, 1]


def latent_samples(run: Workdir, source: str = 'prior', num_samples: int = 500, split: str = 'train',
                   seed: int = 0) -> np.ndarray:
  """[S, d] samples of the prior, or of the aggregate posterior (one z ~ q(z|x_d) for each of S documents of
  the split drawn without replacement; all of them when the split is smaller)."""
  if source not in SOURCES:
    raise ValueError(f'source must be one of {SOURCES}, got {source!r}.')
  if num_samples < 1:
    raise ValueError(f'num_samples must be >= 1, got {num_samples}.')
  rng = jax.random.key(seed)
  d = run.method.code_length
  if source == 'prior':
    return np.asarray(jacobian.prior_samples(rng, num_samples, d))
  num_docs = run.corpus.splits[split].num_docs
  rows = np.sort(np.random.default_rng(seed).permutation(num_docs)[:num_samples])
  mu, logvar = posterior_params(run, split, rows)
  noise = np.asarray(jax.random.normal(rng, mu.shape, mu.dtype))
  return mu + np.exp(0.5 * logvar) * noise


def expected_jacobian(run: Workdir, source: str = 'prior', num_samples: int = 500, split: str = 'train',
                      seed: int = 0) -> np.ndarray:
  """E_r[J] [V, d] over `num_samples` samples of r = the prior or the aggregate posterior."""
  z_SxD = latent_samples(run, source, num_samples, split, seed)
  fn = jax.jit(lambda params, z: jacobian.expected_jacobian(run.method.decode_log_probs, params, z))
  return np.asarray(fn(run.model.params, jnp.asarray(z_SxD)))


def spectrum(jacobian_VxD) -> np.ndarray:
  """The sorted (descending) log singular values of a Jacobian, float64."""
  return np.asarray(jacobian.log_singular_values(jnp.asarray(jacobian_VxD, jnp.float32)), np.float64)


def large_singular_values(log_sv, ratio: float = 0.1) -> int:
  """How many singular values are at least `ratio` times the largest (a count of the directions used)."""
  log_sv = np.asarray(log_sv, np.float64)
  return int(np.sum(log_sv >= log_sv[0] + np.log(ratio)))


def neighbours(run: Workdir, jacobian_VxD, words: Sequence[str], k: int = 10) -> dict:
  """{word: [(neighbour, cosine), ...]}: the k words whose Jacobian rows are most cosine-similar."""
  return jacobian.nearest_words(jacobian_VxD, run.vocab, list(words), k=k)


def contextual_embeddings(run: Workdir, split: str, doc: int) -> np.ndarray:
  """[V, d]: J at document `doc`'s posterior mean mu(x_doc); row v embeds word v in that document."""
  mu, _ = posterior_params(run, split, [doc])
  fn = jax.jit(lambda params, z: jacobian.contextual_embeddings(run.method.decode_log_probs, params, z))
  return np.asarray(fn(run.model.params, jnp.asarray(mu[0])))


def document_words(run: Workdir, split: str, doc: int, top: int = 15) -> list[tuple[str, int]]:
  """The document's most frequent words with their counts (what the contextual neighbours are about)."""
  row = run.corpus.splits[split].counts[doc]
  order = np.argsort(-row.data, kind='stable')[:top]
  return [(run.vocab[int(row.indices[i])], int(row.data[i])) for i in order]


def format_neighbours(found: dict) -> str:
  return '\n'.join(f'{word}: ' + ', '.join(f'{n} ({c:.2f})' for n, c in near) for word, near in found.items())


def refined_perplexities(run: Workdir, splits: Sequence[str] = ('valid', 'test'), seed: int | None = None,
                         **model_overrides) -> dict:
  """{'<split>/<metric>': value} of the perplexity evaluator (perp_0, perp_f, perp_is, perplexity and the
  mean score terms) with the workdir's model, its `model` config changed by `model_overrides` (e.g.
  eval_svi_steps=100, eval_svi_lr=8e-3, eval_is_samples=100: the test-time SVI of the final evaluation)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from dtr import methods  # pylint: disable=g-import-not-at-top
  from dtr.evaluate import evaluators  # pylint: disable=g-import-not-at-top
  mc = ml_collections.ConfigDict(run.model.config.model.to_dict())
  mc.update(model_overrides)
  method = methods.get_method(mc, run.method.data)
  config = run.model.config
  out = evaluators.Outputs.of_params(method, run.model.params, {s: run.corpus.splits[s] for s in splits},
                                     run.model.mesh, config.get('eval_batch_size', 512),
                                     seed=int(config.get('seed', 0) if seed is None else seed))
  result = {}
  for split in splits:
    for name, values in evaluators.evaluate(evaluators.build(('perplexity',)), out, split).items():
      result[f'{split}/{name}'] = float(np.asarray(values)[0])
  return result


# ------------------------------------------------------------------------------------------------ plots
def plot_spectra(spectra: dict, path: str, title: str = '') -> str:
  """One PNG with each labelled spectrum {label: log singular values} as a curve against its rank.

  Labels 'NAME (prior)' and 'NAME (posterior)' share NAME's colour; posterior curves are dashed.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  if not spectra:
    raise ValueError('plot_spectra needs at least one spectrum.')
  fig, ax = plt.subplots(figsize=(7, 4.5))
  colours = {}
  for label, log_sv in spectra.items():
    log_sv = np.asarray(log_sv)
    group = label.split(' (')[0]
    colour = colours.setdefault(group, f'C{len(colours) % 10}')
    ax.plot(np.arange(1, len(log_sv) + 1), log_sv, label=label, color=colour,
            linestyle='--' if 'posterior' in label else '-')
  ax.set_xlabel('rank i')
  ax.set_ylabel(r'$\log \sigma_i$ of $E[J]$')
  ax.set_title(title or 'log singular values of the expected decoder Jacobian', fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def spectra_of_workdirs(workdirs: dict, source: str = 'prior', num_samples: int = 500, split: str = 'train',
                        seed: int = 0) -> dict:
  """{label: log singular values} of several workdirs {label: path or Workdir}; one corpus read per path
  of data when they share it."""
  out, corpus = {}, None
  for label, wd in workdirs.items():
    if isinstance(wd, str):
      wd = load(wd, corpus=corpus if corpus is not None and _same_data(wd, corpus) else None)
    corpus = wd.corpus
    out[label] = spectrum(expected_jacobian(wd, source, num_samples, split, seed))
  return out


def _same_data(path: str, corpus) -> bool:
  from dtr import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from dtr.data import corpus as corpus_lib  # pylint: disable=g-import-not-at-top
  try:
    return workdir_lib.read_json(path, 'data.json').get('fingerprint') == corpus_lib.fingerprint(corpus)
  except (OSError, ValueError, AttributeError, TypeError):
    return False


def spectra_figure(workdirs: dict, path: str, source: str = 'prior', num_samples: int = 500,
                   split: str = 'train', seed: int = 0, title: str = '') -> dict:
  """Plots several workdirs' spectra {label: workdir} in one PNG at `path`; returns the spectra."""
  spectra = spectra_of_workdirs(workdirs, source, num_samples, split, seed)
  plot_spectra(spectra, path, title or f'E[J] over the {source}, {num_samples} samples')
  return spectra


# ------------------------------------------------------------------------------------------------ CLI
def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='python -m dtr.analyze jacobian',
                                   description=__doc__.split('\n\n')[0])
  parser.add_argument('--workdir', required=True, help='a finished bow_vae run')
  parser.add_argument('--words', default='', help='comma-separated words whose neighbours to print')
  parser.add_argument('--out', default='', help='PNG of the spectrum (prior and aggregate posterior)')
  parser.add_argument('--source', default='prior', choices=SOURCES, help='r of E_r[J] for the neighbours')
  parser.add_argument('--samples', type=int, default=500, help='samples of r')
  parser.add_argument('--split', default='train', help='split of the aggregate posterior and of --doc')
  parser.add_argument('--k', type=int, default=10, help='neighbours per word')
  parser.add_argument('--doc', type=int, default=-1, help='also the contextual neighbours in this document')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  run = load(args.workdir)
  words = [w.strip() for w in args.words.split(',') if w.strip()]
  spectra = {}
  for source in SOURCES:
    if source == args.source or args.out:
      jac = expected_jacobian(run, source, args.samples, args.split, args.seed)
      spectra[source] = spectrum(jac)
      if source == args.source and words:
        print(f'Neighbours by cosine of E[J] rows ({source}, {args.samples} samples):')
        print(format_neighbours(neighbours(run, jac, words, args.k)))
  for source, log_sv in spectra.items():
    print(f'{source}: {large_singular_values(log_sv)} of {len(log_sv)} singular values >= 0.1 x the largest; '
          f'log sigma: {", ".join(f"{v:.2f}" for v in log_sv[:5])}, ..., {log_sv[-1]:.2f}')
  if args.doc >= 0:
    print(f'Document {args.doc} of {args.split}: ' + ', '.join(f'{w} ({c})' for w, c in
                                                              document_words(run, args.split, args.doc)))
    if words:
      print('Contextual neighbours (J at its posterior mean):')
      context = contextual_embeddings(run, args.split, args.doc)
      print(format_neighbours(neighbours(run, context, words, args.k)))
  if args.out:
    name = os.path.basename(os.path.normpath(args.workdir))
    plot_spectra({f'{name} ({s})': v for s, v in spectra.items()}, args.out,
                 f'log singular values of E[J] ({args.samples} samples of the prior and of the posteriors)')
    print(f'Wrote {args.out}')
