"""`load_corpus(config.data)`: one entry point for every corpus dtr reads.

Recipes (<data_dir> is config.data.data_dir, else $DTR_DATA_DIR):

  ng20, reuters, tmc  <data_dir>/hashing/<name>/<name>_vdsh.npz (format='npz': TF-IDF, counts, labels,
                      vocabulary) or <name>_vdsh.tfidf.mat / <name>.tfidf.mat (format='mat'), their own
                      train/cv/test splits; bags of words only (no text, no tokens).
  raw_20news          <data_dir>/raw/20news-bydate.tar.xz: train as is, the test posts halved (seeded) into
                      valid/test, headers, quotes and signatures removed; 20 single labels (the groups).
  raw_reuters         <data_dir>/raw/reuters_nltk.tar.xz (NLTK's ApteMod): the 20 categories most frequent in
                      train, multi-label; test documents with one of them halved into valid/test.
  dbpedia14, yahoo10  <data_dir>/text/<name>/{valid,test}.txt and {valid,test}_class_label.txt (0-based, one a
                      line): valid.txt is the training pool, a seeded permutation splits it 12000/2000
                      (dbpedia14) or 8500/1500 (yahoo10) into train/valid; test.txt (14000 / 10000) is test.
  ptb, yahoo_lm       <data_dir>/lm/ptb, <data_dir>/lm/yahoo: val.txt, one sentence a line, is the pool split
                      90/10 into train/valid (seeded), test.txt the test set; no labels.
  20news_clean        <data_dir>/bow/20news_clean/{train,test}.feat (NVDM `1 id:count ...`, ids 1-based) and
                      vocab (`word id`): counts as given, 10% of train held out as valid (seeded), TF-IDF from
                      the counts with the training split's idf; V = 1994, no labels, no text.
  csv                 config.data.path: one document a row; text_column / label_column by header name or
                      0-based number (csv_header=False: numbers only), several text columns joined with '+';
                      label_offset (or integer_labels) for integer class numbers; a seeded random split.
  folder              config.data.path: .txt files, labelled by subfolder name (or not), optionally inside
                      train/valid/test subfolders; a seeded random split of what is missing.
  tfds:<name>         a tfds catalog set prepared as array_record under catalog_dir / $TFDS_DATA_DIR (never
                      downloaded); text_column names its text feature(s) ('title+description').
  synthetic           generated in memory (dtr.data.synthetic), with counts, TF-IDF and token sequences.

More unlabelled training text: `extra_train` (absent from the defaults; `dtr.data.extra`) names files of one
document a line, '+' between them, appended to the training split of a corpus made from text as unlabelled
documents (after its split, before its vocabularies; those that repeat a valid or test document dropped), e.g.
yahoo10 with extra_train='lm/yahoo/val.txt+lm/yahoo/test.txt'. Label budgets draw from labelled rows only.

Every corpus made from text (raw_*, dbpedia14, yahoo10, ptb, yahoo_lm, csv, folder, tfds:, synthetic) carries
both a bag of words (TF-IDF and counts through the `Featurizer`: tokenizer, vocab_size, min_df, max_df,
stop_words) and token sequences with their texts (`tokenize.Vocabulary`: token_tokenizer, token_vocab_size,
token_min_count, max_len). The seeded splits all use config.data.split_seed (default 0).

Missing data: when a data folder is named (data_dir or $DTR_DATA_DIR) and the corpus' files are not in it,
FileNotFoundError names the path searched and the files expected. Only when no folder is named at all, and
allow_synthetic is True, the synthetic corpus stands in, announced by a loud banner on stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import sys

from absl import logging
import ml_collections
from ml_collections import config_dict

from dtr.data import corpus as corpus_lib
from dtr.data import extra
from dtr.data import hashing
from dtr.data import raw
from dtr.data import shared_sets
from dtr.data import synthetic
from dtr.data import user

RAW_FILES = {'raw_20news': '20news-bydate.tar.xz',
             'raw_reuters': 'reuters_nltk.tar.xz'}
TEXT_SOURCES = ('raw_20news', 'raw_reuters', 'folder', 'csv') + tuple(shared_sets.TEXT_SETS)
# Bump when featurisation changes, so cached featurised corpora are rebuilt.
_FEATURIZE_VERSION = 2


def default_data_config() -> ml_collections.ConfigDict:
  """The `config.data` fields with their defaults.

  Fields:
    name: the corpus; each recipe in full (files, splits, sizes) is in the
      `dtr.data.load` module docstring. In short:
      'ng20' | 'reuters' | 'tmc': hashing sets, <data_dir>/hashing/<name>/,
        their own train/cv/test splits, bags of words only;
      'raw_20news' | 'raw_reuters': tarballs under <data_dir>/raw, featurised
        by dtr, the test documents halved (seeded) into valid/test;
      'dbpedia14' | 'yahoo10': <data_dir>/text/<name>/{valid,test}.txt and
        {valid,test}_class_label.txt; valid.txt split (seeded) 12000/2000 |
        8500/1500 into train/valid; test.txt (14000 | 10000) the test set;
      'ptb' | 'yahoo_lm': <data_dir>/lm/{ptb,yahoo}/{val,test}.txt, one
        sentence a line; val.txt split 90/10 into train/valid, test.txt the
        test set; no labels;
      '20news_clean': <data_dir>/bow/20news_clean/{train,test}.feat + vocab
        (NVDM counts, V = 1994), 10% of train held out as valid; TF-IDF from
        the counts; no labels, no text;
      'folder' (`path`: .txt files, label = subfolder name, or none), 'csv'
        (`path`: text and label columns), 'synthetic', or 'tfds:<catalog
        name>' (a tfds text-classification set the user has prepared as
        array_record; never downloaded).
    data_dir: the folder that holds hashing/, raw/, text/, lm/ and bow/; ''
      means $DTR_DATA_DIR.
    allow_synthetic: when NO data folder is named (data_dir empty and
      $DTR_DATA_DIR unset), use the synthetic corpus instead (with a loud
      banner) rather than raise FileNotFoundError. A named folder that lacks
      the files is always an error naming the path and the files expected.
    format: 'npz' or 'mat' (the VDSH .tfidf.mat layout), for hashing sets.
    path: the user's folder or CSV file; for a hashing set, an explicit file.
    text_column, label_column, label_separator: CSV columns, by header name or
      0-based number ('' label_column: unlabelled; a separator such as '|'
      allows several labels a row); text_column may join several columns with
      '+' ('title+description', '1+2'), separated by a space. Also the feature
      names for 'tfds:' sets.
    csv_header: False reads a headerless CSV (columns by number only).
    label_offset, integer_labels: CSV labels as integer class numbers, class =
      value - label_offset (1 for 1-based classes, e.g. AG News's test.csv);
      integer_labels=True with offset 0 for 0-based ones. A cell that is not
      an integer is then an error naming its line. Label names are '0'..'K-1'.
    catalog_dir: where prepared tfds catalog sets live ('' = tfds default).
    tokenizer: the bag-of-words tokenizer: 'regex' (lower-cased words) or
      'sentencepiece' (a unigram model of `vocab_size` pieces trained on the
      training split, in memory).
    vocab_size, min_df, max_df, stop_words: bag-of-words vocabulary from the
      training split: at most vocab_size terms in >= min_df docs and <= max_df
      of docs; stop_words 'english' (built-in list) or 'none'.
    tokens: build token sequences (Split.tokens, Corpus.token_vocab) for
      corpora made from text; texts are kept either way.
    token_tokenizer: 'whitespace' | 'regex' | 'kim' | 'sentencepiece' (see
      dtr.data.tokenize); '' = the corpus' default: 'whitespace' for the
      already tokenised shared sets (dbpedia14, yahoo10, ptb, yahoo_lm),
      'regex' for raw text (raw_*, csv, folder, tfds:).
    token_vocab_size: at most this many token ids, the 4 specials (pad 0,
      unk 1, bos 2, eos 3) included; words by decreasing training count.
    token_min_count: keep words seen at least this often in training.
    max_len: longer token sequences keep their first max_len tokens (the
      number cut is logged); 0 = no limit. Long-document corpora (raw_20news)
      want a limit for sequence models, e.g. 400.
    labels: the label budget for semi-supervised and downstream runs, 'all'
      or a number n of labelled training documents (see dtr.data.labels);
      the validation set for early stopping is always the corpus' valid split.
    label_seeds: how many random label subsamples (seeds) to draw for n.
    valid_fraction, test_fraction, split_seed: the seeded random split of user
      corpora that have none (split_seed also seeds every recipe's split).
    max_docs_per_split: keep a seeded random subset of at most this many docs a
      split (0: all); for quick runs on raw text.
    empty_docs: 'drop' removes documents whose TF-IDF row is all zero, or
      that have no tokens in a corpus with token sequences (logging a warning
      with the split and counts); 'error' raises ValueError naming the split
      and the first such rows.
    use_tfds: materialise the corpus as array_record through the tfds builder
      in `tfds_dir` and read it back (cached: a second load neither reads the
      source nor featurises); False reads the sources directly. Both give the
      same Splits. The synthetic corpus is always generated in memory.
    tfds_dir: '' means $DTR_TFDS_DIR, else ~/.cache/dtr/tfds.
    extra_train (optional, absent unless given): files of unlabelled
      documents, one a line, '+' between files, added to the training split
      of a corpus made from text (`dtr.data.extra`).
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
  config.csv_header = True
  config.label_offset = 0
  config.integer_labels = False
  config.catalog_dir = ''
  config.tokenizer = 'regex'
  config.vocab_size = 10000
  config.min_df = 3
  config.max_df = 0.8
  config.stop_words = 'english'
  config.tokens = True
  config.token_tokenizer = ''
  config.token_vocab_size = 20000
  config.token_min_count = 1
  config.max_len = 0
  # 'all' or an int: a reference typed `object` accepts both (a plain field would be str-only).
  config.labels = config_dict.FieldReference('all', field_type=object)
  config.label_seeds = 5
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


# `config.data` fields that batching reads, not loading; absent from the defaults unless a run asks for them
# (so configs without them keep their digests): `length_buckets` (`dtr.input_pipeline.length_bucketed`) and
# `pad_to_multiple_of` (`dtr.input_pipeline.bucket_widths`).
BATCHING_FIELDS = ('length_buckets', 'pad_to_multiple_of')
# Loading fields absent from the defaults unless a run gives them, for the same reason: `extra_train`
# (`dtr.data.extra`: files of unlabelled documents appended to the training split of a corpus made from text).
OPTIONAL_FIELDS = ('extra_train',)
# What their absence means (off; no extra text), which a checkpoint's settings check reads (`dtr.train`).
ABSENT_MEANS = {**dict.fromkeys(BATCHING_FIELDS, 0), 'extra_train': ''}


def _merged(cfg) -> ml_collections.ConfigDict:
  """`cfg` over the defaults; unknown fields are an error (likely typos)."""
  merged = default_data_config()
  given = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
  unknown = set(given) - set(merged) - set(BATCHING_FIELDS) - set(OPTIONAL_FIELDS)
  unknown |= {f'synthetic.{k}' for k in given.get('synthetic', {})
              if k not in merged.synthetic}
  if unknown:
    raise ValueError(f'unknown data config fields {sorted(unknown)}')
  for key, value in given.items():
    if key in BATCHING_FIELDS or (key in OPTIONAL_FIELDS and not value):
      continue
    if key == 'synthetic':
      merged.synthetic.update(value)
    else:
      merged[key] = value
  return merged


def load_corpus(cfg) -> corpus_lib.Corpus:
  """Loads the corpus `cfg` (a `config.data` ConfigDict or dict) describes; see the module docstring."""
  cfg = _merged(cfg)
  name = cfg.name
  if cfg.get('extra_train') and not (name in TEXT_SOURCES or name.startswith('tfds:')):
    raise ValueError(f'config.data.extra_train adds unlabelled text to a corpus made from text, but {name!r} '
                     f"is not one: use one of {list(TEXT_SOURCES)} or 'tfds:<catalog name>', or leave "
                     'extra_train empty')
  if name == 'synthetic':
    corpus = _synthetic(cfg)
  elif name in hashing.HASHING_SETS:
    corpus = _load_hashing(cfg)
  elif name == '20news_clean':
    corpus = _load_20news_clean(cfg)
  elif name in TEXT_SOURCES or name.startswith('tfds:'):
    corpus = _load_text(cfg)
  else:
    raise ValueError(
        f'unknown corpus {name!r}: use one of {sorted(hashing.HASHING_SETS)}, '
        f"{list(TEXT_SOURCES)}, '20news_clean', 'synthetic' or 'tfds:<catalog name>'")
  corpus_lib.check_finite(corpus)
  corpus = corpus_lib.handle_empty_docs(corpus, cfg.empty_docs)
  logging.info('%s: %s documents (train/valid/test) from %s; fingerprint %s', corpus.name,
               '/'.join(str(corpus.splits[s].num_docs) for s in corpus_lib.SPLIT_NAMES),
               corpus.source or 'memory', corpus_lib.fingerprint(corpus))
  return corpus


def data_dir_of(cfg) -> str:
  return cfg.data_dir or os.environ.get('DTR_DATA_DIR', '')


def tfds_dir_of(cfg) -> str:
  return os.path.expanduser(cfg.tfds_dir or os.environ.get('DTR_TFDS_DIR', '')
                            or '~/.cache/dtr/tfds')


def token_tokenizer_of(cfg) -> str:
  """config.data.token_tokenizer, or the corpus' default: 'whitespace' for the tokenised shared sets."""
  if cfg.token_tokenizer:
    return cfg.token_tokenizer
  return 'whitespace' if cfg.name in shared_sets.TEXT_SETS else 'regex'


def _digest(*parts) -> str:
  return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def _safe(name: str) -> str:
  return re.sub(r'[^A-Za-z0-9_]', '_', name)


def _synthetic(cfg) -> corpus_lib.Corpus:
  return synthetic.make_corpus(**cfg.synthetic, tokens=cfg.tokens)


def _data_files(cfg, name: str, relative: list[str]) -> list[str] | None:
  """The absolute paths of corpus `name`'s files (`relative` to the data folder).

  FileNotFoundError when a folder is named but lacks them, or when none is
  named and allow_synthetic is False; None (after the banner) when none is
  named and the synthetic corpus may stand in.
  """
  data_dir = data_dir_of(cfg)
  expected = ', '.join(f'<data_dir>/{r}' for r in relative)
  if not data_dir:
    reason = (f'{name}: no data folder is named (config.data.data_dir is empty and $DTR_DATA_DIR is '
              f'unset), so its files ({expected}) were looked for nowhere.')
    if cfg.get('extra_train'):  # text added to a stand-in would be meaningless
      raise ValueError(f'config.data.extra_train adds text to {name!r}, but no data folder is named to read '
                       f'{name!r} from (the synthetic corpus would stand in): set DTR_DATA_DIR or '
                       'config.data.data_dir')
    if not cfg.allow_synthetic:
      raise FileNotFoundError(f'{reason} Set DTR_DATA_DIR (or config.data.data_dir) to the folder that '
                              f'holds {relative[0].split("/")[0]}/.')
    _synthetic_banner(name, reason, relative)
    return None
  paths = [os.path.abspath(os.path.join(data_dir, r)) for r in relative]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(
        f'{name}: not found in the data folder {os.path.abspath(data_dir)} (config.data.data_dir or '
        f'$DTR_DATA_DIR): missing {missing}. Expected files: {expected}. Point DTR_DATA_DIR (or '
        f'config.data.data_dir) at the folder that holds {relative[0].split("/")[0]}/.')
  return paths


def _synthetic_banner(name: str, reason: str, relative: list[str]) -> None:
  rule = '=' * 78
  banner = '\n'.join([
      rule,
      f"dtr: NO REAL DATA FOR {name!r}: USING THE SYNTHETIC CORPUS INSTEAD.",
      reason,
      'Numbers measured on synthetic data are meaningless for papers and '
      'comparisons.',
      'To use the real data: export DTR_DATA_DIR=/path/to/data, the folder '
      f'that holds {", ".join(relative)} (or set config.data.data_dir). Set '
      'config.data.allow_synthetic=False to make missing data an error.',
      rule])
  print(banner, file=sys.stderr, flush=True)  # once, on stderr: absl logging also writes there


# ---------------------------------------------------------------- hashing sets

def _load_hashing(cfg) -> corpus_lib.Corpus:
  from dtr.data import tfds_builders  # pylint: disable=g-import-not-at-top
  name, data_dir = cfg.name, data_dir_of(cfg)
  if cfg.path:  # An explicit file: no layout to follow, no synthetic stand-in.
    path = os.path.abspath(cfg.path)
    if not os.path.isfile(path):
      raise FileNotFoundError(hashing.missing_file_message(path, name, cfg.format))
    read = lambda: hashing.read_file(path, name)
    if not cfg.use_tfds:
      return read().replace(source=path)
    config_name = f'{name}_file_{_digest(tfds_builders.file_fingerprint(path))}'
    return tfds_builders.read_prepared(
        tfds_builders.prepare_corpus(config_name, read, tfds_dir_of(cfg))).replace(source=path)
  if not data_dir:
    expected = os.path.relpath(hashing.candidate_files('.', name, cfg.format)[0])
    _data_files(cfg, name, [expected])  # Raises unless the synthetic corpus may stand in.
    return _synthetic(cfg)
  # A named folder: the file must be there (find_file says what is missing); never substitute.
  path = os.path.abspath(hashing.find_file(data_dir, name, cfg.format))
  if not cfg.use_tfds:
    return hashing.read_file(path, name).replace(source=path)
  return tfds_builders.read_prepared(tfds_builders.prepare_hashing(
      name, cfg.format, data_dir, tfds_dir_of(cfg))).replace(source=path)


# ---------------------------------------------------------------- 20news_clean

def _load_20news_clean(cfg) -> corpus_lib.Corpus:
  from dtr.data import tfds_builders  # pylint: disable=g-import-not-at-top
  paths = _data_files(cfg, cfg.name, shared_sets.NEWS_CLEAN_FILES)
  if paths is None:
    return _synthetic(cfg)
  data_dir = data_dir_of(cfg)
  read = lambda: shared_sets.read_20news_clean(data_dir, split_seed=cfg.split_seed,
                                               max_docs_per_split=cfg.max_docs_per_split)
  source = ', '.join(paths)
  if not cfg.use_tfds:
    return read().replace(source=source)
  settings = dict(split_seed=cfg.split_seed, max_docs_per_split=cfg.max_docs_per_split,
                  version=_FEATURIZE_VERSION)
  config_name = f'news_clean_{_digest([tfds_builders.file_fingerprint(p) for p in paths], settings)}'
  return tfds_builders.read_prepared(
      tfds_builders.prepare_corpus(config_name, read, tfds_dir_of(cfg))).replace(source=source)


# ---------------------------------------------------------------- text sources

def _text_source(cfg):
  """(zero-arg TextCorpus reader, fingerprint of the source, resolved source) for `cfg.name`.

  None when no data folder is named and the synthetic corpus stands in.
  """
  from dtr.data import tfds_builders  # pylint: disable=g-import-not-at-top
  split_kw = dict(split_seed=cfg.split_seed,
                  max_docs_per_split=cfg.max_docs_per_split)
  user_kw = dict(split_kw, valid_fraction=cfg.valid_fraction,
                 test_fraction=cfg.test_fraction)
  if cfg.name in RAW_FILES:
    paths = _data_files(cfg, cfg.name, [f'raw/{RAW_FILES[cfg.name]}'])
    if paths is None:
      return None
    path = paths[0]
    reader = raw.read_20news if cfg.name == 'raw_20news' else raw.read_reuters
    return (lambda: reader(path, **split_kw)), tfds_builders.file_fingerprint(path), path
  if cfg.name in shared_sets.TEXT_SETS:
    paths = _data_files(cfg, cfg.name, shared_sets.TEXT_SETS[cfg.name].files())
    if paths is None:
      return None
    data_dir = data_dir_of(cfg)
    return ((lambda: shared_sets.read_text_set(data_dir, cfg.name, **split_kw)),
            [tfds_builders.file_fingerprint(p) for p in paths], ', '.join(paths))
  if cfg.name == 'folder':
    root = pathlib.Path(cfg.path)
    listing = sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                     for p in root.rglob('*.txt')) if root.is_dir() else []
    return (lambda: user.read_folder(cfg.path, **user_kw)), {
        'path': str(root.resolve()), 'files': _digest(listing)}, str(root.resolve())
  if cfg.name == 'csv':
    columns = dict(text_column=cfg.text_column, label_column=cfg.label_column,
                   label_separator=cfg.label_separator, header=cfg.csv_header,
                   label_offset=cfg.label_offset, integer_labels=cfg.integer_labels)
    fingerprint = (tfds_builders.file_fingerprint(cfg.path)
                   if os.path.isfile(cfg.path) else {'path': cfg.path})
    return ((lambda: user.read_csv(cfg.path, **columns, **user_kw)), fingerprint,
            os.path.abspath(cfg.path))
  catalog_name = cfg.name[len('tfds:'):]
  read = lambda: user.read_tfds_catalog(
      catalog_name, catalog_dir=cfg.catalog_dir, text_column=cfg.text_column,
      label_column=cfg.label_column, **user_kw)
  catalog_dir = cfg.catalog_dir or os.environ.get('TFDS_DATA_DIR', '') or '~/tensorflow_datasets'
  return read, {'catalog': catalog_name, 'catalog_dir': cfg.catalog_dir,
                'env': os.environ.get('TFDS_DATA_DIR', '')}, (
                    f'tfds:{catalog_name} in {os.path.abspath(os.path.expanduser(catalog_dir))}')


def _load_text(cfg) -> corpus_lib.Corpus:
  from dtr.data import tfds_builders  # pylint: disable=g-import-not-at-top
  text_source = _text_source(cfg)
  if text_source is None:
    return _synthetic(cfg)
  read, fingerprint, source = text_source
  if cfg.get('extra_train'):
    extra_paths = extra.resolve(cfg.extra_train, data_dir_of(cfg))
    extra_source = ' + '.join(extra_paths)
    read_labelled = read
    read = lambda: extra.append_unlabelled(read_labelled(), extra.read_lines(extra_paths), extra_source)
    fingerprint = {'corpus': fingerprint, 'extra_train': [tfds_builders.file_fingerprint(p) for p in extra_paths],
                   'rule': extra.VERSION}
    source = f'{source}; unlabelled training text from {extra_source}'
  featurize_kw = dict(tokenizer=cfg.tokenizer, vocab_size=cfg.vocab_size,
                      min_df=cfg.min_df, max_df=cfg.max_df,
                      stop_words=cfg.stop_words, tokens=cfg.tokens,
                      token_tokenizer=token_tokenizer_of(cfg),
                      token_vocab_size=cfg.token_vocab_size,
                      token_min_count=cfg.token_min_count, max_len=cfg.max_len)
  make = lambda: raw.featurize_text_corpus(read(), **featurize_kw).replace(source=source)
  if not cfg.use_tfds:
    return make()
  settings = dict(featurize_kw, split_seed=cfg.split_seed,
                  max_docs_per_split=cfg.max_docs_per_split,
                  valid_fraction=cfg.valid_fraction,
                  test_fraction=cfg.test_fraction, text_column=cfg.text_column,
                  label_column=cfg.label_column,
                  label_separator=cfg.label_separator, csv_header=cfg.csv_header,
                  label_offset=cfg.label_offset, integer_labels=cfg.integer_labels,
                  version=_FEATURIZE_VERSION)
  config_name = f'{_safe(cfg.name)}_{_digest(fingerprint, settings)}'
  return tfds_builders.read_prepared(
      tfds_builders.prepare_corpus(config_name, make, tfds_dir_of(cfg))).replace(source=source)
