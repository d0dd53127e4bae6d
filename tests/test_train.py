"""Sharded training, checkpoints and resumption, on fake CPU devices."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from salmu_jax import checkpointing, cli, losses
from salmu_jax import config as config_lib
from salmu_jax.errors import ConfigError, NonFiniteLoss
from salmu_jax.model import sharding
from salmu_jax.model import factory
from salmu_jax.training import loop, optimizer, runtime as runtime_lib, step as step_lib
from salmu_jax.training.state import TrainState
from tests.conftest import REPO, config_path
from tests.test_model import random_pairs


def sharded_steps(config, mesh, batch, steps=2):
  """Runs `steps` train steps of the micro model on `mesh`; returns (losses, params)."""
  tx, _ = optimizer.pretraining(config.train)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: factory.build(config, 64, jax.random.PRNGKey(0))))

  def init_state(key):
    params = nnx.state(factory.build(config, 64, key))
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), key)

  shardings = sharding.state_shardings(jax.eval_shape(init_state, jax.random.PRNGKey(0)), mesh)
  state = jax.jit(init_state, out_shardings=shardings)(jax.random.PRNGKey(0))
  batch_sharding = sharding.batch_sharding(mesh)
  step = jax.jit(step_lib.make_train_step(tx, losses.contrastive("train", config.train.loss),
                                       factory.apply_fn(graphdef)),
                 in_shardings=(shardings, None, {"train": batch_sharding}),
                 out_shardings=(shardings, sharding.replicated(mesh)))
  step_losses = []
  for _ in range(steps):
    state, metrics = step(state, None, {"train": {k: jax.device_put(v, batch_sharding)
                                                  for k, v in batch.items()}})
    step_losses.append(float(metrics["loss"]))
  return step_losses, state


_SINGLE_DEVICE = {}  # loss -> (losses, state): the reference, computed once per loss.


@pytest.mark.parametrize("loss, axes", [
    ("softmax", dict(data=4, fsdp=2, tensor=1)),  # 4x2
    ("softmax", dict(data=2, fsdp=4, tensor=1)),  # 2x4
    ("sigmoid", dict(data=2, fsdp=1, tensor=4)),  # tensor parallelism
])
def test_sharded_step_equals_single_device(micro_config, loss, axes):
  assert len(jax.devices()) == 8
  micro_config.tokenizer.context_length = 12
  micro_config.train.loss = loss
  images, tokens = random_pairs(16)
  batch = {"image": images, "tokens": tokens}
  if loss not in _SINGLE_DEVICE:
    _SINGLE_DEVICE[loss] = sharded_steps(
        micro_config, sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1]), batch)
  single_losses, single = _SINGLE_DEVICE[loss]
  mesh = sharding.make_mesh(axes)
  sharded_losses, sharded = sharded_steps(micro_config, mesh, batch)
  np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(single.params), jax.tree.leaves(sharded.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
  if axes["fsdp"] > 1:  # FSDP: matrices are split across devices, not replicated.
    kernel = sharded.params["visual"]["transformer"]["blocks"][0]["mlp"]["fc_kernel"][...]
    assert kernel.sharding.spec[0] == "fsdp"
    assert kernel.addressable_shards[0].data.shape[0] == kernel.shape[0] // axes["fsdp"]


def test_mesh_errors_are_one_line():
  with pytest.raises(ConfigError, match=r"data=3 x fsdp=2 x tensor=1 = 6 devices, but 8"):
    sharding.make_mesh(dict(data=3, fsdp=2, tensor=1))
  with pytest.raises(ConfigError, match="do not divide the 8 devices"):
    sharding.make_mesh(dict(data=-1, fsdp=3, tensor=1))
  with pytest.raises(ConfigError, match="at most one axis"):
    sharding.make_mesh(dict(data=-1, fsdp=-1, tensor=1))
  assert sharding.make_mesh(dict(data=-1, fsdp=2, tensor=2)).shape["data"] == 2


@pytest.fixture
def one_device():
  return jax.devices()[:1]


@pytest.mark.slow
def test_resumed_training_repeats_the_uninterrupted_losses(micro_config, micro_dataset_dir,
                                                          tmp_path, one_device, monkeypatch):
  from salmu_jax.data import pipeline
  streams, iterate = [], pipeline.iterate
  monkeypatch.setattr(pipeline, "iterate", lambda batches, config: streams.append(
      len(batches)) or iterate(batches, config))
  full = loop.train(micro_config, str(tmp_path / "full"), dataset_dir=micro_dataset_dir,
                     devices=one_device, show_progress=False)
  assert sorted(full["losses"]) == list(range(1, 7))
  assert streams == [6]  # The loader's prefetch stops at the run's last batch.
  first = loop.train(micro_config, str(tmp_path / "cut"), dataset_dir=micro_dataset_dir,
                      devices=one_device, stop_after=2, show_progress=False)
  assert first["steps_done"] == 2
  # Resumed where the process has one CPU (its training rounds otherwise; runtime.cpu_meta).
  here = {"device": "cpu", "num_devices": 1, "host_cpus": runtime_lib.usable_cpus(),
          "cpu": runtime_lib.processor(), "xla_flags": os.environ.get("XLA_FLAGS", "")}
  one_cpu = runtime_lib.cpu_meta() | {"host_cpus": 1}
  monkeypatch.setattr(runtime_lib, "cpu_meta", lambda: one_cpu)
  rest = loop.train(micro_config, str(tmp_path / "cut"), dataset_dir=micro_dataset_dir,
                     devices=one_device, show_progress=False)
  assert sorted(rest["losses"]) == [3, 4, 5, 6]
  for step in range(3, 7):
    assert rest["losses"][step] == pytest.approx(full["losses"][step], rel=1e-6, abs=1e-6)
  for a, b in zip(jax.tree.leaves(full["state"]), jax.tree.leaves(rest["state"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
  logged = [json.loads(line) for line in open(tmp_path / "cut" / "metrics.jsonl")]
  assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3, 4, 5, 6]
  assert {"heldout_retrieval_r1", "forget_association_r1"} <= set(logged[-1])
  assert os.listdir(tmp_path / "cut" / "tensorboard")
  # Each checkpoint names where its run was trained, across its resumes.
  devices = lambda run: checkpointing.read_meta(checkpointing.manager(run), 6, run)[
      "details"]["devices"]
  assert devices(str(tmp_path / "full")) == [here]
  assert devices(str(tmp_path / "cut")) == [here, {**here, "host_cpus": 1}]


@pytest.mark.slow
def test_compromised_mixture_reaches_sensitive_data_and_clean_does_not(micro_config,
                                                                      micro_dataset_dir, tmp_path,
                                                                      one_device, monkeypatch):
  from salmu_jax.data import pipeline
  seen = {}
  original = pipeline.training_batches

  def spy(config, dataset, tokenizer, base, *, mixture=None, **kwargs):
    seen[config.reference] = mixture
    return original(config, dataset, tokenizer, base, mixture=mixture, **kwargs)

  monkeypatch.setattr(pipeline, "training_batches", spy)
  for reference in ("clean", "compromised"):
    micro_config.reference = reference
    loop.train(micro_config, str(tmp_path / reference), dataset_dir=micro_dataset_dir,
                devices=one_device, stop_after=1, show_progress=False)
  assert seen["clean"]["sensitive"] == 0 and seen["compromised"]["sensitive"] > 0
  assert seen["clean"]["retain_base"] / seen["clean"]["retain_synth"] == pytest.approx(
      seen["compromised"]["retain_base"] / seen["compromised"]["retain_synth"])


def test_bad_training_inputs(micro_config, micro_dataset_dir, tmp_path, one_device):
  micro_config.batch_size = 6
  with pytest.raises(ConfigError, match="batch_size=6 is not divisible by the data-parallel size 4"):
    runtime_lib.setup(micro_config, str(tmp_path), micro_dataset_dir,
                devices=jax.devices()[:4])
  micro_config.batch_size = 8
  loop.train(micro_config, str(tmp_path / "run"), dataset_dir=micro_dataset_dir,
              devices=one_device, stop_after=1, show_progress=False)
  micro_config.model.text_width = 32
  with pytest.raises(ConfigError, match="holds a checkpoint of a different model .*text_width: 64 vs 32"):
    loop.train(micro_config, str(tmp_path / "run"), dataset_dir=micro_dataset_dir,
                devices=one_device, show_progress=False)
  with pytest.raises(ConfigError, match="not one of"):
    config_lib.load_config(config_path("micro") + ":dirty")


def test_training_refuses_a_run_directory_it_did_not_write(micro_config, micro_dataset_dir,
                                                          tmp_path, one_device):
  """A directory of imported weights (convert) holds no data iterator to resume: refused in
  one line, the checkpoint left where it is (before: moved aside as damaged, then training
  from random weights with exit 0)."""
  from salmu_jax.data.tokenizer import load_tokenizer
  from salmu_jax.interop import runs
  vocab_size = load_tokenizer(micro_config.tokenizer, micro_dataset_dir).vocab_size
  model = factory.build(micro_config, vocab_size, jax.random.PRNGKey(0))
  params = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model)))
  run = tmp_path / "imported"
  runs.write_run(params, micro_config, str(run), {"format": "test"})
  with pytest.raises(ConfigError, match="written by convert, not a training run to resume"):
    loop.train(micro_config, str(run), dataset_dir=micro_dataset_dir, devices=one_device,
               show_progress=False)
  assert checkpointing.steps(str(run)) == [0]
  assert not (run / checkpointing.CORRUPT_DIRNAME).exists()


def test_resuming_with_another_recipe_or_while_another_process_writes_is_refused(
    micro_config, micro_dataset_dir, tmp_path, one_device):
  from salmu_jax import io_utils
  run = str(tmp_path / "run")
  loop.train(micro_config, run, dataset_dir=micro_dataset_dir, devices=one_device,
             stop_after=1, show_progress=False)
  for key, value in (("learning_rate", 1e-2), ("sensitive_exposures", 0.0)):
    other = micro_config.copy_and_resolve_references()
    other.train[key] = value
    with pytest.raises(ConfigError, match=f"begun with another recipe \\(differs in: train.{key}\\)"):
      loop.train(other, run, dataset_dir=micro_dataset_dir, devices=one_device,
                 show_progress=False)
  assert checkpointing.steps(run) == [1]  # Refused before any step.
  with io_utils.exclusive(run, "another trainer"):  # Two processes on one run directory.
    with pytest.raises(ConfigError, match="is in use by another trainer \\(pid "):
      loop.train(micro_config, run, dataset_dir=micro_dataset_dir, devices=one_device,
                 show_progress=False)
  # How it logs and checkpoints may change; the run then finishes where it would have.
  safe = micro_config.copy_and_resolve_references()
  safe.train.log_every, safe.train.checkpoint_every = 2, 2
  assert loop.train(safe, run, dataset_dir=micro_dataset_dir, devices=one_device,
                    show_progress=False)["steps_done"] == safe.train.steps
  # Fewer steps than the run took: refused by name, nothing set aside as damaged (the
  # loader's stream ends at the last step, so its saved position would not fit).
  shorter = micro_config.copy_and_resolve_references()
  shorter.train.steps = safe.train.steps - 2
  with pytest.raises(ConfigError, match="differs in: train.steps"):
    loop.train(shorter, run, dataset_dir=micro_dataset_dir, devices=one_device,
               show_progress=False)
  assert not os.path.exists(os.path.join(run, checkpointing.CORRUPT_DIRNAME))


def test_a_checkpoint_whose_state_changed_on_disk_is_caught(
    micro_config, micro_dataset_dir, tmp_path, one_device, monkeypatch):
  """Each checkpoint carries checksums of its whole state: a flipped bit that still
  restores is caught (readers refuse, training sets the step aside)."""
  run = str(tmp_path / "run")
  loop.train(micro_config, run, dataset_dir=micro_dataset_dir, devices=one_device,
             stop_after=3, show_progress=False)  # Step 3.
  runtime = runtime_lib.setup(micro_config, run, micro_dataset_dir, one_device)
  restore = lambda **kw: checkpointing.restore(
      run, runtime.abstract_state(), signature=runtime.signature, reference=None, **kw)
  state, meta, step = restore()
  assert step == 3 and meta["checksums"] == checkpointing.checksums(state)

  def flip_one_bit(array):
    bits = np.asarray(array).view(np.uint32).copy()
    bits.reshape(-1)[7] ^= 1 << 3
    return jnp.asarray(bits.view(np.float32))
  # One bit of the parameters, or of the optimizer state, changes that array's checksum.
  params = jax.tree.map(lambda x: x, state.params)
  params["text"]["token_embedding"].set_value(
      flip_one_bit(params["text"]["token_embedding"].get_value()))
  opt_leaves, opt_tree = jax.tree.flatten(state.opt_state)
  largest = max(range(len(opt_leaves)), key=lambda i: opt_leaves[i].size)
  opt_leaves[largest] = flip_one_bit(opt_leaves[largest])
  for changed_state, where in ((state.replace(params=params), "token_embedding"),
                               (state.replace(opt_state=jax.tree.unflatten(opt_tree, opt_leaves)),
                                "opt_state")):
    changed = checkpointing.checksums(changed_state)
    differ = [k for k in changed if changed[k] != meta["checksums"][k]]
    assert len(differ) == 1 and where in differ[0], differ
  # What a flipped bit on disk does to a restore: the state read differs from the
  # checksums saved with it.
  monkeypatch.setattr(checkpointing, "checksums", lambda tree: changed)
  with pytest.raises(ConfigError, match="checkpoint step 3 in .* is unreadable .*differs from "
                                        "its saved checksums in 1 arrays .*nothing was moved"):
    restore()
  assert checkpointing.steps(run) == [3]


def test_config_suffix_selects_the_reference():
  assert config_lib.load_config(config_path("tiny") + ":clean").reference == "clean"
  assert config_lib.load_config(config_path("tiny") + ":compromised").reference == "compromised"


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(micro_dataset_dir, tmp_path):
  run = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  process = subprocess.Popen(
      [sys.executable, "-m", "salmu_jax.train", f"--config={config_path('micro')}:clean",
       f"--workdir={run}", f"--dataset_dir={micro_dataset_dir}", "--config.train.steps=100000",
       "--config.train.checkpoint_every=100000", "--config.train.eval_every=100000"],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
  deadline = time.time() + 240
  while time.time() < deadline and process.poll() is None:  # Until a few steps are logged.
    if (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().split()) >= 3:
      break
    time.sleep(0.5)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == cli.PREEMPTED_EXIT_CODE, stderr[-2000:]
  assert "preempted (SIGTERM) at step" in stderr and "Traceback" not in stderr
  step = int(stderr.split("at step ")[1].split(";")[0])
  logged = [json.loads(line)["step"] for line in open(run / "metrics.jsonl")]
  assert step >= 3 and logged[-1] == step  # Every finished step logged, none lost.
  assert checkpointing.steps(str(run))[-1] == step


@pytest.mark.slow
def test_a_damaged_checkpoint_is_set_aside_for_the_one_before(micro_config, micro_dataset_dir,
                                                               tmp_path, one_device):
  run = str(tmp_path / "run")
  full = loop.train(micro_config, run, dataset_dir=micro_dataset_dir, devices=one_device,
                     show_progress=False)  # Checkpoints at steps 3 and 6.
  for path in glob.glob(os.path.join(run, "checkpoints", "6", "state", "**", "*"), recursive=True):
    if os.path.isfile(path) and os.path.getsize(path) > 64:
      with open(path, "r+b") as f:  # Damaged bytes, as a failing disk or copy would leave.
        f.write(b"\0" * 64)
  again = loop.train(micro_config, run, dataset_dir=micro_dataset_dir, devices=one_device,
                      show_progress=False)
  assert os.path.isdir(os.path.join(run, checkpointing.CORRUPT_DIRNAME, "6"))
  assert sorted(again["losses"]) == [4, 5, 6]  # Resumed from step 3 and redone.
  for step in (4, 5, 6):
    assert again["losses"][step] == pytest.approx(full["losses"][step], rel=1e-6, abs=1e-6)


def nan_loss_from_the_fifth_step(monkeypatch):
  """Training's contrastive loss, finite for steps 0-3 and NaN from the fifth step on."""
  contrastive = losses.contrastive

  def diverging(on, kind="softmax"):
    loss = contrastive(on, kind)
    def nan_later(params, batch, ctx):
      value, aux = loss(params, batch, ctx)
      return jnp.where(ctx.step >= 4, jnp.nan, value), aux
    return nan_later

  monkeypatch.setattr(losses, "contrastive", diverging)


def test_a_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(
    micro_config, micro_dataset_dir, tmp_path, one_device, monkeypatch):
  nan_loss_from_the_fifth_step(monkeypatch)
  run = str(tmp_path / "run")
  with pytest.raises(NonFiniteLoss, match="loss is nan at step 5; the last checkpoint "
                                          "\\(step 3\\) is kept"):
    loop.train(micro_config, run, dataset_dir=micro_dataset_dir, devices=one_device,
                show_progress=False)
  assert checkpointing.steps(run) == [3]


def test_a_diverged_step_is_never_checkpointed_between_logs(
    micro_config, micro_dataset_dir, tmp_path, one_device, monkeypatch):
  # Checkpoint every 5 steps, log every 4: step 5's NaN loss is not logged yet when step 5
  # is saved (issue 18: the NaN model was kept and every resume failed).
  nan_loss_from_the_fifth_step(monkeypatch)
  micro_config.train.checkpoint_every, micro_config.train.log_every = 5, 4
  run = str(tmp_path / "run")
  with pytest.raises(NonFiniteLoss, match="loss is nan at step 5; no checkpoint was written"):
    loop.train(micro_config, run, dataset_dir=micro_dataset_dir, devices=one_device,
                show_progress=False)
  assert checkpointing.steps(run) == []


def blow_up_every_update(monkeypatch):
  """Every update leaves infinite parameters behind (the loss of the step that made it is
  still finite: it is computed before the update), as an overflowing update would."""
  monkeypatch.setattr(factory, "clamp_logit_scale",
                      lambda params: jax.tree.map(lambda x: x + jnp.inf, params))


def test_non_finite_parameters_are_never_checkpointed(micro_config, micro_dataset_dir, tmp_path,
                                                      one_device, monkeypatch):
  blow_up_every_update(monkeypatch)
  micro_config.train.checkpoint_every = micro_config.train.log_every = 1
  run = str(tmp_path / "run")
  with pytest.raises(NonFiniteLoss, match="the parameters are non-finite after step 1; no "
                                          "checkpoint was written"):
    loop.train(micro_config, run, dataset_dir=micro_dataset_dir, devices=one_device,
                show_progress=False)
  assert checkpointing.steps(run) == []


@pytest.mark.slow
def test_kill_9_then_the_same_command_continues_like_an_uninterrupted_run(
    micro_config, micro_dataset_dir, tmp_path, one_device):
  run = tmp_path / "killed"
  overrides = {"steps": 100_000, "checkpoint_every": 2, "eval_every": 100_000, "log_every": 1}
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  process = subprocess.Popen(
      [sys.executable, "-m", "salmu_jax.train", f"--config={config_path('micro')}:clean",
       f"--workdir={run}", f"--dataset_dir={micro_dataset_dir}"]
      + [f"--config.train.{k}={v}" for k, v in overrides.items()],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO)
  deadline = time.time() + 240
  while time.time() < deadline and process.poll() is None:  # Until checkpoint 4 is committed.
    if (run / "checkpoints" / "4" / "commit_success.txt").exists():
      break
    time.sleep(0.2)
  process.kill()  # SIGKILL: no handler runs; a checkpoint may be half-written.
  process.wait(timeout=60)
  micro_config.reference = "clean"
  micro_config.train.update(overrides)
  resumed = loop.train(micro_config, str(run), dataset_dir=micro_dataset_dir, devices=one_device,
                        stop_after=2, show_progress=False)
  first = min(resumed["losses"])
  assert first >= 5 and first % 2 == 1  # Continued after a committed (even) checkpoint.
  uninterrupted = loop.train(micro_config, str(tmp_path / "full"), dataset_dir=micro_dataset_dir,
                              devices=one_device, stop_after=first + 1, show_progress=False)
  for step, loss in resumed["losses"].items():
    assert loss == pytest.approx(uninterrupted["losses"][step], rel=1e-5, abs=1e-6)


def test_a_model_without_memory_is_clipped_exactly_as_by_optax():
  """Clipping is the one training link the memory changed: a plain model must still get
  optax's arithmetic bit for bit, or every result trained before the memory moves."""
  import optax
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  grads = {"image": {"kernel": 3 * jax.random.normal(keys[0], (64, 32))},
           "text": [jax.random.normal(keys[1], (1000,)), jax.random.normal(keys[2], (7, 5))]}
  clip = lambda tx: jax.jit(lambda g: tx.update(g, tx.init(g))[0])
  ours = clip(optimizer.clip_by_global_norm_apart_from_memory(1.0))(grads)
  theirs = clip(optax.clip_by_global_norm(1.0))(grads)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(a, b)
  assert float(optax.tree.norm(ours)) == pytest.approx(1.0, rel=1e-5)  # It did clip.
