"""Contrastive losses: pure functions of (embeddings, logit scale[, bias]).

Under `jit` with a sharded batch these see the global batch: the similarity
matrix spans every example on every device (XLA inserts the all-gathers), so the
loss equals the single-device loss on the same batch.

Both take L2-normalized embeddings [B, D] and the *log* temperature, as CLIP
stores it; both return per-example losses' mean and accept per-example losses
via `clip_softmax_per_example` for objectives that reweight examples.
"""
import jax
import jax.numpy as jnp


def similarity_logits(image_emb, text_emb, logit_scale, logit_bias=0.0):
  """logits[i, j] = exp(scale) * <image_i, text_j> + bias."""
  return jnp.exp(logit_scale) * image_emb @ text_emb.T + logit_bias


def clip_softmax_per_example(image_emb, text_emb, logit_scale):
  """Symmetric InfoNCE per pair: (CE(image->texts) + CE(text->images)) / 2, shape [B]."""
  logits = similarity_logits(image_emb, text_emb, logit_scale)
  image_to_text = -jnp.diagonal(jax.nn.log_softmax(logits, axis=1))
  text_to_image = -jnp.diagonal(jax.nn.log_softmax(logits, axis=0))
  return (image_to_text + text_to_image) / 2


def clip_softmax_loss(image_emb, text_emb, logit_scale):
  """CLIP's loss (Radford et al. 2021), as OpenCLIP's ClipLoss computes it."""
  return clip_softmax_per_example(image_emb, text_emb, logit_scale).mean()


def siglip_loss(image_emb, text_emb, logit_scale, logit_bias):
  """SigLIP's pairwise sigmoid loss (Zhai et al. 2023): -sum log sigmoid(z_ij * logit_ij) / B."""
  logits = similarity_logits(image_emb, text_emb, logit_scale, logit_bias)
  labels = 2 * jnp.eye(logits.shape[0], dtype=logits.dtype) - 1
  return -jax.nn.log_sigmoid(labels * logits).sum() / logits.shape[0]


LOSSES = {"softmax": lambda img, txt, scale, bias: clip_softmax_loss(img, txt, scale),
          "sigmoid": siglip_loss}
