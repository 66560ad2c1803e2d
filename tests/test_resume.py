"""Resuming after a kill, at checkpoint intervals of every kind: the same codes and the same loss history.

A run is interrupted (an exception out of the loop, as a kill leaves it: nothing saved after the last
checkpoint) after a random number of chunks, then run again in the same workdir. For each
`checkpoint_every_steps` of `INTERVALS`, the resumed run must end with the uninterrupted
run's codes and its per-epoch training losses (the running sums of an interrupted epoch are checkpointed with
the data position), and a rerun of a finished workdir must work too.

The loop writes a checkpoint after the first chunk at which at least `checkpoint_every_steps` steps have passed
since the last one, and at every epoch's end. The intervals tried, on a run of 2 epochs x 8 steps in chunks of 2
steps, cover its cases: a checkpoint after every chunk (1, 2), intervals that are not a multiple of the chunk
(3, 5, 7, 11, one of them longer than an epoch), an even one that does not divide the epoch (6), the epoch (8),
and none but the epoch ends (16).
"""

import json
import re

import numpy as np
import pytest

from dtr import checkpoint, config_utils, members, train

STEPS_PER_EPOCH = 8
INTERVALS = (1, 2, 3, 5, 6, 7, 8, 11, 16)


def _config(every: int):
  config = config_utils.load_config_module('ammi').get_config('tiny')
  config.data.synthetic.update(num_train=STEPS_PER_EPOCH * 16, num_valid=48, num_test=48)
  config.update(batch_size=16, num_epochs=2, patience=100, steps_per_call=2, checkpoint_every_steps=every)
  return config


class _Killed(Exception):
  pass


def train_killed_after(config, workdir: str, chunks: int, monkeypatch) -> None:
  """Trains `config` in `workdir` until it is killed after `chunks` chunks, as a kill leaves a run: nothing
  saved after its last checkpoint (the next chunk's batch placement raises)."""
  real_place, calls = members.place_batch, {'n': 0}

  def place(*args, **kwargs):
    if calls['n'] == chunks:
      raise _Killed()
    calls['n'] += 1
    return real_place(*args, **kwargs)

  monkeypatch.setattr(members, 'place_batch', place)
  with pytest.raises(_Killed):
    train.train_and_evaluate(config, workdir)
  monkeypatch.setattr(members, 'place_batch', real_place)


def _codes(workdir):
  return {s: np.load(workdir / 'codes' / f'{s}_codes.npy') for s in ('train', 'test')}


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('reference')
  results = train.train_and_evaluate(_config(10**6), str(workdir))
  return results, _codes(workdir)


def test_checkpoint_intervals_resume_to_the_same_run(reference, tmp_path, monkeypatch):
  ref_results, ref_codes = reference
  rng = np.random.default_rng(0)
  chunks = 2 * STEPS_PER_EPOCH // 2
  for every in INTERVALS:
    workdir = tmp_path / f'every{every}'
    kill_after = int(rng.integers(1, chunks))  # chunks completed before the kill
    train_killed_after(_config(every), str(workdir), kill_after, monkeypatch)
    resumed = train.train_and_evaluate(_config(every), str(workdir))
    for split, codes in _codes(workdir).items():
      np.testing.assert_array_equal(codes, ref_codes[split], err_msg=f'every={every}, killed after {kill_after}')
    assert resumed['train_loss_history'] == ref_results['train_loss_history'], (every, kill_after)
    assert resumed['valid_history'] == ref_results['valid_history']
  # A finished workdir runs again (it resumes at its last checkpoint and finishes once more).
  again = train.train_and_evaluate(_config(2 * STEPS_PER_EPOCH), str(workdir))
  assert again['test/precision@10'] == ref_results['test/precision@10']
  assert json.loads((workdir / 'results.json').read_text())['epochs_run'] == 2


def test_resuming_under_other_settings_is_refused_naming_them(tmp_path):
  workdir = str(tmp_path / 'run')
  config = _config(10**6)
  config.num_epochs = 1
  first = train.train_and_evaluate(config, workdir)
  longer = _config(10**6)  # more epochs (the benches' --extend) and a moved data folder resume
  longer.data.data_dir = str(tmp_path / 'elsewhere')
  assert train.train_and_evaluate(longer, workdir)['epochs_run'] == 2 > first['epochs_run']
  for field, value in (('model.learning_rate', 0.01), ('model.encoder_hidden', (8,)), ('batch_size', 8),
                       ('data.split_seed', 3)):
    changed = _config(10**6)
    section, _, name = field.rpartition('.')
    (changed[section] if section else changed)[name] = value
    before = json.loads((tmp_path / 'run' / 'results.json').read_text())
    with pytest.raises(checkpoint.CheckpointError, match=rf'{re.escape(field)}: .* -> .*new --workdir'):
      train.train_and_evaluate(changed, workdir)
    assert json.loads((tmp_path / 'run' / 'results.json').read_text()) == before  # nothing was overwritten


def test_settings_changes_compares_as_json_and_names_absent_fields():
  saved = {'model': {'hidden': [8, 8], 'rate': 0.1, 'old': 1}, 'seed': 0}
  assert checkpoint.settings_changes(saved, {'model': {'hidden': (8, 8), 'rate': 0.1, 'old': 1}, 'seed': 0}) == []
  assert checkpoint.settings_changes(saved, {'model': {'hidden': [8], 'rate': 0.1, 'new': 'x'}, 'seed': 0}) == [
      'model.hidden: [8, 8] -> [8]', "model.new: (absent) -> 'x'", 'model.old: 1 -> (absent)']


def test_settings_changes_give_an_absent_setting_what_its_absence_means():
  saved = {'model': {'rate': 0.1}, 'seed': 0}
  absent = {'model.init': 'zero', 'data.buckets': 0}
  assert checkpoint.settings_changes(saved, {'model': {'rate': 0.1, 'init': 'zero'}, 'seed': 0}, absent) == []
  assert checkpoint.settings_changes(saved, {'model': {'rate': 0.1, 'init': 'prior'}, 'seed': 0}, absent) == [
      "model.init: 'zero' (absent) -> 'prior'"]
  assert checkpoint.settings_changes({'model': {'rate': 0.1, 'init': 'prior'}}, {'model': {'rate': 0.1}},
                                     absent) == ["model.init: 'prior' -> 'zero' (absent)"]
  # a setting without an entry: its absence differs from every value
  assert checkpoint.settings_changes(saved, {'model': {'rate': 0.1, 'other': 0}, 'seed': 0}, absent) == [
      'model.other: (absent) -> 0']


def test_a_run_saved_before_a_model_field_resumes_when_the_field_is_given_its_old_meaning(tmp_path, monkeypatch):
  """A run whose config lacks a model field added since (VQ's restart_threshold, whose absence means no
  restarts; 0.1 in today's configs) is refused under today's config, naming the value its absence means, and
  resumes under a config that gives that value (a flag), ending as its uninterrupted run."""
  def config(**model):
    c = config_utils.load_config_module('discrete_vae').get_config('method=vq_vae,tiny')
    c.update(num_epochs=1, checkpoint_every_steps=1, steps_per_call=4)
    del c.model['restart_threshold']
    c.model.update(model)
    return c

  reference = train.train_and_evaluate(config(), str(tmp_path / 'reference'))
  workdir = str(tmp_path / 'killed')
  train_killed_after(config(), workdir, 1, monkeypatch)
  with pytest.raises(checkpoint.CheckpointError, match=re.escape('model.restart_threshold: 0.0 (absent) -> 0.1')):
    train.train_and_evaluate(config(restart_threshold=0.1), workdir)
  resumed = train.train_and_evaluate(config(restart_threshold=0.0), workdir)
  assert resumed['train_loss_history'] == reference['train_loss_history']
  assert resumed['valid_history'] == reference['valid_history']
  assert resumed['test/perplexity'] == reference['test/perplexity']
