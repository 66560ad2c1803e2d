"""The sentence-code analyses (`dtr.evaluate.analysis.bits`) against direct loops, on tiny models and workdirs."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from dtr import config_utils, train
from dtr import input_pipeline as ip
from dtr.data import Split
from dtr.data.corpus import Tokens
from dtr.evaluate import sparsity
from dtr.evaluate.analysis import bits
from dtr.methods import sentence_ae, sparse_vae
from dtr.methods.base import DataInfo

V = 14
INFO = DataInfo(token_vocab_size=V, max_len=6)


def tiny_split(num=5, seed=0, classes=2):
  rng = np.random.default_rng(seed)
  lengths = [(3, 1, 6, 4, 2, 5, 3)[i % 7] for i in range(num)]
  sequences = [rng.integers(4, V, n).tolist() for n in lengths]
  labels = np.zeros((num, classes), bool)
  labels[np.arange(num), np.arange(num) % classes] = True
  return Split(tfidf=sp.csr_matrix((num, 3), dtype=np.float32), labels=labels,
               tokens=Tokens.from_lists(sequences))


def tiny_method(variant='binary'):
  mc = sentence_ae.default_model_config('sentence_ae', variant)
  mc.update(embed_size=8, hidden_size=12, latent_size=5, dropout=0.0)
  method = sentence_ae.SentenceAE(mc, 0, INFO)
  batch = {'tokens': np.zeros((2, 8), np.int32), 'lengths': np.ones(2, np.int32), 'mask': np.ones(2, np.float32)}
  return method, method.init(jax.random.key(1), batch)['params']


def tiny_sparse(name):
  """(method, initial params) of a tiny sparse VAE ('hsvae' or 'gauss_vae') with d = 4."""
  mc = sparse_vae.default_model_config(name)
  mc.update(embed_size=8, hidden_size=12, latent_size=4)
  method = (sparse_vae.HSVAE if name == 'hsvae' else sparse_vae.GaussVAE)(mc, 0, INFO)
  batch = {'tokens': np.zeros((2, 8), np.int32), 'lengths': np.ones(2, np.int32), 'mask': np.ones(2, np.float32)}
  return method, method.init(jax.random.key(0), batch)['params']


def one_sentence(split, i):
  """Sentence i of a split as a batch of one."""
  words = split.tokens.row(i)
  one = {'tokens': np.zeros((1, 8), np.int32), 'lengths': np.array([len(words)], np.int32),
         'mask': np.ones(1, np.float32)}
  one['tokens'][0, :len(words)] = words
  return one


def direct_spoiling(method, params, split, binary):
  """Perplexities with every dimension spoiled, one sentence and one dimension at a time."""
  totals, base_total, tokens = np.zeros(method.code_length), 0.0, 0.0
  for i in range(split.num_docs):
    batch = one_sentence(split, i)
    code = np.asarray(method.encode(params, batch), np.float32)[0]
    base_total += float(method._nll(params, jnp.asarray(code[None]), batch)[0])
    for j in range(len(code)):
      spoiled = code.copy()
      spoiled[j] = 1 - spoiled[j] if binary else -spoiled[j]
      totals[j] += float(method._nll(params, jnp.asarray(spoiled[None]), batch)[0])
    tokens += int(batch['lengths'][0]) + 1
  return np.exp(base_total / tokens), np.exp(totals / tokens)


@pytest.mark.parametrize('variant', ['binary', 'gaussian_vae'])
def test_bit_spoiling_matches_a_direct_loop(variant):
  method, params = tiny_method(variant)
  split = tiny_split()
  result = bits.bit_spoiling(method, params, split, batch_size=4)  # 2 batches, the last one padded
  base, perplexity = direct_spoiling(method, params, split, binary=variant == 'binary')
  assert result['base_perplexity'] == pytest.approx(base, rel=1e-5)
  np.testing.assert_allclose(result['perplexity'], perplexity, rtol=1e-5)
  np.testing.assert_allclose(result['increase'], perplexity - base, rtol=1e-4, atol=1e-5)
  assert list(result['order']) == list(np.argsort(-(perplexity - base), kind='stable'))
  assert result['tokens'] == sum(len(split.tokens.row(i)) + 1 for i in range(split.num_docs))


def test_hamming_path_ends_at_both_codes_one_flip_a_step():
  rng = np.random.default_rng(0)
  a, b = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
  path = bits.hamming_path(a, b, seed=3)
  distance = int(np.sum(a != b))
  assert path.shape == (distance + 1, 40) and path.dtype == np.int8
  np.testing.assert_array_equal(path[0], a)
  np.testing.assert_array_equal(path[-1], b)
  np.testing.assert_array_equal(np.sum(np.abs(np.diff(path, axis=0)), axis=1), 1)  # one bit per step
  assert len({tuple(p) for p in path}) == distance + 1  # never back: a shortest path
  assert not np.array_equal(path, bits.hamming_path(a, b, seed=4))  # the order is random
  np.testing.assert_array_equal(bits.hamming_path(a, a), a[None])
  with pytest.raises(ValueError, match='0/1'):
    bits.hamming_path(np.array([0, 2]), np.array([1, 0]))


def test_bit_statistics():
  codes = np.array([[1, 0, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], np.int8)
  np.testing.assert_allclose(bits.bit_means(codes), [1.0, 0.5, 0.5])
  covariance = bits.bit_covariance(codes)
  np.testing.assert_allclose(covariance, np.cov(codes.T.astype(float)))
  assert covariance[0, 0] == 0  # a constant bit carries nothing


def test_gamma_per_class_is_the_class_mean_of_beta_means():
  method, params = tiny_sparse('hsvae')
  split = tiny_split(num=7, classes=3)
  gamma, counts = bits.gamma_per_class(method, params, split, batch_size=4)
  np.testing.assert_array_equal(counts, [3, 2, 2])
  rows = []
  for i in range(split.num_docs):
    _, _, a_raw, b_raw, _ = method._heads(params, one_sentence(split, i))
    shift_a, shift_b = (np.log(np.expm1(v)) for v in (method.config.prior_alpha, method.config.prior_beta))
    a, b = jax.nn.softplus(a_raw + shift_a) + 1e-5, jax.nn.softplus(b_raw + shift_b) + 1e-5  # beta_init 'prior'
    rows.append(np.asarray(a / (a + b))[0])
  rows = np.asarray(rows)
  for k in range(3):
    np.testing.assert_allclose(gamma[k], rows[np.arange(7) % 3 == k].mean(0), rtol=1e-5)


@pytest.fixture(scope='module')
def binary_workdir(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('bae'))
  config = config_utils.load_config_module('sentence_ae').get_config('method=binary_ae,tiny')
  config.num_epochs = 1
  train.train_and_evaluate(config, workdir)
  return workdir


def test_analyse_a_binary_workdir(binary_workdir, tmp_path):
  summary = bits.analyse(binary_workdir, str(tmp_path), max_sentences=20, pair=(0, 3), seed=1, batch_size=16)
  for name in ('bit_spoiling.png', 'bit_means.png', 'bit_covariance.png', 'interpolation.txt', 'analysis.json'):
    assert (tmp_path / name).stat().st_size > 0, name
  model, corpus = bits.load(binary_workdir)
  rows = bits.sample_rows(corpus.splits['test'].num_docs, 20)
  assert summary['rows'] == rows.tolist()
  test = corpus.splits['test'].take(rows)
  _, batch = next(ip.eval_batches('tokens', test, 32))
  codes = np.asarray(model.method.encode(model.params, batch))[:20]
  path = summary['interpolation']['path']
  assert len(path) == int(np.sum(codes[0] != codes[3])) + 1
  assert [d for d, _ in path] == list(range(len(path)))
  assert path[0][1] == bits.decode_texts(model, codes[:1])[0]
  assert path[-1][1] == bits.decode_texts(model, codes[3:4])[0]
  assert len(summary['spoiling']['increase']) == model.method.num_bits
  np.testing.assert_allclose(summary['means'], codes.mean(0))
  on_disk = json.loads((tmp_path / 'analysis.json').read_text())
  assert on_disk['spoiling']['base_perplexity'] == pytest.approx(summary['spoiling']['base_perplexity'])


def test_sample_rows_draws_across_a_class_sorted_split():
  labels = np.repeat(np.arange(14), 1000)  # dbpedia14's test file: 1,000 sentences of each class in turn
  rows = bits.sample_rows(len(labels), 1000, seed=0)
  assert len(rows) == 1000 and len(set(rows.tolist())) == 1000
  assert np.all(np.diff(rows) > 0)  # file order kept
  counts = np.bincount(labels[rows], minlength=14)
  assert counts.min() > 40, counts  # every class drawn (about 71 each), not only the first
  np.testing.assert_array_equal(rows, bits.sample_rows(len(labels), 1000, seed=0))
  assert not np.array_equal(rows, bits.sample_rows(len(labels), 1000, seed=1))
  np.testing.assert_array_equal(bits.sample_rows(50, 0), np.arange(50))
  np.testing.assert_array_equal(bits.sample_rows(50, 80), np.arange(50))


def test_channel_information_against_a_monte_carlo_mutual_information():
  # x uniform over N sentences, mu_x ~ N(0, s^2) across them, z | x ~ N(mu_x, sigma^2) in each of 2 dimensions:
  # I(x; z) = E[log q(z | x) - log (1/N) sum_x' q(z | x')], estimated by sampling, against the formula.
  rng = np.random.default_rng(0)
  n, s, sigma = 400, np.array([1.5, 0.3]), np.array([0.8, 1.0])
  mu = rng.normal(size=(n, 2)) * s
  x = rng.integers(0, n, 4000)
  z = mu[x] + sigma * rng.normal(size=(4000, 2))
  log_q = lambda z_, mu_: -0.5 * ((z_ - mu_) / sigma) ** 2 - np.log(sigma)  # per dimension, constants cancel
  conditional = log_q(z, mu[x])
  marginal = np.log(np.mean(np.exp(log_q(z[:, None, :], mu[None, :, :])), axis=1))
  monte_carlo = np.mean(conditional - marginal, axis=0)
  got = bits.channel_information(mu, np.broadcast_to(sigma, mu.shape))
  np.testing.assert_allclose(got, 0.5 * np.log1p(mu.var(0) / sigma**2), rtol=1e-12)
  np.testing.assert_allclose(got, monte_carlo, rtol=0.1)  # Gaussian signal: the capacity is the information
  assert bits.channel_information(np.ones((5, 3)), np.full((5, 3), 0.1)).tolist() == [0.0, 0.0, 0.0]


def test_posterior_information_reads_every_sentence_once():
  method, params = tiny_sparse('gauss_vae')
  split = tiny_split(num=19)  # three batches of 8 over the 8 devices, the last one partly padding
  info = bits.posterior_information(method, params, split, batch_size=4)
  rows = []
  for i in range(split.num_docs):
    mu, raw_sigma = method._heads(params, one_sentence(split, i))
    rows.append((np.asarray(mu)[0], np.asarray(jax.nn.softplus(raw_sigma) + 1e-5)[0]))
  mu, sigma = (np.stack(r) for r in zip(*rows))
  assert info['sentences'] == 19
  np.testing.assert_allclose(info['per_dimension'], bits.channel_information(mu, sigma), rtol=1e-4, atol=1e-9)
  assert info['sigma_median'] == pytest.approx(float(np.median(sigma)), rel=1e-5)
  with pytest.raises(ValueError, match='no Gaussian posterior'):
    bits.posterior_information(tiny_method()[0], None, split)


def test_hoyer_report_and_the_cli_on_hsvae_workdirs(tmp_path):
  from dtr import analyze
  workdirs = []
  for alpha, beta in ((2.0, 8.0), (8.0, 2.0)):
    workdir = str(tmp_path / f'hs{alpha:g}')
    arg = f'method=hsvae,tiny,alpha={alpha},beta={beta}'
    config = config_utils.load_config_module('sentence_ae').get_config(arg)
    config.num_epochs = 1
    results = train.train_and_evaluate(config, workdir)
    report = bits.hoyer_report(workdir)
    # the same samples as the loop's evaluator: the standardised numbers are results.json's
    assert report['hoyer_sample'] == pytest.approx(results['test/hoyer_sample'], rel=1e-9)
    assert report['hoyer_mean'] == pytest.approx(results['test/hoyer_mean'], rel=1e-9)
    mean_codes = np.load(os.path.join(workdir, 'codes', 'test_codes.npy'))
    assert report['hoyer_mean_raw'] == pytest.approx(sparsity.average_hoyer(mean_codes, standardise=False),
                                                     rel=1e-6)
    assert (report['prior_alpha'], report['prior_beta']) == (alpha, beta)
    workdirs.append(workdir)
  analyze.main(['bits', f'--workdir={",".join(workdirs[::-1])}', f'--out={tmp_path / "out"}'])
  summary = json.loads((tmp_path / 'out' / 'analysis.json').read_text())
  assert [r['prior_alpha'] for r in summary['hoyer_against_prior']] == [2.0, 8.0]  # by E[gamma]
  assert (tmp_path / 'out' / 'hoyer_vs_prior.png').stat().st_size > 0
  one = bits.analyse(workdirs[0], str(tmp_path / 'one'), max_sentences=16, batch_size=16)
  assert 'interpolation' not in one and len(one['gamma_per_class'][0]) == 8
  assert len(one['information']['per_dimension']) == 8 and one['information']['nats'] >= 0
  assert (tmp_path / 'one' / 'gamma_per_class.png').exists()


def test_bits_analysis_refuses_a_language_model(tmp_path, monkeypatch):
  import types
  mc = sentence_ae.default_model_config('lm')
  mc.update(embed_size=8, hidden_size=12)
  model = types.SimpleNamespace(method=sentence_ae.LM(mc, 0, INFO), config=types.SimpleNamespace(model=mc))
  monkeypatch.setattr(bits, 'load', lambda workdir: (model, None))
  with pytest.raises(ValueError, match='no codes'):
    bits.analyse('lm_workdir', str(tmp_path / 'out'))
