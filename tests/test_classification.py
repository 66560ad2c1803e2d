"""Low-resource classification with discrete VAEs (Jin et al. 2020) end to end on tiny data: the probe on
frozen features equals a classifier trained by hand, user data (a local tfds ag_news_subset, a headerless
CSV) through every step, bad inputs and impossible settings refused through the loop, cluster browsing, and
the study bench (`python -m dtr.bench classification`) on its tiny configs."""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from dtr import config_utils, encode, members, probe, train
from dtr import input_pipeline as ip
from dtr.evaluate.analysis import clusters
from tests import fake_tfds

DVAE = config_utils.load_config_module('discrete_vae')
CLASSIFY = config_utils.load_config_module('classify')


def tiny_pretrain(arg='method=vq_vae,level=global', epochs=1, **data):
  config = DVAE.get_config(arg + ',tiny')
  config.num_epochs = epochs
  if data:  # user data: a few dozen documents
    config.data.update(data)
    config.batch_size = 8
  return config


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  """One tiny global VQ-VAE workdir shared by the tests that only read it."""
  workdir = str(tmp_path_factory.mktemp('vq_global'))
  train.train_and_evaluate(tiny_pretrain(), workdir)
  return workdir


# ------------------------------------------------------------------------------------------------ the probe
def test_probe_equals_a_classifier_trained_by_hand_on_the_precomputed_features(pretrained, tmp_path):
  config = CLASSIFY.get_config(f'features={pretrained},labels=64,seeds=1,tiny')
  config.update(num_epochs=3, patience=100)
  results = train.train_and_evaluate(config, str(tmp_path))

  # By hand: the same features, labelled rows, initial parameters, data order and Adam steps, a linear
  # softmax written out here, the best epoch on validation accuracy kept.
  corpus = probe.load_features(config.data)
  train_split = corpus.splits['train']
  features = {n: jnp.asarray(s.features, jnp.float32) for n, s in corpus.splits.items()}
  classes = {n: ip.split_class_ids(s) for n, s in corpus.splits.items()}
  pool = np.flatnonzero(train_split.labels.any(axis=1))
  rows = np.sort(np.random.default_rng([0, 0]).choice(pool, 64, replace=False))
  from dtr import methods  # pylint: disable=g-import-not-at-top
  method = methods.get_method(config.model, train.data_info(corpus, 64))
  sample = {'features': np.zeros((1, features['train'].shape[1]), np.float32), 'mask': np.ones(1, np.float32),
            'label': np.zeros(1, np.int32)}
  params = members.init_state(method, int(config.seed), sample)['method']['params']
  w, b = params['Dense_0']['kernel'], params['Dense_0']['bias']
  tx = optax.chain(optax.clip_by_global_norm(config.model.clip), optax.adam(config.model.learning_rate))
  theta = {'w': w, 'b': b}
  opt_state = tx.init(theta)

  def loss_fn(theta, x, y):
    log_p = jax.nn.log_softmax(x @ theta['w'] + theta['b'])
    return -jnp.mean(log_p[jnp.arange(len(y)), y])

  @jax.jit
  def step(theta, opt_state, x, y):
    grads = jax.grad(loss_fn)(theta, x, y)
    updates, opt_state = tx.update(grads, opt_state, theta)
    return optax.apply_updates(theta, updates), opt_state

  def accuracy(theta, split):
    predicted = np.asarray(jnp.argmax(features[split] @ theta['w'] + theta['b'], axis=-1))
    return 100.0 * float(np.mean(predicted == classes[split]))

  best, best_valid = None, -1.0
  for epoch in range(3):
    order = ip.member_order(rows, int(config.seed), epoch, train_split.num_docs)
    for s in range(len(order) // config.batch_size):
      batch_rows = order[s * config.batch_size:(s + 1) * config.batch_size]
      theta, opt_state = step(theta, opt_state, features['train'][batch_rows],
                              jnp.asarray(classes['train'][batch_rows]))
    valid = accuracy(theta, 'valid')
    if valid > best_valid:
      best, best_valid = jax.tree.map(jnp.copy, theta), valid
  assert results['valid/accuracy'] == pytest.approx(best_valid)
  assert results['test/accuracy'] == pytest.approx(accuracy(best, 'test'))
  from dtr import checkpoint  # pylint: disable=g-import-not-at-top
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
  saved = checkpoint.load_params(str(tmp_path / 'best_params'), abstract)
  np.testing.assert_allclose(saved['Dense_0']['kernel'], best['w'], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(saved['Dense_0']['bias'], best['b'], rtol=1e-4, atol=1e-6)
  assert not np.allclose(best['w'], w)  # it trained


def test_features_are_computed_without_dropout(pretrained):
  """Frozen features: two computations agree exactly (dropout would make them differ: rate 0.2)."""
  model = encode.load_model(pretrained)
  assert model.config.model.dropout > 0
  corpus = encode.load_training_corpus(model)
  batch = next(ip.eval_batches('tokens', corpus.splits['test'], 8))[1]
  first = model.method.features(model.params, batch)
  np.testing.assert_array_equal(first, model.method.features(model.params, batch))


def test_standardised_features_use_the_training_split_statistics(pretrained):
  """normalize=feature: every split's dimension j becomes (x_j - m_j) / s_j with the training split's float64
  mean and std (1 for a constant dimension), written out here; codes are refused."""
  rng = np.random.default_rng(0)
  train_x = rng.normal(3.0, 1e-3, (50, 4)).astype(np.float32)
  train_x[:, 2] = 7.0  # constant over the training split
  test_x = rng.normal(3.0, 1e-3, (20, 4)).astype(np.float32)
  labels = lambda n: np.eye(2, dtype=bool)[np.arange(n) % 2]
  splits = {'train': probe.FeatureSplit(train_x, labels(50)), 'test': probe.FeatureSplit(test_x, labels(20))}
  out, (mean, std) = probe.standardize_splits(splits)
  m = train_x.astype(np.float64).sum(axis=0) / 50
  s = np.sqrt(((train_x.astype(np.float64) - m) ** 2).sum(axis=0) / 50)
  s[2] = 1.0
  np.testing.assert_allclose(out['test'].features, (test_x - m) / s, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out['train'].features[:, 2], 0.0)
  np.testing.assert_allclose(out['train'].features[:, [0, 1, 3]].std(axis=0), 1.0, rtol=1e-4)
  np.testing.assert_allclose(std, s, rtol=1e-6)
  np.testing.assert_array_equal(out['test'].labels, splits['test'].labels)

  config = CLASSIFY.get_config(f'features={pretrained},labels=64,seeds=1,normalize=feature,tiny')
  assert config.data.feature_standardize and config.model.normalize == 'none'
  standardised = probe.load_features(config.data)
  raw = probe.load_features(CLASSIFY.get_config(f'features={pretrained},labels=64,seeds=1,tiny').data)
  assert raw.standardize is None
  mean, std = standardised.standardize
  np.testing.assert_allclose(standardised.splits['valid'].features,
                             (raw.splits['valid'].features - mean) / std, rtol=1e-4, atol=1e-4)
  config.data.feature_kind = 'codes'
  with pytest.raises(ValueError, match='feature_standardize'):
    probe.load_features(config.data)


# ------------------------------------------------------------------------------------------------ user data
def write_ag_news_csv(path, rows=48, empty_rows=()):
  topics = ['world', 'sports', 'business', 'science']
  lines = []
  for i in range(rows):
    c = i % 4
    title = '' if i in empty_rows else f'{topics[c]} headline {i}'
    body = '' if i in empty_rows else f'a story about {topics[c]} and more {topics[c]} news number {i % 7}'
    lines.append(f'"{c + 1}","{title}","{body}"')
  path.write_text('\n'.join(lines) + '\n')
  return str(path)


def csv_data(path):
  return dict(name='csv', path=path, text_column='1+2', label_column='0', csv_header=False, label_offset=1,
              min_df=1, valid_fraction=0.25, test_fraction=0.25, use_tfds=False)


def probe_steps(pretrain_dir, tmp_path, labels='8'):
  out = {}
  for reembed in (False, True):
    config = CLASSIFY.get_config(f'features={pretrain_dir},labels={labels},seeds=2,reembed={reembed},tiny')
    config.update(num_epochs=2, batch_size=8)
    out[reembed] = train.train_and_evaluate(config, str(tmp_path / f'probe_{reembed}'))
  return out


def test_a_budget_the_reference_has_no_schedule_for_waits_as_many_steps_as_the_next_one():
  """Jin et al.'s schedules at 200 / 500 / 2500 / all are kept; labels=N takes the batch of the next of them and
  at least its patience in steps (validation once per epoch): 32 labels, batch 8, 4 steps an epoch, 63 epochs
  of patience for the reference's 25 x 10 steps at 200 (before: batch 32, 1 step an epoch, patience 5)."""
  expected = {'200': (8, 10, 1000), '500': (16, 10, 1000), '2500': (32, 5, 500), 'all': (64, 5, 200),
              '32': (8, 63, 1000), '8': (8, 250, 1000), '100': (8, 20, 1000), '201': (16, 24, 1000),
              '1000': (32, 16, 500), '5000': (64, 32, 200)}
  for budget, schedule in expected.items():
    assert CLASSIFY.schedule(budget) == schedule, budget
  config = CLASSIFY.get_config('method=cbow,labels=32')
  assert (config.batch_size, config.patience, config.num_epochs) == (8, 63, 1000)
  for bad in ('0', '20x', '-5'):
    with pytest.raises(ValueError, match=rf"labels='{bad}': give a number"):
      CLASSIFY.get_config(f'method=cbow,labels={bad}')


def test_features_that_barely_vary_are_warned_about_unless_standardised(pretrained, caplog, monkeypatch):
  """A median per-dimension spread below probe.FLAT_SPREAD gets a warning naming normalize=feature (an Adam
  probe stays near chance on such features); load_features warns on raw features, not on standardised ones."""
  rng = np.random.default_rng(0)
  labels = np.eye(2, dtype=bool)[np.arange(50) % 2]
  flat = probe.FeatureSplit(rng.normal(3.0, 1e-3, (50, 4)).astype(np.float32), labels)
  spread = [float(np.std(flat.features[:, j].astype(np.float64))) for j in range(4)]
  assert probe.feature_spread(flat) == pytest.approx(float(np.median(spread)), rel=1e-9)
  assert 'normalize=feature' in probe.flat_features_warning(flat, 'W')
  assert probe.flat_features_warning(probe.FeatureSplit(rng.normal(0, 1, (50, 4)), labels), 'W') is None

  monkeypatch.setattr(probe, 'FLAT_SPREAD', 1e9)  # every spread is below it
  for normalize, warned in (('', True), ('normalize=feature,', False)):
    caplog.clear()
    with caplog.at_level('WARNING'):
      probe.load_features(CLASSIFY.get_config(f'features={pretrained},labels=64,seeds=1,{normalize}tiny').data)
    assert any('vary little between documents' in r.getMessage() for r in caplog.records) == warned, normalize


def test_a_headerless_csv_goes_through_every_step(tmp_path, caplog):
  """Pretrain, probe (code-book vectors and re-embedded codes), CBOW and clusters; an empty row is dropped."""
  path = write_ag_news_csv(tmp_path / 'train.csv', empty_rows=(5,))
  pretrain = str(tmp_path / 'pretrain')
  config = tiny_pretrain('method=cat_vae,level=local,M=2', **csv_data(path))
  with caplog.at_level('WARNING'):
    results = train.train_and_evaluate(config, pretrain)
  assert any('dropped 1 of 48 rows' in r.getMessage() for r in caplog.records)
  assert results['dataset'].startswith('csv') and not results['synthetic']
  assert np.isfinite(results['test/perplexity'])
  probes = probe_steps(pretrain, tmp_path)
  for r in probes.values():
    assert r['members_reported'] == 2 and 0 <= r['test/accuracy'] <= 100
  cbow = CLASSIFY.get_config('method=cbow,labels=8,seeds=2,tiny')
  cbow.data.update(csv_data(path))
  cbow.update(num_epochs=2, batch_size=8)
  assert 0 <= train.train_and_evaluate(cbow, str(tmp_path / 'cbow'))['test/accuracy'] <= 100
  found, level = clusters.workdir_clusters(pretrain, top=2)
  assert level == 'local' and found and all(c.words for c in found)


def test_label_metrics_are_left_out_on_an_unlabelled_corpus_and_selecting_by_one_is_refused(tmp_path, caplog):
  """precision@K and accuracy need labels: on an unlabelled corpus they are left out, with a warning (a global
  discrete VAE pretrains and selects on perplexity); AMMI selects on precision@100, so it is refused before
  training (both failed after the first epoch)."""
  from dtr.evaluate import evaluators  # pylint: disable=g-import-not-at-top
  built = evaluators.build(('perplexity', 'codebook', 'precision@10', 'accuracy'))
  unlabelled = ml_collections.ConfigDict({'name': 'csv:x', 'label_names': ()})
  labelled = ml_collections.ConfigDict({'name': 'csv:y', 'label_names': ('a', 'b')})
  assert evaluators.for_corpus(built, ('perplexity', 'min'), labelled) == built
  with caplog.at_level('WARNING'):
    kept = evaluators.for_corpus(built, ('perplexity', 'min'), unlabelled)
  assert [e.name for e in kept] == ['perplexity', 'codebook']
  assert any('csv:x has no labels; not evaluated (label metrics): precision@10, accuracy' in r.getMessage()
             for r in caplog.records)
  with pytest.raises(ValueError, match='keeps the best epoch by valid/accuracy, which needs labels, but csv:x'):
    evaluators.for_corpus(built, ('accuracy', 'max'), unlabelled)
  ammi = config_utils.load_config_module('ammi').get_config('tiny')
  path = write_ag_news_csv(tmp_path / 'train.csv')
  ammi.data = ml_collections.ConfigDict({**ammi.data.to_dict(), **csv_data(path), 'label_column': ''})
  with pytest.raises(ValueError, match=r'config.select keeps the best epoch by valid/precision@10, which needs '
                                       r'labels, but csv:train has none'):
    train.train_and_evaluate(ammi, str(tmp_path / 'ammi'))
  assert not os.path.exists(tmp_path / 'ammi' / 'checkpoints')


def test_analyses_refuse_workdirs_they_cannot_read_in_one_line(pretrained, tmp_path, capsys):
  import shutil  # pylint: disable=g-import-not-at-top
  from dtr import analyze, cli  # pylint: disable=g-import-not-at-top
  from dtr.evaluate.analysis import bits  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"method 'vq_vae' is not a sentence autoencoder.*dtr.analyze clusters"):
    bits.load(pretrained)
  with pytest.raises(FileNotFoundError, match='holds no finished run'):
    clusters.workdir_clusters(str(tmp_path / 'nothing'))
  no_codes = tmp_path / 'no_codes'
  no_codes.mkdir()
  shutil.copy(os.path.join(pretrained, 'config.json'), no_codes)
  with pytest.raises(ValueError, match="method 'vq_vae' saved no codes"):
    clusters.workdir_clusters(str(no_codes))
  # The command line (`python -m dtr.analyze` runs main through cli.guarded): one message, exit status 2.
  with pytest.raises(SystemExit) as exit_info:
    cli.guarded(analyze.main, ['bits', f'--workdir={pretrained}', f'--out={tmp_path}'])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert 'dtr: error:' in err and 'is not a sentence autoencoder' in err and 'Traceback' not in err


def test_a_prepared_tfds_ag_news_subset_goes_through_the_study_path(tmp_path):
  catalog = str(tmp_path / 'catalog')
  fake_tfds.build_ag_news_subset(catalog, num_train=60, num_test=16)
  pretrain = str(tmp_path / 'pretrain')
  config = tiny_pretrain('method=hard_em,level=global', name='tfds:ag_news_subset', catalog_dir=catalog,
                         text_column='title+description', min_df=1, tfds_dir=str(tmp_path / 'tfds'))
  results = train.train_and_evaluate(config, pretrain)
  assert 'ag_news_subset' in results['dataset']
  assert not results['synthetic'] and results['num_values'] == 16
  with open(os.path.join(pretrain, 'data.json')) as f:
    assert json.load(f)['source'].startswith('tfds:ag_news_subset')
  probes = probe_steps(pretrain, tmp_path)
  assert all(0 <= r['test/accuracy'] <= 100 for r in probes.values())


# ------------------------------------------------------------------------------------------------ bad inputs
BAD_SETTINGS = [
    ('method=vq_vae,level=global', {'num_values': 1}, r'model\.num_values \(K\) must be >= 2'),
    ('method=vq_vae,level=local,M=3', {}, r'model\.num_latents \(M=3\) must divide model\.model_dim'),
    ('method=cat_vae,level=global', {'free_bits_ratio': 1.5}, r'model\.free_bits_ratio \(gamma\) must be in'),
    ('method=cat_vae,level=local', {'free_bits_ratio': -0.1}, r'model\.free_bits_ratio'),
    ('method=hard_em,level=global', {'pack_targets': 2.0}, r'model\.pack_targets'),
    ('method=vq_vae,level=global', {'word_dropout': 1.0}, r'model\.word_dropout must be in \[0, 1\)'),
]


@pytest.mark.parametrize('arg,model,match', BAD_SETTINGS)
def test_impossible_settings_are_refused_through_the_loop(arg, model, match, tmp_path):
  config = tiny_pretrain(arg)
  config.model.update(model)
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, str(tmp_path))


def test_bad_inputs_are_refused_through_the_loop(tmp_path, pretrained):
  table = tmp_path / 'docs.csv'
  table.write_text('title,body,cls\na,alpha words,x\nb,beta words,y\nc,gamma words,z\n')
  config = tiny_pretrain(name='csv', path=str(table), label_column='cls')
  with pytest.raises(ValueError, match=r"no column 'text'"):  # the named text column is missing
    train.train_and_evaluate(config, str(tmp_path / 'a'))
  config.data.update(text_column='body', label_offset=1)
  with pytest.raises(ValueError, match=r"label column 'cls' holds 'x', not an integer"):
    train.train_and_evaluate(config, str(tmp_path / 'b'))
  empty = tmp_path / 'empty.csv'
  empty.write_text('text,label\n' + '" ",a\n' * 4)
  config = tiny_pretrain(name='csv', path=str(empty))
  with pytest.raises(ValueError, match='no document has any text'):
    train.train_and_evaluate(config, str(tmp_path / 'c'))
  config = tiny_pretrain(name='ng20', format='npz')  # TF-IDF only: no token sequences
  if os.path.exists(os.path.join(os.environ['DTR_DATA_DIR'], 'hashing', 'ng20')):
    with pytest.raises(ValueError, match='token'):
      train.train_and_evaluate(config, str(tmp_path / 'd'))
  too_many = CLASSIFY.get_config(f'features={pretrained},labels=100000,seeds=1,tiny')
  with pytest.raises(ValueError, match=r'labels=100000 exceeds the pool of \d+ labelled training documents'):
    train.train_and_evaluate(too_many, str(tmp_path / 'e'))
  cbow = CLASSIFY.get_config('method=cbow,labels=100000,tiny')
  with pytest.raises(ValueError, match=r'labels=100000 exceeds the pool'):
    train.train_and_evaluate(cbow, str(tmp_path / 'f'))


# ------------------------------------------------------------------------------------------------ clusters
def test_global_clusters_by_hand():
  codes = np.array([[1, 2], [0, 0], [1, 2], [3, 3], [1, 2], [0, 0]])
  labels = np.eye(3, dtype=bool)[[0, 1, 0, 2, 1, 1]]
  texts = [f'text {i}' for i in range(6)]
  found = clusters.global_clusters(codes, labels, texts, ['a', 'b', 'c'], top=2, examples=2)
  assert [(c.code, c.count, c.label) for c in found] == [((1, 2), 3, 'a'), ((0, 0), 2, 'b')]
  assert found[0].purity == pytest.approx(2 / 3) and found[0].examples == ['text 0', 'text 2']
  assert found[1].share == pytest.approx(2 / 6) and found[1].purity == 1.0


def test_local_clusters_by_hand():
  codes = np.array([[[4], [5], [4]], [[4], [-1], [-1]]])
  tokens = [np.array([7, 8, 9]), np.array([9])]
  words = {7: 'the', 8: 'cat', 9: 'sat'}
  labels = np.eye(2, dtype=bool)[[0, 1]]
  found = clusters.local_clusters(codes, labels, tokens.__getitem__, words, ['x', 'y'], top=5, examples=5)
  assert [(c.code, c.count) for c in found] == [((4,), 3), ((5,), 1)]
  assert dict(found[0].words) == {'sat': 2, 'the': 1}
  assert found[0].examples == ['[the] cat sat', '[sat]'] and found[1].examples == ['the [cat] sat']
  assert found[0].label == 'x' and found[0].purity == pytest.approx(2 / 3)


def test_clusters_of_a_workdir(pretrained, capsys):
  clusters.main([f'--workdir={pretrained}', '--top=3'])
  out = capsys.readouterr().out
  assert 'most frequent global codes of test' in out and '#1 code ' in out and 'majority label' in out


# ------------------------------------------------------------------------------------------------ the bench
def test_the_study_bench_on_tiny_configs(tmp_path, capsys):
  from dtr.benches import classification as bench  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'docs' / 'classification.md'
  out.parent.mkdir()
  out.write_text('# Notes kept\n')
  common = ['--tiny', f'--cache_dir={tmp_path / "cells"}', '--variants=vq_vae-global-M4-K256', '--epochs=1',
            '--seeds=2', '--budgets=200']
  bench.main(['study', *common, f'--out={out}'])
  text = out.read_text()
  assert text.startswith('# Notes kept') and 'CBOW (from scratch)' in text and 're-embedded codes' in text
  assert text.count('| vq_vae-global-M4-K256') + text.count('| **vq_vae-global-M4-K256**') == 2
  capsys.readouterr()
  bench.main(['study', *common, f'--out={out}'])  # a second run reads every cell back
  assert 'done in' not in capsys.readouterr().out
  assert out.read_text().count('classification study tiny: begin') == 1
  bench.main(['retrieval', *common, f'--out={out}'])
  table = out.read_text()
  assert 'precision@100' in table and '| model | M log2 K bits | precision@100 | P / R at r=0 |' in table
  retrieval = table.split('| model | M log2 K bits')[1]
  (row,) = [line for line in retrieval.splitlines() if line.startswith('| vq_vae-global-M4-K256 |')]
  config_path = next((tmp_path / 'cells').glob('tiny/vq_vae-global-M4-K256-*/config.json'))
  model = json.loads(config_path.read_text())['model']
  assert row.split('|')[2].strip() == f"{model['num_latents'] * np.log2(model['num_values']):g}"
  header = next(line for line in table.splitlines() if line.startswith('| model | M log2 K bits'))
  assert row.count('|') == header.count('|')
  assert (tmp_path / 'docs' / 'classification_radius_tiny.png').stat().st_size > 0
  # --no-flops: XLA's FLOP count (two more compilations) is tested with the bag-of-words bench's step.
  with pytest.raises(SystemExit):  # the widths of length-bucketed chunks, without length buckets
    bench.main(['speed', *common, '--steps=16', '--steps_per_call=8', '--pad_to_multiple_of=8'])
  assert '--pad_to_multiple_of sets the widths of length-bucketed chunks' in capsys.readouterr().err
  with pytest.raises(ValueError, match='fewer than --steps_per_call=8 steps of batch 64'):  # 256 documents
    bench.main(['speed', *common, '--steps=16', '--steps_per_call=8'])
  with pytest.raises(SystemExit, match='whole windows'):  # 2 chunks timed: a window of 3 would be cut
    bench.main(['speed', *common, '--steps=16', '--steps_per_call=8', '--buckets=3'])
  bench.main(['speed', *common, '--steps=16', '--steps_per_call=8', '--probe_epochs=1', '--batch_size=16',
              '--no-flops', '--buckets=2'])  # the pretraining steps on length-bucketed chunks
  printed = capsys.readouterr().out
  assert 'steps/s' in printed and 'sentences/s' in printed and 'probe reembed 200 labels' in printed
  assert 'GFLOP/step' not in printed and 'matmul on this device' in printed and 'the output layer alone' in printed
  assert 'jax ' in printed.split('the output layer alone')[1] and ', dtr ' in printed  # plain JAX and dtr's layer
  try:  # the PyTorch twin of the global VQ-VAE where the 'bench' extra is installed, else a line saying why not
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    assert 'steps/s with the PyTorch' in printed and 'dtr / PyTorch x' in printed
  except ImportError:
    assert 'no PyTorch twin (PyTorch is not installed' in printed


def test_xavier_variants_find_the_cells_trained_before_the_init_option(tmp_path):
  """`codebook_init='xavier'` hashes as absent, and a '-xavier' variant reads the folder of its old name."""
  import argparse  # pylint: disable=g-import-not-at-top
  from dtr.benches import classification as bench  # pylint: disable=g-import-not-at-top
  args = argparse.Namespace(tiny=False, dataset='dbpedia14', token_vocab_size=8000, data_set=[], epochs=15,
                            em_iter=1, noam=False, dropout=0.2, pretrain_set=[], buckets=0)
  new = bench.pretrain_config('hard_em-global-M4-K4096', args)
  assert 'length_buckets' not in new.data  # absent unless asked: the cells before --buckets keep their folders
  bucketed = bench.pretrain_config('hard_em-global-M4-K4096', argparse.Namespace(**{**vars(args), 'buckets': 4}))
  assert bucketed.data.length_buckets == 4 and bench.digest(bucketed) != bench.digest(new)
  padded = bench.pretrain_config('hard_em-global-M4-K4096',
                                 argparse.Namespace(**{**vars(args), 'buckets': 4, 'pad_to_multiple_of': 8}))
  assert 'pad_to_multiple_of' not in bucketed.data and padded.data.pad_to_multiple_of == 8
  assert bench.digest(padded) not in (bench.digest(bucketed), bench.digest(new))
  old = bench.pretrain_config('hard_em-global-M4-K4096-xavier', args)
  assert new.model.codebook_init == 'normal' and old.model.codebook_init == 'xavier'
  before = ml_collections.ConfigDict(old.to_dict())
  del before.model['codebook_init']  # a config written before the option
  assert bench.digest(old) == bench.digest(before) != bench.digest(new)
  assert old.model.codebook_init == 'xavier'  # digest leaves its argument alone
  assert 'codebook_init' not in bench.pretrain_config('vq_vae-global-M4-K256', args).model  # VQ cells unmoved
  root = str(tmp_path)
  fresh = bench.cell_dir(root, 'hard_em-global-M4-K4096-xavier', old)
  assert os.path.basename(fresh) == f'hard_em-global-M4-K4096-xavier-{bench.digest(old)}'
  legacy = os.path.join(root, f'hard_em-global-M4-K4096-{bench.digest(old)}')
  os.makedirs(legacy)
  assert bench.cell_dir(root, 'hard_em-global-M4-K4096-xavier', old) == legacy
  assert bench.cell_dir(root, 'hard_em-global-M4-K4096', new) != legacy


def test_extend_seeds_a_longer_cell_with_the_shorter_ones_checkpoints_and_trains_the_same_run(tmp_path):
  """`study --extend`: the 2-epoch cell resumed from the 1-epoch cell's final checkpoint equals 2 epochs from
  scratch; a cell that differs in anything but the epoch cap is never used."""
  from dtr.benches import classification as bench  # pylint: disable=g-import-not-at-top
  name, root = 'hard_em-global-M4-K256-rs0.1', str(tmp_path / 'cells')
  short = tiny_pretrain('method=hard_em,level=global,restart=0.1', epochs=1)
  other = tiny_pretrain('method=hard_em,level=global,restart=0.1', epochs=1)
  other.seed += 1
  for config in (short, other):
    train.train_and_evaluate(config, bench.cell_dir(root, name, config))
  long = tiny_pretrain('method=hard_em,level=global,restart=0.1', epochs=2)
  workdir = bench.cell_dir(root, name, long)
  assert bench.extend_cell(root, 'hard_em-global-M4-K256', long, workdir) is None  # another variant's name
  other_long = tiny_pretrain('method=hard_em,level=global,restart=0.1', epochs=2)
  other_long.model.em_iter += 1
  assert bench.extend_cell(root, name, other_long, bench.cell_dir(root, name, other_long)) is None
  assert bench.extend_cell(root, name, long, workdir) == bench.cell_dir(root, name, short)
  assert bench.extend_cell(root, name, long, workdir) is None  # it has checkpoints now: never overwritten
  extended = train.train_and_evaluate(long, workdir)
  scratch = train.train_and_evaluate(long, str(tmp_path / 'scratch'))
  timings = ('timings', 'wall_time_s')
  assert {k: v for k, v in extended.items() if k not in timings} == {
      k: v for k, v in scratch.items() if k not in timings}
  assert np.isfinite(scratch['test/perplexity']) and scratch['best_epoch'] == extended['best_epoch']
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['num_epochs'] == 2


def test_twin_batches_leave_out_padding_documents():
  from dtr.benches import classification as bench  # pylint: disable=g-import-not-at-top
  tokens = np.arange(2 * 3 * 4).reshape(2, 3, 4)
  host = [{'tokens': tokens, 'lengths': np.array([[3, 2, 0], [1, 1, 1]]),
           'mask': np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])}]
  batches = bench.twin_batches(host)
  assert [t.tolist() for t, _ in batches] == [tokens[0, :2].tolist(), tokens[1, [0, 2]].tolist()]
  assert [n.tolist() for _, n in batches] == [[3, 2], [1, 1]]


@pytest.mark.parametrize('arg', ['method=vq_vae,level=global,M=4,K=16', 'method=hard_em,level=global,M=2,K=8'])
def test_the_pytorch_twin_has_dtrs_network_and_trains(arg):
  torch = pytest.importorskip('torch')  # the 'bench' extra
  from dtr import methods  # pylint: disable=g-import-not-at-top
  from dtr.benches import classification as bench, discrete_torch  # pylint: disable=g-import-not-at-top
  from dtr.data import load_corpus  # pylint: disable=g-import-not-at-top
  config = tiny_pretrain(arg)
  corpus = load_corpus(config.data)
  info = train.data_info(corpus, corpus.splits['train'].num_docs)
  method = methods.get_method(config.model, info)
  host = bench.bench_chunks(config, corpus, method, steps=4, steps_per_call=2)
  sample = {k: v[0] for k, v in host[0].items() if k != 'valid'}
  params = members.init_states(method, [members.Member(0, 0)], sample)['method']['params']
  mc = config.model
  twin = discrete_torch.twin(mc, info.token_vocab_size, 64)
  # the same sizes everywhere but the attention keys' biases, which dtr leaves out (softmax is shift-invariant)
  assert sum(p.numel() for p in twin.parameters()) == sum(x.size for x in jax.tree.leaves(params)) + 3 * mc.model_dim
  batches = bench.twin_batches(host)
  tokens, lengths = (torch.as_tensor(a, dtype=torch.long) for a in batches[0])
  memory = twin.codebook[:, 0][None].expand(tokens.shape[0], -1, -1)
  nll = float(twin.nll(memory, tokens, lengths).detach())
  # an untrained decoder predicts about uniformly: n + 1 targets of about log V nats each
  uniform = np.log(info.token_vocab_size) * float(np.mean(np.asarray(lengths) + 1))
  assert abs(nll - uniform) < 0.1 * uniform
  rate, framework = discrete_torch.steps_per_second(mc, info.token_vocab_size, batches, warmup=1)
  assert rate > 0 and framework.startswith('PyTorch')


def test_the_pytorch_twin_covers_only_the_steps_it_writes_out():
  from dtr.benches import discrete_torch  # pylint: disable=g-import-not-at-top
  covered = lambda arg, **model: discrete_torch.covers(ml_collections.ConfigDict(
      {**tiny_pretrain(arg).model.to_dict(), **model}))
  assert covered('method=vq_vae,level=global') and covered('method=hard_em,level=global')
  assert not covered('method=vq_vae,level=local') and not covered('method=cat_vae,level=global')
  assert not covered('method=vq_vae,level=global', codebook_update='ema')
  assert not covered('method=hard_em,level=global', word_dropout=0.5)
  assert not covered('method=hard_em,level=global', em_relax=False)
  assert not covered('method=vq_vae,level=global', alternating=True)


@pytest.mark.usefixtures('fresh_programs')  # BLOCK_ELEMENTS is read when the step is traced
def test_the_speed_rows_count_a_packed_output_layer_at_its_full_flops(monkeypatch):
  """XLA's cost analysis counts a loop body once, and the packed output layer is a loop over blocks of rows
  (blocks of 32 rows here, BLOCK_ELEMENTS lowered): `train_rate` counts the step of the packed model with the
  full layer, as many FLOPs as the same model with pack_targets 0, more than its own compiled step shows."""
  import argparse  # pylint: disable=g-import-not-at-top
  from dtr import methods, members, train  # pylint: disable=g-import-not-at-top
  from dtr.benches import classification as bench, flops  # pylint: disable=g-import-not-at-top
  from dtr.data import load_corpus  # pylint: disable=g-import-not-at-top
  from dtr.nn import softmax  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(softmax, 'BLOCK_ELEMENTS', 32 * 64)
  args = argparse.Namespace(tiny=True, epochs=1, em_iter=1, noam=False, dropout=0.0, pretrain_set=[], buckets=0)
  counts = {}
  for pack in (0.75, 0.0):
    config = bench.pretrain_config('vq_vae-global-M4-K256', args)
    config.model.pack_targets = pack
    config.batch_size = 32
    corpus = load_corpus(config.data)
    info = train.data_info(corpus, corpus.splits['train'].num_docs)
    method = methods.get_method(config.model, info)
    host = bench.bench_chunks(config, corpus, method, 2, 1)
    counts[pack] = bench.train_rate(config, corpus, host)[1]
    if pack:
      sample = {k: v[0] for k, v in host[0].items() if k != 'valid'}
      state = members.init_states(method, [members.Member(0, 0)], sample)
      one = jax.tree.map(lambda x: x[0], state['method'])
      rows = int(np.sum((np.asarray(sample['lengths']) + 1) * np.asarray(sample['mask'])))
      assert softmax.blocks(rows, len(corpus.token_vocab))[0] >= 2, (rows, len(corpus.token_vocab))
      loop_count = flops.step_flops(method, one, sample)
  assert counts[0.75] == counts[0.0] > loop_count
