r"""One writer and one reader of saved codes, for the three code kinds of dtr methods.

Kinds (`CodeFormat.kind`) and their files in a codes folder (a workdir's `codes/`):
  'bits'     0/1 codes [N, m] (int8 in memory), saved PACKED as uint32 [N, ceil(m / 32)]: bit j of a code is
             bit j % 32 (least significant first) of word j // 32 (`retrieval.pack_bits`). This is the file
             format dtr has always written, so old workdirs and `dtr.search` keep working.
  'symbols'  int32 [N, M], each symbol in [0, K); codes of local latents may have extra axes, [N, ..., M],
             where -1 marks padding (e.g. [N, L, M] for L positions of a shorter document).
  'dense'    float32 [N, d], finite.
`{split}_codes.npy` holds a split's codes and `{split}_labels.npy` its bool [N, C] label sets (when given).

FORMAT.txt opens with machine-readable lines, then prose for people:
  kind: symbols
  length: 8         (m bits, M symbols or d dimensions)
  values: 16        (K for symbols, 2 for bits, 0 for dense)
A FORMAT.txt without a `kind:` line was written by older dtr: bits, with m read from its 'm=NN'.
"""

import dataclasses
import os
import re

import numpy as np

from dtr.evaluate import retrieval

__all__ = ['KINDS', 'CodeFormat', 'check_codes', 'infer_kind', 'read_codes', 'read_format', 'read_labels',
           'read_packed', 'write_codes', 'write_format']

KINDS = ('bits', 'symbols', 'dense')
FORMAT_FILE = 'FORMAT.txt'


@dataclasses.dataclass(frozen=True)
class CodeFormat:
  """What a codes folder holds: `kind` in KINDS, `length` (m bits, M symbols or d dims), `num_values`.

  num_values is K (>= 2) for symbols, 2 for bits (0 is read as 2) and 0 for dense.
  """
  kind: str
  length: int
  num_values: int = 0

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f'code kind must be one of {KINDS}, got {self.kind!r}')
    if int(self.length) != self.length or self.length < 1:
      raise ValueError(f'code length must be a positive integer, got {self.length!r}')
    object.__setattr__(self, 'length', int(self.length))
    values = int(self.num_values)
    if self.kind == 'bits' and values == 0:
      values = 2
    if not {'bits': values == 2, 'symbols': values >= 2, 'dense': values == 0}[self.kind]:
      want = {'bits': '2', 'symbols': 'K >= 2', 'dense': '0'}[self.kind]
      raise ValueError(f'{self.kind} codes need num_values {want}, got {self.num_values!r}')
    object.__setattr__(self, 'num_values', values)


# ------------------------------------------------------------------------------------------------ checks
def infer_kind(codes) -> str:
  """The kind of in-memory codes from their dtype: bool / int8 / uint8 are bits, other integers symbols,
  floats dense."""
  dtype = np.dtype(codes.dtype)
  if dtype == bool or dtype in (np.int8, np.uint8):
    return 'bits'
  if dtype.kind in 'iu':
    return 'symbols'
  if dtype.kind == 'f':
    return 'dense'
  raise ValueError(f'cannot tell the code kind of dtype {dtype}; expected int8 bits, int32 symbols or floats')


def check_codes(codes, fmt: CodeFormat, name: str = 'codes') -> np.ndarray:
  """`codes` as the in-memory array of `fmt` (int8 bits, int32 symbols, float32 dense); ValueError if they
  do not fit it."""
  codes = np.asarray(codes)
  shape = codes.shape
  if fmt.kind == 'symbols':
    if codes.ndim < 2 or shape[-1] != fmt.length or np.dtype(codes.dtype).kind not in 'iu':
      raise ValueError(f'{name}: symbols must be integers [N, M] or [N, ..., M] with M={fmt.length}, got '
                       f'{codes.dtype} {shape}')
    low = -1 if codes.ndim > 2 else 0  # -1 pads local latents only
    if codes.size and (codes.min() < low or codes.max() >= fmt.num_values):
      padding = '; -1 pads codes with extra axes' if low else ''
      raise ValueError(f'{name}: symbols must lie in [{low}, {fmt.num_values}) (K={fmt.num_values}{padding}),'
                       f' got [{codes.min()}, {codes.max()}]')
    return codes.astype(np.int32, copy=False)
  if codes.ndim != 2 or shape[1] != fmt.length:
    letter = 'm' if fmt.kind == 'bits' else 'd'
    raise ValueError(f'{name}: {fmt.kind} codes must be [N, {letter}] with {letter}={fmt.length}, '
                     f'got shape {shape}')
  if fmt.kind == 'bits':
    if np.dtype(codes.dtype).kind not in 'biu' or (codes.size and not np.isin(codes, (0, 1)).all()):
      raise ValueError(f'{name}: bits must be 0/1 integers or bools, got {codes.dtype} with other values')
    return codes.astype(np.int8, copy=False)
  if np.dtype(codes.dtype).kind != 'f' or not np.isfinite(codes).all():
    raise ValueError(f'{name}: dense codes must be finite floats, got {codes.dtype}')
  return codes.astype(np.float32, copy=False)


def _check_labels(labels, num_rows: int, name: str) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.dtype != bool or labels.ndim != 2 or labels.shape[0] != num_rows:
    raise ValueError(f'{name}: labels must be bool [N, C] label sets with N={num_rows}, got {labels.dtype} '
                     f'{labels.shape}; for class ids c use c[:, None] == np.arange(C)')
  return labels


# ------------------------------------------------------------------------------------------------ writing
def _format_prose(fmt: CodeFormat) -> str:
  if fmt.kind == 'bits':
    codes = (f'{{split}}_codes.npy: uint32 [N, ceil(m/32)], m={fmt.length}; bit j of a code is bit j % 32 '
             '(least significant first) of word j // 32 (dtr.evaluate.retrieval.pack_bits / unpack_bits).')
  elif fmt.kind == 'symbols':
    codes = (f'{{split}}_codes.npy: int32 [N, M], M={fmt.length}, each symbol in [0, K), K={fmt.num_values}; '
             'codes of local latents are [N, ..., M] with -1 marking padding.')
  else:
    codes = f'{{split}}_codes.npy: float32 [N, d], d={fmt.length}.'
  return (codes + '\n{split}_labels.npy: bool [N, C] label sets; a retrieved document is relevant when it '
          'shares a label.\n')


def write_format(codes_dir: str, fmt: CodeFormat) -> str:
  """Writes `codes_dir/FORMAT.txt` (machine-readable head, then prose) and returns its path."""
  os.makedirs(codes_dir, exist_ok=True)
  path = os.path.join(codes_dir, FORMAT_FILE)
  with open(path, 'w') as f:
    f.write(f'kind: {fmt.kind}\nlength: {fmt.length}\nvalues: {fmt.num_values}\n\n{_format_prose(fmt)}')
  return path


def write_codes(codes_dir: str, split_name: str, codes, labels=None, *,
                fmt: CodeFormat | None = None) -> CodeFormat:
  """Saves `{split}_codes.npy` (bits packed, symbols int32, dense float32) and `{split}_labels.npy`.

  Without `fmt` the kind comes from the dtype (`infer_kind`: int8 bits, int32 symbols, float dense) and K of
  symbols from their largest value; pass `fmt` (the method's declared format) to check the codes against
  it. Returns the format the codes were checked against; FORMAT.txt is written by `write_format`.
  """
  codes = np.asarray(codes)
  if fmt is None:
    kind = infer_kind(codes)
    if codes.ndim < 2:
      raise ValueError(f'codes must be [N, length] (symbols [N, ..., M]), got shape {codes.shape}')
    values = max(int(codes.max(initial=0)) + 1, 2) if kind == 'symbols' else 0
    fmt = CodeFormat(kind, codes.shape[-1], values)
  codes = check_codes(codes, fmt)
  labels = None if labels is None else _check_labels(labels, len(codes), 'labels')  # before writing anything
  os.makedirs(codes_dir, exist_ok=True)
  saved = retrieval.pack_bits(codes) if fmt.kind == 'bits' else codes
  np.save(os.path.join(codes_dir, f'{split_name}_codes.npy'), saved)
  if labels is not None:
    np.save(os.path.join(codes_dir, f'{split_name}_labels.npy'), labels)
  return fmt


# ------------------------------------------------------------------------------------------------ reading
def read_format(codes_dir: str) -> CodeFormat:
  """The CodeFormat of `codes_dir/FORMAT.txt`; an old file without `kind:` is bits with m from 'm=NN'."""
  path = os.path.join(codes_dir, FORMAT_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} not found: {codes_dir} is not a folder of dtr codes (see write_format)')
  with open(path) as f:
    text = f.read()
  head = {}
  for line in text.splitlines():
    match = re.fullmatch(r'(kind|length|values):\s*(\S+)\s*', line)
    if not match:
      break
    head[match.group(1)] = match.group(2)
  if 'kind' not in head:
    old = re.search(r'\bm=(\d+)', text)
    if not old:
      raise ValueError(f'{path} has neither a "kind:" line nor an old-style "m=NN"')
    return CodeFormat('bits', int(old.group(1)), 2)
  try:
    return CodeFormat(head['kind'], int(head['length']), int(head.get('values', 0)))
  except (KeyError, ValueError) as e:
    raise ValueError(f'{path}: malformed head {head}: {e}') from e


def _load(codes_dir: str, split: str, what: str) -> np.ndarray:
  path = os.path.join(codes_dir, f'{split}_{what}.npy')
  if not os.path.exists(path):
    have = sorted(n[:-len('_codes.npy')] for n in os.listdir(codes_dir) if n.endswith('_codes.npy'))
    raise FileNotFoundError(f'{path} not found; {codes_dir} holds codes of the splits {have}')
  return np.load(path)


def read_packed(codes_dir: str, split: str, fmt: CodeFormat | None = None) -> np.ndarray:
  """Packed uint32 [N, ceil(m / 32)] bits of a split, as saved (for `retrieval.hamming_topk`)."""
  fmt = read_format(codes_dir) if fmt is None else fmt
  if fmt.kind != 'bits':
    raise ValueError(f'{codes_dir} holds {fmt.kind} codes, not packed bits; use read_codes')
  packed = _load(codes_dir, split, 'codes')
  words = -(-fmt.length // 32)
  if packed.dtype != np.uint32 or packed.ndim != 2 or packed.shape[1] != words:
    raise ValueError(f'{split}_codes.npy: expected packed bits uint32 [N, {words}] for m={fmt.length}, got '
                     f'{packed.dtype} {packed.shape}')
  return packed


def read_codes(codes_dir: str, split: str, fmt: CodeFormat | None = None) -> np.ndarray:
  """A split's codes, unpacked: int8 [N, m] bits, int32 [N, (...,) M] symbols or float32 [N, d] dense."""
  fmt = read_format(codes_dir) if fmt is None else fmt
  if fmt.kind == 'bits':
    return retrieval.unpack_bits(read_packed(codes_dir, split, fmt), fmt.length).astype(np.int8)
  codes = _load(codes_dir, split, 'codes')
  want = np.int32 if fmt.kind == 'symbols' else np.float32
  if codes.dtype != want:
    raise ValueError(f'{split}_codes.npy: {fmt.kind} codes must be saved as {np.dtype(want)}, '
                     f'got {codes.dtype}')
  return check_codes(codes, fmt, f'{split}_codes.npy')


def read_labels(codes_dir: str, split: str) -> np.ndarray:
  """A split's bool [N, C] label sets."""
  return _load(codes_dir, split, 'labels').astype(bool, copy=False)
