"""FLOP counts of compiled steps and the machine's measured matmul rate: what a speed number is set against.

XLA's cost analysis counts a while loop's body once whatever its trip count, so a step with an inner loop
(SVI refinement, Hard EM's E-steps) is counted as F(0) + K (F(1) - F(0)) from the same step compiled with
trip counts 0 and 1, which leave no loop. The packed output layer (`dtr.nn.softmax.target_nll`) is such a
loop too, over blocks of rows, so its steps are counted with the full layer (`model.pack_targets` 0): an
upper bound of their work.
"""

from __future__ import annotations

import time


def step_flops(method, state, batch) -> float:
  """FLOPs of one `method.train_step(state, batch, rng)` from XLA's cost analysis of the compiled step."""
  import jax  # pylint: disable=g-import-not-at-top
  cost = jax.jit(method.train_step).lower(state, batch, jax.random.key(0)).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost['flops'])


def loop_flops(make_method, state, batch, trips: int) -> tuple[float, float]:
  """(FLOPs of a step whose inner loop runs `trips` times, FLOPs of one trip); `make_method(k)` builds the
  method with k trips."""
  f0, f1 = step_flops(make_method(0), state, batch), step_flops(make_method(1), state, batch)
  return f0 + trips * (f1 - f0), f1 - f0


def output_layer_flops(predicted_tokens: float, vocab: int, width: int) -> float:
  """FLOPs that the output layer alone needs in one training step, a lower bound of the step's work for any
  exact (full-softmax) method: per predicted token, logits h W (2 V d), and the two gradient products dL/dW
  and dL/dh (2 V d each)."""
  return 6.0 * predicted_tokens * vocab * width


def output_layer_seconds(tokens: int, vocab: int, width: int, repeats: int = 20) -> dict[str, float]:
  """The best time of the output layer alone, forward and backward, for `tokens` predicted tokens: logits
  h W ([tokens, width] x [width, vocab]), the summed softmax cross-entropy and its gradients to W and h (the
  value and the gradients, as a training step computes them).
  Measured as a plain JAX program ('jax': whole [tokens, vocab] arrays, automatic differentiation), as dtr's
  models train it ('dtr': `dtr.nn.softmax.weighted_target_nll`, blocks of rows in cache, the gradient formed
  in the forward pass) and, when it is installed (the `bench` extra), in PyTorch ('torch'). The fastest of
  them bounds from below a training step of an exact (full-softmax) token model at these sizes on this
  machine, as these programs run it."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  h = rng.normal(size=(tokens, width)).astype(np.float32)
  w = (0.1 * rng.normal(size=(width, vocab))).astype(np.float32)
  y = rng.integers(0, vocab, tokens).astype(np.int32)

  def best_of(fn):
    fn()
    best = float('inf')
    for _ in range(repeats):
      t0 = time.perf_counter()
      fn()
      best = min(best, time.perf_counter() - t0)
    return best

  def loss(w, h):
    logits = h @ w
    return jnp.sum(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])

  from dtr.nn import softmax  # pylint: disable=g-import-not-at-top
  valid = np.ones((1, tokens), bool)

  def dtr_loss(w, h):
    return softmax.weighted_target_nll(lambda r: r @ w, h[None], y[None], valid, np.ones(1, np.float32), 1.0)[0]

  w_j, h_j = jnp.asarray(w), jnp.asarray(h)
  out = {}
  for name, fn in (('jax', loss), ('dtr', dtr_loss)):
    # The loss value too, as a training step reports it: under jax.grad alone XLA drops the forward pass's
    # work that only the discarded value needs, which a step cannot.
    grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))
    out[name] = best_of(lambda grads=grads: jax.block_until_ready(grads(w_j, h_j)))
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return out
  w_t, h_t = torch.from_numpy(w).requires_grad_(), torch.from_numpy(h).requires_grad_()
  y_t = torch.from_numpy(y).long()
  out['torch'] = best_of(lambda: torch.autograd.grad(
      torch.nn.functional.cross_entropy(h_t @ w_t, y_t, reduction='sum'), (w_t, h_t)))
  return out


def matmul_gflops(size: int = 1024, repeats: int = 20) -> float:
  """The best rate of a jitted float32 [size, size] x [size, size] product on the default device (GFLOP/s):
  a practical ceiling for dense work on this machine, measured, not a vendor's peak."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  product = jax.jit(lambda x: x @ x)
  product(a).block_until_ready()
  best = float('inf')
  for _ in range(repeats):
    t0 = time.perf_counter()
    product(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * size**3 / best / 1e9
