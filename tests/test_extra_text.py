"""More unlabelled training text (`config.data.extra_train`, `dtr.data.extra`): the held-out repeat rule
against a brute-force twin, a user CSV with an extra file through loading, label budgets, the tfds cache and
a pretraining + probe run, the configs' argument, and the errors."""

import logging

import numpy as np
import pytest

from dtr import config_utils, train
from dtr import data
from dtr.data import corpus as corpus_lib
from dtr.data import extra
from tests.test_classification import csv_data, probe_steps, tiny_pretrain, write_ag_news_csv
from tests.test_text_data import DATA_DIR, needs

SPLITS = corpus_lib.SPLIT_NAMES


# ------------------------------------------------------------------------------------------------ the rule
def brute_force_repeats(extra_texts, held_out_texts, labelled_texts):
  """The module docstring's rule written out: every extra document against every held-out one."""
  markers = {'_unk', '<unk>', '[unk]', 'unk'}
  known = set()
  for text in labelled_texts:
    known.update(w for w in text.lower().split() if w not in markers)
  out = []
  for e in extra_texts:
    e_words = ['?' if w in markers or w not in known else w for w in e.lower().split()]
    hit = False
    for h in held_out_texts:
      h_words = ['?' if w in markers else w for w in h.lower().split()]
      if sum(w != '?' for w in h_words) < extra.MIN_OVERLAP or len(e_words) < len(h_words):
        continue
      if all(a == b or a == '?' or b == '?' for a, b in zip(h_words, e_words)):
        hit = True
    out.append(hit)
  return np.array(out)


def test_repeats_match_a_brute_force_twin():
  rng = np.random.default_rng(0)
  words = ['a', 'b', 'c', 'd', 'E', 'f', '_UNK', '<unk>', 'zz', 'yy']  # zz, yy: in no labelled text
  make = lambda n, lo, hi, w=words[:8]: [' '.join(rng.choice(w, rng.integers(lo, hi))) for _ in range(n)]
  held = make(60, 1, 8)
  train_texts = make(40, 3, 9)
  extras = make(300, 1, 12, words) + make(300, 1, 12, ['a', 'b', '_UNK', 'zz'])
  extras += [h + ' ' + ' '.join(rng.choice(words, 3)) for h in held[:40]]  # repeats, with unknown words too
  extras += [' '.join('zz' if w in ('_UNK', '<unk>') else w for w in h.split()) + ' x' for h in held[40:]]
  extras += [' '.join('_UNK' if rng.random() < 0.3 else w for w in h.split()) for h in held[:20]]
  labelled = train_texts + held
  got = extra.repeats(extras, held, labelled)
  want = brute_force_repeats(extras, held, labelled)
  np.testing.assert_array_equal(got, want)
  assert 50 < want.sum() < len(extras) - 300  # both outcomes occur


def test_repeats_by_hand():
  labelled = ['how do i fix my _UNK ?', 'what is the best car ?', 'who are you _UNK', 'why is the sky blue',
              'carburetor talk here, the worst']
  held = labelled[:4]
  extras = ['how do i fix my carburetor ? it leaks fuel',     # the held-out marker agrees with any word
            'HOW DO I FIX MY _unk ? help',                    # case and the marker itself
            'what is the <unk> car ? a question',             # the extra text's marker agrees with any word
            'what is the gearbox car ? a question',           # gearbox is in no labelled text: a marker
            'what is the worst car ? a question',             # worst is a known word (the last labelled text)
            'what is the best car',                           # shorter than the held-out document
            'who are you and why',                            # 3 words besides the marker (< 4)
            'so what is the best car ? a question',           # does not start with it
            'why is the _UNK blue today']                     # marker against a known word: a repeat
  np.testing.assert_array_equal(extra.repeats(extras, held, labelled),
                                [True, True, True, True, False, False, False, False, True])
  np.testing.assert_array_equal(extra.repeats(extras, held, labelled), brute_force_repeats(extras, held, labelled))
  assert not extra.repeats(extras, [], labelled).any()


# ------------------------------------------------------------------------------------------------ loading
def ag_news(tmp_path):
  return csv_data(write_ag_news_csv(tmp_path / 'train.csv'))


def test_extra_documents_join_the_training_split_unlabelled(tmp_path, caplog):
  cfg = data.default_data_config()
  cfg.update(ag_news(tmp_path))
  plain = data.load_corpus(cfg)
  test_text = plain.splits['test'].texts[0]
  lines = [f'gadget review number {i} of a phone' for i in range(30)] + ['', test_text + ' and more words']
  (tmp_path / 'more.txt').write_text('\n'.join(lines) + '\n')
  (tmp_path / 'again.txt').write_text('sports gadget night\n')
  cfg.extra_train = str(tmp_path / 'more.txt') + '+' + str(tmp_path / 'again.txt')
  with caplog.at_level(logging.WARNING):
    more = data.load_corpus(cfg)
  assert any('31 unlabelled training documents added' in r.getMessage() and '1 more dropped as repeats'
             in r.getMessage() for r in caplog.records)
  train_plain, train_more = plain.splits['train'], more.splits['train']
  n = train_plain.num_docs
  assert train_more.num_docs == n + 31  # 30 + 1 lines; the blank line skipped, the repeat of a test text dropped
  assert train_more.texts[:n] == train_plain.texts and train_more.texts[n] == 'gadget review number 0 of a phone'
  np.testing.assert_array_equal(train_more.labels[:n], train_plain.labels)
  assert not train_more.labels[n:].any()
  assert len(set(np.concatenate([more.splits[s].doc_ids for s in SPLITS]).tolist())) == sum(
      more.splits[s].num_docs for s in SPLITS)
  for name in ('valid', 'test'):
    assert more.splits[name].texts == plain.splits[name].texts
    np.testing.assert_array_equal(more.splits[name].labels, plain.splits[name].labels)
  assert 'gadget' in more.token_vocab.words and 'gadget' not in plain.token_vocab.words  # vocabularies see them
  for budget in ('all', 5):  # label budgets draw from the labelled rows only
    for a, b in zip(data.label_subsets(train_more, budget, 2), data.label_subsets(train_plain, budget, 2)):
      np.testing.assert_array_equal(a, b)
  assert (data.class_ids(train_more)[n:] == -1).all()
  assert 'unlabelled training text from' in more.source

  # Through the tfds cache: the same corpus, and a changed extra file is not read back from the cache.
  cfg.update(use_tfds=True, tfds_dir=str(tmp_path / 'tfds'))
  cached = data.load_corpus(cfg)
  assert all(corpus_lib.splits_equal(cached.splits[s], more.splits[s]) for s in SPLITS)
  (tmp_path / 'again.txt').write_text('sports gadget night\nanother line of text\n')
  assert data.load_corpus(cfg).splits['train'].num_docs == n + 32


def test_extra_train_errors(tmp_path):
  cfg = data.default_data_config()
  cfg.update(ag_news(tmp_path))
  cfg.extra_train = str(tmp_path / 'missing.txt')
  with pytest.raises(FileNotFoundError, match='missing.txt.*is not a file.*one document a line'):
    data.load_corpus(cfg)
  cfg.extra_train = '+'
  with pytest.raises(ValueError, match='names no file'):
    data.load_corpus(cfg)
  plain = data.load_corpus(dict(ag_news(tmp_path)))
  (tmp_path / 'same.txt').write_text('\n'.join(plain.splits['valid'].texts) + '\n')
  cfg.extra_train = str(tmp_path / 'same.txt')
  with pytest.raises(ValueError, match='every one of its .* documents repeats a valid or test document'):
    data.load_corpus(cfg)
  with pytest.raises(ValueError, match="'ng20' is not one"):
    data.load_corpus(dict(name='ng20', extra_train=str(tmp_path / 'same.txt')))
  assert 'extra_train' not in data.default_data_config()  # absent unless given: configs keep their digests
  assert data.load_corpus(dict(ag_news(tmp_path), extra_train='')).splits['train'].num_docs == (
      plain.splits['train'].num_docs)


def test_extra_train_without_a_data_folder_is_an_error_before_the_synthetic_fallback(monkeypatch, capsys):
  monkeypatch.delenv('DTR_DATA_DIR', raising=False)
  with pytest.raises(ValueError, match="no data folder is named to read 'yahoo10'.*set DTR_DATA_DIR"):
    data.load_corpus(dict(name='yahoo10', extra_train='more.txt'))
  assert 'SYNTHETIC' not in capsys.readouterr().err


@needs('text/yahoo10/valid.txt', 'lm/yahoo/val.txt')
def test_a_shared_set_takes_files_relative_to_the_data_folder():
  cfg = dict(name='yahoo10', data_dir=str(DATA_DIR), use_tfds=False, max_len=32, max_docs_per_split=300,
             extra_train='lm/yahoo/test.txt')
  corpus = data.load_corpus(cfg)
  train_split = corpus.splits['train']
  assert 300 + 9_000 < train_split.num_docs <= 300 + 10_000  # a share of the LM texts repeats yahoo10's
  assert train_split.labels[:300].any(axis=1).all() and not train_split.labels[300:].any()
  assert train_split.tokens.lengths().max() == 32


# ------------------------------------------------------------------------------------------------ a run
def test_pretraining_and_probes_with_extra_text(tmp_path):
  extra_path = tmp_path / 'more.txt'
  extra_path.write_text('\n'.join(f'a gadget story number {i} about phones and more news' for i in range(24)))
  config = tiny_pretrain('method=vq_vae,level=global', **ag_news(tmp_path))
  config.data.extra_train = str(extra_path)
  pretrain = str(tmp_path / 'pretrain')
  results = train.train_and_evaluate(config, pretrain)
  assert np.isfinite(results['test/perplexity'])
  for r in probe_steps(pretrain, tmp_path, labels='all').values():
    assert r['members_reported'] == 2 and 0 <= r['test/accuracy'] <= 100


def test_the_configs_take_extra_train():
  dvae = config_utils.load_config_module('discrete_vae')
  sentence = config_utils.load_config_module('sentence_ae')
  files = 'lm/yahoo/val.txt+lm/yahoo/test.txt'
  assert dvae.get_config(f'dataset=yahoo10,extra_train={files}').data.extra_train == files
  assert sentence.get_config(f'method=hsvae,dataset=dbpedia14,extra_train={files}').data.extra_train == files
  assert 'extra_train' not in dvae.get_config('dataset=yahoo10').data
  assert 'extra_train' not in sentence.get_config('method=hsvae').data
