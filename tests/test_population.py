"""Population training: P settings in one program give what P separate runs with those settings give."""

import functools
import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from dtr import members, methods, population
from dtr.methods import base

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config(arg):
  spec = importlib.util.spec_from_file_location('ammi_config', REPO / 'configs' / 'ammi.py')
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def test_member_settings_are_deterministic_and_in_range():
  config = load_config('tiny,population=6')
  method = methods.get_method(config.model, vocab_size=10)
  a = population.member_settings(config, method, 6)
  assert a == population.member_settings(config, method, 6)
  assert a[0]['learning_rate'] == pytest.approx(config.model.learning_rate)
  assert a[0]['seed'] == config.seed and [m['seed'] for m in a] == list(range(config.seed, config.seed + 6))
  for m in a[1:]:
    assert 0.001 <= m['learning_rate'] <= 0.05 and 1.5 <= m['entropy_weight'] <= 4.0
    assert m['init_scale'] in (0.05, 0.1, 0.5) and m['clip'] in (0, 1, 5, 10)
  config.population_search.unknown = 'uniform(0,1)'
  with pytest.raises(ValueError, match='unknown'):
    population.member_settings(config, method, 2)
  del config.population_search['unknown']
  config.population_search.view_dropout = 'uniform(0.5,0.9)'  # views are off in this config
  with pytest.raises(ValueError, match='model.view_dropout > 0'):
    population.member_settings(config, method, 2)



def tiny_sentences(method: str, seed: int, num_epochs: int, **model):
  """The tiny config of a sentence method with this seed, the data order of seed 0 (a population's) and
  `model` fields set."""
  from dtr import config_utils  # pylint: disable=g-import-not-at-top
  config = config_utils.load_config_module('sentence_ae').get_config(f'method={method},tiny')
  config.num_epochs, config.seed, config.data_seed = num_epochs, seed, 0
  config.model.update(model)
  return config


def test_a_method_without_hyperparameters_varies_seeds_only():
  """LSH trains nothing by a step size: a population of it varies seeds, and a search is refused."""
  from dtr import config_utils  # pylint: disable=g-import-not-at-top
  config = config_utils.load_config_module('hashing').get_config('method=lsh,tiny')
  method = methods.get_method(config.model, vocab_size=10)
  assert method.default_hparams() == {}
  assert [m['seed'] for m in population.member_settings(config, method, 3)] == [config.seed + i for i in range(3)]
  config.population_search.learning_rate = 'log_uniform(0.001,0.01)'
  with pytest.raises(ValueError, match='members differ by seed only'):
    population.member_settings(config, method, 2)
  with pytest.raises(ValueError, match="no population hyperparameters \\['learning_rate'\\]; it has none"):
    method.check_hparams({'learning_rate': 0.1})


_COMPARE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.test_population import load_config
from dtr import population, train
out = {}
for views in sys.argv[3].split(';'):
  config = load_config('tiny,population=3' + views)
  config.num_epochs = 3
  config.model.clip = 0.0
  config.population_search.clip = 'choice(0)'
  train.train_and_evaluate(config, sys.argv[2] + f'/pop{views}')
  res = json.load(open(sys.argv[2] + f'/pop{views}/population_results.json'))
  out[views] = []
  for i, member in enumerate(res['members']):
    single = load_config('tiny' + views)
    single.num_epochs, single.seed, single.data_seed = 3, member['seed'], config.seed  # members share an order
    single.model.update({k: member[k] for k in ('learning_rate', 'prior_learning_rate', 'entropy_weight', 'clip',
                                                 'init_scale', 'view_dropout') if k in member})
    r = train.train_and_evaluate(single, sys.argv[2] + f'/single{views}{i}')
    out[views].append({'population': member, 'single': r})
print('RESULT' + json.dumps(out))
"""
VIEWS = ('', ',views=0.7')


def _run_on_one_device(script: str, tmp_path, *args: str, env=None, timeout=None):
  """Runs `script` in a fresh process with one CPU device; returns the JSON it prints after 'RESULT'."""
  env = dict(os.environ if env is None else env, JAX_NUM_CPU_DEVICES='1')
  proc = subprocess.run([sys.executable, '-c', script, str(REPO), str(tmp_path), *args], env=env, cwd=REPO,
                        capture_output=True, text=True, check=True, timeout=timeout)
  return json.loads(proc.stdout.split('RESULT', 1)[1])


_INIT_512 = r"""
import json, sys
import jax, numpy as np
from dtr import members
from dtr.methods import sentence_ae
from dtr.methods.base import DataInfo
mc = sentence_ae.default_model_config('sentence_ae', 'binary')
mc.update(embed_size=8, hidden_size=512, latent_size=8)
method = sentence_ae.SentenceAE(mc, 0, DataInfo(token_vocab_size=16, max_len=6))
batch = {'tokens': np.full((2, 6), 5, np.int32), 'lengths': np.array([3, 5], np.int32),
         'mask': np.ones(2, np.float32)}
stack = members.init_states(method, [members.Member(seed=i, order_seed=0) for i in range(4)], batch)
one = members.init_states(method, [members.Member(seed=2, order_seed=0)], batch)
gaps = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a)[2] - np.asarray(b)[0]))), stack, one)
print('RESULT' + json.dumps({'max_gap': max(jax.tree.leaves(gaps)), 'members': int(stack['step'].shape[0])}))
"""


def test_members_of_a_512_unit_gru_initialise_on_the_cpu_each_as_its_single_run(tmp_path):
  """Four members of a model with 512-unit GRUs (six orthogonal recurrent kernels, member-batched QRs)
  initialise in one program, each member exactly as its single run. A vmapped initialiser deadlocked
  XLA:CPU's thread pool here on 2 cores (two batched LAPACK calls each waiting on the pool's other thread:
  `members._init_fn`); the child process's timeout turns such a hang into a failure."""
  try:
    res = _run_on_one_device(_INIT_512, tmp_path, timeout=120)
  except subprocess.TimeoutExpired:
    pytest.fail('initialising 4 members of a 512-unit GRU hung (XLA:CPU thread-pool deadlock)')
  assert res['members'] == 4 and res['max_gap'] == 0.0


@pytest.fixture(scope='module')
def separate_runs(tmp_path_factory) -> dict:
  """{views: [{'population': member, 'single': its single run}, ...]} for both VIEWS, from one child process
  at XLA's default optimisation level (float-precision agreement of two differently built programs: the
  `full_optimizations` fixture, for a child process)."""
  env = {k: v for k, v in os.environ.items() if k != 'JAX_DISABLE_MOST_OPTIMIZATIONS'}
  return _run_on_one_device(_COMPARE, tmp_path_factory.mktemp('compare'), ';'.join(VIEWS), env=env)


@pytest.mark.parametrize('views', VIEWS)
def test_population_equals_separate_runs(separate_runs, views):
  # One device, so that a single run and a member run the same computation (a sharded single run all-reduces
  # its gradient in another order) and clipping off (its norm is a sum over all gradients). Even so, vmap
  # may order a float reduction differently, and training amplifies rounding: the first epoch agrees to
  # float precision, later ones within a few documents of the validation set (observed: <= 0.6 points).
  # With views, members draw different view rates and each member's views are those of its single run.
  pairs = separate_runs[views]
  assert len(pairs) == 3 and len({p['population']['learning_rate'] for p in pairs}) == 3
  if views:
    assert len({p['population']['view_dropout'] for p in pairs}) == 3
  for pair in pairs:
    member, single = pair['population'], pair['single']
    assert member['valid_history'][0] == pytest.approx(single['valid_history'][0], abs=1e-6)
    np.testing.assert_allclose(member['valid_history'], single['valid_history'], atol=0.02)
    assert member['test/precision@10'] == pytest.approx(single['test/precision@10'], abs=0.02)


def test_sweep_runs_one_population_per_group_picks_on_validation_and_resumes(tmp_path, monkeypatch):
  from dtr import sweep
  config = load_config('tiny,population=2')
  config.num_epochs = 2
  grid = sweep.parse_grid(['batch_size=16,32', 'model.prior_steps=1,2', 'model.prior_raw=true,false'], config)
  assert grid == {'batch_size': [16, 32], 'model.prior_steps': [1, 2], 'model.prior_raw': [True, False]}
  points = sweep.grid_points(grid, 2, config.seed)
  assert len(points) == 2 and points == sweep.grid_points(grid, 2, config.seed) and points[0] != points[1]
  summary = sweep.run_sweep(config, str(tmp_path), grid, num_groups=2)
  assert [g['choices'] for g in summary['groups']] == points
  best = max(summary['groups'], key=lambda g: g['valid/precision@10'])
  assert summary['best_group'] == best['group'] and summary['test/precision@10'] == best['test/precision@10']
  for g in summary['groups']:  # each group trained with its own choices and disjoint member seeds
    saved = json.loads((tmp_path / f'group{g["group"]:03d}' / 'population_results.json').read_text())
    assert saved['population'] == 2 and saved['members'][0]['seed'] == config.seed + 2 * g['group']
    assert saved['config']['batch_size'] == g['choices']['batch_size']
    assert saved['config']['model']['prior_steps'] == g['choices']['model.prior_steps']
  assert '**best**' in (tmp_path / 'sweep.md').read_text()

  def retrain(*args, **kwargs):
    raise AssertionError('a finished group was trained again')

  from dtr import train
  monkeypatch.setattr(train, 'train_and_evaluate', retrain)
  assert sweep.run_sweep(config, str(tmp_path), grid, num_groups=2)['best_group'] == summary['best_group']
  with pytest.raises(ValueError, match='not a config field'):
    sweep.parse_grid(['model.no_such_field=1,2'], config)
  with pytest.raises(ValueError, match='population'):
    sweep.run_sweep(load_config('tiny'), str(tmp_path / 'x'), grid)




def test_an_hsvae_population_varies_the_prior_each_member_as_its_single_run(tmp_path):
  """HSVAE's Beta prior (alpha, beta) is a population hyperparameter, kept in the parameters, and so are its
  learning rate, KL weights and binary concrete temperature, kept in the state: members with different
  settings train in one program, each as the single run with its settings and seed."""
  from dtr import train  # pylint: disable=g-import-not-at-top
  from dtr.evaluate.analysis import bits  # pylint: disable=g-import-not-at-top
  config = tiny_sentences('hsvae', 0, 1)
  config.population = 2
  drawn_settings = dict(prior_alpha=2.0, prior_beta=8.0, learning_rate=0.004, z_kl_weight=0.25, temperature=2.0)
  config.population_search.update({k: f'choice({v})' for k, v in drawn_settings.items()})
  results = train.train_and_evaluate(config, str(tmp_path / 'pop'))
  members = json.loads((tmp_path / 'pop' / 'population_results.json').read_text())['members']
  assert {k: members[0][k] for k in drawn_settings} == {k: config.model[k] for k in drawn_settings}
  assert {k: members[1][k] for k in drawn_settings} == drawn_settings
  drawn = members[1]  # the member with the drawn settings, against the single run with them and its seed
  single = train.train_and_evaluate(tiny_sentences('hsvae', drawn['seed'], 1, **drawn_settings),
                                    str(tmp_path / 'single'))
  # deterministic codes (mean E[z|x]) agree to float rounding; sampled numbers share the population's noise
  assert drawn['test/perplexity_mean'] == pytest.approx(single['test/perplexity_mean'], rel=1e-4)
  assert drawn['test/hoyer_mean'] == pytest.approx(single['test/hoyer_mean'], rel=1e-4)
  best = members[results['best_member']]
  assert results['best_hparams'] == {k: best[k] for k in results['best_hparams']} and len(results['best_hparams']) == 6
  report = bits.hoyer_report(str(tmp_path / 'pop'))  # the prior the kept parameters were trained with
  assert (report['prior_alpha'], report['prior_beta']) == (best['prior_alpha'], best['prior_beta'])
  config.population_search.prior_alpha = 'uniform(-1,0)'
  with pytest.raises(ValueError, match=r'drew .*prior_alpha.* which the method refuses'):
    train.train_and_evaluate(config, str(tmp_path / 'bad'))


def test_a_gumbel_autoencoder_member_trains_and_samples_with_its_own_temperature(tmp_path):
  """Under model.temperature_in_params the binary concrete's temperature is a member's, kept in the parameters:
  a member at tau 0.5 of a population whose config has tau 1 trains as the single run at 0.5 (its deterministic
  numbers equal), and evaluation samples its codes at 0.5 (`score` of the same parameters and rng equals the
  single run's, and differs from tau 1's)."""
  import jax  # pylint: disable=g-import-not-at-top
  from dtr import train  # pylint: disable=g-import-not-at-top
  gumbel = dict(code='gumbel', temperature_in_params=True)
  config = tiny_sentences('binary_ae', 0, 1, **gumbel)
  config.population = 2
  config.population_search.temperature = 'choice(0.5)'
  train.train_and_evaluate(config, str(tmp_path / 'pop'))
  drawn = json.loads((tmp_path / 'pop' / 'population_results.json').read_text())['members'][1]
  assert drawn['temperature'] == 0.5
  single = train.train_and_evaluate(tiny_sentences('binary_ae', drawn['seed'], 1, temperature=0.5, **gumbel),
                                    str(tmp_path / 'single'))
  for key in ('test/perplexity_mean', 'test/perplexity_greedy'):
    assert drawn[key] == pytest.approx(single[key], rel=1e-4), key

  method, batch = _method_and_batch('sentence_ae', 'method=binary_ae,tiny', **gumbel)
  rng = jax.random.key(1)
  at_half = method.init(jax.random.key(0), batch, {**method.default_hparams(), 'temperature': 0.5})
  assert 'temperature' not in at_half['hparams'] and float(at_half['params']['code']['temperature']) == 0.5
  member = method.score(at_half['params'], batch, rng)
  half_method, _ = _method_and_batch('sentence_ae', 'method=binary_ae,tiny', temperature=0.5, **gumbel)
  half = half_method.score(half_method.init(jax.random.key(0), batch)['params'], batch, rng)
  np.testing.assert_array_equal(member['nll'], half['nll'])
  default = method.score(method.init(jax.random.key(0), batch)['params'], batch, rng)
  assert not np.allclose(member['nll'], default['nll'])
  np.testing.assert_array_equal(member['nll_greedy'], default['nll_greedy'])  # the same network, thresholded


def test_a_sweep_picks_the_lowest_validation_value_when_select_is_min():
  from dtr import sweep  # pylint: disable=g-import-not-at-top
  def group(index, valid, test):
    return {'group': index, 'choices': {'model.prior_alpha': float(index)},
            'results': {'population': 2, 'population_seconds': 1.0, 'valid/perplexity': valid,
                        'test/perplexity': test, 'best_hparams': {}}}
  groups = [group(0, 66.2, 67.3), group(1, 64.5, 64.8), group(2, 65.0, 64.1)]
  low = sweep.summarize(groups, 'perplexity', 'min')
  assert (low['best_group'], low['valid/perplexity'], low['test/perplexity']) == (1, 64.5, 64.8)
  assert sweep.summarize(groups, 'perplexity', 'max')['best_group'] == 0
  assert '| 1 **best** |' in sweep.table(low)


_PRUNE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.test_population import load_config
from dtr import train
out = {}
for name, prune in (('full', ''), ('pruned', '2')):
  config = load_config('tiny,population=4')
  config.num_epochs, config.population_prune_epochs, config.population_prune_keep = 4, prune, 0.25
  config.model.clip = 0.0
  config.population_search.clip = 'choice(0)'
  out[name] = train.train_and_evaluate(config, sys.argv[2] + '/' + name)
  out[name]['members'] = json.load(open(sys.argv[2] + '/' + name + '/population_results.json'))['members']
print('RESULT' + json.dumps(out))
"""


def test_pruning_stops_all_but_the_best_and_leaves_the_survivor_unchanged(tmp_path):
  # Successive halving after epoch 2 keeps 1 of 4 members; the survivor is then trained alone (a smaller
  # vmapped program over the members gathered out of the population's state) and must follow the same
  # trajectory as in the unpruned population; the pruned members keep their first two epochs.
  res = _run_on_one_device(_PRUNE, tmp_path)
  full, pruned = res['full']['members'], res['pruned']['members']
  after_two = [max(m['valid_history'][:2]) for m in full]
  survivor = int(np.argmax(after_two))  # ties: none expected on these settings
  for i, (f, p) in enumerate(zip(full, pruned)):
    if i == survivor:
      assert p['pruned_at_epoch'] is None and len(p['valid_history']) == 4
      np.testing.assert_allclose(p['valid_history'], f['valid_history'], atol=0.02)
    else:
      assert p['pruned_at_epoch'] == 2 and len(p['valid_history']) == 2
      np.testing.assert_allclose(p['valid_history'], f['valid_history'][:2], atol=1e-6)
  assert res['pruned']['best_member'] in range(4)
  with pytest.raises(ValueError, match='population_prune_epochs'):
    config = load_config('tiny,population=2')
    config.population_prune_epochs = 'four'
    from dtr import train
    train.train_and_evaluate(config, str(tmp_path / 'bad'))


def test_search_argument_sets_halving_and_rejects_unknown_values():
  config = load_config('dataset=ng20,bits=16,population=100,search=halving')
  assert config.population == 100 and config.population_prune_epochs == '4,8,16'
  assert config.population_valid_queries == 1000
  full = load_config('dataset=ng20,bits=16,population=100')
  assert full.population_prune_epochs == '' and full.population_valid_queries == 0
  with pytest.raises(ValueError, match='search'):
    load_config('population=4,search=fastest')


def test_cycle_spec_gives_a_grid_beside_the_config_s_setting():
  """cycle(...) takes its values in turn (the paper's VQ commitment grid as one population); a drawn value the
  method refuses is refused before training, naming the spec."""
  from dtr import config_utils  # pylint: disable=g-import-not-at-top
  config = config_utils.load_config_module('discrete_vae').get_config('method=vq_vae,tiny')
  config.population = 5
  config.population_search.commitment = 'cycle(0.01,0.1)'
  config.population_search.learning_rate = 'log_uniform(1e-4,1e-2)'
  method = methods.get_method(config.model, vocab_size=10)
  settings = population.member_settings(config, method, 5)
  assert [m['commitment'] for m in settings] == pytest.approx([1e-3, 0.01, 0.1, 0.01, 0.1])
  assert len({m['learning_rate'] for m in settings}) == 5  # still drawn
  config.population_search.commitment = 'cycle(0.01,-1)'
  with pytest.raises(ValueError, match=r'commitment.*Narrow those specs'):
    population.member_settings(config, method, 3)
  with pytest.raises(ValueError, match=r'cycle\(x,y,...\)'):
    population.sample_value('grid(1,2)', np.random.default_rng(0))


def test_a_hyperparameter_the_config_leaves_out_is_refused_saying_when_it_is_one():
  from dtr import config_utils  # pylint: disable=g-import-not-at-top
  config = config_utils.load_config_module('bow_vae').get_config('tiny')
  config.model.regime = 'none'
  config.population_search.svi_lr = 'cycle(0.1)'
  method = methods.get_method(config.model, vocab_size=10)
  with pytest.raises(ValueError, match=r"can vary \['learning_rate'\] \(svi_lr only when training refines"):
    population.member_settings(config, method, 2)
  config.model.regime = 'finopt'
  assert population.member_settings(config, methods.get_method(config.model, vocab_size=10), 2)[1]['svi_lr'] == 0.1



def test_a_count_is_drawn_as_whole_numbers_only():
  """The bag-of-words VAE's training SVI step count is an integer field: cycle() of whole numbers gives the
  members those counts, a uniform() draw is refused naming the field and the fix."""
  from dtr import config_utils  # pylint: disable=g-import-not-at-top
  config = config_utils.load_config_module('bow_vae').get_config('tiny,regime=finopt')
  method = methods.get_method(config.model, vocab_size=10)
  config.population_search.svi_steps = 'cycle(1,20)'
  assert [m['svi_steps'] for m in population.member_settings(config, method, 3)] == [config.model.svi_steps, 1, 20]
  config.population_search.svi_steps = 'uniform(1,20)'
  with pytest.raises(ValueError, match=r'model\.svi_steps is a count .* choice\(\.\.\.\) or cycle'):
    population.member_settings(config, method, 3)


# (config, argument, model fields that turn it off, ... that turn it on, the conditional hyperparameter)
CONDITIONAL = [
    ('ammi', 'tiny', dict(view_dropout=0.0), dict(view_dropout=0.5), 'view_dropout'),
    ('bow_vae', 'tiny', dict(regime='none'), dict(regime='finopt'), 'svi_lr'),
    ('bow_vae', 'tiny', dict(regime='none'), dict(regime='finopt'), 'svi_steps'),
    ('bow_vae', 'tiny', dict(anneal_steps=0), dict(anneal_steps=100), 'kl_start'),
    ('bow_vae', 'tiny', dict(anneal_steps=0), dict(anneal_steps=100), 'anneal_steps'),
] + [
    entry for field in ('kl_start', 'kl_anneal_sentences') for entry in (
        ('sentence_ae', 'method=binary_ae,tiny', dict(kl_anneal_sentences=1000),
         dict(code='gaussian', kl=True, kl_anneal_sentences=1000), field),
        ('sentence_ae', 'method=binary_ae,tiny', dict(code='gaussian', kl=True, kl_anneal_sentences=0),
         dict(code='gaussian', kl=True, kl_anneal_sentences=1000), field))
] + [(name, f'method={method},tiny', {field: 0.0}, {field: 0.3}, field)
     for name, methods_ in (('sentence_ae', ('binary_ae', 'lm', 'hsvae', 'mat_vae', 'gauss_vae')),
                            ('discrete_vae', ('vq_vae', 'cat_vae', 'hard_em')))
     for method in methods_ for field in ('dropout', 'word_dropout')] + [
    ('discrete_vae', 'method=cat_vae,tiny', dict(tau_anneal=False), dict(tau_anneal=True), field)
    for field in ('tau_min', 'tau_anneal_rate')] + [
    ('sentence_ae', 'method=binary_ae,tiny', dict(code='gumbel'), dict(code='gumbel', temperature_in_params=True),
     'temperature'),
    ('sentence_ae', 'method=binary_ae,tiny', dict(code='binary', temperature_in_params=True),
     dict(code='gumbel', temperature_in_params=True), 'temperature'),
    ('probe', '', dict(dropout=0.0, hidden=(8,)), dict(dropout=0.3, hidden=(8,)), 'dropout'),
    ('probe', '', dict(dropout=0.3, hidden=()), dict(dropout=0.3, hidden=(8,)), 'dropout')]


def _probe_config():
  """The loop's defaults with a probe's model (configs/classify.py makes one only for a pretrained workdir)."""
  from dtr.methods import probe  # pylint: disable=g-import-not-at-top
  from dtr.configs import common  # pylint: disable=g-import-not-at-top
  config = common.get_config()
  config.model = probe.default_model_config()
  return config


COUNTS = ('svi_steps', 'anneal_steps', 'kl_anneal_sentences')  # integer fields


def test_conditional_hyperparameters_exist_exactly_when_their_settings_say():
  """Every method's `conditional_hparams` entry is a population hyperparameter under the settings its words
  name and not otherwise, and the refusal of a population_search naming it quotes those words."""
  from dtr import config_utils  # pylint: disable=g-import-not-at-top
  covered = set()
  for name, arg, off, on, field in CONDITIONAL:
    config = _probe_config() if name == 'probe' else config_utils.load_config_module(name).get_config(arg)
    value = 2.0 if field in COUNTS else 0.25  # a value each of them takes (a count is an integer)
    config.population_search = {field: f'cycle({value})'}
    for fields, expected in ((off, False), (on, True)):
      config.model.update(fields)
      method = methods.get_method(config.model, base.DataInfo(vocab_size=10, token_vocab_size=16, max_len=6,
                                                              train_size=16, num_labels=3, feature_shape=(4,)))
      covered.add((type(method).__name__, field))
      assert (field in method.default_hparams()) is expected, (name, fields, field)
      if expected:
        assert population.member_settings(config, method, 2)[1][field] == value
      else:
        when = method.conditional_hparams[field][0]
        with pytest.raises(ValueError, match=re.escape(f'{field} only {when}')):
          population.member_settings(config, method, 2)
  declared = {(cls.__name__, field) for cls in map(methods.method_class, methods.names())
              for field in cls.conditional_hparams}
  assert declared == covered


def test_a_population_checkpoint_from_before_a_hyperparameter_resumes_with_the_config_s_value(
    tmp_path, monkeypatch, caplog):
  """A population's checkpoint written when dropout was no population hyperparameter yet (the library before
  it: the discrete VAEs' conditional hyperparameters without it) resumes under the current one: its members
  get the config's dropout, which they trained with, and the run ends as that library's uninterrupted run."""
  from dtr import config_utils, train  # pylint: disable=g-import-not-at-top
  from dtr.methods import discrete_vae  # pylint: disable=g-import-not-at-top
  from tests.test_resume import train_killed_after  # pylint: disable=g-import-not-at-top

  def config():
    c = config_utils.load_config_module('discrete_vae').get_config('method=vq_vae,tiny')
    c.update(population=2, num_epochs=2, checkpoint_every_steps=1)
    c.model.dropout = 0.1
    c.population_search = {'learning_rate': 'log_uniform(1e-3,1e-2)'}
    return c

  before = {k: v for k, v in discrete_vae.DiscreteVAE.conditional_hparams.items() if k != 'dropout'}
  with monkeypatch.context() as patch:
    patch.setattr(discrete_vae.DiscreteVAE, 'conditional_hparams', before)
    reference = train.train_and_evaluate(config(), str(tmp_path / 'reference'))
    train_killed_after(config(), str(tmp_path / 'killed'), 1, patch)
  jax.clear_caches()
  with caplog.at_level('WARNING'):
    resumed = train.train_and_evaluate(config(), str(tmp_path / 'killed'))
  messages = [r.getMessage() for r in caplog.records]
  assert any("before ['dropout'] were population hyperparameters of vq_vae" in m for m in messages), messages
  histories = [[m['valid_history'] for m in json.loads((tmp_path / run / 'population_results.json').read_text())[
      'members']] for run in ('reference', 'killed')]
  assert len(histories[0]) == 2 and all(len(h) == 2 for h in histories[0])
  np.testing.assert_allclose(histories[1], histories[0], rtol=1e-5)
  assert resumed['train_loss_history'] == pytest.approx(reference['train_loss_history'], rel=1e-5)


def test_bucket_rows_hold_the_active_members_first_and_shrink_by_halves():
  assert members.bucket_rows(list(range(100)), 100).tolist() == list(range(100))
  rows = members.bucket_rows([3, 50, 97], 100)
  assert len(rows) == 4 and rows[:3].tolist() == [3, 50, 97] and len(set(rows.tolist())) == 4
  assert len(members.bucket_rows(list(range(40)), 100)) == 50
  assert len(members.bucket_rows(list(range(60)), 100)) == 100
  assert len(members.bucket_rows([1], 8, devices=8)) == 8  # whole devices


def test_replicas_share_a_setting_and_settings_are_ranked_and_pruned_by_their_mean():
  config = load_config('tiny,population=6')
  config.population_replicas = 2
  method = methods.get_method(config.model, vocab_size=10)
  members = population.member_settings(config, method, 6)
  assert [m['setting'] for m in members] == [0, 0, 1, 1, 2, 2]
  assert len({m['seed'] for m in members}) == 6
  for a, b in zip(members[::2], members[1::2]):
    assert {k: v for k, v in a.items() if k != 'seed'} == {k: v for k, v in b.items() if k != 'seed'}
  assert members[0]['learning_rate'] == pytest.approx(config.model.learning_rate)
  with pytest.raises(ValueError, match='multiple of population_replicas'):
    population.member_settings(config, method, 5)
  # Setting 1 has the best single member (0.9) but setting 2 the best mean: halving keeps setting 2.
  meta = {'best_score': [0.5, 0.5, 0.9, 0.1, 0.6, 0.6], 'done': [False] * 6, 'stopped': [None] * 6}
  assert population.setting_means(members, meta['best_score']) == pytest.approx({0: 0.5, 1: 0.5, 2: 0.6})
  opts = {'prune_epochs': [2], 'prune_keep': 1 / 3}
  assert population.prune(meta, members, 1, opts) == 0 and not any(meta['done'])
  assert population.prune(meta, members, 2, opts) == 4
  assert meta['done'] == [True, True, True, True, False, False] and meta['pruned_at'][:4] == [2] * 4


_STOP_ONE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from tests.test_population import load_config
from dtr import population, train
out = {}
original = population.Search.after_epoch
for name in ('all', 'one_stopped'):
  if name == 'one_stopped':  # member 1 stops after the first epoch; the other 4 keep the whole bucket
    def after_epoch(self, meta, epochs_done):
      if epochs_done == 1:
        meta['done'][1], meta['stopped'][1] = True, 'stopped by the test'
      return original(self, meta, epochs_done)
    population.Search.after_epoch = after_epoch
  config = load_config('tiny,population=5')
  config.num_epochs = 3
  config.model.clip = 0.0
  config.population_search.clip = 'choice(0)'
  train.train_and_evaluate(config, sys.argv[2] + '/' + name)
  out[name] = json.load(open(sys.argv[2] + '/' + name + '/population_results.json'))['members']
print('RESULT' + json.dumps(out))
"""


def test_a_member_stopped_in_the_middle_of_a_full_bucket_leaves_the_others_unchanged(tmp_path):
  # 4 of 5 running members still fill the 5-member program; their rows must map back to the right members.
  res = _run_on_one_device(_STOP_ONE, tmp_path)
  for i, (a, b) in enumerate(zip(res['all'], res['one_stopped'])):
    if i == 1:
      assert len(b['valid_history']) == 1 and b['valid_history'][0] == pytest.approx(a['valid_history'][0])
    else:
      np.testing.assert_allclose(b['valid_history'], a['valid_history'], atol=1e-6)


def _method_and_batch(name: str, arg: str, **model):
  """The method of a tiny config (with `model` fields set) and its first training batch."""
  import jax  # pylint: disable=g-import-not-at-top
  from dtr import config_utils, input_pipeline as ip, train  # pylint: disable=g-import-not-at-top
  if name == 'probe':  # a classifier on 4 features of 3 classes
    from dtr.methods import probe  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    batch = {'features': rng.normal(size=(16, 4)).astype(np.float32), 'label': rng.integers(0, 3, 16),
             'mask': np.ones(16, np.float32)}
    mc = probe.default_model_config()
    mc.update(hidden=(8,), **model)
    return methods.get_method(mc, base.DataInfo(num_labels=3, feature_shape=(4,), train_size=16)), batch
  config = config_utils.load_config_module(name).get_config(arg)
  config.model.update(model)
  data = train.load_data(config)
  split = data.splits['train']
  method = methods.get_method(config.model, train.data_info(data, ip.num_examples(split)))
  order = ip.member_order(None, 0, 0, ip.num_examples(split))
  _, _, host = next(ip.train_chunks(method.reads, split, [order], per_member=False, batch_size=config.batch_size,
                                    start_step=0, steps_per_call=1, sharded=True, fields=method.batch_fields))
  host.pop('valid')
  return method, jax.tree.map(lambda v: v[0], host)


ADAM_METHODS = [('discrete_vae', 'method=vq_vae,tiny', {'noam': True, 'noam_warmup': 4, 'alternating': True}),
                ('bow_vae', 'tiny', {'regime': 'none_finopt', 'switch_epoch': 0}), ('classify', 'method=cbow,tiny', {}),
                ('hashing', 'method=nash,tiny', {}), ('hashing', 'method=dvq,tiny', {}),
                ('probe', '', {'dropout': 0.1})]


@pytest.mark.parametrize('name,arg,model', ADAM_METHODS, ids=[f'{n}:{a}' for n, a, _ in ADAM_METHODS])
def test_a_member_steps_with_its_own_learning_rate(name, arg, model):
  """A member's state holds its step size (`default_hparams`): at the config's value two train steps give
  what a single run's state (no hyperparameters kept, the config read) gives; at ten times it they differ,
  from the first step on in every group a step trains (the alternating VQ-VAE: the encoder in its E-step
  loop, as Hard EM's, and the rest in its M-step, both on the Noam schedule the member's factor scales; the
  bag-of-words VAE through the branch between refining and plain steps). (The sentence methods: the
  population tests above.)"""
  import jax  # pylint: disable=g-import-not-at-top
  method, batch = _method_and_batch(name, arg, **model)
  hparams = method.default_hparams()
  rate = 'noam_factor' if model.get('noam') else 'learning_rate'
  assert set(hparams) >= {rate} and float(hparams[rate]) == pytest.approx(method.config[rate])

  def steps(state):
    """The parameters after one and after two steps."""
    step, out = jax.jit(method.train_step), []
    for i in range(2):
      state, metrics = step(state, batch, jax.random.key(10 + i))
      assert np.isfinite(float(metrics['loss']))
      out.append(state['params'])
    return out

  def distance(a, b):
    return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))),
                                            a, b)))

  single = steps(method.init(jax.random.key(0), batch))
  member = steps(method.init(jax.random.key(0), batch, hparams))
  other = steps(method.init(jax.random.key(0), batch, {**hparams, rate: hparams[rate] * 10}))
  for a, b in zip(single, member):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)
  assert distance(single[1], other[1]) > 1e-3  # the member's rate is the one used
  if getattr(method, 'alternating', False):  # after one step: the E-steps' group and the M-step's both moved
    for group_single, group_other in zip(method._groups(single[0]), method._groups(other[0])):
      assert distance(group_single, group_other) > 1e-4


def test_a_probe_member_trains_with_its_own_dropout():
  """The probe's dropout (after hidden layers, > 0) is a member's: two steps of a member at 0.5 of a config at
  0.1 give the single run at 0.5's parameters, not the config's."""
  import jax  # pylint: disable=g-import-not-at-top
  method, batch = _method_and_batch('probe', '', dropout=0.1)
  at_half, _ = _method_and_batch('probe', '', dropout=0.5)

  def two_steps(m, state):
    for i in range(2):
      state, _ = jax.jit(m.train_step)(state, batch, jax.random.key(10 + i))
    return jax.tree.leaves(state['params'])

  member = two_steps(method, method.init(jax.random.key(0), batch, {**method.default_hparams(), 'dropout': 0.5}))
  single = two_steps(at_half, at_half.init(jax.random.key(0), batch))
  config = two_steps(method, method.init(jax.random.key(0), batch))
  for x, y in zip(member, single):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  assert max(float(np.max(np.abs(x - y))) for x, y in zip(member, config)) > 1e-4


def _classifier_config(size: int, seeds: int):
  """A tiny CBOW classifier on 24 labels per subsample; a population of `size` whose settings after the
  first have learning rate 0.02."""
  from dtr import config_utils  # pylint: disable=g-import-not-at-top
  c = config_utils.load_config_module('classify').get_config(f'method=cbow,tiny,labels=24,seeds={seeds}')
  c.update(num_epochs=2, population=size)
  if size:
    c.population_search.learning_rate = 'choice(0.02)'
  return c


def test_a_classifier_population_searches_its_settings_on_one_label_subsample(tmp_path):
  """A classifier's population trains every member on the one label subsample (data.label_seeds=1): member 0,
  at the config's settings, is the single run on it (the loop's member stack used to refuse any label budget)."""
  from dtr import train  # pylint: disable=g-import-not-at-top
  config = functools.partial(_classifier_config, seeds=1)

  single = train.train_and_evaluate(config(0), str(tmp_path / 'single'))
  train.train_and_evaluate(config(2), str(tmp_path / 'pop'))
  members = json.loads((tmp_path / 'pop' / 'population_results.json').read_text())['members']
  assert members[0]['valid_history'] == pytest.approx(single['valid_history'], abs=1e-4)
  assert members[0]['test/accuracy'] == pytest.approx(single['test/accuracy'], abs=1e-4)
  assert members[1]['learning_rate'] == 0.02 and members[1]['valid_history'] != members[0]['valid_history']


def test_a_classifier_population_trains_every_setting_on_every_label_subsample(tmp_path):
  """With several label subsamples (data.label_seeds=2), each setting's replicas are its runs on the
  subsamples: setting 0's members are the classifier's own runs on them (same seeds, rows and order), the
  settings are ranked by their mean, and results.json reports the chosen setting's mean and spread over the
  subsamples. A population that is no multiple of the subsamples is refused, naming the counts."""
  from dtr import train  # pylint: disable=g-import-not-at-top
  config = functools.partial(_classifier_config, seeds=2)

  plain = train.train_and_evaluate(config(0), str(tmp_path / 'plain'))
  results = train.train_and_evaluate(config(4), str(tmp_path / 'pop'))
  members = json.loads((tmp_path / 'pop' / 'population_results.json').read_text())['members']
  assert [(m['setting'], m['subsample'], m['seed']) for m in members] == [(0, 0, 0), (0, 1, 1), (1, 0, 0), (1, 1, 1)]
  for r in range(2):
    assert members[r]['valid_history'] == pytest.approx(plain['members'][r]['valid_history'], abs=1e-4), r
    for key in ('test/accuracy', 'valid/accuracy'):
      assert members[r][key] == pytest.approx(plain['members'][r][key], abs=1e-4), (r, key)
  assert plain['members'][0]['test/accuracy'] != plain['members'][1]['test/accuracy']
  assert members[2]['learning_rate'] == 0.02 and members[2]['valid_history'] != members[0]['valid_history']
  best = [m for m in members if m['setting'] == results['best_setting']]
  means = {j: np.mean([max(m['valid_history']) for m in members if m['setting'] == j]) for j in (0, 1)}
  assert results['best_setting'] == max(means, key=lambda j: (means[j], -j))
  assert results['test/accuracy'] == pytest.approx(np.mean([m['test/accuracy'] for m in best]), abs=1e-4)
  assert results['test/accuracy_std'] == pytest.approx(np.std([m['test/accuracy'] for m in best], ddof=1), abs=1e-4)
  rows = json.loads((tmp_path / 'pop' / 'population_results.json').read_text())['settings']
  for j, row in enumerate(rows):  # per setting: the mean and spread over its subsamples
    mine = [m for m in members if m['setting'] == j]
    assert row['setting'] == j and row['members'] == [2 * j, 2 * j + 1]
    assert row['learning_rate'] == mine[0]['learning_rate'] and 'subsample' not in row
    assert row['ranking_score'] == pytest.approx(means[j], abs=1e-6)
    for key in ('test/accuracy', 'valid/accuracy'):
      values = [m[key] for m in mine]
      assert row[key] == pytest.approx(np.mean(values), abs=1e-6)
      assert row[f'{key}_std'] == pytest.approx(np.std(values, ddof=1), abs=1e-6)
  with pytest.raises(ValueError, match=r'population=3 must be a multiple of the 2 label subsamples'):
    train.train_and_evaluate(config(3), str(tmp_path / 'odd'))


def test_a_classifier_population_over_label_subsamples_resumes_after_a_kill(tmp_path, monkeypatch):
  """Killed after its first chunk, a population of 2 settings x 2 subsamples resumes to the uninterrupted
  population's members (each one's rows, order and settings rebuilt from the config)."""
  from dtr import train  # pylint: disable=g-import-not-at-top
  from tests.test_resume import train_killed_after  # pylint: disable=g-import-not-at-top

  def config():
    c = _classifier_config(4, seeds=2)
    c.update(steps_per_call=1, checkpoint_every_steps=1)
    return c

  real_place, chunks = members.place_batch, []

  def counted(*args, **kwargs):
    chunks[-1] += 1
    return real_place(*args, **kwargs)

  chunks.append(0)
  monkeypatch.setattr(members, 'place_batch', counted)
  reference = train.train_and_evaluate(config(), str(tmp_path / 'reference'))
  monkeypatch.setattr(members, 'place_batch', real_place)
  train_killed_after(config(), str(tmp_path / 'killed'), 2, monkeypatch)
  chunks.append(0)
  monkeypatch.setattr(members, 'place_batch', counted)
  resumed = train.train_and_evaluate(config(), str(tmp_path / 'killed'))
  assert chunks[1] == chunks[0] - 2  # it resumed after the two chunks it had trained
  tables = [json.loads((tmp_path / run / 'population_results.json').read_text())['members']
            for run in ('reference', 'killed')]
  for a, b in zip(*tables):
    assert a['valid_history'] == pytest.approx(b['valid_history'], abs=1e-4)
    assert a['test/accuracy'] == pytest.approx(b['test/accuracy'], abs=1e-4)
  assert resumed['train_loss_history'] == pytest.approx(reference['train_loss_history'], rel=1e-5)
  assert resumed['test/accuracy_std'] == pytest.approx(reference['test/accuracy_std'], abs=1e-4)
