r"""Bag-of-words VAEs with SVI refinement (Krishnan, Liang & Hoffman, AISTATS 2018) and an NVDM-style model.

Runs (from the repository root; DTR_DATA_DIR=../shared/data for the real corpora):

  # the paper's model: 2 x 400 ReLU encoder, 2-layer decoder, 100 SVI steps per document at training time
  python -m dtr.main --config=configs/bow_vae.py:regime=finopt,decoder_layers=2,input=tfidf,dataset=20news_clean --workdir=/tmp/bv
  # regimes: none (plain VAE), finopt, none_finopt / finopt_none (switch at model.switch_epoch)
  python -m dtr.main --config=configs/bow_vae.py:regime=none,decoder_layers=0,input=counts,dataset=20news_clean --workdir=/tmp/bv0
  # NVDM-style: 50-d latent, 1 x 500 tanh encoder on the raw counts, linear softmax decoder, plain VAE;
  # batch 64, Adam 5e-4, at most 300 epochs (patience 10)
  python -m dtr.main --config=configs/bow_vae.py:nvdm,dataset=20news_clean --workdir=/tmp/nvdm
  # tiny: synthetic counts, seconds (the tests); runlocal: 3 epochs
  python -m dtr.main --config=configs/bow_vae.py:tiny --workdir=/tmp/bv_tiny

Arguments: regime, decoder_layers (0 or 2 hidden layers of 400 ReLU), input (counts: x / N_d; tfidf: the L2
TF-IDF rows; raw_counts: x), dataset (20news_clean, ng20, reuters, raw_20news, csv, ...: any corpus with term counts), nvdm,
svi_steps (K at training time), tiny, runlocal. results.json: `test/perp_0` and `test/perp_f` (the paper's
per-document perplexity exp(mean_d -ELBO_d / N_d), before and after test-time SVI: 100 steps at lr 8e-3),
`test/perp_is` (importance-sampled bound from the refined posterior) and `test/perplexity` (corpus level,
amortised). Early stopping on validation perp_0 (its validation also refines: pass
--config.model.eval_svi_steps=0 to validate the amortised perp_0 alone, as the study does; results.json then has
no perp_f, and perp_is is sampled from the amortised posterior). Inspect a finished
workdir's decoder Jacobian with `python -m dtr.analyze jacobian --workdir=DIR --words=space,god --out=s.png`;
the measured grid and its settings (`python -m dtr.bench bow table`) are in docs/results/bow.md.
Populations (`--config.population=P`, one compiled program) vary the learning rate, when training refines the
SVI step size and step count (whole numbers; the members' refinement loops run to the largest), and with KL
annealing its start and length (`kl_start`, `anneal_steps`), e.g.
  python -m dtr.main --config=configs/bow_vae.py:regime=finopt,dataset=20news_clean --config.population=3 \
    "--config.population_search.svi_steps=cycle(10,50)" --workdir=/tmp/bv_steps
"""

import ml_collections

from dtr import config_utils
from dtr.configs import common
from dtr.methods import bow_vae

REGIMES = ('none', 'finopt', 'none_finopt', 'finopt_none')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_utils.parse_arg(arg, regime='finopt', decoder_layers=2, input='tfidf', dataset='20news_clean',
                               nvdm=False, svi_steps=100, tiny=False, runlocal=False)
  if arg.regime not in REGIMES:
    raise ValueError(f'regime={arg.regime!r}: use one of {REGIMES}.')
  if arg.input not in bow_vae.INPUTS:
    raise ValueError(f'input={arg.input!r}: use counts (normalised counts), tfidf (L2 TF-IDF rows) or '
                     'raw_counts (the counts themselves).')
  config = common.get_config()
  config.data.name = arg.dataset
  if arg.nvdm:
    config.model = bow_vae.default_model_config('nvdm')
  else:
    config.model = bow_vae.default_model_config('krishnan')
    config.model.update(regime=arg.regime, input=arg.input, decoder_hidden=(400,) * int(arg.decoder_layers),
                        svi_steps=int(arg.svi_steps))
  common.set_evals(config, ['perplexity'], 'perp_0', 'min')
  config.update(batch_size=500, num_epochs=200, patience=10, steps_per_call=8, eval_batch_size=512,
                tensorboard=False)
  if arg.nvdm:  # NVDM's small batches (the public PyTorch NVDM's 64) and a long run
    config.update(batch_size=64, num_epochs=300, steps_per_call=32)
  if arg.tiny:
    common.tiny_synthetic(config, vocab_size=200, num_train=400)
    config.update(batch_size=40, num_epochs=4, patience=100, eval_batch_size=64)
    config.model.update(latent_dim=8, encoder_hidden=(32,), svi_steps=5, eval_svi_steps=5, eval_is_samples=4)
    if not arg.nvdm:
      config.model.decoder_hidden = (32,) * int(arg.decoder_layers)
  if arg.runlocal:
    config.num_epochs = 3
  return config
