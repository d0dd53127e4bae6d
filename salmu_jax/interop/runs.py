"""Weights between OpenCLIP / Hugging Face files and salmu_jax run directories.

`openclip:` and `hf:` name a weights file (or a model directory holding one;
safetensors, or a PyTorch .bin read with weights_only); a bare path is a salmu_jax
run directory. Importing needs a config whose model and tokenizer match the weights
(checked tensor by tensor); exporting reads the shape from the checkpoint.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from salmu_jax import checkpointing, io_utils
from salmu_jax import config as config_lib
from salmu_jax.data.tokenizer import CLIP_VOCAB_SIZE
from salmu_jax.errors import ConfigError
from salmu_jax.interop import clip_weights, state_dicts
from salmu_jax.model import factory
from salmu_jax.training import runtime as runtime_lib

FORMATS = (clip_weights.OPENCLIP, clip_weights.HUGGINGFACE)


def flatten(tree: dict, prefix: str = "") -> dict:
  """Nested parameters as {"visual.transformer.blocks.0.ln_1.scale": array, ...}."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out |= flatten(value, f"{prefix}{key}.")
    else:
      out[f"{prefix}{key}"] = value
  return out


def import_params(path: str, config) -> dict:
  """Nested float32 parameters of the Flax CLIP `config` describes, from an OpenCLIP or
  Hugging Face weights file; ConfigError naming every tensor whose shape differs."""
  state_dict = state_dicts.read_state_dict(path)
  params = clip_weights.to_params(state_dict, config.model, config.model.init_logit_bias)
  vocab_size = params["text"]["token_embedding"].shape[0]
  if config.tokenizer.kind == "clip_bpe" and vocab_size != CLIP_VOCAB_SIZE:
    raise ConfigError(f"the weights embed {vocab_size} tokens but tokenizer.kind='clip_bpe' has "
                      f"{CLIP_VOCAB_SIZE}")
  template = nnx.to_pure_dict(nnx.state(factory.abstract(config, vocab_size)))
  expected = {k: tuple(v.shape) for k, v in flatten(template).items()}
  found = {k: tuple(np.shape(v)) for k, v in flatten(params).items()}
  wrong = sorted(k for k in expected if found.get(k) != expected[k])
  if wrong:
    shape = clip_weights.describe(clip_weights.as_openclip(state_dict))
    details = "; ".join(f"{k}: {found.get(k)} in the weights, {expected[k]} for the config"
                        for k in wrong[:4])
    raise ConfigError(f"{path} does not fit the config's model ({len(wrong)} tensors differ: "
                      f"{details}). The weights look like {shape}")
  return params


def write_run(params: dict, config, run_dir: str, source: dict) -> None:
  """A run directory holding `params` as a step-0 checkpoint of `config.reference`,
  restorable by salmu_jax.unlearn / evaluate like a trained reference."""
  if checkpointing.steps(run_dir):
    raise ConfigError(f"{run_dir} already holds checkpoints; use another --to")
  vocab_size = params["text"]["token_embedding"].shape[0]
  _, _, init_state = runtime_lib.model_definition(config, vocab_size)
  model_state = nnx.state(factory.abstract(config, vocab_size))
  nnx.replace_by_pure_dict(model_state, jax.tree.map(jnp.asarray, params))
  state = init_state(jax.random.PRNGKey(config.seed), model_state)
  checkpoints = checkpointing.manager(run_dir)
  checkpointing.save(checkpoints, 0, state, checkpointing.make_meta(
      model=factory.signature(config, vocab_size), reference=config.reference, stage="convert",
      dataset=None, config=config, imported_from=source))
  checkpoints.wait_until_finished()


def read_run(run_dir: str) -> tuple:
  """(nested float32 numpy parameters, checkpoint meta) of the latest checkpoint of a
  run directory; the model's shape comes from the checkpoint itself."""
  meta = checkpointing.latest_meta(run_dir)
  if meta is None:
    raise ConfigError(f"{run_dir} holds no checkpoint (expected {run_dir}/checkpoints/)")
  config = config_lib.base_config()
  signature = dict(meta["model"])
  config.data.image_size = signature.pop("image_size")
  config.tokenizer.context_length = signature.pop("context_length")
  vocab_size = signature.pop("vocab_size")
  config.model.update(signature)
  _, _, init_state = runtime_lib.model_definition(config, vocab_size)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
                          jax.eval_shape(init_state, jax.random.PRNGKey(0)))
  state, meta, _ = checkpointing.restore(run_dir, abstract, signature=meta["model"],
                                         reference=None)
  return jax.tree.map(np.asarray, nnx.to_pure_dict(state.params)), meta


def export_openclip(run_dir: str, path: str, with_logit_bias: bool = False) -> dict:
  """Writes the latest checkpoint of `run_dir` as OpenCLIP safetensors; returns its meta."""
  params, meta = read_run(run_dir)
  model = meta["model"]
  state_dicts.write_safetensors(path, clip_weights.to_openclip(params, with_logit_bias),
                                metadata={"format": "pt", "salmu_jax_model": json.dumps(model)})
  return meta


def parse_location(value: str, flag: str) -> tuple:
  """'openclip:PATH' / 'hf:PATH' -> (format, PATH); a bare path -> ('salmu', PATH)."""
  kind, sep, path = value.partition(":")
  if sep and kind in FORMATS:
    return kind, path
  if sep and kind.isalpha() and len(kind) > 1:
    raise ConfigError(f"{flag}={value!r}: unknown format {kind!r}; use openclip:PATH, hf:PATH "
                      f"or a run directory")
  return "salmu", value


def convert(source: str, target: str, config=None, with_logit_bias: bool = False) -> str:
  """One conversion as the CLI runs it; returns a line saying what was written."""
  (src_kind, src), (dst_kind, dst) = parse_location(source, "--from"), parse_location(target, "--to")
  if src_kind != "salmu" and dst_kind == "salmu":
    if config is None:
      raise ConfigError("importing weights needs --config (the model and tokenizer they fit)")
    params = import_params(src, config)
    weights = state_dicts.resolve_weights(src)
    write_run(params, config, dst, {"format": src_kind, "path": os.path.abspath(weights),
                                    "sha256": io_utils.sha256_file(weights)})
    return f"wrote {config.reference} checkpoint to {dst} (from {src_kind}:{weights})"
  if src_kind == "salmu" and dst_kind == clip_weights.OPENCLIP:
    meta = export_openclip(src, dst, with_logit_bias)
    return f"wrote OpenCLIP safetensors {dst} ({meta['reference']} model of {src})"
  raise ConfigError(f"cannot convert {src_kind} to {dst_kind}: supported are openclip:/hf: -> "
                    f"a run directory, and a run directory -> openclip:")


