r"""Predictive document hashing (Stratos & Wiseman, ICML 2020, the second task): AMMI with q(z|X) against
conditional BMSH and DVQ, scored by matching accuracy on thread pairs of 20 Newsgroups.

Runs (from the repository root):

  # real pairs (<data_dir>/raw/20news-bydate.tar.xz; synthetic pairs, loudly announced, if no data folder is set)
  DTR_DATA_DIR=../shared/data python -m dtr.main --config=configs/predictive.py:method=ammi,bits=32 --workdir=/tmp/p_ammi
  DTR_DATA_DIR=../shared/data python -m dtr.main --config=configs/predictive.py:method=bmsh,bits=32 --workdir=/tmp/p_bmsh
  DTR_DATA_DIR=../shared/data python -m dtr.main --config=configs/predictive.py:method=dvq,bits=32 --workdir=/tmp/p_dvq
  # tiny: synthetic pairs, a few epochs; seconds (used by the tests)
  python -m dtr.main --config=configs/predictive.py:method=ammi,tiny --workdir=/tmp/p_tiny
  # the user's own pairs: a CSV with columns x, y (and optionally a group column)
  python -m dtr.main --config=configs/predictive.py:method=ammi --config.data.source=csv \
      --config.data.path=pairs.csv --workdir=/tmp/p_csv
  # any field: --config.model.x_encoder_order=1 --config.model.entropy_weight=3 --config.num_epochs=15

Arguments: method (ammi, bmsh, dvq), bits, tiny (the test configuration), runlocal (few epochs). The loop
fields are configs/common.py's with batch 64, at most 50 epochs and patience 6 (early stopping on
validation matching accuracy@100); results.json holds valid and test matching accuracy@100 and @10
(`test/matching@100`, ...). Measured results: docs/results/predictive.md.
"""

import ml_collections

from dtr import config_utils
from dtr.configs import common
from dtr.data import pairs
from dtr.methods import predictive

METHODS = {'ammi': 'predictive_ammi', 'bmsh': 'conditional_bmsh', 'dvq': 'conditional_dvq'}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_utils.parse_arg(arg, method='ammi', bits=32, tiny=False, runlocal=False)
  if arg.method not in METHODS:
    raise ValueError(f'Unknown predictive method {arg.method!r}; known: {sorted(METHODS)}.')
  config = common.get_config()
  config.update(batch_size=64, num_epochs=50, patience=6, tensorboard=False, progress_bar=False)
  common.set_evals(config, ['matching@100', 'matching@10'], 'matching@100')
  config.data = pairs.default_pairs_config()
  config.model = predictive.default_model_config(METHODS[arg.method])
  config.model.bits = arg.bits
  if arg.tiny:
    config.data.source = 'synthetic'
    config.data.synthetic.update(num_train=512, num_valid=128, num_test=128, vocab_size=300, num_topics=16)
    config.update(batch_size=32, num_epochs=5, patience=100, steps_per_call=8, checkpoint_every_steps=1000)
    common.set_evals(config, ['matching@10', 'matching@5'], 'matching@10')
    config.model.bits = 16 if arg.bits == 32 else arg.bits
    if arg.method == 'ammi':
      config.model.learning_rate = 0.03
    else:
      config.model.encoder_hidden = (64,)
      config.model.learning_rate = 3e-3
  if arg.runlocal:
    config.num_epochs = 3
  return config
