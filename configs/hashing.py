r"""Document-hashing baselines: LSH, BOW, PCA (spectral), NASH, BMSH, DVQ and a binary autoencoder.

Runs (from the repository root):

  # a non-learned baseline: fitted on the training split in seconds, same outputs as a trained run
  DTR_DATA_DIR=../shared/data python -m dtr.main --config=configs/hashing.py:method=lsh,dataset=ng20,bits=32 --workdir=/tmp/lsh
  # a learned baseline through the shared loop (early stopping on validation precision@100)
  DTR_DATA_DIR=../shared/data python -m dtr.main --config=configs/hashing.py:method=nash,dataset=ng20,bits=32 --workdir=/tmp/nash
  # tiny: the synthetic corpus, a few epochs; seconds (used by the tests)
  python -m dtr.main --config=configs/hashing.py:method=dvq,tiny --workdir=/tmp/dvq_tiny
  # any field: --config.model.codebook_update=loss --config.model.num_components=20 --config.seed=1

Arguments: method (bow, lsh, spectral, nash, bmsh, dvq, binary_ae), dataset, bits, tiny (the test
configuration), runlocal (few epochs). The loop fields (epochs, patience, evaluation) are those of
configs/common.py. The learned baselines train with batch 256 and Adam 3e-3, 30 epochs at most: 4x the
papers' batch 64 and 1e-3 at a quarter of the steps (NASH, NG20, 32 bits: test P@100 37.67 in 30 epochs,
against 37.51 in 50 epochs with batch 64 and 1e-3); `--config.batch_size=64 --config.model.learning_rate=1e-3`
restores the papers' setting.
"""

import ml_collections

from dtr import config_utils
from dtr.configs import common
from dtr.methods import baselines, dvq, vae_hashing

METHODS = ('bow', 'lsh', 'spectral', 'nash', 'bmsh', 'dvq', 'binary_ae')


def model_config(method: str) -> ml_collections.ConfigDict:
  if method in baselines.NAMES:
    return baselines.default_model_config(method)
  if method in ('nash', 'bmsh', 'binary_ae'):
    return vae_hashing.default_model_config(method)
  if method == 'dvq':
    return dvq.default_model_config()
  raise ValueError(f'Unknown hashing method {method!r}; known: {METHODS} (AMMI: configs/ammi.py).')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = config_utils.parse_arg(arg, method='nash', dataset='ng20', bits=32, tiny=False, runlocal=False)
  config = common.get_config()
  config.model = model_config(arg.method)
  config.data.name = arg.dataset
  config.model.bits = arg.bits
  config.update(batch_size=256, num_epochs=30, patience=6)
  if 'learning_rate' in config.model:
    config.model.learning_rate = 3e-3
  if arg.tiny:
    common.tiny_synthetic(config)
    common.set_evals(config, ['precision@10'], 'precision@10')
    config.update(patience=100, checkpoint_every_steps=1000)
    config.model.bits = 16 if arg.bits == 32 else arg.bits
    if 'encoder_hidden' in config.model:
      config.model.encoder_hidden = (64,)
      config.model.learning_rate = 3e-3
  if arg.runlocal:
    config.update(num_epochs=3)
  return config
