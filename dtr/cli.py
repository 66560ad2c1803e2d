"""What dtr's command lines share: short messages for user errors, help that lists the configs.

A user error (a bad config field or value, missing or malformed data, an unreadable checkpoint, impossible
settings, a diverged run) prints one message naming the field or path and the fix, and exits with status 2;
`--verbose` (or DTR_DEBUG=1) shows the traceback instead. Errors of dtr itself keep their traceback.
"""

from __future__ import annotations

import ast
import difflib
import os
import pathlib
import sys

USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, NotImplementedError, FloatingPointError)


def _is_user_error(error: BaseException) -> bool:
  from dtr import checkpoint  # pylint: disable=g-import-not-at-top
  return isinstance(error, USER_ERRORS + (checkpoint.CheckpointError,)) and type(error).__module__ != 'jaxlib'


def guarded(command, argv: list[str]) -> None:
  """Calls `command(argv)` with user errors as one-line messages (exit 2) unless `argv` holds --verbose (which
  is removed) or DTR_DEBUG=1."""
  verbose = '--verbose' in argv or os.environ.get('DTR_DEBUG') == '1'
  argv = [a for a in argv if a != '--verbose']
  try:
    command(argv)
  except SystemExit:
    raise
  except Exception as error:  # pylint: disable=broad-except
    if verbose or not _is_user_error(error):
      raise
    message = str(error).strip().strip('"')
    print(f'dtr: error: {message}\n(run again with --verbose for the traceback)', file=sys.stderr, flush=True)
    sys.exit(2)


def run(main, argv: list[str] | None = None) -> None:
  """`absl.app.run(main)` with user errors as one-line messages (exit 2) unless --verbose is given."""
  from absl import app  # pylint: disable=g-import-not-at-top
  guarded(lambda args: app.run(main, argv=args), list(sys.argv if argv is None else argv))


def fail(message: str) -> None:
  print(f'dtr: error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)


# ------------------------------------------------------------------------------------------------ help
def config_summaries(folder: pathlib.Path) -> list[tuple[str, str, str]]:
  """(file name, first docstring line, its 'Arguments:' paragraph) of every config file, without importing
  them (importing a config imports JAX)."""
  out = []
  for path in sorted(folder.glob('*.py')):
    if path.name.startswith('_') or path.name == 'common.py':
      continue
    doc = ast.get_docstring(ast.parse(path.read_text())) or ''
    lines = doc.splitlines()
    first = lines[0] if lines else ''
    arguments = ''
    for i, line in enumerate(lines):
      if line.startswith(('Arguments:', 'Methods:')) or line.startswith('Arguments'):
        para = []
        for rest in lines[i:]:
          if not rest.strip():
            break
          para.append(rest.strip())
        arguments = ' '.join(para)
        break
    out.append((path.name, first, arguments))
  return out


def print_help(program: str) -> None:
  from dtr import config_utils  # pylint: disable=g-import-not-at-top
  folder = config_utils.configs_dir()
  print(f'usage: python -m {program} --config=configs/FILE.py[:ARG=VALUE,...] --workdir=DIR [--config.FIELD=VALUE ...]\n'
        '\n'
        'Trains (or fits) the method a config describes, keeps the best model on validation, and writes codes,\n'
        'parameters and results.json into DIR; running the same command again resumes from its checkpoints.\n'
        '\n'
        f'Configs (in {folder}; each file\'s docstring has runnable commands):')
  for name, first, arguments in config_summaries(folder):
    print(f'\n  configs/{name}: {first}')
    if arguments:
      import textwrap  # pylint: disable=g-import-not-at-top
      print(textwrap.indent(textwrap.fill(arguments, 100), '      '))
  print('\nOther flags:\n'
        '  --show_config     print every field of the config (with the arguments and overrides applied) and exit\n'
        '  --verbose         show tracebacks of user errors (default: one message, exit status 2)\n'
        '  --helpfull        absl\'s full flag listing\n'
        '\nAny field can be overridden: --config.model.learning_rate=0.01 --config.data.data_dir=/data ...\n'
        'A population (--config.population=P) draws what population_search names, declared or not:\n'
        '  "--config.population_search.learning_rate=log_uniform(1e-4,1e-2)"\n'
        'Data: $DTR_DATA_DIR (or --config.data.data_dir); without any data folder the hashing configs train on\n'
        'the built-in synthetic corpus and say so. Compilation cache: $DTR_COMPILATION_CACHE (~/.cache/dtr/jax;\n'
        '0 = off); prepared corpora: $DTR_TFDS_DIR (~/.cache/dtr/tfds).')


# ------------------------------------------------------------------------------------------------ overrides
# Fields a config adds only when its argument asks for them (so that other configs keep their settings
# digests, the benches' cell names): the argument that adds each.
ASKED_BY_ARGUMENT = {'data.length_buckets': 'buckets=W', 'data.pad_to_multiple_of': 'pad_to_multiple_of=M',
                     'data.feature_standardize': 'normalize=feature'}


SEARCH_PREFIX = '--config.population_search.'


def take_search_specs(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """(argv without its `--config.population_search.NAME=SPEC` items, {NAME: SPEC}).

  population_search maps a method's population hyperparameters to what members 1..P-1 draw; a config declares
  only some (or none), so a command line may name any of them: `apply_search_specs` adds them to the config,
  and the population refuses a name its method cannot vary, listing those it can."""
  rest, specs = [], {}
  for item in argv:
    whole = item.startswith(SEARCH_PREFIX[:-1] + '=')
    if not item.startswith(SEARCH_PREFIX) and not whole:
      rest.append(item)
      continue
    name, sep, spec = item[len(SEARCH_PREFIX):].partition('=')
    if whole or not sep or not name or '.' in name:
      fail(f'{item}: write {SEARCH_PREFIX}NAME=SPEC, e.g. "{SEARCH_PREFIX}learning_rate=log_uniform(1e-4,1e-2)" '
           '(quoted: the shell reads parentheses).')
    specs[name] = spec
  return rest, specs


def apply_search_specs(config, specs: dict[str, str]) -> None:
  """Sets config.population_search[NAME] = SPEC for each (`take_search_specs`), declared or not."""
  if specs:
    with config.unlocked():
      config.population_search.update(specs)


def check_config(argv: list[str]) -> None:
  """Builds the config of `--config=FILE:ARGS` once before absl does, so that a bad file, argument or
  `--config.a.b=value` override fails with one message: the valid fields (and the closest match) for an
  override that names no field."""
  overrides = [a[len('--config.'):].split('=', 1)[0] for a in argv if a.startswith('--config.')]
  spec = next((a[len('--config='):] for a in argv if a.startswith('--config=')), None)
  if spec is None:
    return
  path, _, arg = spec.partition(':')
  if not os.path.exists(path):
    fail(f'--config={spec}: no config file {path}. {_list_configs()}')
  verbose = '--verbose' in argv or os.environ.get('DTR_DEBUG') == '1'
  try:
    config = load_config_file(path, arg or None)
  except Exception as error:  # pylint: disable=broad-except
    if verbose or not _is_user_error(error):
      raise
    fail(f'--config={spec}: {str(error).strip()}')
  for dotted in overrides:
    node, walked = config, []
    for part in dotted.split('.'):
      keys = list(node.keys()) if hasattr(node, 'keys') else []
      if part not in keys:
        where = '.'.join(['config'] + walked)
        close = difflib.get_close_matches(part, keys, n=1)
        hint = f' Did you mean {where}.{close[0]}?' if close else ''
        if dotted in ASKED_BY_ARGUMENT:
          asked = ASKED_BY_ARGUMENT[dotted]
          hint = (f' It exists only when the config argument asks for it: add {asked} to the --config string '
                  f'(--config={path}:{arg + "," if arg else ""}{asked}).')
        fail(f'--config.{dotted}: {where} has no field {part!r}.{hint} Its fields: {", ".join(sorted(keys))}.')
      node = node[part]
      walked.append(part)


def load_config_file(path: str, arg: str | None):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('dtr_cli_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _list_configs() -> str:
  from dtr import config_utils  # pylint: disable=g-import-not-at-top
  names = [n for n, _, _ in config_summaries(config_utils.configs_dir())]
  return f'Configs: {", ".join("configs/" + n for n in names)} (python -m dtr.main --help lists their arguments).'
