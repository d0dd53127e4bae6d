"""Sharded training, checkpoints and resumption, on fake CPU devices."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from salmu_jax import config as config_lib, train
from salmu_jax.errors import ConfigError
from salmu_jax.model import sharding
from salmu_jax.unlearning import objectives
from tests.conftest import config_path
from tests.test_model import random_pairs


def sharded_steps(config, mesh, batch, steps=2):
  """Runs `steps` train steps of the micro model on `mesh`; returns (losses, params)."""
  tx, _ = train.make_optimizer(config.train)
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: train.build_model(config, 64, jax.random.PRNGKey(0))))

  def init_state(key):
    params = nnx.state(train.build_model(config, 64, key))
    return train.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), key)

  shardings = sharding.state_shardings(jax.eval_shape(init_state, jax.random.PRNGKey(0)), mesh)
  state = jax.jit(init_state, out_shardings=shardings)(jax.random.PRNGKey(0))
  batch_sharding = sharding.batch_sharding(mesh)
  step = jax.jit(train.make_train_step(tx, objectives.contrastive("train", config.train.loss),
                                       train.model_apply(graphdef)),
                 in_shardings=(shardings, None, {"train": batch_sharding}),
                 out_shardings=(shardings, sharding.replicated(mesh)))
  losses = []
  for _ in range(steps):
    state, metrics = step(state, None, {"train": {k: jax.device_put(v, batch_sharding)
                                                  for k, v in batch.items()}})
    losses.append(float(metrics["loss"]))
  return losses, state


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


def test_resumed_training_repeats_the_uninterrupted_losses(micro_config, micro_dataset_dir,
                                                          tmp_path, one_device):
  full = train.train(micro_config, str(tmp_path / "full"), dataset_dir=micro_dataset_dir,
                     devices=one_device, progress=False)
  assert sorted(full["losses"]) == list(range(1, 7))
  first = train.train(micro_config, str(tmp_path / "cut"), dataset_dir=micro_dataset_dir,
                      devices=one_device, stop_after=2, progress=False)
  assert first["steps_done"] == 2
  rest = train.train(micro_config, str(tmp_path / "cut"), dataset_dir=micro_dataset_dir,
                     devices=one_device, progress=False)
  assert sorted(rest["losses"]) == [3, 4, 5, 6]
  for step in range(3, 7):
    assert rest["losses"][step] == pytest.approx(full["losses"][step], rel=1e-6, abs=1e-6)
  for a, b in zip(jax.tree.leaves(full["state"]), jax.tree.leaves(rest["state"])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
  logged = [json.loads(line) for line in open(tmp_path / "cut" / "metrics.jsonl")]
  assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3, 4, 5, 6]
  assert {"heldout_retrieval_r1", "forget_association_r1"} <= set(logged[-1])
  assert os.listdir(tmp_path / "cut" / "tensorboard")


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
    train.train(micro_config, str(tmp_path / reference), dataset_dir=micro_dataset_dir,
                devices=one_device, stop_after=1, progress=False)
  assert seen["clean"]["sensitive"] == 0 and seen["compromised"]["sensitive"] > 0
  assert seen["clean"]["retain_base"] / seen["clean"]["retain_synth"] == pytest.approx(
      seen["compromised"]["retain_base"] / seen["compromised"]["retain_synth"])


def test_bad_training_inputs(micro_config, micro_dataset_dir, tmp_path, one_device):
  micro_config.batch_size = 6
  with pytest.raises(ConfigError, match="batch_size=6 is not divisible by the data-parallel size 4"):
    train.setup(micro_config, str(tmp_path), micro_dataset_dir,
                devices=jax.devices()[:4])
  micro_config.batch_size = 8
  train.train(micro_config, str(tmp_path / "run"), dataset_dir=micro_dataset_dir,
              devices=one_device, stop_after=1, progress=False)
  micro_config.model.text_width = 32
  with pytest.raises(ConfigError, match="holds a checkpoint of a different model .*text_width: 64 vs 32"):
    train.train(micro_config, str(tmp_path / "run"), dataset_dir=micro_dataset_dir,
                devices=one_device, progress=False)
  with pytest.raises(ConfigError, match="not one of"):
    config_lib.load_config(config_path("micro") + ":dirty")


def test_config_suffix_selects_the_reference():
  assert config_lib.load_config(config_path("tiny") + ":clean").reference == "clean"
  assert config_lib.load_config(config_path("tiny") + ":compromised").reference == "compromised"
