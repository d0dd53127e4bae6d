"""Writing a memory model's keys (model.clip.Memory) once its towers are trained.

Training reads each held pair's own value by its row; evaluation reads by similarity of
content addresses (model.clip.image_address / text_address). So after the last step every
row's keys are the addresses of its pair, unaugmented, exactly as the evaluation decodes
it, and a row is valid when its pair was in the training mixture (Clean's memory holds no
sensitive pair).
"""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from salmu_jax import embed
from salmu_jax.data import pipeline


def trained_splits(mixture: dict) -> tuple:
  """The memory splits a reference trained on: those of its sources of positive weight."""
  return tuple(s for source, names in pipeline.SOURCE_SPLITS.items()
               if mixture.get(source, 0) > 0 for s in names)


def write_keys(state, runtime, mixture: dict, batch_size: int):
  """`state` with its memory's keys written from its towers and `valid` set to the rows
  of `trained_splits(mixture)`; every other row invalid."""
  encoders = embed.make_encoders(runtime.graphdef, runtime.state_shardings.params, runtime.mesh,
                                 image="image_address", text="text_address")
  batches = pipeline.eval_batches(runtime.dataset, pipeline.MEMORY_SPLITS, runtime.tokenizer,
                                  runtime.config.data.image_size, batch_size)
  image_keys, text_keys, _ = embed.embed_batches(encoders, state.params, batches)
  offsets = pipeline.memory_offsets(runtime.dataset)
  valid = np.zeros(len(image_keys), np.float32)
  for split in trained_splits(mixture):
    valid[offsets[split]:offsets[split] + len(runtime.dataset.splits[split])] = 1.0
  model = nnx.merge(runtime.graphdef, state.params)
  model.memory.image_keys[...] = jnp.asarray(image_keys)
  model.memory.text_keys[...] = jnp.asarray(text_keys)
  model.memory.valid[...] = jnp.asarray(valid)
  return state.replace(params=jax.device_put(nnx.state(model), runtime.state_shardings.params))


def delete_rows(params, rows):
  """`params` with the memory rows `rows` deleted: `valid` 0, and their keys and values
  zeroed, so that the released checkpoint holds nothing of the deleted pairs (a key is an
  address of its pair's content; flipping `valid` back restores nothing). Also returns how
  many of them were valid before."""
  rows = np.asarray(rows, np.int64)
  memory = params["memory"]
  size = len(memory["valid"][...])
  if rows.size and (rows.min() < 0 or rows.max() >= size):
    raise ValueError(f"memory rows {rows.min()}..{rows.max()} fall outside the memory's "
                     f"{size} rows")
  out = jax.tree.map(lambda x: x, params)  # A new State; the caller's is not mutated.
  was_valid = int(np.asarray(memory["valid"][...])[rows].sum()) if rows.size else 0
  for name in ("valid", "image_keys", "text_keys", "values"):
    array = np.asarray(memory[name][...]).copy()
    array[rows] = 0.0
    out["memory"][name][...] = jax.device_put(array, memory[name][...].sharding)
  return out, was_valid
