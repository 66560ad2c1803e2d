r"""The two networks of a Gaussian bag-of-words VAE (`dtr.methods.bow_vae`), over the flat sparse layout.

  GaussianEncoder  q(z|x) = N(mu(x), diag(exp(logvar(x)))): an embedding bag over the document's entries
                   (`dtr.nn.feedforward.SparseLinear`: the dense product x @ W + b without a [B, V] matrix),
                   `len(hidden) - 1` further hidden layers, then two linear heads mu and logvar [B, d].
                   `hidden=()` makes both heads linear maps of x.
  SoftmaxDecoder   p(x|z): `len(hidden)` hidden layers, then vocabulary logits [..., V]; the word
                   distribution is softmax(logits). `hidden=()` is the linear softmax decoder
                   softmax(z W + b) of NVDM (Miao, Yu & Blunsom, "Neural Variational Inference for Text
                   Processing", ICML 2016) and of Krishnan et al.'s 0-layer generative model.

With `init_scale` s every weight and bias is drawn from U(-s, s) (Krishnan, Liang & Hoffman 2018 use
s = 0.1); None keeps Flax's defaults.
"""

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dtr.nn.feedforward import SparseLinear, uniform_init

ACTIVATIONS: dict[str, Callable] = {'relu': nn.relu, 'tanh': jnp.tanh, 'softplus': nn.softplus}


def _init_kwargs(init_scale) -> dict:
  if init_scale is None:
    return {}
  return dict(kernel_init=uniform_init(init_scale), bias_init=uniform_init(init_scale))


class GaussianEncoder(nn.Module):
  """Flat sparse documents -> (mu [B, d], logvar [B, d]) of a diagonal Gaussian posterior."""

  vocab_size: int
  hidden: Sequence[int]
  latent_dim: int
  activation: str = 'relu'
  init_scale: float | None = None

  @nn.compact
  def __call__(self, batch) -> tuple[jax.Array, jax.Array]:
    kw = _init_kwargs(self.init_scale)
    act = ACTIVATIONS[self.activation]
    if not self.hidden:
      return (SparseLinear(self.vocab_size, self.latent_dim, name='mu', **kw)(batch),
              SparseLinear(self.vocab_size, self.latent_dim, name='logvar', **kw)(batch))
    h_BxH = act(SparseLinear(self.vocab_size, self.hidden[0], **kw)(batch))
    for width in self.hidden[1:]:
      h_BxH = act(nn.Dense(width, **kw)(h_BxH))
    return (nn.Dense(self.latent_dim, name='mu', **kw)(h_BxH),
            nn.Dense(self.latent_dim, name='logvar', **kw)(h_BxH))


class SoftmaxDecoder(nn.Module):
  """Latent z [..., d] -> vocabulary logits [..., V] (any leading axes, or none: one z [d])."""

  vocab_size: int
  hidden: Sequence[int] = ()
  activation: str = 'relu'
  init_scale: float | None = None

  @nn.compact
  def __call__(self, z) -> jax.Array:
    kw = _init_kwargs(self.init_scale)
    act = ACTIVATIONS[self.activation]
    h = z
    for width in self.hidden:
      h = act(nn.Dense(width, **kw)(h))
    return nn.Dense(self.vocab_size, name='logits', **kw)(h)
