r"""Entry point: `python -m dtr.main --config=configs/X.py[:args] --workdir=DIR [--config.x=y ...]`.

`--help` lists the configs and their arguments; `--show_config` prints every field of a config and exits.
"""

import sys

from absl import flags, logging
from ml_collections import config_flags

from dtr import cli, config_utils

_CONFIG = config_flags.DEFINE_config_file('config', None, 'ml_collections config file (path[:arguments]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder for checkpoints, TensorBoard logs, codes and results. '
                               'A run resumes from the latest checkpoint found there.')
_SHOW = flags.DEFINE_bool('show_config', False, 'Print the config (arguments and overrides applied) and exit.')
_SEARCH: dict[str, str] = {}  # --config.population_search.NAME=SPEC items (`cli.take_search_specs`)


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments {argv[1:]}; flags are written --name=value (python -m dtr.main --help).')
  if _CONFIG.value is None:
    cli.fail('--config is required, e.g. --config=configs/ammi.py:tiny (python -m dtr.main --help lists them).')
  cli.apply_search_specs(_CONFIG.value, _SEARCH)
  if _SHOW.value:
    print(_CONFIG.value)
    return
  if not _WORKDIR.value:
    cli.fail('--workdir is required: the folder for checkpoints, codes and results.json.')
  logging.set_verbosity(logging.INFO)
  from dtr import runtime, train  # pylint: disable=g-import-not-at-top
  runtime.setup()
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


def run():
  argv = config_utils.resolve_config_argv(sys.argv)
  if any(a in ('--help', '-h', '-?') for a in argv[1:]):
    cli.print_help('dtr.main')
    sys.exit(0)
  argv, specs = cli.take_search_specs(argv)
  _SEARCH.update(specs)
  sys.argv = cli.take_search_specs(sys.argv)[0]  # config_flags reads its overrides from sys.argv too
  cli.check_config(argv)
  cli.run(main, argv)


if __name__ == '__main__':
  run()
