"""Every checkpoint a stage writes or reads: one orbax layout, one declared metadata schema.

A step directory RUN/checkpoints/STEP holds `state` (a training.state.TrainState whose
optimizer state has the pretraining structure), `meta` (JSON, `META_SCHEMA`) and, for
training runs only, `data` (the grain iterator, so that a resumed run reads the same
batches). Before any restore the metadata is compared with what the reader expects.
"""
import json
import os
import shutil

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging

from salmu_jax import io_utils
from salmu_jax.errors import ConfigError, SalmuError

CHECKPOINTS_DIRNAME = "checkpoints"
CORRUPT_DIRNAME = "checkpoints.corrupt"  # Damaged training checkpoints are moved here.
STAGES = ("train", "unlearn", "convert")
META_SCHEMA = {
    "model": "model.factory.signature of the parameters; compared before every restore",
    "reference": "clean or compromised (a reference model), or unlearned",
    "stage": f"what wrote it: one of {STAGES}",
    "dataset": "data.layout.identity of the dataset the model was trained on (an unlearned "
               "model: Compromised's); None for imported weights",
    "config": "the config of the run that wrote it",
    "details": "what the stage records: train {mixture, devices}; unlearn {method, budget, from}; "
               "convert {imported_from}",
    "checksums": "per array of the state (parameters, optimizer state, step, RNG), a "
                 "checksum of its bits (`checksums`), written by `save` and verified by "
                 "`restore`",
}
# What a resumed training run may change: how it logs, checks, stores and is laid out on
# devices, and what other stages read. Anything else (learning rate, batch size, mixture,
# exposures, steps, data, model) would continue another recipe than the one begun.
SAFE_ON_RESUME = ("train.log_every", "train.eval_every", "train.eval_examples",
                  "train.checkpoint_every", "train.keep_checkpoints", "data.loader.",
                  "data.build_workers", "mesh.", "eval.", "unlearn.", "benchmark.")


class DamagedCheckpoint(Exception):
  """A step's state differs from the checksums saved with it (a flipped bit)."""


_WORDS = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}  # 8 bytes: two words.


@jax.jit
def _checksums(tree):
  def checksum(x):
    x = jnp.asarray(x)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    bits = jax.lax.bitcast_convert_type(x, _WORDS[x.dtype.itemsize]).astype(jnp.uint32)
    odd = 2 * jnp.arange(bits.size, dtype=jnp.uint32).reshape(bits.shape) + 1
    return jnp.sum(bits * odd, dtype=jnp.uint32)  # Wraps modulo 2^32.
  return jax.tree.map(checksum, tree)


def checksums(tree) -> dict:
  """{array path: the sum of its words' bits times odd position weights, modulo 2^32}:
  any one changed word changes it (odd weights are invertible modulo 2^32), and so does
  moving values between positions. Reduced where the arrays live (sharded included)."""
  sums = jax.device_get(_checksums(tree))
  return {jax.tree_util.keystr(path): int(value)
          for path, value in jax.tree_util.tree_leaves_with_path(sums)}


def make_meta(*, model: dict, reference: str, stage: str, dataset, config, **details) -> dict:
  if stage not in STAGES:
    raise ValueError(f"unknown checkpoint stage {stage!r}")
  return {"model": model, "reference": reference, "stage": stage, "dataset": dataset,
          "config": json.loads(config.to_json()), "details": details}


def manager(run_dir: str, keep: int | None = None) -> ocp.CheckpointManager:
  """The orbax manager of RUN/checkpoints; `keep`: how many steps to keep (None: all)."""
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(run_dir), CHECKPOINTS_DIRNAME),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def steps(run_dir: str) -> list:
  """The committed steps of a run directory, oldest first (none: [])."""
  if not os.path.isdir(os.path.join(run_dir, CHECKPOINTS_DIRNAME)):
    return []
  return sorted(manager(run_dir).all_steps())


def save(checkpoints: ocp.CheckpointManager, step: int, state, meta: dict,
         iterator=None) -> None:
  """Starts writing one step (asynchronously: `wait_until_finished` before relying on it),
  with the checksums of its parameters."""
  missing = (set(META_SCHEMA) - {"checksums"}) ^ set(meta)
  if missing:
    raise ValueError(f"checkpoint metadata keys {sorted(missing)} differ from META_SCHEMA")
  meta = meta | {"checksums": checksums(state)}
  items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
  if iterator is not None:
    items["data"] = grain.checkpoint.CheckpointSave(iterator)
  checkpoints.save(step, args=ocp.args.Composite(**items), force=True)


def read_meta(checkpoints: ocp.CheckpointManager, step: int, run_dir: str) -> dict:
  meta = checkpoints.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  if set(meta) != set(META_SCHEMA):
    raise ConfigError(f"{run_dir} holds a checkpoint (step {step}) written by another version "
                      f"of salmu_jax (metadata keys {sorted(meta)}); train or convert it again")
  return meta


def latest_meta(run_dir: str) -> dict | None:
  """The metadata of a run directory's latest committed step (None: no checkpoint)."""
  if not os.path.isdir(os.path.join(run_dir, CHECKPOINTS_DIRNAME)):
    return None
  checkpoints = manager(run_dir)
  latest = checkpoints.latest_step()
  return None if latest is None else read_meta(checkpoints, latest, run_dir)


def check_meta(meta: dict, signature: dict, reference: str | None, run_dir: str) -> None:
  """Refuses a checkpoint of another model shape, or of another reference when one is named."""
  saved, expected = meta["model"], json.loads(json.dumps(signature))
  if saved != expected:
    differs = sorted(k for k in set(saved) | set(expected) if saved.get(k) != expected.get(k))
    details = ", ".join(f"{k}: {saved.get(k)} vs {expected.get(k)}" for k in differs)
    raise ConfigError(f"{run_dir} holds a checkpoint of a different model ({details}); "
                      f"use another --workdir")
  if reference is not None and meta["reference"] != reference:
    raise ConfigError(f"{run_dir} holds a {meta['reference']} checkpoint, not {reference}; "
                      f"use another --workdir")


def restore(run_dir: str, abstract_state, *, signature: dict, reference: str | None,
            iterator=None, recipe=None, set_aside_damaged: bool = False) -> tuple:
  """(state, meta, step) of the latest checkpoint of `run_dir`, or (None, None, None).

  Refuses another model shape, another reference (None: any, e.g. an unlearned model),
  and, when `iterator` is given (training resumes), a checkpoint no training run wrote and,
  with `recipe` (the config resuming it), one begun with another recipe (`check_recipe`),
  before the iterator's state is read: a run of fewer steps cannot take a later position.
  A step whose files cannot be read is damaged: a training run (`set_aside_damaged`)
  moves it to RUN/checkpoints.corrupt/ with a warning and uses the one before; a reader
  never moves files and stops, naming it.
  """
  checkpoints = manager(run_dir)
  for step in sorted(checkpoints.all_steps(), reverse=True):
    try:
      meta = read_meta(checkpoints, step, run_dir)
      check_meta(meta, signature, reference, run_dir)
      items = {"state": ocp.args.StandardRestore(abstract_state)}
      if iterator is not None:
        if meta["stage"] != "train":
          raise ConfigError(f"{run_dir} holds a checkpoint written by {meta['stage']}, not a "
                            f"training run to resume; train in another --workdir")
        if recipe is not None:
          check_recipe(meta, recipe, run_dir)
        items["data"] = grain.checkpoint.CheckpointRestore(iterator)
      state = checkpoints.restore(step, args=ocp.args.Composite(**items))["state"]
      sums = checksums(state)
      differ = sorted(k for k in sums if sums[k] != meta["checksums"].get(k))
      if differ or set(sums) != set(meta["checksums"]):
        raise DamagedCheckpoint(f"its state differs from its saved checksums in "
                                f"{len(differ)} arrays ({', '.join(differ[:2])})")
      return state, meta, step
    except SalmuError:
      raise
    except Exception as e:  # noqa: BLE001 -- files that cannot be read are damaged.
      reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
      if not set_aside_damaged:
        raise ConfigError(f"checkpoint step {step} in {run_dir} is unreadable ({reason}); "
                          f"nothing was moved: delete it, or resume training there, which "
                          f"sets it aside") from None
      aside = os.path.join(run_dir, CORRUPT_DIRNAME, str(step))
      logging.warning("checkpoint step %d in %s is unreadable (%s); moved to %s, trying the "
                      "one before", step, run_dir, reason, aside)
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      shutil.rmtree(aside, ignore_errors=True)
      shutil.move(os.path.join(run_dir, CHECKPOINTS_DIRNAME, str(step)), aside)
      checkpoints = manager(run_dir)
  return None, None, None


def check_recipe(meta: dict, config, run_dir: str) -> None:
  """Refuses to resume a training run with another recipe than the one it began with,
  naming the keys; those in SAFE_ON_RESUME may change."""
  differing = io_utils.differing_keys(meta["config"], json.loads(config.to_json()))
  unsafe = [k for k in differing if not k.startswith(SAFE_ON_RESUME)]
  if unsafe:
    raise ConfigError(f"{run_dir} was begun with another recipe (differs in: "
                      f"{', '.join(unsafe[:8])}); resume it with the config it began with, or "
                      f"train in another --workdir (safe to change: "
                      f"{', '.join(k.rstrip('.') for k in SAFE_ON_RESUME)})")
