"""dtr.data: readers, the tfds round trip, featurisation, synthetic data, batching.

Real-data tests read $DTR_DATA_DIR (default ../shared/data beside the repo) and
skip when it is absent. Every tfds build goes to a temporary directory.
"""

import dataclasses
import json
import logging
import os
import pathlib

import numpy as np
import pytest
import scipy.sparse as sp

from dtr import data
from dtr.data import batching
from dtr.data import corpus as corpus_lib
from dtr.data import featurize
from dtr.data import hashing
from dtr.data import raw
from dtr.data import synthetic
from dtr.data import tfds_builders
from dtr.data import user

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = pathlib.Path(os.environ.get('DTR_DATA_DIR') or REPO.parent / 'shared' / 'data')
SPLITS = corpus_lib.SPLIT_NAMES


def needs(*relative_paths):
  missing = [p for p in relative_paths if not (DATA_DIR / p).exists()]
  return pytest.mark.skipif(bool(missing), reason=f'real data absent: {DATA_DIR}/{missing}')


def config(**fields):
  cfg = data.default_data_config()
  cfg.data_dir = str(DATA_DIR)
  cfg.update(fields)
  return cfg


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def assert_same_corpus(a, b, atol=0.0):
  assert list(a.vocab) == list(b.vocab)
  assert list(a.label_names) == list(b.label_names)
  for name in SPLITS:
    assert corpus_lib.splits_equal(a.splits[name], b.splits[name], atol=atol), name


def bow_only(corpus):
  """`corpus` without token sequences and texts: what a hashing file written from it holds."""
  splits = {name: dataclasses.replace(split, tokens=None, texts=None)
            for name, split in corpus.splits.items()}
  return corpus.replace(splits=splits, token_vocab=None)


def write_hashing_npz(path, corpus, skip=()):
  """`corpus` in the shared .npz layout (the keys in `skip` left out)."""
  arrays = {'vocab': np.array(corpus.vocab), 'label_names': np.array(corpus.label_names)}
  for name, file_split in hashing.FILE_SPLITS.items():
    split = corpus.splits[name]
    for kind, matrix in (('tfidf', split.tfidf), ('tf', split.counts)):
      arrays.update({f'{file_split}_{kind}_data': matrix.data,
                     f'{file_split}_{kind}_indices': matrix.indices,
                     f'{file_split}_{kind}_indptr': matrix.indptr})
    arrays[f'{file_split}_shape'] = np.array(split.tfidf.shape)
    arrays[f'{file_split}_labels'] = split.labels.astype(np.int8)
    arrays[f'{file_split}_doc_ids'] = split.doc_ids
  for key in skip:
    del arrays[key]
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **arrays)
  return str(path)


def small_corpus(seed=0):
  return synthetic.make_corpus(num_train=40, num_valid=10, num_test=10, vocab_size=50,
                               num_classes=3, num_topics=3, doc_length=12, seed=seed)


# ---------------------------------------------------------------- hashing sets

@pytest.mark.parametrize('name', ['ng20', 'reuters'])
def test_npz_and_mat_readers_agree(name):
  folder = f'hashing/{name}'
  if not (DATA_DIR / folder / f'{name}_vdsh.npz').exists():
    pytest.skip(f'real data absent: {DATA_DIR / folder}')
  npz = data.load_corpus(config(name=name, use_tfds=False))
  mat = data.load_corpus(config(name=name, format='mat', use_tfds=False))
  for split in SPLITS:
    a, b = npz.splits[split], mat.splits[split]
    assert a.tfidf.shape == b.tfidf.shape
    assert corpus_lib.max_abs_diff(a.tfidf, b.tfidf) < 1e-6
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.tfidf.dtype == np.float32 and a.tfidf.has_sorted_indices
  assert npz.splits['train'].counts is not None and mat.splits['train'].counts is None
  assert npz.num_labels == 20 and npz.num_terms == 10000
  expected_rows = {'ng20': (10257, 3405, 3405), 'reuters': (7763, 1373, 1373)}[name]
  assert tuple(npz.splits[s].num_docs for s in SPLITS) == expected_rows
  if name == 'ng20':  # Single-label: one-hot rows.
    assert (npz.splits['train'].labels.sum(1) == 1).all()


@needs('hashing/ng20/ng20_vdsh.npz')
def test_reconstructed_featurizer_reproduces_the_shared_tfidf():
  corpus = hashing.read_file(str(DATA_DIR / 'hashing/ng20/ng20_vdsh.npz'), 'ng20')
  assert corpus.featurizer is not None
  test = corpus.splits['test']
  assert corpus_lib.max_abs_diff(corpus.featurizer.tfidf(test.counts), test.tfidf) < 1e-6
  row = corpus.featurizer.transform(['Space shuttle launch delayed by NASA engineers'])
  assert row.shape == (1, 10000) and row.nnz >= 4
  assert abs(sp.linalg.norm(row) - 1) < 1e-6


@pytest.mark.parametrize('name', ['reuters', 'ng20'])
def test_tfds_path_equals_direct_path_and_is_cached(name, tfds_dir):
  if not (DATA_DIR / f'hashing/{name}/{name}_vdsh.npz').exists():
    pytest.skip(f'real data absent: {DATA_DIR}')
  direct = data.load_corpus(config(name=name, use_tfds=False))
  via_tfds = data.load_corpus(config(name=name, tfds_dir=tfds_dir))
  assert_same_corpus(direct, via_tfds)
  assert via_tfds.featurizer.to_json() == direct.featurizer.to_json()
  records = sorted(pathlib.Path(tfds_dir, 'dtr_corpus', name).rglob('*.array_record*'))
  assert len(records) >= 3
  mtimes = [p.stat().st_mtime_ns for p in records]
  again = data.load_corpus(config(name=name, tfds_dir=tfds_dir))
  assert [p.stat().st_mtime_ns for p in records] == mtimes  # Not rebuilt.
  assert_same_corpus(direct, again)


def test_tfds_rebuilds_when_the_source_file_changes(tmp_path):
  path = tmp_path / 'data' / 'hashing' / 'reuters' / 'reuters_vdsh.npz'
  cfg = config(name='reuters', data_dir=str(tmp_path / 'data'), tfds_dir=str(tmp_path / 'tfds'))
  write_hashing_npz(path, small_corpus(seed=0).replace(label_names=[f'l{i}' for i in range(3)]))
  # The reuters config declares 20 labels; a 3-label file must not pass silently.
  with pytest.raises(ValueError, match='labels'):
    data.load_corpus(cfg)
  first = synthetic.make_corpus(num_train=40, num_valid=10, num_test=10, vocab_size=50,
                                num_classes=20, num_topics=20, doc_length=12, seed=0)
  write_hashing_npz(path, first)
  assert_same_corpus(data.load_corpus(cfg), bow_only(first))
  second = synthetic.make_corpus(num_train=40, num_valid=10, num_test=10, vocab_size=50,
                                 num_classes=20, num_topics=20, doc_length=12, seed=1)
  write_hashing_npz(path, second)
  os.utime(path, ns=(1, 1))  # Same size is possible; the mtime surely differs.
  assert_same_corpus(data.load_corpus(cfg), bow_only(second))


def test_fast_and_generic_tfds_decoding_agree(tmp_path, monkeypatch):
  corpus = small_corpus()
  builder_dir = tfds_builders.prepare_corpus('small', lambda: corpus, str(tmp_path))
  fast = tfds_builders.read_prepared(builder_dir)
  monkeypatch.setattr(tfds_builders, '_parse_raw_examples', lambda *_: None)
  generic = tfds_builders.read_prepared(builder_dir)
  assert_same_corpus(fast, corpus)
  assert_same_corpus(generic, corpus)
  assert generic.synthetic and generic.featurizer.vocab == corpus.featurizer.vocab
  assert fast.has_tokens and fast.splits['test'].texts == corpus.splits['test'].texts
  assert generic.token_vocab.to_json() == fast.token_vocab.to_json() == corpus.token_vocab.to_json()
  # tfds refuses to write an empty split; it must still come back, empty.
  no_valid = synthetic.make_corpus(num_train=30, num_valid=0, num_test=5, vocab_size=40,
                                   num_classes=2, num_topics=2)
  back = tfds_builders.read_prepared(
      tfds_builders.prepare_corpus('no_valid', lambda: no_valid, str(tmp_path)))
  assert back.splits['valid'].labels.shape == (0, 2)
  assert_same_corpus(back, no_valid)


def test_missing_file_names_the_path_and_dtr_data_dir(tmp_path, monkeypatch):
  monkeypatch.setenv('DTR_DATA_DIR', str(tmp_path))
  with pytest.raises(FileNotFoundError) as error:
    data.load_corpus(config(name='ng20', data_dir='', allow_synthetic=False, use_tfds=False))
  message = str(error.value)
  assert str(tmp_path / 'hashing' / 'ng20' / 'ng20_vdsh.npz') in message
  assert 'DTR_DATA_DIR' in message and 'hashing/ng20/ng20_vdsh.npz' in message
  monkeypatch.delenv('DTR_DATA_DIR')
  with pytest.raises(FileNotFoundError, match='DTR_DATA_DIR'):
    data.load_corpus(config(name='reuters', data_dir='', allow_synthetic=False))


def test_missing_data_falls_back_to_synthetic_loudly(tmp_path, monkeypatch, capsys):
  monkeypatch.delenv('DTR_DATA_DIR', raising=False)
  cfg = config(name='reuters', data_dir='', allow_synthetic=True)
  cfg.synthetic.update(num_train=60, num_valid=20, num_test=20, vocab_size=80)
  corpus = data.load_corpus(cfg)
  assert corpus.synthetic and corpus.splits['train'].num_docs == 60
  banner = capsys.readouterr().err
  assert 'SYNTHETIC' in banner and 'meaningless' in banner
  assert 'DTR_DATA_DIR=/path/to/data' in banner and 'hashing/reuters/reuters_vdsh.npz' in banner


@needs('hashing/tmc/tmc_vdsh_cvtest.npz')
def test_tmc_without_train_split_says_so():
  with pytest.raises(hashing.MissingTrainSplitError, match='train split is missing'):
    data.load_corpus(config(name='tmc', allow_synthetic=True, use_tfds=False))


def test_malformed_npz_files_raise_value_errors(tmp_path):
  corpus = small_corpus()
  good = write_hashing_npz(tmp_path / 'good.npz', corpus)
  assert_same_corpus(hashing.read_file(good, 'x'), bow_only(corpus))
  missing = write_hashing_npz(tmp_path / 'missing.npz', corpus, skip=['cv_tfidf_indptr'])
  with pytest.raises(ValueError, match=r'missing\.npz.*cv_tfidf_indptr'):
    hashing.read_file(missing, 'x')
  labels = np.load(good)
  arrays = dict(labels)
  arrays['test_labels'] = arrays['test_labels'][:-1]
  np.savez(tmp_path / 'rows.npz', **arrays)
  with pytest.raises(ValueError, match=r'rows\.npz.*label rows'):
    hashing.read_file(str(tmp_path / 'rows.npz'), 'x')
  arrays = dict(labels)
  arrays['train_tfidf_indptr'] = arrays['train_tfidf_indptr'][:-1]
  np.savez(tmp_path / 'indptr.npz', **arrays)
  with pytest.raises(ValueError, match=r'indptr\.npz.*indptr'):
    hashing.read_file(str(tmp_path / 'indptr.npz'), 'x')
  (tmp_path / 'garbage.npz').write_bytes(b'not a zip file')
  with pytest.raises(ValueError, match='garbage.npz'):
    hashing.read_file(str(tmp_path / 'garbage.npz'), 'x')


def test_nan_in_tfidf_raises_naming_the_split(tmp_path):
  corpus = small_corpus()
  arrays = dict(np.load(write_hashing_npz(tmp_path / 'a.npz', corpus)))
  arrays['cv_tfidf_data'] = arrays['cv_tfidf_data'].copy()
  arrays['cv_tfidf_data'][3] = np.nan
  np.savez(tmp_path / 'nan.npz', **arrays)
  with pytest.raises(ValueError, match=r"nan\.npz.*'cv'.*NaN"):
    hashing.read_file(str(tmp_path / 'nan.npz'), 'x')
  bad = corpus.splits['valid'].tfidf.copy()
  bad.data[0] = np.inf
  splits = dict(corpus.splits, valid=corpus_lib.Split(bad, corpus.splits['valid'].labels))
  with pytest.raises(ValueError, match="split 'valid'.*NaN/inf"):
    corpus_lib.check_finite(corpus.replace(splits=splits))


def test_empty_docs_are_dropped_with_a_warning_or_rejected(tmp_path, caplog):
  corpus = small_corpus()
  test = corpus.splits['test']
  tfidf = test.tfidf.tolil()
  tfidf[[2, 5]] = 0  # Two documents lose every term.
  counts = test.counts.tolil()
  counts[[2, 5]] = 0
  splits = dict(corpus.splits, test=corpus_lib.Split(tfidf, test.labels, counts, test.doc_ids))
  path = write_hashing_npz(tmp_path / 'hashing' / 'ng20' / 'ng20_vdsh.npz',
                           corpus.replace(splits=splits))
  cfg = config(name='ng20', path=path, tfds_dir=str(tmp_path / 'tfds'))
  with caplog.at_level(logging.WARNING):
    dropped = data.load_corpus(cfg)
  assert dropped.splits['test'].num_docs == test.num_docs - 2
  np.testing.assert_array_equal(dropped.splits['test'].doc_ids, np.delete(test.doc_ids, [2, 5]))
  assert any("'test'" in r.getMessage() and ' 2 ' in r.getMessage() for r in caplog.records)
  cfg.empty_docs = 'error'
  with pytest.raises(ValueError, match=r"split 'test' has 2 empty documents.*\[2, 5\]"):
    data.load_corpus(cfg)


def test_split_and_corpus_check_their_shapes():
  with pytest.raises(ValueError, match='rows'):
    corpus_lib.Split(sp.csr_matrix((3, 4), dtype=np.float32), np.zeros((2, 1), bool))
  corpus = small_corpus()
  with pytest.raises(ValueError, match='exactly'):
    corpus.replace(splits={'train': corpus.splits['train']})
  with pytest.raises(ValueError, match='unknown data config fields'):
    data.load_corpus({'name': 'synthetic', 'vocab_sise': 3})


# ---------------------------------------------------------------- featurisation

def reference_tfidf(docs, vocab, train_docs):
  """float64 NumPy TF-IDF written from the formula: sublinear tf, smooth idf, L2 rows."""
  def counts(doc):
    words = doc.lower().split()
    return np.array([words.count(term) for term in vocab], np.float64)
  train = np.stack([counts(d) for d in train_docs])
  df = (train > 0).sum(0)
  idf = np.log((1 + len(train_docs)) / (1 + df)) + 1
  out = []
  for doc in docs:
    c = counts(doc)
    tf = np.where(c > 0, 1 + np.log(np.maximum(c, 1)), 0)
    x = tf * idf
    out.append(x / np.linalg.norm(x) if x.any() else x)
  return np.stack(out)


def test_featurizer_matches_hand_computed_tfidf():
  train = ['the cat sat on the mat', 'the dog sat', 'cat cat dog bird', 'a bird sang']
  featurizer = data.Featurizer.fit(train, min_df=1, max_df=1.0, stop_words='none')
  assert featurizer.vocab == ['bird', 'cat', 'dog', 'mat', 'on', 'sang', 'sat', 'the']
  new = ['cat cat cat the dog', 'unknown words only', 'mat']
  expected = reference_tfidf(train + new, featurizer.vocab, train)
  got = featurizer.transform(train + new)
  assert got.dtype == np.float32 and got.has_sorted_indices
  np.testing.assert_allclose(got.toarray(), expected, atol=1e-6)
  assert got[len(train) + 1].nnz == 0  # All out of vocabulary: an empty row.


def test_featurizer_vocabulary_rules_and_serialisation(tmp_path):
  train = ['apple banana the', 'apple banana cherry', 'apple cherry durian',
           'apple banana elder', "don't x11 42 the"]
  kept = data.Featurizer.fit(train, min_df=2, max_df=0.7, stop_words='english')
  # apple is in 4/5 > 0.7 of the docs, 'the' is a stop word, durian/elder too rare.
  assert kept.vocab == ['banana', 'cherry']
  top1 = data.Featurizer.fit(train, min_df=1, max_df=1.0, vocab_size=1, stop_words='none')
  assert top1.vocab == ['apple']
  words, counts = data.Featurizer.fit_with_counts(train, min_df=1, max_df=1.0, stop_words='none')
  assert (counts != words.counts(train)).nnz == 0
  assert "don't" in words.vocab and 'x11' in words.vocab and '42' not in words.vocab
  loaded = data.Featurizer.load(os.path.dirname(words.save(tmp_path / 'feat')))
  assert loaded.vocab == words.vocab
  np.testing.assert_array_equal(loaded.transform(train).toarray(), words.transform(train).toarray())


def test_sentencepiece_tokenizer_trains_in_memory():
  rng = np.random.default_rng(0)
  topics = [['market', 'stocks', 'prices', 'trading', 'shares'],
            ['football', 'match', 'goal', 'players', 'league'],
            ['rocket', 'orbit', 'launch', 'satellite', 'space']]
  texts = [' '.join(rng.choice(topics[i % 3], size=8)) + ' and the end' for i in range(300)]
  featurizer = data.Featurizer.fit(texts, tokenizer='sentencepiece', vocab_size=60,
                                   min_df=2, max_df=0.9)
  assert featurizer.tokenizer == 'sentencepiece' and 0 < featurizer.num_terms <= 60
  assert any(term.startswith('\u2581') for term in featurizer.vocab)
  rows = featurizer.transform(['the rocket launch reached orbit', 'stocks and shares'])
  assert rows.shape == (2, featurizer.num_terms) and rows[0].nnz > 0 and rows[1].nnz > 0
  again = data.Featurizer.from_json(featurizer.to_json())
  assert corpus_lib.max_abs_diff(again.transform(texts[:20]), featurizer.transform(texts[:20])) == 0


def test_sentencepiece_corpus_via_load_corpus(tmp_path):
  csv_path = tmp_path / 'docs.csv'
  rng = np.random.default_rng(1)
  words = {'a': ['alpha', 'apple', 'anchor'], 'b': ['bravo', 'banana', 'bridge']}
  lines = ['text,label'] + [f'{" ".join(rng.choice(words[l], 6))},{l}'
                            for l in rng.choice(['a', 'b'], 120)]
  csv_path.write_text('\n'.join(lines))
  corpus = data.load_corpus(config(name='csv', path=str(csv_path), tokenizer='sentencepiece',
                                   vocab_size=40, min_df=2, tfds_dir=str(tmp_path / 'tfds')))
  assert corpus.featurizer.tokenizer == 'sentencepiece' and corpus.label_names == ['a', 'b']


# ---------------------------------------------------------------- raw and user text

def test_clean_newsgroup_post():
  post = ('From: someone@example.com\nSubject: Re: engines\n\nIn article <1@x>, bob writes:\n'
          '> quoted line\nReal content here.\nMore content.\n-- \nBob, the signature\n')
  assert raw.clean_newsgroup_post(post) == 'Real content here.\nMore content.'


@needs('raw/20news-bydate.tar.xz')
def test_raw_20news_subset_both_paths(tmp_path):
  cfg = config(name='raw_20news', max_docs_per_split=150, min_df=2, tfds_dir=str(tmp_path))
  via_tfds = data.load_corpus(cfg)
  cfg.use_tfds = False
  direct = data.load_corpus(cfg)
  assert_same_corpus(via_tfds, direct)
  assert via_tfds.featurizer.to_json() == direct.featurizer.to_json()
  assert len(direct.label_names) == 20 and direct.label_names[0] == 'alt.atheism'
  for name in SPLITS:
    split = direct.splits[name]
    assert 140 <= split.num_docs <= 150  # A few may be dropped as empty.
    assert (split.labels.sum(1) == 1).all() and (split.doc_ids > 0).all()
  all_ids = np.concatenate([direct.splits[s].doc_ids for s in SPLITS])
  assert len(set(all_ids)) == len(all_ids)
  assert 'from' not in direct.vocab or 'subject' not in direct.vocab  # Headers are gone.


@needs('raw/reuters_nltk.tar.xz')
def test_raw_reuters_subset_is_multilabel_top20():
  corpus = data.load_corpus(config(name='raw_reuters', max_docs_per_split=200, min_df=2,
                                   use_tfds=False))
  assert len(corpus.label_names) == 20 and {'earn', 'acq'} <= set(corpus.label_names)
  for name in ('valid', 'test'):  # Held-out docs without a top-20 label are dropped.
    assert (corpus.splits[name].labels.sum(1) >= 1).all()
  assert (corpus.splits['train'].labels.sum(1) > 1).any()


def test_folder_layouts(tmp_path):
  root = tmp_path / 'docs'
  for label, word in (('sports', 'goal'), ('space', 'orbit')):
    (root / label).mkdir(parents=True)
    for i in range(10):
      (root / label / f'{i}.txt').write_text(f'{word} {word} text number{i} common')
  corpus = data.load_corpus(config(name='folder', path=str(root), min_df=1, valid_fraction=0.2,
                                   test_fraction=0.2, tfds_dir=str(tmp_path / 'tfds')))
  assert corpus.label_names == ['space', 'sports']
  assert [corpus.splits[s].num_docs for s in SPLITS] == [12, 4, 4]
  sports = corpus.vocab.index('goal')
  for split in corpus.splits.values():
    has_goal = split.tfidf[:, sports].toarray().ravel() > 0
    np.testing.assert_array_equal(has_goal, split.labels[:, 1])
  flat = tmp_path / 'flat'
  flat.mkdir()
  for i in range(10):
    (flat / f'{i}.txt').write_text(f'plain words doc{i}')
  unlabelled = data.load_corpus(config(name='folder', path=str(flat), min_df=1,
                                       tfds_dir=str(tmp_path / 'tfds')))
  assert unlabelled.label_names == [] and unlabelled.splits['train'].labels.shape == (8, 0)
  presplit = tmp_path / 'presplit'
  for split_name, n in (('train', 6), ('test', 3)):
    (presplit / split_name / 'a').mkdir(parents=True)
    for i in range(n):
      (presplit / split_name / 'a' / f'{i}.txt').write_text(f'alpha beta {split_name}')
  text = user.read_folder(str(presplit), valid_fraction=0.34)
  assert [len(text.splits[s].texts) for s in SPLITS] == [4, 2, 3]
  (flat / 'sub').mkdir()
  (flat / 'sub' / 'x.txt').write_text('mixed layout')
  with pytest.raises(ValueError, match='either'):
    user.read_folder(str(flat))


def test_csv_columns_and_labels(tmp_path):
  path = tmp_path / 'docs.csv'
  rows = ['body,tags'] + [f'"alpha words, number {i}",x|y' if i % 2 else f'beta words {i},y'
                          for i in range(20)]
  path.write_text('\n'.join(rows))
  cfg = config(name='csv', path=str(path), text_column='body', label_column='tags',
               label_separator='|', min_df=1, tfds_dir=str(tmp_path / 'tfds'))
  corpus = data.load_corpus(cfg)
  assert corpus.label_names == ['x', 'y']
  train = corpus.splits['train']
  alpha = train.tfidf[:, corpus.vocab.index('alpha')].toarray().ravel() > 0
  np.testing.assert_array_equal(train.labels[:, 0], alpha)
  assert train.labels[:, 1].all()
  cfg.use_tfds = False
  assert_same_corpus(corpus, data.load_corpus(cfg))
  cfg.text_column = 'text'
  with pytest.raises(ValueError, match="no column 'text'"):
    data.load_corpus(cfg)


def test_tfds_catalog_dataset(tmp_path):
  import tensorflow_datasets as tfds

  class DtrTestTextCatalog(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'content': tfds.features.Text(),
          'label': tfds.features.ClassLabel(names=['neg', 'pos'])}))

    def _split_generators(self, dl_manager):
      return {'train': self._generate_examples(40), 'test': self._generate_examples(10)}

    def _generate_examples(self, n):
      for i in range(n):
        yield i, {'content': f'{"good great" if i % 2 else "bad awful"} review {i}', 'label': i % 2}

  catalog = str(tmp_path / 'catalog')
  DtrTestTextCatalog(data_dir=catalog, file_format='array_record').download_and_prepare()
  corpus = data.load_corpus(config(name='tfds:dtr_test_text_catalog', catalog_dir=catalog,
                                   min_df=1, tfds_dir=str(tmp_path / 'tfds')))
  assert corpus.label_names == ['neg', 'pos']
  assert [corpus.splits[s].num_docs for s in SPLITS] == [36, 4, 10]
  train = corpus.splits['train']
  good = train.tfidf[:, corpus.vocab.index('good')].toarray().ravel() > 0
  np.testing.assert_array_equal(good, train.labels[:, 1])


# ---------------------------------------------------------------- synthetic

def test_synthetic_corpus_is_deterministic_labelled_and_learnable():
  kwargs = dict(num_train=400, num_valid=50, num_test=100, vocab_size=500, num_classes=4,
                num_topics=8)
  a, b = synthetic.make_corpus(**kwargs), synthetic.make_corpus(**kwargs)
  assert_same_corpus(a, b)
  other = synthetic.make_corpus(**kwargs, seed=1)
  assert corpus_lib.max_abs_diff(a.splits['train'].tfidf, other.splits['train'].tfidf) > 0
  assert a.synthetic and a.num_labels == 4 and a.num_terms == 500
  train, test = a.splits['train'], a.splits['test']
  assert (train.labels.sum(1) == 1).all() and train.labels.any(0).all()
  np.testing.assert_allclose(sp.linalg.norm(train.tfidf, axis=1), 1, atol=1e-5)
  remade = featurize.tfidf_from_counts(test.counts, a.featurizer.idf)
  assert corpus_lib.max_abs_diff(remade, test.tfidf) == 0
  # Cosine nearest neighbours share a label far more often than chance (1/4).
  nearest = np.asarray((test.tfidf @ train.tfidf.T).toarray().argsort(1)[:, -20:])
  precision = (train.labels[nearest] & test.labels[:, None, :]).any(-1).mean()
  assert precision > 0.5
  multi = synthetic.make_corpus(**kwargs, multi_label_prob=0.5)
  assert (multi.splits['train'].labels.sum(1) == 2).mean() > 0.3


def test_load_synthetic_by_name():
  cfg = data.default_data_config()
  cfg.name = 'synthetic'
  cfg.synthetic.update(num_train=100, num_valid=20, num_test=30, vocab_size=120, num_classes=3)
  corpus = data.load_corpus(cfg)
  assert [corpus.splits[s].num_docs for s in SPLITS] == [100, 20, 30] and corpus.synthetic


# ---------------------------------------------------------------- batching

@pytest.mark.parametrize('min_len', [1, 8, 64])
def test_pad_rows_matches_a_loop(min_len):
  rng = np.random.default_rng(0)
  dense = rng.random((30, 50)) * (rng.random((30, 50)) < 0.2)
  dense[[3, 7]] = 0  # Empty rows.
  csr = sp.csr_matrix(dense.astype(np.float32))
  rows = np.array([7, 0, 3, 29, 0, 12])
  ids, vals = data.pad_rows(csr, rows, min_len=min_len)
  width = max(max(csr[r].nnz for r in rows), min_len)
  assert ids.shape == vals.shape == (len(rows), 1 << (width - 1).bit_length())
  assert ids.dtype == np.int32 and vals.dtype == np.float32
  for i, r in enumerate(rows):
    start, stop = csr.indptr[r], csr.indptr[r + 1]
    expected_ids = np.zeros(ids.shape[1], np.int32)
    expected_vals = np.zeros(ids.shape[1], np.float32)
    expected_ids[:stop - start] = csr.indices[start:stop]
    expected_vals[:stop - start] = csr.data[start:stop]
    np.testing.assert_array_equal(ids[i], expected_ids)
    np.testing.assert_array_equal(vals[i], expected_vals)
  empty_ids, _ = data.pad_rows(csr, np.array([], np.int64), min_len=min_len)
  assert empty_ids.shape[0] == 0


@pytest.mark.parametrize('num_labels, dtype', [(0, np.uint32), (5, np.uint32), (32, np.uint32),
                                               (33, np.uint64), (64, np.uint64)])
def test_labels_to_bits(num_labels, dtype):
  labels = np.random.default_rng(num_labels).random((40, num_labels)) < 0.3
  bits = data.labels_to_bits(labels)
  assert bits.dtype == dtype and bits.shape == (40,)
  for i in range(40):
    assert int(bits[i]) == sum(1 << c for c in range(num_labels) if labels[i, c])
  share = (bits[:, None] & bits[None, :]) != 0
  np.testing.assert_array_equal(share, (labels.astype(int) @ labels.T.astype(int)) > 0)


def test_labels_to_bits_rejects_more_than_64_labels():
  with pytest.raises(ValueError, match='64'):
    batching.labels_to_bits(np.zeros((2, 65), bool))


def test_default_config_documents_every_field():
  cfg = data.default_data_config()
  doc = data.default_data_config.__doc__
  for field in cfg:
    assert f'{field}' in doc, field
  json.dumps(cfg.to_dict())  # Plain values only, so it can be saved with a run.
