"""Every family's tiny config trains through the one loop and writes its contract keys to results.json; one
model of each VAE family is killed and resumed to the same run."""

import json

import numpy as np
import pytest

from dtr import config_utils, train
from tests.test_resume import train_killed_after

CASES = [
    ('bow_vae', 'tiny', ['test/perp_0', 'test/perp_f', 'test/perp_is', 'test/perplexity']),
    ('bow_vae', 'nvdm,tiny', ['test/perp_0', 'test/perp_f', 'test/perp_is', 'test/perplexity']),
    ('sentence_ae', 'method=binary_ae,tiny', ['test/perplexity', 'test/perplexity_mean', 'test/perplexity_greedy',
                                             'test/nll', 'test/kl']),
    ('sentence_ae', 'method=lm,tiny', ['test/perplexity', 'test/nll']),
    ('sentence_ae', 'method=hsvae,tiny', ['test/perplexity', 'test/nll', 'test/kl', 'test/hoyer_sample',
                                         'test/hoyer_mean']),
    ('discrete_vae', 'method=vq_vae,tiny', ['test/perplexity', 'test/codes_used', 'test/code_perplexity',
                                           'test/precision@10']),
    ('discrete_vae', 'method=hard_em,level=local,M=2,tiny', ['test/perplexity', 'test/codes_used']),
]


# The state each of these keeps besides its parameters (HSVAE's sampling keys, the VQ-VAE's code-book use for
# restarts, the bag-of-words VAE's refinement) must be in the checkpoint (the loop's own resume: test_resume).
RESUMED = ('tiny', 'method=hsvae,tiny', 'method=vq_vae,tiny')


@pytest.mark.parametrize('name,arg,keys', CASES, ids=[f'{n}:{a}' for n, a, _ in CASES])
def test_tiny_config_writes_its_keys(name, arg, keys, tmp_path, monkeypatch, caplog):
  def config():
    c = config_utils.load_config_module(name).get_config(arg)
    c.update(num_epochs=2, checkpoint_every_steps=1)  # a checkpoint after every chunk
    return c

  results = train.train_and_evaluate(config(), str(tmp_path))
  on_disk = json.loads((tmp_path / 'results.json').read_text())
  for key in keys:
    assert np.isfinite(on_disk[key]) and on_disk[key] == pytest.approx(results[key]), key
  for key in keys:
    if 'perp' in key:
      assert 1 < results[key] < 1e4, (key, results[key])
  assert len(results['train_loss_history']) == 2 and np.all(np.isfinite(results['train_loss_history']))
  if arg in RESUMED:  # killed before its second chunk, resumed: the same run (no new programs to compile)
    train_killed_after(config(), str(tmp_path / 'killed'), 1, monkeypatch)
    with caplog.at_level('INFO'):
      resumed = train.train_and_evaluate(config(), str(tmp_path / 'killed'))
    assert any(r.getMessage().startswith('Resuming at step 8 ') for r in caplog.records)
    assert resumed['train_loss_history'] == results['train_loss_history']
    assert resumed['valid_history'] == results['valid_history']
    assert {k: resumed[k] for k in keys} == {k: results[k] for k in keys}
  if 'method=lm' in arg:  # no code: encoding its texts and probing it are refused, naming the workdir
    import ml_collections  # pylint: disable=g-import-not-at-top
    from dtr import encode, probe  # pylint: disable=g-import-not-at-top
    with pytest.raises(ValueError, match=f"{tmp_path}: method 'lm' learns no codes"):
      encode.encode_texts(encode.load_model(str(tmp_path)), ['a b c'])
    with pytest.raises(ValueError, match=f"{tmp_path}: method 'lm' learns no representation"):
      probe.load_features(ml_collections.ConfigDict({'path': str(tmp_path)}))
