r"""Gated recurrent units over padded batches, a teacher-forced decoder, and greedy / sampled decoding.

GRU (Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder", 2014), in the form cuDNN, PyTorch
and Keras (`reset_after=True`) use, for input x_t and state h_{t-1}:

  r_t = sigma(W_r x_t + b_r + U_r h_{t-1} + c_r)           reset gate
  u_t = sigma(W_u x_t + b_u + U_u h_{t-1} + c_u)           update gate
  n_t = tanh(W_n x_t + b_n + r_t * (U_n h_{t-1} + c_n))    candidate
  h_t = (1 - u_t) * n_t + u_t * h_{t-1}

The parameters are W = input_kernel [D, 3H], b = input_bias [3H], U = recurrent_kernel [H, 3H] and
c = recurrent_bias [3H], the three blocks in the order (r, u, n). The input projections W x_t + b of all steps
are one matrix product before the scan; only U h_{t-1} runs inside it.

Padded batches: step t of sequence b is real iff t < lengths[b]. Past its length a sequence's state is carried
unchanged (and its output is 0), so the final state is the state after the sequence's own last token whatever
the padded width. The backward direction scans t = L-1, ..., 0 under the same mask, so it starts from the
initial state at each sequence's own last token.

Sequence-to-sequence helpers (teacher forcing, Sutskever et al. 2014; word dropout, Bowman et al. 2016), the
decoding loop and `TextAutoencoder` (the network of the sentence methods: shared embeddings, a GRU encoder with
linear heads, a GRU decoder fed a code z) take the special token ids as arguments, with the defaults
`dtr.methods.base` fixes (pad 0, bos 2, eos 3).
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from dtr.nn.dropout import Dropout

PAD_ID, BOS_ID, EOS_ID = 0, 2, 3  # the ids `dtr.methods.base` reserves; passed explicitly by the methods


def _gates(recurrent_kernel, recurrent_bias, h_BxH: jax.Array, x_gates: tuple):
  """(reset, update, candidate, U_n h + c_n), each [(2,) B, H], of one step from the projected input
  W x_t + b given as its three gate blocks (`_split_gates`). Kernels [2, H, 3H] and biases [2, 3H] run both
  directions (`bigru_scan`)."""
  xr, xu, xn = x_gates
  h_proj = jnp.einsum('...bh,...hk->...bk', h_BxH, recurrent_kernel) + recurrent_bias[..., None, :]
  hr, hu, hn = jnp.split(h_proj, 3, axis=-1)
  reset, update = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xu + hu)
  return reset, update, jnp.tanh(xn + reset * hn), hn


def _split_gates(x_proj_x3H: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The (r, u, n) blocks [..., H] of a projected input [..., 3H], as three arrays (`_project_gates`)."""
  return tuple(jnp.split(x_proj_x3H, 3, axis=-1))


def _project_gates(x_NxD: jax.Array, kernel_Dx3H: jax.Array, bias_3H: jax.Array) -> tuple:
  """W x + b of N inputs as its three gate blocks, three arrays [N, H]: one product per block.

  The scans take their per-step inputs as these three arrays, not as one [L, B, 3H] array sliced inside the
  step (nor sliced after the product): XLA:CPU compiles an elementwise step or a copy that slices the columns
  of such an array into code several times slower than the same work on whole arrays
  (docs/results/sentences.md, "three arrays per gate").
  """
  return tuple(x_NxD @ kernel + bias for kernel, bias in zip(jnp.split(kernel_Dx3H, 3, axis=-1),
                                                             jnp.split(bias_3H, 3, axis=-1)))


def gru_update(params, h_BxH: jax.Array, x_proj_Bx3H: jax.Array) -> jax.Array:
  """One GRU step from the projected input W x_t + b (see the module docstring)."""
  _, update, candidate, _ = _gates(params['recurrent_kernel'], params['recurrent_bias'], h_BxH,
                                   _split_gates(x_proj_Bx3H))
  return (1.0 - update) * candidate + update * h_BxH


def gru_cell(params, h_BxH: jax.Array, x_BxD: jax.Array) -> jax.Array:
  """One GRU step h_t = GRU(h_{t-1}, x_t)."""
  return gru_update(params, h_BxH, x_BxD @ params['input_kernel'] + params['input_bias'])


def gru_scan(params, x_BxLxD: jax.Array, lengths_B: jax.Array, initial_BxH: jax.Array,
             reverse: bool = False) -> tuple[jax.Array, jax.Array]:
  """Masked GRU over a padded batch: (outputs [B, L, H], 0 past each length; final states [B, H])."""
  batch, length, dim = x_BxLxD.shape
  x_LBxD = jnp.swapaxes(x_BxLxD, 0, 1).reshape(length * batch, dim)
  x_gates = tuple(g.reshape(length, batch, -1)
                  for g in _project_gates(x_LBxD, params['input_kernel'], params['input_bias']))
  real_LxB = (jnp.arange(length)[:, None] < lengths_B[None, :]).astype(x_gates[0].dtype)
  outputs_LxBxH, final_BxH = _recurrence(params['recurrent_kernel'], params['recurrent_bias'], x_gates,
                                         real_LxB, initial_BxH, reverse)
  return jnp.swapaxes(outputs_LxBxH, 0, 1), final_BxH


def bigru_scan(params_forward, params_backward, x_BxLxD: jax.Array, lengths_B: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
  """Both directions of a bidirectional GRU in one scan: (outputs [B, L, 2H], finals [B, 2H]), forward then
  backward, equal to `gru_scan` of each direction (the backward one with reverse=True).

  Step i reads position i forwards and position L-1-i backwards: one input projection [D, 2H] per gate for
  both directions and one batched [2, B, H] x [2, H, 3H] product a step, half the steps of two scans.
  """
  batch, length, dim = x_BxLxD.shape
  hidden = params_forward['recurrent_kernel'].shape[0]
  both = lambda key: jnp.concatenate([a.reshape(a.shape[:-1] + (3, hidden)) for a in
                                      (params_forward[key], params_backward[key])], axis=-1)  # [.., 3, 2H]
  x_LBxD = jnp.swapaxes(x_BxLxD, 0, 1).reshape(length * batch, dim)
  flip = lambda a: jnp.stack([a[:, 0], a[::-1, 1]], axis=1)  # the backward direction's time reversed
  per_direction = lambda a: jnp.swapaxes(a.reshape(length, batch, 2, hidden), 1, 2)  # [L, 2, B, H]
  x_gates = tuple(flip(per_direction(g)) for g in _project_gates(  # each gate block: both directions, [.., 2H]
      x_LBxD, both('input_kernel').reshape(dim, -1), both('input_bias').reshape(-1)))
  real_LxB = (jnp.arange(length)[:, None] < lengths_B[None, :]).astype(x_gates[0].dtype)
  stack = lambda key: jnp.stack([params_forward[key], params_backward[key]])
  outputs, finals_2xBxH = _recurrence(stack('recurrent_kernel'), stack('recurrent_bias'), x_gates,
                                      flip(jnp.stack([real_LxB, real_LxB], axis=1)),
                                      jnp.zeros((2, batch, hidden), x_gates[0].dtype), False)
  outputs_Lx2xBxH = flip(outputs)
  outputs_BxLx2H = jnp.concatenate([jnp.swapaxes(outputs_Lx2xBxH[:, 0], 0, 1),
                                    jnp.swapaxes(outputs_Lx2xBxH[:, 1], 0, 1)], axis=-1)
  return outputs_BxLx2H, jnp.concatenate([finals_2xBxH[0], finals_2xBxH[1]], axis=-1)


def _recurrence_forward(recurrent_kernel, recurrent_bias, x_gates, real_LxB, initial_BxH, reverse):
  """The scan of `gru_scan` from the projected inputs: (outputs [L, B, H], final [B, H]), and the residuals
  of the backward pass (previous state, reset and update gates, candidate, U_n h + c_n; each [L, B, H]).
  With kernels [2, H, 3H] and biases [2, 3H], every array has a direction axis before B (`bigru_scan`)."""

  def step(h_BxH, inputs):
    x_gates_B, real_B = inputs
    reset, update, candidate, hn = _gates(recurrent_kernel, recurrent_bias, h_BxH, x_gates_B)
    h_new = (1.0 - update) * candidate + update * h_BxH
    real_Bx1 = real_B[..., None] > 0
    return jnp.where(real_Bx1, h_new, h_BxH), (jnp.where(real_Bx1, h_new, 0.0),
                                                (h_BxH, reset, update, candidate, hn))

  final_BxH, (outputs_LxBxH, residuals) = jax.lax.scan(step, initial_BxH, (x_gates, real_LxB),
                                                       reverse=reverse)
  return (outputs_LxBxH, final_BxH), residuals


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _recurrence(recurrent_kernel, recurrent_bias, x_gates, real_LxB, initial_BxH, reverse):
  """h_t = GRU(h_{t-1}) where real_LxB is 1, else h_{t-1}, from the projected inputs (see `gru_scan`).

  Its backward pass is written out: a scan that carries dL/dh and emits the gradients of the three gates'
  pre-activations as three arrays, with one [B, H] x [H, H] product per gate a step; the gradient of U is
  then one product per gate over all steps, sum_t h_{t-1}^T dg_t, instead of one accumulated inside every
  step.
  """
  return _recurrence_forward(recurrent_kernel, recurrent_bias, x_gates, real_LxB, initial_BxH, reverse)[0]


def _recurrence_fwd(recurrent_kernel, recurrent_bias, x_gates, real_LxB, initial_BxH, reverse):
  out, residuals = _recurrence_forward(recurrent_kernel, recurrent_bias, x_gates, real_LxB, initial_BxH, reverse)
  return out, (recurrent_kernel, real_LxB, residuals)


def _recurrence_bwd(reverse, saved, cotangents):
  recurrent_kernel, real_LxB, residuals = saved
  d_outputs_LxBxH, d_final_BxH = cotangents
  kernels_T = tuple(jnp.swapaxes(k, -1, -2) for k in jnp.split(recurrent_kernel, 3, axis=-1))  # [(2,) H, H]
  product = lambda d_BxH, kernel_T: jnp.einsum('...bk,...kh->...bh', d_BxH, kernel_T)

  def step(dh_BxH, inputs):  # dh: the gradient of the carried state after this step
    d_output, real_B, (h_prev, reset, update, candidate, hn) = inputs
    real_Bx1 = real_B[..., None] > 0
    dh_new = jnp.where(real_Bx1, dh_BxH + d_output, 0.0)
    d_candidate = dh_new * (1.0 - update) * (1.0 - candidate * candidate)
    d_update = dh_new * (h_prev - candidate) * update * (1.0 - update)
    d_reset = d_candidate * hn * reset * (1.0 - reset)
    dh_prev = (dh_new * update + product(d_reset, kernels_T[0]) + product(d_update, kernels_T[1])
               + product(d_candidate * reset, kernels_T[2]))
    return jnp.where(real_Bx1, dh_prev, dh_BxH), (d_reset, d_update, d_candidate)

  d_initial_BxH, d_x_gates = jax.lax.scan(
      step, d_final_BxH, (d_outputs_LxBxH, real_LxB, residuals), reverse=not reverse)
  h_prev_LxBxH, reset_LxBxH = residuals[0], residuals[1]
  d_h_gates = (d_x_gates[0], d_x_gates[1], d_x_gates[2] * reset_LxBxH)  # of U_g h + c_g
  if recurrent_kernel.ndim == 2:  # one product per gate over all steps and sequences
    flat = lambda a: a.reshape(-1, a.shape[-1])
    d_kernel = jnp.concatenate([flat(h_prev_LxBxH).T @ flat(d) for d in d_h_gates], axis=-1)
  else:  # per direction: [L, 2, B, .] -> [2, L B, .]
    per_direction = lambda a: jnp.swapaxes(a, 0, 1).reshape(a.shape[1], -1, a.shape[-1])
    d_kernel = jnp.concatenate([jnp.einsum('dnh,dnk->dhk', per_direction(h_prev_LxBxH), per_direction(d))
                                for d in d_h_gates], axis=-1)
  d_bias = jnp.concatenate([jnp.sum(d, axis=(0, h_prev_LxBxH.ndim - 2)) for d in d_h_gates], axis=-1)
  return d_kernel, d_bias, d_x_gates, jnp.zeros_like(real_LxB), d_initial_BxH


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


class GRU(nn.Module):
  """One direction of a GRU layer over a padded batch (`gru_scan`); `reverse` reads each sequence backwards."""

  hidden: int
  reverse: bool = False
  kernel_init: Callable = nn.initializers.lecun_normal()
  recurrent_init: Callable = nn.initializers.orthogonal()

  @nn.compact
  def parameters(self, dim: int) -> dict[str, jax.Array]:
    """The layer's parameters for inputs of width `dim` (W, b, U, c of the module docstring)."""
    return {
        'input_kernel': self.param('input_kernel', self.kernel_init, (dim, 3 * self.hidden)),
        'input_bias': self.param('input_bias', nn.initializers.zeros, (3 * self.hidden,)),
        'recurrent_kernel': self.param('recurrent_kernel', self.recurrent_init, (self.hidden, 3 * self.hidden)),
        'recurrent_bias': self.param('recurrent_bias', nn.initializers.zeros, (3 * self.hidden,)),
    }

  def __call__(self, x_BxLxD, lengths_B, initial_BxH=None) -> tuple[jax.Array, jax.Array]:
    params = self.parameters(x_BxLxD.shape[-1])
    if initial_BxH is None:
      initial_BxH = jnp.zeros((x_BxLxD.shape[0], self.hidden), x_BxLxD.dtype)
    return gru_scan(params, x_BxLxD, lengths_B, initial_BxH, self.reverse)


class BiGRU(nn.Module):
  """Bidirectional GRU: outputs [B, L, 2H] and final states [B, 2H], forward then backward, concatenated
  (`bigru_scan`: both directions in one scan)."""

  hidden: int

  @nn.compact
  def __call__(self, x_BxLxD, lengths_B) -> tuple[jax.Array, jax.Array]:
    dim = x_BxLxD.shape[-1]
    forward = GRU(self.hidden, name='forward').parameters(dim)
    backward = GRU(self.hidden, reverse=True, name='backward').parameters(dim)
    return bigru_scan(forward, backward, x_BxLxD, lengths_B)


class GRUDecoder(nn.Module):
  """GRU then a softmax layer over the vocabulary: logits [B, L, V] and the final state [B, H].

  A single decoding step is the same call on a length-1 sequence. `states` and `project` are the two halves,
  for losses that apply the output layer to some positions only (`dtr.nn.softmax.target_nll`).
  """

  vocab_size: int
  hidden: int
  output_bias: bool = True

  def setup(self):
    self.gru = GRU(self.hidden)
    self.output = nn.Dense(self.vocab_size, use_bias=self.output_bias)

  def states(self, inputs_BxLxE, initial_BxH, lengths_B=None) -> tuple[jax.Array, jax.Array]:
    """The GRU's outputs [B, L, H] (0 past each length) and final state [B, H]."""
    if lengths_B is None:
      lengths_B = jnp.full(inputs_BxLxE.shape[:1], inputs_BxLxE.shape[1], jnp.int32)
    return self.gru(inputs_BxLxE, lengths_B, initial_BxH)

  def project(self, outputs_xH) -> jax.Array:
    """Logits [..., V] of GRU outputs [..., H]."""
    return self.output(outputs_xH)

  def __call__(self, inputs_BxLxE, initial_BxH, lengths_B=None) -> tuple[jax.Array, jax.Array]:
    outputs_BxLxH, final_BxH = self.states(inputs_BxLxE, initial_BxH, lengths_B)
    return self.project(outputs_BxLxH), final_BxH


# ------------------------------------------------------------------------------------------- teacher forcing
def teacher_forcing(tokens_BxL: jax.Array, lengths_B: jax.Array, bos_id: int = BOS_ID, eos_id: int = EOS_ID):
  """Decoder (inputs, targets, target mask), all [B, L], from words padded to L > every length.

  inputs = bos w_1 ... w_n, targets = w_1 ... w_n eos: n + 1 predicted tokens, end of sentence included.
  The last column of `tokens` is padding (L > n), so dropping it from the inputs loses nothing.
  """
  tokens_BxL = jnp.asarray(tokens_BxL, jnp.int32)
  positions_BxL = jnp.arange(tokens_BxL.shape[1])[None, :]
  lengths_Bx1 = jnp.asarray(lengths_B, jnp.int32)[:, None]
  bos_Bx1 = jnp.full((tokens_BxL.shape[0], 1), bos_id, jnp.int32)
  inputs_BxL = jnp.concatenate([bos_Bx1, tokens_BxL[:, :-1]], axis=1)
  targets_BxL = jnp.where(positions_BxL == lengths_Bx1, eos_id, tokens_BxL)
  return inputs_BxL, targets_BxL, (positions_BxL <= lengths_Bx1).astype(jnp.float32)


def _no_word_dropout(rate) -> bool:
  """Whether `rate` turns word dropout off: a number <= 0 (a JAX array, a population member's rate, is on)."""
  return not isinstance(rate, jax.Array) and float(rate) <= 0


def word_dropout(embedded_BxLxE: jax.Array, rate, rng: jax.Array) -> jax.Array:
  """Zeroes the whole embedding of each decoder input token with probability `rate` (Bowman et al. 2016): a
  float, or a float32 scalar (a population member's rate, `dtr.population`; kept as float32 either way, so
  the two draw the same masks).

  Not rescaled: the decoder sees a missing word, not a louder one (as in the binary-autoencoder reference).
  """
  if _no_word_dropout(rate):
    return embedded_BxLxE
  keep_BxL = jax.random.bernoulli(rng, 1.0 - jnp.asarray(rate, jnp.float32), embedded_BxLxE.shape[:2])
  return embedded_BxLxE * keep_BxL[..., None].astype(embedded_BxLxE.dtype)


# ------------------------------------------------------------------------------------------------ decoding
def decode(step_fn: Callable[[Any, jax.Array], tuple[Any, jax.Array]], initial_state: Any, batch_size: int,
           max_len: int, rng: jax.Array | None = None, *, pad_id: int = PAD_ID, bos_id: int = BOS_ID,
           eos_id: int = EOS_ID) -> jax.Array:
  """Greedy (rng None) or ancestral-sampled decoding: word ids int32 [B, max_len], pad from the eos on.

  `step_fn(state, previous_token_B) -> (state, logits_BxV)`; the first previous token is bos. Step t picks
  argmax_v logits or v ~ softmax(logits) (with `fold_in(rng, t)`), never pad or bos (they are never targets).
  A row stops at its first eos, which is not written: rows are in the 'tokens' layout (no bos/eos, pad 0),
  and a row with no eos ran into `max_len`. A `lax.while_loop` that ends once every row has stopped.
  """

  def cond(carry):
    t, _, _, done_B, _ = carry
    return (t < max_len) & ~jnp.all(done_B)

  def body(carry):
    t, state, previous_B, done_B, out_BxL = carry
    state, logits_BxV = step_fn(state, previous_B)
    logits_BxV = logits_BxV.at[:, jnp.array([pad_id, bos_id])].set(-jnp.inf)
    if rng is None:
      token_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    else:
      token_B = jax.random.categorical(jax.random.fold_in(rng, t), logits_BxV, axis=-1).astype(jnp.int32)
    done_B = done_B | (token_B == eos_id)
    out_BxL = out_BxL.at[:, t].set(jnp.where(done_B, pad_id, token_B))
    return t + 1, state, token_B, done_B, out_BxL

  carry = (jnp.int32(0), initial_state, jnp.full((batch_size,), bos_id, jnp.int32),
           jnp.zeros((batch_size,), bool), jnp.full((batch_size, max_len), pad_id, jnp.int32))
  return jax.lax.while_loop(cond, body, carry)[-1]


# ------------------------------------------------------------------------------------ sentence autoencoder
class TextAutoencoder(nn.Module):
  """Embeddings (shared), a GRU encoder with linear heads, and a teacher-forced GRU decoder fed the code z.

  head_sizes: widths of the linear heads on the encoder's final state (empty: no encoder, a language model);
  code_to: 'state' (the decoder starts from Dense(z)) or 'input' (z is appended to every decoder input).
  """

  vocab_size: int
  embed_size: int
  hidden_size: int
  head_sizes: tuple = ()
  bidirectional: bool = True
  code_size: int = 0
  code_to: str = 'state'
  dropout: float = 0.0
  output_bias: bool = False
  bos_id: int = BOS_ID
  eos_id: int = EOS_ID

  def setup(self):
    self.embed = nn.Embed(self.vocab_size, self.embed_size)
    self.drop = Dropout(self.dropout)
    if self.head_sizes:
      self.encoder = BiGRU(self.hidden_size) if self.bidirectional else GRU(self.hidden_size)
      self.heads = [nn.Dense(size) for size in self.head_sizes]
    if self.code_size and self.code_to == 'state':
      self.bridge = nn.Dense(self.hidden_size)
    self.decoder = GRUDecoder(self.vocab_size, self.hidden_size, self.output_bias)

  def encode(self, tokens_BxL, lengths_B, train: bool = False) -> tuple:
    """The heads on the encoder's final state (each [B, size])."""
    embedded = self.drop(self.embed(tokens_BxL), deterministic=not train)
    _, final_BxH = self.encoder(embedded, lengths_B)
    return tuple(head(final_BxH) for head in self.heads)

  def initial_state(self, z_BxC, batch_size: int):
    if self.code_size and self.code_to == 'state':
      return self.bridge(z_BxC)
    return jnp.zeros((batch_size, self.hidden_size), jnp.float32)

  def _with_code(self, embedded_BxLxE, z_BxC):
    if self.code_size and self.code_to == 'input':
      z_BxLxC = jnp.broadcast_to(z_BxC[:, None, :], embedded_BxLxE.shape[:2] + z_BxC.shape[-1:])
      return jnp.concatenate([embedded_BxLxE, z_BxLxC.astype(embedded_BxLxE.dtype)], axis=-1)
    return embedded_BxLxE

  def decoder_states(self, z_BxC, tokens_BxL, lengths_B, train: bool = False, word_dropout_rate=0.0):
    """Teacher-forced decoder before its output layer: (GRU outputs [B, L, H], targets [B, L], target mask
    [B, L]); `project` gives their logits."""
    inputs_BxL, targets_BxL, mask_BxL = teacher_forcing(tokens_BxL, lengths_B, self.bos_id, self.eos_id)
    embedded = self.embed(inputs_BxL)
    if train and not _no_word_dropout(word_dropout_rate):
      embedded = word_dropout(embedded, word_dropout_rate, self.make_rng('dropout'))
    embedded = self.drop(embedded, deterministic=not train)
    initial_BxH = self.initial_state(z_BxC, tokens_BxL.shape[0])
    outputs_BxLxH, _ = self.decoder.states(self._with_code(embedded, z_BxC), initial_BxH, lengths_B + 1)
    return outputs_BxLxH, targets_BxL, mask_BxL

  def project(self, outputs_xH):
    """The decoder's output layer: logits [..., V]."""
    return self.decoder.project(outputs_xH)

  def reconstruct(self, z_BxC, tokens_BxL, lengths_B, train: bool = False, word_dropout_rate=0.0):
    """Teacher-forced decoder: (logits [B, L, V], targets [B, L], target mask [B, L])."""
    outputs_BxLxH, targets_BxL, mask_BxL = self.decoder_states(z_BxC, tokens_BxL, lengths_B, train,
                                                               word_dropout_rate)
    return self.project(outputs_BxLxH), targets_BxL, mask_BxL

  def decode_step(self, h_BxH, token_B, z_BxC):
    """One decoder step from the previous token: (state, logits [B, V])."""
    embedded = self._with_code(self.embed(token_B[:, None]), z_BxC)
    logits_Bx1xV, h_BxH = self.decoder(embedded, h_BxH)
    return h_BxH, logits_Bx1xV[:, 0]

  def __call__(self, tokens_BxL, lengths_B, z_BxC):
    heads = self.encode(tokens_BxL, lengths_B) if self.head_sizes else ()
    return heads, self.reconstruct(z_BxC, tokens_BxL, lengths_B)
