"""The end-to-end benchmark: stages, resume, artifacts, leaderboard arithmetic."""
import hashlib
import io
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from salmu_jax import benchmark, cli, io_utils, report, stage_log
from salmu_jax import config as config_lib
from salmu_jax.data import scenes
from salmu_jax.evaluation import diagnosis, registry
from salmu_jax.training import runtime as runtime_lib
from salmu_jax.unlearning import runner
from salmu_jax.errors import ConfigError
from tests.conftest import REPO, config_path, without_timings

METHODS = ("neg_grad", "ssd")


def file_states(root) -> dict:
  """Every file under `root` with its bytes' sha256 and its modification time."""
  states = {}
  for path in sorted(pathlib.Path(root).rglob("*")):
    if path.is_file():
      states[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(),
                                             path.stat().st_mtime_ns)
  return states


def micro_benchmark(micro_config, micro_dataset_dir, workdir, **kwargs):
  micro_config.benchmark.methods = ",".join(METHODS)
  micro_config.benchmark.budgets = (1.0,)
  if not os.path.exists(os.path.join(workdir, "dataset")):  # Where the benchmark reads it.
    shutil.copytree(micro_dataset_dir, os.path.join(workdir, "dataset"))
  return benchmark.Benchmark(micro_config, str(workdir), devices=jax.devices()[:1],
                             progress=False, name="micro.py", **kwargs)


@pytest.mark.slow
def test_micro_benchmark_runs_end_to_end_and_resumes_after_a_kill(
    micro_config, micro_dataset_dir, tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  shutil.copytree(micro_dataset_dir, workdir / "dataset")
  dataset_before = file_states(workdir / "dataset")
  finish = runner.Unlearner.run

  def killed_during_ssd(self, method, budget, run_dir, **kwargs):
    if method == "ssd":  # Dies after creating its run directory, before unlearn.json.
      os.makedirs(os.path.join(run_dir, "checkpoints", "0"))
      raise KeyboardInterrupt
    return finish(self, method, budget, run_dir, **kwargs)

  monkeypatch.setattr(runner.Unlearner, "run", killed_during_ssd)
  caches, make_cache = [], scenes.RenderCache
  monkeypatch.setattr(scenes, "RenderCache", lambda mb: caches.append(make_cache(mb)) or caches[-1])
  with pytest.raises(KeyboardInterrupt):
    micro_benchmark(micro_config, micro_dataset_dir, workdir).run()
  # One scene cache (its keys name the split), beside each training's record cache.
  (scene_cache,) = [c for c in caches if any(len(key) == 4 for key in c._entries)]
  assert scene_cache.hits > 0  # Clean read scenes Compromised rendered.
  seed_dir = workdir / "seed_0"
  for done in ("clean.json", "compromised.json", "neg_grad_1x/result.json"):
    assert (seed_dir / done).exists()
  assert not (seed_dir / "ssd_1x" / "unlearn.json").exists()
  assert not (workdir / "leaderboard.json").exists()
  finished = {p: os.path.getmtime(seed_dir / p) for p in ("clean.json", "neg_grad_1x/result.json")}

  monkeypatch.setattr(runner.Unlearner, "run", finish)
  board = micro_benchmark(micro_config, micro_dataset_dir, workdir).run()
  status = {s["stage"]: s["status"] for s in board["stages"]}
  assert status["seed 0: ssd 1x unlearn"] == status["seed 0: ssd 1x evaluate"] == "ran"
  assert {v for k, v in status.items() if "ssd" not in k} == {"reused"}
  assert finished == {p: os.path.getmtime(seed_dir / p) for p in finished}
  assert (seed_dir / "ssd_1x" / "unlearn.json").exists()

  # The artifacts.
  saved = io_utils.read_json(workdir / "leaderboard.json")
  assert [r["rank"] for r in saved["rows"]] == [1, 2]
  assert {(r["method"], r["budget"]) for r in saved["rows"]} == {(m, 1.0) for m in METHODS}
  keys = [name.split("/")[1] for name in registry.EVALUATORS]
  for row in saved["rows"]:
    assert list(row["metrics"])[:10] == keys and row["metrics"]["1.1_RetFail"]["n"] == 1
    assert set(report.EXTENDED_COLUMNS) <= set(row["metrics"])
    assert set(row["normalized"]["kept"]) == {"2.1_GenKnow", "retrieval/holdout_identity",
                                              "retrieval/holdout_association",
                                              "retrieval/retain_joint"}
    assert set(row["normalized"]) == {"efficacy", "utility", "kept", "privleak", "attacks"}
    assert set(row["normalized"]["attacks"]) == {"relearn"}  # The default; quantize on request.
    assert set(row["normalized"]["privleak"]) == {"pair", "pair_augmented", "identity",
                                                  "pair_calibrated", "identity_calibrated"}
    assert set(row["attack_seconds"]) == {"relearn"}
    unchecked = [a for a, v in row["normalized"]["attacks"].items() if "unchecked" in v]
    assert row["label"] == (", ".join(row["failure_modes"]) or "none") + (
        f" (unchecked: {', '.join(unchecked)})" if unchecked else "")
    assert row["samples_processed"] > 0 and row["paper"]
  assert set(saved["references"]) == {"clean", "compromised"}
  assert len(saved["checks"]) == 12 and all(isinstance(c["passed"], bool) for c in saved["checks"])
  assert [r["rank_interval"] for r in saved["rows"]] == [[1, 1], [2, 2]]  # One seed: no spread.
  assert "## What the models still tell apart" in (workdir / "leaderboard.md").read_text()
  assert "## Privacy leakage and attacks on forgetting" in (workdir / "leaderboard.md").read_text()
  assert "Attack cost: relearn" in (workdir / "leaderboard.md").read_text()
  # One seed: Clean is calibrated against itself, exactly chance.
  assert saved["references"]["clean"]["privacy/pair_calibrated"]["mean"] == 0.5
  assert saved["meta"]["versions"]["jax"] == jax.__version__ and saved["meta"]["seeds"] == [0]
  table = (workdir / "leaderboard.md").read_text()
  # The header says where the models were trained and unlearned: a training rounds by the
  # processor and the CPUs it had (one environment here: this process).
  here = saved["meta"]["computed_on"]
  assert here == [report.device_line({key: saved["meta"][key] for key in runtime_lib.DEVICE_KEYS})]
  assert saved["meta"]["host_cpus"] == runtime_lib.usable_cpus()
  assert here[0].startswith("cpu") and f", {runtime_lib.usable_cpus()} CPUs (" in here[0]
  assert f"Models trained and unlearned on {here[0]}." in table
  assert "| rank | method | budget | RetFail |" in table and "| Clean |" in table
  assert all(f"| {m} | 1x |" in table for m in METHODS)
  page = (workdir / "report.html").read_text()
  # Trade-off, metric panels, ROC curves, attacks, contact sheet.
  assert page.count("data:image/png;base64,") == 5
  assert all(m in page for m in METHODS) and "Is the benchmark sound?" in page

  # The CLI on the finished directory: every stage reused, the reports rewritten.
  before_rebuild = {s["stage"]: s for s in io_utils.read_json(workdir / "stages.json")}
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  done = subprocess.run(
      [sys.executable, "-m", "salmu_jax.benchmark", f"--config={config_path('micro')}",
       f"--workdir={workdir}", f"--methods={','.join(METHODS)}", "--budgets=1"],
      capture_output=True, text=True, env=env, cwd=REPO)
  # The dataset is read-only: training, unlearning, evaluation (the fragile set included,
  # recomputed from Compromised into compromised.json) and a resume change none of its bytes.
  assert file_states(workdir / "dataset") == dataset_before
  fragile = io_utils.read_json(seed_dir / "compromised.json")["fragile_set_ids"]
  unlearned = io_utils.read_json(seed_dir / "neg_grad_1x" / "result.json")
  assert unlearned["meta"]["fragile_set"] == {"source": str(seed_dir / "compromised.json"),
                                              "size": len(fragile)}
  assert unlearned["extended"]["retrieval"]["fragile"]["count"] == len(fragile)
  # A failed soundness check is an exit status a script can read, after every output.
  failed = [c["name"] for c in saved["checks"] if not c["passed"]]
  assert done.returncode == (cli.CHECK_FAILED_EXIT_CODE if failed else 0), \
      done.stderr[-2000:]
  assert (f"soundness checks failed: {', '.join(failed)}" in done.stdout) == bool(failed)
  assert "soundness" in done.stdout or "Soundness" in done.stdout
  rerun = io_utils.read_json(workdir / "stages.json")
  assert {s["status"] for s in rerun} == {"reused"}
  # The cost of each stage survives the rebuild: the kill run's or the resumed run's.
  assert all(s["ran_seconds"] > 0 for s in rerun if "ssd" in s["stage"] or "clean" in s["stage"])
  assert [s["ran_compile_seconds"] for s in rerun] == [
      before_rebuild[s["stage"]]["ran_compile_seconds"] for s in rerun]
  # Unknown only where the wall seconds are too (a stage the kill ended after its work and
  # before its record).
  assert [s["stage"] for s in rerun if s["ran_compile_seconds"] is None] == [
      s["stage"] for s in rerun if s["ran_seconds"] is None]
  assert any((s["ran_compile_seconds"] or 0) > 0 for s in rerun)
  # The report's total says how many stages it could not count.
  unknown = sum(s["ran_seconds"] is None for s in rerun)
  assert io_utils.read_json(workdir / "leaderboard.json")["meta"]["ran_seconds_unknown"] == unknown
  assert ("whose cost is unknown" in (workdir / "report.html").read_text()) == bool(unknown)

  # Another recipe in the same directory would silently reuse these stages: refused.
  micro_config.unlearn.learning_rate = 0.5
  with pytest.raises(ConfigError, match="different config \\(differs in: unlearn.learning_rate\\)"):
    micro_benchmark(micro_config, micro_dataset_dir, workdir).run()


@pytest.mark.slow
def test_compiling_ahead_and_replaying_batches_change_no_result(micro_config, micro_dataset_dir,
                                                                tmp_path, caplog):
  """The benchmark's two head starts (benchmark.compile_ahead, benchmark.batch_cache_mb)
  leave every unlearned model and score, the relearning attack's included, as a run
  without them writes it."""
  micro_config.benchmark.budgets = (1.0, 5.0)
  runs = ("npo_1x", "npo_5x", "grad_diff_1x", "grad_diff_5x")
  fast, plain = tmp_path / "fast", tmp_path / "plain"
  shutil.copytree(micro_dataset_dir, fast / "dataset")
  make = lambda workdir: benchmark.Benchmark(micro_config, str(workdir), methods="npo,grad_diff",
                                             devices=jax.devices()[:1], progress=False)
  make(fast).run()
  assert "ahead failed" not in caplog.text  # The steps were compiled ahead, not by the runs.
  shutil.copytree(fast, plain, ignore=lambda folder, names: [n for n in names if n in runs])
  micro_config.benchmark.compile_ahead, micro_config.benchmark.batch_cache_mb = False, 0
  status = {s["stage"]: s["status"] for s in make(plain).run()["stages"]}
  assert {status["seed 0: {} {} unlearn".format(*r.rsplit("_", 1))] for r in runs} == {"ran"}
  replayed = {}
  for run in runs:
    for name in ("result.json", "unlearn.json"):
      a, b = (io_utils.read_json(root / "seed_0" / run / name) for root in (fast, plain))
      assert without_timings(a) == without_timings(b), (run, name)
      if name == "unlearn.json":
        replayed[run] = (a["batches_replayed"], b["batches_replayed"])
  assert replayed["npo_1x"] == (0, 0) and all(r[0] > 0 and r[1] == 0 for k, r in replayed.items()
                                              if k != "npo_1x")


def test_a_stage_cost_that_is_not_known_stays_unknown():
  # Records older code wrote, without ran_seconds: one that ran its stage and one that
  # reused it; and one of a stage a kill ended after its work and before its record.
  ran = {"stage": "seed 0: train clean_memory", "status": "ran", "seconds": 80.0,
         "compile_seconds": 5.0}
  reused = dict(ran, status="reused", seconds=0.2, compile_seconds=0.0)
  killed = dict(reused, ran_seconds=None, ran_compile_seconds=None)
  # Kept by a command that does not list the stage, each keeps what was known of its cost.
  assert [(stage_log.ran_seconds(r), stage_log.ran_compile_seconds(r))
          for r in map(stage_log.kept, (ran, reused, killed))] == [(80.0, 5.0), (None, None),
                                                                    (None, None)]
  assert stage_log.kept(ran)["status"] == "kept" and ran["status"] == "ran"
  # The attacks' share of the stages' total, which would be overstated where stages are left
  # out of the total.
  board = {"rows": [{"attack_seconds": {"relearn": {"mean": 4.0, "n": 2}}}],
           "reference_attack_seconds": {}}
  assert report.attack_cost_line(board, {"ran_seconds_total": 80.0}) == (
      "Attack cost: relearn 8 s (10% of the stages' 80 s).")
  assert report.attack_cost_line(board, {"ran_seconds_total": 10.0, "ran_seconds_unknown": 2}) == (
      "Attack cost: relearn 8 s (no share of the stages' total: the cost of 2 stages is "
      "unknown).")


def test_the_time_left_comes_from_stages_of_the_same_kind_and_says_when_it_is_a_bound():
  assert [stage_log.stage_kind(name) for name in (
      "seed 2: npo 5x unlearn", "seed 1: scalability npo 0.5x request 3 evaluate",
      "seed 0: evaluate clean", "build SALMU-synth")] == [
          "5x unlearn", "0.5x evaluate", "evaluate clean", "build SALMU-synth"]
  costs = [{"stage": "build SALMU-synth", "status": "ran", "ran_seconds": 20.0},
           {"stage": "seed 0: train compromised", "status": "ran", "ran_seconds": 120.0,
            "ran_compile_seconds": 20.0},
           {"stage": "seed 0: finetune 1x unlearn", "status": "ran", "ran_seconds": 6.0,
            "ran_compile_seconds": 1.0},
           {"stage": "seed 0: npo 1x unlearn", "status": "ran", "ran_seconds": 2.0},
           {"stage": "seed 0: finetune 1x evaluate", "status": "ran", "ran_seconds": 5.0},
           # Reused: what the invocation that ran it took.
           {"stage": "seed 0: train clean", "status": "reused", "ran_seconds": 90.0},
           # Killed before its record, and a stage this command does not list: no cost.
           {"stage": "seed 0: evaluate clean", "status": "ran", "ran_seconds": None},
           {"stage": "seed 0: ssd 1x unlearn", "status": "kept", "ran_seconds": 50.0}]
  # The same stage on another seed without its compiling, else the mean of its kind.
  assert stage_log.time_left(costs, ["seed 1: train compromised", "seed 1: npo 1x unlearn",
                                     "seed 1: ssd 1x unlearn", "seed 1: ssd 1x evaluate",
                                     "seed 1: train clean"]) == (100.0 + 2.0 + 4.0 + 5.0 + 90.0,
                                                                 True)
  assert stage_log.time_left(costs, ["seed 1: evaluate clean", "seed 1: npo 1x unlearn",
                                     "seed 1: npo 5x unlearn"]) == (2.0, False)
  assert stage_log.time_left_text(costs, ["seed 1: train compromised"] * 3) == "~5 min left"
  assert stage_log.time_left_text(costs, ["seed 1: npo 1x unlearn"]) == "under 2 min left"
  assert stage_log.time_left_text(costs, ["seed 1: evaluate clean"] + [
      "seed 1: train compromised"] * 2) == "at least 3 min left"
  # Nothing known yet, or nothing left: no estimate.
  assert stage_log.time_left_text(costs, ["seed 1: evaluate clean"]) == ""
  assert stage_log.time_left_text(costs[:1], ["seed 1: train compromised"]) == ""
  assert stage_log.time_left_text(costs, []) == ""
  # The stages' bar shows that estimate and not tqdm's, which divides by a count of stages.
  from tqdm import tqdm
  with tqdm(total=193, bar_format=benchmark.STAGE_BAR, file=io.StringIO()) as bar:
    bar.update(5)
    bar.set_postfix_str("seed 1: train clean, ~6 min left")
    assert str(bar).endswith("5/193 [00:00, seed 1: train clean, ~6 min left]")


def test_a_workdir_is_reused_under_other_verdict_thresholds_only(micro_config, tmp_path):
  benchmark.Benchmark(micro_config, str(tmp_path), progress=False).check_workdir()
  for name in config_lib.DIAGNOSIS_THRESHOLDS:  # Verdicts are recomputed from the results.
    micro_config.eval[name] = micro_config.eval[name] / 2
  benchmark.Benchmark(micro_config, str(tmp_path), progress=False).check_workdir()
  # The loader's threads and caches and the evaluator's input cache change speed only
  # (tests/test_pipeline.py), even where the saved config predates a key.
  micro_config.data.loader.num_threads += 1
  micro_config.data.loader.prefetch_buffer_size += 1
  micro_config.eval.input_cache_mb += 1
  saved = io_utils.read_json(tmp_path / benchmark.CONFIG_FILE)
  del saved["data"]["loader"]["record_cache_mb"]
  io_utils.write_json_atomic(str(tmp_path / benchmark.CONFIG_FILE), saved)
  benchmark.Benchmark(micro_config, str(tmp_path), progress=False).check_workdir()
  micro_config.eval.gallery_forget += 1  # A score itself would change: refused.
  with pytest.raises(ConfigError, match="differs in: eval.gallery_forget\\)"):
    benchmark.Benchmark(micro_config, str(tmp_path), progress=False).check_workdir()


def test_the_stage_plan_covers_every_seed_method_and_budget(micro_config, tmp_path):
  micro_config.seed = 3
  plan = benchmark.Benchmark(micro_config, str(tmp_path), methods="npo,ssd", budgets=[1, 5],
                             seeds=2, progress=False)
  names = [stage.name for stage in plan.stages()]
  references = [f"seed {s}: {verb} {r}" for s in (3, 4) for verb in ("train", "evaluate")
                for r in ("compromised", "clean")]
  runs = [f"seed {s}: {m} {b}x {step}" for s in (3, 4) for m in ("npo", "ssd") for b in (1, 5)
          for step in ("unlearn", "evaluate")]
  assert names == ["build SALMU-synth"] + references[:4] + references[4:] + runs
  assert plan.seed_config(4, "clean").seed == 4 and plan.seed_config(4, "clean").reference == "clean"
  assert not os.listdir(tmp_path)  # Planning writes nothing.
  # With unlearning by design, a seed's four trainings follow each other (they share the
  # retain-base scenes the first renders), then their scorings.
  by_design = benchmark.Benchmark(micro_config, str(tmp_path), methods="key_deletion", seeds=1,
                                  progress=False)
  names = [stage.name for stage in by_design.stages()]
  models = ("compromised", "clean", "compromised_memory", "clean_memory")
  assert names[1:10] == ([f"seed 3: train {m}" for m in models]
                         + [f"seed 3: evaluate {m}" for m in models + ("memory_removed",)])
  # The default ("post_hoc") is every method but key deletion, without the memory models'
  # trainings; "all" adds both.
  default, every = (benchmark.Benchmark(micro_config, str(tmp_path), methods=methods, seeds=1,
                                        budgets=[1], progress=False) for methods in (None, "all"))
  registered = list(benchmark.methods_lib.METHODS)
  assert micro_config.benchmark.methods == "post_hoc"
  assert default.methods == [m for m in registered if m != benchmark.BY_DESIGN]
  assert not any("memory" in stage.name for stage in default.stages())
  assert every.methods == registered and benchmark.BY_DESIGN in registered
  assert sum("memory" in stage.name for stage in every.stages()) == 5


@pytest.mark.parametrize("kwargs, message", [
    (dict(methods="npo,forget_everything"), "unknown \\['forget_everything'\\]"),
    (dict(methods="npo,npo"), "name a method twice"),
    (dict(methods="post_hoc,npo"), "unknown \\['post_hoc'\\].*\\(or post_hoc, all\\)"),
    (dict(budgets=["1", "x"]), "budget 'x' is not a number"),
    (dict(budgets=[0]), "budget 0.0 must be a positive"),
    (dict(budgets=[1e9]), "budget 1e\\+09 passes exceeds the bound of 1000"),
    (dict(seeds=0), "--seeds=0 must be at least 1"),
])
def test_bad_benchmark_requests_are_named(micro_config, tmp_path, kwargs, message):
  with pytest.raises(ConfigError, match=message):
    benchmark.Benchmark(micro_config, str(tmp_path), **kwargs)
  assert not os.listdir(tmp_path)  # Refused before writing anything.


def test_a_result_scored_with_other_attacks_is_scored_again(micro_config, tmp_path):
  with_attacks = benchmark.Benchmark(micro_config, str(tmp_path), attacks="quantize,relearn")
  relearn = benchmark.Benchmark(micro_config, str(tmp_path), attacks="relearn")
  without = benchmark.Benchmark(micro_config, str(tmp_path), attacks="none")
  path = str(tmp_path / "result.json")
  scored = lambda: [b.scored(path) for b in (with_attacks, relearn, without)]
  assert scored() == [False, False, False]
  io_utils.write_json_atomic(path, {"attacks": {"relearn": {}}})  # An older version's.
  assert scored() == [False, False, False]
  io_utils.write_json_atomic(path, {"privacy": {"pair": {}}})  # Before records_sha256.
  assert scored() == [False, False, False]
  stamped = {"records_sha256": "0" * 64}
  io_utils.write_json_atomic(path, {"privacy": stamped})
  assert scored() == [False, False, True]
  io_utils.write_json_atomic(path, {"privacy": {"unavailable": "no unseen"}})  # Released data.
  assert scored() == [False, False, True]
  io_utils.write_json_atomic(path, {"privacy": stamped, "attacks": {"relearn": {}}})
  assert scored() == [False, True, False]  # Exactly the attacks asked for.
  io_utils.write_json_atomic(path, {"privacy": stamped, "attacks": {"quantize": {}, "relearn": {}}})
  assert scored() == [True, False, False]
  with pytest.raises(ConfigError, match="unknown"):
    benchmark.Benchmark(micro_config, str(tmp_path), attacks="membership")


def fake_result(values: dict) -> dict:
  """An evaluation result with the given headlines (diagnosis.headlines keys; missing
  official metrics: 0.5, missing retrieval MRR: 0.5, missing spreads: 0.7)."""
  result = {"efficacy": {}, "utility": {}, "breakdown": {"leakage_rate": 0.1}}
  for name in registry.EVALUATORS:
    group, key = name.split("/")
    value = values.get(key, 0.5)
    result[group][key] = {"MRR": value} if key == "1.1_RetFail" else {"mean": value}
  result["utility"]["2.1_GenKnow"] = {"accuracy": values.get("2.1_GenKnow", 0.5), "classes": 32}
  result["extended"] = {
      "retrieval": {s: {"MRR": values.get(f"retrieval/{s}", 0.5)} for s in diagnosis.RETRIEVAL_SPLITS},
      "collapse": {"image_cosine": 1 - values.get("spread/image", 0.7),
                   "caption_cosine": 1 - values.get("spread/caption", 0.7)}}
  return result


HOLDOUTS = ("retrieval/holdout_identity", "retrieval/holdout_association")
CLEAN = {"1.1_RetFail": 0.001, "1.2_AssocStr": -0.2, "2.1_GenKnow": 0.90, "2.2_InterIdSim": -0.2,
         "2.3_IntraIdSim": -0.2, **{k: 0.01 for k in HOLDOUTS}}
COMPROMISED = {"1.1_RetFail": 0.30, "1.2_AssocStr": 0.8, "1.3_ACS": 0.9, "1.4_IdZSC": 0.6,
               "1.5_CoreAssoc": 0.7, "2.1_GenKnow": 0.91, "2.2_InterIdSim": 0.8,
               "2.3_IntraIdSim": 0.8, **{k: 0.5 for k in HOLDOUTS}}
THRESHOLDS = ml_collections.ConfigDict(dict(
    ineffective_below=0.5, overgeneralized_below=0.5, catastrophic_drop_fraction=0.1,
    collapse_spread_ratio=0.5, superficial_recovery_above=0.5, min_attack_gap_fraction=0.25))
CRITERIA = ml_collections.ConfigDict(dict(min_retfail_ratio=5.0, min_assocstr_gap=0.1,
                                          max_genknow_gap_fraction=0.1))


def test_the_by_design_targets_pass_and_fail_where_their_numbers_say():
  """Issue 22's targets (report.by_design) on hand-made results of two seeds."""
  with_auc = lambda values, auc: fake_result(values) | {"privacy": {"pair": {"auc": auc}}}
  memory = {**COMPROMISED, "1.1_RetFail": 1.0, "2.1_GenKnow": 0.8, **{k: 1.0 for k in HOLDOUTS}}
  forgotten = {**memory, "1.1_RetFail": 0.001, "2.1_GenKnow": 0.7}  # GenKnow kept: 0.875.
  section = report.by_design(
      [with_auc(CLEAN, 0.50), with_auc(CLEAN, 0.48)], [with_auc(COMPROMISED, 0.99)] * 2,
      [with_auc(memory, 1.0)] * 2, [with_auc({**CLEAN, "2.1_GenKnow": 0.8}, 0.50)] * 2,
      [with_auc({**CLEAN, "2.1_GenKnow": 0.8}, 0.49)] * 2,
      [with_auc(forgotten, auc) for auc in (0.51, 0.52)], 1.0, THRESHOLDS,
      {"compromised": [10.0, 12.0], "clean": [None, None]})
  checks = {c["name"]: c for c in section["checks"]}
  efficacy = checks["key deletion's RetFail efficacy (0 = Compromised, 1 = Clean)"]
  assert efficacy["value"] == 1.0 and efficacy["passed"]
  assert checks["retrieval/holdout_identity kept, of Compromised-memory's"]["passed"]
  genknow = checks["2.1_GenKnow kept, of Compromised-memory's"]
  assert genknow["value"] == 0.875 and not genknow["passed"]
  # Seed means 0.515 against 0.49: +5.1%, outside the band; per seed +2.0% and +8.3%.
  mean_leak = checks["pair PrivLeak against Clean (%), seed mean"]
  assert mean_leak["value"] > 5 and not mean_leak["passed"]
  per_seed = [c for c in section["checks"] if c["name"].endswith("each seed")]
  assert [c["value"] for c in per_seed] == ["+2.0, +8.3", "+2.0, +4.0"]
  assert [c["passed"] for c in per_seed] == [False, True]
  assert section["cost"]["2.1_GenKnow"] == pytest.approx(0.8 / 0.91)
  assert section["training_seconds"]["compromised"]["mean"] == 11.0
  assert section["training_seconds"]["clean"] is None


def test_leaderboard_means_spreads_ranks_and_diagnoses():
  runs = {
      # Forgets, keeps the holdouts: no failure mode.
      ("good", 1.0): [fake_result({**COMPROMISED, "1.1_RetFail": r, "1.2_AssocStr": -0.1,
                                   **{k: 0.45 for k in HOLDOUTS}}) for r in (0.01, 0.03)],
      # Barely moves: ineffective.
      ("weak", 1.0): [fake_result({**COMPROMISED, "1.1_RetFail": 0.29})] * 2,
      # Forgets and wrecks the holdouts and general knowledge.
      ("blunt", 5.0): [fake_result({**CLEAN, "2.2_InterIdSim": -0.9, "2.1_GenKnow": 0.3})] * 2,
      # The collapsed model: mean cosines as high as Compromised's, nothing told apart.
      ("collapsed", 1.0): [fake_result({**COMPROMISED, "1.1_RetFail": 0.002, "spread/image": 0.05,
                                        **{k: 0.03 for k in HOLDOUTS}})] * 2,
  }
  board = report.leaderboard([fake_result(CLEAN)] * 2, [fake_result(COMPROMISED)] * 2, runs,
                             THRESHOLDS)
  rows = {r["method"]: r for r in board["rows"]}
  assert [r["method"] for r in board["rows"]] == ["good", "weak", "blunt", "collapsed"]
  assert rows["good"]["metrics"]["1.1_RetFail"]["mean"] == pytest.approx(0.02)
  assert rows["good"]["metrics"]["1.1_RetFail"]["std"] == pytest.approx(np.std([0.01, 0.03], ddof=1))
  assert rows["good"]["label"] == "none" and rows["good"]["per_seed_labels"] == ["none", "none"]
  assert rows["weak"]["failure_modes"] == ["ineffective forgetting"]
  assert rows["blunt"]["failure_modes"] == ["over-generalized forgetting", "catastrophic damage"]
  assert rows["collapsed"]["failure_modes"] == ["over-generalized forgetting",
                                                "representation collapse"]
  assert rows["good"]["normalized"]["efficacy"]["1.1_RetFail"] == pytest.approx(
      (0.30 - 0.02) / (0.30 - 0.001))
  assert rows["good"]["normalized"]["kept"]["retrieval/holdout_identity"] == pytest.approx(
      (0.45 - 0.01) / (0.5 - 0.01))
  assert rows["collapsed"]["scores"]["utility"] < rows["good"]["scores"]["utility"]
  assert board["reference_scores"]["compromised"] == {"efficacy": 0.0, "utility": 1.0, "balanced": 0.0}
  assert board["reference_scores"]["clean"]["efficacy"] == pytest.approx(1.0)
  assert [r["rank_interval"] for r in board["rows"]] == [[1, 1], [2, 2], [3, 3], [4, 4]]

  checks = {c["name"]: c for c in report.soundness_checks(board, CRITERIA, [0, 1])}
  assert checks["RetFail MRR: Compromised >= 5x Clean"]["passed"]
  assert checks["holdout_identity retrieval MRR: Compromised >= 5x Clean"]["passed"]
  genknow = "GenKnow: |Compromised - Clean| <= 0.1 of their accuracy above chance"
  assert checks[genknow]["passed"] and checks[genknow]["per_seed"] == [True, True]
  assert checks["every efficacy metric: Compromised > Clean"]["passed"]
  assert checks["failure mode visible: catastrophic damage"]["value"] == "blunt@5x"
  assert checks["failure mode visible: ineffective forgetting"]["value"] == "weak@1x"
  # A Clean that memorized too is caught.
  leaky = report.leaderboard([fake_result(COMPROMISED)], [fake_result(COMPROMISED)],
                             {key: results[:1] for key, results in runs.items()}, THRESHOLDS)
  failed = [c["name"] for c in report.soundness_checks(leaky, CRITERIA, [0]) if not c["passed"]]
  assert "RetFail MRR: Compromised >= 5x Clean" in failed
  assert "InterIdSim: Compromised > Clean" in failed and "every efficacy metric: Compromised > Clean" in failed
  json.dumps(board)  # Serializable as leaderboard.json.


def test_a_number_that_cannot_be_computed_fails_its_check():
  # The reviewer's two holes: NaN holdout retrieval (NaN ranks first) read as kept, and a
  # degenerate reference (Compromised's GenKnow at chance) that no drop can cross.
  nan_holdouts = fake_result({**COMPROMISED, "1.1_RetFail": 0.01, **{k: float("nan") for k in HOLDOUTS}})
  board = report.leaderboard([fake_result(CLEAN)], [fake_result(COMPROMISED)],
                             {("nan", 1.0): [nan_holdouts]}, THRESHOLDS)
  row = board["rows"][0]
  assert "over-generalized forgetting" in row["failure_modes"] and row["label"] != "none"
  assert np.isfinite(row["scores"]["balanced"])
  at_chance = {**COMPROMISED, "2.1_GenKnow": 1 / 32}
  wrecked = fake_result({**COMPROMISED, "1.1_RetFail": 0.01, "2.1_GenKnow": 0.0,
                         **{k: 0.45 for k in HOLDOUTS}})
  board = report.leaderboard([fake_result(CLEAN)], [fake_result(at_chance)],
                             {("wrecked", 5.0): [wrecked]}, THRESHOLDS)
  assert board["rows"][0]["failure_modes"] == ["catastrophic damage"]


def test_each_soundness_check_holds_on_every_seed():
  # Seed 4's Clean lost general knowledge: the seed mean would hide it, the per-seed check not.
  clean = [fake_result(CLEAN), fake_result({**CLEAN, "2.1_GenKnow": 0.6})]
  board = report.leaderboard(clean, [fake_result(COMPROMISED)] * 2, {}, THRESHOLDS)
  genknow = {c["name"]: c for c in report.soundness_checks(board, CRITERIA, [3, 4])}[
      "GenKnow: |Compromised - Clean| <= 0.1 of their accuracy above chance"]
  assert genknow["per_seed"] == [True, False] and not genknow["passed"]
  # Named by their training seeds (--config.seed=3 runs seeds 3, 4, ...), not positions.
  assert genknow["value"].startswith("seed 3: 0.910 vs 0.900") and "seed 4: 0.910 vs 0.600" in genknow["value"]
  with pytest.raises(ValueError, match="1 seeds named for 2"):
    report.soundness_checks(board, CRITERIA, [3])


def test_seed_bootstrap_is_exact_and_rank_intervals_show_what_seeds_resolve():
  resamples = report.seed_resamples(3)
  assert len(resamples) == 10 and sum(p for _, p in resamples) == pytest.approx(1.0)
  assert all(w.sum() == pytest.approx(1.0) for w, _ in resamples)
  assert len(report.seed_resamples(8)) == report.MONTE_CARLO_RESAMPLES
  seeds = lambda *mrrs, holdout=0.45: [fake_result({**COMPROMISED, "1.1_RetFail": m,
                                                    **{k: holdout for k in HOLDOUTS}}) for m in mrrs]
  runs = {("a", 1.0): seeds(0.01, 0.05, 0.02), ("b", 1.0): seeds(0.04, 0.01, 0.03),
          ("far", 1.0): seeds(0.10, 0.11, 0.12, holdout=0.3)}
  board = report.leaderboard([fake_result(CLEAN)] * 3, [fake_result(COMPROMISED)] * 3, runs,
                             THRESHOLDS, confidence=0.9)
  intervals = {r["method"]: r["rank_interval"] for r in board["rows"]}
  assert intervals["a"] == intervals["b"] == [1, 2]  # The seeds disagree on their order.
  assert intervals["far"] == [3, 3]  # Worse on every resample.
  # Every resample's seed mean gives each row the same verdict: nothing marked unsettled.
  assert [r["failure_modes_support"] for r in board["rows"]] == [1.0, 1.0, 1.0]
  table = report.markdown(board, [], {"config_name": "t", "date": "d", "device": "cpu",
                                      "seeds": [0, 1, 2], "versions": {"jax": "x", "flax": "y"}})
  assert "| 1 (1-2) |" in table and "| 3 | far |" in table


def test_an_order_that_rests_on_an_unsettled_verdict_is_not_told_apart():
  """Rows rank by their number of failure modes first: an order decided by a verdict near its
  threshold is claimed only if it holds however that verdict comes out (seeds 3-5 and 9-11
  reversed two such orders, benchmarks/RESULTS.md)."""
  row = lambda retfail, image_spreads: [fake_result({**COMPROMISED, "1.1_RetFail": retfail,
                                                     **{k: 0.45 for k in HOLDOUTS},
                                                     "spread/image": s}) for s in image_spreads]
  # Collapse below 0.35 (half the references' 0.7): "wobbly" lies above it on every seed and
  # in every resample, but by 0.01 on two seeds of three.
  runs = {("wobbly", 1.0): row(0.001, (0.36, 0.36, 0.60)), ("steady", 1.0): row(0.01, (0.7,) * 3),
          ("collapsed", 1.0): row(0.02, (0.1,) * 3)}
  board = report.leaderboard([fake_result(CLEAN)] * 3, [fake_result(COMPROMISED)] * 3, runs,
                             THRESHOLDS, confidence=0.9)
  rows = {r["method"]: r for r in board["rows"]}
  assert [r["method"] for r in board["rows"]] == ["wobbly", "steady", "collapsed"]
  assert rows["wobbly"]["failure_modes_support"] == 1.0  # The bootstrap alone reads it settled,
  assert report.undecided_modes(rows["wobbly"]) == {diagnosis.COLLAPSE}  # the margin does not:
  assert rows["wobbly"]["rank_interval"] == rows["steady"]["rank_interval"] == [1, 2]
  assert rows["collapsed"]["rank_interval"] == [3, 3]  # Below either, however wobbly's comes out.
  assert not report.settled(rows["wobbly"], board) and report.settled(rows["steady"], board)
  # Without the widening the seed bootstrap would tell wobbly and steady apart.
  intervals, _ = report.seed_bootstrap(board["per_seed"]["clean"], board["per_seed"]["compromised"],
                                       {k: [diagnosis.headlines(r) for r in v] for k, v in runs.items()},
                                       THRESHOLDS, 0.9)
  assert intervals[("wobbly", 1.0)] == (1, 1) and intervals[("steady", 1.0)] == (2, 2)
  # Superficial forgetting is judged only on a row that is not ineffective: a row near
  # ineffective has one of the two at most, never both.
  ineffective, superficial = diagnosis.INEFFECTIVE, diagnosis.SUPERFICIAL
  assert report._count_range(frozenset({ineffective}), frozenset({ineffective, superficial})) == (0, 1)
  assert report._count_range(frozenset({superficial, diagnosis.COLLAPSE}),
                             frozenset({ineffective, superficial})) == (1, 2)


def with_attacks(values: dict, before: float, after: float | None, int8: float | None = None) -> dict:
  """fake_result with a relearning attack's second-half RetFail before and after (None: the
  fine-tune diverged) and, if given, RetFail quantized to int8."""
  relearn = {"before": {"retfail_mrr": before}, "seconds": 1.0}
  relearn |= {"failed": "diverged"} if after is None else {"after": {"retfail_mrr": after}}
  attacks = {"relearn": relearn}
  if int8 is not None:
    attacks["quantize"] = {"int8": {"1.1_RetFail": int8}, "seconds": 1.0}
  return fake_result(values) | {"attacks": attacks}


GAP = COMPROMISED["1.1_RetFail"] - CLEAN["1.1_RetFail"]
CLEAN_AFTER = 0.05  # Clean's second-half RetFail goes 0.001 -> 0.05 under relearning.


def attacked_rows(retfail, recoveries, int8=None):
  """Three seeds of an unlearned model that forgets (RetFail `retfail`) and that relearning
  brings back `recoveries` of the gap on (None: diverged)."""
  return [with_attacks({**COMPROMISED, "1.1_RetFail": retfail, **{k: 0.45 for k in HOLDOUTS}},
                       0.01, None if r is None else 0.01 + CLEAN_AFTER - 0.001 + r * GAP, int8)
          for r in recoveries]


def attacked_board(runs, kept_shares, int8_kept=None):
  """The leaderboard of `runs` against references that keep `kept_shares` of their RetFail
  gap under relearning on each seed (and `int8_kept` under int8, if given)."""
  int8 = lambda share: None if int8_kept is None else CLEAN["1.1_RetFail"] + share * GAP
  clean = [with_attacks(CLEAN, 0.001, CLEAN_AFTER, int8(0.0))] * 3
  compromised = [with_attacks(COMPROMISED, 0.30, CLEAN_AFTER + share * GAP,
                              int8(int8_kept[i] if int8_kept else 0.0))
                 for i, share in enumerate(kept_shares)]
  board = report.leaderboard(clean, compromised, runs, THRESHOLDS, confidence=0.9)
  return board, {r["method"]: r for r in board["rows"]}


def test_an_attack_that_other_seeds_may_not_check_settles_no_superficial_verdict():
  """Whether an attack can show anything (the references keep eval.min_attack_gap_fraction of
  their RetFail gap under it; a relearned copy that does not diverge) decides superficial
  forgetting and ranks a row with an unchecked attack below the fully checked ones: a draw
  of seeds that lies near either leaves such a verdict unsettled and such an order unclaimed."""
  runs = {("steady", 1.0): attacked_rows(0.02, (0.0,) * 3),
          ("unsure", 1.0): attacked_rows(0.005, (None, 0.0, 0.0)),  # Diverged on one seed of 3.
          ("diverged", 1.0): attacked_rows(0.01, (None,) * 3),
          ("hidden", 1.0): attacked_rows(0.01, (0.6,) * 3)}  # Brings back 0.6 of the gap.

  far, rows = attacked_board(runs, (0.47, 0.48, 0.49))  # Against 0.25: far enough.
  margin = far["attack_checkability"]["relearn"]
  assert margin["mean"] == pytest.approx(0.23) and abs(margin["mean"]) > margin["needed"]
  assert [r["method"] for r in far["rows"]] == ["unsure", "steady", "diverged", "hidden"]
  assert rows["diverged"]["label"] == "none (unchecked: relearn)"
  assert rows["hidden"]["failure_modes"] == [diagnosis.SUPERFICIAL]
  assert all(report.settled(r, far) for r in far["rows"])
  assert [r["checkability_near"] for r in far["rows"]] == [["relearn"], [], [], []]
  # One diverged seed of three: checked on the seed mean, maybe unchecked on another draw.
  # Its recovery lies far below the threshold, so its verdict holds either way; its order
  # above the fully checked rows does not. Seeds that all diverge decide it.
  assert rows["unsure"]["rank_interval"] == rows["steady"]["rank_interval"] == [1, 2]
  assert rows["diverged"]["rank_interval"] == [3, 3]
  assert rows["hidden"]["rank_interval"] == [4, 4]
  intervals, _ = report.seed_bootstrap(far["per_seed"]["clean"], far["per_seed"]["compromised"],
                                       {k: [diagnosis.headlines(r) for r in v] for k, v in runs.items()},
                                       THRESHOLDS, 0.9)  # Without the widening, told apart:
  assert intervals[("unsure", 1.0)] == (1, 1) and intervals[("steady", 1.0)] == (2, 2)

  near, rows = attacked_board(runs, (0.24, 0.27, 0.30))  # 0.27 on the mean: checked, but
  margin = near["attack_checkability"]["relearn"]  # within the margin of 0.25.
  assert margin["mean"] == pytest.approx(0.02) and not abs(margin["mean"]) > margin["needed"]
  assert all(r["checkability_near"] == ["relearn"] for r in near["rows"])
  assert [r["failure_modes"] for r in near["rows"]] == [r["failure_modes"] for r in far["rows"]]
  # Superficial, or unchecked and not, on another draw: unsettled; the others keep theirs.
  assert report.near_thresholds(rows["hidden"]) == [diagnosis.SUPERFICIAL]
  assert [report.settled(r, near) for r in near["rows"]] == [True, True, True, False]
  # The references' relearning is checked for every row or for none: with it checked, steady
  # ranks above diverged (unchecked on every seed); without, every row is unchecked and
  # diverged's higher balanced score ranks it above steady. Hidden, which may have no
  # failure mode on another draw, may rank first. No order is claimed.
  assert {m: r["rank_interval"] for m, r in rows.items()} == {
      "unsure": [1, 3], "steady": [1, 4], "diverged": [2, 4], "hidden": [1, 4]}

  # References whose relearning diverged on every seed: unchecked for every row on any
  # draw, which widens nothing.
  gone = {key: [r | {"attacks": {"relearn": {"before": {"retfail_mrr": 0.01}, "failed": "x",
                                             "seconds": 1.0}}} for r in results]
          for key, results in runs.items() if key[0] != "unsure"}
  clean = [with_attacks(CLEAN, 0.001, None)] * 3
  compromised = [with_attacks(COMPROMISED, 0.30, None)] * 3
  board = report.leaderboard(clean, compromised, gone, THRESHOLDS, confidence=0.9)
  assert all(r["checkability_near"] == [] and "unchecked" in r["label"] for r in board["rows"])
  assert [r["rank_interval"] for r in board["rows"]] == [[1, 1], [2, 2], [3, 3]]

  # A checked attack whose recovery cannot be computed fails the superficial check, so
  # references near the least gap under it leave that verdict open (the int8 RetFail of
  # "broken" is NaN on every seed).
  quantized = {("broken", 1.0): attacked_rows(0.01, (0.0,) * 3, int8=float("nan")),
               ("fine", 1.0): attacked_rows(0.02, (0.0,) * 3, int8=0.02)}
  board, rows = attacked_board(quantized, (0.47, 0.48, 0.49), int8_kept=(0.26, 0.27, 0.30))
  assert rows["broken"]["checkability_near"] == ["quantize_int8"]
  assert rows["broken"]["failure_modes"] == [diagnosis.SUPERFICIAL]
  assert not report.settled(rows["broken"], board) and report.settled(rows["fine"], board)
  assert rows["broken"]["rank_interval"] == rows["fine"]["rank_interval"] == [1, 2]


def test_the_device_line_names_the_processor_and_cpus_on_cpu_only():
  cpu = {"device": "cpu", "num_devices": 1, "host_cpus": 2, "cpu": "AMD EPYC, avx512f"}
  assert report.device_line(cpu) == "cpu, 2 CPUs (AMD EPYC, avx512f)"
  assert report.device_line(cpu | {"num_devices": 8, "xla_flags": "--xla_x=1"}) == (
      "cpu x 8, 2 CPUs (AMD EPYC, avx512f), XLA_FLAGS=--xla_x=1")
  assert report.device_line(cpu | {"host_cpus": 1}) == "cpu, 1 CPU (AMD EPYC, avx512f)"
  assert report.device_line({"device": "NVIDIA H100 80GB HBM3"}) == "NVIDIA H100 80GB HBM3"
  info = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\nflags\t\t: fpu sse avx avx2\n"
  xeon = runtime_lib.processor(info)
  assert xeon.startswith("Intel(R) Xeon(R) CPU @ 2.20GHz, avx2, flags ")
  # Two generations behind one model name: the flags' digest tells them apart.
  assert runtime_lib.processor(info.replace("avx2", "avx2 avx512_bf16")) != xeon
  assert runtime_lib.processor(info.replace("avx2", "avx2 avx512f")).split(", ")[1] == "avx512f"
  assert runtime_lib.processor(info.replace("flags\t\t: fpu sse avx avx2\n", "")) == (
      "Intel(R) Xeon(R) CPU @ 2.20GHz")
  assert runtime_lib.processor("processor\t: 0\nFeatures\t: fp asimd\n") == (
      platform.processor() or platform.machine() or "unknown")  # No model name (ARM).
  one = {"computed_on": ["cpu, 2 CPUs (AMD EPYC, avx512f)"]}
  assert report.computed_on_line(one) == "Models trained and unlearned on cpu, 2 CPUs (AMD EPYC, avx512f)."
  mixed = {"computed_on": ["cpu, 1 CPU (AMD EPYC)", "cpu, 2 CPUs (AMD EPYC)"]}
  assert report.computed_on_line(mixed).startswith("Models trained and unlearned on 2 environments")
  assert report.computed_on_line({}) == ""  # An older leaderboard's meta.


def test_a_result_without_the_extended_block_is_named():
  old = fake_result(CLEAN)
  del old["extended"]
  with pytest.raises(ConfigError, match="without the `extended` block"):
    report.leaderboard([old], [fake_result(COMPROMISED)], {}, THRESHOLDS)


@pytest.mark.slow
def test_request_modes_run_end_to_end_and_a_chain_resumes_from_the_right_model(
    micro_config, micro_dataset_dir, tmp_path):
  from salmu_jax.data import requests
  first = tmp_path / "first"
  micro_config.benchmark.keep_request_checkpoints = True  # For the kill below.
  sustained = micro_benchmark(micro_config, micro_dataset_dir, first, mode="sustainability")
  board = sustained.run()
  mode_dir = first / "sustainability"
  assert {"leaderboard.json", "leaderboard.md", "report.html", "stages.json",
          "requests.json"} <= set(os.listdir(mode_dir))
  assert not (first / "stages.json").exists()  # The main mode's log is not this one's.
  schedule = io_utils.read_json(mode_dir / "requests.json")
  forget = len(sustained.evaluator.inputs.records("forget"))
  assert schedule["pairs_so_far"][-1] == forget == sum(schedule["pairs"])
  for method in METHODS:
    for k in range(requests.SUSTAINABILITY_REQUESTS):
      run_dir = sustained.request_run_dir(0, method, 1.0, k)
      unlearned = io_utils.read_json(os.path.join(run_dir, runner.METADATA_FILE))
      # Each request from the previous request's model, with the budget of its own pairs.
      expected_from = (sustained.request_run_dir(0, method, 1.0, k - 1) if k else
                       str(first / "seed_0" / "compromised"))
      assert unlearned["from"] == expected_from
      assert unlearned["from_unlearn_sha256"] == (io_utils.sha256_file(
          os.path.join(expected_from, runner.METADATA_FILE)) if k else None)
      assert unlearned["forget_size"] == schedule["pairs"][k]
      result = io_utils.read_json(os.path.join(run_dir, "result.json"))
      # Not yet requested: exactly the forget pairs outside every request so far.
      assert result["request"]["pairs"] == {
          "requested": schedule["pairs_so_far"][k], "not_requested": forget - schedule["pairs_so_far"][k]}
      assert ("not_requested" in result["request"]) == (k + 1 < requests.SUSTAINABILITY_REQUESTS)
  assert len(board["rows"]) == len(METHODS)
  assert all(len(row["after_request"]) == requests.SUSTAINABILITY_REQUESTS for row in board["rows"])
  assert "| neg_grad | 1x | 4 |" in (mode_dir / "leaderboard.md").read_text()
  for row in board["rows"]:  # RetFail's intervals bracket the seed's value, with a verdict.
    for k, after in enumerate(row["after_request"]):
      intervals = after["intervals"]
      low, high = intervals["requested_retfail"]
      assert low <= after["requested_retfail"]["mean"] <= high
      last = k + 1 == requests.SUSTAINABILITY_REQUESTS
      assert (intervals["collateral"] is None) == last
      assert last or intervals["collateral"] in ("yes", "no", "unresolved", "unmeasurable")

  # Killed during request 3 of neg_grad (its directory half-written): the same command
  # redoes it from request 2's model and gets the uninterrupted chain's result.
  second = tmp_path / "second"
  shutil.copytree(first, second)
  micro_config.benchmark.keep_request_checkpoints = False  # The default, from here on.
  resumed = micro_benchmark(micro_config, micro_dataset_dir, second, mode="sustainability")
  for k in (2, 3):
    shutil.rmtree(resumed.request_run_dir(0, "neg_grad", 1.0, k))
  os.makedirs(os.path.join(resumed.request_run_dir(0, "neg_grad", 1.0, 2), "checkpoints", "0"))
  status = {s["stage"]: s["status"] for s in resumed.run()["stages"]}
  assert [k for k, v in status.items() if v == "ran"] == [
      f"seed 0: sustainability neg_grad 1x request {k} {what}" for k in (3, 4)
      for what in ("unlearn", "evaluate")]
  for k in (2, 3):
    again = io_utils.read_json(os.path.join(resumed.request_run_dir(0, "neg_grad", 1.0, k),
                                            "result.json"))
    before = io_utils.read_json(os.path.join(sustained.request_run_dir(0, "neg_grad", 1.0, k),
                                             "result.json"))
    assert again["request"] == before["request"] and again["efficacy"] == before["efficacy"]
  # Each checkpoint goes once the next request has run from it and both are scored; the
  # report releases what the first run kept (keep_request_checkpoints was on there).
  held = lambda k: os.path.isdir(os.path.join(resumed.request_run_dir(0, "neg_grad", 1.0, k),
                                              "checkpoints"))
  assert not any(held(k) for k in range(4))
  # A request whose upstream run changed is stale: run again, which needs that upstream's
  # checkpoint (removed here), so it is refused by name instead of reusing a stale chain.
  stale = os.path.join(resumed.request_run_dir(0, "neg_grad", 1.0, 2), runner.METADATA_FILE)
  io_utils.write_json_atomic(stale, io_utils.read_json(stale) | {"from_unlearn_sha256": "0" * 64})
  with pytest.raises(ConfigError, match="request_2, whose checkpoint was removed.*neg_grad_1x"):
    micro_benchmark(micro_config, micro_dataset_dir, second, mode="sustainability").run()
  assert os.path.exists(stale)  # Refused before anything was removed.

  # Scalability in the same workdir: the references are reused, the requests nested.
  # Asked for other attacks, a request mode (which attacks none of its models) still takes
  # the references as scored, never scores them again.
  scaled = micro_benchmark(micro_config, micro_dataset_dir, first, mode="scalability",
                           attacks="none")
  board = scaled.run()
  reused = {s["stage"]: s["status"] for s in board["stages"]}
  assert reused["seed 0: train compromised"] == reused["seed 0: evaluate compromised"] == "reused"
  pairs = io_utils.read_json(first / "scalability" / "requests.json")["pairs"]
  assert pairs == sorted(pairs) and pairs[-1] == forget
  for k, size in enumerate(pairs):
    run_dir = scaled.request_run_dir(0, "ssd", 1.0, k)
    unlearned = io_utils.read_json(os.path.join(run_dir, runner.METADATA_FILE))
    assert unlearned["from"] == str(first / "seed_0" / "compromised") and \
        unlearned["forget_size"] == size
    assert not os.path.exists(os.path.join(run_dir, "checkpoints"))  # Scored: released.
    # The budget is counted against the request: no more than B x its pairs, batches
    # shrunk where one step would cost more (SSD's importances included).
    for method in METHODS:
      spent = io_utils.read_json(os.path.join(scaled.request_run_dir(0, method, 1.0, k),
                                              runner.METADATA_FILE))
      assert spent["samples_processed"]["total"] <= size and not spent["over_budget"], method
  with pytest.raises(ConfigError, match="benchmark mode 'muse'"):
    micro_benchmark(micro_config, micro_dataset_dir, first, mode="muse")


def test_the_collateral_verdict_reads_the_pairs_not_yet_requested():
  from salmu_jax import request_report
  import ml_collections
  pairs = 40
  # Personas of 2 pairs; the first 8 pairs of each side are whole identities'.
  schedule = {"requested_rows": [list(range(20))], "pair_personas": [i // 2 for i in range(pairs)],
              "pair_strata": [int(i % 20 >= 8) for i in range(pairs)]}
  rng = np.random.default_rng(0)
  clean = 20 + rng.integers(0, 10, pairs)  # Ranks: Clean retrieves badly, Compromised well.
  compromised = 1 + rng.integers(0, 2, pairs)
  block = lambda ranks: {"request": {"retfail_ranks": [int(r) for r in ranks]}}
  thresholds = ml_collections.ConfigDict({"collateral_efficacy_above": 0.25})
  verdict = lambda model: request_report.retfail_intervals(
      schedule, 0, [block(model)], [block(clean)], [block(compromised)], thresholds)
  requested = np.arange(pairs) < 20
  erased_all = verdict(clean)  # Everyone erased, asked or not.
  assert erased_all["collateral"] == "yes" and erased_all["not_requested_retfail"] == [1.0, 1.0]
  selective = verdict(np.where(requested, clean, compromised))  # Only who asked.
  assert selective["collateral"] == "no" and selective["selectivity"] == [1.0, 1.0]
  # Half the unasked pairs erased: an interval around 0.5 on 20 pairs in 10 units.
  half = verdict(np.where(requested | (np.arange(pairs) % 4 < 2), clean, compromised))
  low, high = half["not_requested_retfail"]
  assert low < 0.5 < high and half["collateral"] in ("yes", "unresolved")
  # Resampled within strata: erasing only the requested whole identities is seen in every
  # resample (a pool mixing both kinds would draw resamples without any identity: 0).
  low, high = verdict(np.where(np.arange(pairs) < 8, clean, compromised))["requested_retfail"]
  assert 0.3 < low < high < 0.6
  # Where the references tie (no gap to normalize by), a side has no interval, no verdict.
  tied = request_report.retfail_intervals(schedule, 0, [block(compromised)],
                                          [block(np.where(requested, clean, compromised))],
                                          [block(compromised)], thresholds)
  assert tied["degenerate"]["not_requested_retfail"] == 1.0
  assert "not_requested_retfail" not in tied and tied["collateral"] == "unmeasurable"
  everything = schedule | {"requested_rows": [list(range(pairs))]}
  last = request_report.retfail_intervals(everything, 0, [block(clean)], [block(clean)],
                                          [block(compromised)], thresholds)
  assert last["collateral"] is None and "selectivity" not in last
