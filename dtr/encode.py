r"""Turn documents into codes with a trained workdir.

  python -m dtr.encode --workdir=DIR --split=test --output=test_codes.npy
  python -m dtr.encode --workdir=DIR --input=my_docs/ --output=my_codes.npy   # a folder of .txt files
  python -m dtr.encode --workdir=DIR --input=docs.txt --output=codes.npy      # one document per line

The output has the workdir's code kind (codes/FORMAT.txt): bits packed, uint32 [N, ceil(m/32)]
(`dtr.evaluate.retrieval.pack_bits` bit order; `--unpacked` for int8 [N, m]), symbols int32 [N, M] or dense
float32 [N, d]. `--split` reads the corpus the run was trained on, from the location recorded in the workdir
(data.json), and refuses a corpus whose fingerprint differs. Raw text needs the workdir's featuriser
(bag-of-words methods) or tokeniser (sequence methods), saved when dtr built the corpus from text.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import ml_collections
import numpy as np
import scipy.sparse as sp
from absl import app, flags, logging

from dtr import checkpoint, methods, workdir as workdir_lib
from dtr import input_pipeline as ip
from dtr.methods.base import DataInfo


@dataclasses.dataclass
class Model:
  config: ml_collections.ConfigDict
  method: object
  params: object
  featurizer: object | None
  tokenizer: object | None
  mesh: object
  workdir: str
  record: dict

  @property
  def vocab_size(self) -> int:
    return self.method.vocab_size


def dummy_batch(method) -> dict:
  """A one-example batch of the method's input kind (shapes only, for building abstract parameters)."""
  bow = {'ids': np.zeros((1, 8), np.int32), 'vals': np.zeros((1, 8), np.float32),
         'seg': np.zeros((1, 8), np.int32), 'mask': np.ones((1, 1), np.float32)}
  if 'counts' in method.batch_fields:
    bow['counts'] = np.zeros((1, 8), np.float32)
  if method.reads == 'bow':
    batch = bow
  elif method.reads == 'pairs':
    return {'x': bow, 'y': dict(bow)}
  elif method.reads == 'tokens':
    batch = {'tokens': np.zeros((1, 8), np.int32), 'lengths': np.ones((1,), np.int32),
             'mask': np.ones((1,), np.float32)}
  else:
    info = method.data
    batch = {'features': np.zeros((1,) + tuple(info.feature_shape), info.feature_dtype),
             'mask': np.ones((1,), np.float32)}
  if 'label' in method.batch_fields:
    batch['label'] = np.zeros(batch['mask'].shape, np.int32)
  return batch


def load_model(workdir: str) -> Model:
  """The best model of a finished run in `workdir`, ready for `encode_tfidf` / `encode_texts`."""
  config = ml_collections.ConfigDict(workdir_lib.read_json(workdir, 'config.json'))
  results = workdir_lib.read_json(workdir, 'results.json')
  record = _data_record(workdir, results)
  info = DataInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in record['info'].items()})
  method = methods.get_method(config.model, info)
  abstract = jax.eval_shape(lambda: method.init(jax.random.key(0), dummy_batch(method))['params'])
  mesh = ip.make_mesh()
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=ip.replicated(mesh)), abstract)
  params = checkpoint.load_params(os.path.join(workdir, 'best_params'), abstract)
  feat_dir = os.path.join(workdir, 'featurizer')
  featurizer = tokenizer = None
  if os.path.exists(os.path.join(feat_dir, 'featurizer.json')):
    from dtr.data.featurize import Featurizer  # pylint: disable=g-import-not-at-top
    featurizer = Featurizer.load(feat_dir)
  if os.path.exists(os.path.join(feat_dir, 'tokenizer.json')):
    from dtr.data.tokenize import Vocabulary  # pylint: disable=g-import-not-at-top
    tokenizer = Vocabulary.load(feat_dir)
  return Model(config, method, params, featurizer, tokenizer, mesh, workdir, record)


def _data_record(workdir: str, results: dict) -> dict:
  """data.json, or what an older workdir's results.json tells (a bag-of-words vocabulary size)."""
  if os.path.exists(os.path.join(workdir, 'data.json')):
    return workdir_lib.read_json(workdir, 'data.json')
  return {'name': results.get('dataset', ''), 'source': '', 'data_dir': '', 'fingerprint': None,
          'info': {'vocab_size': results['vocab_size']}}


def load_training_corpus(model: Model):
  """The corpus the workdir was trained on, read from the recorded data folder, checked by fingerprint."""
  from dtr.data import corpus as corpus_lib, load_corpus  # pylint: disable=g-import-not-at-top
  data_config = ml_collections.ConfigDict(model.config.data.to_dict())
  recorded = model.record.get('data_dir', '')
  if recorded and not data_config.get('data_dir', ''):
    data_config.data_dir = recorded
    logging.info('Reading %s from %s (recorded in %s/data.json)', model.record['name'], recorded, model.workdir)
    print(f'Data: {model.record["name"]} from {recorded} (recorded in the workdir)', flush=True)
  corpus = load_corpus(data_config)
  expected = model.record.get('fingerprint')
  if expected and hasattr(corpus_lib, 'fingerprint'):
    found = corpus_lib.fingerprint(corpus)
    if found != expected:
      raise ValueError(f'The corpus read now ({corpus.name}, fingerprint {found}, from '
                       f'{getattr(corpus, "source", "") or "?"}) is not the one {model.workdir} was trained on '
                       f'(fingerprint {expected}, from {model.record.get("source") or "?"}). Point DTR_DATA_DIR '
                       'or --config.data.data_dir at the original data, or retrain on this corpus.')
  return corpus


def encode_split(model: Model, split) -> np.ndarray:
  from dtr import train  # pylint: disable=g-import-not-at-top
  if model.method.emits is None and not hasattr(model.method, 'encode'):
    raise ValueError(f'{model.workdir}: method {model.config.model.name!r} learns no codes (a language model or '
                     'a classifier), so there is nothing to encode; encode the workdir of a method with codes '
                     '(e.g. configs/sentence_ae.py:method=binary_ae).')
  return train.encode_split(model.method, model.params, split, model.mesh, model.config.get('eval_batch_size', 1024))


def encode_tfidf(model: Model, tfidf: sp.csr_matrix) -> np.ndarray:
  """Codes of TF-IDF rows in the model's vocabulary (bag-of-words methods)."""
  from dtr.data import Split  # pylint: disable=g-import-not-at-top
  tfidf = sp.csr_matrix(tfidf, dtype=np.float32)
  if tfidf.shape[1] != model.vocab_size:
    raise ValueError(f'TF-IDF has {tfidf.shape[1]} columns but the model was trained on a vocabulary of '
                     f'{model.vocab_size}; featurise with the workdir\'s featuriser (encode_texts).')
  return encode_split(model, Split(tfidf=tfidf, labels=np.zeros((tfidf.shape[0], 0), bool)))


def encode_texts(model: Model, texts: list[str]) -> np.ndarray:
  """Codes of raw documents, featurised (or tokenised) like the training corpus."""
  from dtr.data import Split  # pylint: disable=g-import-not-at-top
  if model.method.reads == 'tokens':
    if model.tokenizer is None:
      raise ValueError(f'{model.workdir} has no tokeniser (featurizer/tokenizer.json); it cannot encode new text.')
    tokens = model.tokenizer.encode(texts)
    empty = sp.csr_matrix((len(texts), model.vocab_size), dtype=np.float32)
    return encode_split(model, Split(tfidf=empty, labels=np.zeros((len(texts), 0), bool), tokens=tokens))
  if model.featurizer is None:
    raise ValueError(f'{model.workdir} has no featuriser: it was trained on a pre-featurised set '
                     f'({model.config.data.name}). Encode its splits (--split) or TF-IDF rows (encode_tfidf), '
                     'or train on raw text (data.name=raw_20news, folder, csv) to encode new text.')
  return encode_tfidf(model, model.featurizer.transform(texts))


def read_texts(path: str) -> tuple[list[str], list[str]]:
  """(names, texts) from a folder of .txt files (recursively, sorted) or a file with one document a line."""
  if os.path.isdir(path):
    names = sorted(os.path.relpath(os.path.join(r, f), path) for r, _, fs in os.walk(path) for f in fs
                   if f.endswith('.txt'))
    if not names:
      raise FileNotFoundError(f'No .txt files under {path}.')
    texts = [open(os.path.join(path, n), encoding='utf-8', errors='replace').read() for n in names]
    return names, texts
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist (expected a folder of .txt files or a text file with one '
                            'document a line).')
  with open(path, encoding='utf-8', errors='replace') as f:
    texts = [line.rstrip('\n') for line in f]
  blank = [i + 1 for i, t in enumerate(texts) if not t.strip()]
  if blank:  # kept, so that code i is line i + 1's; a method encodes an empty document as it would in training
    logging.warning('%s: %d of %d lines are empty (line %s%s); each is encoded as an empty document.', path,
                    len(blank), len(texts), ', '.join(map(str, blank[:5])), ', ...' if len(blank) > 5 else '')
  return [f'line {i + 1}' for i in range(len(texts))], texts


def _define_flags():
  flags.DEFINE_string('workdir', None, 'Workdir of a finished training run.', required=True)
  flags.DEFINE_enum('split', None, ['train', 'valid', 'test'], 'Encode a split of the training corpus.')
  flags.DEFINE_string('input', None, 'Folder of .txt files, or a text file with one document a line.')
  flags.DEFINE_string('output', None, 'Where to write the codes (.npy).', required=True)
  flags.DEFINE_bool('unpacked', False, 'Bits: write int8 [N, m] instead of packed uint32 words.')


def main(argv):
  del argv
  from dtr import runtime  # pylint: disable=g-import-not-at-top
  runtime.setup()  # the compilation cache; library INFO noise off
  f = flags.FLAGS
  if (f.split is None) == (f.input is None):
    raise app.UsageError('Give exactly one of --split or --input.')
  model = load_model(f.workdir)
  if f.split:
    codes = encode_split(model, load_training_corpus(model).splits[f.split])
  else:
    _, texts = read_texts(f.input)
    codes = encode_texts(model, texts)
  if model.method.emits == 'bits' and not f.unpacked:
    from dtr.evaluate import retrieval  # pylint: disable=g-import-not-at-top
    np.save(f.output, retrieval.pack_bits(codes))
  else:
    np.save(f.output, codes)
  print(f'{len(codes)} codes of {model.method.code_length} {model.method.emits} -> {f.output}')


if __name__ == '__main__':
  _define_flags()  # here, not at import: dtr.search imports this module and defines its own flags
  from dtr import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)  # user errors (a missing workdir, a changed corpus) as one message, exit 2
