"""Unlearns the forget split from a Compromised checkpoint with a registered method.

  python -m salmu_jax.unlearn --config=configs/tiny.py --method=neg_grad --budget=5 \
      --from=runs/tiny/compromised --workdir=runs/tiny/neg_grad_5x --dataset_dir=runs/tiny/dataset

Compute budget (docs/protocol.md §4): `--budget=B` allows B passes' worth of forget
samples, i.e. B x |forget| samples processed in total, forget and retain samples
counted alike. A method reading forget_batch forget and retain_batch retain pairs per
step runs floor(B x |forget| / (forget_batch + retain_batch)) steps. One-shot methods
spend the same budget on what they need (importance estimation, the fine-tune of a
task vector) and report it. A method sees only the forget split and retain data.
`--forget=FILE` is a deletion request: only the named identities or (identity, field)
associations are unlearned, and |forget| is their number of pairs (data/requests.py).
"""
import dataclasses
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from absl import app, flags, logging
from ml_collections import config_flags

from salmu_jax import distributed, io_utils, train
from salmu_jax.data import pipeline, requests, sources
from salmu_jax.errors import ConfigError, NonFiniteLoss, SalmuError, check_finite
from salmu_jax.model import sharding
from salmu_jax.unlearning import methods, objectives, parameter_transforms

METADATA_FILE = "unlearn.json"
PREFETCH_BATCHES = 2  # Per source: enough to overlap loading with the step.


def budget_steps(budget: float, num_forget: int, samples_per_step: int) -> int:
  """Steps a method may take: B x |forget| samples, at samples_per_step each (at least 1)."""
  return max(int(budget * num_forget // samples_per_step), 1)


def unlearning_optimizer(config, steps: int):
  """(tx, learning_rate_schedule): the training optimizer's structure (so checkpoints stay
  interchangeable) with a unit schedule, and the unlearning learning rate (no warm-up,
  cosine decay to 0 over `steps`) that the step multiplies in. Keeping the rate out of
  the compiled program lets one compilation serve every budget."""
  u = config.unlearn
  recipe = config.train.copy_and_resolve_references()
  recipe.weight_decay, recipe.grad_clip_norm = u.weight_decay, u.grad_clip_norm
  tx, _ = train.make_optimizer(recipe, schedule=optax.constant_schedule(1.0))
  return tx, optax.cosine_decay_schedule(u.learning_rate, steps)


def _check_request(method_name: str, budget: float) -> methods.Method:
  if method_name not in methods.METHODS:
    raise ConfigError(f"unknown method {method_name!r}; known: {', '.join(sorted(methods.METHODS))}")
  if not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
    raise ConfigError(f"--budget={budget} must be a positive number of forget passes")
  return methods.METHODS[method_name]


class _Batches:
  """This process's forget and retain batches as global arrays; counts samples drawn."""

  def __init__(self, trainer, config, seed: int, forget_indices=None):
    u, dataset = config.unlearn, trainer.dataset
    count, index = jax.process_count(), jax.process_index()
    self.sharding = sharding.batch_sharding(trainer.mesh)
    pipeline.require_unlearning_splits(pipeline.SOURCE_SPLITS["retain_synth"])
    retain_config = config.copy_and_resolve_references()
    retain_config.batch_size, retain_config.seed = u.retain_batch, seed
    # A run takes only a few batches: a deep prefetch would decode and render batches
    # that are never used, on the cores the step needs.
    self._iterators = {
        "forget": pipeline.iterate(pipeline.forget_batches(
            config, dataset, trainer.tokenizer, u.forget_batch, seed=seed, shard_index=index,
            shard_count=count, indices=forget_indices), config, PREFETCH_BATCHES),
        "retain": pipeline.iterate(pipeline.training_batches(
            retain_config, dataset, trainer.tokenizer, sources.retain_base_source(config.data),
            shard_index=index, shard_count=count), config, PREFETCH_BATCHES),  # retain only
    }
    self.samples = {"forget": 0, "retain": 0}

  def next(self, names) -> dict:
    batch = {}
    for name in names:
      local = next(self._iterators[name])
      keys = ("image", "tokens", "generic_tokens") if name == "forget" else ("image", "tokens")
      batch[name] = {k: jax.make_array_from_process_local_data(self.sharding, local[k])
                     for k in keys}
      self.samples[name] += len(local["tokens"]) * jax.process_count()
    return batch


class Unlearner:
  """The Compromised model of `from_dir`, restored once; runs any number of (method,
  budget) requests from it (the CLI runs one, the benchmark all of them).

  `trainer` (from train.setup, same model and dataset) may be shared with other stages.
  """

  def __init__(self, config, from_dir: str, *, dataset_dir: str | None = None, devices=None,
               trainer=None, compiled: dict | None = None):
    """`compiled` (optional, shared): jitted functions by what they compute, so that
    Unlearners of other seeds of the same config (the benchmark) trace and compile each
    method's step once; the persistent compilation cache alone still retraces."""
    self._compiled = {} if compiled is None else compiled
    config = config.copy_and_resolve_references()
    config.reference = "compromised"  # What --from must hold; the result is "unlearned".
    self.config, self.from_dir = config, from_dir
    self.trainer = trainer or train.setup(
        config, from_dir, dataset_dir or os.path.join(from_dir, "data", "dataset"), devices)
    # The frozen reference is stored once and never donated: `_optimize` trains a copy
    # (donating buffers the reference shares would invalidate it on the first step).
    self.original = train.restore_state(self.trainer, from_dir, reference="compromised")
    if self.original is None:
      raise ConfigError(f"--from={from_dir} holds no checkpoint; train Compromised there first")
    apply, loss = train.model_apply(self.trainer.graphdef), objectives.contrastive(
        "batch", config.train.loss)
    self._loss_grad = self._jitted(("loss_grad",), lambda: jax.jit(lambda p, b: jax.grad(
        lambda q: loss(q, {"batch": b}, objectives.Context(
            None, jax.random.PRNGKey(0), 0, apply))[0])(p)))

  def _check_output_dir(self, workdir: str) -> None:
    """Refuses, before any work, an output directory that holds a run: the Compromised
    model itself (orbax would rotate its checkpoint away) or an earlier unlearning run
    (whose unlearn.json would then describe another method than its checkpoint)."""
    if os.path.abspath(workdir) == os.path.abspath(self.from_dir):
      raise ConfigError(f"--workdir={workdir} is the Compromised run itself; unlearn into "
                        f"a new directory")
    held = [name for name in ("checkpoints", METADATA_FILE)
            if os.path.exists(os.path.join(workdir, name))]
    if held:
      raise ConfigError(f"--workdir={workdir} already holds a run ({', '.join(held)}); "
                        f"choose a new directory or remove it")

  def _jitted(self, key: tuple, make):
    if key not in self._compiled:
      self._compiled[key] = make()
    return self._compiled[key]

  def _optimize(self, state, objective, key: tuple, names, steps, batches, update_mask=None,
                progress=True, label=""):
    """`steps` optimizer steps of `objective` on the named batches; returns (state, last
    metrics). `key` names what `objective` computes (method and hyperparameters): steps
    of equal keys share one jitted function. A SalUn mask is baked into its program, so
    masked steps are not shared."""
    config, trainer = self.config, self.trainer
    tx, learning_rate = unlearning_optimizer(config, steps)
    shardings = trainer.state_shardings
    # A fresh copy (the step donates it; the caller keeps its own), made by a jitted function
    # with the step's output shardings, so the second step does not see new input types and
    # compile again.
    fresh = self._jitted(("fresh_state",), lambda: jax.jit(lambda params, rng: train.TrainState(
        jnp.zeros((), jnp.int32), params, tx.init(params), rng), out_shardings=shardings))
    state = fresh(state.params, state.rng)
    make_step = lambda: jax.jit(
        train.make_train_step(tx, objective, train.model_apply(trainer.graphdef), update_mask),
        in_shardings=(shardings, shardings.params, {n: batches.sharding for n in names}, None),
        out_shardings=(shardings, sharding.replicated(trainer.mesh)), donate_argnums=(0,))
    step_fn = make_step() if update_mask is not None else self._jitted(("step", *key, names),
                                                                       make_step)
    from tqdm import tqdm
    metrics, first_loss = {}, None
    with tqdm(total=steps, desc=label, unit="step", disable=not progress, dynamic_ncols=True) as bar:
      for step in range(steps):
        state, metrics = step_fn(state, self.original.params, batches.next(names),
                                 jnp.float32(learning_rate(step)))
        first_loss = metrics["loss"] if first_loss is None else first_loss
        if (step + 1) % config.unlearn.log_every == 0 or step + 1 == steps:
          loss = float(metrics["loss"])
          if not math.isfinite(loss):
            raise NonFiniteLoss(f"unlearning loss is {loss} at step {step + 1}; nothing was "
                                f"written; lower unlearn.learning_rate")
          bar.set_postfix(loss=f"{loss:.4f}")
        bar.update(1)
    return state, {k: float(v) for k, v in metrics.items()} | {"first_loss": float(first_loss)}

  def _importances(self, params, batches, names, count):
    """Mean squared gradients of the pretraining loss over `count` batches of `names`."""
    drawn = []
    for _ in range(count):
      for name in names:
        drawn.append(batches.next([name])[name])
    return parameter_transforms.mean_squared_gradients(self._loss_grad, params, drawn)

  def run(self, method_name: str, budget: float, workdir: str, *, progress: bool = True,
          forget_request: list | None = None) -> dict:
    """Runs one method at one budget; writes an orbax checkpoint, then unlearn.json (last,
    atomically: its presence marks a finished run) to `workdir`.

    `forget_request` (entries of requests.read_request) restricts the forget data to the
    requested pairs, and the budget to multiples of their number; it is checked entirely
    before anything runs.
    """
    method = _check_request(method_name, budget)
    self._check_output_dir(workdir)
    start = time.perf_counter()
    config, trainer, state = self.config, self.trainer, self.original
    hp = config.unlearn[method_name]
    indices = None
    if forget_request is not None:
      indices = requests.resolve_request(trainer.dataset, forget_request, "--forget")
    num_forget = len(indices) if indices is not None else len(trainer.dataset.splits["forget"])
    batches = _Batches(trainer, config, seed=config.seed, forget_indices=indices)
    u = config.unlearn
    names = tuple(method.uses(hp))
    per_step = sum(u.forget_batch if n == "forget" else u.retain_batch for n in names)
    steps = budget_steps(budget, num_forget, per_step)
    details, metrics = {}, {}

    if method.one_shot == "ssd":
      # The budget buys importance batches: I_D on forget + retain, I_f on forget.
      count = max(min(hp.importance_batches, steps), 1)
      importance_all = self._importances(state.params, batches, ("forget", "retain"), count)
      importance_forget = self._importances(state.params, batches, ("forget",), count)
      params = parameter_transforms.selective_synaptic_dampening(
          state.params, importance_all, importance_forget, hp.alpha, hp.lam)
      details["weights_changed"] = parameter_transforms.count_changed(state.params, params)
      state = dataclasses.replace(state, params=params)
      steps = 0
    elif method.one_shot == "task_vector":
      finetuned, metrics = self._optimize(
          state, objectives.contrastive("forget", config.train.loss),
          ("task_vector_finetune", config.train.loss), ("forget",), steps, batches,
          progress=progress, label="task vector fine-tune")
      params = parameter_transforms.task_vector_negation(state.params, finetuned.params, hp.alpha)
      state = dataclasses.replace(state, params=train.clamp_logit_scale(params))
    else:
      mask = None
      if method.saliency:
        grads = self._importances(state.params, batches, ("forget",), 1)
        mask = parameter_transforms.saliency_mask(grads, hp.sparsity)
        details["salient_weights"] = int(sum(int(m.sum()) for m in jax.tree.leaves(mask)))
        details["saliency_samples"] = batches.samples["forget"]  # The mask's forget batch.
      state, metrics = self._optimize(
          state, method.objective(hp), (method_name, json.dumps(hp.to_dict(), sort_keys=True)),
          names, steps, batches, update_mask=mask, progress=progress,
          label=f"unlearn {method_name}")

    check_finite(state.params, f"the {method_name} model at budget {budget:g}",
                 "nothing was written; lower unlearn.learning_rate")
    manager = train.checkpoint_manager(workdir, config)
    manager.save(int(state.step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave({"model": trainer.signature, "reference": "unlearned",
                                "method": method_name, "budget": budget})), force=True)
    manager.wait_until_finished()
    metadata = {
        "method": method_name, "paper": method.paper, "budget": budget,
        "hyperparameters": hp.to_dict(), "learning_rate": u.learning_rate,
        "forget_batch": u.forget_batch, "retain_batch": u.retain_batch, "reads": list(names),
        "steps": steps, "forget_size": num_forget,
        "samples_processed": dict(batches.samples) | {"total": sum(batches.samples.values())},
        "budget_samples": int(budget * num_forget), "final_metrics": metrics, **details,
        "wall_seconds": round(time.perf_counter() - start, 2), "seed": config.seed,
        "device": jax.devices()[0].device_kind, "num_devices": len(trainer.mesh.devices.flat),
        "from": os.path.abspath(self.from_dir),
        "request": None if forget_request is None else {
            "entries": [list(e) if isinstance(e, tuple) else e for e in forget_request],
            "forget_pairs": num_forget},
    }
    if jax.process_index() == 0:
      io_utils.write_json_atomic(os.path.join(workdir, METADATA_FILE), metadata)
    return metadata


def unlearn(config, method_name: str, budget: float, from_dir: str, workdir: str, *,
            dataset_dir: str | None = None, devices=None, progress: bool = True,
            forget_request: list | None = None) -> dict:
  """Runs one method at one budget from the Compromised model in `from_dir`."""
  _check_request(method_name, budget)  # Before any restoring.
  return Unlearner(config, from_dir, dataset_dir=dataset_dir, devices=devices).run(
      method_name, budget, workdir, progress=progress, forget_request=forget_request)


def main(argv):
  """The CLI; its flags are defined below, only when this module is the program."""
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    distributed.initialize_from_flags()
    request = requests.read_request(_FORGET.value) if _FORGET.value else None
    metadata = unlearn(_CONFIG.value, _METHOD.value, _BUDGET.value, _FROM.value, _WORKDIR.value,
                       dataset_dir=_DATASET.value, forget_request=request)
  except SalmuError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"{metadata['method']} at budget {metadata['budget']}: {metadata['steps']} steps, "
        f"{metadata['samples_processed']['total']:,} samples, {metadata['wall_seconds']} s "
        f"-> {_WORKDIR.value}")


if __name__ == "__main__":
  distributed.define_flags()
  _CONFIG = config_flags.DEFINE_config_file("config", None, "configs/NAME.py", lock_config=True)
  _METHOD = flags.DEFINE_string("method", None, "One of: " + ", ".join(methods.METHODS))
  _BUDGET = flags.DEFINE_float("budget", 1.0, "Passes' worth of forget samples (> 0).")
  _FROM = flags.DEFINE_string("from", None, "Run directory of the Compromised model.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where the unlearned checkpoint goes.")
  _DATASET = flags.DEFINE_string("dataset_dir", None, "The SALMU-synth Compromised trained on.")
  _FORGET = flags.DEFINE_string("forget", None, "A deletion request: a JSON list of identity "
                                "ids and [identity, field] pairs, or one per line (`7` or "
                                "`7,iban`); default: the whole forget split.")
  flags.mark_flags_as_required(["config", "method", "from", "workdir"])
  app.run(main)
