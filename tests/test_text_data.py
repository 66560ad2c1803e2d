"""dtr.data text side: tokenisers, the token Vocabulary, Tokens, the shared text/lm/bow sets, CSV options,
tfds with tokens and texts, label budgets, data-folder errors, fingerprints, synthetic token sequences.

Real-data tests read $DTR_DATA_DIR (default ../shared/data beside the repo) and skip when it is absent; every
tfds build goes to a temporary directory and nothing downloads.
"""

import logging
import os
import pathlib
import time

import numpy as np
import pytest
import scipy.sparse as sp

from dtr import data
from dtr.data import corpus as corpus_lib
from dtr.data import featurize
from dtr.data import labels as labels_lib
from dtr.data import shared_sets
from dtr.data import synthetic
from dtr.data import tokenize
from tests import fake_tfds

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = pathlib.Path(os.environ.get('DTR_DATA_DIR') or REPO.parent / 'shared' / 'data')
SPLITS = corpus_lib.SPLIT_NAMES


def needs(*relative_paths):
  missing = [p for p in relative_paths if not (DATA_DIR / p).exists()]
  return pytest.mark.skipif(bool(missing), reason=f'real data absent: {DATA_DIR}/{missing}')


def config(**fields):
  cfg = data.default_data_config()
  cfg.data_dir = str(DATA_DIR)
  cfg.use_tfds = False
  cfg.update(fields)
  return cfg


def sizes(corpus):
  return [corpus.splits[s].num_docs for s in SPLITS]


def small_synthetic(**kwargs):
  kw = dict(num_train=60, num_valid=15, num_test=15, vocab_size=80, num_classes=3, num_topics=3,
            doc_length=15)
  return synthetic.make_corpus(**dict(kw, **kwargs))


# ------------------------------------------------------------------------------------------------ tokenisers
@pytest.mark.parametrize('text, expected', [
    ("I don't like it, isn't it?", "i do n't like it , is n't it ?"),
    ("He's gone (really)!", "he 's gone ( really ) !"),
    ("We've, we're; I'd & you'll", "we 've , we 're i 'd you 'll"),
    ('Price: $5.00 -- a ~deal~\n\tnow', 'price 5 00 a deal now'),
    ("`quoted' CAPS", "`quoted' caps"),
    ('', ''),
])
def test_kim_cleaning_by_hand(text, expected):
  assert tokenize.kim_clean(text) == expected
  assert tokenize.split_words([text], 'kim') == [expected.split()]


def test_whitespace_and_regex_tokenizers():
  text = " The N cats' toys <unk>  cost $5, don't they? "
  assert tokenize.split_words([text], 'whitespace') == [
      ['The', 'N', "cats'", 'toys', '<unk>', 'cost', '$5,', "don't", 'they?']]
  assert tokenize.split_words([text], 'regex') == [
      ['the', 'n', 'cats', 'toys', 'unk', 'cost', '5', "don't", 'they']]
  with pytest.raises(ValueError, match='token tokenizer must be one of'):
    tokenize.split_words([text], 'spaces')


# ------------------------------------------------------------------------------------------------ vocabulary
def test_vocabulary_rules():
  train = ['b a c a', 'c b a d', 'e <unk> _UNK <pad> a']  # a:4, b:2, c:2, d:1, e:1
  vocab = tokenize.Vocabulary.fit(train, max_size=0, min_count=1)
  assert vocab.id_to_token[:4] == ['<pad>', '<unk>', '<bos>', '<eos>']
  assert (tokenize.PAD_ID, tokenize.UNK_ID, tokenize.BOS_ID, tokenize.EOS_ID) == (0, 1, 2, 3)
  assert vocab.words == ['a', 'b', 'c', 'd', 'e']  # By count; ties alphabetical; markers never words.
  assert tokenize.Vocabulary.fit(train, max_size=6).words == ['a', 'b']  # 6 ids, 4 of them special.
  assert tokenize.Vocabulary.fit(train, min_count=2).words == ['a', 'b', 'c']
  assert tokenize.Vocabulary.fit(train, max_size=4).size == 4
  with pytest.raises(ValueError, match='max_size'):
    tokenize.Vocabulary.fit(train, max_size=3)
  tokens = vocab.encode(['a zebra <unk> _UNK <pad> <bos> e', ''])
  np.testing.assert_array_equal(tokens.row(0), [4, 1, 1, 1, 1, 1, 8])
  assert tokens.row(1).size == 0 and tokens.ids.dtype == np.int32 and tokens.offsets.dtype == np.int64
  assert vocab.decode([2, 4, 5, 1, 0, 3, 6]) == 'a b <unk>'  # bos/pad skipped, stops at eos.
  with pytest.raises(ValueError, match='special'):
    tokenize.Vocabulary(['a', '<eos>'])


def test_truncation_is_logged(caplog):
  vocab = tokenize.Vocabulary.fit(['a b c d e f'], max_len=3)
  with caplog.at_level(logging.INFO):
    tokens = vocab.encode(['a b c d e f', 'a b', 'f e d c'], name='demo')
  np.testing.assert_array_equal(tokens.lengths(), [3, 2, 3])
  np.testing.assert_array_equal(tokens.row(2), [vocab.token_id(w) for w in 'fed'])
  assert any('truncated 2 of 3' in r.getMessage() and 'max_len=3' in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize('tokenizer', ['whitespace', 'regex', 'kim', 'sentencepiece'])
def test_vocabulary_saves_its_tokenizer(tokenizer, tmp_path):
  rng = np.random.default_rng(0)
  words = ['market', 'stocks', 'prices', 'rocket', 'orbit', 'launch', "don't", 'goal']
  train = [' '.join(rng.choice(words, 6)) + ', the END!' for _ in range(200)]
  vocab = tokenize.Vocabulary.fit(train, tokenizer=tokenizer, max_size=40, max_len=5)
  assert 4 < vocab.size <= 40
  loaded = tokenize.Vocabulary.load(os.path.dirname(vocab.save(tmp_path)))
  assert loaded.tokenizer == tokenizer and loaded.max_len == 5 and loaded.id_to_token == vocab.id_to_token
  new = ['Rocket launch, orbit!', 'stocks prices market goal']
  assert loaded.encode(new).equals(vocab.encode(new))
  if tokenizer == 'sentencepiece':
    assert vocab.decode(vocab.encode(['rocket launch']).row(0)) == 'rocket launch'
    assert any(w.startswith('\u2581') for w in vocab.words)


# ------------------------------------------------------------------------------------------------ Tokens
def test_tokens_rows_and_take():
  seqs = [[5, 6, 7], [], [8], [9, 10]]
  tokens = data.Tokens.from_lists(seqs)
  np.testing.assert_array_equal(tokens.offsets, [0, 3, 3, 4, 6])
  np.testing.assert_array_equal(tokens.lengths(), [3, 0, 1, 2])
  for rows in ([3, 0, 0, 1], np.array([True, False, True, True]), [], [-1, 1]):
    taken = tokens.take(rows)
    index = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else [r % 4 for r in rows]
    assert [taken.row(i).tolist() for i in range(taken.num_docs)] == [seqs[i] for i in index]
  with pytest.raises(ValueError, match='offsets'):
    data.Tokens(np.arange(3), [0, 2])
  with pytest.raises(ValueError, match='non-decreasing'):
    data.Tokens(np.arange(3), [0, 2, 1, 3])


def test_split_carries_and_checks_tokens_and_texts():
  corpus = small_synthetic()
  train = corpus.splits['train']
  rows = np.array([5, 2, 2, 40])
  part = train.take(rows)
  assert part.texts == [train.texts[i] for i in rows]
  assert all(np.array_equal(part.tokens.row(k), train.tokens.row(i)) for k, i in enumerate(rows))
  masked = train.take(np.arange(train.num_docs) % 2 == 0)
  assert masked.num_docs == masked.tokens.num_docs == len(masked.texts) == 30
  with pytest.raises(ValueError, match='tokens hold'):
    corpus_lib.Split(train.tfidf, train.labels, tokens=part.tokens)
  with pytest.raises(ValueError, match='texts'):
    corpus_lib.Split(train.tfidf, train.labels, texts=['x'])
  bad = data.Tokens(np.full(train.tokens.ids.size, 10_000), train.tokens.offsets)
  with pytest.raises(ValueError, match='outside the token vocabulary'):
    corpus.replace(splits=dict(corpus.splits, train=corpus_lib.Split(train.tfidf, train.labels, tokens=bad)))


def test_require_tokens_names_the_text_corpora():
  corpus = small_synthetic()
  assert corpus.has_tokens
  data.require_tokens(corpus, 'the GRU')
  bare = small_synthetic(tokens=False)
  assert not bare.has_tokens and bare.splits['train'].texts is None
  with pytest.raises(ValueError) as error:
    data.require_tokens(bare.replace(name='ng20'), 'the GRU language model')
  message = str(error.value)
  assert 'the GRU language model' in message and "'ng20' has none" in message
  for name in ('dbpedia14', 'yahoo10', 'ptb', 'yahoo_lm', 'raw_20news', 'raw_reuters', 'csv', 'folder',
               'tfds:<name>', 'synthetic'):
    assert name in message


def test_empty_token_sequences_are_dropped_aligned(caplog):
  corpus = small_synthetic()
  test = corpus.splits['test']
  lists = [test.tokens.row(i).tolist() for i in range(test.num_docs)]
  lists[3] = []
  splits = dict(corpus.splits, test=corpus_lib.Split(test.tfidf, test.labels, test.counts, test.doc_ids,
                                                     data.Tokens.from_lists(lists), test.texts))
  with caplog.at_level(logging.WARNING):
    dropped = corpus_lib.handle_empty_docs(corpus.replace(splits=splits), 'drop')
  kept = dropped.splits['test']
  assert kept.num_docs == test.num_docs - 1 and kept.texts == test.texts[:3] + test.texts[4:]
  np.testing.assert_array_equal(kept.doc_ids, np.delete(test.doc_ids, 3))
  assert any('1 with no tokens' in r.getMessage() and "'test'" in r.getMessage() for r in caplog.records)
  with pytest.raises(ValueError, match='1 with no tokens'):
    corpus_lib.handle_empty_docs(corpus.replace(splits=splits), 'error')


def test_a_token_corpus_keeps_documents_without_bag_of_words_terms_until_asked(caplog):
  corpus = small_synthetic()
  test = corpus.splits['test']
  tfidf = test.tfidf.tolil()
  tfidf[2, :] = 0  # every word of document 2 outside the bag-of-words vocabulary; its tokens remain
  counts = test.counts.tolil()
  counts[2, :] = 0
  splits = dict(corpus.splits, test=corpus_lib.Split(tfidf.tocsr(), test.labels, counts.tocsr(), test.doc_ids,
                                                     test.tokens, test.texts))
  corpus = corpus.replace(splits=splits)
  assert corpus_lib.handle_empty_docs(corpus, 'drop').splits['test'].num_docs == test.num_docs
  with caplog.at_level(logging.WARNING):
    kept = corpus_lib.handle_empty_docs(corpus, 'drop', by='tfidf').splits['test']
  assert kept.num_docs == test.num_docs - 1 and kept.tokens.num_docs == test.num_docs - 1
  assert any('1 with an all-zero TF-IDF row' in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------------ synthetic
def test_synthetic_tokens_follow_the_counts_and_leave_tfidf_alone():
  corpus = small_synthetic(seed=3)
  bare = small_synthetic(seed=3, tokens=False)
  vocab = corpus.token_vocab
  word_of_token = np.array([corpus.vocab.index(w) if w in corpus.vocab else -1 for w in vocab.id_to_token])
  assert sorted(vocab.words) == sorted(corpus.vocab)  # Every synthetic word, no unk.
  for name in SPLITS:
    split = corpus.splits[name]
    assert (split.tfidf != bare.splits[name].tfidf).nnz == 0
    assert (split.counts != bare.splits[name].counts).nnz == 0
    dense = split.counts.toarray()
    for i in range(split.num_docs):
      words = word_of_token[split.tokens.row(i)]
      assert (words >= 0).all()
      np.testing.assert_array_equal(np.bincount(words, minlength=corpus.num_terms), dense[i])
      assert split.texts[i] == vocab.decode(split.tokens.row(i))
  train_total = np.asarray(corpus.splits['train'].counts.sum(0)).ravel()[word_of_token[4:]]
  assert (np.diff(train_total) <= 0).all()  # Most frequent first.
  again = small_synthetic(seed=3)
  assert again.splits['valid'].tokens.equals(corpus.splits['valid'].tokens)
  # The order is shuffled: not simply the sorted multiset.
  row = corpus.splits['train'].tokens.row(0)
  assert not np.array_equal(row, np.sort(row))


# ------------------------------------------------------------------------------------------------ shared sets
@pytest.fixture(scope='module')
def ptb():
  return data.load_corpus(config(name='ptb'))


@pytest.fixture(scope='module')
def yahoo10():
  return data.load_corpus(config(name='yahoo10'))


@needs('text/dbpedia14/valid.txt', 'text/yahoo10/valid.txt', 'lm/ptb/val.txt', 'lm/yahoo/val.txt')
@pytest.mark.parametrize('name, expected, num_labels', [
    ('dbpedia14', [12000, 2000, 14000], 14), ('yahoo10', [8500, 1500, 10000], 10),
    ('ptb', [3033, 337, 3761], 0), ('yahoo_lm', [9000, 1000, 10000], 0)])
def test_shared_text_set_recipes(name, expected, num_labels):
  text = shared_sets.read_text_set(str(DATA_DIR), name, split_seed=0)
  assert [len(text.splits[s].texts) for s in SPLITS] == expected
  assert len(text.label_names) == num_labels
  train, valid = text.splits['train'], text.splits['valid']
  pool = np.concatenate([train.doc_ids, valid.doc_ids])
  np.testing.assert_array_equal(np.sort(pool), np.arange(expected[0] + expected[1]))  # A partition.
  again = shared_sets.read_text_set(str(DATA_DIR), name, split_seed=0)
  np.testing.assert_array_equal(again.splits['valid'].doc_ids, valid.doc_ids)
  other = shared_sets.read_text_set(str(DATA_DIR), name, split_seed=1)
  assert not np.array_equal(other.splits['valid'].doc_ids, valid.doc_ids)
  if num_labels:
    assert set(text.label_names) == {n for names in train.labels for n in names}  # Every class in train.
    assert all(len(names) == 1 for s in SPLITS for names in text.splits[s].labels)
  else:
    assert all(names == () for names in train.labels)


@needs('lm/ptb/val.txt')
def test_ptb_corpus(ptb):
  assert ptb.name == 'ptb' and ptb.num_labels == 0 and ptb.has_tokens
  assert all(ptb.splits[s].labels.shape == (n, 0) for s, n in zip(SPLITS, sizes(ptb)))
  # A few sentences with no bag-of-words term (all stop words) are dropped: tokens and texts stay aligned.
  assert [3000, 330, 3700] <= sizes(ptb) <= [3033, 337, 3761]
  assert ptb.token_vocab.tokenizer == 'whitespace' and 'N' in ptb.token_vocab.words  # Case kept.
  assert '<unk>' not in ptb.token_vocab.words  # PTB's own marker is our unk.
  train = ptb.splits['train']
  for i in (0, 17, train.num_docs - 1):
    words = train.texts[i].split()
    assert train.tokens.lengths()[i] == len(words)
    assert ptb.token_vocab.decode(train.tokens.row(i)) == ' '.join(words)  # Every train word is known.
  assert ptb.source.endswith('lm/ptb/test.txt') and os.path.isabs(ptb.source.split(', ')[0])


@needs('text/yahoo10/valid.txt')
def test_yahoo10_corpus(yahoo10):
  assert yahoo10.num_labels == 10 and yahoo10.label_names[5] == 'Sports'
  for name in SPLITS:
    ids = data.class_ids(yahoo10.splits[name])
    assert ids.min() >= 0 and ids.max() <= 9
  assert [8400, 1450, 9800] <= sizes(yahoo10) <= [8500, 1500, 10000]
  assert yahoo10.featurizer is not None and yahoo10.splits['test'].counts is not None


@needs('text/dbpedia14/valid.txt', 'lm/yahoo/val.txt')
@pytest.mark.parametrize('name', ['dbpedia14', 'yahoo_lm'])
def test_other_text_sets_load_with_tokens(name):
  corpus = data.load_corpus(config(name=name, max_docs_per_split=200, max_len=20))
  assert corpus.has_tokens and all(n >= 190 for n in sizes(corpus))
  assert max(corpus.splits[s].tokens.lengths().max() for s in SPLITS) == 20
  assert '_UNK' not in corpus.token_vocab.words


@needs('bow/20news_clean/train.feat')
def test_20news_clean_recipe():
  corpus = data.load_corpus(config(name='20news_clean'))
  assert sizes(corpus) == [10132, 1126, 7487] and corpus.num_terms == 1994  # 11258 = 10132 + 1126.
  assert corpus.vocab[:3] == ['write', 'one', 'use'] and not corpus.has_tokens and corpus.num_labels == 0
  train = corpus.splits['train']
  idf = featurize.smooth_idf(featurize.document_frequency(train.counts), train.num_docs)
  for name in SPLITS:
    split = corpus.splits[name]
    assert split.tokens is None and split.texts is None
    assert corpus_lib.max_abs_diff(featurize.tfidf_from_counts(split.counts, idf), split.tfidf) == 0
  # The file's first line, read by hand: `1 700:1 152:4 572:9 ...` (ids 1-based).
  whole = shared_sets.read_nvdm_counts(str(DATA_DIR / 'bow/20news_clean/train.feat'), 1994)
  assert whole.shape == (11258, 1994) and (whole[0, 699], whole[0, 151], whole[0, 571]) == (1, 4, 9)
  everything = sp.vstack([corpus.splits['train'].counts, corpus.splits['valid'].counts])
  assert everything.sum() == whole.sum()
  with pytest.raises(ValueError, match='has none'):
    data.require_tokens(corpus, 'a sequence model')


@needs('lm/ptb/val.txt')
def test_tfds_round_trip_keeps_tokens_and_texts(ptb, tmp_path):
  via_tfds = data.load_corpus(config(name='ptb', use_tfds=True, tfds_dir=str(tmp_path)))
  for name in SPLITS:
    assert corpus_lib.splits_equal(ptb.splits[name], via_tfds.splits[name]), name
  assert via_tfds.token_vocab.to_json() == ptb.token_vocab.to_json()
  assert via_tfds.source == ptb.source
  assert data.fingerprint(via_tfds) == data.fingerprint(ptb)


# ------------------------------------------------------------------------------------------------ fingerprint
def test_fingerprint_tracks_content():
  corpus = small_synthetic()
  print_a = data.fingerprint(corpus)
  assert len(print_a) == 16 and print_a == data.fingerprint(small_synthetic())
  assert data.fingerprint(small_synthetic(seed=1)) != print_a
  assert data.fingerprint(small_synthetic(tokens=False)) != print_a
  train = corpus.splits['train']
  tfidf = train.tfidf.copy()
  tfidf.data[7] += 1e-6
  changed = corpus.replace(splits=dict(corpus.splits, train=corpus_lib.Split(
      tfidf, train.labels, train.counts, train.doc_ids, train.tokens, train.texts)))
  assert data.fingerprint(changed) != print_a
  assert data.fingerprint(corpus.replace(name='other', source='/x')) == print_a  # Content only.


@needs('hashing/ng20/ng20_vdsh.npz')
def test_fingerprint_is_cheap_on_ng20():
  corpus = data.load_corpus(config(name='ng20'))
  start = time.perf_counter()
  data.fingerprint(corpus)
  assert time.perf_counter() - start < 1.0
  assert os.path.isabs(corpus.source) and corpus.source.endswith('hashing/ng20/ng20_vdsh.npz')


# ------------------------------------------------------------------------------------------------ data folder
def test_named_data_folder_without_the_files_is_an_error(tmp_path, monkeypatch, capsys):
  for name, expected in (('ptb', 'lm/ptb/val.txt'), ('dbpedia14', 'text/dbpedia14/valid_class_label.txt'),
                         ('20news_clean', 'bow/20news_clean/vocab'), ('raw_20news', 'raw/20news-bydate.tar.xz')):
    with pytest.raises(FileNotFoundError) as error:
      data.load_corpus(config(name=name, data_dir=str(tmp_path), allow_synthetic=True))
    message = str(error.value)
    assert str(tmp_path) in message and expected in message, message
  monkeypatch.setenv('DTR_DATA_DIR', str(tmp_path))  # Named through the environment: the same.
  with pytest.raises(FileNotFoundError, match='ng20_vdsh.npz'):
    data.load_corpus(config(name='ng20', data_dir='', allow_synthetic=True))
  assert 'SYNTHETIC' not in capsys.readouterr().err


def test_no_data_folder_falls_back_to_synthetic_only_when_allowed(monkeypatch, capsys):
  monkeypatch.delenv('DTR_DATA_DIR', raising=False)
  cfg = config(name='yahoo10', data_dir='', allow_synthetic=True)
  cfg.synthetic.update(num_train=50, num_valid=10, num_test=10, vocab_size=60, num_classes=2, num_topics=2)
  corpus = data.load_corpus(cfg)
  assert corpus.synthetic and corpus.has_tokens and corpus.source == ''
  banner = capsys.readouterr().err
  assert 'SYNTHETIC' in banner and 'text/yahoo10/valid.txt' in banner
  cfg.allow_synthetic = False
  with pytest.raises(FileNotFoundError, match='no data folder is named'):
    data.load_corpus(cfg)


# ------------------------------------------------------------------------------------------------ CSV
def write(path, lines):
  path.write_text('\n'.join(lines) + '\n')
  return str(path)


def test_csv_headerless_joined_columns_and_label_offset(tmp_path):
  words = {1: 'stocks market', 2: 'football goal', 3: 'rocket orbit'}
  rows = [f'"{c}","Title {words[c]} {i}","Some description of {words[c]}, number {i}"'
          for i, c in enumerate([1, 2, 3] * 10)]
  path = write(tmp_path / 'agnews.csv', rows)
  cfg = config(name='csv', path=path, csv_header=False, text_column='1+2', label_column='0',
               label_offset=1, min_df=1, valid_fraction=0.2, test_fraction=0.2)
  corpus = data.load_corpus(cfg)
  assert corpus.label_names == ['0', '1', '2'] and sizes(corpus) == [18, 6, 6]
  split = corpus.splits['train']
  assert split.texts[0].startswith('Title ') and ' Some description of ' in split.texts[0]
  ids = data.class_ids(split)
  rocket = split.tfidf[:, corpus.vocab.index('rocket')].toarray().ravel() > 0
  np.testing.assert_array_equal(rocket, ids == 2)
  assert corpus.token_vocab.tokenizer == 'regex' and corpus.has_tokens
  header = write(tmp_path / 'named.csv', ['label,title,description'] + rows)
  named = data.load_corpus(config(name='csv', path=header, text_column='title+description',
                                  label_column='label', label_offset=1, min_df=1, valid_fraction=0.2,
                                  test_fraction=0.2))
  assert corpus_lib.splits_equal(named.splits['test'], corpus.splits['test'])


def test_csv_errors_and_empty_texts(tmp_path, caplog):
  path = write(tmp_path / 'docs.csv', ['title,body,cls', 'a,alpha words,x', 'b,beta words,y'])
  with pytest.raises(ValueError, match=r"no column 'text'.*columns are \['title', 'body', 'cls'\]"):
    data.load_corpus(config(name='csv', path=path, label_column='cls'))
  with pytest.raises(ValueError, match=r"no column 'label'"):
    data.load_corpus(config(name='csv', path=path, text_column='body'))
  with pytest.raises(ValueError, match=r"line 2: label column 'cls' holds 'x', not an integer"):
    data.load_corpus(config(name='csv', path=path, text_column='body', label_column='cls', label_offset=1))
  with pytest.raises(ValueError, match=r"line 2: .*'x', not an integer"):
    data.load_corpus(config(name='csv', path=path, text_column='body', label_column='cls',
                            integer_labels=True))
  with pytest.raises(ValueError, match='without a header'):
    data.load_corpus(config(name='csv', path=path, csv_header=False, text_column='body'))
  empty = write(tmp_path / 'empty.csv', ['text,label'] + ['"  ",a'] * 5 + [',b'])
  with pytest.raises(ValueError) as error:
    data.load_corpus(config(name='csv', path=empty))
  message = str(error.value)
  assert 'no document has any text' in message and 'all 6 rows' in message and 'batch' not in message
  some = write(tmp_path / 'some.csv', ['text,label'] + ['" ",a'] * 3 + [f'word{i} common,b' for i in range(10)])
  with caplog.at_level(logging.WARNING):
    corpus = data.load_corpus(config(name='csv', path=some, min_df=1, max_df=1.0))
  assert sum(sizes(corpus)) == 10 and corpus.label_names == ['b']
  assert any('dropped 3 of 13 rows' in r.getMessage() for r in caplog.records)
  assert sorted(np.concatenate([corpus.splits[s].doc_ids for s in SPLITS])) == list(range(3, 13))


@needs('text/ag_news/test.csv')
def test_real_ag_news_csv():
  corpus = data.load_corpus(config(name='csv', path=str(DATA_DIR / 'text/ag_news/test.csv'), csv_header=False,
                                   text_column='1+2', label_column='0', label_offset=1,
                                   max_docs_per_split=300))
  assert corpus.label_names == ['0', '1', '2', '3'] and corpus.has_tokens
  assert all(290 <= n <= 300 for n in sizes(corpus))  # 6080 / 760 / 760 before the limit.
  assert set(data.class_ids(corpus.splits['train'])) == {0, 1, 2, 3}


def test_folder_carries_tokens_and_texts(tmp_path):
  for label, word in (('sports', 'goal'), ('space', 'orbit')):
    (tmp_path / label).mkdir()
    for i in range(5):
      (tmp_path / label / f'{i}.txt').write_text(f'{word} {word} text {i}')
  corpus = data.load_corpus(config(name='folder', path=str(tmp_path), min_df=1, valid_fraction=0.2,
                                   test_fraction=0.2))
  train = corpus.splits['train']
  assert corpus.has_tokens and all(t.split()[0] in ('goal', 'orbit') for t in train.texts)
  assert corpus.token_vocab.decode(train.tokens.row(0)) == train.texts[0]


# ------------------------------------------------------------------------------------------------ tfds catalog
def test_local_tfds_ag_news_subset(tmp_path):
  topics = fake_tfds.TOPICS
  catalog = str(tmp_path / 'catalog')
  fake_tfds.build_ag_news_subset(catalog, num_train=40, num_test=12)
  cfg = config(name='tfds:ag_news_subset', catalog_dir=catalog, text_column='title+description', min_df=1,
               use_tfds=True, tfds_dir=str(tmp_path / 'tfds'))
  corpus = data.load_corpus(cfg)
  assert corpus.label_names == ['World', 'Sports', 'Business', 'Sci/Tech'] and sizes(corpus) == [36, 4, 12]
  train = corpus.splits['train']
  ids = data.class_ids(train)
  for text, class_id in zip(train.texts, ids):
    assert text.startswith(topics[class_id].upper() + ' headline') and f'about {topics[class_id]}' in text
  assert corpus.has_tokens and corpus.token_vocab.tokenizer == 'regex'
  assert corpus.source.startswith('tfds:ag_news_subset in ')
  cfg.use_tfds = False
  direct = data.load_corpus(cfg)
  for name in SPLITS:
    assert corpus_lib.splits_equal(direct.splits[name], corpus.splits[name]), name
  cfg.text_column = 'title+body'
  with pytest.raises(ValueError, match=r"no features \['body'\]"):
    data.load_corpus(cfg)


# ------------------------------------------------------------------------------------------------ labels
def test_class_ids_and_their_errors():
  corpus = small_synthetic()
  ids = data.class_ids(corpus.splits['train'])
  assert ids.dtype == np.int32
  np.testing.assert_array_equal(ids, corpus.splits['train'].labels.argmax(1))
  multi = small_synthetic(multi_label_prob=0.5)
  with pytest.raises(ValueError, match="corpus 'synthetic' is multi-label"):
    data.class_ids(multi.splits['train'], name='synthetic')
  unlabelled = corpus_lib.Split(corpus.splits['train'].tfidf, np.zeros((60, 0), bool))
  with pytest.raises(ValueError, match=r'has none \(num_labels == 0\)'):
    data.class_ids(unlabelled, name='ptb')
  partly = corpus.splits['train'].labels.copy()
  partly[4] = False
  assert data.class_ids(corpus_lib.Split(corpus.splits['train'].tfidf, partly))[4] == -1


def test_label_subsets():
  corpus = small_synthetic()
  train = corpus.splits['train']
  subsets = data.label_subsets(train, 10, seeds=3, seed=7)
  assert len(subsets) == 3 and all(s.size == 10 and (np.diff(s) > 0).all() for s in subsets)
  for i, rows in enumerate(subsets):  # Brute-force twin of the documented draw.
    np.testing.assert_array_equal(rows, np.sort(np.random.default_rng([7, i]).choice(60, 10, replace=False)))
  assert not np.array_equal(subsets[0], subsets[1])
  assert all(np.array_equal(a, b) for a, b in zip(data.label_subsets(train, '10', 3, seed=7), subsets))
  everything = data.label_subsets(train, 'all', seeds=2)
  assert all(np.array_equal(rows, np.arange(60)) for rows in everything)
  partly = train.labels.copy()
  partly[:20] = False
  pool = corpus_lib.Split(train.tfidf, partly)
  assert data.label_subsets(pool, 40, 1)[0].tolist() == list(range(20, 60))
  with pytest.raises(ValueError, match="exceeds the pool of 40 labelled training documents of corpus 'demo'"):
    data.label_subsets(pool, 41, 1, name='demo')
  for bad in (0, -3, 'some', True):
    with pytest.raises(ValueError, match='labels must be'):
      data.label_subsets(train, bad, 1)
  cfg = data.default_data_config()
  assert cfg.labels == 'all' and cfg.label_seeds == 5
  cfg.labels = 100  # The field takes both an int and 'all'.
  assert cfg.labels == 100
