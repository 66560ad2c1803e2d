"""Evaluators built from `config.evals`; the training loop only calls them.

  config.evals = ('precision@100',)                  names of what is measured on valid and test
  config.select = ('valid/precision@100', 'max')    drives early stopping and the kept best model

Each evaluator reads a method's outputs over whole splits (`Outputs`: codes, scores, logits, computed once
per evaluation round for every evaluated member) and returns {metric: values [A]} for the A members:

  precision@K   label precision of the K nearest training codes of each query (valid/test): Hamming over
                bits, the number of unequal symbols over symbols, cosine over dense codes
                (`dtr.evaluate.neighbours`); ties by training index
  matching@K    pairs: is Y_i among the K nearest Y codes of X_i (`dtr.evaluate.matching`)
  perplexity    every perplexity the method declares (`method.perplexities()`: corpus level
                exp(sum NLL / sum tokens), or the per-document average exp(mean_d NLL_d / N_d), named so)
                and the mean per-example score terms (nll, kl)
  accuracy      classification accuracy in percent of `method.predict` (`dtr.evaluate.classify`)
  hoyer         Average Hoyer of dense codes, sampled (`encode` with an rng) and at the mean (without)
  codebook      code-book use of symbol codes: symbols used per slot and the perplexity of their use

Results are reported as `<split>/<metric>`. Metrics that are fractions (precision, matching) stay
fractions here; the loop prints them in percent.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from dtr import input_pipeline as ip
from dtr import members as members_lib
from dtr.evaluate import retrieval

_NAME = re.compile(r'^(precision|matching)@(\d+)$')


# ------------------------------------------------------------------------------------------------ outputs
@functools.lru_cache(maxsize=None)
def _single_fn(method, name: str, mesh, with_rng: bool):
  fn = getattr(method, name)
  repl = ip.replicated(mesh)
  if with_rng:
    return jax.jit(fn, in_shardings=(repl, ip.batch_sharding(mesh), repl), out_shardings=repl)
  return jax.jit(fn, in_shardings=(repl, ip.batch_sharding(mesh)), out_shardings=repl)


@functools.lru_cache(maxsize=None)
def _members_fn(method, name: str, with_rng: bool):
  """One program for all members' outputs on a batch (`members.over_members`: one member after another on
  the CPU)."""
  return jax.jit(members_lib.over_members(getattr(method, name), (0, None, None) if with_rng else (0, None)))


@functools.lru_cache(maxsize=None)
def _members_codes_from_logits(method):
  return jax.jit(jax.vmap(method.codes_from_logits))


def _concat_examples(*parts):
  """Concatenates batch outputs [A, n, ...] along the examples; per-token outputs of token batches of
  different widths are padded to the widest (-1 for integer codes, 0 for floats)."""
  widest = tuple(max(p.shape[d] for p in parts) for d in range(2, parts[0].ndim))
  if any(p.shape[2:] != widest for p in parts):
    fill = -1 if np.issubdtype(parts[0].dtype, np.integer) else 0
    parts = [np.pad(p, [(0, 0), (0, 0)] + [(0, w - s) for w, s in zip(widest, p.shape[2:])], constant_values=fill)
             for p in parts]
  return np.concatenate(parts, axis=1)


class Outputs:
  """A method's outputs over whole splits for A members (params stacked [A, ...]), computed on demand and
  kept for the round. One member runs data-parallel over the mesh; several run as one vmapped program."""

  def __init__(self, method, params_A, splits: dict, mesh, batch_size: int, seed: int = 0):
    self.method, self.params, self.splits, self.mesh = method, params_A, splits, mesh
    self.size = jax.tree.leaves(params_A)[0].shape[0]
    devices = jax.device_count()
    self.batch_size = -(-batch_size // devices) * devices
    self.seed = seed
    self._cache = {}

  @classmethod
  def of_params(cls, method, params, splits: dict, mesh, batch_size: int, seed: int = 0) -> 'Outputs':
    """The outputs of one member from its own (unstacked) parameters, as loaded from a workdir."""
    return cls(method, jax.tree.map(lambda x: jnp.asarray(x)[None], params), splits, mesh, batch_size, seed)

  def _run(self, name: str, split, kind: str, with_rng: bool = False):
    """[A, N, ...] outputs (pytrees) of method.<name>(params, batch[, rng]) over every example of `split`."""
    rng = jax.random.key(self.seed)
    fields = self.method.batch_fields
    out = []
    if self.size == 1:
      fn = _single_fn(self.method, name, self.mesh, with_rng)
      params = jax.tree.map(lambda x: x[0], self.params)
      for i, (n, b) in enumerate(ip.eval_batches(kind, split, self.batch_size, fields)):
        args = (params, ip.to_global(b, ip.batch_sharding(self.mesh)))
        y = fn(*args, jax.random.fold_in(rng, i)) if with_rng else fn(*args)
        out.append(jax.tree.map(lambda v: np.asarray(v)[None, :n], y))
    else:
      fn = _members_fn(self.method, name, with_rng)
      for i, (n, b) in enumerate(ip.eval_batches(kind, split, self.batch_size, fields)):
        b = jax.tree.map(jnp.asarray, b)
        y = fn(self.params, b, jax.random.fold_in(rng, i)) if with_rng else fn(self.params, b)
        out.append(jax.tree.map(lambda v: np.asarray(v)[:, :n], y))
    if not out:
      raise ValueError(f'cannot evaluate an empty split with {name}')
    return jax.tree.map(_concat_examples, *out)

  def _cached(self, key, compute):
    if key not in self._cache:
      self._cache[key] = compute()
    return self._cache[key]

  def codes(self, split_name: str, sampled: bool = False) -> np.ndarray:
    """Codes [A, N, ...] of a split (deterministic; `sampled`: `encode` with an rng)."""
    def compute():
      split = self.splits[split_name]
      fast = None if sampled else self._linear_codes(split)
      if fast is not None:
        return fast
      return self._run('encode', split, self.method.reads, with_rng=sampled)
    return self._cached(('codes', split_name, sampled), compute)

  def side_codes(self, split_name: str, side: str) -> np.ndarray:
    """Codes [A, N, m] of one side ('x' or 'y') of a pair split."""
    split = self.splits[split_name]
    return self._cached(('side', split_name, side),
                        lambda: self._run(f'encode_{side}', getattr(split, side), 'bow'))

  def scores(self, split_name: str) -> dict:
    """{key: [A, N]} of `method.score` (per-example NLL, token counts, ...)."""
    return self._cached(('scores', split_name),
                        lambda: self._run('score', self.splits[split_name], self.method.reads, with_rng=True))

  def of(self, name: str, split_name: str):
    """[A, N, ...] outputs (pytrees) of `method.<name>(params, batch)` over a split."""
    return self._cached((name, split_name), lambda: self._run(name, self.splits[split_name], self.method.reads))

  def features(self, split_name: str) -> np.ndarray:
    """[A, N, F] of `method.features` (frozen features for classifiers)."""
    return self.of('features', split_name)

  def logits(self, split_name: str) -> np.ndarray:
    return self.of('predict', split_name)

  def _linear_codes(self, split):
    """All members' codes by one host sparse product, for methods whose encoder is one linear map of the
    TF-IDF (`linear_encoder`): X [N, V] @ [V, A * F] streams contiguous rows of all members' weights (0.40 s
    against 2.6 s for a vmapped gather, ng20 train split, 100 members, 2-core CPU); the logits go through
    the method's own `codes_from_logits`."""
    linear = getattr(self.method, 'linear_encoder', None)
    if self.size == 1 or linear is None or self.method.reads != 'bow':
      return None
    layer = linear(self.params)
    if layer is None:
      return None
    kernel_AxVxF, bias_AxF = (np.asarray(x, np.float32) for x in layer)
    size, vocab, features = kernel_AxVxF.shape
    kernel_VxAF = np.ascontiguousarray(kernel_AxVxF.transpose(1, 0, 2)).reshape(vocab, size * features)
    codes = _members_codes_from_logits(self.method)
    out, step = [], self.batch_size * 8
    for start in range(0, split.num_docs, step):
      logits_NxAxF = np.asarray(split.tfidf[start:start + step] @ kernel_VxAF).reshape(-1, size, features)
      out.append(np.asarray(codes(jnp.asarray((logits_NxAxF + bias_AxF).transpose(1, 0, 2)))))
    return np.concatenate(out, axis=1) if out else np.zeros((size, 0, self.method.code_length), np.int8)


# ------------------------------------------------------------------------------------------------ metrics
class Retrieval:
  """precision@K: queries of a split against the training codes."""

  needs_labels = True  # `for_corpus` leaves it out on an unlabelled corpus

  def __init__(self, k: int):
    self.k, self.name = k, f'precision@{k}'

  def __call__(self, out: Outputs, split_name: str) -> dict:
    db_split, q_split = out.splits['train'], out.splits[split_name]
    if self.k > db_split.num_docs:
      raise ValueError(f'{self.name} needs at least {self.k} training documents (the retrieval database), the '
                       f'split has {db_split.num_docs}; lower the k of config.evals.')
    db, queries = out.codes('train'), out.codes(split_name)
    kind = out.method.emits
    values = [precision(kind, queries[a], q_split.labels, db[a], db_split.labels, self.k) for a in range(out.size)]
    return {self.name: np.asarray(values)}


def precision(kind: str, q_codes, q_labels, db_codes, db_labels, k: int) -> float:
  """Top-k label precision of codes of any kind (bits: Hamming over packed codes, today's numbers)."""
  if kind == 'bits':
    return float(retrieval.precision_at_k(retrieval.pack_bits(q_codes), q_labels, retrieval.pack_bits(db_codes),
                                          db_labels, k=k))
  from dtr.evaluate import neighbours  # pylint: disable=g-import-not-at-top
  return float(neighbours.precision_at_k_codes(kind, q_codes, q_labels, db_codes, db_labels, k))


class Matching:
  """matching@K of pair splits: X_i's code finds Y_i among the K nearest Y codes of the split."""

  def __init__(self, k: int):
    self.k, self.name = k, f'matching@{k}'

  def __call__(self, out: Outputs, split_name: str) -> dict:
    from dtr.evaluate import matching  # pylint: disable=g-import-not-at-top
    x, y = out.side_codes(split_name, 'x'), out.side_codes(split_name, 'y')
    if self.k > x.shape[1]:
      raise ValueError(f'{self.name} needs at least {self.k} pairs in {split_name!r}, which has {x.shape[1]}; '
                       'lower the k of config.evals.')
    kind = out.method.emits
    return {self.name: np.asarray([matching.matching_accuracy(x[a], y[a], (self.k,), kind=kind)[self.k]
                                   for a in range(out.size)]),
            f'chance@{self.k}': np.full(out.size, self.k / x.shape[1])}


class Perplexity:
  """Every perplexity `method.perplexities()` declares, and the mean of each per-example score term."""

  name = 'perplexity'

  def __call__(self, out: Outputs, split_name: str) -> dict:
    from dtr.evaluate import perplexity  # pylint: disable=g-import-not-at-top
    scores = out.scores(split_name)
    result = {}
    for name, (key, level) in out.method.perplexities().items():
      fn = perplexity.corpus_perplexity if level == 'corpus' else perplexity.document_perplexity
      result[name] = np.asarray([fn(scores[key][a], scores['tokens'][a]) for a in range(out.size)])
    for key, values in scores.items():
      if key != 'tokens':
        result[key] = np.mean(np.asarray(values, np.float64), axis=1)
    return result


class Accuracy:
  """Classification accuracy (%) of `method.predict` on the split's class labels."""

  name = 'accuracy'
  needs_labels = True

  def __call__(self, out: Outputs, split_name: str) -> dict:
    from dtr.evaluate import classify  # pylint: disable=g-import-not-at-top
    logits = out.logits(split_name)
    labels = ip.split_class_ids(out.splits[split_name])
    return {self.name: np.asarray([100.0 * classify.accuracy(logits[a], labels) for a in range(out.size)])}


class Hoyer:
  """Average Hoyer sparsity of dense codes: of samples (`encode` with an rng) and of the mean codes."""

  name = 'hoyer'

  def __call__(self, out: Outputs, split_name: str) -> dict:
    from dtr.evaluate import sparsity  # pylint: disable=g-import-not-at-top
    sampled, mean = out.codes(split_name, sampled=True), out.codes(split_name)
    return {'hoyer_sample': np.asarray([sparsity.average_hoyer(sampled[a]) for a in range(out.size)]),
            'hoyer_mean': np.asarray([sparsity.average_hoyer(mean[a]) for a in range(out.size)])}


class Codebook:
  """Code-book use of symbol codes: distinct symbols per slot (mean over slots) and exp(entropy) of use."""

  name = 'codebook'

  def __call__(self, out: Outputs, split_name: str) -> dict:
    codes = out.codes(split_name)
    used, perplexity = [], []
    for a in range(out.size):
      symbols = codes[a].reshape(codes.shape[1], -1, codes.shape[-1])  # [N, positions, M]
      slots_used, slots_perp = [], []
      for slot in range(symbols.shape[-1]):
        values = symbols[..., slot].reshape(-1)
        values = values[values >= 0]
        counts = np.bincount(values) if values.size else np.zeros(1)
        p = counts[counts > 0] / max(counts.sum(), 1)
        slots_used.append(len(p))
        slots_perp.append(float(np.exp(-np.sum(p * np.log(p)))) if p.size else 0.0)
      used.append(np.mean(slots_used))
      perplexity.append(np.mean(slots_perp))
    return {'codes_used': np.asarray(used), 'code_perplexity': np.asarray(perplexity)}


_FIXED = {'perplexity': Perplexity, 'accuracy': Accuracy, 'hoyer': Hoyer, 'codebook': Codebook}


def split_outputs(method, params, split, name: str, mesh=None, batch_size: int = 1024):
  """Outputs [N, ...] (pytrees) of `method.<name>(params, batch)` for every example of one split with one
  member's parameters, data-parallel over `mesh` (default: every device, `input_pipeline.make_mesh`)."""
  out = Outputs.of_params(method, params, {'split': split}, mesh or ip.make_mesh(), batch_size).of(name, 'split')
  return jax.tree.map(lambda x: x[0], out)


def build(evals) -> list:
  """Evaluators of `config.evals` (a tuple of names, or one comma-separated string)."""
  names = [n.strip() for n in (evals.split(',') if isinstance(evals, str) else evals) if n.strip()]
  if not names:
    raise ValueError('config.evals names no evaluator; e.g. ("precision@100",), ("perplexity",), '
                     '("accuracy",).')
  out = []
  for name in names:
    match = _NAME.match(name)
    if match:
      kind, k = match.group(1), int(match.group(2))
      if k < 1:
        raise ValueError(f'config.evals: {name!r} needs k >= 1.')
      out.append(Retrieval(k) if kind == 'precision' else Matching(k))
    elif name in _FIXED:
      out.append(_FIXED[name]())
    else:
      raise ValueError(f'config.evals: unknown evaluator {name!r}; known: precision@K, matching@K, '
                       f'{", ".join(sorted(_FIXED))}.')
  return out


def for_corpus(evaluators, select: tuple[str, str], data) -> list:
  """The evaluators that can run on `data`. On an unlabelled corpus (no label names) those that need labels
  (precision@K, accuracy) are left out with a warning, and a selection metric that needs them is refused,
  before any training."""
  if len(getattr(data, 'label_names', ()) or ()) > 0:
    return evaluators
  needing = [e for e in evaluators if getattr(e, 'needs_labels', False)]
  if not needing:
    return evaluators
  name = getattr(data, 'name', 'the corpus')
  if select[0] in [e.name for e in needing]:
    raise ValueError(f'config.select keeps the best epoch by valid/{select[0]}, which needs labels, but {name} has '
                     'none (an unlabelled corpus). Give the corpus its labels (data.label_column: they serve '
                     'selection and evaluation only), or select on a metric without labels where the method has '
                     "one (e.g. --config.select=valid/perplexity:min with 'perplexity' in config.evals).")
  logging.warning('%s has no labels; not evaluated (label metrics): %s.', name, ', '.join(e.name for e in needing))
  return [e for e in evaluators if e not in needing]


def evaluate(evaluators, out: Outputs, split_name: str) -> dict:
  """{metric: values [A]} of every evaluator on one split."""
  result = {}
  for evaluator in evaluators:
    result.update(evaluator(out, split_name))
  return result


def parse_select(select, evaluators=None) -> tuple[str, str]:
  """(metric name without the split, 'max' | 'min') of `config.select` (the loop checks the name against what
  the evaluators report)."""
  del evaluators
  if isinstance(select, str):
    metric, _, mode = select.partition(':')
  else:
    metric, mode = tuple(select)
  split, _, name = metric.partition('/')
  if split != 'valid' or not name or mode not in ('max', 'min'):
    raise ValueError(f"config.select={tuple(select) if not isinstance(select, str) else select!r}: use "
                     "('valid/<metric>', 'max' | 'min'), e.g. ('valid/precision@100', 'max').")
  return name, mode
