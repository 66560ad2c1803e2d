r"""The probe: a classifier on frozen features of a pretrained model (`dtr.probe`), trained on a label budget.

Input x is one example's features: a float vector (flattened), or, with `reembed`, its discrete codes
c in [0, K)^{P x M} (P positions, -1 for padding; global latents have P = 1), re-embedded by new trainable
tables E_m in R^{K x e}, one per latent slot m, and averaged over the valid (position, slot) pairs:

    f(x) = x  (features)     or     f(c) = mean_{p, m : c_pm >= 0} E_m[c_pm]   (reembed)
    with normalize='example':  f(x) <- (f(x) - mean_j f_j(x)) / sqrt(var_j f_j(x) + 1e-6)   (features only)
    h = f(x), then `hidden` layers h <- act(W h + b) (dropout `dropout` in training), logits = W h + b
    loss = -mean_b log softmax(logits_b)[y_b]   over the labelled rows (y >= 0, mask 1)

A linear softmax (`hidden=()`) is the Jin et al. (ACL 2020) downstream classifier; a 2 x 32 LeakyReLU MLP is
Prokhorov et al.'s (2021), 2 x 100 Baynazarov & Piontkovskaya's (2019). Adam 3e-4 with gradient-norm
clipping at 5 by default.

Why `normalize`: frozen features can be on any scale (code-book vectors of a discrete VAE start at Xavier
scale, about 0.1), and with Adam 3e-4 and early stopping after `patience` epochs a linear probe on tiny
inputs stops before its logits have moved. Standardising each example over its F dimensions (a layer norm
without parameters) puts every feature set on the same footing; it keeps the direction of x, which is all a
linear softmax on mean-pooled code vectors separates by. 'none' (the default) feeds x as it is.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from dtr.methods.base import AdamMethod, setting
from dtr.nn.dropout import Dropout

NORMALIZE = ('none', 'example')
ACTIVATIONS = {'relu': nn.relu, 'leaky_relu': nn.leaky_relu, 'tanh': jnp.tanh}


# The model fields a config may lack and what their absence means (`Probe.absent_means`).
ABSENT = {'normalize': 'none'}


def validate_config(mc: ml_collections.ConfigDict) -> None:
  if any(h < 1 for h in mc.hidden):
    raise ValueError(f'model.hidden widths must be >= 1, got {tuple(mc.hidden)}.')
  if mc.activation not in ACTIVATIONS:
    raise ValueError(f'model.activation={mc.activation!r}; use one of {sorted(ACTIVATIONS)}.')
  if not 0 <= mc.dropout < 1:
    raise ValueError(f'model.dropout must be in [0, 1), got {mc.dropout}.')
  if mc.learning_rate <= 0:
    raise ValueError(f'model.learning_rate must be > 0, got {mc.learning_rate}.')
  if setting(mc, 'normalize', ABSENT) not in NORMALIZE:
    raise ValueError(f"model.normalize={mc.normalize!r}; use one of {NORMALIZE} (each dimension standardised over "
                     "the training split is data.feature_standardize=True: normalize=feature in configs/classify.py).")
  if mc.reembed and mc.embed_dim < 1:
    raise ValueError(f'model.embed_dim must be >= 1, got {mc.embed_dim}.')


class ProbeNetwork(nn.Module):
  num_labels: int
  hidden: tuple
  activation: str
  dropout: float
  reembed: bool
  num_values: int
  embed_dim: int
  normalize: str = 'none'

  @nn.compact
  def __call__(self, features, train: bool = False):
    if self.reembed:
      codes = features.reshape(features.shape[0], -1, features.shape[-1]).astype(jnp.int32)  # [B, P, M]
      slots = codes.shape[-1]
      tables = self.param('embeddings', nn.initializers.normal(1.0), (slots, self.num_values, self.embed_dim))
      valid = codes >= 0
      vectors = tables[jnp.arange(slots)[None, None, :], jnp.maximum(codes, 0)]  # [B, P, M, e]
      weights = valid.astype(vectors.dtype)[..., None]
      h = jnp.sum(vectors * weights, axis=(1, 2)) / jnp.maximum(jnp.sum(weights, axis=(1, 2)), 1.0)
    else:
      h = features.reshape(features.shape[0], -1).astype(jnp.float32)
      if self.normalize == 'example':
        h = (h - jnp.mean(h, axis=-1, keepdims=True)) / jnp.sqrt(jnp.var(h, axis=-1, keepdims=True) + 1e-6)
    for width in self.hidden:
      h = ACTIVATIONS[self.activation](nn.Dense(width)(h))
      h = Dropout(self.dropout)(h, deterministic=not train)
    return nn.Dense(self.num_labels)(h)


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: Method's equality by value (a static jit argument)
class Probe(AdamMethod):
  """A classifier on precomputed features or codes: `init`, `train_step`, `predict`."""

  reads: ClassVar[str] = 'features'
  emits: ClassVar[str | None] = None
  batch_fields: ClassVar[tuple] = ('label',)
  validate = staticmethod(validate_config)
  absent_means: ClassVar[dict] = ABSENT
  conditional_hparams: ClassVar[dict] = {
      'dropout': ('when model.dropout > 0 and the probe has hidden layers (model.hidden), after which dropout '
                  'acts: whether it runs is fixed per program', lambda mc: mc.dropout > 0 and len(mc.hidden) > 0)}

  def _network(self, values=None) -> ProbeNetwork:
    """The network, its dropout rate `values['dropout']` (a member's `step_values`) or the config's."""
    mc = self.config
    if self.data.num_labels < 2:
      raise ValueError(f'the probe needs at least 2 classes, the corpus has {self.data.num_labels}.')
    if mc.reembed and self.data.num_values < 2:
      raise ValueError('model.reembed=True re-embeds symbol codes, but the features are not symbols (train the '
                       'probe on the codes of a symbol method with data.feature_kind=codes).')
    return ProbeNetwork(self.data.num_labels, tuple(mc.hidden), mc.activation, self.step_value('dropout', values),
                        mc.reembed, self.data.num_values, mc.embed_dim, self.setting('normalize'))

  def init(self, rng, batch, hparams=None):
    params = self._network().init(rng, batch['features'])['params']
    return self.keep_hparams({'params': params, 'opt_state': self.optimizer().init(params)}, hparams)

  def loss(self, params, batch, rng, values=None):
    """(cross entropy, accuracy) in training; `values`: a member's `step_values` (None: the config's)."""
    logits = self._network(values).apply({'params': params}, batch['features'], train=True, rngs={'dropout': rng})
    return cross_entropy(logits, batch)

  def train_step(self, state, batch, rng):
    (loss, accuracy), grads = jax.value_and_grad(self.loss, has_aux=True)(state['params'], batch, rng,
                                                                          self.step_values(state))
    updates, opt_state = self.optimizer(self.rate(state)).update(grads, state['opt_state'], state['params'])
    return ({**state, 'params': optax.apply_updates(state['params'], updates), 'opt_state': opt_state},
            {'loss': loss, 'accuracy': accuracy, 'grad_norm': optax.tree.norm(grads)})

  def predict(self, params, batch):
    """Class logits [B, C] (dropout off)."""
    return self._network().apply({'params': params}, batch['features'])


def cross_entropy(logits_BxC, batch):
  """(mean cross entropy, accuracy) over the rows with a label (label >= 0) that are real (mask 1)."""
  labels = batch['label'].reshape(-1)
  weight = ((labels >= 0) & (batch['mask'].reshape(-1) > 0)).astype(logits_BxC.dtype)
  log_p = jax.nn.log_softmax(logits_BxC, axis=-1)
  picked = jnp.take_along_axis(log_p, jnp.maximum(labels, 0)[:, None], axis=-1)[:, 0]
  total = jnp.maximum(jnp.sum(weight), 1.0)
  correct = (jnp.argmax(logits_BxC, axis=-1) == labels).astype(logits_BxC.dtype)
  return -jnp.sum(picked * weight) / total, jnp.sum(correct * weight) / total


def default_model_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='probe',
      hidden=(),              # () = a linear softmax (Jin et al.); (32, 32) with leaky_relu: Prokhorov et al.
      activation='relu',
      dropout=0.0,            # after each hidden layer, training only; a population's hyperparameter when > 0
      learning_rate=3e-4,     # Adam, Jin et al.'s downstream setting
      clip=5.0,               # global-norm gradient clip (0 = off)
      reembed=False,          # features are symbol codes: learn new embeddings of them
      embed_dim=64,           # e, with reembed
      normalize='none',       # 'example': standardise each feature vector over its dimensions (features only)
  ))
