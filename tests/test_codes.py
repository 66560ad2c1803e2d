"""Codes writer / reader: a round trip for each kind, old-style FORMAT.txt, and the errors."""

import os

import numpy as np
import pytest

from dtr.evaluate import codes as codes_lib
from dtr.evaluate import retrieval

# FORMAT.txt as dtr.train.write_outputs wrote it before code kinds existed.
OLD_FORMAT = ('{split}_codes.npy: uint32 [N, ceil(m/32)], m=NN; bit j of a code is bit j % 32 (least '
              'significant first) of word j // 32 (dtr.evaluate.retrieval.pack_bits / unpack_bits).\n'
              '{split}_labels.npy: bool [N, C] label sets; a retrieved document is relevant when it shares a '
              'label.\n')


def labels(rng, n, num_labels=5):
  return rng.random((n, num_labels)) < 0.3


@pytest.mark.parametrize('m', [1, 32, 33, 64])
def test_bits_round_trip_keeps_todays_file_format(tmp_path, m):
  rng = np.random.default_rng(m)
  bits, sets = rng.integers(0, 2, (7, m), dtype=np.int8), labels(rng, 7)
  fmt = codes_lib.CodeFormat('bits', m)
  assert fmt.num_values == 2
  codes_lib.write_format(tmp_path, fmt)
  assert codes_lib.write_codes(tmp_path, 'test', bits, sets, fmt=fmt) == fmt
  saved = np.load(os.path.join(tmp_path, 'test_codes.npy'))
  assert saved.dtype == np.uint32
  np.testing.assert_array_equal(saved, retrieval.pack_bits(bits))  # exactly the packed file of old runs
  text = open(os.path.join(tmp_path, 'FORMAT.txt')).read()
  assert text.startswith(f'kind: bits\nlength: {m}\nvalues: 2\n')
  assert text.endswith(OLD_FORMAT.replace('NN', str(m)))
  assert codes_lib.read_format(tmp_path) == fmt
  got = codes_lib.read_codes(tmp_path, 'test')
  assert got.dtype == np.int8
  np.testing.assert_array_equal(got, bits)
  np.testing.assert_array_equal(codes_lib.read_packed(tmp_path, 'test'), saved)
  np.testing.assert_array_equal(codes_lib.read_labels(tmp_path, 'test'), sets)


def test_old_style_format_reads_as_bits(tmp_path):
  rng = np.random.default_rng(0)
  bits = rng.integers(0, 2, (4, 40), dtype=np.int8)
  np.save(os.path.join(tmp_path, 'train_codes.npy'), retrieval.pack_bits(bits))
  with open(os.path.join(tmp_path, 'FORMAT.txt'), 'w') as f:
    f.write(OLD_FORMAT.replace('NN', '40'))
  assert codes_lib.read_format(tmp_path) == codes_lib.CodeFormat('bits', 40, 2)
  np.testing.assert_array_equal(codes_lib.read_codes(tmp_path, 'train'), bits)
  with open(os.path.join(tmp_path, 'FORMAT.txt'), 'w') as f:
    f.write('some codes\n')
  with pytest.raises(ValueError, match='m=NN'):
    codes_lib.read_format(tmp_path)


@pytest.mark.parametrize('shape', [(6, 5), (6, 3, 5)])
def test_symbols_round_trip(tmp_path, shape):
  rng = np.random.default_rng(len(shape))
  symbols = rng.integers(0, 11, shape).astype(np.int32)
  if len(shape) == 3:
    symbols[:, 2] = -1  # padded positions of local latents
  fmt = codes_lib.CodeFormat('symbols', 5, 11)
  codes_lib.write_format(tmp_path, fmt)
  codes_lib.write_codes(tmp_path, 'valid', symbols, labels(rng, 6), fmt=fmt)
  assert np.load(os.path.join(tmp_path, 'valid_codes.npy')).dtype == np.int32
  assert codes_lib.read_format(tmp_path) == fmt
  got = codes_lib.read_codes(tmp_path, 'valid')
  assert got.dtype == np.int32
  np.testing.assert_array_equal(got, symbols)
  with pytest.raises(ValueError, match='not packed bits'):
    codes_lib.read_packed(tmp_path, 'valid')


def test_dense_round_trip_and_kind_inference(tmp_path):
  rng = np.random.default_rng(2)
  dense = rng.normal(size=(5, 3))  # float64 in, float32 on disk
  fmt = codes_lib.write_codes(tmp_path, 'test', dense)
  assert fmt == codes_lib.CodeFormat('dense', 3)
  codes_lib.write_format(tmp_path, fmt)
  got = codes_lib.read_codes(tmp_path, 'test')
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, dense.astype(np.float32))
  assert not os.path.exists(os.path.join(tmp_path, 'test_labels.npy'))
  assert codes_lib.write_codes(tmp_path, 'b', np.array([[0, 1]], np.int8)) == codes_lib.CodeFormat('bits', 2)
  symbols = np.array([[0, 6]], np.int32)  # K inferred as the largest symbol + 1
  assert codes_lib.write_codes(tmp_path, 's', symbols) == codes_lib.CodeFormat('symbols', 2, 7)


def test_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='FORMAT.txt'):
    codes_lib.read_format(tmp_path)
  with pytest.raises(ValueError, match='kind'):
    codes_lib.CodeFormat('floats', 3)
  with pytest.raises(ValueError, match='K >= 2'):
    codes_lib.CodeFormat('symbols', 3)
  with pytest.raises(ValueError, match='num_values 2'):
    codes_lib.CodeFormat('bits', 3, 4)
  with pytest.raises(ValueError, match='positive'):
    codes_lib.CodeFormat('dense', 0)
  bits = codes_lib.CodeFormat('bits', 8)
  with pytest.raises(ValueError, match='m=8'):
    codes_lib.write_codes(tmp_path, 'x', np.zeros((3, 9), np.int8), fmt=bits)
  with pytest.raises(ValueError, match='0/1'):
    codes_lib.write_codes(tmp_path, 'x', np.full((3, 8), 2, np.int8), fmt=bits)
  symbols = codes_lib.CodeFormat('symbols', 4, 5)
  with pytest.raises(ValueError, match=r'\[0, 5\)'):
    codes_lib.write_codes(tmp_path, 'x', np.full((3, 4), 5, np.int32), fmt=symbols)
  with pytest.raises(ValueError, match=r'\[0, 5\)'):
    # -1 pads local latents only, [N, ..., M] with extra axes.
    codes_lib.write_codes(tmp_path, 'x', np.full((3, 4), -1, np.int32), fmt=symbols)
  with pytest.raises(ValueError, match='M=4'):
    codes_lib.write_codes(tmp_path, 'x', np.zeros((3, 5), np.int32), fmt=symbols)
  with pytest.raises(ValueError, match='finite'):
    codes_lib.write_codes(tmp_path, 'x', np.full((3, 2), np.nan, np.float32))
  with pytest.raises(ValueError, match='d=2'):
    dense = codes_lib.CodeFormat('dense', 2)
    codes_lib.write_codes(tmp_path, 'x', np.zeros((3, 2, 2), np.float32), fmt=dense)
  with pytest.raises(ValueError, match='bool'):
    codes_lib.write_codes(tmp_path, 'x', np.zeros((3, 8), np.int8), np.zeros(3, np.int32), fmt=bits)
  # Files that do not match their FORMAT.txt.
  codes_lib.write_format(tmp_path, bits)
  np.save(os.path.join(tmp_path, 'test_codes.npy'), np.zeros((3, 2), np.uint32))  # 2 words, m=8 needs 1
  with pytest.raises(ValueError, match=r'uint32 \[N, 1\]'):
    codes_lib.read_codes(tmp_path, 'test')
  with pytest.raises(FileNotFoundError, match=r"\['test'\]"):
    codes_lib.read_codes(tmp_path, 'valid')
  codes_lib.write_format(tmp_path, symbols)
  np.save(os.path.join(tmp_path, 'test_codes.npy'), np.zeros((3, 4), np.float32))
  with pytest.raises(ValueError, match='int32'):
    codes_lib.read_codes(tmp_path, 'test')
  with open(os.path.join(tmp_path, 'FORMAT.txt'), 'w') as f:
    f.write('kind: symbols\nlength: four\n')
  with pytest.raises(ValueError, match='malformed'):
    codes_lib.read_format(tmp_path)
