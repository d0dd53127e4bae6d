"""The open_clip peer of benchmarks/train_throughput.py trains the same model the same way."""
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

import jax  # noqa: E402

from salmu_jax.training import optimizer  # noqa: E402
from tests.conftest import REPO, config_path  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import train_throughput  # noqa: E402


def test_peer_has_our_parameters_and_decays_the_same_ones(micro_config):
  batch = train_throughput.random_batch(micro_config, 8)
  ours = train_throughput.FlaxStep(micro_config, batch, devices=jax.devices()[:1])
  theirs = train_throughput.OpenClipStep(micro_config, batch)
  params = ours.state.params
  our_leaves = jax.tree_util.tree_leaves_with_path(params)
  # open_clip has no logit bias without a sigmoid loss; everything else matches in size.
  our_sizes = sorted(int(np.prod(x.shape)) for path, x in our_leaves
                     if "logit_bias" not in jax.tree_util.keystr(path))
  their_sizes = sorted(p.numel() for p in theirs.raw_model.parameters())
  assert our_sizes == their_sizes
  decayed = sum(int(np.prod(x.shape)) for x, d in zip(
      jax.tree.leaves(params), jax.tree.leaves(optimizer.decay_mask(params))) if d)
  groups = theirs.optimizer.param_groups
  assert sum(p.numel() for p in groups[0]["params"]) == decayed
  assert groups[0]["weight_decay"] == micro_config.train.weight_decay
  assert groups[1]["weight_decay"] == 0.0
  # A step of each runs and the peer's optimizer moves its weights.
  before = [p.detach().clone() for p in theirs.raw_model.parameters()]
  assert theirs.run(1) > 0 and ours.run(1) > 0
  assert any(not torch.equal(a, b) for a, b in zip(before, theirs.raw_model.parameters()))


def test_cli_races_open_clip_and_reports_the_ratio(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "benchmarks", "train_throughput.py"),
       f"--config={config_path('micro')}", "--batch_sizes=8", "--steps=1", "--repeats=2",
       "--warmup=1"], capture_output=True, text=True, timeout=600, cwd=REPO)
  assert result.returncode == 0, result.stderr[-3000:]
  row = next(line for line in result.stdout.splitlines() if line.startswith("| 8 |"))
  assert row.count("x |") == 1 and "open_clip" in result.stdout
