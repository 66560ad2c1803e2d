"""The sparse encoder layers equal dense matrix products on the same documents."""

import jax
import numpy as np
import pytest
import scipy.sparse as sp

from dtr.data import flat_rows
from dtr.nn.feedforward import SparseMLP, num_docs


@pytest.mark.parametrize('groups,per_group', [(1, 7), (4, 3)])
def test_sparse_mlp_equals_dense_products(groups, per_group):
  rng = np.random.default_rng(0)
  csr = sp.random(50, 40, density=0.1, format='csr', random_state=rng, dtype=np.float32)
  csr[3] = 0  # an empty document
  csr.eliminate_zeros()
  rows = rng.permutation(50)[:groups * per_group].reshape(groups, per_group)
  ids, vals, seg = flat_rows(csr, rows)
  batch = {'ids': ids, 'vals': vals, 'seg': seg, 'mask': np.ones(rows.shape, np.float32)}
  assert num_docs(batch) == groups * per_group
  model = SparseMLP(40, hidden=(6,), out_features=5)
  params = model.init(jax.random.key(0), batch)['params']
  out = np.asarray(model.apply({'params': params}, batch), np.float64)
  x = csr[rows.reshape(-1)].toarray().astype(np.float64)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  hidden = x @ p['SparseLinear_0']['kernel'] + p['SparseLinear_0']['bias']
  expected = np.maximum(hidden, 0) @ p['Dense_0']['kernel'] + p['Dense_0']['bias']
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_flat_rows_layout_and_width():
  csr = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 0], [0, 3, 0], [4, 5, 6]], np.float32))
  ids, vals, seg = flat_rows(csr, np.array([[0, 1], [2, 3]]), min_width=4)
  np.testing.assert_array_equal(ids, [[0, 2, 0, 0], [1, 0, 1, 2]])
  np.testing.assert_array_equal(vals, [[1, 2, 0, 0], [3, 4, 5, 6]])
  np.testing.assert_array_equal(seg, [[0, 0, 1, 1], [0, 1, 1, 1]])
  with pytest.raises(ValueError, match='more than width'):
    flat_rows(csr, np.array([[3, 0]]), width=4)
