"""Runs an unlearning method (methods.py) from a Compromised checkpoint, within a budget.

Compute budget (docs/protocol.md §4): budget B allows B passes' worth of forget
samples, i.e. B x |forget| samples processed in total, forget and retain samples
counted alike. A method reading forget_batch forget and retain_batch retain pairs per
step runs floor(B x |forget| / (forget_batch + retain_batch)) steps; what its hooks
draw (SalUn's saliency batch, SSD's importances) comes out of the same budget. A method
sees only the forget split and retain data. A deletion request restricts the forget
data to its pairs, and |forget| to their number (data/requests.py).
"""
import contextlib
import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from salmu_jax import checkpointing, io_utils, losses, progress
from salmu_jax.data import layout, pipeline, requests, sources
from salmu_jax.errors import ConfigError, check_finite
from salmu_jax.model import factory, sharding
from salmu_jax.training import optimizer, runtime as runtime_lib, staged
from salmu_jax.training.state import TrainState
from salmu_jax.training.step import check_loss, make_train_step
from salmu_jax.unlearning import methods, parameter_transforms

METADATA_FILE = "unlearn.json"
PREFETCH_BATCHES = 2  # Per source: enough to overlap loading with the step.
MAX_BUDGET = 1000.0  # Forget passes.


def step_batches(budget: float, num_forget: int, names, forget_batch: int, retain_batch: int,
                 multiple: int, prepare_draws=()) -> dict:
  """{source: pairs per step} of a run reading `names`, whose `prepare` hook first draws
  one batch of each of `prepare_draws`. A budget worth less than those draws and one step
  at the configured batches (a small deletion request) shrinks every batch in proportion,
  to multiples of `multiple` (the data-parallel size), so that the step it buys costs at
  most B x |forget| samples where the mesh allows; never under two pairs (a contrastive
  batch needs a negative), nor above the configured size."""
  batches = {"forget": forget_batch, "retain": retain_batch}
  batches = {name: batches[name] for name in names}
  allowed = budget * num_forget
  first = sum(batches.values()) + sum(batches[name] for name in prepare_draws)
  if first <= allowed:
    return batches
  scale, smallest = allowed / first, multiple * math.ceil(2 / multiple)
  return {name: min(size, max(smallest, int(size * scale) // multiple * multiple))
          for name, size in batches.items()}


def budget_steps(budget: float, num_forget: int, samples_per_step: int) -> int:
  """Steps a method may take: B x |forget| samples, at samples_per_step each (at least 1)."""
  return max(int(budget * num_forget // samples_per_step), 1)


def check_budget(budget, flag: str = "--budget=") -> float:
  """A budget is a positive number of forget passes, at most MAX_BUDGET (a larger one is
  almost surely a typo: 1e9 passes of the tiny forget set would run for years)."""
  if isinstance(budget, bool) or not isinstance(budget, (int, float)) or \
      not math.isfinite(budget) or budget <= 0:
    raise ConfigError(f"{flag}{budget!r} must be a positive number of forget passes")
  if budget > MAX_BUDGET:
    raise ConfigError(f"{flag}{budget:g} passes exceeds the bound of {MAX_BUDGET:g}; the "
                      f"benchmark's budgets are 1 and 5 (docs/protocol.md §4)")
  return float(budget)


def check_request(method_name: str, budget: float) -> methods.Method:
  if method_name not in methods.METHODS:
    raise ConfigError(f"unknown method {method_name!r}; known: {', '.join(sorted(methods.METHODS))}")
  check_budget(budget)
  return methods.METHODS[method_name]


BATCH_KEYS = {"forget": ("image", "tokens", "generic_tokens"), "retain": ("image", "tokens")}


class Batches:
  """This process's forget and retain batches as global arrays; counts samples drawn.
  Each source starts on its first draw: a run that reads only forget pairs never decodes
  or renders retain images. With `streams` (pipeline.RecordedStreams, shared by the runs of
  one config, dataset and seed) a batch an earlier run drew is replayed, not made again."""

  def __init__(self, runtime, config, seed: int, batch_sizes: dict, forget_indices=None,
               streams: pipeline.RecordedStreams | None = None):
    dataset = runtime.dataset
    count, index = jax.process_count(), jax.process_index()
    self.sharding = sharding.batch_sharding(runtime.mesh)
    pipeline.require_unlearning_splits(pipeline.SOURCE_SPLITS["retain_synth"])
    # A run takes only a few batches: a deep prefetch would decode and render batches
    # that are never used, on the cores the step needs.
    self._sources = {
        "forget": lambda: pipeline.forget_batches(
            config, dataset, runtime.tokenizer, batch_sizes["forget"], seed=seed,
            shard_index=index, shard_count=count, indices=forget_indices),
        "retain": lambda: pipeline.training_batches(  # The retain mixture only.
            config, dataset, runtime.tokenizer, sources.retain_base_source(config.data),
            batch_size=batch_sizes["retain"], seed=seed, shard_index=index, shard_count=count),
    }
    self._config, self._iterators = config, {}  # Source -> (iterator, its next position).
    self.samples = {"forget": 0, "retain": 0}
    self._streams = streams or pipeline.RecordedStreams(0)
    indices = None if forget_indices is None else tuple(np.asarray(forget_indices).tolist())
    data = json.dumps(config.data.to_dict(), sort_keys=True)  # What a stream is made of.
    self._keys = {name: (name, size, seed, indices if name == "forget" else None, index, count,
                         data) for name, size in batch_sizes.items()}
    self._drawn = {name: 0 for name in batch_sizes}
    self.replayed = 0  # Batches an earlier run drew, replayed here.

  def element_specs(self, names) -> dict:
    """{name: {key: (local shape, dtype)}} of the batches `next(names)` returns, read from
    each source's first batch (made for this, without starting the source's iterator)."""
    return {name: {k: (np.shape(v), np.asarray(v).dtype)
                   for k, v in self._sources[name]()[0].items() if k in BATCH_KEYS[name]}
            for name in names}

  def _local(self, name: str) -> dict:
    """This process's next batch of `name`: replayed if recorded, else drawn (and recorded)
    from the source, started at that position on first need."""
    position, key = self._drawn[name], self._keys[name]
    self._drawn[name] += 1
    local = self._streams.get(key, position)
    self.replayed += local is not None
    if local is None:
      iterator, at = self._iterators.get(name, (None, None))
      if at != position:
        source = self._sources[name]()
        iterator = pipeline.iterate(source[position:] if position else source, self._config,
                                    PREFETCH_BATCHES)
      local = {k: v for k, v in next(iterator).items() if k in BATCH_KEYS[name]}
      self._iterators[name] = (iterator, position + 1)
      self._streams.record(key, position, local)
    return local

  def next(self, names) -> dict:
    batch = {}
    for name in names:
      local = self._local(name)
      batch[name] = {k: jax.make_array_from_process_local_data(self.sharding, local[k])
                     for k in BATCH_KEYS[name]}
      self.samples[name] += len(local["tokens"]) * jax.process_count()
    return batch


def optimize(runtime, config, compiled: dict, state, reference_params, objective, key: tuple,
             names, steps: int, batches, update_mask=None, show_progress: bool = True,
             label: str = ""):
  """`steps` optimizer steps of `objective` on the named batches (`Batches`) from the
  parameters of `state` (a TrainState; kept, a copy is trained), with `reference_params`
  as the frozen model that objectives may read; returns (state, last metrics). `key` names
  what `objective` computes (method, hyperparameters, loss kind): steps of equal keys share
  one jitted function in `compiled`. `update_mask` (SalUn's saliency mask) travels in the
  optimizer state, an input of the step, so masked steps are shared too."""
  fresh, step_fn = _step_functions(runtime, config, compiled, state, objective, key, names,
                                   batches.sharding, masked=update_mask is not None)
  learning_rate = optimizer.learning_rate_schedule(config.unlearn, steps)
  state = fresh(state.params, state.rng, update_mask)
  metrics, first_loss = {}, None
  with progress.bar(total=steps, desc=label, unit="step", enabled=show_progress) as bar:
    for step in range(steps):
      state, metrics = step_fn(state, reference_params, batches.next(names),
                               jnp.float32(learning_rate(step)))
      first_loss = metrics["loss"] if first_loss is None else first_loss
      if (step + 1) % config.unlearn.log_every == 0 or step + 1 == steps:
        loss = check_loss(metrics["loss"], step + 1, "unlearning loss",
                          lambda: "nothing was written; lower unlearn.learning_rate")
        bar.set_postfix(loss=f"{loss:.4f}")
      bar.update(1)
  return state, {k: float(v) for k, v in metrics.items()} | {"first_loss": float(first_loss)}


def _step_functions(runtime, config, compiled: dict, state, objective, key: tuple, names,
                    batch_sharding, masked: bool = False) -> tuple:
  """(fresh, step) of `optimize`: the jitted copy of `state` into the unlearning chain's
  state, `fresh(params, rng, update mask or None)`, and the jitted step of `objective`
  (shared in `compiled` by `key`, `names` and `masked`)."""
  tx = optimizer.unlearning(config.train, config.unlearn, masked)

  def new_state(params, rng, update_mask):
    opt_state = tx.init(params)  # A masked chain's mask starts all True.
    if update_mask is not None:
      opt_state = optimizer.with_update_mask(opt_state, update_mask)
    return TrainState(jnp.zeros((), jnp.int32), params, opt_state, rng)
  # The unlearning chain's state: the pretraining structure plus its own links.
  shardings = sharding.state_shardings(
      jax.eval_shape(new_state, state.params, state.rng, None), runtime.mesh)
  # A fresh copy (the step donates it; the caller keeps its own), made by a jitted function
  # with the step's output shardings, so the second step does not see new input types and
  # compile again.
  # What the optimizer computes: its state, steps and their shared programs (below) are
  # keyed by it.
  tx_key = (masked, json.dumps([config.train.to_dict(), config.unlearn.weight_decay,
                                config.unlearn.grad_clip_norm], sort_keys=True))
  fresh = staged.cached(compiled, ("fresh_state", tx_key), lambda: jax.jit(
      new_state, out_shardings=shardings))
  apply = factory.apply_fn(runtime.graphdef)
  # Staged: the model's forward, backward and the update are programs every method shares
  # (training/staged.py); each method compiles only its loss on the model's outputs.
  step_fn = staged.cached(compiled, ("step", *key, names, tx_key), lambda: staged.StagedStep(
      tx, objective, apply, shardings, staged.cached(compiled, ("staged",), dict),
      fused=lambda: jax.jit(
          make_train_step(tx, objective, apply),
          in_shardings=(shardings, shardings.params, {n: batch_sharding for n in names}, None),
          out_shardings=(shardings, sharding.replicated(runtime.mesh)), donate_argnums=(0,)),
      tx_key=tx_key))
  return fresh, step_fn


def _step_key(method_name: str, hp, kind: str) -> tuple:
  """What a method's step computes: steps of equal keys share one jitted function."""
  return (method_name, json.dumps(hp.to_dict(), sort_keys=True), kind)


def program_scope(runtime) -> tuple:
  """What every jitted function of a runtime's model depends on beyond its own key: the
  model's shapes (factory.signature) and the mesh's axes and devices."""
  return ("model", json.dumps(runtime.signature, sort_keys=True),
          tuple(runtime.mesh.shape.items()), tuple(d.id for d in runtime.mesh.devices.flat))


class _Tools:
  """What a method's hooks may use (methods.py): the budget's steps, importances of the
  pretraining loss over the run's own batches, and the samples drawn so far."""

  def __init__(self, unlearner, params, batches, steps: int, forget_rows):
    self._unlearner, self._params, self._batches, self.steps = unlearner, params, batches, steps
    self.forget_rows = forget_rows

  @property
  def samples(self) -> dict:
    return dict(self._batches.samples)

  def squared_gradients(self, names, count: int) -> dict:
    """{name: mean squared gradients of the pretraining loss over `count` draws of that
    batch}, at the original parameters; every batch is drawn (and paid for) once."""
    drawn = {name: [] for name in names}
    for _ in range(count):
      for name in names:
        drawn[name].append(self._batches.next([name])[name])
    return {name: parameter_transforms.mean_squared_gradients(
        self._unlearner.loss_grad, self._params, batches) for name, batches in drawn.items()}


class Unlearner:
  """The Compromised model of `from_dir`, restored once; runs any number of (method,
  budget) requests from it (the CLI runs one, the benchmark all of them).

  `runtime` (training.runtime.setup of the same model and dataset) may be shared with
  other stages; `compiled` (a dict, shared) holds jitted functions by what they compute,
  so that Unlearners of other seeds of one config trace and compile each step once;
  `streams` (pipeline.RecordedStreams) replays to each run the batches an earlier run of
  the same seed drew.
  """

  def __init__(self, config, from_dir: str, *, dataset_dir: str | None = None, devices=None,
               runtime=None, compiled: dict | None = None, allow_other_dataset: bool = False,
               streams: pipeline.RecordedStreams | None = None):
    config = config.copy_and_resolve_references()
    config.reference = "compromised"  # What --from must hold; the result is "unlearned".
    self.config, self.from_dir = config, from_dir
    self.runtime = runtime or runtime_lib.setup(
        config, from_dir, dataset_dir or os.path.join(from_dir, "data", layout.DATASET_DIRNAME),
        devices)
    # Jitted functions close over the model definition and the mesh: Unlearners of another
    # model (a memory model beside a plain one) share the dict, never a program.
    self._compiled = staged.cached({} if compiled is None else compiled,
                                   program_scope(self.runtime), dict)
    self._streams = streams  # The batches earlier runs drew, replayed (Batches).
    # The frozen reference is stored once and never donated: `_optimize` trains a copy
    # (donating buffers the reference shares would invalidate it on the first step).
    self.original, meta, _ = checkpointing.restore(
        from_dir, self.runtime.abstract_state(), signature=self.runtime.signature,
        reference="compromised")
    if self.original is None:
      raise ConfigError(f"--from={from_dir} holds no checkpoint; train Compromised there first")
    layout.check_same(meta["dataset"], self.runtime.dataset_identity, f"{from_dir} was trained",
                      allow_other_dataset)
    pretrained_with = meta["config"]["train"]["loss"]
    if pretrained_with != config.train.loss:  # Every method's loss is the model's own.
      raise ConfigError(f"--from={from_dir} was pretrained with train.loss="
                        f"{pretrained_with!r}, not {config.train.loss!r}; unlearn it with "
                        f"--config.train.loss={pretrained_with}")
    self.allow_other_dataset, self.pretrained_on = allow_other_dataset, meta["dataset"]
    apply, loss = factory.apply_fn(self.runtime.graphdef), losses.contrastive(
        "batch", config.train.loss)
    self.loss_grad = staged.cached(
        self._compiled, ("loss_grad", config.train.loss), lambda: jax.jit(
            lambda p, b: jax.grad(lambda q: loss(q, {"batch": b}, losses.Context(
                None, jax.random.PRNGKey(0), 0, apply))[0])(p)))

  def warm(self, method_name: str, budget: float) -> bool:
    """Compiles the step that `run(method_name, budget)` on the whole forget split will
    take, by one step on zeros from a copy of the original (so the jitted function's own
    cache holds it: an ahead-of-time `lower().compile()` would leave the run to trace and
    compile again); writes nothing and changes no result (the run then calls the same
    compiled program). The benchmark warms the next methods in a background thread while
    the current ones run and are scored. A method with a `prepare` hook (SalUn) is warmed
    with an all-True update mask: its mask is an input of the program. False, doing
    nothing, for a method without steps, and on a mesh of several devices or processes (a
    step with collectives is not launched from a second thread)."""
    method = check_request(method_name, budget)
    config, runtime = self.config, self.runtime
    if method.objective is None:
      return False
    if jax.process_count() > 1 or runtime.mesh.devices.size > 1:
      return False  # A step with collectives is not launched beside another program.
    hp, kind = config.unlearn[method_name], config.train.loss
    names, batch_sizes = self._batch_plan(method, hp, budget,
                                          len(runtime.dataset.splits["forget"]))
    batches = Batches(runtime, config, seed=config.seed, batch_sizes=batch_sizes)
    masked = method.prepare is not None
    fresh, step_fn = _step_functions(runtime, config, self._compiled, self.original,
                                     method.objective(hp, kind), _step_key(method_name, hp, kind),
                                     names, batches.sharding, masked)
    zeros = {name: {k: jax.make_array_from_process_local_data(batches.sharding,
                                                              np.zeros(shape, dtype))
                    for k, (shape, dtype) in specs.items()}
             for name, specs in batches.element_specs(names).items()}
    mask = optimizer.all_true_mask(self.original.params) if masked else None
    jax.block_until_ready(step_fn(fresh(self.original.params, self.original.rng, mask),
                                  self.original.params, zeros, jnp.float32(0.0)))
    return True

  def _batch_plan(self, method: methods.Method, hp, budget: float, num_forget: int) -> tuple:
    """(the batches each step of a run reads, {batch: pairs per step}) for `num_forget`
    forget pairs at `budget` (step_batches on this model's mesh)."""
    names = tuple(method.uses(hp))
    u = self.config.unlearn
    return names, step_batches(budget, num_forget, names, u.forget_batch, u.retain_batch,
                               sharding.data_parallel_size(self.runtime.mesh),
                               method.prepare_draws)

  def _check_output_dir(self, workdir: str) -> None:
    """Refuses, before any work, an output directory that holds a run: the Compromised
    model itself (orbax would rotate its checkpoint away) or an earlier unlearning run
    (whose unlearn.json would then describe another method than its checkpoint)."""
    if os.path.abspath(workdir) == os.path.abspath(self.from_dir):
      raise ConfigError(f"--workdir={workdir} is the Compromised run itself; unlearn into "
                        f"a new directory")
    held = [name for name in (checkpointing.CHECKPOINTS_DIRNAME, METADATA_FILE)
            if os.path.exists(os.path.join(workdir, name))]
    if held:
      raise ConfigError(f"--workdir={workdir} already holds a run ({', '.join(held)}); "
                        f"choose a new directory or remove it")

  def _restore_unlearned(self, run_dir: str):
    """The model of a finished unlearning run of the same model and dataset, as a
    TrainState to `run` from (MUSE's sustainability: each request unlearned from the
    previous one's result)."""
    state, meta, _ = checkpointing.restore(run_dir, self.runtime.abstract_state(),
                                           signature=self.runtime.signature, reference="unlearned")
    if state is None or not os.path.exists(os.path.join(run_dir, METADATA_FILE)):
      raise ConfigError(f"{run_dir} holds no finished unlearning run to continue from")
    layout.check_same(meta["dataset"], self.pretrained_on, f"{run_dir} was trained", False)
    return state

  def run(self, method_name: str, budget: float, workdir: str, *, show_progress: bool = True,
          forget_request: list | None = None, start_dir: str | None = None, while_saving=None):
    """Runs one method at one budget; writes an orbax checkpoint, then unlearn.json (last,
    atomically: its presence marks a finished run) to `workdir`; returns its content.

    `forget_request` (entries of requests.read_request) restricts the forget data to the
    requested pairs, and the budget to multiples of their number; it is checked entirely
    before anything runs. `start_dir`, a finished unlearning run,
    replaces Compromised as the model unlearned from, in every role: the first parameters,
    the frozen reference objectives read, and the original of one-shot methods; the run
    records it as where it came from (`from`, and the sha256 of its unlearn.json).
    `while_saving(params, checkpoint metadata, step)` runs while the checkpoint is written
    (the benchmark scores the model then, instead of reading it back); with it, `run`
    returns (unlearn.json's content, its return value).
    """
    method = check_request(method_name, budget)
    self._check_output_dir(workdir)
    lock = io_utils.exclusive(workdir, f"unlearn {method_name}") if jax.process_index() == 0 \
        else contextlib.nullcontext()
    with lock:
      self._check_output_dir(workdir)  # Again, now that no other process can write there.
      original, upstream = self.original, None
      if start_dir is not None:
        original = self._restore_unlearned(start_dir)
        upstream = io_utils.sha256_file(os.path.join(start_dir, METADATA_FILE))
      return self._run(method, method_name, budget, workdir, show_progress, forget_request,
                       original, os.path.abspath(start_dir or self.from_dir), upstream,
                       while_saving)

  def _run(self, method, method_name, budget, workdir, show_progress, forget_request, original,
           from_dir, upstream, while_saving):
    start = time.perf_counter()
    config, runtime, state = self.config, self.runtime, original
    u, hp, kind = config.unlearn, config.unlearn[method_name], config.train.loss
    indices = None
    if forget_request is not None:
      indices = requests.resolve_request(runtime.dataset, forget_request, "--forget")
    num_forget = len(indices) if indices is not None else len(runtime.dataset.splits["forget"])
    if budget * num_forget < 1:
      raise ConfigError(f"--budget={budget:g} x {num_forget} forget pairs buys less than one "
                        f"sample; raise the budget")
    names, batch_sizes = self._batch_plan(method, hp, budget, num_forget)
    batches = Batches(runtime, config, seed=config.seed, batch_sizes=batch_sizes,
                      forget_indices=indices, streams=self._streams)
    # A method that reads no data (key deletion) takes no step.
    steps = budget_steps(budget, num_forget, sum(batch_sizes.values())) if names else 0
    forget_positions = indices if indices is not None else np.arange(num_forget)
    tools = _Tools(self, state.params, batches, steps,
                   pipeline.forget_memory_rows(forget_positions))
    details, metrics, mask = {}, {}, None

    if method.prepare is not None:
      mask, prepared = method.prepare(hp, tools, state.params)
      if mask is None:  # `warm` compiled the masked step for it.
        raise TypeError(f"{method_name}'s prepare hook returned no update mask")
      details |= prepared
      # What the hook drew is spent: the steps get the rest of the budget (at least one).
      steps = tools.steps = budget_steps(budget * num_forget - sum(batches.samples.values()), 1,
                                         sum(batch_sizes.values()))
    if method.objective is not None:
      state, metrics = optimize(
          self.runtime, config, self._compiled, state, original.params, method.objective(hp, kind),
          _step_key(method_name, hp, kind), names, steps, batches,
          update_mask=mask, show_progress=show_progress, label=f"unlearn {method_name}")
      # Checkpoints store the optimizer state with the pretraining structure.
      state = state.replace(opt_state=optimizer.base_state(state.opt_state))
    else:
      steps = 0  # One-shot: the budget bought what `finalize` estimates.
    if method.finalize is not None:
      params, finalized = method.finalize(hp, tools, original.params, state.params, kind)
      state = state.replace(params=factory.clamp_logit_scale(params))
      details |= finalized

    check_finite(state.params, f"the {method_name} model at budget {budget:g}",
                 "nothing was written; lower unlearn.learning_rate")
    checkpoints = checkpointing.manager(workdir, config.train.keep_checkpoints)
    # The model was trained on Compromised's dataset: readers check against that one; the
    # dataset it was unlearned on (another only with --allow_other_dataset) is recorded.
    meta = checkpointing.make_meta(
        model=runtime.signature, reference="unlearned", stage="unlearn",
        dataset=self.pretrained_on, config=config, method=method_name, budget=budget,
        unlearned_on=runtime.dataset_identity, allow_other_dataset=self.allow_other_dataset,
        **{"from": from_dir})
    checkpointing.save(checkpoints, int(state.step), state, meta)
    scored, scoring_seconds = None, 0.0
    try:  # Orbax writes in the background meanwhile.
      if while_saving is not None:
        began = time.perf_counter()
        scored = while_saving(state.params, json.loads(json.dumps(meta)), int(state.step))
        scoring_seconds = time.perf_counter() - began  # Not the method's cost.
    finally:
      checkpoints.wait_until_finished()
    metadata = {
        "method": method_name, "paper": method.paper, "budget": budget,
        "hyperparameters": hp.to_dict(), "learning_rate": u.learning_rate, "loss": kind,
        # Per step, of the sources the method reads (None: not read).
        "forget_batch": batch_sizes.get("forget"), "retain_batch": batch_sizes.get("retain"),
        "reads": list(names),
        "steps": steps, "forget_size": num_forget,
        "samples_processed": dict(batches.samples) | {"total": sum(batches.samples.values())},
        # Replayed from an earlier run of the seed (the benchmark's RecordedStreams): the
        # same batches, not decoded again, so not in this run's wall time.
        "batches_replayed": batches.replayed,
        "budget_samples": int(budget * num_forget),
        # The floor of one step (at the smallest batches the mesh allows) or a hook's
        # estimate can cost more than the budget: said, not hidden (docs/protocol.md §4).
        "over_budget": sum(batches.samples.values()) > budget * num_forget,
        "final_metrics": metrics, **details,
        "wall_seconds": round(time.perf_counter() - start - scoring_seconds, 2),
        "seed": config.seed,
        **runtime.device_meta(), "from": from_dir,
        # A run continued from an unlearned model names that run exactly: what a chain of
        # requests checks before it reuses this one (benchmark --mode=sustainability).
        "from_unlearn_sha256": upstream,
        "dataset": runtime.dataset_identity, "allow_other_dataset": self.allow_other_dataset,
        "request": None if forget_request is None else {
            "entries": requests.as_json(forget_request),
            "forget_pairs": num_forget},
    }
    if jax.process_index() == 0:
      io_utils.write_json_atomic(os.path.join(workdir, METADATA_FILE), metadata)
    return metadata if while_saving is None else (metadata, scored)


def unlearn(config, method_name: str, budget: float, from_dir: str, workdir: str, *,
            dataset_dir: str | None = None, devices=None, show_progress: bool = True,
            forget_request: list | None = None, allow_other_dataset: bool = False) -> dict:
  """Runs one method at one budget from the Compromised model in `from_dir`."""
  check_request(method_name, budget)  # Before any restoring.
  return Unlearner(config, from_dir, dataset_dir=dataset_dir, devices=devices,
                   allow_other_dataset=allow_other_dataset).run(
      method_name, budget, workdir, show_progress=show_progress, forget_request=forget_request)
