"""Trains a CLIP from scratch: the Clean and Compromised reference models.

  python -m salmu_jax.train --config=configs/tiny.py:compromised --workdir=runs/tiny/compromised
  python -m salmu_jax.train --config=configs/tiny.py:clean --workdir=runs/tiny/clean

Both use the same seed, model, steps and batch size; Compromised mixes the
sensitive set (forget + holdout_association + holdout_identity) into the retain
data, Clean never reads a sensitive record (`pipeline.reference_mixture`).

Read top to bottom: data -> mesh -> model, optimizer and shardings -> restore ->
jitted step -> loop with logging, held-out retrieval and checkpoints.
"""
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time

import flax
import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
import grain
from absl import app, flags, logging
from flax import nnx
from ml_collections import config_flags

from salmu_jax import config as config_lib
from salmu_jax import distributed, embed
from salmu_jax.data import builder, pipeline, scenes, sources, splits
from salmu_jax.data.tokenizer import load_tokenizer
from salmu_jax.errors import ConfigError, NonFiniteLoss, Preempted, SalmuError, non_finite_leaves
from salmu_jax.model import sharding
from salmu_jax.model.clip import CLIP
from salmu_jax.unlearning import objectives, parameter_transforms

MAX_LOGIT_SCALE = math.log(100)  # OpenCLIP clamps the temperature to 1/100.
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # What a shell reports for a SIGTERM'd program.


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State
  opt_state: optax.OptState
  rng: jax.Array  # Split every step and handed to the loss (unlearning losses use it).


NO_DECAY = ("positional_embedding", "class_embedding", "logit_scale", "logit_bias")


def decay_mask(params):
  """Weight decay on matrices only: not on norms and biases (1-D), positions, class token,
  or the logit scale and bias."""
  def decays(path, x):
    names = [str(getattr(k, "key", getattr(k, "name", ""))) for k in path]
    return x.ndim >= 2 and not any(name in NO_DECAY or name.endswith("bias") for name in names)
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(train, schedule=None):
  """(AdamW with global-norm clipping and the decay mask, its schedule); the schedule
  defaults to linear warm-up and cosine decay to 0 over train.steps."""
  schedule = schedule or optax.warmup_cosine_decay_schedule(
      0.0, train.learning_rate, train.warmup_steps, train.steps, end_value=0.0)
  return optax.chain(
      optax.clip_by_global_norm(train.grad_clip_norm),
      optax.adamw(schedule, b1=train.b1, b2=train.b2, eps=train.eps,
                  weight_decay=train.weight_decay, mask=decay_mask)), schedule


def model_signature(config, vocab_size: int) -> dict:
  """What a checkpoint's parameter shapes depend on; compared before restoring."""
  return {**config.model.to_dict(), "image_size": config.data.image_size,
          "vocab_size": vocab_size, "context_length": config.tokenizer.context_length}


def build_model(config, vocab_size: int, key) -> CLIP:
  return CLIP(config.model, image_size=config.data.image_size, vocab_size=vocab_size,
              context_length=config.tokenizer.context_length, rngs=nnx.Rngs(params=key))


def model_apply(graphdef):
  """(params, images, tokens) -> (image_emb, text_emb, log_scale, logit_bias): the `apply`
  every objective in salmu_jax.unlearning.objectives calls."""
  def apply(params, images, tokens):
    return nnx.merge(graphdef, params)(images, tokens)
  return apply


def clamp_logit_scale(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.clip(x, 0, MAX_LOGIT_SCALE)
      if any(getattr(k, "key", None) == "logit_scale" for k in path) else x, params)


def make_train_step(tx, objective, apply, update_mask=None):
  """One optimizer step of `objective` (a loss of salmu_jax.unlearning.objectives).

  Pure, so it jits with named shardings and donation. `reference_params` is the
  frozen original model (None when pretraining); `update_mask` (SalUn) zeroes the
  updates of unmasked weights; `learning_rate`, when given, multiplies the updates of
  a `tx` built with a unit schedule (unlearning: one compiled step for every budget).
  """
  def train_step(state: TrainState, reference_params, batch, learning_rate=None):
    rng, step_rng = jax.random.split(state.rng)
    ctx = objectives.Context(reference_params, step_rng, state.step, apply)
    (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params, batch, ctx)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    if learning_rate is not None:
      updates = jax.tree.map(lambda u: learning_rate * u, updates)
    if update_mask is not None:
      updates, _ = parameter_transforms.masked_updates(update_mask).update(updates, None)
    params = clamp_logit_scale(optax.apply_updates(state.params, updates))
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
    return TrainState(state.step + 1, params, opt_state, rng), metrics
  return train_step


def pretraining_step(config, graphdef, tx, state_shardings, mesh):
  """The jitted contrastive step `train` runs, state donated; (state, None, {"train": batch})
  -> (state, metrics). benchmarks/train_throughput.py times this same function."""
  return jax.jit(
      make_train_step(tx, objectives.contrastive("train", config.train.loss), model_apply(graphdef)),
      in_shardings=(state_shardings, None, {"train": sharding.batch_sharding(mesh)}),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=(0,))


@dataclasses.dataclass
class Trainer:
  """Everything a run needs, built once: mesh, model definition, shardings, data."""
  config: object
  workdir: str
  mesh: jax.sharding.Mesh
  graphdef: object
  init_state: object  # key -> TrainState, jitted with `state_shardings` as out_shardings.
  state_shardings: object
  tx: object
  dataset: sources.SalmuDataset
  tokenizer: object
  signature: dict


def model_definition(config, vocab_size: int):
  """(graphdef, optimizer, (key, params=None) -> TrainState): what a checkpoint of `config`
  holds; `params` (imported weights) replace the random initialization."""
  tx, _ = make_optimizer(config.train)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: build_model(config, vocab_size,
                                                             jax.random.PRNGKey(0))))

  def init_state(key, params=None):
    if params is None:
      params = nnx.state(build_model(config, vocab_size, key))
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params),
                      jax.random.fold_in(key, 1))
  return graphdef, tx, init_state


def setup(config, workdir: str, dataset_dir: str | None = None, devices=None) -> Trainer:
  config_lib.check_config(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  dp = sharding.data_parallel_size(mesh)
  if config.batch_size % dp:
    raise ConfigError(f"batch_size={config.batch_size} is not divisible by the data-parallel "
                      f"size {dp} (mesh data x fsdp)")
  if dataset_dir:
    builder.check_existing(dataset_dir, config)
  else:  # build_dataset verifies a dataset it reuses.
    dataset_dir = builder.build_dataset(config, os.path.join(workdir, "data"))
  dataset = sources.open_dataset(dataset_dir, verify=False)  # Verified just above.
  tokenizer = load_tokenizer(config.tokenizer, dataset_dir)
  graphdef, tx, init_state = model_definition(config, tokenizer.vocab_size)
  abstract = jax.eval_shape(init_state, jax.random.PRNGKey(0))
  shardings = sharding.state_shardings(abstract, mesh)
  return Trainer(config, workdir, mesh, graphdef, init_state, shardings, tx, dataset,
                 tokenizer, model_signature(config, tokenizer.vocab_size))


def heldout_scene_batches(config, tokenizer):
  """Held-out procedural pairs (the zero-shot stream) for a retrieval check while training."""
  source = scenes.ProceduralScenes(config.data.seed, config.data.image_size,
                                   config.train.eval_examples, "zeroshot")
  return grain.MapDataset.source(source).map(
      lambda item: {"image": item["image"], "tokens": tokenizer.encode([item["caption"]])[0]}
  ).batch(config.batch_size)


def checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), "checkpoints"),
      options=ocp.CheckpointManagerOptions(max_to_keep=config.train.keep_checkpoints, create=True))


def checkpoint_meta(manager, step: int) -> dict:
  """The JSON saved beside a checkpoint: model signature, reference (or "unlearned"), ..."""
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def check_signature(manager, step: int, signature: dict, reference: str | None,
                    workdir: str) -> None:
  """Refuses a checkpoint of another model shape, or of another reference when one is named."""
  saved = checkpoint_meta(manager, step)
  if saved["model"] != json.loads(json.dumps(signature)):
    differs = sorted(k for k in set(saved["model"]) | set(signature)
                     if saved["model"].get(k) != signature.get(k))
    details = ", ".join(f"{k}: {saved['model'].get(k)} vs {signature.get(k)}" for k in differs)
    raise ConfigError(f"{workdir} holds a checkpoint of a different model ({details}); "
                      f"use another --workdir")
  if reference is not None and saved["reference"] != reference:
    raise ConfigError(f"{workdir} holds a {saved['reference']} checkpoint, not {reference}; "
                      f"use another --workdir")


CORRUPT_DIRNAME = "checkpoints.corrupt"  # Unreadable checkpoints are moved here, not deleted.


def restore_state(trainer: Trainer, run_dir: str, iterator=None, reference="config"):
  """The latest readable checkpoint of `run_dir` with the trainer's shardings (None if
  there is none).

  Refuses checkpoints of another model shape, and of another reference model than
  `reference` ("config": the config's; None: any, e.g. an unlearned model); restores
  the grain iterator too when one is given. A checkpoint that cannot be read (truncated
  or damaged files) is moved to `run_dir/checkpoints.corrupt/` with a warning and the one
  before it is used.
  """
  expected = trainer.config.reference if reference == "config" else reference
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          jax.eval_shape(trainer.init_state, jax.random.PRNGKey(0)),
                          trainer.state_shardings)
  manager = checkpoint_manager(run_dir, trainer.config)
  for step in sorted(manager.all_steps(), reverse=True):
    items = {"state": ocp.args.StandardRestore(abstract)}
    if iterator is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(iterator)
    try:
      check_signature(manager, step, trainer.signature, expected, run_dir)
      return manager.restore(step, args=ocp.args.Composite(**items))["state"]
    except SalmuError:
      raise
    except Exception as e:  # noqa: BLE001 -- any failure to read it means it is damaged.
      aside = os.path.join(run_dir, CORRUPT_DIRNAME, str(step))
      logging.warning("checkpoint step %d in %s is unreadable (%s: %s); moved to %s, "
                      "trying the one before", step, run_dir, type(e).__name__,
                      str(e).splitlines()[0][:200] if str(e) else "", aside)
      os.makedirs(os.path.dirname(aside), exist_ok=True)
      shutil.rmtree(aside, ignore_errors=True)
      shutil.move(os.path.join(run_dir, "checkpoints", str(step)), aside)
      manager = checkpoint_manager(run_dir, trainer.config)
  return None


@contextlib.contextmanager
def sigterm_flag():
  """Yields a callable telling whether SIGTERM (preemption) arrived. The handler only sets
  a flag, so the loop finishes its step and saves a checkpoint before it stops."""
  received = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield received.is_set  # Signals reach only the main thread.
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.set())
  try:
    yield received.is_set
  finally:
    signal.signal(signal.SIGTERM, previous)


def train(config, workdir: str, *, dataset_dir: str | None = None, devices=None,
          stop_after: int | None = None, progress: bool = True) -> dict:
  """Trains (or resumes) to config.train.steps; returns {'losses': {step: loss}, ...}.

  `stop_after` ends the run early after that many steps of this call, with a
  checkpoint, as a preemption would (used to test exact resumption).
  """
  trainer = setup(config, workdir, dataset_dir, devices)
  mesh, train_cfg = trainer.mesh, config.train
  init_state, state_shardings = trainer.init_state, trainer.state_shardings
  batch_sharding = sharding.batch_sharding(mesh)
  process_index, process_count = jax.process_index(), jax.process_count()

  # Data: this process's slice of the reference mixture.
  num_sensitive = sum(len(trainer.dataset.splits[s]) for s in splits.TRAINED_SENSITIVE_SPLITS)
  mixture = pipeline.reference_mixture(config, num_sensitive)
  retain_base = sources.retain_base_source(config.data)
  batches = pipeline.training_batches(config, trainer.dataset, trainer.tokenizer, retain_base,
                                      mixture=mixture, shard_index=process_index,
                                      shard_count=process_count)
  iterator = pipeline.iterate(batches, config)

  # State: restored from the latest checkpoint, else initialized from the seed.
  state = restore_state(trainer, workdir, iterator)
  manager = checkpoint_manager(workdir, config)  # After restore: it may set steps aside.
  if state is None:
    state = jax.jit(init_state, out_shardings=state_shardings)(jax.random.PRNGKey(config.seed))

  step_fn = pretraining_step(config, trainer.graphdef, trainer.tx, state_shardings, mesh)
  encoders = embed.make_encoders(trainer.graphdef, state_shardings.params, mesh)
  # Held-out general knowledge, and the memorization that separates the references:
  # forget images against all forget association captions (chance: 1 / forget size).
  eval_sets = {"heldout_retrieval_r1": heldout_scene_batches(config, trainer.tokenizer),
               "forget_association_r1": pipeline.eval_batches(
                   trainer.dataset, ["forget"], trainer.tokenizer, config.data.image_size,
                   config.batch_size)}

  def save(step: int):
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator),
        meta=ocp.args.JsonSave({"model": trainer.signature, "reference": config.reference,
                                "mixture": mixture, "config": json.loads(config.to_json())})),
        force=True)

  def stop(what: str):
    manager.wait_until_finished()  # The last good checkpoint may still be being written.
    latest = manager.latest_step()
    kept = "no checkpoint was written" if latest is None else \
        f"the last checkpoint (step {latest}) is kept"
    raise NonFiniteLoss(f"{what}; {kept}; lower train.learning_rate and run again"
                        + ("" if latest is None else " to resume from it"))

  def check_losses(entries):
    for logged_step, m in entries:
      loss = float(m["loss"])
      if not math.isfinite(loss):
        stop(f"loss is {loss} at step {logged_step}")

  writer, metrics_file = None, None
  if process_index == 0:
    from tensorboardX import SummaryWriter
    writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
    metrics_file = open(os.path.join(workdir, "metrics.jsonl"), "a")  # Appended across resumes.
  history = {"losses": {}} | {name: {} for name in eval_sets}
  start = int(state.step)
  end = train_cfg.steps if stop_after is None else min(train_cfg.steps, start + stop_after)
  from tqdm import tqdm
  bar = tqdm(total=train_cfg.steps, initial=start, desc=f"train {config.reference}",
             unit="step", disable=not progress or process_index != 0, dynamic_ncols=True)
  pending, window_start, window_steps = [], time.perf_counter(), 0
  stopping = False
  try:  # Checkpoints are written asynchronously: finish the ones begun, even on an error.
    with sigterm_flag() as preempted:
      for step in range(start, end):
        local = next(iterator)
        global_batch = {k: jax.make_array_from_process_local_data(batch_sharding, local[k])
                        for k in ("image", "tokens")}
        state, metrics = step_fn(state, None, {"train": global_batch})
        pending.append((step + 1, metrics))
        window_steps += 1
        done = step + 1
        stopping = preempted()  # Then log, checkpoint and leave after this step.
        if done % train_cfg.log_every == 0 or done == end or stopping:
          jax.block_until_ready(metrics)  # Dispatch is asynchronous: time finished steps.
          rate = window_steps * config.batch_size / (time.perf_counter() - window_start)
          check_losses(pending)
          for logged_step, m in pending:
            loss = float(m["loss"])
            history["losses"][logged_step] = loss
            if metrics_file:
              metrics_file.write(json.dumps({"step": logged_step, "loss": loss}) + "\n")
          if writer:
            writer.add_scalar("train/loss", loss, done)
            writer.add_scalar("train/grad_norm", float(m["grad_norm"]), done)
            writer.add_scalar("train/samples_per_second", rate, done)
          bar.set_postfix(loss=f"{loss:.3f}", samples_s=f"{rate:.0f}")
          bar.update(window_steps)
          pending, window_start, window_steps = [], time.perf_counter(), 0
        if done % train_cfg.eval_every == 0 or done == train_cfg.steps:
          scores = {}
          for name, eval_batches in eval_sets.items():
            image_emb, text_emb, _ = embed.embed_batches(encoders, state.params, eval_batches)
            scores[name] = history[name][done] = embed.retrieval_at_1(image_emb, text_emb)
          if writer:
            for name, score in scores.items():
              writer.add_scalar(f"eval/{name}", score, done)
            metrics_file.write(json.dumps({"step": done, **scores}) + "\n")
            metrics_file.flush()
          window_start = time.perf_counter()  # Evaluation time is not training throughput.
        if done % train_cfg.checkpoint_every == 0 or done == end or stopping:
          # Never save a diverged model: the steps not logged yet are checked here, and the
          # parameters themselves (a last update can blow up after a finite loss).
          check_losses(pending)
          if non_finite_leaves(state.params):
            stop(f"the parameters are non-finite after step {done}")
          save(done)
        if stopping:
          break
  finally:
    manager.wait_until_finished()
  bar.close()
  if writer:
    writer.close()
    metrics_file.close()
  if stopping:
    raise Preempted(int(state.step), workdir)
  history.update(state=state, trainer=trainer, steps_done=int(state.step))
  return history


def main(argv):
  """The CLI; its flags are defined below, only when this module is the program."""
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    distributed.initialize_from_flags()
    history = train(_CONFIG.value, _WORKDIR.value, dataset_dir=_DATASET.value)
  except SalmuError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(PREEMPTED_EXIT_CODE)
  summary = [f"{_CONFIG.value.reference} is at step {history['steps_done']}"]
  if history["losses"]:
    summary.append(f"last loss {history['losses'][max(history['losses'])]:.4f}")
  for name in ("heldout_retrieval_r1", "forget_association_r1"):
    if history[name]:
      summary.append(f"{name} {history[name][max(history[name])]:.3f}")
  print("; ".join(summary) + f" ({_WORKDIR.value})")


if __name__ == "__main__":
  distributed.define_flags()
  _CONFIG = config_flags.DEFINE_config_file("config", None, "configs/NAME.py:clean|compromised",
                                            lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, TensorBoard, metrics.")
  _DATASET = flags.DEFINE_string("dataset_dir", None,
                                 "A built SALMU-synth; default: build one under WORKDIR/data.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
