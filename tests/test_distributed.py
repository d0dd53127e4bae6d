"""Real multi-process JAX on localhost: 2 processes x 4 CPU devices against 1 x 8."""
import json
import os
import subprocess
import sys

import jax
import pytest

from salmu_jax import checkpointing, config as config_lib
from salmu_jax.training import loop
from tests.conftest import REPO, config_path


def logged_losses(run) -> dict:
  return {r["step"]: r["loss"] for r in map(json.loads, open(os.path.join(run, "metrics.jsonl")))
          if "loss" in r}


@pytest.mark.slow
def test_two_processes_of_four_devices_train_like_one_process_of_eight(micro_dataset_dir,
                                                                        tmp_path):
  run = tmp_path / "two_processes"
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "launch", "local.py"), "--num_processes=2",
       "--devices_per_process=4", f"--log_dir={tmp_path / 'logs'}", "--timeout=400", "--",
       sys.executable, "-m", "salmu_jax.train", f"--config={config_path('micro')}:clean",
       f"--workdir={run}", f"--dataset_dir={micro_dataset_dir}"],
      capture_output=True, text=True, cwd=REPO, timeout=450)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "clean is at step 6" in result.stdout
  assert "clean is at step 6" in (tmp_path / "logs" / "process_1.log").read_text()
  config = config_lib.load_config(config_path("micro") + ":clean")
  assert len(jax.devices()) == 8
  single = loop.train(config, str(tmp_path / "one_process"), dataset_dir=micro_dataset_dir,
                       show_progress=False)
  multi = logged_losses(run)  # Process 0 alone writes metrics.jsonl, each step once.
  assert sorted(multi) == list(range(1, 7))
  for step, loss in single["losses"].items():
    assert multi[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), step
  # One orbax checkpoint written by both processes together.
  assert checkpointing.steps(str(run)) == [3, 6]


def test_incomplete_distributed_flags_are_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "salmu_jax.train", f"--config={config_path('micro')}:clean",
       f"--workdir={tmp_path}", "--coordinator_address=localhost:1234"],
      capture_output=True, text=True, cwd=REPO, env=dict(os.environ, XLA_FLAGS=""))
  assert result.returncode == 2
  assert result.stderr.strip().endswith("or pass --distributed for automatic detection")
