"""What a finished run leaves in its workdir, written and read in one place.

  results.json        flat `<split>/<metric>` numbers (`test/precision@100`, `test/perplexity`,
                      `test/accuracy` and `test/accuracy_std` over label subsamples, ...) and the run's facts
  config.json         the config it ran with
  data.json           where its data came from (the resolved files) and the corpus fingerprint, so that
                      `dtr.encode` / `dtr.search` read the same corpus without being told and refuse another
  codes/              `{split}_codes.npy` of the reported member, `{split}_labels.npy`, `label_names.json`,
                      FORMAT.txt (`dtr.evaluate.codes`: bits packed, symbols int32, dense float32)
  best_params/        the reported member's parameters (orbax)
  featurizer/         what turns new text into the model's inputs: featurizer.json (bag of words) and
                      tokenizer.json (token sequences), where the corpus has them
  checkpoints/, tensorboard/   training state and curves
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np


def run_summary(config, data, method, reported, members, meta) -> dict:
  """The descriptive fields of results.json (the numbers are added by the loop)."""
  first = reported[0]
  train_history = [h['train'].get('train/loss') for h in meta['history']]
  select = tuple(config.select) if not isinstance(config.select, str) else config.select
  select_name = (select[0] if isinstance(select, tuple) else select.partition(':')[0]).partition('/')[2]
  summary = {
      'dataset': data.name, 'synthetic': bool(data.synthetic), 'method': config.model.name,
      'code_kind': method.emits, 'vocab_size': len(data.vocab),
      'best_epoch': meta['best_epoch'][first], 'epochs_run': meta['epoch'],
      'members_reported': len(reported),
      'train_loss_history': train_history,
      'valid_history': [h['valid'].get(select_name, [None] * len(members))[first] for h in meta['history']],
  }
  if method.emits is not None:
    summary['code_length'] = method.code_length
  if method.emits == 'bits':
    summary['bits'] = method.num_bits
  if method.emits == 'symbols':
    summary['num_values'] = method.num_values
  if getattr(data, 'token_vocab', None) is not None:
    summary['token_vocab_size'] = len(data.token_vocab)
  return summary


def data_record(data, method=None, config=None) -> dict:
  """data.json: the corpus' name, resolved source, fingerprint (`dtr.data.corpus.fingerprint`) and what the
  method was built for (`DataInfo`, so `dtr.encode.load_model` rebuilds the same arrays)."""
  record = {'name': data.name, 'synthetic': bool(data.synthetic), 'source': getattr(data, 'source', ''),
            'data_dir': _data_dir(config)}
  if method is not None:
    record['info'] = dataclasses.asdict(method.data)
  try:
    from dtr.data import corpus as corpus_lib  # pylint: disable=g-import-not-at-top
    record['fingerprint'] = corpus_lib.fingerprint(data)
  except (AttributeError, TypeError):
    record['fingerprint'] = None
  return record


def _data_dir(config) -> str:
  """The data folder the run read (config.data.data_dir, else $DTR_DATA_DIR), as an absolute path."""
  if config is None:
    return ''
  folder = config.data.get('data_dir', '') or os.environ.get('DTR_DATA_DIR', '')
  return os.path.abspath(folder) if folder else ''


def write_outputs(workdir: str, config, data, method, codes: dict, results: dict) -> None:
  """codes/, results.json, config.json, data.json and the featuriser/tokeniser of a finished run."""
  if codes:
    from dtr.evaluate import codes as codes_lib  # pylint: disable=g-import-not-at-top
    out = os.path.join(workdir, 'codes')
    os.makedirs(out, exist_ok=True)
    fmt = codes_lib.CodeFormat(method.emits, method.code_length, method.num_values)
    for name, z in codes.items():
      if isinstance(z, tuple):  # pairs: both sides, row i of each the two texts of pair i
        codes_lib.write_codes(out, f'{name}_x', z[0], fmt=fmt)
        codes_lib.write_codes(out, f'{name}_y', z[1], fmt=fmt)
      else:
        codes_lib.write_codes(out, name, z, labels=data.splits[name].labels, fmt=fmt)
    codes_lib.write_format(out, fmt)
    if getattr(data, 'label_names', None) is not None:
      with open(os.path.join(out, 'label_names.json'), 'w') as f:
        json.dump([str(n) for n in data.label_names], f)
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  with open(os.path.join(workdir, 'data.json'), 'w') as f:
    json.dump(data_record(data, method, config), f, indent=2)
  if getattr(data, 'featurizer', None) is not None:
    data.featurizer.save(os.path.join(workdir, 'featurizer'))
  if getattr(data, 'token_vocab', None) is not None:
    data.token_vocab.save(os.path.join(workdir, 'featurizer'))


def final_line(results: dict, data, method, config) -> str:
  """The last line a run prints: its test numbers."""
  shown = []
  for key, value in results.items():
    if not key.startswith('test/') or key.endswith('_std') or not isinstance(value, float):
      continue
    name = key[len('test/'):]
    if name.startswith(('nll', 'kl', 'chance@')) or name == 'tokens':
      continue
    scale = 100.0 if name.startswith(('precision@', 'matching@')) else 1.0
    text = f'test {name}: {scale * value:.2f}'
    if f'{key}_std' in results:
      text += f' ± {scale * results[key + "_std"]:.2f}'
    shown.append(text)
  what = [data.name + (', SYNTHETIC DATA' if data.synthetic else ''), config.model.name]
  if method.emits == 'bits':
    what.append(f'{method.num_bits} bits')
  elif method.emits == 'symbols':
    what.append(f'{method.code_length} x {method.num_values} symbols')
  elif method.emits == 'dense':
    what.append(f'{method.code_length} dims')
  if results.get('members_reported', 1) > 1:
    what.append(f'{results["members_reported"]} members')
  else:
    what.append(f'best epoch {results["best_epoch"]}')
  return f'{", ".join(shown)} ({", ".join(what)})'


def read_json(workdir: str, name: str) -> dict:
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: {workdir} holds no finished run. Train with '
                            '`python -m dtr.main --config=... --workdir=DIR` first and pass that DIR.')
  with open(path) as f:
    return json.load(f)


def distinct_rows(codes: np.ndarray) -> int:
  return int(len(np.unique(codes.reshape(len(codes), -1), axis=0)))
