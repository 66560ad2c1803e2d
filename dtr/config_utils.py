"""Helpers for ml_collections config files in the big_vision style (`--config=file.py:key=value,flag`)."""

import ml_collections


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
