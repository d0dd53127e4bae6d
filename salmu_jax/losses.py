"""Contrastive losses and the loss-function protocol that pretraining and unlearning share.

The raw losses are pure functions of (embeddings, logit scale[, bias]). Under `jit`
with a sharded batch they see the global batch: the similarity matrix spans every
example on every device (XLA inserts the all-gathers), so the loss equals the
single-device loss on the same batch. Both take L2-normalized embeddings [B, D] and
the *log* temperature, as CLIP stores it.

A *loss function* (what optimizer steps minimize) is `(params, batch, ctx) -> (scalar,
aux)`, with `ctx` a `Context`; `contrastive` is the pretraining one, and every
objective in salmu_jax.unlearning.objectives has the same shape.
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

Loss = Callable[[Any, dict, "Context"], tuple]


def similarity_logits(image_emb, text_emb, logit_scale, logit_bias=0.0):
  """logits[i, j] = exp(scale) * <image_i, text_j> + bias."""
  return jnp.exp(logit_scale) * image_emb @ text_emb.T + logit_bias


def same_group(groups):
  """[B, B] True where two pairs of the batch are contrasted with each other (all of them
  when `groups` is None)."""
  return None if groups is None else groups[:, None] == groups[None, :]


def clip_softmax_per_example(image_emb, text_emb, logit_scale, logit_bias=None, groups=None):
  """Symmetric InfoNCE per pair: (CE(image->texts) + CE(text->images)) / 2, shape [B];
  with `groups` [B], each pair's negatives are the pairs of its own group only."""
  del logit_bias  # CLIP's softmax loss has none.
  logits = similarity_logits(image_emb, text_emb, logit_scale)
  if groups is not None:
    logits = jnp.where(same_group(groups), logits, -jnp.inf)
  image_to_text = -jnp.diagonal(jax.nn.log_softmax(logits, axis=1))
  text_to_image = -jnp.diagonal(jax.nn.log_softmax(logits, axis=0))
  return (image_to_text + text_to_image) / 2


def clip_softmax_loss(image_emb, text_emb, logit_scale, logit_bias=None, groups=None):
  """CLIP's loss (Radford et al. 2021), as OpenCLIP's ClipLoss computes it."""
  return clip_softmax_per_example(image_emb, text_emb, logit_scale, logit_bias, groups).mean()


def siglip_per_example(image_emb, text_emb, logit_scale, logit_bias, groups=None):
  """SigLIP's terms of each image's row, -sum_j log sigmoid(z_ij * logit_ij), shape [B]
  (with `groups`, over the pairs j of its own group); their mean is `siglip_loss`."""
  logits = similarity_logits(image_emb, text_emb, logit_scale, logit_bias)
  labels = 2 * jnp.eye(logits.shape[0], dtype=logits.dtype) - 1
  terms = -jax.nn.log_sigmoid(labels * logits)
  if groups is not None:
    terms = jnp.where(same_group(groups), terms, 0.0)
  return terms.sum(axis=1)


def siglip_loss(image_emb, text_emb, logit_scale, logit_bias, groups=None):
  """SigLIP's pairwise sigmoid loss (Zhai et al. 2023): -sum log sigmoid(z_ij * logit_ij) / B."""
  return siglip_per_example(image_emb, text_emb, logit_scale, logit_bias, groups).mean()


# By config.train.loss: the batch loss, and each pair's share of it (sequence-level
# objectives such as NPO reweight pairs). All take (image, text, log_scale, bias).
LOSSES = {"softmax": clip_softmax_loss, "sigmoid": siglip_loss}
PER_EXAMPLE = {"softmax": clip_softmax_per_example, "sigmoid": siglip_per_example}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Context:
  """What a loss function sees beside params and batch: the frozen reference parameters
  (None when pretraining), an RNG key, the step, and `apply(params, images, tokens,
  memory_rows=None) -> (image_emb, text_emb, log_scale, logit_bias)`."""
  reference_params: Any
  rng: jax.Array
  step: jax.Array
  apply: Callable = dataclasses.field(metadata=dict(static=True))

  def reference(self, images, tokens):
    """The frozen original model's outputs; no gradient reaches its parameters."""
    return self.apply(jax.lax.stop_gradient(self.reference_params), images, tokens)


def contrastive(on: str, kind: str) -> Loss:
  """The pretraining loss (`kind`: "softmax", CLIP's symmetric InfoNCE, or "sigmoid",
  SigLIP's) on batch[on]."""
  objective = LOSSES[kind]

  def loss(params, batch, ctx):
    part = batch[on]
    # A memory model's pretraining batch names each pair's memory row (model.clip.Memory):
    # the pairs it holds and the others are contrasted apart, so that no gradient of a
    # held pair reaches the weights through another pair's negatives either.
    rows = part.get("memory_row")
    if rows is None:
      value = objective(*ctx.apply(params, part["image"], part["tokens"]))
    else:
      value = objective(*ctx.apply(params, part["image"], part["tokens"], rows),
                        groups=rows >= 0)
    return value, {f"contrastive_{on}": value}
  return loss
