"""Scores models on SALMUBench's ten metrics (SALMUBENCH.md §3), official JSON keys.

Each split is embedded once per model (jitted, sharded batches); every metric is then
NumPy arithmetic on the embeddings (registry.py). With the two reference results the
scores are also normalized and a failure mode is diagnosed (diagnosis.py).
"""
import os
import time

import numpy as np

from salmu_jax import checkpointing, embed, io_utils, progress
from salmu_jax.data import layout, requests, splits
from salmu_jax.errors import ConfigError, DatasetError, check_finite
from salmu_jax.evaluation import attacks as attacks_lib, diagnosis, metrics, registry
from salmu_jax.evaluation.context import EvalContext
from salmu_jax.evaluation.inputs import EvalInputs
from salmu_jax.training import runtime as runtime_lib


class Evaluator:
  """Scores any number of models of one shape on one dataset.

  Built once: the encoders compile once and the inputs are prepared once (inputs.py),
  so each further model costs only its forward passes. The fragile set is the
  dataset's unless `use_fragile_set` replaces it (one recomputed from a Compromised
  model: an artifact of that run, never written into the dataset).
  """

  def __init__(self, runtime, inputs: EvalInputs | None = None, compiled: dict | None = None):
    """`inputs`: another evaluator's, shared (decoded once) by models of another shape on
    the same dataset and evaluation settings (the benchmark's memory models). `compiled`:
    jitted programs by what they compute, shared with Unlearners (runner.Unlearner's
    `compiled`): the relearning attack's fine-tune runs the unlearning steps' forward,
    backward and update programs."""
    self.runtime, self.config = runtime, runtime.config
    self.compiled = {} if compiled is None else compiled
    self.dataset, self.tokenizer = runtime.dataset, runtime.tokenizer
    self.encoders = embed.make_encoders(runtime.graphdef, runtime.state_shardings.params,
                                        runtime.mesh)
    if inputs is None:
      inputs = EvalInputs(self.config, self.dataset, self.tokenizer)
    elif not inputs.serves(self.config, self.dataset, self.tokenizer):
      raise ConfigError("evaluation inputs can be shared only by evaluators of one dataset, "
                        "tokenizer and data/eval config")
    self.inputs = inputs
    self.fragile_ids, self.fragile_source = list(self.dataset.fragile_ids), "dataset"
    self._relearner = None  # Built on the first relearning attack.

  def use_fragile_set(self, record_ids, source: str) -> None:
    """Scores FragSim and fragile retrieval on `record_ids` (retain_disjoint record ids)
    from now on; `source` says where they come from in every result's meta."""
    disjoint = {int(r["record_id"]) for r in self.inputs.records("retain_disjoint")}
    outside = sorted(set(int(i) for i in record_ids) - disjoint)
    if outside:
      raise DatasetError(f"fragile set {source}: record ids {outside[:5]} are not in "
                         f"retain_disjoint")
    self.fragile_ids, self.fragile_source = sorted(int(i) for i in record_ids), source

  def fragile_set_of(self, params) -> list:
    """SALMUBench's rule: the `data.fragile_fraction` of retain_disjoint pairs the model
    `params` (Compromised) knows least."""
    disjoint = EvalContext(self, params).split("retain_disjoint")
    return splits.select_lowest(np.array([r["record_id"] for r in disjoint.records]),
                                metrics.paired_cosine(disjoint.image, disjoint.caption),
                                self.config.data.fragile_fraction)

  def score(self, params, *, clean: dict | None = None, compromised: dict | None = None,
            attacks=(), requested=None, show_progress: bool = False) -> dict:
    """The ten metrics (official keys), the extended block, the breakdown, the membership
    attacks, the `attacks` named (attacks.ATTACKS), the efficacy metrics split by a
    deletion request (`requested`: indices into the forget split; registry.request_block),
    and with both reference results the normalized scores and the failure-mode diagnosis."""
    attacks = attacks_lib.parse_attacks(attacks)
    check_finite(params, "the model to score")
    if "relearn" in attacks and self._relearner is None:  # Checks the forget halves first.
      self._relearner = attacks_lib.Relearner(self)
    if "quantize" in attacks:
      attacks_lib.quantization_axes(params)  # Refuses a weight without a rule, first.
    ctx = EvalContext(self, params)
    result = {"efficacy": {}, "utility": {}}
    for name, fn in progress.bar(registry.EVALUATORS.items(), desc="evaluate", unit="metric",
                                 enabled=show_progress, leave=False):
      group, key = name.split("/")
      result[group][key] = fn(ctx)
    result["extended"] = {key: fn(ctx) for key, fn in registry.EXTENDED.items()}
    result["breakdown"] = registry.breakdown(ctx)
    result["privacy"] = registry.privacy_block(ctx)
    if attacks:
      result["attacks"] = {}
    if "quantize" in attacks:
      result["attacks"]["quantize"] = attacks_lib.quantization_attack(self, params)
    if "relearn" in attacks:
      result["attacks"]["relearn"] = self._relearner(params, ctx)
    if requested is not None:
      result["request"] = registry.request_block(ctx, requested)
    if clean is not None and compromised is not None:
      result["normalized"], result["diagnosis"] = diagnosis.normalize_and_diagnose(
          diagnosis.headlines(result), diagnosis.headlines(clean),
          diagnosis.headlines(compromised), self.config.eval)
      if requested is not None:
        result["normalized"]["request"] = diagnosis.request_normalized(
            result["request"], clean["request"], compromised["request"])
    return result

  def request_blocks(self, params, requested: list) -> list:
    """registry.request_block of `params` for each of `requested` (index arrays into the
    forget split), from one set of embeddings: a reference scored on a request schedule."""
    check_finite(params, "the model to score")
    ctx = EvalContext(self, params)
    return [registry.request_block(ctx, rows) for rows in requested]

  def score_checkpoint(self, run_dir: str, *, clean=None, compromised=None,
                       recompute_fragile: bool = False, allow_other_dataset: bool = False,
                       attacks=(), requested=None, show_progress: bool = False) -> dict:
    """`score` of the latest checkpoint in `run_dir` (a reference or an unlearned model);
    `meta` names the step scored, the model, the dataset and the fragile set. Reads only.

    `recompute_fragile`: the model must be Compromised; the fragile set is recomputed
    from it first (`use_fragile_set`) and the result carries it (`fragile_set_ids`).
    """
    start = time.perf_counter()
    state, saved, step = checkpointing.restore(
        run_dir, self.runtime.abstract_state(), signature=self.runtime.signature, reference=None)
    if state is None:
      raise ConfigError(f"{run_dir} holds no checkpoint (expected {run_dir}/checkpoints/)")
    return self.score_saved(run_dir, state.params, saved, step, clean=clean,
                            compromised=compromised, recompute_fragile=recompute_fragile,
                            allow_other_dataset=allow_other_dataset, attacks=attacks,
                            requested=requested,
                            show_progress=show_progress, start=start)

  def score_saved(self, run_dir: str, params, saved: dict, step: int, *, clean=None,
                  compromised=None, recompute_fragile: bool = False,
                  allow_other_dataset: bool = False, attacks=(), requested=None,
                  show_progress: bool = False,
                  start: float | None = None) -> dict:
    """`score_checkpoint` of a model whose checkpoint (metadata `saved`, at `step`) is in
    `run_dir` or being written there: the benchmark scores an unlearned model from memory
    while orbax writes it, with the same result as reading it back."""
    start = time.perf_counter() if start is None else start
    layout.check_same(saved["dataset"], self.runtime.dataset_identity, f"{run_dir} was trained",
                      allow_other_dataset)
    recomputed = None
    if recompute_fragile:
      if saved["reference"] != "compromised":
        raise ConfigError(f"--recompute_fragile needs the Compromised model; {run_dir} holds "
                          f"{saved['reference']}")
      recomputed = self.fragile_set_of(params)
      self.use_fragile_set(recomputed, f"recomputed from {os.path.abspath(run_dir)}")
    result = self.score(params, clean=clean, compromised=compromised, attacks=attacks,
                        requested=requested,
                        show_progress=show_progress)
    details = saved["details"]
    result["meta"] = {
        "checkpoint": os.path.abspath(run_dir), "step": int(step), "model": saved["reference"],
        "method": details.get("method"), "budget": details.get("budget"),
        "seed": self.config.eval.seed, "dataset": self.runtime.dataset_identity,
        "trained_on": saved["dataset"], "allow_other_dataset": allow_other_dataset,
        "fragile_set": {"source": self.fragile_source, "size": len(self.fragile_ids)},
        **self.runtime.device_meta(), "seconds": round(time.perf_counter() - start, 2)}
    if recomputed is not None:
      result["fragile_set_ids"] = recomputed
    return result


def read_fragile_set(path: str) -> tuple:
  """(record ids, dataset identity or None) of a fragile set: the result of a
  `--recompute_fragile` evaluation (its `fragile_set_ids`, and the dataset it was computed
  on), or a JSON list (the dataset's fragile_set_ids.json)."""
  try:
    ids = io_utils.read_json(path)
  except (OSError, ValueError) as e:
    raise ConfigError(f"cannot read the fragile set {path} ({e})") from None
  dataset = None
  if isinstance(ids, dict) and "fragile_set_ids" in ids:
    dataset = ids.get("meta", {}).get("dataset")
    ids = ids["fragile_set_ids"]
  is_id = lambda i: isinstance(i, int) and not isinstance(i, bool)
  if not isinstance(ids, list) or not ids or not all(map(is_id, ids)):
    raise ConfigError(f"{path} is not a fragile set (a non-empty JSON list of record ids, or "
                      f"the result of an evaluation with --recompute_fragile)")
  return ids, dataset


def evaluate(config, checkpoint: str, *, dataset_dir: str | None = None, devices=None,
             clean: dict | None = None, compromised: dict | None = None,
             recompute_fragile: bool = False, fragile_set: str | None = None,
             allow_other_dataset: bool = False, attacks=(), request: list | None = None,
             show_progress: bool = True) -> dict:
  """The result dict of the latest checkpoint in run directory `checkpoint`, on the
  dataset at `dataset_dir` (default CHECKPOINT/data/dataset); `fragile_set` (a path, see
  `read_fragile_set`) replaces the dataset's fragile set; `request` (entries of
  requests.read_request) splits the efficacy metrics into its pairs and the others."""
  dataset_dir = dataset_dir or os.path.join(checkpoint, "data", layout.DATASET_DIRNAME)
  attacks = attacks_lib.parse_attacks(attacks)  # Before any work.
  if recompute_fragile and fragile_set:
    raise ConfigError("--recompute_fragile computes the fragile set; --fragile_set reads one: "
                      "pass one of them")
  if clean is not None and compromised is not None:  # Before any work.
    diagnosis.check_references(diagnosis.headlines(clean), diagnosis.headlines(compromised))
    for what, reference in (("--clean", clean), ("--compromised", compromised)):
      missing = [name for name in attacks if name not in reference.get("attacks", {})]
      if missing:
        raise ConfigError(f"{what} was not scored with the attacks {', '.join(missing)}: its "
                          f"recovery would have no reference; evaluate it with "
                          f"--attacks={','.join(attacks)} first")
  ids, computed_on = read_fragile_set(fragile_set) if fragile_set else (None, None)
  evaluator = Evaluator(runtime_lib.setup(config, checkpoint, dataset_dir, devices))
  identity = evaluator.runtime.dataset_identity
  for what, reference in (("--clean", clean), ("--compromised", compromised)):
    if reference is not None:
      layout.check_same(reference.get("meta", {}).get("dataset"), identity,
                        f"{what} was computed", allow_other_dataset)
  if ids is not None:
    layout.check_same(computed_on, identity, f"--fragile_set={fragile_set} was computed",
                      allow_other_dataset)
    evaluator.use_fragile_set(ids, os.path.abspath(fragile_set))
  requested = None
  if request is not None:  # Checked, with the references' blocks, before any scoring.
    requested = requests.resolve_request(evaluator.dataset, request, "--requested")
    rest = len(evaluator.inputs.records("forget")) - len(requested)
    if len(requested) < registry.MIN_REQUEST_SIDE or 0 < rest < registry.MIN_REQUEST_SIDE:
      raise ConfigError(f"--requested names {len(requested)} forget pairs and leaves {rest}: "
                        f"each side scored needs at least {registry.MIN_REQUEST_SIDE} pairs "
                        f"(1.3_ACS compares two halves); request more, or all of them")
    digest = registry.requested_digest(evaluator.inputs.records("forget"), requested)
    for what, reference in (("--clean", clean), ("--compromised", compromised)):
      if reference is not None and reference.get("request", {}).get("requested_sha256") != digest:
        raise ConfigError(f"{what} was not scored on this deletion request; evaluate it "
                          f"with the same --requested first")
  return evaluator.score_checkpoint(checkpoint, clean=clean, compromised=compromised,
                                    recompute_fragile=recompute_fragile,
                                    allow_other_dataset=allow_other_dataset,
                                    attacks=attacks, requested=requested,
                                    show_progress=show_progress)
