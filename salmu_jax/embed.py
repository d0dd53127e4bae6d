"""Embedding images and texts with a CLIP, in jitted batches sharded over the mesh.

Used by the trainer's retrieval check and by the evaluator: embeddings are
computed once per split, then every metric is matrix arithmetic on them. A last
batch smaller than the data-parallel size is padded and trimmed. With several
processes every process embeds the same inputs as one global array and gets the whole
result.
"""
import dataclasses

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from salmu_jax.model import sharding


@dataclasses.dataclass
class Encoders:
  """Jitted (params, batch) -> normalized embeddings for each tower."""
  image: object
  text: object
  mesh: jax.sharding.Mesh


def make_encoders(graphdef, param_shardings, mesh, image: str = "encode_image",
                  text: str = "encode_text") -> Encoders:
  """`image` / `text`: the model's methods to jit (a memory model's `image_address` /
  `text_address` are what its memory is keyed by)."""
  batch = sharding.batch_sharding(mesh)

  def encode_image(params, images):
    return getattr(nnx.merge(graphdef, params), image)(images)

  def encode_text(params, tokens):
    return getattr(nnx.merge(graphdef, params), text)(tokens)

  jit = lambda f: jax.jit(f, in_shardings=(param_shardings, batch), out_shardings=batch)
  return Encoders(jit(encode_image), jit(encode_text), mesh)


def trim_padding(tokens: np.ndarray, multiple: int = 8) -> np.ndarray:
  """Drops the all-padding columns after the longest row, keeping a multiple of `multiple`
  columns (a handful of compiled shapes). Exact for the causal text tower (clip.TextTower);
  short texts (names, prompts, "{name} {value}") then cost a fraction of a full row."""
  used = np.flatnonzero(tokens.any(axis=0))
  length = int(used[-1]) + 1 if used.size else 1
  return tokens[:, :min(-(-length // multiple) * multiple, tokens.shape[1])]


def _padded_call(fn, params, array, mesh) -> np.ndarray:
  n = len(array)
  pad = -n % sharding.data_parallel_size(mesh)
  if pad:
    array = np.concatenate([array, np.repeat(array[-1:], pad, 0)])
  if jax.process_count() == 1:
    return np.asarray(fn(params, array))[:n]
  # Several processes: each holds the whole array; it becomes one global array, and every
  # process gathers the whole result.
  whole = array
  array = jax.make_array_from_callback(whole.shape, sharding.batch_sharding(mesh),
                                       lambda index: whole[index])
  return np.asarray(multihost_utils.process_allgather(fn(params, array), tiled=True))[:n]


def embed_batches(encoders: Encoders, params, batches, texts: bool = True):
  """Embeds an ordered, finite grain MapDataset of batches with 'image' (and 'tokens').

  Returns (image_emb [N, D], text_emb [N, D] or None, metadata {key: [N]}) as NumPy.
  """
  images, captions, meta = [], [], {}
  for batch in batches:
    images.append(_padded_call(encoders.image, params, batch["image"], encoders.mesh))
    if texts:
      captions.append(_padded_call(encoders.text, params, trim_padding(batch["tokens"]),
                                   encoders.mesh))
    for key, value in batch.items():
      if key not in ("image", "tokens"):
        meta.setdefault(key, []).append(np.asarray(value))
  return (np.concatenate(images), np.concatenate(captions) if texts else None,
          {k: np.concatenate(v) for k, v in meta.items()})


def embed_images(encoders: Encoders, params, images: np.ndarray) -> np.ndarray:
  """Embeds one array of images [N, H, W, 3] (uint8 or float in [0, 255])."""
  return _padded_call(encoders.image, params, images, encoders.mesh)


def token_batches(tokenizer, texts, batch_size: int) -> list:
  """A list of strings (prompts, names, galleries) as token batches of `batch_size`, each
  cut after its longest row (`trim_padding`): what `embed_tokens` reads."""
  return [trim_padding(tokenizer.encode(texts[i:i + batch_size]))
          for i in range(0, len(texts), batch_size)]


def embed_tokens(encoders: Encoders, params, batches) -> np.ndarray:
  """Embeds token batches (`token_batches`), in order, as one array [N, D]."""
  chunks = [_padded_call(encoders.text, params, tokens, encoders.mesh) for tokens in batches]
  return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def retrieval_at_1(image_emb: np.ndarray, text_emb: np.ndarray) -> float:
  """Share of images whose own caption (same row) is their most similar text."""
  return float((np.argmax(image_emb @ text_emb.T, axis=1) == np.arange(len(image_emb))).mean())
