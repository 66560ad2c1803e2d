r"""CBOW classifier: the mean of learned word embeddings, then a linear softmax over classes.

The supervised baseline of Jin et al. (ACL 2020; the reference's `CBOWEncoder` + logistic regression). For a
document x = (x_1..x_n) with label y,

    f(x) = (1/n) sum_t E[x_t],    p(y | x) = softmax(W f(x) + b)_y,    loss = -mean_b log p(y_b | x_b)

over the rows with a label (label >= 0 and mask 1). E in R^{V x e} starts at N(0, 1) (PyTorch's
`nn.Embedding`, as the reference); e = 64 by default, the reference's `cbow.d_model` (= its Transformer
width). Adam 3e-4 with gradient-norm clipping at 5, the reference's target-training settings.
`features` are f(x) (the mean embedding), `predict` the class logits.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from dtr.methods.base import AdamMethod


def validate_config(mc: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the field for impossible CBOW settings."""
  if mc.embedding_dim < 1:
    raise ValueError(f'model.embedding_dim must be >= 1, got {mc.embedding_dim}.')
  if mc.learning_rate <= 0:
    raise ValueError(f'model.learning_rate must be > 0, got {mc.learning_rate}.')
  if mc.clip < 0:
    raise ValueError(f'model.clip must be >= 0 (0 = no clipping), got {mc.clip}.')


class CBOWNetwork(nn.Module):
  """(class logits [B, C], mean embeddings [B, e]) of a 'tokens' batch."""

  vocab_size: int
  embedding_dim: int
  num_labels: int

  @nn.compact
  def __call__(self, tokens_BxL, lengths_B):
    embed = nn.Embed(self.vocab_size, self.embedding_dim, embedding_init=nn.initializers.normal(1.0))
    valid_BxL = jnp.arange(tokens_BxL.shape[1])[None, :] < lengths_B[:, None]
    w_BxL = valid_BxL.astype(jnp.float32)
    mean_BxE = jnp.sum(embed(tokens_BxL) * w_BxL[..., None], axis=1) / jnp.maximum(w_BxL.sum(1), 1.0)[:, None]
    return nn.Dense(self.num_labels)(mean_BxE), mean_BxE


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: Method's equality by value (a static jit argument)
class CBOW(AdamMethod):
  """Mean-embedding classifier: `init`, `train_step`, `predict`, `features`."""

  reads: ClassVar[str] = 'tokens'
  emits: ClassVar[str | None] = None
  batch_fields: ClassVar[tuple] = ('label',)
  batch_fields: ClassVar[tuple] = ('label',)
  validate = staticmethod(validate_config)

  def __post_init__(self):
    super().__post_init__()
    if self.token_vocab_size <= 4:
      raise ValueError(f'CBOW reads token ids: DataInfo.token_vocab_size must exceed the 4 special ids, got '
                       f'{self.token_vocab_size}.')
    if self.data.num_labels < 2:
      raise ValueError(f'CBOW needs DataInfo.num_labels >= 2 classes, got {self.data.num_labels}.')

  @property
  def token_vocab_size(self) -> int:
    """Token ids incl. the specials: `DataInfo.token_vocab_size`, else `vocab_size`."""
    return self.data.token_vocab_size or self.vocab_size

  @property
  def code_length(self) -> int:
    return self.config.embedding_dim

  def _network(self) -> CBOWNetwork:
    return CBOWNetwork(self.token_vocab_size, self.config.embedding_dim, self.data.num_labels)

  def init(self, rng: jax.Array, batch, hparams=None) -> dict[str, Any]:
    params = self._network().init(rng, jnp.asarray(batch['tokens']), jnp.asarray(batch['lengths']))['params']
    return self.keep_hparams({'params': params, 'opt_state': self.optimizer().init(params)}, hparams)

  def _outputs(self, params, batch):
    tokens_BxL, lengths_B = jnp.asarray(batch['tokens']), jnp.asarray(batch['lengths'])
    return self._network().apply({'params': params}, tokens_BxL, lengths_B)

  def predict(self, params, batch) -> jax.Array:
    """Class logits float32 [B, C]."""
    return self._outputs(params, batch)[0]

  def features(self, params, batch) -> jax.Array:
    """The mean word embedding float32 [B, e]."""
    return self._outputs(params, batch)[1]

  def loss(self, params, batch):
    """Mean cross entropy over the labelled rows (label >= 0, mask 1), and their accuracy."""
    logits_BxC = self.predict(params, batch)
    labels_B = jnp.asarray(batch['label'])
    weight_B = (labels_B >= 0) * jnp.asarray(batch.get('mask', jnp.ones(labels_B.shape)), jnp.float32)
    log_p_B = jnp.take_along_axis(jax.nn.log_softmax(logits_BxC), jnp.maximum(labels_B, 0)[:, None], 1)[:, 0]
    num = jnp.maximum(jnp.sum(weight_B), 1.0)
    accuracy = jnp.sum((jnp.argmax(logits_BxC, -1) == labels_B) * weight_B) / num
    return -jnp.sum(log_p_B * weight_B) / num, {'accuracy': accuracy}

  def train_step(self, state, batch, rng=None):
    del rng  # deterministic: no dropout
    (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(state['params'], batch)
    updates, opt_state = self.optimizer(self.rate(state)).update(grads, state['opt_state'], state['params'])
    new_state = {**state, 'params': optax.apply_updates(state['params'], updates), 'opt_state': opt_state}
    return new_state, {'loss': loss, 'grad_norm': optax.tree.norm(grads), **aux}


def default_model_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name='cbow',         # the method's registry name
      embedding_dim=64,    # e: the reference's cbow.d_model (its Transformer width d)
      learning_rate=3e-4,  # Adam, the reference's target-training rate
      clip=5.0,            # global-norm gradient clip (0 = off)
  ))
