"""The sentence autoencoders and the LM: training, scores against a hand loop, decoding, codes, bad inputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dtr.methods import sentence_ae
from dtr.methods.base import BOS_ID, EOS_ID, PAD_ID, DataInfo
from dtr.methods.sentence_ae import LM, SentenceAE, TextAutoencoder
from dtr.nn import softmax

V, B, L = 18, 4, 7
INFO = DataInfo(token_vocab_size=V, max_len=L - 1)
LENGTHS = np.array([5, 3, 6, 2], np.int32)


def make_batch(width=L, mask=(1, 1, 1, 1)):
  rng = np.random.default_rng(0)
  tokens = np.zeros((B, width), np.int32)
  for b, n in enumerate(LENGTHS):
    tokens[b, :n] = rng.integers(4, V, n)
  return {'tokens': tokens, 'lengths': LENGTHS, 'mask': np.asarray(mask, np.float32)}


def tiny(name='sentence_ae', variant='binary', **overrides):
  mc = sentence_ae.default_model_config(name, variant)
  small = {'embed_size': 8, 'hidden_size': 12, 'learning_rate': 1e-2}
  if name == 'sentence_ae':
    small.update(latent_size=6, kl_anneal_sentences=40)  # KL weight 1 within the test's 30 steps of 4 sentences
  mc.update({**small, **overrides})
  return mc


def build(name='sentence_ae', variant='binary', **overrides):
  return (LM if name == 'lm' else SentenceAE)(tiny(name, variant, **overrides), 0, INFO)


@functools.lru_cache(maxsize=None)
def trained(variant):
  """(method, state after 30 steps on one repeated batch, losses)."""
  if variant == 'lm':
    method = build('lm')
  else:
    method = build(variant=variant, dropout=0.2 if variant == 'binary' else 0.0)
  batch = make_batch()
  state = method.init(jax.random.key(0), batch)
  step = jax.jit(method.train_step)
  losses = []
  for i in range(30):
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics['loss']))
  return method, state, losses


@pytest.mark.parametrize('variant', ['binary', 'gumbel_vae_wd', 'gaussian_vae', 'lm'])
def test_loss_finite_and_decreasing(variant):
  _, _, losses = trained(variant)
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])


@functools.lru_cache(maxsize=None)
def stepper(method):
  """Jitted (initial state, one decoder step) of a method's network, for the hand loops."""
  initial = jax.jit(lambda params, z: method._apply(params, z, 1, method=TextAutoencoder.initial_state))
  step = jax.jit(lambda params, h, token, z: method._apply(params, h, token, z,
                                                           method=TextAutoencoder.decode_step))
  return initial, step


def _hand_nll(method, params, z_1xC, words):
  """-log p(words eos | z), one decoder step at a time."""
  initial, step = stepper(method)
  h = initial(params, z_1xC)
  previous, total = BOS_ID, 0.0
  for target in list(words) + [EOS_ID]:
    h, logits = step(params, h, jnp.array([previous]), z_1xC)
    total -= float(jax.nn.log_softmax(logits[0])[target])
    previous = target
  return total


@pytest.mark.parametrize('variant', ['binary', 'lm'])
def test_score_matches_a_hand_loop(variant):
  method, state, _ = trained(variant)
  params, batch = state['params'], make_batch(mask=(1, 1, 1, 0))
  scores = jax.jit(method.score)(params, batch, jax.random.key(0))
  np.testing.assert_array_equal(scores['tokens'], [6, 4, 7, 0])  # n + 1, eos included; 0 off the mask
  if variant == 'lm':
    assert set(scores) == {'nll', 'kl', 'tokens'}
    expected = [_hand_nll(method, params, None, batch['tokens'][b, :LENGTHS[b]]) for b in range(3)]
    np.testing.assert_allclose(scores['nll'][:3], expected, rtol=1e-4)
    return
  assert set(scores) == {'nll', 'nll_mean', 'nll_greedy', 'kl', 'tokens'}
  logits = method._heads(params, batch)[0]
  for key, z in (('nll_greedy', (logits > 0).astype(jnp.float32)), ('nll_mean', jax.nn.sigmoid(logits))):
    expected = [_hand_nll(method, params, z[b:b + 1], batch['tokens'][b, :LENGTHS[b]]) for b in range(3)]
    np.testing.assert_allclose(scores[key][:3], expected, rtol=1e-4)
    assert scores[key][3] == 0
  np.testing.assert_array_equal(scores['kl'], 0)  # no prior in the plain binary autoencoder


def test_greedy_decoding_equals_stepwise_argmax():
  method, state, _ = trained('binary')
  params = state['params']
  bits = method.encode(params, make_batch())
  decoded = np.asarray(method.decode(params, bits, max_len=8))
  assert decoded.shape == (B, 8)
  for b in range(B):
    z = jnp.asarray(bits[b:b + 1], jnp.float32)
    initial, step = stepper(method)
    h = initial(params, z)
    token, row = BOS_ID, []
    for _ in range(8):
      h, logits = step(params, h, jnp.array([token]), z)
      logits = np.array(logits[0])
      logits[[PAD_ID, BOS_ID]] = -np.inf
      token = int(np.argmax(logits))
      if token == EOS_ID:
        break
      row.append(token)
    np.testing.assert_array_equal(decoded[b], row + [PAD_ID] * (8 - len(row)))
  sampled = np.asarray(method.decode(params, bits, jax.random.key(3)))
  assert sampled.shape == (B, INFO.max_len + 1) and not np.isin(sampled, [BOS_ID, EOS_ID]).any()


def test_codes_features_and_padding_invariance():
  method, state, _ = trained('binary')
  params = state['params']
  assert (method.emits, method.num_bits, method.code_length, method.num_values) == ('bits', 6, 6, 2)
  narrow, wide = make_batch(L), make_batch(L + 5)
  encode = jax.jit(method.encode)
  features = jax.jit(method.features, static_argnums=2)
  bits = encode(params, narrow)
  assert bits.dtype == jnp.int8 and bits.shape == (B, 6) and set(np.unique(bits)) <= {0, 1}
  np.testing.assert_array_equal(encode(params, wide), bits)  # padding never changes a code
  probabilities = features(params, narrow, None)
  np.testing.assert_allclose(features(params, wide, None), probabilities, rtol=1e-6)
  np.testing.assert_array_equal(features(params, narrow, 'zeros_ones'), bits)
  np.testing.assert_allclose(jax.nn.sigmoid(features(params, narrow, 'logits')), probabilities, rtol=1e-6)
  sampled = encode(params, narrow, jax.random.key(0))
  assert sampled.dtype == jnp.int8 and sampled.shape == (B, 6)
  assert method.perplexities() == {
      'perplexity': ('nll', 'corpus'), 'perplexity_mean': ('nll_mean', 'corpus'),
      'perplexity_greedy': ('nll_greedy', 'corpus'), 'perplexity_per_sentence': ('nll', 'document'),
      'perplexity_mean_per_sentence': ('nll_mean', 'document'),
      'perplexity_greedy_per_sentence': ('nll_greedy', 'document')}


def test_dense_variants_and_the_lm():
  gaussian, state, _ = trained('gaussian_vae')
  assert gaussian.emits == 'dense' and set(gaussian.perplexities()) == {
      'perplexity', 'perplexity_mean', 'perplexity_per_sentence', 'perplexity_mean_per_sentence'}
  mu = gaussian.encode(state['params'], make_batch())
  assert mu.dtype == jnp.float32 and mu.shape == (B, 6)
  np.testing.assert_allclose(gaussian.features(state['params'], make_batch()), mu)
  assert build(variant='bottleneck').emits == 'dense'
  assert set(build(variant='bottleneck').perplexities()) == {'perplexity', 'perplexity_per_sentence'}
  lm, lm_state, _ = trained('lm')
  assert lm.emits is None and lm.perplexities() == {'perplexity': ('nll', 'corpus'),
                                                     'perplexity_per_sentence': ('nll', 'document')}
  assert lm.decode(lm_state['params'], batch_size=3).shape == (3, INFO.max_len + 1)


def test_kl_annealing_is_linear_from_kl_start():
  method = build(variant='gaussian_vae', kl_anneal_sentences=1000)
  weights = [float(method._kl_weight(jnp.float32(n))) for n in (0, 490, 5000)]
  np.testing.assert_allclose(weights, [0.01, 0.5, 1.0], rtol=1e-6)
  assert float(build(variant='gaussian_vae', kl_anneal_sentences=0)._kl_weight(jnp.float32(0))) == 1.0
  # kl_start and kl_anneal_sentences are population hyperparameters where a KL is annealed: a member steps as
  # its single run.
  assert 'kl_start' not in build(variant='binary').default_hparams()  # no KL
  assert 'kl_start' not in build(variant='gaussian_vae', kl_anneal_sentences=0).default_hparams()
  assert set(method.default_hparams()) - {'dropout'} == {'learning_rate', 'kl_start', 'kl_anneal_sentences'}
  batch, values = make_batch(), {**method.default_hparams(), 'kl_start': 0.3, 'kl_anneal_sentences': 7}
  single = build(variant='gaussian_vae', kl_anneal_sentences=7, kl_start=0.3)
  states = [single.init(jax.random.key(0), batch), method.init(jax.random.key(0), batch, values),
            method.init(jax.random.key(0), batch, method.default_hparams())]
  steps = [jax.jit(single.train_step)] + [jax.jit(method.train_step)] * 2
  for i in range(2):
    out = [step(state, batch, jax.random.key(i)) for step, state in zip(steps, states)]
    states, (single_loss, member_loss, default_loss) = [o[0] for o in out], [float(o[1]['loss']) for o in out]
    assert member_loss == pytest.approx(single_loss, rel=1e-5) and abs(member_loss - default_loss) > 1e-3


def test_variants_set_code_kl_and_word_dropout():
  mc = sentence_ae.default_model_config('sentence_ae', 'gumbel_vae_wd')
  assert (mc.code, mc.kl, mc.word_dropout, mc.latent_size, mc.hidden_size) == ('gumbel', True, 0.5, 50, 512)
  assert sentence_ae.default_model_config('sentence_ae', 'binary').word_dropout == 0.0
  with pytest.raises(ValueError, match='variant'):
    sentence_ae.default_model_config('sentence_ae', 'ternary')


@pytest.mark.parametrize('field,value', [
    ('latent_size', 0), ('embed_size', 0), ('hidden_size', -1), ('word_dropout', 1.0), ('word_dropout', -0.1),
    ('dropout', 1.0), ('temperature', 0.0), ('temperature', -1.0), ('code', 'ternary'), ('learning_rate', 0.0),
    ('kl_start', 2.0), ('kl_anneal_sentences', -1), ('clip', -1.0), ('probe_features', 'bits')])
def test_bad_settings_name_the_field(field, value):
  mc = tiny()
  mc[field] = value
  with pytest.raises(ValueError, match=f'model.{field}'):
    SentenceAE(mc, 0, INFO)


def test_bad_combinations_and_data():
  with pytest.raises(ValueError, match='model.kl'):
    SentenceAE(tiny(variant='bottleneck', kl=True), 0, INFO)
  with pytest.raises(ValueError, match='model.hidden_size'):
    LM(tiny('lm', hidden_size=0), 0, INFO)
  with pytest.raises(ValueError, match='token_vocab_size'):
    SentenceAE(tiny(), 50, DataInfo(vocab_size=50))


def test_per_sentence_perplexity_is_the_mean_of_sentence_perplexities():
  import types
  from dtr.evaluate import evaluators
  method, state, _ = trained('binary')
  scores = jax.jit(method.score)(state['params'], make_batch(), jax.random.key(0))
  nll, tokens = np.asarray(scores['nll_greedy'], np.float64), np.asarray(scores['tokens'], np.float64)
  out = types.SimpleNamespace(method=method, size=1,
                              scores=lambda split: {k: np.asarray(v)[None] for k, v in scores.items()})
  result = evaluators.Perplexity()(out, 'test')
  assert result['perplexity_greedy'][0] == pytest.approx(np.exp(nll.sum() / tokens.sum()), rel=1e-6)
  assert result['perplexity_greedy_per_sentence'][0] == pytest.approx(np.exp(np.mean(nll / tokens)), rel=1e-6)
  assert result['perplexity_greedy_per_sentence'][0] != pytest.approx(result['perplexity_greedy'][0], rel=1e-4)


def test_empty_sentence_is_eos_only_and_encodes_from_the_zero_state():
  method, state, _ = trained('binary')
  params = state['params']
  batch = {'tokens': np.zeros((2, L), np.int32), 'lengths': np.array([0, 0], np.int32),
           'mask': np.ones(2, np.float32)}
  batch['tokens'][1, :3] = [5, 6, 7]  # words past the length are never read
  scores = jax.jit(method.score)(params, batch, jax.random.key(0))
  np.testing.assert_array_equal(scores['tokens'], [1, 1])
  assert scores['nll_greedy'][0] == pytest.approx(float(scores['nll_greedy'][1]))
  bits = np.asarray(method.encode(params, batch))
  np.testing.assert_array_equal(bits[0], bits[1])
  expected = _hand_nll(method, params, jnp.asarray(bits[:1], jnp.float32), [])
  assert float(scores['nll_greedy'][0]) == pytest.approx(expected, rel=1e-4)


def test_check_data_rejects_ids_outside_the_vocabulary_and_padding():
  import types
  import scipy.sparse as sp
  from dtr.data import Split
  from dtr.data.corpus import Tokens
  method = build()

  def corpus(sequences):
    n = len(sequences)
    split = Split(tfidf=sp.csr_matrix((n, 1), dtype=np.float32), labels=np.zeros((n, 0), bool),
                  tokens=Tokens.from_lists(sequences))
    return types.SimpleNamespace(splits={'train': split})

  method.check_data(corpus([[4, 5], [1, 6]]))  # the unknown-word id 1 is a word like any other
  with pytest.raises(ValueError, match=f'token id {V} is outside'):
    method.check_data(corpus([[4, V]]))
  with pytest.raises(ValueError, match='padding id 0'):
    method.check_data(corpus([[4, 0, 5]]))


def test_unknown_and_too_long_sentences_through_a_workdir(tmp_path):
  """encode_texts: unknown words become the unknown-word id, a sentence longer than data.max_len keeps its
  first max_len words (the tokeniser's documented behaviour), an empty text gets the zero-state code."""
  from dtr import config_utils, encode, train
  from dtr.data.tokenize import Vocabulary
  config = config_utils.load_config_module('sentence_ae').get_config('method=binary_ae,tiny')
  config.num_epochs = 1
  train.train_and_evaluate(config, str(tmp_path))
  model = encode.load_model(str(tmp_path))
  # the synthetic corpus ignores data.max_len: the workdir's tokeniser with a limit of 6, as a text corpus saves it
  model.tokenizer = Vocabulary(model.tokenizer.words, tokenizer=model.tokenizer.tokenizer, max_len=6)
  words = model.tokenizer.words[:8]
  long_text = ' '.join(words)
  tokens = model.tokenizer.encode([long_text, 'qqqzzz ' + words[0], ''])
  assert tokens.lengths().tolist() == [6, 2, 0]
  assert tokens.row(1)[0] == 1  # UNK_ID
  codes = encode.encode_texts(model, [long_text, ' '.join(words[:6]), 'qqqzzz ' + words[0], ''])
  np.testing.assert_array_equal(codes[0], codes[1])  # cut to its first max_len words
  assert codes.shape == (4, model.method.num_bits)


@pytest.mark.parametrize('name', ['sentence_ae', 'lm'])
@pytest.mark.parametrize('pack,output_bias', [(0.75, False), (0.2, False), (1.0, True)])
def test_packed_output_layer_gives_the_full_layers_loss_and_gradients(name, pack, output_bias):
  """The 20 predicted positions of 4 x 12 through the packed path (any pack in (0, 1]; with a bias, folded
  into the kernel): the loss and every gradient equal the output layer applied at all B x L positions."""
  batch = make_batch(width=12)
  full = build(name, pack_targets=0.0, output_bias=output_bias)
  packed = build(name, pack_targets=pack, output_bias=output_bias)
  params = full.init(jax.random.key(0), batch)['params']
  if output_bias:  # not its initial 0
    params['decoder']['output']['bias'] = jax.random.normal(jax.random.key(4), (V,))

  def loss(method):
    return jax.value_and_grad(lambda p: method.loss(p, batch, jax.random.key(1), 1.0)[0])(params)

  (value_full, grads_full), (value_packed, grads_packed) = loss(full), loss(packed)
  np.testing.assert_allclose(value_packed, value_full, rtol=1e-5)
  for g_packed, g_full in zip(jax.tree.leaves(grads_packed), jax.tree.leaves(grads_full)):
    np.testing.assert_allclose(g_packed, g_full, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('name', ['sentence_ae', 'lm'])
@pytest.mark.parametrize('output_bias', [False, True])
def test_the_loss_passes_the_networks_own_output_layer(name, output_bias):
  """The loss gives the output layer as its parameters (`softmax.Affine`): it is the network's own output
  layer, without a bias (these models' default) and with one (`model.output_bias`, HSVAE's default)."""
  method = build(name, output_bias=output_bias)
  params = method.init(jax.random.key(0), make_batch(width=12))['params']
  output = dict(params['decoder']['output'])
  assert ('bias' in output) == output_bias
  if output_bias:
    output['bias'] = jax.random.normal(jax.random.key(3), output['bias'].shape)  # not its initial 0
  states = jax.random.normal(jax.random.key(2), (5, output['kernel'].shape[0]))
  params = {**params, 'decoder': {**params['decoder'], 'output': output}}
  np.testing.assert_allclose(softmax.Affine(**output)(states),
                             method._apply(params, states, method=TextAutoencoder.project), rtol=1e-6, atol=1e-6)


def test_pack_targets_outside_0_1_is_refused():
  with pytest.raises(ValueError, match='pack_targets'):
    build(pack_targets=1.5)
