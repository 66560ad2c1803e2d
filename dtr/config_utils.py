"""Helpers for ml_collections config files in the big_vision style (`--config=file.py:key=value,flag`)."""

import importlib.util
import pathlib

import ml_collections

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / 'configs'


def load_config_module(name: str):
  """The module of configs/{name}.py (a file, not a package: loaded by path, executed afresh each call)."""
  spec = importlib.util.spec_from_file_location(f'{name}_config', CONFIG_DIR / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


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


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses 'a=1,b=x,flag' into a ConfigDict over `defaults` (types follow the defaults; bare words = True)."""
  out = ml_collections.ConfigDict(dict(defaults))
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if key not in defaults:
      raise ValueError(f'Unknown config argument {key!r} in {arg!r}; known: {sorted(defaults)}.')
    if not sep:
      out[key] = True
    elif isinstance(defaults[key], bool):
      out[key] = value.lower() in ('1', 'true', 'yes')
    elif defaults[key] is None:
      out[key] = value
    else:
      out[key] = type(defaults[key])(value)
  return out
