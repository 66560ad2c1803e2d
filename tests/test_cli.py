"""The command lines as a user meets them: help, short errors with exit status 2, search output, own corpora."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from dtr import config_utils

REPO = pathlib.Path(__file__).resolve().parents[1]


def _run(*args, env=None, cwd=None):
  env = dict(os.environ, JAX_NUM_CPU_DEVICES='1', **(env or {}))
  return subprocess.run([sys.executable, *args], cwd=cwd or REPO, env=env, capture_output=True, text=True,
                        timeout=600)


def test_help_exits_0_and_lists_every_config_with_its_arguments(tmp_path):
  out = _run('-m', 'dtr.main', '--help', cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  for name in ('ammi', 'hashing', 'predictive', 'classify', 'bow_vae', 'sentence_ae', 'discrete_vae'):
    assert f'configs/{name}.py' in out.stdout
  assert 'Arguments' in out.stdout and '--show_config' in out.stdout


def test_show_config_prints_the_fields():
  out = _run('-m', 'dtr.main', '--config=configs/ammi.py:tiny', '--show_config')
  assert out.returncode == 0 and 'entropy_weight' in out.stdout and 'population_search' in out.stdout


def test_a_command_line_may_name_any_population_search_field():
  """population_search maps hyperparameters to what members draw: a name the config does not declare is
  added (the sentence configs declare none), beside overrides of declared fields."""
  out = _run('-m', 'dtr.main', '--config=configs/sentence_ae.py:tiny,population=4', '--show_config',
             '--config.population_search.learning_rate=log_uniform(1e-4,1e-2)', '--config.num_epochs=3')
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'learning_rate: log_uniform(1e-4,1e-2)' in out.stdout and 'num_epochs: 3' in out.stdout


@pytest.mark.parametrize('args,expected', [
    (['--config=configs/ammi.py:tiny', '--config.model.entropy_wieght=3'],
     ["config.model has no field 'entropy_wieght'", 'Did you mean config.model.entropy_weight?', 'bmmi']),
    (['--config=configs/ammi.py:tiny,fast=1'], ["Unknown config argument 'fast'", 'known:']),
    (['--config=configs/sentence_ae.py:tiny', '--config.data.length_buckets=8'],
     ["config.data has no field 'length_buckets'", '--config=configs/sentence_ae.py:tiny,buckets=W']),
    (['--config=configs/sentence_ae.py:tiny', '--config.data.pad_to_multiple_of=8'],
     ["config.data has no field 'pad_to_multiple_of'", '--config=configs/sentence_ae.py:tiny,pad_to_multiple_of=M']),
    (['--config=configs/classify.py:features=/nonexistent,labels=200', '--config.data.feature_standardize=True'],
     ["config.data has no field 'feature_standardize'",
      '--config=configs/classify.py:features=/nonexistent,labels=200,normalize=feature']),
    (['--config=configs/nope.py'], ['no config file configs/nope.py', 'configs/ammi.py']),
    (['--config=configs/sentence_ae.py:tiny,population=2', '--config.population_search.kl_wieght=uniform(0,1)'],
     ["population_search names ['kl_wieght']", "can vary ['dropout', 'learning_rate']"]),
    (['--config=configs/sentence_ae.py:tiny', '--config.population_search=uniform(0,1)'],
     ['--config.population_search.NAME=SPEC']),
])
def test_config_mistakes_give_one_message_and_exit_2(args, expected, tmp_path):
  out = _run('-m', 'dtr.main', *args, f'--workdir={tmp_path}')
  assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
  assert 'Traceback' not in out.stderr
  for text in expected:
    assert text in out.stderr, out.stderr


@pytest.mark.parametrize('name,arg', [('ammi', ''), ('hashing', 'method=lsh,'), ('bow_vae', ''),
                                      ('classify', 'method=cbow,'), ('sentence_ae', 'method=hsvae,'),
                                      ('discrete_vae', 'method=vq_vae,')])
def test_tiny_with_a_real_dataset_is_refused_naming_both(name, arg):
  """tiny trains on the synthetic corpus: a dataset given beside it would be ignored, so it is an error."""
  module = config_utils.load_config_module(name)
  assert module.get_config(f'{arg}tiny').data.name == 'synthetic'
  assert module.get_config(f'{arg}dataset=synthetic,tiny').data.name == 'synthetic'  # what tiny uses anyway
  with pytest.raises(ValueError, match=r'tiny trains on the built-in synthetic corpus, so dataset=csv would be '
                                       r'ignored: drop tiny to train on csv'):
    module.get_config(f'{arg}dataset=csv,tiny')


def test_a_label_budget_that_is_no_number_is_refused():
  module = config_utils.load_config_module('classify')
  assert module.get_config('labels=500').data.labels == '500' and module.get_config('labels=all').data.labels == 'all'
  for bad in ('abc', '-5', '2.5'):
    with pytest.raises(ValueError, match=f"labels='{bad}': give a number of labelled documents"):
      module.get_config(f'labels={bad}')


def test_blank_lines_of_a_text_file_are_kept_in_place_and_reported(tmp_path, caplog):
  from dtr import encode  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'docs.txt'
  path.write_text('first doc\n\nthird doc\n   \n')
  names, texts = encode.read_texts(str(path))
  assert names == ['line 1', 'line 2', 'line 3', 'line 4'] and texts[2] == 'third doc'  # code i is line i + 1's
  assert any('2 of 4 lines are empty (line 2, 4)' in r.getMessage() for r in caplog.records)
  with pytest.raises(FileNotFoundError, match='does not exist'):
    encode.read_texts(str(tmp_path / 'missing.txt'))


def test_a_data_error_is_one_line_and_verbose_shows_the_traceback(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  args = ['-m', 'dtr.main', '--config=configs/ammi.py:dataset=ng20,bits=16', f'--workdir={tmp_path / "w"}']
  out = _run(*args, env={'DTR_DATA_DIR': str(empty)})
  assert out.returncode == 2 and 'Traceback' not in out.stderr
  assert 'dtr: error:' in out.stderr and str(empty) in out.stderr and 'ng20_vdsh.npz' in out.stderr
  verbose = _run(*args, '--verbose', env={'DTR_DATA_DIR': str(empty)})
  assert verbose.returncode != 0 and 'Traceback' in verbose.stderr


def test_search_shows_ids_texts_and_query_labels_and_prints_json(tmp_path):
  workdir = tmp_path / 'w'
  train = _run('-m', 'dtr.main', '--config=configs/ammi.py:tiny', '--config.num_epochs=1', f'--workdir={workdir}',
               env={'DTR_DATA_DIR': ''})
  assert train.returncode == 0, train.stderr[-2000:]
  text = _run('-m', 'dtr.search', f'--workdir={workdir}', '--split=test', '--index=3', '--k=4')
  assert text.returncode == 0, text.stderr[-2000:]
  assert 'labels class' in text.stdout.splitlines()[0]  # the query's own labels
  assert ' doc ' in text.stdout and '"w0' in text.stdout  # hits show the document id and the start of its text
  out = _run('-m', 'dtr.search', f'--workdir={workdir}', '--split=test', '--index=3', '--k=4', '--json')
  (entry,) = json.loads(out.stdout)
  assert entry['query'] == 'test[3]' and entry['labels'] and len(entry['hits']) == 4
  assert all({'train_row', 'doc_id', 'hamming', 'labels', 'text'} <= set(h) for h in entry['hits'])
  assert [h['hamming'] for h in entry['hits']] == sorted(h['hamming'] for h in entry['hits'])
  # encode reads the recorded data location: no DTR_DATA_DIR needed, and the codes equal the saved ones
  codes = tmp_path / 'test_codes.npy'
  enc = _run('-m', 'dtr.encode', f'--workdir={workdir}', '--split=test', f'--output={codes}',
             env={'DTR_DATA_DIR': ''})
  assert enc.returncode == 0, enc.stderr[-2000:]
  import numpy as np
  np.testing.assert_array_equal(np.load(codes), np.load(workdir / 'codes' / 'test_codes.npy'))


def test_own_csv_corpus_gets_generic_settings_and_says_so(tmp_path):
  rows = []
  topics = {1: 'oil prices opec crude barrel energy', 2: 'football match goal league team season',
            3: 'stock market shares investors trading bank'}
  rng = __import__('numpy').random.default_rng(0)
  for i in range(300):
    label = 1 + i % 3
    words = topics[label].split()
    rows.append(f'{label},"{" ".join(rng.choice(words, 8))}","{" ".join(rng.choice(words, 6))}"')
  path = tmp_path / 'news.csv'
  path.write_text('\n'.join(rows) + '\n')
  out = _run('-m', 'dtr.main', f'--config=configs/ammi.py:dataset=csv,path={path},text=1+2,label=0,bits=16',
             '--config.data.csv_header=False', '--config.data.label_offset=1', '--config.data.min_df=1',
             '--config.batch_size=32', '--config.num_epochs=2', '--config.steps_per_call=8',
             '--config.evals=("precision@10",)', '--config.select=("valid/precision@10","max")',
             f'--workdir={tmp_path / "w"}', env={'DTR_DATA_DIR': ''})
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Settings: generic settings for a corpus of your own' in out.stdout
  assert 'Downloading and preparing' not in out.stdout + out.stderr  # tfds's banner: nothing is downloaded
  results = json.loads((tmp_path / 'w' / 'results.json').read_text())
  assert results['dataset'].startswith('csv:') and results['test/precision@10'] > 0.5
  # The workdir remembers the corpus by fingerprint: an edited file is refused, naming both fingerprints.
  path.write_text('\n'.join(rows[:-1] + ['1,"oil oil goal","goal oil"']) + '\n')
  enc = _run('-m', 'dtr.encode', f'--workdir={tmp_path / "w"}', '--split=test', f'--output={tmp_path / "c.npy"}',
             env={'DTR_DATA_DIR': ''})
  assert enc.returncode == 2 and 'is not the one' in enc.stderr and 'fingerprint' in enc.stderr, enc.stderr[-2000:]
  assert 'Traceback' not in enc.stderr
