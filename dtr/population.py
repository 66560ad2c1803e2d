"""Population search: the policy of P settings of one method trained as one stack by `dtr.train`.

Random search (the AMMI paper's protocol: N runs per cell, best on validation) becomes one compiled program
over a member axis (`dtr.members`) for everything that changes no array shape: each member has its own seed
(initialisation) and the method's `default_hparams`, kept in its state: every method trained by Adam varies
its learning rate (the discrete VAEs under the Noam schedule: its factor) and the fields its train step reads
(`step_hparams`: VQ's commitment; CatVAE's KL weight, free-bits ratio and temperature; the sparse sentence
VAEs' loss weights), and those that exist under some settings only (`conditional_hparams`: CatVAE's annealing
floor and rate when tau is annealed; the KL annealing's start of the bag-of-words VAE and the sentence VAEs
when annealed; the bag-of-words VAE's training SVI step size when it refines; the dropout and word dropout of
the sentence and discrete VAEs when the config has some); AMMI also its prior's learning rate, entropy weight,
clip, init range and, with views, the view's drop rate; HSVAE its Beta prior and MAT-VAE its prior's spike
probability (kept in their parameters, which evaluation reads too). A method without any (LSH, spectral
hashing, the bag-of-words baseline: nothing is trained by a step size) trains populations of seeds, as does
any method whose `population_search` is empty: members differ by seed only, the best on validation is reported
and population_results.json lists every member (mean and spread over seeds from one program). Shape-changing
choices (batch size, G, prior layers, code length) and the config fields that are no population hyperparameter
of the method form separate populations: `dtr.sweep`.

This module is the search policy only; the loop is `dtr.train`'s:
- `Search.members`: member 0 is the config's own setting; members 1..P-1 draw their settings from
  `config.population_search` (specs such as 'log_uniform(0.001,0.03)', 'uniform(1.5,4)', 'choice(0,1,5,10)';
  'cycle(0.01,0.1)' takes its values in turn, setting j the ((j - 1) mod n)-th: a grid beside setting 0),
  deterministically from `config.seed`, in `population_replicas` consecutive copies (seeds that differ), so
  that settings are ranked by their mean over seeds. Members share one data order by default
  (`population_data='shared'`, the order of `config.seed`: one host batch feeds all of them);
  'per_member' gives each its own (the single run with its seed). A classifier's population trains on its
  label subsamples: every member on the one subsample, or, with several (`data.label_seeds`), every setting on
  each of them, its replicas (member (j, r) is setting j on subsample r in the order and with the seed of
  the classifier's own run on r; setting 0 is that run), settings ranked by their mean over the subsamples.
- `ranking_split`: `population_valid_queries=n` ranks members every epoch on a fixed random subset of n
  validation queries (the same estimate with more noise);
- `after_epoch`: `population_prune_epochs='4,8,16'` is successive halving: after each listed epoch only the
  best `population_prune_keep` of the running settings (by best validation so far, the mean over a setting's
  replicas) go on;
- `finish`: the `population_rescore` best settings are re-validated on the whole validation split (when a
  subset ranked them), the best mean is picked, and population_results.json lists every setting (the mean and
  std of its numbers over its replicas) and every member.
Without pruning every member is trained and early-stopped exactly as a single run with its settings, `seed` =
its seed and `data_seed` = the population's seed (tested). Evaluations that sample (a VAE's sampled-code
perplexity, sampled Hoyer) draw one noise for all members, that of the population's seed, so members are
ranked under the same noise; a member's sampled numbers then differ from its single run's (whose noise is
that of its own seed) by sampling noise, while its deterministic ones (mean or greedy codes) agree.
"""

from __future__ import annotations

import json
import os
import re

import jax
import ml_collections
import numpy as np

from dtr import input_pipeline as ip
from dtr import members as members_lib
from dtr.evaluate import evaluators as evaluators_lib

_SPEC = re.compile(r'^\s*(log_uniform|uniform|choice|cycle)\((.*)\)\s*$')


def sample_value(spec: str, rng: np.random.Generator, setting: int = 1) -> float:
  """The value of `spec` for setting `setting` (>= 1): drawn from `rng`, or for cycle(...) the
  ((setting - 1) mod n)-th of its n values (no draw)."""
  match = _SPEC.match(spec)
  if not match:
    raise ValueError(f'Bad population_search spec {spec!r}: use log_uniform(a,b), uniform(a,b), choice(x,y,...) '
                     'or cycle(x,y,...).')
  kind, args = match.group(1), [float(a) for a in match.group(2).split(',')]
  if kind == 'cycle':
    return args[(setting - 1) % len(args)]
  if kind == 'choice':
    return float(rng.choice(args))
  lo, hi = args
  return float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if kind == 'log_uniform' else float(rng.uniform(lo, hi))


def hparam_defaults(method) -> dict:
  """The hyperparameters a population can vary for `method` and their config values ({}: none, its members
  differ by seed only)."""
  return dict(method.default_hparams())


def member_settings(config, method, size: int, subsamples: int = 0) -> list[dict]:
  """[{'seed': ..., 'setting': j, hparam: value, ...}] for every member.

  Members come in `population_replicas` consecutive copies of one setting (the same hyperparameters, seeds
  that differ), so that settings can be ranked by their mean over seeds; setting 0 is the config's own.
  `subsamples` > 1 (a classifier's label subsamples): the replicas of a setting are its runs on each
  subsample r ('subsample': r), with the seed of the classifier's own run on it (config.seed + r), so setting 0
  is that run and every setting is compared under the same initialisations.
  """
  # float32 values written shortest (1e-3, not 0.0010000000474974513): the same float32 in the state
  defaults = {k: float(str(np.float32(v))) for k, v in hparam_defaults(method).items()}
  unknown = set(config.population_search) - set(defaults)
  if unknown and not defaults:
    raise ValueError(f'population_search names {sorted(unknown)}, but {config.model.name} has no hyperparameters '
                     'a population can vary (default_hparams): its members differ by seed only. Leave '
                     'population_search empty, or sweep config fields with dtr.sweep (one population per point).')
  if unknown:
    conditional = {k: when for k, (when, _) in method.conditional_hparams.items() if k in unknown}
    hint = (' (' + '; '.join(f'{k} only {v}' for k, v in sorted(conditional.items())) + ')') if conditional else ''
    raise ValueError(f'population_search names {sorted(unknown)}; {config.model.name} can vary '
                     f'{sorted(defaults)}{hint}.')
  replicas = int(config.get('population_replicas', 1))
  if subsamples > 1:
    if replicas != 1:
      raise ValueError(f'population_replicas={replicas} with {subsamples} label subsamples (data.label_seeds): '
                       "a setting's replicas are its runs on the subsamples; drop population_replicas.")
    if size % subsamples:
      raise ValueError(f'population={size} must be a multiple of the {subsamples} label subsamples '
                       f'(data.label_seeds): each setting trains on every subsample, e.g. '
                       f'population={subsamples * max(1, size // subsamples)} for '
                       f'{max(1, size // subsamples)} settings.')
    replicas = subsamples
  if replicas < 1 or size % replicas:
    raise ValueError(f'population={size} must be a multiple of population_replicas={replicas} (>= 1): each '
                     'setting is trained with that many seeds.')
  rng = np.random.default_rng([config.seed, 7919])
  members = []
  for j in range(size // replicas):
    hp = dict(defaults)
    if j > 0:
      for name, spec in sorted(config.population_search.items()):
        hp[name] = sample_value(spec, rng, j)
      if 'prior_learning_rate' in hp and 'prior_learning_rate' not in config.population_search:
        hp['prior_learning_rate'] = hp['learning_rate']
      _check_drawn(config, method, j, hp)
    if subsamples > 1:
      members += [{'seed': int(config.seed) + r, 'setting': j, 'subsample': r, **hp} for r in range(replicas)]
    else:
      members += [{'seed': int(config.seed) + len(members) + r, 'setting': j, **hp} for r in range(replicas)]
  return members


def _check_drawn(config, method, setting: int, hp: dict) -> None:
  """Refuses a drawn setting that the method's own checks refuse as config values (a Beta prior <= 0, ...),
  before any training, naming the values and the spec to narrow."""
  fields = {k: v for k, v in hp.items() if k in config.population_search and k in config.model}
  if not fields:
    return
  model = ml_collections.ConfigDict(config.model.to_dict())
  for name, value in fields.items():  # a count (an int field, e.g. SVI steps) takes whole numbers only
    if isinstance(model[name], int) and not isinstance(model[name], bool):
      if value != int(value):
        raise ValueError(f'population_search drew {name}={value} for setting {setting}, but model.{name} is a '
                         'count (an integer): draw it with choice(...) or cycle(...) of whole numbers.')
      fields[name] = int(value)
  model.update(fields)
  try:
    method.validate(model)
  except ValueError as e:
    raise ValueError(f'population_search drew {fields} for setting {setting}, which the method refuses: {e} '
                     'Narrow those specs in config.population_search.') from e


def setting_means(members: list[dict], values) -> dict[int, float]:
  """{setting: mean of `values` over its replicas} (values indexed by member; None counts as -inf)."""
  sums: dict[int, list] = {}
  for m, v in zip(members, values):
    sums.setdefault(m['setting'], []).append(-np.inf if v is None else v)
  return {j: float(np.mean(v)) for j, v in sums.items()}


def setting_rows(members: list[dict], table: list[dict], ranking: dict[int, float]) -> list[dict]:
  """One row per setting of population_results.json: its hyperparameters, its members, `ranking_score` (the mean
  over its members of their best validation score, by which settings were ranked and pruned) and, for every
  valid/ and test/ number all its members have, the mean and the std (ddof 1, with several members)."""
  rows = []
  for j in sorted(ranking):
    idx = [i for i, m in enumerate(members) if m['setting'] == j]
    row = {'setting': j, **{k: v for k, v in members[idx[0]].items() if k not in ('seed', 'setting', 'subsample')},
           'members': idx, 'ranking_score': float(ranking[j]) if np.isfinite(ranking[j]) else None}
    for key in sorted({k for i in idx for k in table[i] if k.startswith(('valid/', 'test/'))}):
      values = [table[i][key] for i in idx if key in table[i]]
      if len(values) == len(idx):
        row[key] = float(np.mean(values))
        if len(values) > 1:
          row[f'{key}_std'] = float(np.std(values, ddof=1))
    rows.append(row)
  return rows


def options(config) -> dict:
  """The population's cost options, checked (see the module docstring)."""
  data = config.get('population_data', 'shared')
  if data not in ('shared', 'per_member'):
    raise ValueError(f"population_data={data!r}: use 'shared' (one data order for all members, one host batch "
                     "per step) or 'per_member' (each member its own order, as separate runs with its seed).")
  queries, rescore = int(config.get('population_valid_queries', 0)), int(config.get('population_rescore', 10))
  if queries < 0 or rescore < 1:
    raise ValueError(f'population_valid_queries must be >= 0 (0: all) and population_rescore >= 1, got '
                     f'{queries} and {rescore}.')
  spec = str(config.get('population_prune_epochs', '') or '')
  try:
    prune_epochs = sorted({int(e) for e in spec.replace(' ', '').split(',') if e})
  except ValueError:
    prune_epochs = [0]
  keep = float(config.get('population_prune_keep', 1 / 3))
  if any(e < 1 for e in prune_epochs) or not 0 < keep < 1:
    raise ValueError(f'population_prune_epochs={spec!r} must list epochs >= 1 (e.g. "4,8,16"; "" = no pruning) '
                     f'and population_prune_keep a fraction in (0, 1), got {keep}.')
  return {'shared': data == 'shared', 'valid_queries': queries, 'rescore': rescore,
          'prune_epochs': prune_epochs, 'prune_keep': keep}


def valid_subset(split, num_queries: int, seed: int):
  """A fixed random subset of `num_queries` validation documents (in split order), or the whole split."""
  if not 0 < num_queries < split.num_docs:
    return split
  rows = np.sort(np.random.default_rng([seed, 31337]).choice(split.num_docs, num_queries, replace=False))
  return split.take(rows)


def prune(meta, members: list[dict], epochs_done: int, opts) -> int:
  """Successive halving: after a listed epoch, stops all but the best running settings (by the mean over
  their replicas of the best validation so far). Returns how many members it stopped."""
  if epochs_done not in opts['prune_epochs']:
    return 0
  running = sorted({m['setting'] for m, done in zip(members, meta['done']) if not done})
  means = setting_means(members, meta['best_score'])
  keep = max(1, int(np.ceil(len(running) * opts['prune_keep'])))
  dropped = set(sorted(running, key=lambda j: (-means[j], j))[keep:])
  stopped = [i for i, m in enumerate(members) if m['setting'] in dropped and not meta['done'][i]]
  pruned_at = meta.setdefault('pruned_at', [None] * len(members))
  for i in stopped:
    meta['done'][i], meta['stopped'][i], pruned_at[i] = True, f'pruned after epoch {epochs_done}', epochs_done
  return len(stopped)


class Search:
  """The policy `dtr.train` consults for a population run (see the module docstring)."""

  def __init__(self, config, method, data, subsets=None):
    """`subsets`: a classifier's label subsamples (arrays of training rows; None: every member trains on all
    rows). One: every member trains on it. Several: every setting trains on each (`member_settings`), in the
    order of the classifier's run on it (seed config.seed + r), and settings are ranked by their mean."""
    size = int(config.population)
    if jax.process_count() > 1:
      raise NotImplementedError('Population runs are single-process; run one population per host.')
    self.config, self.opts = config, options(config)
    subsets = [None] if subsets is None else list(subsets)
    self.settings = member_settings(config, method, size, subsamples=len(subsets))
    keys = list(hparam_defaults(method))
    order_seed = ip.data_seed(config)

    def order(m):
      if len(subsets) > 1:
        return m['seed']  # the classifier's own run on the subsample
      return order_seed if self.opts['shared'] else m['seed']

    self.members = [members_lib.Member(seed=m['seed'], order_seed=order(m),
                                       hparams={k: m[k] for k in keys} if keys else None, setting=m['setting'],
                                       rows=subsets[m.get('subsample', 0)])
                    for m in self.settings]
    del data

  def ranking_split(self, valid_split):
    return valid_subset(valid_split, self.opts['valid_queries'], int(self.config.seed))

  def after_epoch(self, meta, epochs_done: int) -> int:
    return prune(meta, self.settings, epochs_done, self.opts)

  def finish(self, run, splits: dict, seconds: float) -> tuple[list[int], dict]:
    """Picks the best setting on validation; returns its members and the population's summary, and writes
    population_results.json (every setting, `setting_rows`, and every member, with test numbers for the
    leading settings)."""
    meta, config = run.meta, self.config
    subset = self.opts['valid_queries'] > 0 and 0 < self.opts['valid_queries'] < splits['valid'].num_docs
    means = setting_means(self.settings, meta['best_score'])
    leading = sorted(means, key=lambda j: (-means[j], j))[:self.opts['rescore']]
    scored = [i for i, m in enumerate(self.settings) if m['setting'] in leading]
    rows = members_lib.bucket_rows(scored, len(self.settings))
    params = run.best_params if members_lib.is_identity(rows, len(self.settings)) else members_lib.take(
        run.best_params, rows)
    out = evaluators_lib.Outputs(run.method, params, splits, run.mesh,
                                 config.eval_batch_size, seed=int(config.seed))
    position = {int(m): j for j, m in enumerate(rows)}
    name = run.select_name
    valid = evaluators_lib.evaluate(run.evaluators, out, 'valid') if subset else None
    test = evaluators_lib.evaluate(run.evaluators, out, 'test')
    full_valid = {i: (run._score(valid[name][position[i]]) if subset else meta['best_score'][i]) for i in scored}
    valid_means = setting_means([self.settings[i] for i in scored], [full_valid[i] for i in scored])
    best_setting = max(leading, key=lambda j: (valid_means[j], -j))
    replicas = [i for i, m in enumerate(self.settings) if m['setting'] == best_setting]
    table = []
    for i, m in enumerate(self.settings):
      row = {**m, 'best_epoch': meta['best_epoch'][i], 'stopped': meta['stopped'][i],
             'pruned_at_epoch': meta.get('pruned_at', [None] * len(self.settings))[i],
             'valid_history': run.valid_history(i)}
      best = meta['best_metrics'][i] or {}
      if i in scored:
        source = valid if subset else None
        row.update({f'valid/{k}': float(source[k][position[i]]) if source else float(best.get(k, np.nan))
                    for k in test})
        row.update({f'test/{k}': float(v[position[i]]) for k, v in test.items()})
      if subset:
        row.update({f'valid_subset/{k}': v for k, v in best.items()})
      table.append(row)
    settings = {k: v for k, v in self.settings[replicas[0]].items() if k not in ('seed', 'setting', 'subsample')}
    summary = {'population': len(self.settings), 'replicas': len(replicas), 'best_member': replicas[0],
               'best_setting': best_setting, 'best_members': replicas, 'best_hparams': settings,
               'population_seconds': round(seconds, 1)}
    if run.is_main:
      with open(os.path.join(run.workdir, 'population_results.json'), 'w') as f:
        json.dump({**summary, 'settings': setting_rows(self.settings, table, means), 'members': table,
                   'config': json.loads(config.to_json_best_effort())}, f, indent=2)
      over = ('' if len(replicas) == 1 else f' (mean over {len(replicas)} label subsamples)'
              if 'subsample' in self.settings[0] else f' (mean of {len(replicas)} seeds)')
      print(f'best setting {best_setting}, member {replicas[0]}{over}; settings {settings}; {seconds:.0f}s for '
            f'{len(self.settings)} members', flush=True)
    return replicas, summary
