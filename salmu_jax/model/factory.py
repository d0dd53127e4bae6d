"""Builds the CLIP a config describes, and names what its checkpoints depend on."""
import math

import jax
import jax.numpy as jnp
from flax import nnx

from salmu_jax.model.clip import CLIP

MAX_LOGIT_SCALE = math.log(100)  # OpenCLIP clamps the temperature to 1/100.


def has_memory(config) -> bool:
  return bool(config.model.memory.enabled)


def signature(config, vocab_size: int, memory_rows: int = 0) -> dict:
  """What a checkpoint's parameter shapes depend on; compared before restoring. A model
  without memory is described as before the memory existed, so its checkpoints still load."""
  model = config.model.to_dict()
  memory = model.pop("memory")
  extra = {"memory": memory, "memory_rows": memory_rows} if memory["enabled"] else {}
  return {**model, "image_size": config.data.image_size, "vocab_size": vocab_size,
          "context_length": config.tokenizer.context_length, **extra}


def build(config, vocab_size: int, key, memory_rows: int = 0) -> CLIP:
  return CLIP(config.model, image_size=config.data.image_size, vocab_size=vocab_size,
              context_length=config.tokenizer.context_length, rngs=nnx.Rngs(params=key),
              memory_rows=memory_rows if has_memory(config) else 0)


def abstract(config, vocab_size: int, memory_rows: int = 0) -> CLIP:
  """The model's structure and shapes, without computing any weight."""
  return nnx.eval_shape(lambda: build(config, vocab_size, jax.random.PRNGKey(0), memory_rows))


def apply_fn(graphdef):
  """(params, images, tokens, memory_rows=None) -> (image_emb, text_emb, log_scale,
  logit_bias): the `apply` every loss function calls (salmu_jax.losses.Context)."""
  def apply(params, images, tokens, memory_rows=None):
    return nnx.merge(graphdef, params)(images, tokens, memory_rows)
  return apply


def clamp_logit_scale(params):
  """Keeps the learned temperature within OpenCLIP's bound after an update."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.clip(x, 0, MAX_LOGIT_SCALE)
      if any(getattr(k, "key", None) == "logit_scale" for k in path) else x, params)
