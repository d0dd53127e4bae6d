"""SALMUBench end to end: from nothing to a leaderboard.

  python -m salmu_jax.benchmark --config=configs/tiny.py --workdir=runs/tiny \
      [--methods=npo,ssd|post_hoc|all] [--budgets=1,5] [--seeds=3] [--attacks=quantize,relearn|none] \
      [--mode=salmubench|scalability|sustainability]

Stages, in order: build SALMU-synth; per seed, train Compromised and Clean and
evaluate them (the first seed's Compromised fixes the fragile set, as in the
original); per seed, method and budget, unlearn from that seed's Compromised and
evaluate against that seed's references (from memory, while the checkpoint is being
written), membership inference and the attacks on forgetting included; then the
leaderboard (seed means and spreads), the soundness checks and a self-contained HTML
report.

Every stage writes its output last and atomically, so a killed run started again
with the same command skips what is finished (training resumes from its last
checkpoint; a half-written unlearning run is redone). All stages run in one
process: the evaluator compiles and decodes once, and compiled steps land in the
persistent compilation cache WORKDIR/jax_cache.

  WORKDIR/dataset/                           SALMU-synth
  WORKDIR/seed_S/{clean,compromised}/        reference runs; {clean,compromised}.json scores
  WORKDIR/seed_S/METHOD_Bx/                  unlearned checkpoint, unlearn.json, result.json
  WORKDIR/leaderboard.{json,md}, report.html, stages.json, config.json

`--mode=scalability|sustainability` runs MUSE's deletion requests instead of the method
stages (docs/protocol.md §5), reusing the dataset and references of the same workdir:

  WORKDIR/MODE/requests.json, seed_S/references.json, seed_S/METHOD_Bx/request_K/
  WORKDIR/MODE/leaderboard.{json,md}, report.html, stages.json

The dataset is never written after its build: the fragile set the first seed's
Compromised fixes lives in seed_S/compromised.json (`fragile_set_ids`). A failed
soundness check exits with status 3, after every output is written.
"""
from salmu_jax import host_memory

if __name__ == "__main__":  # Our own long-running process, before NumPy starts threads.
  host_memory.retain_freed_memory()

import concurrent.futures  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from salmu_jax import checkpointing, cli, distributed, io_utils, progress, report  # noqa: E402
from salmu_jax import request_report, stage_log  # noqa: E402
from salmu_jax import config as config_lib  # noqa: E402
from salmu_jax.data import builder, layout, pipeline, requests, scenes  # noqa: E402
from salmu_jax.errors import ConfigError  # noqa: E402
from salmu_jax.evaluation import attacks as attacks_lib, evaluator as evaluator_lib  # noqa: E402
from salmu_jax.evaluation import registry  # noqa: E402
from salmu_jax.training import loop, memory as memory_lib, runtime as runtime_lib  # noqa: E402
from salmu_jax.unlearning import methods as methods_lib, runner  # noqa: E402

REFERENCES = ("compromised", "clean")  # Compromised first: its evaluation fixes the fragile set.
# Unlearning by design (docs/protocol.md §8): key_deletion runs from a memory model trained
# as Compromised is, and is judged against Clean and Compromised and against the memory
# models' own references; MEMORY_REMOVED is Compromised-memory with every key deleted.
BY_DESIGN = "key_deletion"
MEMORY_REFERENCES = ("compromised_memory", "clean_memory")
MEMORY_REMOVED = "memory_removed"
RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"  # The config the stages were run with.
# SALMUBench's own protocol, and MUSE's deletion requests at scale and over time.
MODES = ("salmubench", "scalability", "sustainability")
# The stages' bar without tqdm's time-left estimate (stage_log.time_left_text, in the postfix).
STAGE_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
REQUESTS_FILE = "requests.json"  # A request mode's schedule, drawn once per workdir.
REFERENCE_BLOCKS_FILE = "references.json"  # The references' efficacy on each request.


# What jax.monitoring reports of each program's way to an executable: tracing, lowering and
# XLA compiling (a persistent-cache hit skips the last).
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class CompileClock:
  """Seconds spent tracing, lowering and compiling while it is registered, in any thread
  (stages.json's compile_seconds): the part of a stage's wall time that is not model
  arithmetic, plus what the background compiles of later methods' steps did meanwhile
  (`benchmark.compile_ahead`), which can exceed the stage's own time."""

  def __init__(self):
    self.seconds = 0.0

  def _record(self, event, duration, **kwargs):
    if event in COMPILE_EVENTS:
      self.seconds += duration

  def __enter__(self):
    jax.monitoring.register_event_duration_secs_listener(self._record)
    return self

  def __exit__(self, *exc):
    jax.monitoring.unregister_event_duration_listener(self._record)


@dataclasses.dataclass
class Stage:
  name: str
  done: Callable[[], bool]
  run: Callable[[], None]


def resolve_methods(spec: str) -> list:
  """"post_hoc" (every method that unlearns the trained Compromised), "all" (and unlearning
  by design, whose memory references are two more trainings per seed) or comma-separated
  registered names -> list of names (ConfigError on unknown)."""
  if spec.strip() == "all":
    return list(methods_lib.METHODS)
  if spec.strip() == "post_hoc":
    return [name for name in methods_lib.METHODS if name != BY_DESIGN]
  names = [n.strip() for n in spec.split(",") if n.strip()]
  unknown = [n for n in names if n not in methods_lib.METHODS]
  if unknown or not names:
    raise ConfigError(f"benchmark methods {spec!r}: unknown {unknown or 'empty list'}; known: "
                      f"{', '.join(methods_lib.METHODS)} (or post_hoc, all)")
  if len(set(names)) != len(names):
    raise ConfigError(f"benchmark methods {spec!r} name a method twice")
  return names


def resolve_budgets(budgets) -> list:
  values = []
  for budget in budgets:
    try:
      value = float(budget)
    except (TypeError, ValueError):
      raise ConfigError(f"benchmark budget {budget!r} is not a number") from None
    values.append(runner.check_budget(value, "benchmark budget "))
  if not values or len(set(values)) != len(values):
    raise ConfigError(f"benchmark budgets {list(budgets)} must be distinct and not empty")
  return values


def run_dir_name(method: str, budget: float) -> str:
  return f"{method}_{budget:g}x"


def resolve_mode(mode: str) -> str:
  if mode not in MODES:
    raise ConfigError(f"benchmark mode {mode!r}: known {', '.join(MODES)}")
  return mode


class Benchmark:
  """The stages of one benchmark and the objects they share, built on first use."""

  def __init__(self, config, workdir: str, *, methods=None, budgets=None, seeds=None,
               attacks=None, mode=None, devices=None, progress: bool = True,
               name: str = "benchmark"):
    config_lib.check_config(config)
    self.config = config.copy_and_resolve_references()
    self.config.reference = "compromised"
    self.workdir, self.devices, self.progress = os.path.abspath(workdir), devices, progress
    self.name = name  # Shown in the reports: the CLI passes the config file's name.
    bench = self.config.benchmark
    self.mode = resolve_mode(mode if mode is not None else bench.mode)
    # A request mode runs every method once per request: its own, smaller defaults.
    main = self.mode == "salmubench"
    self.methods = resolve_methods(methods if methods is not None else bench.methods)
    if not main and BY_DESIGN in self.methods:
      if (methods if methods is not None else bench.methods).strip() != "all":
        raise ConfigError(f"{BY_DESIGN} runs in --mode=salmubench only: the request modes "
                          f"have no memory references yet")
      self.methods.remove(BY_DESIGN)
    self.by_design = BY_DESIGN in self.methods
    self.budgets = resolve_budgets(budgets if budgets is not None else
                                   bench.budgets if main else bench.request_budgets)
    seeds = seeds if seeds is not None else bench.seeds if main else bench.request_seeds
    self.seeds = [self.config.seed + i for i in range(seeds)]
    self.attacks = attacks_lib.parse_attacks(attacks if attacks is not None else bench.attacks)
    if not self.seeds:
      raise ConfigError(f"--seeds={seeds} must be at least 1")
    self.dataset_dir = os.path.join(self.workdir, layout.DATASET_DIRNAME)
    self._evaluator, self._memory_evaluator = None, None
    self._unlearners, self._streams = {}, None  # One seed's at a time.
    # Shared by the seeds' Unlearners and the evaluators' relearning attacks: each step
    # traced once, the model's programs compiled once.
    self._compiled_steps = {}
    # The retain-base scenes a seed's first training renders, kept for its next trainings
    # (benchmark.scene_cache_mb); another seed draws other scenes, so one seed's at a time.
    self._scene_cache = None  # (seed, scenes.RenderCache)
    self._warming = None  # Method -> the future of its step, compiled in the background.
    self._ran_inline = {}  # Stage name -> seconds: done inside the stage before it.
    self._requested = None  # A request mode's forget rows requested so far, per request.
    self._reference_results = {}  # Seed -> the references' results and request blocks.
    self.stages_log = []
    self.kept_stages_log = []  # stages.json's records of stages this command does not list.

  # Paths and configs.
  def seed_dir(self, seed: int) -> str:
    return os.path.join(self.workdir, f"seed_{seed}")

  def seed_config(self, seed: int, reference: str = "compromised", memory: bool = False):
    config = self.config.copy_and_resolve_references()
    config.seed, config.reference = seed, reference
    config.model.memory.enabled = memory
    return config

  # Shared objects.
  @property
  def fragile_source(self) -> str:
    """The result whose fragile set every evaluation after it uses: the first seed's
    Compromised, as in the original."""
    return os.path.join(self.seed_dir(self.seeds[0]), "compromised.json")

  @property
  def evaluator(self) -> evaluator_lib.Evaluator:
    if self._evaluator is None:
      runtime = runtime_lib.setup(self.config, self.workdir, self.dataset_dir, self.devices)
      self._evaluator = evaluator_lib.Evaluator(runtime, compiled=self._compiled_steps)
      if os.path.exists(self.fragile_source):  # A resumed run.
        ids, _ = evaluator_lib.read_fragile_set(self.fragile_source)
        self._evaluator.use_fragile_set(ids, self.fragile_source)
    return self._evaluator

  @property
  def memory_evaluator(self) -> evaluator_lib.Evaluator:
    """The evaluator of the memory models (their own shapes), with the same fragile set,
    dataset and inputs (decoded once per benchmark)."""
    if self._memory_evaluator is None:
      config = self.seed_config(self.config.seed, memory=True)
      config_lib.check_config(config)
      main = self.evaluator.runtime
      self._memory_evaluator = evaluator_lib.Evaluator(
          runtime_lib.for_dataset(config, main.mesh, main.dataset, main.tokenizer,
                                  main.dataset_identity), inputs=self.evaluator.inputs,
          compiled=self._compiled_steps)
      self._memory_evaluator.use_fragile_set(self.evaluator.fragile_ids,
                                             self.evaluator.fragile_source)
    return self._memory_evaluator

  def evaluator_for(self, method_or_reference: str) -> evaluator_lib.Evaluator:
    memory = method_or_reference in (BY_DESIGN, MEMORY_REMOVED) + MEMORY_REFERENCES
    return self.memory_evaluator if memory else self.evaluator

  def unlearner(self, seed: int, memory: bool = False) -> runner.Unlearner:
    """The seed's Compromised (or Compromised-memory), restored once, with the batches its
    runs draw replayed to the next runs of the seed (`benchmark.batch_cache_mb`); the
    Unlearners and batches of one seed are held at a time."""
    if self._streams is None or self._streams[0] != seed:
      self._unlearners = {}
      self._streams = (seed, pipeline.RecordedStreams(self.config.benchmark.batch_cache_mb))
    if memory not in self._unlearners:
      reference = "compromised_memory" if memory else "compromised"
      runtime = (self.memory_evaluator if memory else self.evaluator).runtime
      self._unlearners[memory] = runner.Unlearner(
          self.seed_config(seed, memory=memory), os.path.join(self.seed_dir(seed), reference),
          runtime=runtime, compiled=self._compiled_steps, streams=self._streams[1])
    return self._unlearners[memory]

  def warmed(self, seed: int, method: str) -> None:
    """Waits until `method`'s step is compiled. The first call starts compiling, in a
    background thread and in run order, the step of every method that still has a run
    (`Unlearner.warm`), so that the XLA compiles, mostly single-threaded, overlap the
    runs and scorings of the methods before them instead of adding to them. The compiled
    programs are the runs' own: results do not change."""
    if self._warming is None:
      pending = [m for m in self.methods if m != BY_DESIGN and any(
          not os.path.exists(os.path.join(self.method_run_dir(s, m, b), runner.METADATA_FILE))
          for s in self.seeds for b in self.method_budgets(m))]
      unlearner, budget = self.unlearner(seed), min(self.budgets)
      pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="warm steps")
      self._warming = {m: pool.submit(unlearner.warm, m, budget) for m in pending}
      pool.shutdown(wait=False)
    if method in self._warming:
      try:
        self._warming.pop(method).result()
      except Exception as e:  # An optional head start: the run compiles its step itself.
        logging.warning("compiling %s's step ahead failed (%s: %s); its run compiles it",
                        method, type(e).__name__, e)

  def stop_warming(self) -> None:
    """Cancels the compiles not yet begun (a failed stage ends the run without them); a
    later `run` starts its own."""
    for future in (self._warming or {}).values():
      future.cancel()
    self._warming = None

  def method_run_dir(self, seed: int, method: str, budget: float) -> str:
    return os.path.join(self.seed_dir(seed), run_dir_name(method, budget))

  def method_budgets(self, method: str) -> list:
    """Key deletion costs nothing at any budget: it runs once, at the smallest."""
    return [min(self.budgets)] if method == BY_DESIGN else self.budgets

  def scored(self, path: str, attacks=None) -> bool:
    """Does the result at `path` exist, scored as this benchmark scores (the membership
    block and exactly its attacks, or `attacks`; "any": whatever attacks it went through)?
    One scored by an earlier invocation with other attacks, or by a version without
    membership inference, is scored again, so that every row and reference of a
    leaderboard went through the same attacks."""
    if not os.path.exists(path):
      return False
    result = io_utils.read_json(path)
    privacy = result.get("privacy", {})
    wanted = self.attacks if attacks is None else attacks
    return ("records_sha256" in privacy or "unavailable" in privacy) and (
        wanted == "any" or set(result.get("attacks", {})) == set(wanted))

  # Stages.
  def stages(self) -> list:
    manifest = os.path.join(self.dataset_dir, io_utils.MANIFEST_NAME)  # Verified on use.
    stages = [Stage("build SALMU-synth", lambda: os.path.exists(manifest),
                    lambda: builder.build_dataset(self.config, self.workdir,
                                                  progress=self.progress))]
    by_design = self.mode == "salmubench" and self.by_design
    references = REFERENCES + (MEMORY_REFERENCES if by_design else ())
    for seed in self.seeds:
      # A seed's trainings follow each other: they draw the same retain-base scenes, which
      # the first renders for the others (benchmark.scene_cache_mb).
      stages += [self._train_stage(seed, reference) for reference in references]
      stages += [self._reference_eval_stage(seed, reference) for reference in references]
      if by_design:
        stages.append(self._memory_removed_stage(seed))
    if self.mode != "salmubench":
      return stages + self._request_mode_stages()
    for seed in self.seeds:
      for method in self.methods:
        for budget in self.method_budgets(method):
          stages += self._method_stages(seed, method, budget)
    return stages

  def _train_stage(self, seed, reference) -> Stage:
    run_dir = os.path.join(self.seed_dir(seed), reference)
    config = self.seed_config(seed, reference.removesuffix("_memory"),
                              memory=reference in MEMORY_REFERENCES)

    def done():
      return os.path.exists(run_dir + ".json") or \
          checkpointing.steps(run_dir)[-1:] == [config.train.steps]

    return Stage(f"seed {seed}: train {reference}", done, lambda: loop.train(
        config, run_dir, dataset_dir=self.dataset_dir, devices=self.devices,
        show_progress=self.progress, scene_cache=self.scene_cache(seed)))

  def scene_cache(self, seed: int) -> scenes.RenderCache:
    """The scenes `seed`'s trainings share (a new seed starts an empty cache; the seed's
    scorings, after its trainings, drop it)."""
    if self._scene_cache is None or self._scene_cache[0] != seed:
      self._scene_cache = (seed, scenes.RenderCache(self.config.benchmark.scene_cache_mb))
    return self._scene_cache[1]

  def _reference_eval_stage(self, seed, reference) -> Stage:
    run_dir = os.path.join(self.seed_dir(seed), reference)
    out = run_dir + ".json"

    def run():
      self._scene_cache = None  # The seed's trainings are done.
      recompute = out == self.fragile_source
      result = self.evaluator_for(reference).score_checkpoint(
          run_dir, recompute_fragile=recompute, attacks=self.attacks, show_progress=self.progress)
      result["meta"]["training_seed"] = seed
      io_utils.write_json_atomic(out, result)
      if recompute:  # Named by the file that holds it, as a resumed run names it.
        self.evaluator.use_fragile_set(result["fragile_set_ids"], out)

    # A request mode attacks none of its models, so it takes the references as the main
    # mode scored them (any attacks) instead of scoring them again with its own.
    attacks = None if self.mode == "salmubench" else "any"
    return Stage(f"seed {seed}: evaluate {reference}", lambda: self.scored(out, attacks), run)

  def _memory_removed_stage(self, seed) -> Stage:
    """Compromised-memory with every key deleted: what its weights alone still carry."""
    out = os.path.join(self.seed_dir(seed), f"{MEMORY_REMOVED}.json")

    def run():
      unlearner = self.unlearner(seed, memory=True)
      params = unlearner.original.params
      removed, _ = memory_lib.delete_rows(params, np.arange(len(params["memory"]["valid"][...])))
      clean, compromised = (io_utils.read_json(os.path.join(self.seed_dir(seed), f"{r}.json"))
                            for r in ("clean", "compromised"))
      result = self.memory_evaluator.score(removed, clean=clean, compromised=compromised,
                                           attacks=self.attacks, show_progress=self.progress)
      result["meta"] = {"training_seed": seed, "model": MEMORY_REMOVED,
                        "from": os.path.join(self.seed_dir(seed), "compromised_memory")}
      io_utils.write_json_atomic(out, result)

    return Stage(f"seed {seed}: evaluate {MEMORY_REMOVED}", lambda: self.scored(out), run)

  def _method_stages(self, seed, method, budget) -> list:
    run_dir = self.method_run_dir(seed, method, budget)
    metadata, out = os.path.join(run_dir, runner.METADATA_FILE), os.path.join(run_dir, RESULT_FILE)

    label = f"seed {seed}: {method} {budget:g}x"
    eval_stage = f"{label} evaluate"

    def references():
      return [io_utils.read_json(os.path.join(self.seed_dir(seed), f"{r}.json"))
              for r in ("clean", "compromised")]

    def write_result(result, unlearned):
      result["meta"]["training_seed"] = seed
      result["meta"]["unlearn"] = unlearned
      io_utils.write_json_atomic(out, result)

    def run_unlearn():
      """Unlearns, and scores the model from memory while its checkpoint is written (the
      evaluate stage then finds its result): no orbax round trip between the two."""
      if os.path.exists(run_dir):  # A run killed before unlearn.json: start it afresh.
        shutil.rmtree(run_dir)
      if method != BY_DESIGN and self.config.benchmark.compile_ahead:
        self.warmed(seed, method)
      clean, compromised = references()
      unlearned, result = self.unlearner(seed, memory=method == BY_DESIGN).run(
          method, budget, run_dir, show_progress=self.progress,
          while_saving=lambda params, saved, step: self.evaluator_for(method).score_saved(
              run_dir, params, saved, step, clean=clean, compromised=compromised,
              attacks=self.attacks, show_progress=self.progress))
      write_result(result, unlearned)  # After unlearn.json: a finished model only.
      self._ran_inline[eval_stage] = result["meta"]["seconds"]  # The scoring's own time.

    def run_eval():  # A resumed run whose model was saved but not yet scored.
      clean, compromised = references()
      write_result(self.evaluator_for(method).score_checkpoint(
          run_dir, clean=clean, compromised=compromised, attacks=self.attacks,
          show_progress=self.progress), io_utils.read_json(metadata))

    return [Stage(f"{label} unlearn", lambda: os.path.exists(metadata), run_unlearn),
            Stage(eval_stage, lambda: self.scored(out), run_eval)]

  # Deletion requests at scale (nested, each from Compromised) and over time (disjoint, each
  # from the previous request's model): MUSE's scalability and sustainability.
  @property
  def mode_dir(self) -> str:
    return os.path.join(self.workdir, self.mode)

  @property
  def request_count(self) -> int:
    return (len(requests.SCALABILITY_FRACTIONS) if self.mode == "scalability"
            else requests.SUSTAINABILITY_REQUESTS)

  def schedule(self) -> dict:
    return io_utils.read_json(os.path.join(self.mode_dir, REQUESTS_FILE))

  def request_entries(self, k: int) -> list:
    """The entries request k (0-based) unlearns: the whole nested request, or the k-th
    disjoint one."""
    return [tuple(e) if isinstance(e, list) else e for e in self.schedule()["requests"][k]]

  def requested_so_far(self, k: int):
    """Forget rows requested up to and including request k: what must be forgotten then."""
    if self._requested is None:
      rows = [requests.resolve_request(self.evaluator.dataset, self.request_entries(j))
              for j in range(self.request_count)]
      self._requested = rows if self.mode == "scalability" else [
          np.unique(np.concatenate(rows[:j + 1])) for j in range(len(rows))]
    return self._requested[k]

  def request_run_dir(self, seed: int, method: str, budget: float, k: int) -> str:
    return os.path.join(self.mode_dir, f"seed_{seed}", run_dir_name(method, budget),
                        f"request_{k + 1}")

  def _drawn_requests(self) -> tuple:
    """(requests, x, x label) of the mode's schedule, drawn from the forget split with the
    config's seed (every training seed unlearns the same requests)."""
    records = self.evaluator.inputs.records("forget")
    if self.mode == "scalability":
      return (requests.scalability_requests(records, self.config.seed),
              list(requests.SCALABILITY_FRACTIONS), "share of the forget split")
    drawn = requests.sustainability_requests(records, self.config.seed)
    return drawn, list(range(1, len(drawn) + 1)), "request number"

  def _schedule_current(self) -> bool:
    """requests.json holds the schedule this code draws (not one of an older draw)."""
    path = os.path.join(self.mode_dir, REQUESTS_FILE)
    if not os.path.exists(path):
      return False
    saved = io_utils.read_json(path)
    return "pair_strata" in saved and saved["requests"] == [
        requests.as_json(entries) for entries in self._drawn_requests()[0]]

  def _draw_requests(self) -> None:
    drawn, x, x_label = self._drawn_requests()
    dataset = self.evaluator.dataset
    rows = [requests.resolve_request(dataset, entries) for entries in drawn]
    so_far = rows if self.mode == "scalability" else [
        np.unique(np.concatenate(rows[:j + 1])) for j in range(len(rows))]
    records = self.evaluator.inputs.records("forget")
    self._requested = None
    io_utils.write_json_atomic(os.path.join(self.mode_dir, REQUESTS_FILE), {
        "mode": self.mode, "seed": self.config.seed, "x": x, "x_label": x_label,
        "requests": [requests.as_json(entries) for entries in drawn],
        "pairs": [len(r) for r in rows],
        "pairs_so_far": [len(r) for r in so_far],
        # The report's bootstrap: the forget rows requested so far, and each forget pair's
        # persona and stratum (0: a whole identity's, 1: an association's).
        "requested_rows": [[int(i) for i in r] for r in so_far],
        "pair_personas": [int(r["identity"]) for r in records],
        "pair_strata": [int(r["subset"] != "forget_identity") for r in records]})

  def _reference_blocks_stage(self, seed: int) -> Stage:
    out = os.path.join(self.mode_dir, f"seed_{seed}", REFERENCE_BLOCKS_FILE)

    def done():  # Scored on this schedule's requests (a redrawn one makes them stale).
      if not os.path.exists(out):
        return False
      digests = [registry.requested_digest(self.evaluator.inputs.records("forget"),
                                           self.requested_so_far(k))
                 for k in range(self.request_count)]
      saved = io_utils.read_json(out)
      return saved.get("references_sha256") == self._reference_digests(seed) and all(
          [b["requested_sha256"] for b in saved[r]] == digests and
          all("retfail_ranks" in b for b in saved[r]) for r in ("clean", "compromised"))

    def run():
      blocks = {}
      for reference in ("clean", "compromised"):
        state, _, _ = checkpointing.restore(
            os.path.join(self.seed_dir(seed), reference), self.evaluator.runtime.abstract_state(),
            signature=self.evaluator.runtime.signature, reference=reference)
        blocks[reference] = self.evaluator.request_blocks(
            state.params, [self.requested_so_far(k) for k in range(self.request_count)])
      # Tied to the references' results as they stand (retrained references: scored again).
      io_utils.write_json_atomic(out, blocks | {"references_sha256": self._reference_digests(seed)})
      self._reference_results.pop(seed, None)

    return Stage(f"seed {seed}: {self.mode} references", done, run)

  def _reference_digests(self, seed: int) -> dict:
    return {r: io_utils.sha256_file(os.path.join(self.seed_dir(seed), f"{r}.json"))
            for r in ("clean", "compromised")}

  def request_references(self, seed: int, k: int) -> tuple:
    """(Clean, Compromised): the seed's reference results, each with its block of request k
    (read once per seed)."""
    if seed not in self._reference_results:
      blocks = io_utils.read_json(os.path.join(self.mode_dir, f"seed_{seed}",
                                               REFERENCE_BLOCKS_FILE))
      self._reference_results[seed] = {
          r: (io_utils.read_json(os.path.join(self.seed_dir(seed), f"{r}.json")), blocks[r])
          for r in ("clean", "compromised")}
    return tuple(result | {"request": blocks[k]}
                 for result, blocks in self._reference_results[seed].values())

  def _request_stages(self, seed: int, method: str, budget: float, k: int) -> list:
    """Unlearn request k and score the model (no attacks on forgetting: the main mode
    has them), like `_method_stages`; sustainability starts from request k-1's model."""
    run_dir = self.request_run_dir(seed, method, budget, k)
    start_dir = (self.request_run_dir(seed, method, budget, k - 1)
                 if self.mode == "sustainability" and k > 0 else None)
    metadata, out = os.path.join(run_dir, runner.METADATA_FILE), os.path.join(run_dir, RESULT_FILE)
    label = f"seed {seed}: {self.mode} {method} {budget:g}x request {k + 1}"
    eval_stage = f"{label} evaluate"

    def unlearned():
      """A finished run of this request, from the upstream run as it stands now (a redone
      request k-1, or a redrawn schedule, makes it stale: it is run again), that can still
      be scored (a released checkpoint whose result is missing is run again too)."""
      if not os.path.exists(metadata):
        return False
      if not scored() and not os.path.isdir(os.path.join(run_dir, checkpointing.CHECKPOINTS_DIRNAME)):
        return False
      meta = io_utils.read_json(metadata)
      upstream = None if start_dir is None else io_utils.sha256_file(
          os.path.join(start_dir, runner.METADATA_FILE))
      return (meta["request"]["entries"] == requests.as_json(self.request_entries(k))
              and "from_unlearn_sha256" in meta and meta["from_unlearn_sha256"] == upstream)

    def write_result(result, unlearned):
      result["meta"] |= {"training_seed": seed, "unlearn": unlearned, "request": k + 1}
      io_utils.write_json_atomic(out, result)
      self._release_checkpoints(seed, method, budget, k)

    def score(**kwargs):
      clean, compromised = self.request_references(seed, k)
      return dict(clean=clean, compromised=compromised, attacks=(),
                  requested=self.requested_so_far(k), show_progress=self.progress) | kwargs

    def run_unlearn():
      if start_dir is not None and not os.path.isdir(
          os.path.join(start_dir, checkpointing.CHECKPOINTS_DIRNAME)):  # Before removing anything.
        raise ConfigError(f"{run_dir} must be run again from {start_dir}, whose checkpoint "
                          f"was removed (benchmark.keep_request_checkpoints=False); remove "
                          f"{os.path.dirname(run_dir)} to run {method}'s chain again")
      if os.path.exists(run_dir):  # Killed before unlearn.json, or stale: start afresh.
        shutil.rmtree(run_dir)
      unlearned, result = self.unlearner(seed).run(
          method, budget, run_dir, show_progress=self.progress,
          forget_request=self.request_entries(k), start_dir=start_dir,
          while_saving=lambda params, saved, step: self.evaluator.score_saved(
              run_dir, params, saved, step, **score()))
      write_result(result, unlearned)
      self._ran_inline[eval_stage] = result["meta"]["seconds"]

    def run_eval():
      write_result(self.evaluator.score_checkpoint(run_dir, **score()),
                   io_utils.read_json(metadata))

    def scored():  # With the per-pair ranks the mode's intervals read (not by older code).
      return self.scored(out, attacks=()) and "retfail_ranks" in io_utils.read_json(out).get(
          "request", {})

    return [Stage(f"{label} unlearn", unlearned, run_unlearn), Stage(eval_stage, scored, run_eval)]

  def _release_checkpoints(self, seed: int, method: str, budget: float, k: int) -> None:
    """Once request k is scored, the checkpoints nothing reads any more (unless
    benchmark.keep_request_checkpoints): request k's own at scale (or the last request's),
    request k-1's over time (request k has run from it)."""
    if self.config.benchmark.keep_request_checkpoints:
      return
    last = k == self.request_count - 1
    released = [k] if self.mode == "scalability" or last else []
    released += [k - 1] if self.mode == "sustainability" and k > 0 else []
    for j in released:
      shutil.rmtree(os.path.join(self.request_run_dir(seed, method, budget, j),
                                 checkpointing.CHECKPOINTS_DIRNAME), ignore_errors=True)

  def _request_mode_stages(self) -> list:
    stages = [Stage(f"{self.mode}: draw the requests", self._schedule_current,
                    self._draw_requests)]
    stages += [self._reference_blocks_stage(seed) for seed in self.seeds]
    for seed in self.seeds:
      for method in self.methods:
        for budget in self.budgets:
          for k in range(self.request_count):
            stages += self._request_stages(seed, method, budget, k)
    return stages

  def check_workdir(self) -> None:
    """Refuses a workdir holding stages of another config (which would be reused silently);
    `benchmark.*` only selects stages and checks, the diagnosis thresholds
    (config.DIAGNOSIS_THRESHOLDS) only verdicts, and config.RESULT_NEUTRAL only speed, so they may
    change between runs."""
    path = os.path.join(self.workdir, CONFIG_FILE)
    current = {k: v for k, v in json.loads(self.config.to_json()).items() if k != "benchmark"}
    if os.path.exists(path):
      differing = config_lib.computation_differences(io_utils.read_json(path), current)
      if differing:
        raise ConfigError(f"{self.workdir} holds a benchmark of a different config (differs "
                          f"in: {', '.join(differing[:8])}); use another --workdir")
    else:
      io_utils.write_json_atomic(path, current)

  def run(self) -> dict:
    """Runs what is not finished, then writes the leaderboard and report; returns the
    leaderboard dict."""
    with io_utils.exclusive(self.workdir, "benchmark"):
      try:
        return self._run()
      finally:
        self.stop_warming()

  def _run(self) -> dict:
    start = time.perf_counter()
    stages = self.stages()
    self.check_workdir()
    # What an earlier invocation spent on each stage, kept for the stages this one reuses,
    # so that a resumed run or a report rebuild still shows the cost of every stage; the
    # records of stages this command does not list (another --methods) stay in the log as
    # `kept`, so that a later command that lists them again still finds their cost.
    log_path = os.path.join(self.output_dir, "stages.json")
    earlier_log = io_utils.read_json(log_path) if os.path.exists(log_path) else []
    earlier = {s["stage"]: (stage_log.ran_seconds(s), stage_log.ran_compile_seconds(s))
               for s in earlier_log}
    listed = {stage.name for stage in stages}
    self.kept_stages_log = [stage_log.kept(s) for s in earlier_log if s["stage"] not in listed]
    # The time left (tqdm's estimate would divide the time so far by a count of stages whose
    # costs differ a hundredfold): the stages not finished now, timed by what every stage of
    # this invocation or an earlier one cost. A stage a later one makes stale (a request
    # after a redone one) is missed.
    to_run = {stage.name for stage in stages if not stage.done()} if self.progress else set()
    with progress.bar(total=len(stages), desc="benchmark", unit="stage", enabled=self.progress,
                      position=0, bar_format=STAGE_BAR) as bar, CompileClock() as compiling:
      for index, stage in enumerate(stages):
        costs = list(({s["stage"]: s for s in earlier_log} |
                      {s["stage"]: s for s in self.stages_log}).values())
        left = stage_log.time_left_text(costs, [s.name for s in stages[index:] if s.name in to_run])
        bar.set_postfix_str(", ".join(filter(None, [stage.name, left])))
        reused = stage.done()
        began, compiled_before = time.perf_counter(), compiling.seconds
        if not reused:
          stage.run()
        seconds = round(time.perf_counter() - began, 2)
        compile_seconds = round(compiling.seconds - compiled_before, 2)
        if stage.name in self._ran_inline:  # Its work was done (and timed) by the stage before.
          reused, seconds = False, self._ran_inline.pop(stage.name)
          self.stages_log[-1]["seconds"] = self.stages_log[-1]["ran_seconds"] = round(
              self.stages_log[-1]["seconds"] - seconds, 2)
        ran = earlier.get(stage.name, (None, None)) if reused else (seconds, compile_seconds)
        self.stages_log.append({"stage": stage.name, "status": "reused" if reused else "ran",
                                "seconds": seconds, "ran_seconds": ran[0],
                                "compile_seconds": compile_seconds, "ran_compile_seconds": ran[1]})
        io_utils.write_json_atomic(log_path, self.stages_log + self.kept_stages_log)
        bar.update(1)
    return self.write_reports(time.perf_counter() - start)

  @property
  def output_dir(self) -> str:
    """Where this mode's stages.json, leaderboard and report go."""
    return self.workdir if self.mode == "salmubench" else self.mode_dir

  def computed_on(self, unlearned: list) -> list:
    """report.device_line of every environment that trained this report's references
    (their checkpoints' `devices`) or unlearned its models (`unlearned`: the runs'
    unlearn.json contents), sorted: a training rounds by it (runtime.cpu_meta), and a
    resumed workdir may mix several."""
    unrecorded = runtime_lib.UNRECORDED_DEVICE
    metas = []
    for seed in self.seeds:
      for reference in REFERENCES + MEMORY_REFERENCES:
        saved = checkpointing.latest_meta(os.path.join(self.seed_dir(seed), reference))
        if saved is not None:
          metas += saved["details"].get("devices", [unrecorded])
        elif reference in REFERENCES:
          metas.append(unrecorded)
    metas += [{k: u[k] for k in runtime_lib.DEVICE_KEYS if k in u} or unrecorded for u in unlearned]
    return sorted({report.device_line(m) for m in metas})

  def meta(self, wall_seconds: float, unlearned: list) -> dict:
    """The reports' meta; `unlearned`: the unlearn.json contents of the runs they show."""
    return {"config_name": self.name, "date": report.now(), "seeds": self.seeds,
            "budgets": self.budgets, "methods": self.methods, "mode": self.mode,
            "attacks": list(self.attacks) if self.mode == "salmubench" else [],
            **self.evaluator.runtime.device_meta(), "computed_on": self.computed_on(unlearned),
            "versions": versions(),
            "wall_seconds": round(wall_seconds, 1),
            "ran_seconds_total": round(sum(s["ran_seconds"] or 0 for s in self.stages_log), 1),
            "ran_seconds_unknown": sum(s["ran_seconds"] is None for s in self.stages_log),
            "config": json.loads(self.config.to_json())}

  def write_reports(self, wall_seconds: float) -> dict:
    """leaderboard.json / .md and report.html from the result files on disk."""
    if self.mode != "salmubench":
      return self.write_request_reports(wall_seconds)
    read = lambda *parts: io_utils.read_json(os.path.join(*parts))
    clean = [read(self.seed_dir(s), "clean.json") for s in self.seeds]
    compromised = [read(self.seed_dir(s), "compromised.json") for s in self.seeds]
    runs = {(m, b): [read(self.seed_dir(s), run_dir_name(m, b), RESULT_FILE) for s in self.seeds]
            for m in self.methods for b in self.method_budgets(m)}
    board = report.leaderboard(clean, compromised, runs, self.config.eval,
                               self.config.benchmark.rank_confidence)
    checks = report.soundness_checks(board, self.config.benchmark, self.seeds)
    if self.by_design:
      board["by_design"] = report.by_design(
          clean, compromised, *([read(self.seed_dir(s), f"{r}.json") for s in self.seeds]
                                for r in MEMORY_REFERENCES + (MEMORY_REMOVED,)),
          runs[(BY_DESIGN, min(self.budgets))], min(self.budgets), self.config.eval,
          self._training_seconds())
    for row in board["rows"]:
      unlearned = [r["meta"]["unlearn"] for r in runs[(row["method"], row["budget"])]]
      row["paper"] = methods_lib.METHODS[row["method"]].paper
      row["samples_processed"] = unlearned[0]["samples_processed"]["total"]
      row["unlearn_seconds"] = report.spread([u["wall_seconds"] for u in unlearned])
    meta = self.meta(wall_seconds, [r["meta"]["unlearn"] for results in runs.values()
                                    for r in results])
    leaderboard = {**board, "checks": checks, "meta": meta, "stages": self.stages_log}
    io_utils.write_json_atomic(os.path.join(self.workdir, "leaderboard.json"), leaderboard)
    io_utils.write_bytes_atomic(os.path.join(self.workdir, "leaderboard.md"),
                                report.markdown(board, checks, meta).encode())
    sheet_path = os.path.join(self.dataset_dir, layout.CONTACT_SHEET_FILE)
    sheet = open(sheet_path, "rb").read() if os.path.exists(sheet_path) else None
    io_utils.write_bytes_atomic(os.path.join(self.workdir, "report.html"), report.report_html(
        board, checks, meta, sheet, self.stages_log).encode())
    return leaderboard

  def _training_seconds(self) -> dict:
    """{reference: [seconds per seed]} of the training stages (this run's or an earlier's)."""
    log = {entry["stage"]: stage_log.ran_seconds(entry)
           for entry in self.kept_stages_log + self.stages_log}
    return {reference: [log.get(f"seed {seed}: train {reference}") for seed in self.seeds]
            for reference in REFERENCES + MEMORY_REFERENCES}

  def write_request_reports(self, wall_seconds: float) -> dict:
    """MODE/leaderboard.json / .md and report.html of a request mode, from its result
    files and the references' blocks."""
    steps = range(self.request_count)
    for seed in self.seeds:  # Again: a kill between a result and its release leaks none.
      for method in self.methods:
        for budget in self.budgets:
          for k in steps:
            self._release_checkpoints(seed, method, budget, k)
    references = {seed: [self.request_references(seed, k) for k in steps] for seed in self.seeds}
    clean = [[references[seed][k][0] for seed in self.seeds] for k in steps]
    compromised = [[references[seed][k][1] for seed in self.seeds] for k in steps]
    runs = {(m, b): [[io_utils.read_json(os.path.join(self.request_run_dir(seed, m, b, k),
                                                      RESULT_FILE)) for seed in self.seeds]
                     for k in steps] for m in self.methods for b in self.budgets}
    board = request_report.board(self.mode, self.schedule(), clean, compromised, runs,
                                 self.config.eval)
    for row in board["rows"]:  # What each request cost the method, seed means.
      row["unlearn_seconds"] = [report.spread([r["meta"]["unlearn"]["wall_seconds"]
                                               for r in per_seed])
                                for per_seed in runs[(row["method"], row["budget"])]]
    meta = self.meta(wall_seconds, [r["meta"]["unlearn"] for per_run in runs.values()
                                    for per_seed in per_run for r in per_seed])
    leaderboard = {**board, "meta": meta, "stages": self.stages_log}
    io_utils.write_json_atomic(os.path.join(self.mode_dir, "leaderboard.json"), leaderboard)
    io_utils.write_bytes_atomic(os.path.join(self.mode_dir, "leaderboard.md"),
                                request_report.markdown(board, meta).encode())
    io_utils.write_bytes_atomic(os.path.join(self.mode_dir, "report.html"),
                                request_report.report_html(board, meta).encode())
    return leaderboard


def versions() -> dict:
  from importlib import metadata
  return {name: metadata.version(name) for name in (
      "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets",
      "numpy")}


def enable_compilation_cache(directory: str) -> None:
  """Compiled steps and encoders are reused by later stages, resumed runs and other seeds."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", directory)


def main(argv):
  """The CLI; its flags are defined below, only when this module is the program."""
  del argv

  def body():
    enable_compilation_cache(os.path.join(os.path.abspath(_WORKDIR.value), "jax_cache"))
    name = os.path.basename(flags.FLAGS["config"].config_filename)
    bench = Benchmark(_CONFIG.value, _WORKDIR.value, methods=_METHODS.value,
                      budgets=_BUDGETS.value, seeds=_SEEDS.value, attacks=_ATTACKS.value,
                      mode=_MODE.value, name=name)
    board = bench.run()
    if bench.mode != "salmubench":
      print(request_report.markdown(board, board["meta"]))
      print(f"wrote {os.path.join(bench.mode_dir, 'leaderboard.md')}, leaderboard.json and "
            f"report.html in {board['meta']['wall_seconds']:.0f} s")
      return
    print(report.markdown(board, board["checks"], board["meta"]))
    failed = [c["name"] for c in board["checks"] if not c["passed"]]
    print(f"wrote {os.path.join(_WORKDIR.value, 'leaderboard.md')}, leaderboard.json and "
          f"report.html in {board['meta']['wall_seconds']:.0f} s"
          + (f"; soundness checks failed: {', '.join(failed)}" if failed else ""))
    if failed:
      sys.exit(cli.CHECK_FAILED_EXIT_CODE)  # The references cannot be trusted.
  cli.run(body)


if __name__ == "__main__":
  distributed.define_flags()
  _CONFIG = config_flags.DEFINE_config_file("config", None, "configs/NAME.py", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where every stage writes; rerun to resume.")
  _METHODS = flags.DEFINE_string("methods", None, "Comma-separated methods, post_hoc (every "
                                 "method but key_deletion) or all (default: the config's "
                                 "benchmark.methods, post_hoc).")
  _BUDGETS = flags.DEFINE_list("budgets", None, "Budgets, e.g. 1,5 (default: benchmark.budgets).")
  _SEEDS = flags.DEFINE_integer("seeds", None, "Seeds to average over (default: benchmark.seeds).")
  _ATTACKS = flags.DEFINE_string("attacks", None, "Attacks on forgetting scored for every model: "
                                 "comma-separated of quantize, relearn, or none (default: "
                                 "benchmark.attacks).")
  _MODE = flags.DEFINE_string("mode", None, "salmubench (the benchmark), or MUSE's deletion "
                              "requests: scalability (nested, growing) or sustainability "
                              "(disjoint, in sequence); default: benchmark.mode.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=cli.parse_flags)
