r"""Discrete VAEs for low-resource text classification (Jin, Wiseman, Stratos & Livescu, ACL 2020): Hard EM,
categorical VAE and VQ-VAE over a one-layer Transformer, with global or local latents.

Runs (from the repository root; DTR_DATA_DIR=../shared/data for the real corpora):

  # pretrain (early stopping on validation perplexity)
  python -m dtr.main --config=configs/discrete_vae.py:method=hard_em,level=global,M=4,K=256,dataset=dbpedia14 --workdir=/tmp/hem
  python -m dtr.main --config=configs/discrete_vae.py:method=cat_vae,level=local,M=1,K=4096,dataset=dbpedia14 --workdir=/tmp/cat
  python -m dtr.main --config=configs/discrete_vae.py:method=vq_vae,level=global,M=4,K=256,commitment=0.001 --workdir=/tmp/vq
  # then classify from the frozen codes with 200 labels x 5 subsamples (configs/classify.py)
  python -m dtr.main --config=configs/classify.py:features=/tmp/hem,labels=200 --workdir=/tmp/hem200
  python -m dtr.main --config=configs/classify.py:features=/tmp/hem,labels=200,reembed=True --workdir=/tmp/hem200r
  # tiny: synthetic sentences, seconds (the tests)
  python -m dtr.main --config=configs/discrete_vae.py:method=vq_vae,tiny --workdir=/tmp/vq_tiny

Arguments: method (hard_em, cat_vae, vq_vae), level (global, local), M, K, dataset (dbpedia14, yahoo10,
raw_20news, csv, tfds:ag_news_subset, ...), commitment (VQ), restart (the dead-value restart threshold t;
VQ: 0.1 by default, 0 = off, the reference's training, whose code books collapse; CatVAE and Hard EM: 0 by
default, t > 0 splits values in use into dead ones, `dtr.latent.gumbel.split_dead`), em_iter, alternating,
word_dropout (decoder inputs -> <unk> with this probability in training; none by default), book_init
(the code books' init: 'normal', N(0, 1), for CatVAE and Hard EM and 'xavier', Xavier-uniform, for VQ by
default, as the reference), buckets (W > 0: each epoch's sentences sorted by length within windows of W
chunks, `dtr.input_pipeline.length_bucketed`, so chunks pad less; off by default), pad_to_multiple_of (M > 0,
with buckets: such chunks pad to their longest sentence + 1 rounded up to a multiple of M instead of
widths that step by 1.5 and 4/3; less padding, more programs to compile), extra_train (files of
unlabelled documents, one a line, '+' between files, added to the training split: `dtr.data.extra`; e.g.
dataset=yahoo10,extra_train=lm/yahoo/val.txt+lm/yahoo/test.txt), tiny, runlocal.
Populations (`--config.population=P`, one compiled program) vary the learning rate (`noam_factor` under
Noam), VQ's commitment or CatVAE's kl_weight, free_bits_ratio and tau (with tau_anneal: tau_min and
tau_anneal_rate), and dropout and word_dropout when the config has some (> 0: whether they run is fixed per
program), e.g. the paper's commitment grid:
  python -m dtr.main --config=configs/discrete_vae.py:method=vq_vae,level=global,M=4,K=256 --config.population=3 \
    "--config.population_search.commitment=cycle(0.01,0.1)" --workdir=/tmp/vq_commit
(member 0 has the config's commitment, 0.001; cycle(...) gives the others its values in turn).
results.json: `test/perplexity` (corpus level, the deterministic codes), code-book use (`test/codes_used`
per slot, `test/code_perplexity`) and, for global latents on labelled corpora, `test/precision@100` of
symbol-Hamming retrieval (database train, queries test).
"""

import ml_collections

from dtr import config_utils
from dtr.configs import common
from dtr.methods import discrete_vae


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_utils.parse_arg(arg, method='hard_em', level='global', M=4, K=256, dataset='dbpedia14',
                               commitment=float, restart=float, em_iter=int, alternating=False, word_dropout=float,
                               book_init='', buckets=0, pad_to_multiple_of=0, extra_train='', tiny=False,
                               runlocal=False)
  config = common.get_config()
  config.model = discrete_vae.default_model_config(arg.method, arg.level)
  config.model.update(num_latents=int(arg.M), num_values=int(arg.K))
  # Given values are taken as they are (commitment=-1 or em_iter=0 is an error of the method's validation).
  for key, field in (('commitment', 'commitment'), ('restart', 'restart_threshold'), ('em_iter', 'em_iter')):
    if arg[key] is not None:
      config.model[field] = arg[key]
  if arg.alternating:
    config.model.alternating = True
  if arg.word_dropout is not None:  # only when asked: the reference has none
    config.model.word_dropout = arg.word_dropout
  if arg.book_init:  # code-book init: 'normal' (CatVAE, Hard EM) or 'xavier' (VQ-VAE) by default
    config.model.codebook_init = arg.book_init
  config.data.name = arg.dataset
  config.data.max_len = 400
  evals = ['perplexity', 'codebook'] + (['precision@100'] if arg.level == 'global' else [])
  common.set_evals(config, evals, 'perplexity', 'min')
  config.update(batch_size=64, num_epochs=30, patience=3, steps_per_call=16, eval_batch_size=256,
                tensorboard=False)
  if arg.tiny:
    common.tiny_synthetic(config, vocab_size=60, doc_length=12, num_train=256, num_valid=64, num_test=64)
    config.update(batch_size=32, num_epochs=3, patience=100, eval_batch_size=64)
    config.model.update(num_values=min(int(arg.K), 16), model_dim=16, ff_dim=32, num_heads=2, noam=False)
    config.model.pack_targets = 0.0  # a 60-word output layer is cheap whole: no gather, no loop over blocks
    evals = ['perplexity', 'codebook'] + (['precision@10'] if arg.level == 'global' else [])
    common.set_evals(config, evals, 'perplexity', 'min')
  if arg.buckets:  # absent unless asked: configs without it keep their digests (the benches' cells)
    config.data.length_buckets = int(arg.buckets)
  if arg.pad_to_multiple_of:  # absent unless asked, as buckets
    config.data.pad_to_multiple_of = int(arg.pad_to_multiple_of)
  if arg.extra_train:  # absent unless asked, as buckets
    config.data.extra_train = arg.extra_train
  if arg.runlocal:
    config.num_epochs = 1
  return config
