"""The one training loop of dtr: every method, single runs and populations, documents and pairs.

`train_and_evaluate(config, workdir)` is everything `python -m dtr.main` does:

  data      `config.data` -> a corpus (documents, pairs of texts, or the features of a finished workdir)
  method    `config.model` -> a method (`dtr.methods`): what it reads and emits, its pure functions
  members   a stack of P runs (`dtr.members`): one for a single run, the settings of a search
            (`config.population`, `dtr.population`) or the label subsamples of a classifier
            (`data.labels`, `data.label_seeds`)
  loop      K jitted steps per call, host batches built ahead on a thread; after every epoch the
            evaluators of `config.evals` run on valid, `config.select` keeps each member's best parameters
            and stops it after `config.patience` epochs without improvement; orbax checkpoints of
            everything (state, best parameters, data position, running sums, early-stopping record) every
            `checkpoint_every_steps` and at every epoch's end, at most one per step, resumed from the latest
            one in `workdir`; TensorBoard scalars, a progress bar and a non-finite-loss stop
  finish    the reported members' best parameters evaluated on valid and test; codes, parameters,
            results.json (`<split>/<metric>` keys), config.json and what a new text needs (featuriser,
            tokeniser) written to `workdir` (`dtr.workdir`)

Closed-form baselines (`method.fitted`) are fitted instead of trained and then finished the same way.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from dtr import checkpoint, members as members_lib, methods, runtime, workdir as workdir_lib
from dtr import input_pipeline as ip
from dtr.data import load as load_lib
from dtr.evaluate import evaluators as evaluators_lib
from dtr.methods.base import DataInfo


def maybe_initialize_distributed(config) -> None:
  """Multi-host (TPU pod / multi-node GPU): `jax.distributed` when asked by config or `DTR_MULTIHOST=1`."""
  if (config.get('multihost') or os.environ.get('DTR_MULTIHOST') == '1') and not jax.distributed.is_initialized():
    jax.distributed.initialize()


# ------------------------------------------------------------------------------------------------ data
def load_data(config):
  """The corpus `config.data` describes, of the kind the method reads (documents, pairs or features)."""
  reads = methods.method_class(config.model.name).reads
  if reads == 'pairs':
    from dtr.data import pairs  # pylint: disable=g-import-not-at-top
    return pairs.load_pair_corpus(config.data)
  if reads == 'features':
    from dtr import probe  # pylint: disable=g-import-not-at-top
    return probe.load_features(config.data)
  from dtr.data import load_corpus  # pylint: disable=g-import-not-at-top
  return load_corpus(config.data)


def data_info(data, train_size: int) -> DataInfo:
  """What the method needs to know of the data (`dtr.methods.base.DataInfo`)."""
  token_vocab = getattr(data, 'token_vocab', None)
  train = data.splits['train']
  tokens = getattr(train, 'tokens', None)
  features = getattr(train, 'features', None)
  return DataInfo(
      vocab_size=len(data.vocab), token_vocab_size=len(token_vocab) if token_vocab is not None else 0,
      num_labels=len(getattr(data, 'label_names', ())),
      feature_shape=tuple(features.shape[1:]) if features is not None else (),
      feature_dtype=str(features.dtype) if features is not None else 'float32',
      num_values=int(getattr(data, 'num_values', 0)),
      max_len=max((int(np.diff(s.tokens.offsets).max(initial=0)) for s in data.splits.values()
                   if getattr(s, 'tokens', None) is not None), default=0) if tokens is not None else 0,
      train_size=train_size)


def announce_data(data) -> None:
  s = data.splits
  sizes = ' / '.join(f'{ip.num_examples(s[n]):,}' for n in ('train', 'valid', 'test'))
  extra = []
  if getattr(data, 'token_vocab', None) is not None:
    extra.append(f'{len(data.token_vocab)} token ids')
  logging.info('Data %s: %s train / valid / test, vocab %d, %d labels%s%s', data.name, sizes, len(data.vocab),
               len(getattr(data, 'label_names', ())), ''.join(f', {e}' for e in extra),
               ' (SYNTHETIC)' if data.synthetic else '')


def announce_settings(config, data) -> None:
  """Says which tuned settings a run uses, and warns when they were tuned for another corpus."""
  settings, tuned_for = config.get('settings', ''), config.get('tuned_for', '')
  if settings and jax.process_index() == 0:
    print(f'Settings: {settings}', flush=True)
  if tuned_for and tuned_for != data.name and not data.synthetic:
    logging.warning('These settings were tuned for %s, but the data is %s: for a corpus of your own use the '
                    'generic settings, e.g. --config=configs/ammi.py:dataset=csv,path=FILE.', tuned_for, data.name)


def make_members(config, method, data, subsets) -> tuple[list[members_lib.Member], object]:
  """The stack to train, and the search policy (None unless `config.population`)."""
  size = int(config.get('population', 0) or 0)
  if size > 0:
    from dtr import population  # pylint: disable=g-import-not-at-top
    search = population.Search(config, method, data, subsets=subsets)
    return search.members, search
  if subsets is not None:
    return [members_lib.Member(seed=int(config.seed) + i, order_seed=int(config.seed) + i, rows=rows)
            for i, rows in enumerate(subsets)], None
  return [members_lib.Member(seed=int(config.seed), order_seed=ip.data_seed(config))], None


def label_budget(config, method, data):
  """Per-member training rows of a classifier's label budget (`data.labels`, `data.label_seeds`), or None."""
  if 'label' not in method.batch_fields:
    budget = str(config.data.get('labels', 'all'))
    if budget != 'all':
      raise ValueError(f'data.labels={budget} is the label budget of a classifier; {config.model.name} trains '
                       'on every training document without labels. Drop it, or classify the finished workdir '
                       f'with configs/classify.py:features=WORKDIR,labels={budget}.')
    return None
  from dtr.data import labels as labels_lib  # pylint: disable=g-import-not-at-top
  return labels_lib.label_subsets(data.splits['train'], config.data.get('labels', 'all'),
                                  int(config.data.get('label_seeds', 1)), seed=int(config.data.get('split_seed', 0)))


# ------------------------------------------------------------------------------------------------ entry point
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, corpus=None) -> dict:
  """Trains (or fits) `config.model` on `config.data`, keeps the best model on validation, writes codes and
  results; returns the results dict (also written to `workdir/results.json`)."""
  runtime.setup()
  timings = {'imports_s': runtime.process_seconds(), 'compile_before_s': runtime.compile_seconds()}
  maybe_initialize_distributed(config)
  os.makedirs(workdir, exist_ok=True)
  t_start = time.time()
  evaluators = evaluators_lib.build(config.evals)
  select = evaluators_lib.parse_select(config.select, evaluators)

  # --- data, method and members
  check_loop(config)
  check_length_buckets(config, methods.method_class(config.model.name))
  data = corpus if corpus is not None else load_data(config)
  timings['data_s'] = time.time() - t_start
  announce_data(data)
  announce_settings(config, data)
  evaluators = evaluators_lib.for_corpus(evaluators, select, data)
  cls = methods.method_class(config.model.name)
  subsets = label_budget(config, cls, data)
  train_size = len(subsets[0]) if subsets is not None else ip.num_examples(data.splits['train'])
  if cls.reads == 'bow' and getattr(data, 'has_tokens', False):
    # A text corpus keeps documents whose words are all outside the bag-of-words vocabulary (they still
    # have tokens); a method that reads TF-IDF cannot use them.
    from dtr.data import corpus as corpus_lib  # pylint: disable=g-import-not-at-top
    data = corpus_lib.handle_empty_docs(data, config.data.get('empty_docs', 'drop'), by='tfidf')
    train_size = ip.num_examples(data.splits['train']) if subsets is None else train_size
  method = methods.get_method(config.model, data_info(data, train_size))
  check_inputs(method, data)
  stack, search = make_members(config, method, data, subsets)
  if not method.fitted:
    ip.check_batch_size(config.batch_size, train_size,
                        'labelled training examples per subsample' if subsets is not None else 'training examples')

  mesh = ip.make_mesh()
  logging.info('Mesh: %d devices (%s) over %d processes; %d member%s', jax.device_count(),
               jax.devices()[0].platform, jax.process_count(), len(stack), 's' if len(stack) > 1 else '')
  run = Run(config, workdir, data, method, stack, search, evaluators, select, mesh)
  t_train = time.time()
  if method.fitted:
    run.fit()
  else:
    run.train()
  timings['train_s'] = time.time() - t_train
  run.timings = dict(timings, t_start=t_start)
  return run.finish(time.time() - t_start)


# Where the data are read from may move between a run and its resumption; what they are may not.
_DATA_LOCATIONS = ('path', 'data_dir', 'catalog_dir', 'tfds_dir', 'allow_synthetic')
_RESUME_FIELDS = ('batch_size', 'seed', 'data_seed', 'population', 'population_data', 'population_replicas',
                  'population_search')


# What the absence of a loop or data setting from a checkpoint's settings means (`settings_absent`; the
# model's fields: its method's `absent_values`): the data fields absent unless a run asks for them
# (`dtr.data.load.ABSENT_MEANS`), and the population's.
ABSENT_SETTINGS = {**{f'data.{k}': v for k, v in load_lib.ABSENT_MEANS.items()},
                   'data_seed': -1, 'population': 0, 'population_data': 'shared', 'population_replicas': 1}


def data_setting(config, name: str):
  """`config.data.<name>`, or what its absence means (`ABSENT_SETTINGS`)."""
  return config.data.get(name, ABSENT_SETTINGS[f'data.{name}'])


def settings_absent(method) -> dict:
  """{dotted setting: the value its absence means} for the checkpoint's settings check
  (`checkpoint.settings_changes`): a run saved before a field existed resumes under a config that gives the
  field that value (a flag), as it was trained."""
  return {**ABSENT_SETTINGS, **{f'model.{k}': v for k, v in method.absent_values().items()}}


def resume_settings(config) -> dict:
  """The settings a checkpoint must have been written under to be resumed (kept in its meta): the model,
  the data but for their location, and the fields that lay out the member stack and its batches. The
  epoch count, patience, evaluation and checkpoint cadence are not among them: resuming a run with more
  epochs (the benches' `--extend`) is allowed."""
  out = {'model': config.model.to_dict(),
         'data': {k: v for k, v in config.data.to_dict().items() if k not in _DATA_LOCATIONS}}
  out.update({k: config[k].to_dict() if hasattr(config[k], 'to_dict') else config[k]
              for k in _RESUME_FIELDS if k in config})
  return json.loads(json.dumps(out, default=str))


LOOP_MINIMUMS = {'steps_per_call': 1, 'eval_batch_size': 1, 'checkpoint_keep': 1, 'num_epochs': 0, 'patience': 0}


def check_loop(config) -> None:
  """The loop's own fields, before any data is read: steps per call, evaluation batch, checkpoints kept (at
  least 1 each), epochs and patience (0: evaluate the initial model; stop after the first epoch)."""
  for field, least in LOOP_MINIMUMS.items():
    value = config.get(field, least)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
      raise ValueError(f'config.{field} must be an integer >= {least}, got {value!r}.')


def check_length_buckets(config, cls) -> None:
  """`data.length_buckets` (chunks per length-sorting window, `ip.length_bucketed`; 0 or absent = off) and
  `data.pad_to_multiple_of` (the widths of those chunks, `ip.bucket_widths`; 0 or absent = the fine widths)."""
  window = data_setting(config, 'length_buckets')
  if isinstance(window, bool) or not isinstance(window, int) or window < 0:
    raise ValueError('data.length_buckets (chunks per window in which token sequences are sorted by length; '
                     f'0 = off) must be an integer >= 0, got {window!r}.')
  if window and cls.reads != 'tokens':
    raise ValueError(f'data.length_buckets groups token sequences by length, but method '
                     f'{config.model.name!r} reads {cls.reads!r} batches; leave it unset (0).')
  multiple = data_setting(config, 'pad_to_multiple_of')
  if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 0:
    raise ValueError('data.pad_to_multiple_of (length-bucketed chunks pad to their longest sequence + 1 rounded '
                     f'up to a multiple of it; 0 = the fine widths) must be an integer >= 0, got {multiple!r}.')
  if multiple and not window:
    raise ValueError(f'data.pad_to_multiple_of={multiple} sets the widths of length-bucketed chunks, but '
                     'data.length_buckets is off: set it too (e.g. buckets=8 in the config argument), or unset '
                     'pad_to_multiple_of.')


def check_inputs(method, data) -> None:
  """Clear errors when the corpus lacks what the method reads."""
  if method.reads == 'tokens' and getattr(data.splits['train'], 'tokens', None) is None:
    from dtr.data import corpus as corpus_lib  # pylint: disable=g-import-not-at-top
    corpus_lib.require_tokens(data, f'method {method.config.name!r}')
  if method.reads == 'bow' and 'counts' in method.batch_fields and data.splits['train'].counts is None:
    raise ValueError(f'method {method.config.name!r} reads term counts, but {data.name} has none (e.g. a .mat '
                     'hashing set); use the .npz hashing sets, 20news_clean, raw text or a csv.')
  if hasattr(method, 'check_data'):  # a method's own checks of the corpus (e.g. integer counts)
    method.check_data(data)


# ------------------------------------------------------------------------------------------------ the run
class Run:
  """One call of `train_and_evaluate`: the loop's state between its stages."""

  def __init__(self, config, workdir, data, method, stack, search, evaluators, select, mesh):
    self.config, self.workdir, self.data, self.method = config, workdir, data, method
    self.members, self.search, self.evaluators, self.mesh = stack, search, evaluators, mesh
    self.select_name, self.select_mode = select
    self.size = len(stack)
    self.shared = members_lib.shares_data(stack)
    self.is_main = jax.process_index() == 0
    self.meta = {'epoch': 0, 'step_in_epoch': 0, 'epoch_sums': {}, 'epoch_count': [0] * self.size,
                 'best_score': [None] * self.size, 'best_metrics': [None] * self.size,
                 'best_epoch': [-1] * self.size, 'bad_epochs': [0] * self.size, 'done': [False] * self.size,
                 'stopped': [None] * self.size, 'history': [], 'settings': resume_settings(config)}
    self.best_params = None

  # --- helpers
  def _score(self, value: float) -> float:
    """The selection metric as 'higher is better'."""
    return float(value) if self.select_mode == 'max' else -float(value)

  def valid_history(self, member: int) -> list[float]:
    """The selection metric of `member` at each epoch it was validated (none after it stopped)."""
    none = [None] * self.size
    return [h['valid'][self.select_name][member] for h in self.meta['history']
            if h['valid'].get(self.select_name, none)[member] is not None]

  def _valid_splits(self):
    """The splits each epoch's validation reads (a search may rank on a subset of valid)."""
    splits = dict(self.data.splits)
    if self.search is not None:
      splits['valid'] = self.search.ranking_split(splits['valid'])
    return splits

  def _evaluate(self, params_A, splits, split_name: str) -> dict:
    out = evaluators_lib.Outputs(self.method, params_A, splits, self.mesh, self.config.eval_batch_size,
                                 seed=int(self.config.seed))
    result = evaluators_lib.evaluate(self.evaluators, out, split_name)
    if self.select_name not in result:
      raise ValueError(f'config.select names valid/{self.select_name}, which no evaluator of config.evals '
                       f'({", ".join(config_names(self.config.evals))}) reports; it reports {sorted(result)}.')
    return result, out

  # --- fitted baselines
  def fit(self) -> None:
    """Closed-form baselines: fit every member on the training split, validate once."""
    t0 = time.time()
    fitted = [self.method.fit(self.data.splits['train'], m.seed) for m in self.members]
    params = jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *fitted)
    self.best_params = jax.device_put(params, ip.replicated(self.mesh))
    result, _ = self._evaluate(self.best_params, self._valid_splits(), 'valid')
    for a in range(self.size):
      metrics = {k: float(v[a]) for k, v in result.items()}
      self.meta['best_metrics'][a] = metrics
      self.meta['best_score'][a] = self._score(metrics[self.select_name])
    logging.info('Fitted %s in %.1fs: valid %s %s', self.config.model.name, time.time() - t0, self.select_name,
                 _shown(self.select_name, self.meta['best_metrics'][0][self.select_name]))

  # --- training
  def _order(self, member, epoch: int, split) -> tuple[np.ndarray, tuple[int, ...]]:
    """(the member's order of the epoch's training rows, token widths); grouped by length with
    data.length_buckets (`ip.epoch_rows`)."""
    order = ip.member_order(member.rows, member.order_seed, epoch, ip.num_examples(split))
    return ip.epoch_rows(order, split, window=data_setting(self.config, 'length_buckets'),
                         batch_size=self.config.batch_size, steps_per_call=self.config.steps_per_call,
                         seed=member.order_seed, epoch=epoch,
                         multiple=data_setting(self.config, 'pad_to_multiple_of'))

  def _sample_batch(self) -> dict:
    """The first training batch of member 0 (what `init` traces), in the layout its stack trains on."""
    m = self.members[0]
    split = self.data.splits['train']
    order = ip.member_order(m.rows, m.order_seed, 0, ip.num_examples(split))
    _, _, host = next(ip.train_chunks(self.method.reads, split, [order], per_member=False,
                                      batch_size=self.config.batch_size, start_step=0, steps_per_call=1,
                                      sharded=self.size == 1, fields=self.method.batch_fields))
    host.pop('valid')
    return jax.tree.map(lambda v: v[0], host)

  def train(self) -> None:
    config, meta, size = self.config, self.meta, self.size
    split = self.data.splits['train']
    num_docs = ip.num_examples(split)
    states = members_lib.place_state(members_lib.init_states(self.method, self.members, self._sample_batch()),
                                     self.mesh)
    best_params = members_lib.copy(states['method']['params'])

    # --- checkpoint
    ckpt_dir = os.path.join(self.workdir, 'checkpoints')
    mngr = checkpoint.manager(ckpt_dir, max_to_keep=config.checkpoint_keep)
    abstract = checkpoint.abstract_like({'train': states, 'best_params': best_params})
    added = _hparams_not_in_checkpoint(mngr, states)
    if added:  # a checkpoint of a population from before these were population hyperparameters
      abstract['train']['method']['hparams'] = {k: v for k, v in abstract['train']['method']['hparams'].items()
                                                if k not in added}
    restored = checkpoint.restore_latest(mngr, abstract, settings=meta['settings'],
                                          absent=settings_absent(self.method))
    if restored is not None:
      ckpt, saved_meta, ckpt_step = restored
      if added:  # its members trained with the config's values, which the members here start from too
        ckpt['train']['method']['hparams'].update({k: states['method']['hparams'][k] for k in added})
        logging.warning('The checkpoint was written before %s were population hyperparameters of %s: '
                        'resumed with the config\'s values for them, as it was trained.', added, config.model.name)
      states, best_params = ckpt['train'], ckpt['best_params']
      meta.update(saved_meta)
      logging.info('Resuming at step %d (epoch %d, step %d of the epoch)', ckpt_step, meta['epoch'],
                   meta['step_in_epoch'])
    last_saved = restored[2] if restored else None

    def save(tree):
      nonlocal last_saved
      step = int(np.max(np.asarray(jax.device_get(tree['train']['step']))))
      checkpoint.save(mngr, step, tree, meta)
      last_saved = step

    writer = None
    if self.is_main and config.get('tensorboard', False):
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      writer = SummaryWriter(os.path.join(self.workdir, 'tensorboard'))

    steps_per_epoch = ip.steps_per_epoch(len(self.members[0].rows) if self.members[0].rows is not None
                                         else num_docs, config.batch_size)
    valid_splits = self._valid_splits()
    while not all(meta['done']) and meta['epoch'] < config.num_epochs:
      epoch, t0 = meta['epoch'], time.time()
      active = [i for i in range(size) if not meta['done'][i]]
      rows = members_lib.bucket_rows(active, size, jax.device_count()) if size > 1 else np.arange(1)
      whole = members_lib.is_identity(rows, size)
      sub = states if whole else members_lib.place_state(members_lib.take(states, rows), self.mesh)
      stack = [self.members[i] for i in rows]
      ordered = [self._order(m, epoch, split) for m in stack[:1 if self.shared else None]]
      orders, widths = [o for o, _ in ordered], ordered[0][1]
      train_chunk = members_lib.train_chunk_fn(self.method, self.mesh, len(rows), self.shared)
      bar = _progress(steps_per_epoch, meta['step_in_epoch'], f'epoch {epoch}',
                      enabled=self.is_main and config.get('progress_bar', False))
      chunks = ip.train_chunks(self.method.reads, split, orders, per_member=not self.shared,
                               batch_size=config.batch_size, start_step=meta['step_in_epoch'],
                               steps_per_call=config.steps_per_call, sharded=len(rows) == 1,
                               fields=self.method.batch_fields, widths=widths)
      for step_lo, k, host in ip.prefetch(chunks):
        sub, metrics = train_chunk(sub, members_lib.place_batch(host, self.mesh, len(rows), self.shared))
        metrics = jax.tree.map(lambda v: np.asarray(v)[:, :k], jax.device_get(metrics))
        self._check_finite(metrics, rows, active, step_lo, last_saved, ckpt_dir)
        self._accumulate(metrics, rows, active, k)
        meta['step_in_epoch'] = step_lo + k
        bar.update(k)
        step = int(np.max(np.asarray(jax.device_get(sub['step']))))
        # The epoch's end saves anyway (after validation): a step checkpoint there would be the same step.
        if meta['step_in_epoch'] < steps_per_epoch and step - (last_saved or 0) >= config.checkpoint_every_steps:
          full = sub if whole else members_lib.put(states, rows, sub, len(active))
          save({'train': full, 'best_params': best_params})
      bar.close()
      states = sub if whole else members_lib.put(states, rows, sub, len(active))
      train_time = time.time() - t0

      # --- validation, early stopping, best model
      active = [i for i in active if not meta['done'][i]]  # non-finite members stopped during the epoch
      params = states['method']['params']
      result = {}
      if active:
        # Buckets again, so that validation compiles for few stack sizes; only the active rows are kept.
        eval_rows = members_lib.bucket_rows(active, size) if size > 1 else np.arange(1)
        result, _ = self._evaluate(params if members_lib.is_identity(eval_rows, size)
                                   else members_lib.take(params, eval_rows), valid_splits, 'valid')
        result = {k: {int(i): float(x) for i, x in zip(eval_rows[:len(active)], np.asarray(v)[:len(active)])}
                  for k, v in result.items()}
      improved = [False] * size
      for i in active:
        metrics = {k: v[i] for k, v in result.items()}
        score = self._score(metrics[self.select_name])
        if meta['best_score'][i] is None or score > meta['best_score'][i]:
          improved[i] = True
          meta['best_score'][i], meta['best_metrics'][i], meta['best_epoch'][i] = score, metrics, epoch
          meta['bad_epochs'][i] = 0
        else:
          meta['bad_epochs'][i] += 1
        if meta['bad_epochs'][i] >= config.patience:
          meta['done'][i], meta['stopped'][i] = True, f'early stop at epoch {epoch}'
      if any(improved):
        best_params = members_lib.where_members(np.asarray(improved), params, best_params)
      pruned = self.search.after_epoch(meta, epoch + 1) if self.search is not None else 0
      scalars = self._epoch_scalars(result, active, train_time, k_docs=steps_per_epoch * config.batch_size)
      meta['history'].append({'epoch': epoch, 'train': {k: v for k, v in scalars.items() if k.startswith('train/')},
                              'valid': {name: [values.get(i) for i in range(size)] for name, values in result.items()}})
      meta.update(epoch=epoch + 1, step_in_epoch=0, epoch_sums={}, epoch_count=[0] * size)
      _write_scalars(writer, int(np.max(np.asarray(jax.device_get(states['step'])))), scalars)
      if self.is_main:
        self._print_epoch(epoch, scalars, result, improved, pruned, time.time() - t0, train_time)
      save({'train': states, 'best_params': best_params})
    self.best_params = best_params

  def _check_finite(self, metrics, rows, active, step_lo, last_saved, ckpt_dir) -> None:
    """A single run stops at a non-finite loss naming the step; a member of a stack is stopped with a warning."""
    finite = np.isfinite(metrics['loss'])
    if finite.all():
      return
    if self.size == 1:
      bad = step_lo + int(np.argmin(finite[0]))
      where = f'step {last_saved} in {ckpt_dir}' if last_saved is not None else 'none saved yet'
      raise FloatingPointError(
          f'Non-finite loss at step {bad} (epoch {self.meta["epoch"]}). Last good checkpoint: {where}. Lower the '
          'learning rate or set a gradient clip (config.model.clip); the run resumes from that checkpoint.')
    for j, i in enumerate(rows[:len(active)]):
      i = int(i)
      if not finite[j].all() and not self.meta['done'][i]:
        logging.warning('Member %d has a non-finite loss at step %d of epoch %d; it stops there.', i,
                        step_lo + int(np.argmin(finite[j])), self.meta['epoch'])
        self.meta['done'][i], self.meta['stopped'][i] = True, f'non-finite loss in epoch {self.meta["epoch"]}'

  def _accumulate(self, metrics, rows, active, k) -> None:
    """Running sums of the train metrics per member, kept in meta so a resumed epoch reports the same mean."""
    sums = self.meta['epoch_sums']
    for j, i in enumerate(rows[:len(active)]):
      i = int(i)
      for key, v in metrics.items():
        sums.setdefault(key, [0.0] * self.size)[i] += float(np.sum(np.asarray(v[j], np.float64)))
      self.meta['epoch_count'][i] += k

  def _epoch_scalars(self, result, active, train_time, k_docs) -> dict:
    count = self.meta['epoch_count']
    scalars = {}
    for key, sums in self.meta['epoch_sums'].items():
      values = [sums[i] / count[i] for i in active if count[i]] or [float('nan')]
      scalars[f'train/{key}'] = float(np.mean(values))
    scalars['train/docs_per_sec'] = k_docs * max(len(active), 1) / max(train_time, 1e-9)
    for name, values in result.items():
      if values:
        scalars[f'valid/{name}'] = float(np.mean(list(values.values())))
    return scalars

  def _print_epoch(self, epoch, scalars, result, improved, pruned, seconds, train_time) -> None:
    name = self.select_name
    values = result.get(name, {})
    if self.size == 1:
      value = values.get(0, float('nan'))
      print(f'epoch {epoch:3d} | loss {scalars.get("train/loss", float("nan")):+.4f} | valid {_label(name)} '
            f'{_shown(name, value)}{" *" if improved[0] else "  "} | {scalars["train/docs_per_sec"]:,.0f} docs/s '
            f'| {seconds:.1f}s', flush=True)
      return
    shown = [_scale(name, v) for v in values.values()]
    best = max(shown) if self.select_mode == 'max' else min(shown) if shown else float('nan')
    spread = (f'mean {np.mean(shown):.2f} ± {np.std(shown, ddof=1) if len(shown) > 1 else 0.0:.2f}'
              if self.search is None else f'median {float(np.median(shown)):.2f}') if shown else ''
    stopped = sum(self.meta['done'])
    print(f'epoch {epoch:3d} | loss {scalars.get("train/loss", float("nan")):+.4f} | valid {_label(name)} best '
          f'member {best:.2f} {spread} ({len(shown)} trained) | {stopped}/{self.size} stopped'
          f'{f" ({pruned} pruned)" if pruned else ""} | {train_time:.1f}s train, {seconds - train_time:.1f}s valid',
          flush=True)

  # --- finish
  def finish(self, seconds: float) -> dict:
    """Evaluates the reported members' best parameters on valid and test; writes codes and run files."""
    config, meta = self.config, self.meta
    full = dict(self.data.splits)
    if self.search is not None:
      reported, extra = self.search.finish(self, full, seconds)
    else:
      reported, extra = list(range(self.size)), {}
    params = members_lib.take(self.best_params, reported) if len(reported) < self.size else self.best_params
    out = evaluators_lib.Outputs(self.method, params, full, self.mesh, config.eval_batch_size, seed=int(config.seed))
    results_by_split = {}
    for split_name in ('valid', 'test'):
      if split_name == 'valid' and self.search is None and all(m is not None for m in meta['best_metrics']):
        values = {k: np.asarray([meta['best_metrics'][i][k] for i in reported]) for k in meta['best_metrics'][0]}
      else:
        values = evaluators_lib.evaluate(self.evaluators, out, split_name)
      results_by_split[split_name] = values
    results = workdir_lib.run_summary(config, self.data, self.method, reported, self.members, meta)
    for split_name, values in results_by_split.items():
      for name, v in values.items():
        v = np.asarray(v, np.float64)
        results[f'{split_name}/{name}'] = float(v.mean())
        if len(v) > 1:
          results[f'{split_name}/{name}_std'] = float(np.std(v, ddof=1))
    if len(reported) > 1 and self.search is None:
      results['members'] = [{**self.members[i].describe(), 'best_epoch': meta['best_epoch'][i],
                             'valid_history': self.valid_history(i),
                             **{f'{s}/{n}': float(np.asarray(v)[j]) for s, vals in results_by_split.items()
                                for n, v in vals.items()}} for j, i in enumerate(reported)]
    results.update(extra)
    results['wall_time_s'] = round(seconds, 1)


    codes = {}
    if self.method.emits is not None:
      if self.method.reads == 'pairs':
        codes = {name: (out.side_codes(name, 'x')[0], out.side_codes(name, 'y')[0]) for name in full}
        results['distinct_test_codes'] = {side: int(len(np.unique(c, axis=0))) for side, c in zip('xy', codes['test'])}
      else:
        codes = {name: out.codes(name)[0] for name in full}
        results['distinct_train_codes'] = int(len(np.unique(codes['train'].reshape(len(codes['train']), -1), axis=0)))
    first = jax.tree.map(lambda x: x[0], params)
    checkpoint.save_params(os.path.join(self.workdir, 'best_params'), first)  # every process: orbax is collective
    timings = getattr(self, 'timings', None)
    if timings:  # where the run's time went: before the loop (imports), data, compilation, training, finish
      timings['finish_s'] = time.time() - timings.pop('t_start') - timings['data_s'] - timings['train_s']
      timings['compile_s'] = runtime.compile_seconds() - timings.pop('compile_before_s')
      results['timings'] = {k: round(v, 3) for k, v in timings.items()}
    if self.is_main:
      workdir_lib.write_outputs(self.workdir, config, self.data, self.method, codes, results)
      print(workdir_lib.final_line(results, self.data, self.method, config), flush=True)
    return results


def _hparams_not_in_checkpoint(mngr, states) -> list[str]:
  """The population hyperparameters of `states` that the latest checkpoint's members lack (a checkpoint from
  before they were population hyperparameters); [] without a checkpoint, without any, or when its metadata
  cannot be read (the restore then names any mismatch)."""
  hparams = states['method'].get('hparams')
  if not hparams:
    return []
  saved = checkpoint.saved_keys(mngr, ('train', 'method', 'hparams'))
  if not saved:
    return []
  return sorted(set(hparams) - saved)


def config_names(evals) -> list[str]:
  return [n.strip() for n in (evals.split(',') if isinstance(evals, str) else evals) if n.strip()]


def _scale(name: str, value) -> float:
  """A metric as printed: fractions (precision, matching) in percent."""
  if value is None:
    return float('nan')
  return 100.0 * float(value) if name.startswith(('precision@', 'matching@')) else float(value)


def _shown(name: str, value) -> str:
  return f'{_scale(name, value):.2f}'


def _label(name: str) -> str:
  return {'precision': 'P', 'matching': 'matching acc'}.get(name.split('@')[0], name) + (
      f'@{name.split("@")[1]}' if '@' in name else '')


def _write_scalars(writer, step, scalars):
  if writer is not None:
    for k, v in scalars.items():
      writer.add_scalar(k, v, step)
    writer.flush()


class _NoBar:
  def update(self, n):
    pass

  def close(self):
    pass


def _progress(total, initial, desc, enabled):
  if not enabled:
    return _NoBar()
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=initial, desc=desc, leave=False, file=sys.stderr, unit='step')


# ------------------------------------------------------------------------------------------------ encoding
def encode_split(method, params, split, mesh, batch_size: int = 1024) -> np.ndarray:
  """Codes [N, ...] of every example of `split` with one member's parameters (data-parallel over the mesh)."""
  return evaluators_lib.Outputs.of_params(method, params, {'split': split}, mesh, batch_size).codes('split')[0]
