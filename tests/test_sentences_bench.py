"""The sentence benchmark tables (`dtr.benches.sentences`) on one tiny cell each; cached cells are read back."""

import json

import numpy as np
import pytest

from dtr import config_utils, train
from dtr.benches import sentences


def _no_training(*args, **kwargs):
  raise AssertionError('a cached cell was trained again')


def test_lm_table_one_tiny_cell_is_cached(tmp_path, monkeypatch):
  lines = []
  text, cells = sentences.lm_table('yahoo_lm', ['binary_ae'], 1, str(tmp_path), tiny=True, log=lines.append)
  results = cells['binary_ae'][0]
  (workdir,) = list((tmp_path / 'lm' / 'tiny' / 'small').glob('binary_ae-*/seed0'))
  assert json.loads((workdir / 'results.json').read_text()) == results
  assert not (workdir / 'checkpoints').exists() and (workdir / 'best_params').exists()
  row = next(line for line in text.splitlines() if line.startswith('| binary AE |'))
  cells_shown = [c.strip() for c in row.strip('|').split('|')]
  assert cells_shown[1:4] == [f'{results[k]:.1f}' for k in ('test/perplexity', 'test/perplexity_mean',
                                                           'test/perplexity_greedy')]
  assert cells_shown[4] == f'{results["test/perplexity_per_sentence"]:.1f}' and cells_shown[-1] == '1'
  monkeypatch.setattr(train, 'train_and_evaluate', _no_training)
  again, cached = sentences.lm_table('yahoo_lm', ['binary_ae'], 1, str(tmp_path), tiny=True, log=lines.append)
  assert again == text and cached['binary_ae'][0] == results


def test_lm_command_pretrains_on_length_buckets_when_asked(tmp_path, capsys):
  sentences.main(['lm', '--tiny', '--rows=binary_ae', '--seeds=1', '--buckets=2', f'--cache_dir={tmp_path}'])
  (config_path,) = list((tmp_path / 'lm' / 'tiny' / 'small').glob('binary_ae-*/seed0/config.json'))
  assert json.loads(config_path.read_text())['data']['length_buckets'] == 2
  assert '| binary AE |' in capsys.readouterr().out


def test_cell_folders_follow_the_config_and_earlier_cells_are_kept_when_their_config_matches(tmp_path):
  config = sentences.sentence_config('binary_ae', 'yahoo_lm', 0, 'small', (), '', tiny=True)
  folder = sentences.cell_dir(str(tmp_path), 'binary_ae', config, 'seed0')
  assert folder.startswith(str(tmp_path / 'binary_ae-')) and folder.endswith('seed0')
  seed1 = sentences.sentence_config('binary_ae', 'yahoo_lm', 1, 'small', (), '', tiny=True)
  assert sentences.cell_dir(str(tmp_path), 'binary_ae', seed1, 'seed1') == folder[:-1] + '1'  # seeds share it
  longer = sentences.sentence_config('binary_ae', 'yahoo_lm', 0, 'small', ('num_epochs=7',), '', tiny=True)
  assert sentences.cell_dir(str(tmp_path), 'binary_ae', longer, 'seed0') != folder
  assert sentences.cell_dir('', 'binary_ae', config, 'seed0') is None
  bucketed = sentences.sentence_config('binary_ae', 'yahoo_lm', 0, 'small', (), '', tiny=True, buckets=4)
  assert bucketed.data.length_buckets == 4 and 'length_buckets' not in config.data  # absent unless asked
  assert sentences.cell_dir(str(tmp_path), 'binary_ae', bucketed, 'seed0') != folder
  hsvae = sentences.sentence_config('hsvae', 'dbpedia14', 0, 'small', (), 'latent=32', tiny=True)
  held = sentences.sentence_config('hsvae', 'dbpedia14', 0, 'small', (), 'latent=32', tiny=True,
                                   config_args='kl_target=10,z_kl=joint')
  assert (held.model.kl_target, held.model.z_kl, held.model.latent_size) == (10.0, 'joint', 32)
  assert 'kl_target' not in hsvae.model
  assert sentences.cell_dir(str(tmp_path), 'hsvae', held, 'seed0') != sentences.cell_dir(
      str(tmp_path), 'hsvae', hsvae, 'seed0')
  assert sentences.cell_dir(str(tmp_path), 'cbow', config) == folder.replace('binary_ae', 'cbow')[:-len('/seed0')]
  # A cell of an earlier version (no digest in its name) is used only when its run had this very config.
  legacy = tmp_path / 'binary_ae' / 'seed0'
  legacy.mkdir(parents=True)
  (legacy / 'config.json').write_text(longer.to_json_best_effort())
  assert sentences.cell_dir(str(tmp_path), 'binary_ae', config, 'seed0') == folder
  assert sentences.cell_dir(str(tmp_path), 'binary_ae', longer, 'seed0') == str(legacy)


def test_probe_config_standardises_only_when_asked():
  """--probe_normalize=feature sets data.feature_standardize; without it the field is absent, so the digests
  (folder names) of the probe cells trained before the option are unchanged."""
  plain = sentences.probe_config('/w', 3, False)
  assert 'feature_standardize' not in plain.data
  standardised = sentences.probe_config('/w', 3, False, normalize='feature')
  assert standardised.data.feature_standardize and standardised.model.normalize == 'none'
  assert sentences.probe_config('/w', 3, False, normalize='example').model.normalize == 'example'
  assert config_utils.settings_digest(plain) != config_utils.settings_digest(standardised)


def _sparse_table(cache_dir):
  """The tiny sparse table (an HSVAE cell with alpha=3, beta=1 at d=4, its probe and CBOW) in `cache_dir`."""
  return sentences.sparse_table('dbpedia14', [4], '3:1', [], 1, 2, cache_dir, tiny=True, log=lambda m: None)


# Training the table runs in a child process of its own, which keeps the suite's process small (XLA:CPU has
# crashed compiling in a test process that had already compiled the whole suite's programs); reading the
# cells back (no compilation) runs in the test process.
_SPARSE_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.test_sentences_bench import _sparse_table
text, cells = _sparse_table(sys.argv[2])
print('RESULT ' + json.dumps({'text': text, 'cell': cells[(4, 'hsvae_a3_b1')][0], 'cbow': cells['cbow']}))
"""


def _sparse_child(cache_dir):
  import os, pathlib, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  repo = str(pathlib.Path(__file__).resolve().parents[1])
  out = subprocess.run([sys.executable, '-c', _SPARSE_CHILD, repo, cache_dir], capture_output=True, text=True,
                       env=dict(os.environ), check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  (line,) = [l for l in out.stdout.splitlines() if l.startswith('RESULT ')]
  return json.loads(line[len('RESULT '):])


def test_sparse_table_one_tiny_cell_is_cached(tmp_path, monkeypatch):
  first = _sparse_child(str(tmp_path))
  text, cell = first['text'], first['cell']
  assert cell['pretrain']['test/hoyer_sample'] == pytest.approx(cell['hoyer']['hoyer_sample'])
  assert 0 <= cell['hoyer']['hoyer_mean_raw'] <= 1
  assert cell['probe']['members_reported'] == 2 and 0 <= cell['probe']['test/accuracy'] <= 100
  assert 'test/accuracy' in first['cbow']
  row = next(line for line in text.splitlines() if line.startswith('| HSVAE (alpha=3, beta=1) | 4 |'))
  assert f'{cell["probe"]["test/accuracy"]:.2f} ±' in row and f'{cell["hoyer"]["hoyer_sample_raw"]:.3f}' in row
  assert any(line.startswith('| CBOW') for line in text.splitlines())
  monkeypatch.setattr(train, 'train_and_evaluate', _no_training)  # every cell is read back, here
  again, _ = _sparse_table(str(tmp_path))
  assert again == text


def test_write_block_replaces_only_its_own_block(tmp_path):
  path = str(tmp_path / 'results.md')
  sentences.write_block(path, 'lm yahoo_lm', 'cmd 1', '| a |')
  with open(path, 'a') as f:
    f.write('\nProse the bench never touches.\n')
  sentences.write_block(path, 'sparse dbpedia14', 'cmd 2', '| b |')
  sentences.write_block(path, 'lm yahoo_lm', 'cmd 3', '| c |')
  text = open(path).read()
  assert '| a |' not in text and '| c |' in text and '| b |' in text and 'Prose the bench never touches.' in text
  assert text.index('| c |') < text.index('Prose') < text.index('| b |')


def test_fmt_and_mean_std():
  assert sentences.fmt([2.0, 4.0], 1) == '3.0 ± 1.4'
  assert sentences.fmt([5.0], 2, runs=3) == '5.00 (1 run)'
  assert sentences.fmt([], 1) == '-'
  assert sentences.fmt([2e5, 4e5], 1).startswith('3.0e+05 ±')
  mean, std, n = sentences.mean_std([1.0, None, 3.0])
  assert (mean, n) == (2.0, 2) and std == pytest.approx(np.sqrt(2.0))


def test_small_sizes_and_bad_arguments():
  config = sentences.sentence_config('binary_ae', 'yahoo_lm', 2, 'small')
  assert (config.data.max_len, config.data.token_vocab_size, config.model.hidden_size, config.seed) == (15, 3000,
                                                                                                        128, 2)
  assert sentences.sentence_config('binary_ae', 'yahoo_lm', 0, 'paper').model.hidden_size == 512
  with pytest.raises(ValueError, match='--size'):
    sentences.sentence_config('binary_ae', 'yahoo_lm', 0, 'huge')
  with pytest.raises(SystemExit):
    sentences.main(['lm', '--rows=ternary_ae', '--tiny'])


def test_speed_batches_and_the_dtr_side_on_tiny_sizes(tmp_path):
  """The speed command's batch file and its dtr measurement, on tiny sizes (no timing is checked)."""
  import argparse
  from dtr.benches import sentences_speed
  parser = argparse.ArgumentParser()
  sentences_speed.add_arguments(parser)
  args = parser.parse_args(['--tiny', '--steps=4', '--steps_per_call=2', '--decode_batch=4', '--decode_repeats=1'])
  path = str(tmp_path / 'batches.npz')
  sizes = sentences_speed.make_batches(args, path)
  chunks = sentences_speed._load_chunks(path)
  assert sizes['steps'] == 4 and len(chunks) == 2 and chunks[0][0].shape[:2] == (2, 64)
  args.batches = path
  result = sentences_speed.run_dtr(args, json.loads(json.dumps(sizes)))
  assert result['tokens_per_s'] > 0 and result['decode_sentences_per_s'] > 0
  assert result['peak_rss_mib'] > 0 and 1 <= result['decode_steps'] <= sizes['max_len'] + 1
  assert 'dtr' in sentences_speed.table({'dtr': result})


def test_speed_batches_with_length_buckets_pad_less(tmp_path):
  """--buckets=W: the same rows' chunks sorted by length pad less, to the finer widths; a part of a window is
  refused."""
  import argparse
  from dtr import input_pipeline as ip
  from dtr.benches import sentences_speed
  parser = argparse.ArgumentParser()
  sentences_speed.add_arguments(parser)
  common = ['--tiny', '--steps=8', '--steps_per_call=2', '--max_len=0']
  plain = sentences_speed.make_batches(parser.parse_args(common), str(tmp_path / 'a.npz'))
  bucketed = sentences_speed.make_batches(parser.parse_args(common + ['--buckets=4']), str(tmp_path / 'b.npz'))
  assert 1.0 < bucketed['padding'] <= plain['padding']
  assert set(plain['widths']) <= set(ip.TOKEN_WIDTHS)
  # the fine widths, or the cap of the longest sentence (`bucket_widths`: a multiple of 8 just above it)
  assert all(w in ip.FINE_TOKEN_WIDTHS or (w % 8 == 0 and w - 8 <= bucketed['max_len'] < w)
             for w in bucketed['widths'])
  rows = lambda path: sorted(np.concatenate([l.ravel() for _, l in sentences_speed._load_chunks(path)]).tolist())
  assert rows(str(tmp_path / 'a.npz')) == rows(str(tmp_path / 'b.npz'))  # one window: the same sentences
  with pytest.raises(SystemExit, match='whole windows'):
    sentences_speed.make_batches(parser.parse_args(common + ['--buckets=3']), str(tmp_path / 'c.npz'))
  # --pad_to_multiple_of=M: each chunk pads to the smallest multiple of M above its longest sentence
  multiple = sentences_speed.make_batches(parser.parse_args(common + ['--buckets=4', '--pad_to_multiple_of=8']),
                                          str(tmp_path / 'd.npz'))
  assert rows(str(tmp_path / 'd.npz')) == rows(str(tmp_path / 'b.npz'))  # the same order, other widths
  for (_, lengths), width in zip(sentences_speed._load_chunks(str(tmp_path / 'd.npz')), multiple['widths']):
    assert width % 8 == 0 and width - 8 <= lengths.max() < width
  assert 1.0 < multiple['padding'] <= bucketed['padding']
  with pytest.raises(SystemExit, match='give --buckets too'):
    sentences_speed.make_batches(parser.parse_args(common + ['--pad_to_multiple_of=8']), str(tmp_path / 'e.npz'))


def test_speed_bound_counts_the_step_products_and_times_them(tmp_path):
  """`step_products` has 3x the forward FLOPs of the network written out by hand (real tokens only); the bound
  child times every group and the table compares it with each framework's step."""
  import argparse
  from dtr.benches import sentences_speed
  parser = argparse.ArgumentParser()
  sentences_speed.add_arguments(parser)
  args = parser.parse_args(['--tiny', '--steps=4', '--steps_per_call=2'])
  path = str(tmp_path / 'batches.npz')
  sizes = sentences_speed.make_batches(args, path)
  chunks = sentences_speed._load_chunks(path)
  lengths = np.concatenate([l for _, l in chunks]).astype(float)  # [batches, B]
  enc, dec = lengths.sum(axis=1).mean(), (lengths + 1).sum(axis=1).mean()
  e, h, v = sizes['embed'], sizes['hidden'], sizes['vocab']
  forward = 2 * (2 * enc * e * 3 * h + dec * e * 3 * h       # input projections: 2 encoder directions, decoder
                 + (2 * enc + dec) * h * 3 * h              # one recurrent product per real token and direction
                 + dec * h * v)                             # the output layer on the predicted positions
  products = sentences_speed.step_products(sizes, chunks)
  counted = sum(2.0 * m * k * n * r for _, m, k, n, r in products)
  np.testing.assert_allclose(counted, 3 * forward, rtol=0.02)  # rows rounded to whole tokens
  assert {g for g, *_ in products} == {'input projections', 'recurrent products', 'output layer'}
  args.batches = path
  bound = sentences_speed.run_bound(args, sizes)
  assert set(bound['groups_ms']) == {'input projections', 'recurrent products', 'output layer'}
  assert all(ms > 0 for ms in bound['groups_ms'].values())
  np.testing.assert_allclose(bound['ms_per_step'], sum(bound['groups_ms'].values()))
  text = sentences_speed.bound_table(bound, {'dtr': {'ms_per_step': 2 * bound['ms_per_step']},
                                             'torch': {'ms_per_step': 3 * bound['ms_per_step']}})
  assert 'dtr: measured' in text and 'x2.00 the bound' in text and 'over PyTorch here: x3.00' in text


def test_speed_rounds_report_the_median_of_each_figure():
  from dtr.benches import sentences_speed
  rounds = [{'framework': 'dtr', 'tokens_per_s': t, 'ms_per_step': 1000.0 / t} for t in (10.0, 30.0, 20.0)]
  median = sentences_speed.median_result(rounds)
  assert median['framework'] == 'dtr' and median['tokens_per_s'] == 20.0 and median['ms_per_step'] == 50.0
