"""Predictive hashing: the thread-pairs builder on a small tarball of posts (and on the real one when present),
the user CSV reader, the predictive AMMI loss against float64 NumPy enumeration, and every method end to end
on the tiny synthetic pair configuration."""

import importlib.util
import io
import itertools
import json
import os
import pathlib
import tarfile

import jax
import numpy as np
import pytest

from dtr import train
from dtr.evaluate import matching
from dtr.data import flat_rows, pairs
from dtr.methods import predictive

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = pathlib.Path(os.environ.get('DTR_DATA_DIR', REPO.parent / 'shared' / 'data'))


def predictive_config(arg):
  spec = importlib.util.spec_from_file_location('predictive_config', REPO / 'configs' / 'predictive.py')
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


# ------------------------------------------------------------------------------------------------ pairs builder
def _post(subject, body, sender='someone@example.com'):
  return f'From: {sender}\nSubject: {subject}\nOrganization: Example\nLines: 3\n\n{body}\n'


# (path in the tarball, subject, body); each thread's bodies carry its marker word (alpha, bravo, ...).
POSTS = [
    ('20news-bydate-train/sci.space/100', 'Shuttle launch',
     'The alpha shuttle launch slipped again because of weather over the cape.'),
    ('20news-bydate-train/sci.space/101', 'Re: Shuttle launch',
     'In article <1@x>, bob writes:\n> The shuttle launch slipped again.\nalpha delays are normal for '
     'winter launches, the booster needs warm seals.'),
    ('20news-bydate-test/sci.space/200', 'RE: re:  shuttle   LAUNCH ',
     'alpha third post of the thread, left without a partner because the thread is odd.'),
    ('20news-bydate-train/rec.autos/10', 'Engine noise',
     'My bravo engine makes a ticking noise when cold, any idea what causes it?'),
    ('20news-bydate-train/rec.autos/11', 'Re: Engine noise',
     'In article <2@y>, al writes:\n> My engine makes a ticking noise\n> when cold.\n'),  # empty once cleaned
    ('20news-bydate-train/rec.autos/12', 'Re: Re: engine noise',
     'bravo lifters often tick until the oil pressure comes up, nothing to worry about.'),
    ('20news-bydate-test/rec.autos/300', 'Re: engine noise',
     'bravo lifters often tick until the oil pressure comes up, nothing to worry about.'),  # a cross-post
    ('20news-bydate-train/comp.graphics/5', 'Looking for a ray tracer',
     'charlie is a single post whose thread has no reply at all in the corpus.'),
    ('20news-bydate-train/misc.forsale/7', 'Bike for sale', 'delta road bike for sale, barely used, good tyres.'),
    ('20news-bydate-train/misc.forsale/8', 'Re: Bike for sale', 'delta is the frame size fifty six or smaller?'),
    ('20news-bydate-train/misc.forsale/9', 're: bike for sale', 'delta it is a fifty four, fits riders to six foot.'),
    ('20news-bydate-test/misc.forsale/20', 'Re: Bike for sale', 'delta would you ship it to canada for a fee?'),
    ('20news-bydate-train/misc.forsale/30', 'Re:', 'echo a post whose subject is empty once normalised here.'),
]


def _write_tarball(path, posts):
  with tarfile.open(path, 'w:xz') as tar:
    for name, subject, body in posts:
      data = _post(subject, body).encode('latin-1')
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


def test_normalise_subject():
  assert pairs.normalise_subject(' Re: RE:re :  Engine   Noise ') == 'engine noise'
  assert pairs.normalise_subject('Re:') == ''
  assert pairs.normalise_subject('Prefer Renault') == 'prefer renault'


def test_pairs_builder_follows_the_thread_rules(tmp_path):
  tar_path = tmp_path / '20news-bydate.tar.xz'
  _write_tarball(tar_path, POSTS)
  built = pairs.read_20news_pairs(str(tar_path))
  markers = [next(w for w in ('alpha', 'bravo', 'charlie', 'delta', 'echo') if w in x) for x in built.x]
  # alpha: 3 posts -> 1 pair; bravo: the empty post and the cross-post drop out -> 1 pair; charlie: alone;
  # delta: 4 posts -> 2 pairs; echo: no subject.
  assert sorted(markers) == ['alpha', 'bravo', 'delta', 'delta']
  texts = built.x + built.y
  assert len(set(texts)) == len(texts)  # every post in at most one pair
  for x, y, marker, group in zip(built.x, built.y, markers, built.groups):
    assert marker in y and x != y  # both texts of one thread
    assert [g for g, m in zip(built.groups, markers) if m == marker] == [group] * markers.count(marker)
    for text in (x, y):
      assert not any(line.lstrip().startswith('>') for line in text.split('\n'))
      assert 'Subject:' not in text and 'writes:' not in text
  # Pairs are consecutive posts in (folder, group, number) order: the first post is X, the reply Y.
  first = markers.index('alpha')
  assert 'weather' in built.x[first] and 'seals' in built.y[first]
  delta = [i for i, m in enumerate(markers) if m == 'delta']
  assert 'barely used' in built.x[delta[0]] and 'canada' in built.y[delta[1]]


def test_split_by_group_keeps_groups_whole_and_is_seeded():
  groups = np.repeat(np.arange(300), np.random.default_rng(0).integers(1, 5, 300))
  rows = pairs.split_by_group(groups, 0.1, 0.2, seed=3)
  assert sorted(np.concatenate(list(rows.values()))) == list(range(len(groups)))
  seen = [set(groups[r]) for r in rows.values()]
  assert all(not (a & b) for a, b in itertools.combinations(seen, 2))
  assert 0.2 <= len(rows['test']) / len(groups) < 0.22 and 0.1 <= len(rows['valid']) / len(groups) < 0.12
  again = pairs.split_by_group(groups, 0.1, 0.2, seed=3)
  assert all(np.array_equal(rows[k], again[k]) for k in rows)


@pytest.mark.skipif(not (DATA_DIR / 'raw' / pairs.RAW_20NEWS).is_file(), reason='no real 20news tarball')
def test_real_20news_pairs_about_6000_with_disjoint_threads():
  cfg = pairs.default_pairs_config()
  cfg.data_dir = str(DATA_DIR)
  corpus = pairs.load_pair_corpus(cfg)
  sizes = {name: s.num_pairs for name, s in corpus.splits.items()}
  assert 5500 <= sum(sizes.values()) <= 6500, sizes
  assert 500 <= sizes['valid'] <= 700 and 500 <= sizes['test'] <= 700, sizes
  groups = [set(s.groups) for s in corpus.splits.values()]
  assert all(not (a & b) for a, b in itertools.combinations(groups, 2))
  assert len(corpus.vocab) == 10000
  for split in corpus.splits.values():
    np.testing.assert_allclose(np.sqrt(split.x.tfidf.multiply(split.x.tfidf).sum(1)), 1, rtol=1e-5)


def test_pairs_csv_reader_and_its_errors(tmp_path):
  path = tmp_path / 'pairs.csv'
  path.write_text('question,answer,topic\nhow do I fix my bike,tighten the chain,bikes\n'
                  'best pizza in town,try the corner place,food\nbike lights,use rechargeable ones,bikes\n')
  got = pairs.read_pairs_csv(str(path), 'question', 'answer', 'topic')
  assert got.x[0] == 'how do I fix my bike' and got.y[2] == 'use rechargeable ones'
  assert got.groups.tolist() == [0, 1, 0]
  assert pairs.read_pairs_csv(str(path), 'question', 'answer').groups.tolist() == [0, 1, 2]
  with pytest.raises(ValueError, match=r"pairs.csv: no column 'x'.*x_column"):
    pairs.read_pairs_csv(str(path))
  with pytest.raises(FileNotFoundError, match='missing.csv'):
    pairs.read_pairs_csv(str(tmp_path / 'missing.csv'))
  path.write_text('x,y\nfirst text,second text\n ,lonely answer\n')
  with pytest.raises(ValueError, match=r'empty .*data rows \[2\]'):
    pairs.read_pairs_csv(str(path))
  # Through load_pair_corpus: split by the group column, featurised over one vocabulary.
  words = ['bike', 'chain', 'pizza', 'cheese', 'rain', 'cloud', 'chess', 'opening']
  rows = [f'{words[i % 8]} {words[(i + 1) % 8]} story {i},{words[i % 8]} reply {i},topic{i % 10}' for i in range(60)]
  path.write_text('x,y,topic\n' + '\n'.join(rows) + '\n')
  cfg = pairs.default_pairs_config()
  cfg.update(source='csv', path=str(path), group_column='topic', min_df=1)
  corpus = pairs.load_pair_corpus(cfg)
  assert sum(s.num_pairs for s in corpus.splits.values()) == 60 and corpus.name == 'pairs_csv:pairs'
  assert all(not (set(a.groups) & set(b.groups)) for a, b in itertools.combinations(corpus.splits.values(), 2))


def test_missing_tarball_falls_back_to_synthetic_pairs_loudly(tmp_path, capsys):
  cfg = pairs.default_pairs_config()
  cfg.data_dir = str(tmp_path)
  cfg.synthetic.update(num_train=40, num_valid=10, num_test=10, vocab_size=50)
  corpus = pairs.load_pair_corpus(cfg)
  assert corpus.synthetic and corpus.splits['test'].num_pairs == 10
  assert 'NO REAL PAIR DATA' in capsys.readouterr().err
  cfg.allow_synthetic = False
  with pytest.raises(FileNotFoundError, match='20news-bydate.tar.xz'):
    pairs.load_pair_corpus(cfg)


# ------------------------------------------------------------------------------------------------ loss
def _chain_probs(logits):
  """float64 p(z) for all z in {0,1}^m of a binary Markov chain [m, 2^o] (column = previous bits, newest
  least significant; bits before position 0 are 0)."""
  m, num_contexts = logits.shape
  order = num_contexts.bit_length() - 1
  codes = np.array(list(itertools.product([0, 1], repeat=m)))
  probs = np.ones(len(codes))
  for n, z in enumerate(codes):
    for i in range(m):
      context = sum(int(z[i - 1 - k]) << k for k in range(order) if i - 1 - k >= 0)
      p_one = 1.0 / (1.0 + np.exp(-logits[i, context]))
      probs[n] *= p_one if z[i] else 1.0 - p_one
  return probs


def _pair_batch(rng, b, v):
  import scipy.sparse as sp
  out = {}
  for side in ('x', 'y'):
    csr = sp.random(b, v, density=0.4, format='csr', random_state=rng, dtype=np.float32)
    ids, vals, seg = flat_rows(csr, np.arange(b)[None])
    out[side] = {'ids': ids, 'vals': vals, 'seg': seg, 'mask': np.ones((1, b), np.float32)}
  return out


@pytest.mark.parametrize('o,h,r', [(0, 0, 3), (0, 1, 2), (1, 2, 1)])
def test_predictive_ammi_loss_matches_enumeration(o, h, r):
  m, v, b, beta = 4, 10, 3, 1.7
  mc = predictive.default_model_config()
  mc.update(bits=m, encoder_order=o, x_encoder_order=h, prior_order=r, prior_steps=0, entropy_weight=beta,
            init_scale=1.0, prior_raw=True)
  method = predictive.PredictiveAMMI(mc, vocab_size=v)
  batch = _pair_batch(np.random.default_rng(0), b, v)
  state = method.init(jax.random.key(2), batch)
  _, metrics = jax.jit(method.train_step)(state, batch)  # jitted: op by op, the scans take seconds
  params = state['params']
  p = [_chain_probs(l) for l in np.asarray(method.encoder_logits(params['encoder'], batch['y']), np.float64)]
  qx = [_chain_probs(l) for l in np.asarray(method.x_encoder_logits(params['x_encoder'], batch['x']), np.float64)]
  q_theta = _chain_probs(np.asarray(method.prior_logits(params['prior']), np.float64))
  prediction = np.mean([-np.sum(p_b * np.log(q_b)) for p_b, q_b in zip(p, qx)])
  code_entropy = np.mean([-np.sum(p_b * np.log(q_theta)) for p_b in p])
  np.testing.assert_allclose(metrics['prediction_cross_entropy'], prediction, rtol=1e-5)
  np.testing.assert_allclose(metrics['code_entropy'], code_entropy, rtol=1e-5)
  np.testing.assert_allclose(metrics['loss'], prediction - beta * code_entropy, rtol=1e-5)


def test_x_encoder_order_below_encoder_order_raises():
  mc = predictive.default_model_config()
  mc.update(encoder_order=1, x_encoder_order=0)
  with pytest.raises(ValueError, match=r'x_encoder_order \(h=0\) must be >= model.encoder_order \(o=1\)'):
    predictive.PredictiveAMMI(mc, vocab_size=10)


def test_views_are_refused_by_predictive_ammi():
  mc = predictive.default_model_config()
  mc.update(view_dropout=0.5)
  with pytest.raises(ValueError, match='view_dropout is not supported by predictive AMMI'):
    predictive.PredictiveAMMI(mc, vocab_size=10)


def test_matching_accuracy_by_hand():
  y = np.array([[0, 0, 0], [1, 1, 1], [1, 1, 0], [0, 0, 1]])
  x = np.array([[0, 0, 0], [1, 1, 0], [1, 1, 0], [1, 1, 1]])  # X_1 sits on Y_2, X_3 on Y_1
  # Nearest Ys (distance, then index): X_0 -> 0, 3; X_1 -> 2, 1; X_2 -> 2, 1; X_3 -> 1, 2.
  assert matching.matching_accuracy(x, y, ks=(2, 1)) == {2: 0.75, 1: 0.5}


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize('method', ['ammi', 'bmsh', 'dvq'])
def test_tiny_training_lowers_the_loss_and_writes_matching_accuracy(method, tmp_path):
  config = predictive_config(f'method={method},tiny')
  config.num_epochs = 3
  results = train.train_and_evaluate(config, str(tmp_path))
  losses = results['train_loss_history']
  assert len(losses) == 3 and np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  on_disk = json.load(open(tmp_path / 'results.json'))
  for key in ('test/matching@10', 'test/matching@5', 'valid/matching@10'):
    assert 0 <= on_disk[key] <= 1 and on_disk[key] == pytest.approx(results[key])
  if method == 'ammi':
    assert results['test/matching@10'] > 2 * results['test/chance@10'], results
    # The saved codes give the reported number.
    from dtr.evaluate import retrieval
    codes = [retrieval.unpack_bits(np.load(tmp_path / 'codes' / f'test_{s}_codes.npy'), results['bits'])
             for s in 'xy']
    assert matching.matching_accuracy(*codes, ks=(10,))[10] == results['test/matching@10']
    # A second call with one more epoch resumes from the checkpoint instead of starting over.
    config.num_epochs = 4
    resumed = train.train_and_evaluate(config, str(tmp_path))
    assert resumed['epochs_run'] == 4 and resumed['train_loss_history'][:3] == losses
