"""Helpers for ml_collections config files in the big_vision style (`--config=file.py:key=value,flag`).

The configs live in the repository's top-level `configs/` folder, installed as the package `dtr.configs`;
`load_config_module('ammi')` imports it from there, and `resolve_config_argv` lets
`--config=configs/ammi.py:...` name the installed file when the current directory has no `configs/`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pathlib

import ml_collections


def configs_dir() -> pathlib.Path:
  """The folder of dtr's config files (installed or in the checkout)."""
  import dtr.configs  # pylint: disable=g-import-not-at-top
  return pathlib.Path(dtr.configs.__file__).resolve().parent


def load_config_module(name: str):
  """The module `dtr.configs.<name>` (configs/<name>.py), freshly executed (configs may be edited between
  calls, and a module's globals must not leak from one config to the next)."""
  module = importlib.import_module(f'dtr.configs.{name}')
  return importlib.reload(module)


def resolve_config_argv(argv: list[str]) -> list[str]:
  """argv with `--config=configs/X.py[:args]` pointing at dtr's installed configs when that path does not
  exist from the current directory (so `python -m dtr.main` works from anywhere after `pip install`)."""
  out = []
  for item in argv:
    if item.startswith('--config=') or item.startswith('--config '):
      value = item[len('--config='):]
      path, sep, args = value.partition(':')
      if not os.path.exists(path) and pathlib.Path(path).parent.name == 'configs':
        installed = configs_dir() / pathlib.Path(path).name
        if installed.exists():
          item = f'--config={installed}{sep}{args}'
    out.append(item)
  return out


def get_dotted(config, dotted: str):
  """config['a']['b'] for 'a.b'; ValueError naming the path when a part is missing."""
  node = config
  for part in dotted.split('.'):
    if part not in node:
      raise ValueError(f'{dotted!r} is not a config field (no {part!r} there).')
    node = node[part]
  return node


def set_dotted(config, dotted: str, value) -> None:
  """config['a']['b'] = value for 'a.b', for an existing field only (ValueError otherwise)."""
  get_dotted(config, dotted)
  parent, _, leaf = dotted.rpartition('.')
  (get_dotted(config, parent) if parent else config)[leaf] = value


def settings_digest(config: ml_collections.ConfigDict) -> str:
  """10 hex digits identifying every field of `config` but its seed: the name of a benchmark cell's folder,
  shared by the seeds of one setting, so changed settings never read another setting's results."""
  settings = config.to_dict()
  settings.pop('seed', None)
  return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:10]


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses 'a=1,b=x,flag' into a ConfigDict over `defaults` (types follow the defaults; bare words = True).

  A default that is a type (float, int) is an optional argument: None unless named, then converted to it, so
  that no value of the type has to stand for "not given" (commitment=-0.5 reaches the model config and its
  check instead of meaning the default). A default of None keeps the named value as its string.

  `tiny` trains on the built-in synthetic corpus, so an explicit `dataset=` other than synthetic beside it is
  refused: it would be ignored, and a smoke run meant for the user's data would quietly run on made-up text.
  """
  out = ml_collections.ConfigDict({k: None if isinstance(v, type) else v for k, v in defaults.items()})
  named = set()
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if key not in defaults:
      raise ValueError(f'Unknown config argument {key!r} in {arg!r}; known: {sorted(defaults)}.')
    named.add(key)
    if not sep:
      out[key] = True
    elif isinstance(defaults[key], bool):
      out[key] = value.lower() in ('1', 'true', 'yes')
    elif defaults[key] is None:
      out[key] = value
    else:
      optional = isinstance(defaults[key], type)
      kind = defaults[key] if optional else type(defaults[key])
      try:
        out[key] = kind(value)
      except ValueError:
        raise ValueError(f'Config argument {key}={value!r} must be of type {kind.__name__} '
                         f'({"not set by default" if optional else f"default {defaults[key]!r}"}).') from None
  if out.get('tiny') and 'dataset' in named and out.dataset != 'synthetic':
    raise ValueError(f'tiny trains on the built-in synthetic corpus, so dataset={out.dataset} would be ignored: '
                     f'drop tiny to train on {out.dataset} (with runlocal: one epoch), or drop dataset=.')
  return out
