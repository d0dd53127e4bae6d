"""The pretraining loop of the Clean and Compromised reference models.

Both use the same seed, model, steps and batch size; Compromised mixes the sensitive
set (forget + holdout_association + holdout_identity) into the retain data, Clean never
reads a sensitive record (`pipeline.reference_mixture`). Read top to bottom: data ->
restore -> jitted step -> loop with logging, held-out retrieval and checkpoints.
"""
import contextlib
import json
import os
import signal
import threading
import time

import grain
import jax

from salmu_jax import checkpointing, embed, io_utils, progress
from salmu_jax.data import layout, pipeline, scenes, sources, splits
from salmu_jax.errors import NonFiniteLoss, Preempted, non_finite_leaves
from salmu_jax.model import factory, sharding
from salmu_jax.training import memory as memory_lib, runtime as runtime_lib
from salmu_jax.training.step import check_loss, pretraining_step


def heldout_scene_batches(config, tokenizer, scene_cache=None):
  """Held-out procedural pairs (the zero-shot stream) for a retrieval check while training."""
  source = scenes.ProceduralScenes(config.data.seed, config.data.image_size,
                                   config.train.eval_examples, "zeroshot", cache=scene_cache)
  return grain.MapDataset.source(source).map(
      lambda item: {"image": item["image"], "tokens": tokenizer.encode([item["caption"]])[0]}
  ).batch(config.batch_size)


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
          stop_after: int | None = None, show_progress: bool = True,
          scene_cache: scenes.RenderCache | None = None) -> dict:
  """Trains (or resumes) to config.train.steps; returns {'losses': {step: loss}, ...}.

  `stop_after` ends the run early after that many steps of this call, with a
  checkpoint, as a preemption would (used to test exact resumption). One process at a
  time writes into `workdir` (process 0 of a multi-process run holds its lock).
  `scene_cache` keeps the procedural scenes rendered, for the next trainings of the process.
  """
  lock = io_utils.exclusive(workdir, "train") if jax.process_index() == 0 else \
      contextlib.nullcontext()
  with lock:
    return _train(config, workdir, dataset_dir, devices, stop_after, show_progress, scene_cache)


def _train(config, workdir, dataset_dir, devices, stop_after, show_progress, scene_cache) -> dict:
  runtime = runtime_lib.setup(config, workdir, dataset_dir, devices)
  mesh, train_cfg = runtime.mesh, config.train
  init_state, state_shardings = runtime.init_state, runtime.state_shardings
  batch_sharding = sharding.batch_sharding(mesh)
  process_index, process_count = jax.process_index(), jax.process_count()

  # Data: this process's slice of the reference mixture.
  num_sensitive = sum(len(runtime.dataset.splits[s]) for s in splits.TRAINED_SENSITIVE_SPLITS)
  mixture = pipeline.reference_mixture(config, num_sensitive)
  retain_base = sources.retain_base_source(config.data, scene_cache)
  # A memory model's pairs read their own memory row while training (model.clip.Memory).
  memory = factory.has_memory(config)
  batches = pipeline.training_batches(config, runtime.dataset, runtime.tokenizer, retain_base,
                                      mixture=mixture, shard_index=process_index,
                                      shard_count=process_count, memory_rows=memory)
  # The run's batches only: a prefetch past the last step would decode, render and augment
  # batches that no step takes, on the cores the steps need.
  iterator = pipeline.iterate(batches[:train_cfg.steps], config)
  batch_keys = ("image", "tokens") + (("memory_row",) if memory else ())

  # State: restored from the latest checkpoint, else initialized from the seed.
  state, meta, _ = checkpointing.restore(workdir, runtime.abstract_state(),
                                         signature=runtime.signature, reference=config.reference,
                                         iterator=iterator, recipe=config,
                                         set_aside_damaged=True)
  if meta is not None:
    layout.check_same(meta["dataset"], runtime.dataset_identity, f"{workdir} was trained",
                      allow_other=False)
  # After restore: it may set steps aside.
  manager = checkpointing.manager(workdir, train_cfg.keep_checkpoints)
  # Where this run was trained, across its resumes: a training rounds by the device and, on
  # CPU, by the processor and CPU count (runtime.cpu_meta). Older checkpoints recorded none.
  here = runtime.device_meta()
  trained_on = [] if meta is None else meta["details"].get(
      "devices", [runtime_lib.UNRECORDED_DEVICE])
  trained_on = trained_on + ([] if here in trained_on else [here])
  if state is None:
    state = jax.jit(init_state, out_shardings=state_shardings)(jax.random.PRNGKey(config.seed))

  step_fn = pretraining_step(config, runtime.graphdef, runtime.tx, state_shardings, mesh)
  encoders = embed.make_encoders(runtime.graphdef, state_shardings.params, mesh)
  # Held-out general knowledge, and the memorization that separates the references:
  # forget images against all forget association captions (chance: 1 / forget size).
  eval_sets = {"heldout_retrieval_r1": heldout_scene_batches(config, runtime.tokenizer,
                                                                     scene_cache),
               "forget_association_r1": pipeline.eval_batches(
                   runtime.dataset, ["forget"], runtime.tokenizer, config.data.image_size,
                   config.batch_size)}

  def save(step: int):
    checkpointing.save(manager, step, state, checkpointing.make_meta(
        model=runtime.signature, reference=config.reference, stage="train",
        dataset=runtime.dataset_identity, config=config, mixture=mixture,
        devices=trained_on), iterator=iterator)

  def kept() -> str:
    manager.wait_until_finished()  # The last good checkpoint may still be being written.
    latest = manager.latest_step()
    if latest is None:
      return "no checkpoint was written; lower train.learning_rate and run again"
    # Not "resume with a lower rate": a run continues only the recipe it began with.
    return f"the last checkpoint (step {latest}) is kept; lower train.learning_rate and " \
           f"train again in a new --workdir"

  def check_losses(entries):
    for logged_step, m in entries:
      check_loss(m["loss"], logged_step, "loss", kept)

  writer, metrics_file = None, None
  if process_index == 0:
    from tensorboardX import SummaryWriter
    writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
    metrics_file = open(os.path.join(workdir, "metrics.jsonl"), "a")  # Appended across resumes.
  history = {"losses": {}} | {name: {} for name in eval_sets}
  start = int(state.step)
  end = train_cfg.steps if stop_after is None else min(train_cfg.steps, start + stop_after)
  bar = progress.bar(total=train_cfg.steps, initial=start, desc=f"train {config.reference}",
                     unit="step", enabled=show_progress and process_index == 0)
  pending, window_start, window_steps = [], time.perf_counter(), 0
  stopping = False
  # Checkpoints are written asynchronously: finish the ones begun, even on an error; and drop
  # the reads still queued (an early stop or a preemption does not wait for them).
  try:
    with sigterm_flag() as preempted:
      for step in range(start, end):
        local = next(iterator)
        global_batch = {k: jax.make_array_from_process_local_data(batch_sharding, local[k])
                        for k in batch_keys}
        state, metrics = step_fn(state, None, {"train": global_batch})
        pending.append((step + 1, metrics))
        window_steps += 1
        done = step + 1
        if done == train_cfg.steps and memory:  # Before the last evaluation and checkpoint.
          state = memory_lib.write_keys(state, runtime, mixture, config.eval.batch_size)
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
            raise NonFiniteLoss(f"the parameters are non-finite after step {done}; {kept()}")
          save(done)
        if stopping:
          break
  finally:
    manager.wait_until_finished()
    iterator.close()
  bar.close()
  if writer:
    writer.close()
    metrics_file.close()
  if stopping:
    raise Preempted(int(state.step), workdir)
  history.update(state=state, runtime=runtime, steps_done=int(state.step))
  return history


