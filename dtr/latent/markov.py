"""Binary Markov chains over codes z in {0,1}^m, as used by AMMI.

A chain of order o over m bits is given by ``logits`` of shape ``[..., m, 2**o]``.
Column c of position i is the logit of z_i = 1 given the o previous bits,

    p(z_i = 1 | z_{i-1}, ..., z_{i-o}) = sigmoid(logits[i, c]),
    c = sum_{k=0}^{o-1} z_{i-1-k} 2^k,

so z_{i-1} is the least-significant bit of c, and bits before the first position
are 0. Example with o = 2, m = 3 and z = (1, 0, 1): position 0 reads column 0
(no history), position 1 reads column 1 (z_0 = 1), position 2 reads column
0*1 + 1*2 = 2 (z_1 = 0, z_0 = 1), hence

    log p(z) = log s(logits[0, 0]) + log s(-logits[1, 1]) + log s(logits[2, 2])

with s the logistic sigmoid. Order 0 is a product of independent Bernoullis.

Leading dimensions broadcast: a prior ``[m, 2**r]`` against encoder logits
``[B, m, 2**o]`` gives results of shape ``[B]``. Everything is in nats.

The exact cross entropy, entropy and most likely code are forward dynamic
programs over the 2^r contexts (one `jax.lax.scan` over positions each), which
is what lets AMMI keep these terms exact instead of sampled.

Reference: K. Stratos and S. Wiseman, "Learning Discrete Structured
Representations by Adversarially Maximizing Mutual Information", ICML 2020.
"""

import jax
import jax.numpy as jnp

__all__ = ['order', 'log_prob', 'cross_entropy', 'entropy', 'viterbi', 'sample', 'context_marginals',
           'cross_entropy_from_marginals']


def order(logits) -> int:
  """Markov order o read from ``logits.shape[-1] == 2**o``."""
  shape = jnp.shape(logits)
  if len(shape) < 2:
    raise ValueError(f'Markov logits need shape [..., m, 2**order]; got shape {shape}.')
  n = shape[-1]
  if n < 1 or n & (n - 1):
    raise ValueError(
        f'The last axis of Markov logits must be a power of 2 (2**order); got shape {shape}.')
  return n.bit_length() - 1


def _as_float(x):
  x = jnp.asarray(x)
  return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _shift_right(z, d):
  """z[..., i - d] along the last axis, with zeros for i < d."""
  m = z.shape[-1]
  pad = [(0, 0)] * (z.ndim - 1) + [(d, 0)]
  return jnp.pad(z, pad)[..., :m]


def _contexts(z, order_):
  """Column index c_i = sum_k z_{i-1-k} 2^k for every position, shape [..., m]."""
  z = jnp.asarray(z).astype(jnp.int32)
  c = jnp.zeros_like(z)
  for k in range(order_):  # loop over the (at most ~10) history bits, not positions
    c = c | (_shift_right(z, k + 1) << k)
  return c


def log_prob(z, logits):
  r"""Log probability of codes under a binary Markov chain.

  .. math::
    \log p(z) = \sum_{i=0}^{m-1} \log \sigma\big((2 z_i - 1)\, \ell_{i, c_i}\big),
    \qquad c_i = \sum_{k<o} z_{i-1-k} 2^k.

  Args:
    z: 0/1 codes, shape ``[..., m]`` (int, bool or float).
    logits: ``[..., m, 2**o]``.

  Returns:
    log p(z), shape = broadcast of the leading dims.
  """
  logits = _as_float(logits)
  o = order(logits)
  z = jnp.asarray(z)
  m = logits.shape[-2]
  if z.ndim < 1 or z.shape[-1] != m:
    raise ValueError(f'log_prob: z.shape={z.shape} does not end in m={m} from logits.shape={logits.shape}.')
  batch = jnp.broadcast_shapes(z.shape[:-1], logits.shape[:-2])
  z = jnp.broadcast_to(z.astype(jnp.int32), batch + (m,))
  logits = jnp.broadcast_to(logits, batch + logits.shape[-2:])
  x = jnp.take_along_axis(logits, _contexts(z, o)[..., None], axis=-1)[..., 0]
  return jnp.sum(jax.nn.log_sigmoid(jnp.where(z == 1, x, -x)), axis=-1)


def _shift_in(joint, r):
  """Pushes mass joint[..., s, b] to the next context s' = ((s << 1) | b) mod 2^r."""
  if r == 0:
    return jnp.sum(joint, axis=-1)
  # s = hi * 2^(r-1) + t reaches s' = 2 t + b: sum out the dropped oldest bit `hi`.
  lead = joint.shape[:-2]
  joint = joint.reshape(lead + (2, 2 ** (r - 1), 2))
  return jnp.sum(joint, axis=-3).reshape(lead + (2 ** r,))


def cross_entropy(p_logits, q_logits):
  r"""Exact cross entropy H+(p, q) = -sum_z p(z) log q(z) of two binary Markov chains.

  With o = order(p) <= r = order(q), run the chain over r-bit contexts s (the last
  r bits, z_{i-1} least significant). p reads column s mod 2^o, q reads column s.
  The forward marginals under p, alpha_0 = [s = 0],

  .. math::
    \alpha_{i+1}(s') = \sum_{s, b:\ s' = (2s + b) \bmod 2^r} \alpha_i(s)\, p(b \mid s),

  give

  .. math::
    H^+(p, q) = \sum_{i=0}^{m-1} \sum_s \alpha_i(s) \sum_{b \in \{0,1\}}
        p(b \mid s) \big(-\log q(b \mid s)\big),

  in O(m 2^r) time (Stratos & Wiseman, 2020). alpha is kept as normalised
  probabilities: no logs of probabilities are taken, so nothing is ever -inf and
  gradients stay finite even for logits of +-50.

  Args:
    p_logits: ``[..., m, 2**o]``.
    q_logits: ``[..., m, 2**r]`` with r >= o.

  Returns:
    H+(p, q) in nats, shape = broadcast of the leading dims.
  """
  p_logits, q_logits = _as_float(p_logits), _as_float(q_logits)
  o, r = order(p_logits), order(q_logits)
  if r < o:
    raise ValueError(
        f'cross_entropy needs order(q) >= order(p); got order(p)={o} from '
        f'p_logits.shape[-1]={p_logits.shape[-1]} and order(q)={r} from '
        f'q_logits.shape[-1]={q_logits.shape[-1]}.')
  m = p_logits.shape[-2]
  if q_logits.shape[-2] != m:
    raise ValueError(
        f'cross_entropy needs the same code length m; got p_logits.shape={p_logits.shape} '
        f'(m={m}) and q_logits.shape={q_logits.shape} (m={q_logits.shape[-2]}).')
  if o == 0:
    return _cross_entropy_independent(p_logits[..., 0], q_logits, r)
  batch = jnp.broadcast_shapes(p_logits.shape[:-2], q_logits.shape[:-2])
  dtype = jnp.result_type(p_logits, q_logits)
  n = 2 ** r

  # Conditionals for every position at once; the scan only mixes them with alpha.
  p_b = jnp.stack([jax.nn.sigmoid(-p_logits), jax.nn.sigmoid(p_logits)], axis=-1)
  neg_log_q_b = -jnp.stack([jax.nn.log_sigmoid(-q_logits), jax.nn.log_sigmoid(q_logits)], axis=-1)

  def step(alpha, xs):
    p_b, neg_log_q_b = xs  # [..., 2^o, 2], [..., 2^r, 2]
    joint = alpha[..., None] * jnp.tile(p_b, (2 ** (r - o), 1))  # p reads column s mod 2^o
    term = jnp.sum(joint * neg_log_q_b, axis=(-2, -1))
    alpha = _shift_in(joint, r)
    # Renormalise: the exact marginals sum to 1, so this only removes float drift.
    alpha = alpha / jnp.sum(alpha, axis=-1, keepdims=True)
    return alpha, term

  alpha0 = jnp.broadcast_to(jnp.arange(n) == 0, batch + (n,)).astype(dtype)
  _, terms = jax.lax.scan(step, alpha0, (jnp.moveaxis(p_b, -3, 0), jnp.moveaxis(neg_log_q_b, -3, 0)))
  return jnp.sum(terms, axis=0)


def _shifted(x, d, fill):
  """x[..., i - d] along the last axis, `fill` for i < d."""
  m = x.shape[-1]
  pad = [(0, 0)] * (x.ndim - 1) + [(d, 0)]
  return jnp.pad(x, pad, constant_values=fill)[..., :m]


def _independent_contexts(p0, p1, r):
  """alpha[..., i, s] = prod_k p(z_{i-1-k} = s_k) for independent bits with p(z_j = 1) = p1[..., j]."""
  alpha = jnp.ones(p1.shape + (1,), p1.dtype)
  for k in range(r):  # loop over history bits (r <= ~12), not positions
    alpha = jnp.concatenate([alpha * _shifted(p0, k + 1, 1.0)[..., None],
                             alpha * _shifted(p1, k + 1, 0.0)[..., None]], axis=-1)
  return alpha


def _cross_entropy_independent(p_logits_m, q_logits, r):
  r"""H+(p, q) when p has order 0: no recursion, every position at once.

  Under an order-0 p the bits are independent, so the forward marginal of the r-bit context is a product,

  .. math::
    \alpha_i(s) = \prod_{k=0}^{r-1} p(z_{i-1-k} = s_k), \qquad s = \sum_k s_k 2^k,

  (bits before the first position are 0 with probability 1), which the recursion in `cross_entropy`
  computes step by step. Building alpha for all positions as an outer product over the r history bits
  turns the O(m) sequential scan into O(m 2^r) parallel work: the published AMMI setting (o = 0) spends
  most of its time in these terms, and a scan of tiny steps is slow on every backend.
  """
  p1, p0 = jax.nn.sigmoid(p_logits_m), jax.nn.sigmoid(-p_logits_m)  # [..., m]
  alpha = _independent_contexts(p0, p1, r)
  neg_log_q1, neg_log_q0 = -jax.nn.log_sigmoid(q_logits), -jax.nn.log_sigmoid(-q_logits)  # [..., m, 2^r]
  per_context = p1[..., None] * neg_log_q1 + p0[..., None] * neg_log_q0
  return jnp.sum(alpha * per_context, axis=(-2, -1))


def context_marginals(p_logits, r: int):
  r"""Joint marginals mu[..., i, s, b] = p(c_i = s, z_i = b) of every position's r-bit context and bit.

  The context c_i is the previous r bits (z_{i-1} least significant), r >= order(p). The cross entropy is
  linear in these marginals,

  .. math::
    H^+(p, q) = \sum_{i, s, b} \mu_i(s, b) \big(-\log q(b \mid s)\big)
              = \texttt{cross\_entropy\_from\_marginals}(\mu, q),

  so the mean cross entropy of a batch of encoder chains against a prior needs only the batch mean of mu:
  AMMI's G prior steps then cost O(m 2^r) each, whatever the batch size.

  Args:
    p_logits: ``[..., m, 2**o]``.
    r: context order, >= o.

  Returns:
    ``[..., m, 2**r, 2]``, each position's entries summing to 1.
  """
  p_logits = _as_float(p_logits)
  o = order(p_logits)
  if r < o:
    raise ValueError(f'context_marginals needs r >= order(p); got r={r} and order(p)={o} from '
                     f'p_logits.shape[-1]={p_logits.shape[-1]}.')
  p_b = jnp.stack([jax.nn.sigmoid(-p_logits), jax.nn.sigmoid(p_logits)], axis=-1)  # [..., m, 2^o, 2]
  if o == 0:
    alpha = _independent_contexts(p_b[..., 0, 0], p_b[..., 0, 1], r)  # [..., m, 2^r]
    return alpha[..., None] * p_b[..., 0, None, :]
  n, batch = 2 ** r, p_logits.shape[:-2]

  def step(alpha, p_b):
    joint = alpha[..., None] * jnp.tile(p_b, (2 ** (r - o), 1))
    alpha = _shift_in(joint, r)
    return alpha / jnp.sum(alpha, axis=-1, keepdims=True), joint

  alpha0 = jnp.broadcast_to(jnp.arange(n) == 0, batch + (n,)).astype(p_logits.dtype)
  _, joints = jax.lax.scan(step, alpha0, jnp.moveaxis(p_b, -3, 0))
  return jnp.moveaxis(joints, 0, -3)


def cross_entropy_from_marginals(mu, q_logits):
  """H+(p, q) from p's context marginals ``mu`` [..., m, 2**r, 2] (`context_marginals`) and q [..., m, 2**r]."""
  q_logits = _as_float(q_logits)
  if mu.shape[-3:-1] != q_logits.shape[-2:]:
    raise ValueError(f'cross_entropy_from_marginals: mu.shape={mu.shape} needs [..., m, 2**r, 2] matching '
                     f'q_logits.shape={q_logits.shape}.')
  neg_log_q_b = -jnp.stack([jax.nn.log_sigmoid(-q_logits), jax.nn.log_sigmoid(q_logits)], axis=-1)
  return jnp.sum(mu * neg_log_q_b, axis=(-3, -2, -1))


def entropy(logits):
  r"""Exact entropy H(p) = -sum_z p(z) log p(z) = H+(p, p); see `cross_entropy`.

  >>> round(float(entropy(jnp.zeros((3, 2)))), 4)  # three fair coins: 3 log 2
  2.0794
  """
  return cross_entropy(logits, logits)


def viterbi(logits):
  r"""Most likely code z* = argmax_z p(z) and its log probability.

  Max-product over the o-bit contexts s, delta_0 = log [s = 0],

  .. math::
    \delta_{i+1}(s') = \max_{s, b:\ s' = (2s + b) \bmod 2^o} \delta_i(s) + \log p(b \mid s),

  keeping the dropped oldest bit as a backpointer; log p(z*) = max_s delta_m(s) and
  z* is read off by a backward scan (z_i is the low bit of the context after i).
  O(m 2^o). Order 0 is thresholding: z*_i = [logits_i > 0].

  Args:
    logits: ``[..., m, 2**o]``.

  Returns:
    ``(z_star, log_prob)``: int32 0/1 array ``[..., m]`` and ``[...]``.
  """
  logits = _as_float(logits)
  o = order(logits)
  if o == 0:
    x = logits[..., 0]
    return (x > 0).astype(jnp.int32), jnp.sum(jax.nn.log_sigmoid(jnp.abs(x)), axis=-1)

  n, half = 2 ** o, 2 ** (o - 1)
  batch = logits.shape[:-2]

  def forward(delta, x):
    score = delta[..., None] + jnp.stack([jax.nn.log_sigmoid(-x), jax.nn.log_sigmoid(x)], axis=-1)
    score = score.reshape(batch + (2, half, 2))  # [hi, t, b]: context hi*2^(o-1) + t, then bit b
    return (jnp.max(score, axis=-3).reshape(batch + (n,)),
            jnp.argmax(score, axis=-3).astype(jnp.int32).reshape(batch + (n,)))

  delta0 = jnp.where(jnp.arange(n) == 0, 0.0, -jnp.inf).astype(logits.dtype)
  delta, backptr = jax.lax.scan(forward, jnp.broadcast_to(delta0, batch + (n,)),
                                jnp.moveaxis(logits, -2, 0))

  def backward(s, hi):
    prev = (s >> 1) | (jnp.take_along_axis(hi, s[..., None], axis=-1)[..., 0] << (o - 1))
    return prev, s & 1

  s_last = jnp.argmax(delta, axis=-1).astype(jnp.int32)
  _, z = jax.lax.scan(backward, s_last, backptr, reverse=True)
  return jnp.moveaxis(z, 0, -1), jnp.max(delta, axis=-1)


def sample(key, logits):
  r"""Ancestral sample z ~ p, int32 0/1 array ``[..., m]``.

  z_i = [logits_{i, c_i} + L_i > 0] with L_i ~ Logistic(0, 1), so
  P(z_i = 1 | c_i) = sigmoid(logits_{i, c_i}); the context is updated as
  c_{i+1} = (2 c_i + z_i) mod 2^o in one scan over positions.
  """
  logits = _as_float(logits)
  o = order(logits)
  batch, m = logits.shape[:-2], logits.shape[-2]
  noise = jax.random.logistic(key, (m,) + batch, logits.dtype)

  def step(c, xs):
    x, eps = xs
    z = (jnp.take_along_axis(x, c[..., None], axis=-1)[..., 0] + eps > 0).astype(jnp.int32)
    return ((c << 1) | z) & (2 ** o - 1), z

  c0 = jnp.zeros(batch, jnp.int32)
  _, z = jax.lax.scan(step, c0, (jnp.moveaxis(logits, -2, 0), noise))
  return jnp.moveaxis(z, 0, -1)
