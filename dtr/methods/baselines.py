r"""Non-learned hashing baselines: binary bag-of-words, LSH and PCA (spectral) hashing.

Each is fitted on the training split in closed form and is a thresholded linear map of TF-IDF rows x:

  BOW   z_w = 1[x_w > 0]: presence of every vocabulary word (m = V; Hamming distance = size of the
        symmetric difference of the word sets).
  LSH   z = 1[x W > 0], W_ij ~ N(0, 1): random hyperplanes (Charikar 2002, sign random projections; the
        collision probability of a bit is 1 - angle(x, x') / pi).
  PCA   z = 1[(x - mu) V_m > t]: the top-m right singular vectors V_m of the centred training matrix
        X - 1 mu^T, thresholded at the training median t_j of each component, so every bit splits the
        training set in half (the PCA / spectral hashing baseline of Weiss et al. 2009, median-thresholded
        as in Zhang et al. 2010's self-taught hashing). The SVD never forms X - 1 mu^T: ARPACK (scipy svds)
        runs on a LinearOperator whose products are X v - (mu . v) 1 and X^T u - mu (1 . u).

Two interfaces share these fits:
  * `fit(name, split, bits, seed) -> Hasher` and `Hasher.encode(split_or_csr) -> int8 [N, m]` (host NumPy);
  * the methods `BOW`, `LSH`, `Spectral` for `dtr.train`: `fit(split, seed) -> params` instead of a
    `train_step`, and a jitted `encode(params, batch)` over the flat sparse batch layout, so the training
    loop writes their codes, results and parameters like any learned method's (and `dtr.encode` loads them).
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from dtr.methods.base import Method, check_bits
from dtr.nn import bow_decoder
from dtr.nn.feedforward import SparseLinear

NAMES = ('bow', 'lsh', 'spectral')


# ------------------------------------------------------------------------------------------------ fits
def lsh_projection(vocab_size: int, bits: int, seed: int) -> dict:
  """{'kernel': W [V, m] ~ N(0, 1), 'bias': 0 [m]} (float32)."""
  kernel = np.random.default_rng(seed).standard_normal((vocab_size, bits)).astype(np.float32)
  return {'kernel': kernel, 'bias': np.zeros(bits, np.float32)}


def pca_projection(tfidf: sp.spmatrix, bits: int, seed: int = 0) -> dict:
  """{'kernel': V_m [V, m], 'bias': -(mu V_m + t) [m]} so that 1[x kernel + bias > 0] is the PCA code.

  V_m are the top-m right singular vectors of the implicitly centred matrix (svds, float64) ordered by
  decreasing singular value; t_j is the median of component j over the training rows.
  """
  x = sp.csr_matrix(tfidf, dtype=np.float64)
  n, v = x.shape
  if not 0 < bits < min(n, v):
    raise ValueError(f'PCA hashing needs 0 < bits < min(docs, vocabulary) = {min(n, v)}, got bits={bits}.')
  mu = np.asarray(x.mean(axis=0)).ravel()
  xt = x.T.tocsr()

  def matmat(w):
    w = np.asarray(w).reshape(v, -1)
    return x @ w - np.outer(np.ones(n), mu @ w)

  def rmatmat(u):
    u = np.asarray(u).reshape(n, -1)
    return xt @ u - np.outer(mu, u.sum(axis=0))

  centred = spla.LinearOperator((n, v), matvec=matmat, rmatvec=rmatmat, matmat=matmat, rmatmat=rmatmat,
                                dtype=np.float64)
  _, s, vt = spla.svds(centred, k=bits, random_state=seed)
  components = vt[np.argsort(-s)].T  # [V, m]
  projections = matmat(components)
  thresholds = np.median(projections, axis=0)
  return {'kernel': components.astype(np.float32), 'bias': (-(mu @ components) - thresholds).astype(np.float32)}


@dataclasses.dataclass(frozen=True)
class Hasher:
  """A fitted non-learned hasher on the host: `encode(split or CSR) -> int8 [N, m]`."""

  name: str
  params: dict  # {'kernel', 'bias'} for lsh / spectral; {} for bow

  def encode(self, data) -> np.ndarray:
    x = sp.csr_matrix(getattr(data, 'tfidf', data))
    if self.name == 'bow':
      return (x > 0).toarray().astype(np.int8)
    return ((x @ self.params['kernel'].astype(np.float64) + self.params['bias']) > 0).astype(np.int8)


def fit(name: str, split, bits: int, seed: int = 0) -> Hasher:
  """Fits baseline `name` ('bow', 'lsh', 'spectral') on a training Split or TF-IDF CSR matrix (`bits` is
  ignored by bow)."""
  tfidf = getattr(split, 'tfidf', split)
  if name == 'bow':
    return Hasher(name, {})
  if name == 'lsh':
    return Hasher(name, lsh_projection(tfidf.shape[1], bits, seed))
  if name == 'spectral':
    return Hasher(name, pca_projection(tfidf, bits, seed))
  raise ValueError(f'Unknown baseline {name!r}; known: {NAMES}.')


# ------------------------------------------------------------------------------------------------ methods
@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: Method's equality by value (a static jit argument)
class LSH(Method):
  """Sign random projections as a dtr method: `fit` on the training split, then `encode`."""

  fitted = True

  @staticmethod
  def validate(mc) -> None:
    check_bits(mc)

  def fit(self, split, seed: int) -> dict:
    return lsh_projection(self.vocab_size, self.num_bits, seed)

  def init(self, rng, batch) -> dict:
    """Zero parameters of the fitted shapes (for shape-only uses such as `dtr.encode.load_model`)."""
    del rng, batch
    return {'params': {'kernel': jnp.zeros((self.vocab_size, self.num_bits)), 'bias': jnp.zeros(self.num_bits)}}

  def encode(self, params, batch, rng=None) -> jax.Array:
    """1[x kernel + bias > 0]; int8 [B, m]."""
    out = SparseLinear(self.vocab_size, self.num_bits).apply({'params': params}, batch)
    return (out > 0).astype(jnp.int8)


@dataclasses.dataclass(frozen=True, eq=False)
class Spectral(LSH):
  """PCA hashing (median-thresholded principal components of TF-IDF) as a dtr method."""

  def fit(self, split, seed: int) -> dict:
    return pca_projection(split.tfidf, self.num_bits, seed)


@dataclasses.dataclass(frozen=True, eq=False)
class BOW(Method):
  """Binary bag-of-words: bit w is the presence of vocabulary word w (m = V)."""

  fitted = True

  @property
  def num_bits(self) -> int:
    return self.vocab_size

  def fit(self, split, seed: int) -> dict:
    del split, seed
    return {'threshold': np.zeros((), np.float32)}  # a bit is on when the TF-IDF weight exceeds it

  def init(self, rng, batch) -> dict:
    del rng, batch
    return {'params': {'threshold': jnp.zeros(())}}

  def encode(self, params, batch, rng=None) -> jax.Array:
    """int8 [B, V]: 1 where the word occurs in the document."""
    return (bow_decoder.dense_rows(batch, self.vocab_size) > params['threshold']).astype(jnp.int8)


def default_model_config(name: str = 'lsh') -> ml_collections.ConfigDict:
  """`model` fields of a non-learned baseline ('bow' ignores bits: its codes have one bit per word)."""
  return ml_collections.ConfigDict(dict(name=name, bits=32))
