r"""Turn documents into codes with a trained workdir.

  python -m dtr.encode --workdir=DIR --split=test --output=test_codes.npy
  python -m dtr.encode --workdir=DIR --input=my_docs/ --output=my_codes.npy   # a folder of .txt files
  python -m dtr.encode --workdir=DIR --input=docs.txt --output=codes.npy      # one document per line

The output is packed codes, uint32 [N, ceil(m/32)] (`dtr.evaluate.retrieval.pack_bits` bit order), plus
`--unpacked` for int8 [N, m]. Raw text needs the workdir's featuriser (saved when dtr featurised the corpus
itself: raw_20news, raw_reuters, folder, csv, synthetic); pre-featurised hashing sets can encode their splits.
"""

import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np
import scipy.sparse as sp
from absl import app, flags

from dtr import checkpoint, methods
from dtr import input_pipeline as ip
from dtr.data import Split, load_corpus
from dtr.data.featurize import Featurizer
from dtr.evaluate import retrieval


@dataclasses.dataclass
class Model:
  config: ml_collections.ConfigDict
  method: object
  params: object
  featurizer: Featurizer | None
  mesh: object
  workdir: str

  @property
  def vocab_size(self) -> int:
    return self.method.vocab_size


def load_model(workdir: str) -> Model:
  """The best model of a finished run in `workdir`, ready for `encode_tfidf` / `encode_texts`."""
  config_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(config_path):
    raise FileNotFoundError(f'{config_path} not found: {workdir} holds no finished run. Train with '
                            '`python -m dtr.main --config=... --workdir=DIR` first.')
  with open(config_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  with open(os.path.join(workdir, 'results.json')) as f:
    vocab_size = json.load(f)['vocab_size']
  method = methods.get_method(config.model, vocab_size)
  dummy = {'ids': np.zeros((1, 8), np.int32), 'vals': np.zeros((1, 8), np.float32),
           'seg': np.zeros((1, 8), np.int32), 'mask': np.ones((1, 1), np.float32)}  # shapes only
  abstract = jax.eval_shape(lambda: method.init(jax.random.key(0), dummy)['params'])
  mesh = ip.make_mesh()
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=ip.replicated(mesh)), abstract)
  params = checkpoint.load_params(os.path.join(workdir, 'best_params'), abstract)
  feat_dir = os.path.join(workdir, 'featurizer')
  featurizer = Featurizer.load(feat_dir) if os.path.isdir(feat_dir) else None
  return Model(config, method, params, featurizer, mesh, workdir)


def encode_tfidf(model: Model, tfidf: sp.csr_matrix, batch_size: int = 1024) -> np.ndarray:
  """int8 [N, m] codes of TF-IDF rows in the model's vocabulary."""
  tfidf = sp.csr_matrix(tfidf, dtype=np.float32)
  if tfidf.shape[1] != model.vocab_size:
    raise ValueError(f'TF-IDF has {tfidf.shape[1]} columns but the model was trained on a vocabulary of '
                     f'{model.vocab_size}; featurise with the workdir\'s featuriser (encode_texts).')
  split = Split(tfidf=tfidf, labels=np.zeros((tfidf.shape[0], 0), bool))
  from dtr.train import encode_split
  return encode_split(model.method, model.params, split, model.mesh, batch_size)


def encode_texts(model: Model, texts: list[str]) -> np.ndarray:
  """int8 [N, m] codes of raw documents, featurised like the training corpus."""
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
  return [f'line {i + 1}' for i in range(len(texts))], texts


def _define_flags():
  flags.DEFINE_string('workdir', None, 'Workdir of a finished training run.', required=True)
  flags.DEFINE_string('split', None, 'Encode a split of the training corpus: train, valid or test.')
  flags.DEFINE_string('input', None, 'Folder of .txt files, or a text file with one document a line.')
  flags.DEFINE_string('output', None, 'Where to write the codes (.npy).', required=True)
  flags.DEFINE_bool('unpacked', False, 'Write int8 [N, m] instead of packed uint32 words.')


def main(argv):
  del argv
  f = flags.FLAGS
  if (f.split is None) == (f.input is None):
    raise app.UsageError('Give exactly one of --split or --input.')
  model = load_model(f.workdir)
  if f.split:
    codes = encode_tfidf(model, load_corpus(model.config.data).splits[f.split].tfidf)
  else:
    _, texts = read_texts(f.input)
    codes = encode_texts(model, texts)
  np.save(f.output, codes if f.unpacked else retrieval.pack_bits(codes))
  print(f'{len(codes)} codes of {codes.shape[1]} bits -> {f.output}')


if __name__ == '__main__':
  _define_flags()  # here, not at import: dtr.search imports this module and defines its own flags
  app.run(main)
