r"""Predictive document hashing (Stratos & Wiseman, ICML 2020, the second task): AMMI with q(z|X) vs conditional
BMSH and DVQ, scored by matching accuracy on thread pairs of 20 Newsgroups.

Runs (from the repository root):

  # real pairs (<data_dir>/raw/20news-bydate.tar.xz; synthetic pairs, loudly announced, if none is found)
  DTR_DATA_DIR=../shared/data python -m dtr.main --config=configs/predictive.py:method=ammi,bits=32 --workdir=/tmp/p_ammi
  DTR_DATA_DIR=../shared/data python -m dtr.main --config=configs/predictive.py:method=bmsh,bits=32 --workdir=/tmp/p_bmsh
  DTR_DATA_DIR=../shared/data python -m dtr.main --config=configs/predictive.py:method=dvq,bits=32 --workdir=/tmp/p_dvq
  # tiny: synthetic pairs, a few epochs; seconds (used by the tests)
  python -m dtr.main --config=configs/predictive.py:method=ammi,tiny --workdir=/tmp/p_tiny
  # the user's own pairs: a CSV with columns x, y (and optionally a group column)
  python -m dtr.main --config=configs/predictive.py:method=ammi --config.data.source=csv \
      --config.data.path=pairs.csv --workdir=/tmp/p_csv
  # any field: --config.model.x_encoder_order=1 --config.model.entropy_weight=3 --config.num_epochs=15

Measured (20news thread pairs, 32 bits, seed 0, these defaults, 2 shared CPU cores; test has 612 pairs, so
chance is 16.3% @100 and 1.6% @10; TF-IDF cosine, no hashing, scores 78.1% and 54.2%):

  method                        test @100   test @10   best epoch / run   wall
  ammi (o=0, h=0, r=3, beta=2)    71.6        22.2        23 / 30          62 s
  ammi, x_encoder_order=1         71.7        21.2        14 / 21          54 s
  dvq (conditional)               59.3        19.4        12 / 19         134 s
  bmsh (conditional, KL 1)        27.5         4.9         3 / 10          64 s
  bmsh, model.kl_weight=0.1       45.3        12.3        12 / 15 (cap)   129 s

The mixture-prior KL pulls BMSH's codes onto its 10 components (236 distinct codes among the 612 test X at
KL weight 1, 609 at 0.1): good for label precision, bad for telling pairs apart.

Arguments: method (ammi, bmsh, dvq), bits, tiny (the test configuration), runlocal (few epochs).
The loop fields follow configs/ammi.py: batch 64, patience 6 (early stopping on validation matching
accuracy@100); results.json holds valid and test matching accuracy@100 and @10.
"""

import ml_collections

from dtr import config_utils
from dtr.data import pairs
from dtr.methods import predictive

METHODS = {'ammi': 'predictive_ammi', 'bmsh': 'conditional_bmsh', 'dvq': 'conditional_dvq'}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_utils.parse_arg(arg, method='ammi', bits=32, tiny=False, runlocal=False)
  if arg.method not in METHODS:
    raise ValueError(f'Unknown predictive method {arg.method!r}; known: {sorted(METHODS)}.')
  config = ml_collections.ConfigDict(dict(
      task='predictive',             # dtr.main dispatches to dtr.predictive_train
      seed=0,
      batch_size=64,
      num_epochs=50,
      patience=6,                    # epochs without a better validation matching accuracy before stopping
      steps_per_call=64,             # train steps fused into one jitted lax.scan
      checkpoint_every_steps=2000,   # plus one at the end of every epoch
      checkpoint_keep=2,
      eval_k=100,                    # early stopping on validation matching accuracy@eval_k
      report_ks=(100, 10),           # results.json: matching accuracy@K on valid and test
      eval_batch_size=1024,
      multihost=False,
      data=pairs.default_pairs_config(),
      model=predictive.default_model_config(METHODS[arg.method]),
  ))
  config.model.bits = arg.bits
  if arg.tiny:
    config.data.source = 'synthetic'
    config.data.synthetic.update(num_train=512, num_valid=128, num_test=128, vocab_size=300, num_topics=16)
    config.update(batch_size=32, num_epochs=5, patience=100, steps_per_call=8, eval_k=10, report_ks=(10, 5),
                  checkpoint_every_steps=1000)
    config.model.bits = 16 if arg.bits == 32 else arg.bits
    if arg.method == 'ammi':
      config.model.learning_rate = 0.03
    else:
      config.model.encoder_hidden = (64,)
      config.model.learning_rate = 3e-3
  if arg.runlocal:
    config.num_epochs = 3
  return config
