"""Where the persistent compilation cache lives, and the log filter."""

import logging

from dtr import runtime


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv('DTR_COMPILATION_CACHE', '0')
  assert runtime.cache_dir() == ''
  monkeypatch.setenv('DTR_COMPILATION_CACHE', str(tmp_path / 'c'))
  assert runtime.cache_dir() == str(tmp_path / 'c')
  monkeypatch.delenv('DTR_COMPILATION_CACHE')
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert runtime.cache_dir() == str(tmp_path / 'xdg' / 'dtr' / 'jax')


def _record(level, message, pathname='/x/dtr/train.py'):
  return logging.LogRecord('absl', level, pathname, 1, message, None, None)


def test_log_filter_drops_library_noise_only():
  keep = runtime._Filter().filter  # pylint: disable=protected-access
  assert not keep(_record(logging.INFO, 'Downloading and preparing dataset 1 MiB'))
  assert not keep(_record(logging.WARNING, 'Using custom data configuration: CorpusConfig(...)'))
  assert not keep(_record(logging.INFO, 'Summary name valid/precision@100 is illegal; using valid/precision_100'))
  assert not keep(_record(logging.INFO, 'Saved step 3', pathname='/site-packages/orbax/checkpoint/x.py'))
  assert keep(_record(logging.WARNING, 'saving failed', pathname='/site-packages/orbax/checkpoint/x.py'))
  assert keep(_record(logging.WARNING, 'dropping 3 empty documents'))
  assert keep(_record(logging.ERROR, 'Using custom data configuration, and then it broke'))
  assert keep(_record(logging.INFO, 'Data ng20: 10257 / 3405 / 3405 train / valid / test'))
