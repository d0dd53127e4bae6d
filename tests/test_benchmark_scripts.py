"""The scripts in benchmarks/ run and report what they measured; timings are never asserted.

Also the analytic FLOPs behind MFU (salmu_jax/model/flops.py), checked against XLA's
own count of the compiled train step.
"""
import json
import os
import subprocess
import sys

import jax
import pytest

from salmu_jax import config as config_lib
from salmu_jax.model import flops
from tests.conftest import REPO, config_path

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import train_throughput  # noqa: E402


def run_script(name, *args, timeout=600):
  return subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", name), *args],
                        capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.mark.parametrize("overrides", [
    {},  # tiny: 64 px, patch 16, gelu
    {"data.image_size": 32, "model.patch_size": 8, "model.text_width": 96, "model.text_heads": 3,
     "model.text_layers": 1, "model.vision_mlp_ratio": 2.0, "model.embed_dim": 64,
     "model.activation": "quick_gelu", "tokenizer.context_length": 24},
])
def test_analytic_flops_match_xla_cost_analysis(overrides):
  config = config_lib.load_config(config_path("tiny"), overrides)
  batch = 16
  step = train_throughput.FlaxStep(config, train_throughput.random_batch(config, batch),
                                   devices=jax.devices()[:1])
  analytic = flops.train_flops_per_example(config.model, config.data.image_size,
                                           config.tokenizer.context_length, batch)
  xla = step.xla_flops() / batch
  # XLA also counts norms, activations, softmax and the optimizer: a little more, never less.
  assert 1.0 <= xla / analytic <= 1.1, (xla, analytic)


@pytest.mark.slow
def test_train_throughput_sweeps_batch_sizes_and_writes_table_json_and_plot(tmp_path):
  out, png = tmp_path / "train.json", tmp_path / "train.png"
  result = run_script("train_throughput.py", f"--config={config_path('micro')}",
                      "--batch_sizes=8,16", "--steps=1", "--repeats=2", "--warmup=1",
                      "--peer=none", f"--json={out}", f"--plot={png}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "| 8 |" in result.stdout and "| 16 |" in result.stdout
  assert "Command: `python benchmarks/train_throughput.py" in result.stdout
  figures = json.loads(out.read_text())
  assert [row["batch_size"] for row in figures["rows"]] == [8, 16]
  for row in figures["rows"]:
    rate = row["salmu_jax"]
    assert rate["runs"] == 2 and 0 < rate["min"] <= rate["median"] <= rate["max"]
    # The FLOPs behind MFU: the model's analytic count at this batch size.
    assert row["analytic_flops_per_example"] == flops.train_flops_per_example(
        config_lib.load_config(config_path("micro")).model, 32, 48, row["batch_size"])
    assert row["xla_flops_per_example"] > 0
    assert row["salmu_jax_page_faults_per_step"] >= 0
  assert figures["peak_source"] == "measured float32 matmul rate"
  assert png.read_bytes().startswith(b"\x89PNG")


def test_train_throughput_names_a_bad_batch_list():
  result = run_script("train_throughput.py", "--batch_sizes=8,big", "--peer=none")
  assert result.returncode != 0
  assert "--batch_sizes='8,big'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_eval_throughput_scores_cold_then_warm(tmp_path):
  result = run_script("eval_throughput.py", f"--config={config_path('micro')}",
                      f"--workdir={tmp_path}", "--models=2")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "model 0:" in result.stdout and "model 1:" in result.stdout
  assert "split sizes: " in result.stdout and "forget " in result.stdout


@pytest.mark.slow
def test_data_throughput_compares_the_loader_with_the_train_step(tmp_path):
  result = run_script("data_throughput.py", f"--config={config_path('micro')}",
                      f"--workdir={tmp_path}", "--sizes=32", "--batches=2", "--repeats=1",
                      "--threads=1")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "| 32 | png | default mixture |" in result.stdout
  assert "train step fed by the loader" in result.stdout


@pytest.mark.slow
def test_unlearn_cost_runs_each_method_and_budget_from_one_compromised(tmp_path):
  result = run_script("unlearn_cost.py", f"--config={config_path('micro')}",
                      f"--workdir={tmp_path}", "--methods=neg_grad,ssd", "--budgets=1,2")
  assert result.returncode == 0, result.stderr[-3000:]
  rows = {tuple(c.strip() for c in line.strip("|").split("|")[:4])
          for line in result.stdout.splitlines()
          if line.startswith("| neg_grad") or line.startswith("| ssd")}
  # Each row is what the run recorded, and the budget arithmetic holds: neg_grad reads one
  # forget batch (8) per step, B x |forget| samples in all; SSD trains no step.
  for method, budget in (("neg_grad", 1), ("neg_grad", 2), ("ssd", 1), ("ssd", 2)):
    meta = json.loads((tmp_path / "unlearn_cost" / f"{method}_{budget}x" / "unlearn.json")
                      .read_text())
    assert (method, f"{budget}x", str(meta["steps"]),
            f"{meta['samples_processed']['total']:,}") in rows
    if method == "neg_grad":
      assert meta["steps"] == budget * meta["forget_size"] // 8
      assert meta["samples_processed"]["total"] == meta["steps"] * 8
    else:
      assert meta["steps"] == 0 and meta["weights_changed"] > 0


@pytest.mark.slow
def test_gpu_suite_smoke_measures_both_parts_and_writes_json_and_section(tmp_path):
  """The GPU suite's own code at micro size on the CPU, so that it cannot rot between the
  sessions that have a GPU."""
  result = run_script("gpu_suite.py", f"--out={tmp_path}", "--smoke")
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((tmp_path / "gpu_suite.json").read_text())
  assert report["smoke"] and report["train"]["status"] == "ok"
  assert [row["batch_size"] for row in report["train"]["rows"]] == [8, 16]
  for row in report["train"]["rows"]:
    rate = row["salmu_jax"]
    assert rate["runs"] == 2 and 0 < rate["min"] <= rate["median"] <= rate["max"]
  # The peer is measured where it imports, and its absence is said, never hidden.
  train = report["train"]
  assert (train["peer"] == "open_clip") == (train["peer_missing"] is None)
  evaluation = report["eval"]
  assert evaluation["status"] == "ok" and len(evaluation["seconds"]) == 2
  # The synthetic dataset is the config's whole plan: the micro split sizes.
  assert evaluation["split_sizes"]["forget"] > 0
  assert evaluation["split_sizes"]["retain_disjoint"] == 20  # num_disjoint_people x 1
  assert evaluation["split_sizes"]["unseen_identity"] == 4 * 8  # num_unseen x images
  assert set(evaluation["metrics"]) >= {"1.1_RetFail", "2.1_GenKnow"}
  section = (tmp_path / "gpu_suite.md").read_text()
  assert section.startswith("## GPU suite") and "| 8 |" in section and "first model s" in section
  assert section in result.stdout


def test_gpu_suite_names_a_bad_argument(tmp_path):
  for bad, named in (("--batch_sizes=8,big", "--batch_sizes='8,big'"),
                     ("--budget_s=-1", "--budget_s=-1")):
    result = run_script("gpu_suite.py", f"--out={tmp_path}", "--smoke", bad)
    assert result.returncode != 0
    assert named in result.stderr and "Traceback" not in result.stderr
  assert not list(tmp_path.iterdir())  # Nothing written.


def test_stage_table_groups_every_stage_and_names_a_stray_one(tmp_path):
  stages = [{"stage": "build SALMU-synth", "seconds": 20.0, "compile_seconds": 0.0},
            {"stage": "seed 0: train compromised", "seconds": 100.0, "compile_seconds": 10.0},
            {"stage": "seed 1: train compromised", "seconds": 3.0, "ran_seconds": 90.0,
             "status": "reused", "compile_seconds": 0.0, "ran_compile_seconds": 8.0},
            {"stage": "seed 0: npo 1x unlearn", "seconds": 5.0, "compile_seconds": 4.0},
            {"stage": "seed 0: npo 1x evaluate", "seconds": 2.0, "compile_seconds": 0.0},
            # An earlier command's stage that this one did not list: not this run's cost.
            {"stage": "seed 0: train clean_memory", "seconds": 80.0, "ran_seconds": 80.0,
             "status": "kept", "compile_seconds": 5.0}]
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "stages.json").write_text(json.dumps(stages))
  # Reused by older code: its wall seconds kept, its compile seconds not.
  older = [dict(stages[1], status="reused", seconds=1.0, ran_seconds=100.0, compile_seconds=0.0)]
  (tmp_path / "older.json").write_text(json.dumps(older))
  (tmp_path / "other.json").write_text(json.dumps(stages[:2]))
  result = run_script("stage_table.py", f"a={tmp_path / 'run'}", f"b={tmp_path / 'other.json'}")
  assert result.returncode == 0, result.stderr
  rows = {line.split(" | ")[0].strip("| "): line for line in result.stdout.splitlines()}
  assert rows["train Compromised"].endswith("| 1/2 | 190 (18) | 100 (10) |")  # ran_seconds.
  assert rows["unlearn (every method and budget)"].endswith("| 0/1 | 5 (4) | - |")
  assert rows["train Compromised-memory, Clean-memory"].endswith("| 0 | - | - |")
  assert rows["total"].endswith("| 2/5 | 217 (22) | 120 (10) |")
  result = run_script("stage_table.py", f"older={tmp_path / 'older.json'}")
  assert "| train Compromised | 1 | 100 (?) |" in result.stdout, result.stdout
  # Unknown wall seconds are unknown, never the reuse check's: a stage a kill ended after its
  # work and before its record, and one that older code reused without keeping its cost.
  unknown = [dict(stages[1], status="reused", seconds=0.5, ran_seconds=None,
                  ran_compile_seconds=None),
             {"stage": "seed 1: train compromised", "seconds": 0.5, "status": "reused",
              "compile_seconds": 0.0}]
  for record in unknown:
    (tmp_path / "unknown.json").write_text(json.dumps([stages[0], record]))
    result = run_script("stage_table.py", f"u={tmp_path / 'unknown.json'}")
    assert "| train Compromised | 1 | ? (?) |" in result.stdout, result.stdout
    assert "| total | 2 | 20+? (0+?) |" in result.stdout, result.stdout  # The known, marked.
  (tmp_path / "stray.json").write_text(json.dumps([{"stage": "seed 0: lunch", "seconds": 1}]))
  stray = run_script("stage_table.py", f"a={tmp_path / 'stray.json'}")
  assert stray.returncode != 0 and "'seed 0: lunch' belongs to no group" in stray.stderr
