"""`load_corpus(config.data)`: one entry point for every corpus dtr reads."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import sys

import ml_collections

from dtr.data import corpus as corpus_lib
from dtr.data import hashing
from dtr.data import raw
from dtr.data import synthetic
from dtr.data import user

RAW_FILES = {'raw_20news': '20news-bydate.tar.xz',
             'raw_reuters': 'reuters_nltk.tar.xz'}
TEXT_SOURCES = ('raw_20news', 'raw_reuters', 'folder', 'csv')
# Bump when featurisation changes, so cached featurised corpora are rebuilt.
_FEATURIZE_VERSION = 1


def default_data_config() -> ml_collections.ConfigDict:
  """The `config.data` fields with their defaults.

  Fields:
    name: 'ng20' | 'reuters' | 'tmc' (document-hashing sets under
      <data_dir>/hashing), 'raw_20news' | 'raw_reuters' (tarballs under
      <data_dir>/raw, featurised by dtr), 'folder' (`path`: .txt files, label =
      subfolder name, or none), 'csv' (`path`: text and label columns),
      'synthetic', or 'tfds:<catalog name>' (a tfds text-classification set the
      user has prepared as array_record; never downloaded).
    data_dir: the folder that holds hashing/ and raw/; '' means $DTR_DATA_DIR.
    allow_synthetic: when a hashing set's data is not found, use the synthetic
      corpus instead (with a loud banner) rather than raise FileNotFoundError.
    format: 'npz' or 'mat' (the VDSH .tfidf.mat layout), for hashing sets.
    path: the user's folder or CSV file; for a hashing set, an explicit file.
    text_column, label_column, label_separator: CSV columns ('' label_column:
      unlabelled; a separator such as '|' allows several labels a row); also
      the feature names for 'tfds:' sets.
    catalog_dir: where prepared tfds catalog sets live ('' = tfds default).
    tokenizer: 'regex' (lower-cased words) or 'sentencepiece' (a unigram model
      of `vocab_size` pieces trained on the training split, in memory).
    vocab_size, min_df, max_df, stop_words: vocabulary from the training split:
      at most vocab_size terms in >= min_df docs and <= max_df of docs;
      stop_words 'english' (built-in list) or 'none'.
    valid_fraction, test_fraction, split_seed: the seeded random split of user
      corpora that have none (split_seed also halves the raw test sets into
      valid/test).
    max_docs_per_split: keep a seeded random subset of at most this many docs a
      split (0: all); for quick runs on raw text.
    empty_docs: 'drop' removes documents whose TF-IDF row is all zero (logging
      a warning with the split and count); 'error' raises ValueError naming
      the split and the first such rows.
    use_tfds: materialise the corpus as array_record through the tfds builder
      in `tfds_dir` and read it back (cached: a second load neither reads the
      source nor featurises); False reads the sources directly. Both give the
      same Splits. The synthetic corpus is always generated in memory.
    tfds_dir: '' means $DTR_TFDS_DIR, else ~/.cache/dtr/tfds.
    synthetic: the synthetic corpus (see dtr.data.synthetic): docs per split,
      vocabulary size, classes, topics, mean doc length, multi-label share,
      seed.
  """
  config = ml_collections.ConfigDict()
  config.name = 'ng20'
  config.data_dir = ''
  config.allow_synthetic = True
  config.format = 'npz'
  config.path = ''
  config.text_column = 'text'
  config.label_column = 'label'
  config.label_separator = ''
  config.catalog_dir = ''
  config.tokenizer = 'regex'
  config.vocab_size = 10000
  config.min_df = 3
  config.max_df = 0.8
  config.stop_words = 'english'
  config.valid_fraction = 0.1
  config.test_fraction = 0.1
  config.split_seed = 0
  config.max_docs_per_split = 0
  config.empty_docs = 'drop'
  config.use_tfds = True
  config.tfds_dir = ''
  config.synthetic = ml_collections.ConfigDict(dict(
      num_train=3000, num_valid=500, num_test=500, vocab_size=2000,
      num_classes=8, num_topics=16, doc_length=80, topic_concentration=0.05,
      multi_label_prob=0.0, seed=0))
  return config


def _merged(cfg) -> ml_collections.ConfigDict:
  """`cfg` over the defaults; unknown fields are an error (likely typos)."""
  merged = default_data_config()
  given = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
  unknown = set(given) - set(merged)
  unknown |= {f'synthetic.{k}' for k in given.get('synthetic', {})
              if k not in merged.synthetic}
  if unknown:
    raise ValueError(f'unknown data config fields {sorted(unknown)}')
  for key, value in given.items():
    if key == 'synthetic':
      merged.synthetic.update(value)
    else:
      merged[key] = value
  return merged


def load_corpus(cfg) -> corpus_lib.Corpus:
  """Loads the corpus `cfg` (a `config.data` ConfigDict or dict) describes."""
  cfg = _merged(cfg)
  name = cfg.name
  if name == 'synthetic':
    corpus = synthetic.make_corpus(**cfg.synthetic)
  elif name in hashing.HASHING_SETS:
    corpus = _load_hashing(cfg)
  elif name in TEXT_SOURCES or name.startswith('tfds:'):
    corpus = _load_text(cfg)
  else:
    raise ValueError(
        f'unknown corpus {name!r}: use one of {sorted(hashing.HASHING_SETS)}, '
        f"{list(TEXT_SOURCES)}, 'synthetic' or 'tfds:<catalog name>'")
  corpus_lib.check_finite(corpus)
  return corpus_lib.handle_empty_docs(corpus, cfg.empty_docs)


def data_dir_of(cfg) -> str:
  return cfg.data_dir or os.environ.get('DTR_DATA_DIR', '')


def tfds_dir_of(cfg) -> str:
  return os.path.expanduser(cfg.tfds_dir or os.environ.get('DTR_TFDS_DIR', '')
                            or '~/.cache/dtr/tfds')


def _digest(*parts) -> str:
  return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _safe(name: str) -> str:
  return re.sub(r'[^A-Za-z0-9_]', '_', name)


# ---------------------------------------------------------------- hashing sets

def _load_hashing(cfg) -> corpus_lib.Corpus:
  from dtr.data import tfds_builders  # pylint: disable=g-import-not-at-top
  name, data_dir = cfg.name, data_dir_of(cfg)
  if cfg.path:  # An explicit file: no layout to follow, no synthetic stand-in.
    path = cfg.path
    if not os.path.isfile(path):
      raise FileNotFoundError(hashing.missing_file_message(path, name, cfg.format))
    read = lambda: hashing.read_file(path, name)
    if not cfg.use_tfds:
      return read()
    config_name = f'{name}_file_{_digest(tfds_builders.file_fingerprint(path))}'
    return tfds_builders.read_prepared(
        tfds_builders.prepare_corpus(config_name, read, tfds_dir_of(cfg)))
  try:
    if not data_dir:
      expected = os.path.relpath(hashing.candidate_files('.', name, cfg.format)[0])
      raise FileNotFoundError(
          f'hashing set {name!r}: no data directory (config.data.data_dir is '
          f"empty and $DTR_DATA_DIR is unset), so {expected} was looked for "
          f'nowhere. {hashing.DATA_HELP} For example: '
          f'export DTR_DATA_DIR=/path/to/data, the folder that holds {expected}.')
    path = hashing.find_file(data_dir, name, cfg.format)
  except hashing.MissingTrainSplitError:
    raise  # The data is there but incomplete: say so, never substitute.
  except FileNotFoundError as e:
    if not cfg.allow_synthetic:
      raise
    _synthetic_banner(name, str(e))
    return synthetic.make_corpus(**cfg.synthetic)
  if not cfg.use_tfds:
    return hashing.read_file(path, name)
  return tfds_builders.read_prepared(tfds_builders.prepare_hashing(
      name, cfg.format, data_dir, tfds_dir_of(cfg)))


def _synthetic_banner(name: str, reason: str) -> None:
  rule = '=' * 78
  banner = '\n'.join([
      rule,
      f"dtr: NO REAL DATA FOR {name!r}: USING THE SYNTHETIC CORPUS INSTEAD.",
      reason,
      'Numbers measured on synthetic data are meaningless for papers and '
      'comparisons.',
      'To use the real data: export DTR_DATA_DIR=/path/to/data, the folder '
      'that holds hashing/reuters/reuters_vdsh.npz, hashing/ng20/ng20_vdsh.npz '
      '(or set config.data.data_dir). Set config.data.allow_synthetic=False to '
      'make missing data an error.',
      rule])
  print(banner, file=sys.stderr, flush=True)  # once, on stderr: absl logging also writes there


# ---------------------------------------------------------------- text sources

def _text_source(cfg):
  """(zero-arg TextCorpus reader, fingerprint of the source) for `cfg.name`."""
  from dtr.data import tfds_builders  # pylint: disable=g-import-not-at-top
  split_kw = dict(split_seed=cfg.split_seed,
                  max_docs_per_split=cfg.max_docs_per_split)
  user_kw = dict(split_kw, valid_fraction=cfg.valid_fraction,
                 test_fraction=cfg.test_fraction)
  if cfg.name in RAW_FILES:
    data_dir = data_dir_of(cfg)
    path = os.path.join(data_dir or '$DTR_DATA_DIR', 'raw', RAW_FILES[cfg.name])
    if not data_dir or not os.path.isfile(path):
      raise FileNotFoundError(
          f'{cfg.name}: {path} does not exist. Expected layout: '
          f'<data_dir>/raw/{RAW_FILES[cfg.name]} (the 20news-bydate tarball, '
          f"or NLTK's reuters corpus packed as reuters/{{training,test,cats.txt}}). "
          f'Set DTR_DATA_DIR (or config.data.data_dir) to the folder that holds raw/.')
    reader = raw.read_20news if cfg.name == 'raw_20news' else raw.read_reuters
    return (lambda: reader(path, **split_kw)), tfds_builders.file_fingerprint(path)
  if cfg.name == 'folder':
    root = pathlib.Path(cfg.path)
    listing = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                     for p in root.rglob('*.txt')) if root.is_dir() else []
    return (lambda: user.read_folder(cfg.path, **user_kw)), {
        'path': str(root.resolve()), 'files': _digest(listing)}
  if cfg.name == 'csv':
    columns = dict(text_column=cfg.text_column, label_column=cfg.label_column,
                   label_separator=cfg.label_separator)
    fingerprint = (tfds_builders.file_fingerprint(cfg.path)
                   if os.path.isfile(cfg.path) else {'path': cfg.path})
    return (lambda: user.read_csv(cfg.path, **columns, **user_kw)), fingerprint
  catalog_name = cfg.name[len('tfds:'):]
  read = lambda: user.read_tfds_catalog(
      catalog_name, catalog_dir=cfg.catalog_dir, text_column=cfg.text_column,
      label_column=cfg.label_column, **user_kw)
  return read, {'catalog': catalog_name, 'catalog_dir': cfg.catalog_dir,
                'env': os.environ.get('TFDS_DATA_DIR', '')}


def _load_text(cfg) -> corpus_lib.Corpus:
  from dtr.data import tfds_builders  # pylint: disable=g-import-not-at-top
  read, fingerprint = _text_source(cfg)
  featurize_kw = dict(tokenizer=cfg.tokenizer, vocab_size=cfg.vocab_size,
                      min_df=cfg.min_df, max_df=cfg.max_df,
                      stop_words=cfg.stop_words)
  make = lambda: raw.featurize_text_corpus(read(), **featurize_kw)
  if not cfg.use_tfds:
    return make()
  settings = dict(featurize_kw, split_seed=cfg.split_seed,
                  max_docs_per_split=cfg.max_docs_per_split,
                  valid_fraction=cfg.valid_fraction,
                  test_fraction=cfg.test_fraction, text_column=cfg.text_column,
                  label_column=cfg.label_column,
                  label_separator=cfg.label_separator,
                  version=_FEATURIZE_VERSION)
  config_name = f'{_safe(cfg.name)}_{_digest(fingerprint, settings)}'
  return tfds_builders.read_prepared(
      tfds_builders.prepare_corpus(config_name, make, tfds_dir_of(cfg)))
