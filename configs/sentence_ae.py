r"""Sentence autoencoders with binary and sparse codes: the GRU binary autoencoder (Baynazarov & Piontkovskaya
2019) and its variants, a GRU language model, and the sparse VAEs HSVAE (Prokhorov et al. 2021), MAT-VAE and a
Gaussian VAE with L1/L2 penalties.

Runs (from the repository root; DTR_DATA_DIR=../shared/data for the real corpora):

  python -m dtr.main --config=configs/sentence_ae.py:method=binary_ae,dataset=yahoo_lm --workdir=/tmp/bae
  python -m dtr.main --config=configs/sentence_ae.py:method=binary_ae,word_dropout=0.5 --workdir=/tmp/bae_wd
  python -m dtr.main --config=configs/sentence_ae.py:method=lm,dataset=yahoo_lm --workdir=/tmp/lm
  python -m dtr.main --config=configs/sentence_ae.py:method=gumbel_ae --workdir=/tmp/gumbel
  python -m dtr.main --config=configs/sentence_ae.py:method=binary_vae --workdir=/tmp/bvae   # KL to Bern(1/2)
  python -m dtr.main --config=configs/sentence_ae.py:method=gaussian_vae,word_dropout=0.5 --workdir=/tmp/gvae
  python -m dtr.main --config=configs/sentence_ae.py:method=hsvae,dataset=dbpedia14,alpha=30,beta=10 \
      --workdir=/tmp/hs
  python -m dtr.main --config=configs/sentence_ae.py:method=hsvae,dataset=dbpedia14,beta_init=prior \
      --workdir=/tmp/hs_prior   # Beta heads start at the prior: the code carries information (results doc)
  python -m dtr.main --config=configs/sentence_ae.py:method=hsvae,dataset=dbpedia14,population=8,prior_search \
      --workdir=/tmp/hs_priors   # 8 priors in one program; population_results.json lists them
  python -m dtr.main --config=configs/sentence_ae.py:method=mat_vae,dataset=dbpedia14 --workdir=/tmp/mat
  python -m dtr.main --config=configs/sentence_ae.py:method=gauss_vae,dataset=dbpedia14,l1=0.1 --workdir=/tmp/vl1
  python -m dtr.main --config=configs/sentence_ae.py:method=binary_ae,tiny --workdir=/tmp/bae_tiny  # seconds

Methods: binary_ae, binary_vae, bottleneck, gaussian_vae, gumbel_ae, gumbel_vae (`dtr.methods.sentence_ae`,
the binary autoencoder's family: 50-d code, bidirectional GRU encoder, code -> decoder state), lm (the decoder
alone), and hsvae, mat_vae, gauss_vae (`dtr.methods.sparse_vae`: code appended to every decoder input; gauss_vae
takes l1 / l2 penalties on mu and sigma). Arguments: method, dataset (yahoo_lm, ptb, dbpedia14, yahoo10, ...),
word_dropout, latent (code size), alpha, beta (HSVAE's Beta prior over the spike probability gamma, both > 0;
E[gamma] = alpha / (alpha + beta), so a larger alpha / (alpha + beta) asks for sparser codes), l1, l2, tiny,
kl_weight (the weight on z's KL of the sparse methods: HSVAE's psi, MAT-VAE's and the VAE's beta),
kl_target (C > 0 nats: the sparse methods' weighted KL term becomes |KL - C|, which holds the rate at C),
z_kl (HSVAE's KL of z: 'sample', the reference's one-sample estimate, or 'joint', analytic),
beta_init (HSVAE's Beta heads: 'prior', the default, softplus(head + s) with softplus(s) = the prior's alpha,
beta, so that q(gamma|x) starts near the prior; or 'zero', the reference's softplus(head), under which
HSVAE's code carried no information in docs/results/sentences.md),
buckets (W > 0: each epoch's sentences sorted by length within windows of W chunks,
`dtr.input_pipeline.length_bucketed`, so chunks pad less; off by default), pad_to_multiple_of (M > 0,
with buckets: such chunks pad to their longest sentence + 1 rounded up to a multiple of M instead of
widths that step by 1.5 and 4/3; less padding, more programs to compile), extra_train (files of unlabelled
sentences, one a line, '+' between files, added to the training split: `dtr.data.extra`), population (N:
N members in one compiled program, `dtr.population`, the best on validation reported; N seeds, or with
prior_search, HSVAE only, members 1..N-1 drawing the Beta prior's alpha and beta from PRIOR_SEARCH; any
method's learning_rate and the sparse methods' loss weights (HSVAE: gamma_kl_weight, z_kl_weight and its
binary concrete's temperature; MAT-VAE: kl_weight, mmd_weight, prior_gamma; gauss_vae: kl_weight, l1_mu,
l2_mu, l1_sigma, l2_sigma), the annealing's kl_start and kl_anneal_sentences (a count: whole numbers) of
the binary AE family's VAEs, the Gumbel codes' temperature with the argument temperature_in_params=True
(model.temperature_in_params: kept in the parameters, as evaluation samples with it; absent by default, so
earlier configs keep their digests) and, when the config has some (> 0), every method's dropout and
word_dropout are population hyperparameters too:
"--config.population_search.z_kl_weight=uniform(0.1,1)"), runlocal. The study sizes of
docs/results/sentences.md (`dtr.benches.sentences`) override model and data fields on top of these.
results.json: `test/perplexity` (z sampled as in training), `test/perplexity_mean`, `test/perplexity_greedy`
(where they apply), `test/nll`, `test/kl`, and for the sparse models `test/hoyer_sample`, `test/hoyer_mean`
(Average Hoyer after standardising each dimension; `dtr.analyze bits` also gives it without); every
perplexity at corpus level, exp(total NLL / total tokens), end-of-sentence included, and each also as the
per-sentence average, `test/perplexity_per_sentence` etc. Early stopping on validation perplexity.
"""

import ml_collections

from dtr import config_utils
from dtr.configs import common
from dtr.methods import sentence_ae, sparse_vae

AUTOENCODERS = ('binary_ae', 'binary_vae', 'bottleneck', 'gaussian_vae', 'gumbel_ae', 'gumbel_vae')
SPARSE = ('hsvae', 'mat_vae', 'gauss_vae')
METHODS = AUTOENCODERS + ('lm',) + SPARSE


def model_config(method: str) -> ml_collections.ConfigDict:
  if method in AUTOENCODERS:
    return sentence_ae.default_model_config('sentence_ae', 'binary' if method == 'binary_ae' else method)
  if method == 'lm':
    return sentence_ae.default_model_config('lm')
  if method in SPARSE:
    return sparse_vae.default_model_config(method)
  raise ValueError(f'Unknown sentence method {method!r}; known: {METHODS}.')


# What prior_search draws alpha and beta from (the paper's priors have alpha, beta between 4 and 36); change it
# with --config.population_search.prior_alpha='uniform(2,30)'.
PRIOR_SEARCH = 'log_uniform(1,40)'


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_utils.parse_arg(arg, method='binary_ae', dataset='yahoo_lm', word_dropout=float, latent=int,
                               alpha=float, beta=float, l1=0.0, l2=0.0, kl_weight=float, kl_target=float,
                               z_kl=None, beta_init=None, temperature_in_params=False, buckets=0,
                               pad_to_multiple_of=0, extra_train='', population=0, prior_search=False, tiny=False,
                               runlocal=False)
  config = common.get_config()
  config.model = model_config(arg.method)
  config.data.name = arg.dataset
  evals = ['perplexity'] + (['hoyer'] if arg.method in SPARSE else [])
  common.set_evals(config, evals, 'perplexity', 'min')
  config.update(batch_size=64, num_epochs=30, patience=3, steps_per_call=16, eval_batch_size=256,
                tensorboard=False)
  if arg.word_dropout is not None:  # taken as given (the method checks the range)
    config.model.word_dropout = arg.word_dropout
  if arg.latent is not None:
    config.model.latent_size = arg.latent
  if arg.method == 'hsvae':
    # Given values are taken as they are (alpha=0 is an error of the method's validation, not the default).
    if arg.alpha is not None:
      config.model.prior_alpha = arg.alpha
    if arg.beta is not None:
      config.model.prior_beta = arg.beta
  elif arg.alpha is not None or arg.beta is not None:
    raise ValueError(f'alpha and beta set the Beta prior of method=hsvae, not method={arg.method}.')
  if arg.method == 'gauss_vae':
    config.model.update(l1_mu=arg.l1, l1_sigma=arg.l1, l2_mu=arg.l2, l2_sigma=arg.l2)
  if arg.kl_weight is not None:  # the weight on z's KL: psi of HSVAE, beta of MAT-VAE and the Gaussian VAE
    if arg.method not in SPARSE:
      raise ValueError(f'kl_weight weighs the KL of the sparse methods {SPARSE}, not method={arg.method} '
                       '(the autoencoders anneal theirs: model.kl_start, model.kl_anneal_sentences).')
    config.model['z_kl_weight' if arg.method == 'hsvae' else 'kl_weight'] = arg.kl_weight
  # kl_target and z_kl are absent unless given, so that earlier configs keep their digests; beta_init
  # replaces HSVAE's default ('prior').
  hsvae_only = {'z_kl': arg.z_kl, 'beta_init': arg.beta_init}
  if (arg.kl_target is not None and arg.method not in SPARSE) or (
      arg.method != 'hsvae' and any(v is not None for v in hsvae_only.values())):
    raise ValueError(f'kl_target is an option of the sparse methods {SPARSE}, z_kl and beta_init of hsvae; '
                     f'not of method={arg.method}.')
  if arg.kl_target is not None:
    config.model.kl_target = arg.kl_target
  if arg.temperature_in_params:  # absent unless given, as kl_target
    if config.model.get('code') != 'gumbel':
      raise ValueError('temperature_in_params keeps the binary concrete\'s temperature of the Gumbel codes '
                       f'(method=gumbel_ae or gumbel_vae) in the parameters, not of method={arg.method}.')
    config.model.temperature_in_params = True
  for field, value in hsvae_only.items():
    if value is not None:
      config.model[field] = str(value)
  if arg.tiny:
    common.tiny_synthetic(config, vocab_size=60, doc_length=12, num_train=256, num_valid=64, num_test=64)
    config.update(batch_size=32, num_epochs=3, patience=100, eval_batch_size=64)
    config.model.update(embed_size=16, hidden_size=32)
    config.model.pack_targets = 0.0  # a 60-word output layer is cheap whole: no gather, no loop over blocks
    if 'latent_size' in config.model:
      config.model.latent_size = 8 if arg.latent is None else arg.latent
    if 'kl_anneal_sentences' in config.model:
      config.model.kl_anneal_sentences = 1000
  config.population = arg.population  # N members in one program (`dtr.population`); 0: a single run
  if arg.prior_search:  # members 1..N-1 draw HSVAE's prior; member 0 keeps the config's (alpha, beta)
    if arg.method != 'hsvae' or arg.population < 2:
      raise ValueError(f'prior_search draws the Beta prior of method=hsvae for population=N >= 2 members, got '
                       f'method={arg.method}, population={arg.population}; without it a population trains N '
                       'seeds.')
    config.population_search.update(prior_alpha=PRIOR_SEARCH, prior_beta=PRIOR_SEARCH)
  if arg.buckets:  # absent unless asked: configs without it keep their digests (the benches' cells)
    config.data.length_buckets = int(arg.buckets)
  if arg.pad_to_multiple_of:  # absent unless asked, as buckets
    config.data.pad_to_multiple_of = int(arg.pad_to_multiple_of)
  if arg.extra_train:  # absent unless asked, as buckets
    config.data.extra_train = arg.extra_train
  if arg.runlocal:
    config.num_epochs = 1
  return config
