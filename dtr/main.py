r"""Entry point: `python -m dtr.main --config=configs/ammi.py[:args] --workdir=DIR [--config.x=y ...]`."""

from absl import app, flags, logging
from ml_collections import config_flags

from dtr import train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'ml_collections config file (path[:arguments]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for checkpoints, TensorBoard logs, codes and results. '
                               'A run resumes from the latest checkpoint found there.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  # orbax reports every save step by step at INFO; keep dtr's own progress readable.
  logging.get_absl_handler().addFilter(lambda record: 'orbax' not in record.pathname)
  config = _CONFIG.value
  if config.get('task', '') == 'predictive':  # pairs of texts: configs/predictive.py
    from dtr import predictive_train
    predictive_train.train_and_evaluate(config, _WORKDIR.value)
  elif config.get('population', 0) > 0:
    from dtr import population
    population.train_population(config, _WORKDIR.value)
  else:
    train.train_and_evaluate(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
