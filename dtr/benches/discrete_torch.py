"""PyTorch twins of dtr's global VQ-VAE and Hard EM: the same-CPU peer of `classification speed`.

The original code (shuningjin/discrete-text-rep) needs AllenNLP 0.9 and cannot be installed on a current
Python, so the bench times these twins instead: the same network and step as dtr's global variants, written
in plain PyTorch without AllenNLP's data and training machinery (so at least as fast as the original code on
the same CPU; a ratio against a twin is a lower bound on the ratio against the original).

  network  token embedding (shared by encoder and decoder inputs) + sinusoidal positions + dropout, one
           post-LN `nn.TransformerEncoderLayer` (ReLU), the masked mean of its states projected to the M
           latents' inputs, one post-LN `nn.TransformerDecoderLayer` (causal self-attention over bos + x,
           cross-attention to the M code vectors), a linear output layer applied to the predicted positions
           only (as dtr's packed `weighted_target_nll`); loss summed over tokens, averaged over documents;
  VQ-VAE   nearest entry of each of M code books, straight-through, commitment * ||u - sg(e)||^2 +
           ||sg(u) - e||^2 (code books by the loss, no restarts: the bench's `vq_vae-global-M4-K256`);
  Hard EM  `em_iter` E-steps, each a step of the encoder group (embedding, encoder, latent projection) on the
           loss with softmax-weighted code vectors, then one M-step of the decoder group (decoder, output
           layer, code books) on the argmax codes, the encoder run without gradients.

Adam at the config's learning rate after global-norm clipping at `clip` (per group for Hard EM), on the
bench's own batches (the same documents and padded widths as dtr's timed steps).
"""

from __future__ import annotations

import math
import time

import numpy as np

from dtr.methods.base import BOS_ID, EOS_ID


def covers(mc) -> bool:
  """Whether the twin runs model config `mc`'s step: global VQ-VAE with loss-trained code books or global
  relaxed Hard EM, not alternating, without word dropout."""
  return (mc.level == 'global' and mc.name in ('vq_vae', 'hard_em') and not mc.get('alternating', False)
          and mc.get('word_dropout', 0.0) <= 0 and mc.get('codebook_update', 'loss') == 'loss'
          and mc.get('em_relax', True))


def twin(mc, vocab: int, max_width: int):
  """The PyTorch module for model config `mc` (one that `covers` accepts)."""
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  if not covers(mc):
    raise ValueError(f'the PyTorch twin covers global vq_vae (code books by the loss) and relaxed hard_em '
                     f'without word dropout or alternation, not {mc.level} {mc.name}')
  d, m, k = int(mc.model_dim), int(mc.num_latents), int(mc.num_values)

  class GlobalDiscreteVAE(nn.Module):

    def __init__(self):
      super().__init__()
      self.embed = nn.Embedding(vocab, d)
      nn.init.xavier_uniform_(self.embed.weight)
      position = torch.arange(max_width + 1, dtype=torch.float32)[:, None]
      rate = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
      table = torch.zeros(max_width + 1, d)
      table[:, 0::2], table[:, 1::2] = torch.sin(position * rate), torch.cos(position * rate)
      self.register_buffer('positions', table)
      self.drop = nn.Dropout(mc.dropout)
      self.encoder = nn.TransformerEncoderLayer(d, mc.num_heads, mc.ff_dim, mc.dropout, batch_first=True)
      self.to_latent = nn.Linear(d, m * (d if mc.name == 'vq_vae' else k))
      self.codebook = nn.Parameter(torch.randn(m, k, d) if mc.name == 'hard_em' else
                                   nn.init.xavier_uniform_(torch.empty(m, k, d)))
      self.decoder = nn.TransformerDecoderLayer(d, mc.num_heads, mc.ff_dim, mc.dropout, batch_first=True)
      self.output = nn.Linear(d, vocab)

    def groups(self):
      encoder = [*self.embed.parameters(), *self.encoder.parameters(), *self.to_latent.parameters()]
      decoder = [*self.decoder.parameters(), *self.output.parameters(), self.codebook]
      return encoder, decoder

    def _embedded(self, tokens):
      return self.drop(self.embed(tokens) + self.positions[:tokens.shape[1]])

    def latent_inputs(self, tokens, lengths):
      """The projection of the masked mean of the encoder's states: [B, M, d] (VQ) or logits [B, M, K]."""
      padding = torch.arange(tokens.shape[1])[None, :] >= lengths[:, None]
      states = self.encoder(self._embedded(tokens), src_key_padding_mask=padding)
      keep = (~padding).to(states.dtype)[..., None]
      pooled = (states * keep).sum(1) / keep.sum(1).clamp(min=1.0)
      return self.to_latent(pooled).view(tokens.shape[0], m, -1)

    def nll(self, memory, tokens, lengths):
      """Summed token NLL (n + 1 targets, eos included) averaged over the documents."""
      batch, width = tokens.shape
      inputs = torch.cat([torch.full((batch, 1), BOS_ID, dtype=tokens.dtype), tokens[:, :-1]], dim=1)
      positions = torch.arange(width)[None, :]
      targets = torch.where(positions == lengths[:, None], torch.full_like(tokens, EOS_ID), tokens)
      valid = positions <= lengths[:, None]
      causal = nn.Transformer.generate_square_subsequent_mask(width)
      states = self.decoder(self._embedded(inputs), memory, tgt_mask=causal, tgt_is_causal=True)
      logits = self.output(states[valid])
      return nn.functional.cross_entropy(logits, targets[valid], reduction='sum') / batch

    def vq_loss(self, tokens, lengths):
      u = self.latent_inputs(tokens, lengths)                               # [B, M, d]
      distances = ((u[:, :, None, :] - self.codebook[None]) ** 2).sum(-1)   # [B, M, K]
      codes = distances.argmin(-1)
      e = self.codebook[torch.arange(m)[None, :], codes]                    # [B, M, d]
      memory = u + (e - u).detach()
      commit = ((u - e.detach()) ** 2).sum((1, 2)).mean()
      book = ((u.detach() - e) ** 2).sum((1, 2)).mean()
      return self.nll(memory, tokens, lengths) + mc.commitment * commit + book

    def e_step_loss(self, tokens, lengths):
      weights = torch.softmax(self.latent_inputs(tokens, lengths), dim=-1)   # [B, M, K]
      return self.nll(torch.einsum('bmk,mkd->bmd', weights, self.codebook), tokens, lengths)

    def m_step_loss(self, tokens, lengths):
      with torch.no_grad():
        codes = self.latent_inputs(tokens, lengths).argmax(-1)
      return self.nll(self.codebook[torch.arange(m)[None, :], codes], tokens, lengths)

  return GlobalDiscreteVAE()


def steps_per_second(mc, vocab: int, batches: list[tuple[np.ndarray, np.ndarray]], warmup: int = 4,
                     seed: int = 0) -> tuple[float, str]:
  """(steps/s over `batches` after `warmup` untimed steps, a description of the framework) of the twin of
  `mc` trained on (tokens [B, W], lengths [B]) batches, one step each."""
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  model = twin(mc, vocab, max(t.shape[1] for t, _ in batches))
  model.train()
  encoder, decoder = model.groups()
  if mc.name == 'vq_vae':
    groups = [(torch.optim.Adam(model.parameters(), lr=mc.learning_rate), list(model.parameters()))]
  else:
    groups = [(torch.optim.Adam(params, lr=mc.learning_rate), params) for params in (encoder, decoder)]
  data = [(torch.as_tensor(t, dtype=torch.long), torch.as_tensor(n, dtype=torch.long)) for t, n in batches]

  from torch.nn import utils as nn_utils  # pylint: disable=g-import-not-at-top

  def update(loss, optimizer, params):
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if mc.clip > 0:
      nn_utils.clip_grad_norm_(params, mc.clip)
    optimizer.step()

  def step(tokens, lengths):
    if mc.name == 'vq_vae':
      update(model.vq_loss(tokens, lengths), *groups[0])
      return
    for _ in range(int(mc.em_iter)):
      update(model.e_step_loss(tokens, lengths), *groups[0])
    update(model.m_step_loss(tokens, lengths), *groups[1])

  for tokens, lengths in data[:warmup]:
    step(tokens, lengths)
  t0 = time.perf_counter()
  for tokens, lengths in data:
    step(tokens, lengths)
  rate = len(data) / (time.perf_counter() - t0)
  return rate, f'PyTorch {torch.__version__} twin (cpu, {torch.get_num_threads()} threads)'
