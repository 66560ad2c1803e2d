"""Bag-of-words VAE around the method: `BowVAE.check_data` on bad corpora, documents without words, the
Jacobian analyses of a finished workdir (`dtr.evaluate.analysis.bow`, `python -m dtr.analyze jacobian`) and
the study bench (`python -m dtr.bench bow table`: one tiny cell, then read back from its workdir; `speed`)."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from dtr import analyze, train
from dtr.benches import bow as bench
from dtr.benches import flops
from dtr.data import Split, flat_rows
from dtr.evaluate import jacobian
from dtr.evaluate.analysis import bow as analysis
from dtr.methods import bow_vae
from dtr.methods.base import DataInfo


# ------------------------------------------------------------------------------------------------ check_data
def _split(counts, tfidf=None):
  counts = sp.csr_matrix(counts)
  if tfidf is None:
    tfidf = counts.astype(np.float32)
    tfidf.data = np.log1p(np.abs(tfidf.data)) + 0.1  # a weight at every stored count
  return Split(tfidf=tfidf, labels=np.zeros((counts.shape[0], 0), bool), counts=counts)


def _corpus(valid_counts, vocab=('a', 'b', 'c'), tfidf=None, raw_valid=None):
  good = _split(np.array([[1, 0, 2], [0, 3, 1]]))
  valid = raw_valid if raw_valid is not None else _split(valid_counts, tfidf)
  return types.SimpleNamespace(name='toy', vocab=list(vocab),
                               splits={'train': good, 'valid': valid, 'test': good})


def _method(vocab=3):
  mc = bow_vae.default_model_config()
  mc.update(latent_dim=2, encoder_hidden=(4,), decoder_hidden=())
  return bow_vae.BowVAE(mc, vocab, DataInfo(vocab_size=vocab))


def test_check_data_accepts_integer_counts_and_names_the_split_of_bad_ones():
  method = _method()
  method.check_data(_corpus(np.array([[1, 1, 0]])))
  with pytest.raises(ValueError, match=r"toy split 'valid' counts holds 1 negative"):
    method.check_data(_corpus(np.array([[1, -2, 0]])))
  # Fractional counts: a corpus whose splits keep floats is refused as such ...
  floats = types.SimpleNamespace(counts=sp.csr_matrix(np.array([[0.5, 2.0, 0.0]], np.float32)),
                                 tfidf=sp.csr_matrix(np.array([[0.3, 0.9, 0.0]], np.float32)))
  with pytest.raises(ValueError, match=r"split 'valid' counts holds 1 non-integer"):
    method.check_data(_corpus(None, raw_valid=floats))
  # ... and a dtr Split (int32 counts) keeps a fraction below 1 as a zero count under a TF-IDF weight.
  weights = sp.csr_matrix(np.array([[0.3, 0.9, 0.0]], np.float32))
  truncated = _split(np.array([[0.5, 2.0, 0.0]]), tfidf=weights)
  assert truncated.counts.dtype == np.int32 and truncated.counts.nnz == 2 and truncated.counts.data[0] == 0
  with pytest.raises(ValueError, match="TF-IDF weight but a zero count"):
    method.check_data(_corpus(None, raw_valid=truncated))


def test_check_data_refuses_an_empty_vocabulary_a_pattern_mismatch_and_documents_without_words():
  method = _method()
  with pytest.raises(ValueError, match='vocabulary is empty'):
    method.check_data(_corpus(np.array([[1, 1, 0]]), vocab=()))
  other_pattern = sp.csr_matrix(np.array([[0.5, 0.0, 0.7]], np.float32))
  with pytest.raises(ValueError, match="'valid' counts and the TF-IDF matrix store different entries"):
    method.check_data(_corpus(np.array([[1, 1, 0]]), tfidf=other_pattern))
  # Explicit zeros in both matrices: the row survives the data layer's all-zero TF-IDF test but has N_d = 0.
  zeros = sp.csr_matrix((np.array([0, 0]), np.array([0, 2]), np.array([0, 2])), shape=(1, 3))
  zero_doc = Split(tfidf=zeros.astype(np.float32), labels=np.zeros((1, 0), bool), counts=zeros)
  with pytest.raises(ValueError, match=r"'valid' has 1 documents with no words \(N_d = 0\), first rows \[0\]"):
    method.check_data(_corpus(None, raw_valid=zero_doc))
  no_counts = Split(tfidf=other_pattern, labels=np.zeros((1, 0), bool))
  with pytest.raises(ValueError, match='no term counts'):
    method.check_data(_corpus(None, raw_valid=no_counts))


def test_the_loop_runs_check_data(tmp_path, monkeypatch):
  from dtr.configs import bow_vae as bow_config  # pylint: disable=g-import-not-at-top
  config = bow_config.get_config('tiny')
  corpus = train.load_data(config)
  bad = corpus.splits['test']
  counts = bad.counts.copy()
  counts.data[0] = -1
  splits = {**corpus.splits, 'test': Split(tfidf=bad.tfidf, labels=bad.labels, counts=counts)}
  with pytest.raises(ValueError, match=r"split 'test' counts holds 1 negative"):
    train.train_and_evaluate(config, str(tmp_path), corpus=corpus.replace(splits=splits))


def test_a_document_without_words_in_a_batch_divides_by_nothing():
  """A padding slot (or any N_d = 0 row) reads zeros and gets finite scores: x / max(N_d, 1)."""
  counts = sp.csr_matrix(np.array([[2, 0, 1], [0, 0, 0], [1, 1, 1]], np.float32))
  ids, vals, seg = flat_rows(counts, np.arange(3)[None])
  _, cnt, _ = flat_rows(counts, np.arange(3)[None])
  batch = {'ids': ids, 'vals': vals, 'seg': seg, 'counts': cnt, 'mask': np.ones((1, 3), np.float32)}
  for input_kind in ('counts', 'raw_counts'):  # x / max(N_d, 1), and x itself
    method = _method()
    method.config.input = input_kind
    params = method.init(jax.random.key(0), batch)['params']
    scores = jax.jit(method.score)(params, batch, jax.random.key(1))
    for key, value in scores.items():
      assert np.all(np.isfinite(value)), (input_kind, key)
    np.testing.assert_array_equal(scores['tokens'], [3, 0, 3])


# ------------------------------------------------------------------------------------------------ a tiny cell
def _table_args(cache_dir, out):
  return ['table', '--tiny', '--dataset=synthetic', '--seeds=1', '--depths=2', '--inputs=tfidf',
          '--regimes=none', '--no-nvdm', '--eval_svi_steps=3', '--eval_is_samples=2', '--spectra_samples=20',
          '--set=num_epochs=2', f'--cache_dir={cache_dir}', f'--out={out}']


@pytest.fixture(scope='module')
def cell(tmp_path_factory):
  """One tiny cell of the bench table (2-layer decoder, 2 epochs), its workdir, and the markdown it wrote."""
  root = tmp_path_factory.mktemp('bow_bench')
  out = root / 'bow.md'
  out.write_text('# Notes kept\n\nhand-written text above the table\n')
  bench.main(_table_args(root / 'cells', out))
  (path,) = list((root / 'cells').glob('*/seed0/bow_eval_*.json'))
  return root, path.parent, out


def test_bench_table_writes_a_row_and_reads_a_finished_cell_back(cell, monkeypatch, capsys):
  root, workdir, out = cell
  settings = {'eval_svi_steps': 3, 'eval_svi_lr': 8e-3, 'eval_is_samples': 2}
  assert bench.eval_file(settings) == 'bow_eval_k3_lr0.008_is2.json'
  record = json.loads((workdir / bench.eval_file(settings)).read_text())
  for key in ('test/perp_0', 'test/perp_f', 'test/perp_is', 'test/perplexity', 'valid/perp_0'):
    assert 1 < record[key] < 1e4, key
  assert record['final_settings'] == settings
  # Training validated perp_0 only; the final evaluation refined (a different nll_refined than nll).
  trained = json.loads((workdir / 'config.json').read_text())['model']
  assert (trained['eval_svi_steps'], trained['eval_is_samples']) == (0, 1)
  assert record['test/nll_refined'] != record['test/nll']
  text = out.read_text()
  assert text.startswith('# Notes kept\n\nhand-written text above the table\n')
  assert text.count(bench.BEGIN) == 1 and '| 2-layer | tfidf | none |' in text
  assert (root / 'bow_spectra.png').stat().st_size > 1000
  first = text
  # Read back: nothing is trained or evaluated again, and the table is the same.
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a, **k: pytest.fail('a finished cell retrained'))
  monkeypatch.setattr(analysis, 'refined_perplexities', lambda *a, **k: pytest.fail('re-evaluated'))
  bench.main(_table_args(root / 'cells', out))
  assert out.read_text() == first
  assert '| 2-layer | tfidf | none |' in capsys.readouterr().out
  # The cells' records alone, moved to another folder (as cells run elsewhere come back): with
  # --spectra_out=- the table needs no workdir, so none is loaded and no plot is written.
  moved = root / 'records_only'
  for path in (root / 'cells').glob('*/seed*/bow_eval_*.json'):
    target = moved / path.relative_to(root / 'cells')
    target.parent.mkdir(parents=True)
    target.write_bytes(path.read_bytes())
  monkeypatch.setattr(analysis, 'load', lambda *a, **k: pytest.fail('a workdir was loaded'))
  merged = root / 'merged.md'
  bench.main(_table_args(moved, merged) + ['--read_only', '--spectra_out=-'])
  assert '| 2-layer | tfidf | none |' in merged.read_text() and '![spectra]' not in merged.read_text()
  assert [p.name for p in root.glob('*.png')] == ['bow_spectra.png']  # the first table's plot alone
  # A record of an earlier version (bow_eval.json, settings inside) is read back as well.
  (legacy,) = list(moved.glob('*/seed0/bow_eval_*.json'))
  legacy.rename(legacy.with_name(bench.EVAL_FILE))
  bench.main(_table_args(moved, merged) + ['--read_only', '--spectra_out=-'])
  assert '| 2-layer | tfidf | none |' in merged.read_text()
  # Another final setting evaluates the trained cell again into its own record, beside the first one.
  monkeypatch.undo()
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a, **k: pytest.fail('a finished cell retrained'))
  bench.main(_table_args(root / 'cells', root / 'k4.md') + ['--eval_svi_steps=4', '--spectra_out=-'])
  assert sorted(p.name for p in workdir.glob('bow_eval_*.json')) == ['bow_eval_k3_lr0.008_is2.json',
                                                                      'bow_eval_k4_lr0.008_is2.json']
  assert json.loads((workdir / bench.eval_file(settings)).read_text()) == record


def test_only_seed_trains_that_seed_alone_into_the_shared_cache(cell, monkeypatch, capsys):
  root, workdir, _ = cell
  # Seed 0 is the fixture's finished cell; --only_seed=1 of a 2-seed row trains seed 1 and never touches seed 0.
  trained = []
  real = train.train_and_evaluate
  monkeypatch.setattr(train, 'train_and_evaluate', lambda c, w, **k: (trained.append(w), real(c, w, **k)))
  args = [a for a in _table_args(root / 'cells', root / 'only.md') if a != '--seeds=1']
  bench.main(args + ['--seeds=2', '--only_seed=1', '--spectra_out=-'])
  assert len(trained) == 1 and trained[0].endswith('seed1') and trained[0] != str(workdir)
  assert '| 2-layer | tfidf | none |' in capsys.readouterr().out
  # The whole row read back afterwards: both seeds, nothing trained.
  monkeypatch.setattr(train, 'train_and_evaluate', lambda *a, **k: pytest.fail('a finished cell retrained'))
  bench.main(args + ['--seeds=2', '--read_only', '--spectra_out=-'])
  (line,) = [l for l in capsys.readouterr().out.splitlines() if l.startswith('| 2-layer | tfidf | none |')]
  assert line.endswith('| 2 |'), line  # two seeds read, not '1 of 2'
  assert sorted(p.parent.name for p in (root / 'cells').glob('*/seed*/bow_eval_k3_*.json')) == ['seed0', 'seed1']
  with pytest.raises(SystemExit):  # a seed no row has: refused, not an empty table
    bench.main(args + ['--seeds=2', '--only_seed=2', '--spectra_out=-'])
  assert '--only_seed=2: no row has that seed' in capsys.readouterr().err


def test_cell_folders_follow_the_config_and_svi_settings_reach_only_rows_that_refine():
  ns = types.SimpleNamespace(dataset='synthetic', svi_steps=-1, svi_lr=0.0, tiny=True, overrides={},
                             nvdm_overrides={}, num_epochs=0, switch_epoch=-1, validate_svi=False)
  none, finopt = bench.Row(2, 'tfidf', 'none'), bench.Row(2, 'tfidf', 'finopt')
  cells = lambda ns: [bench.cell_dir('/c', row, bench.cell_config(row, seed, ns)) for row in (none, finopt)
                      for seed in (0, 1)]
  before = cells(ns)
  assert before[0].replace('seed0', '') == before[1].replace('seed1', '') and before[0] != before[2]
  ns.svi_steps, ns.svi_lr = 3, 0.05
  after = cells(ns)
  assert after[:2] == before[:2] and after[2] != before[2]
  assert bench.cell_config(finopt, 0, ns).model.svi_steps == 3
  ns.overrides = {'model.learning_rate': '0.01'}
  assert cells(ns)[0] != after[0]
  assert bench.cell_config(none, 0, ns).select == ('valid/perp_0', 'min')
  assert bench.cell_config(none, 0, ns).model.eval_svi_steps == 0
  ns.validate_svi = True  # every validation refines, and the refined perplexity selects the kept model
  assert bench.cell_config(none, 0, ns).select == ('valid/perp_f', 'min')
  assert bench.cell_config(none, 0, ns).model.eval_svi_steps > 0


# ------------------------------------------------------------------------------------------------ analyses
def test_analysis_functions_on_a_trained_workdir(cell, tmp_path):
  _, workdir, _ = cell
  run = analysis.load(str(workdir))
  d, vocab = run.method.code_length, run.vocab
  for source in analysis.SOURCES:
    z = analysis.latent_samples(run, source, 30)
    assert z.shape == (30, d) and np.all(np.isfinite(z))
  # The aggregate posterior's samples are mu + sigma eps of real documents.
  mu, logvar = analysis.posterior_params(run, 'train', [0, 1, 2])
  assert mu.shape == logvar.shape == (3, d)
  jac = analysis.expected_jacobian(run, 'posterior', 25)
  assert jac.shape == (len(vocab), d)
  z = analysis.latent_samples(run, 'posterior', 25)
  np.testing.assert_allclose(jac, jacobian.expected_jacobian(run.method.decode_log_probs, run.model.params,
                                                             jnp.asarray(z)), rtol=1e-4, atol=1e-7)
  log_sv = analysis.spectrum(jac)
  np.testing.assert_allclose(np.exp(log_sv), np.linalg.svd(jac, compute_uv=False), rtol=1e-4)
  assert 1 <= analysis.large_singular_values(log_sv) <= d
  assert analysis.large_singular_values(np.log([10.0, 2.0, 0.99, 0.5])) == 2
  found = analysis.neighbours(run, jac, [vocab[1]], k=4)
  assert len(found[vocab[1]]) == 4 and vocab[1] not in [w for w, _ in found[vocab[1]]]
  context = analysis.contextual_embeddings(run, 'test', 2)
  mu_doc, _ = analysis.posterior_params(run, 'test', [2])
  np.testing.assert_allclose(context, jacobian.jacobian(run.method.decode_log_probs, run.model.params,
                                                        jnp.asarray(mu_doc[0])), rtol=1e-5, atol=1e-7)
  words = analysis.document_words(run, 'test', 2)
  assert words and all(c >= 1 for _, c in words)
  path = analysis.spectra_figure({'a': run, 'b': str(workdir)}, str(tmp_path / 'two.png'), num_samples=10)
  assert set(path) == {'a', 'b'} and (tmp_path / 'two.png').stat().st_size > 1000


def test_analyze_jacobian_prints_neighbours_and_saves_the_spectrum(cell, tmp_path, capsys):
  _, workdir, _ = cell
  run = analysis.load(str(workdir))
  words = run.vocab[3:5]
  png = tmp_path / 'spectrum.png'
  analyze.main(['jacobian', f'--workdir={workdir}', f'--words={",".join(words)}', f'--out={png}',
                '--samples=20', '--k=3', '--doc=1', '--split=test'])
  printed = capsys.readouterr().out
  for word in words:
    assert f'\n{word}: ' in printed
  assert 'Contextual neighbours' in printed and 'singular values >= 0.1 x the largest' in printed
  assert png.stat().st_size > 1000
  with pytest.raises(ValueError, match='not in the vocabulary'):
    analyze.main(['jacobian', f'--workdir={workdir}', '--words=notaword', '--samples=5'])


# ------------------------------------------------------------------------------------------------ speed
def test_bench_speed_on_tiny_sizes(capsys):
  bench.main(['speed', '--tiny', '--dataset=synthetic', '--ks=3', '--epochs=1', '--eval_k=3',
              '--eval_batch_size=64'])
  printed = capsys.readouterr().out
  assert 'train none' in printed and 'train finopt K=3' in printed and 'evaluate K=3' in printed
  assert 'finopt K=3 step / none step: time' in printed and 'FLOPs' in printed


def test_finopt_flops_add_one_svi_iteration_per_step():
  """XLA counts a loop body once: F(K) is F(0) + K x (F(1) - F(0)), and the body costs a decoder pass
  forward and back (more than the forward alone)."""
  from dtr.configs import bow_vae as bow_config  # pylint: disable=g-import-not-at-top
  config = bow_config.get_config('regime=finopt,tiny')
  corpus = train.load_data(config)
  info = train.data_info(corpus, corpus.splits['train'].num_docs)

  def make(k):
    mc = config.model.copy_and_resolve_references()
    mc.svi_steps = k
    return bow_vae.BowVAE(mc, info.vocab_size, info)

  split = corpus.splits['train']
  ids, vals, seg = flat_rows(split.tfidf, np.arange(40)[None])
  _, cnt, _ = flat_rows(split.counts, np.arange(40)[None])
  batch = {'ids': ids, 'vals': vals, 'seg': seg, 'counts': cnt.astype(np.float32),
           'mask': np.ones((1, 40), np.float32)}
  state = make(0).init(jax.random.key(0), batch)
  total, body = flops.loop_flops(make, state, batch, 7)
  f0 = flops.step_flops(make(0), state, batch)
  assert body > 0 and total == pytest.approx(f0 + 7 * body)
  forward = jax.jit(lambda p, z: make(0).decode_log_probs(p, z)).lower(
      state['params'], jnp.zeros((40, make(0).code_length))).compile().cost_analysis()
  forward = forward[0] if isinstance(forward, (list, tuple)) else forward
  assert body > 1.5 * forward['flops']
