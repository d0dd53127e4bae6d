"""Unlearning: transform algebra, the frozen reference, every method, the data guard, CLI."""
import dataclasses
import json
import os
import pathlib
import re
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from salmu_jax import checkpointing, config as config_lib, embed, losses
from salmu_jax.data import layout, pipeline, requests
from salmu_jax.errors import ConfigError, DatasetError
from salmu_jax.evaluation import metrics
from salmu_jax.training import loop, optimizer, runtime as runtime_lib, staged
from salmu_jax.training.state import TrainState
from salmu_jax.training.step import make_train_step
from salmu_jax.unlearning import methods, objectives as O, parameter_transforms as T, runner
from tests.conftest import REPO, config_path, without_timings


def toy_apply(params, images, tokens):
  """A linear dual encoder over toy inputs, as `apply` expects."""
  unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  text = params["embed"][tokens].mean(1)
  return unit(images @ params["image"]), unit(text), params["log_scale"], 0.0


def toy_setup(seed=0, n=6):
  key = jax.random.PRNGKey(seed)
  k1, k2, k3, k4 = jax.random.split(key, 4)
  params = {"image": jax.random.normal(k1, (5, 4)), "embed": jax.random.normal(k2, (20, 4)),
            "log_scale": jnp.asarray(2.0)}
  part = lambda k: {"image": jax.random.normal(k, (n, 5)),
                    "tokens": jax.random.randint(jax.random.fold_in(k, 1), (n, 3), 1, 20)}
  batch = {"forget": part(k3), "retain": part(k4)}
  ctx = O.Context(reference_params=params, rng=key, step=jnp.asarray(0), apply=toy_apply)
  return params, batch, ctx


def grads(loss, params, batch, ctx):
  return jax.grad(lambda p: loss(p, batch, ctx)[0])(params)


def test_negate_flips_the_gradient_and_weights_combine_linearly():
  params, batch, ctx = toy_setup()
  f, g = O.contrastive("forget", "softmax"), O.direct_similarity("retain")
  for a, b in zip(jax.tree.leaves(grads(f, params, batch, ctx)),
                  jax.tree.leaves(grads(O.negate(f), params, batch, ctx))):
    np.testing.assert_allclose(a, -b, rtol=1e-6)
  combined = O.weighted(a=(2.0, f), b=(-3.0, g))
  value, aux = combined(params, batch, ctx)
  np.testing.assert_allclose(value, 2 * f(params, batch, ctx)[0] - 3 * g(params, batch, ctx)[0],
                             rtol=1e-6)
  assert {"term_a", "term_b"} <= set(aux)
  expected = jax.tree.map(lambda x, y: 2 * x - 3 * y, grads(f, params, batch, ctx),
                          grads(g, params, batch, ctx))
  for a, b in zip(jax.tree.leaves(grads(combined, params, batch, ctx)), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("beta", [0.1, 1.0, 2.5])
def test_npo_at_the_reference_is_2_over_beta_log_2(beta):
  params, batch, ctx = toy_setup()
  value, _ = O.npo("forget", beta, "softmax")(params, batch, ctx)
  np.testing.assert_allclose(value, (2 / beta) * np.log(2), rtol=1e-6)


def test_simnpo_and_kl_match_closed_forms():
  params, batch, ctx = toy_setup()
  per_pair = np.asarray(O.per_pair_contrastive(params, batch["forget"], toy_apply, "softmax"))
  lengths = np.asarray((batch["forget"]["tokens"] != 0).sum(-1), float)
  beta, delta = 2.5, 0.1
  expected = -(2 / beta) * np.mean(np.log(1 / (1 + np.exp(-beta * (per_pair / lengths - delta)))))
  np.testing.assert_allclose(O.simnpo("forget", beta, delta, "softmax")(params, batch, ctx)[0],
                             expected,
                             rtol=1e-5)
  # KL([0.5, 0.5] || [0.25, 0.75]) = 0.5 ln 2 + 0.5 ln(2/3).
  kl = O.kl_divergence(jnp.zeros((1, 2)), jnp.log(jnp.array([[0.25, 0.75]])), axis=1)
  np.testing.assert_allclose(kl, 0.5 * np.log(2) + 0.5 * np.log(2 / 3), rtol=1e-6)
  # At the reference the plain distillation terms are exactly zero.
  for loss in (O.logit_kl("retain"), O.embedding_distillation("retain")):
    assert abs(float(loss(params, batch, ctx)[0])) < 1e-6
  # DELETE's target is the reference with the true pair masked: at the reference each
  # row's KL is -log(1 - p(true pair)), so the loss starts positive and pushes p down.
  image_emb, text_emb, log_scale, _ = toy_apply(params, batch["forget"]["image"],
                                                batch["forget"]["tokens"])
  logits = np.exp(float(log_scale)) * np.asarray(image_emb) @ np.asarray(text_emb).T
  true_pair = lambda axis: np.diag(np.exp(logits) / np.exp(logits).sum(axis, keepdims=True))
  expected = -np.log(1 - true_pair(1)).mean() - np.log(1 - true_pair(0)).mean()
  np.testing.assert_allclose(O.masked_logit_distillation("forget")(params, batch, ctx)[0],
                             expected, rtol=1e-4)


@pytest.mark.parametrize("loss", [
    O.logit_kl("retain"), O.masked_logit_distillation("forget"), O.embedding_distillation("retain"),
    O.npo("forget", 0.1, "softmax"), O.matched_similarity_to_permuted("forget"),
    methods.METHODS["vlunlearn"].objective(config_lib.base_config().unlearn.vlunlearn, "softmax"),
    methods.METHODS["scrub"].objective(config_lib.base_config().unlearn.scrub, "softmax"),
], ids=["kl", "masked_kl", "distill", "npo", "permuted", "vlunlearn", "scrub"])
def test_the_reference_model_gets_no_gradient(loss):
  params, batch, ctx = toy_setup()
  moved = jax.tree.map(lambda x: x * 1.1, params)  # Away from the reference: terms are nonzero.

  def through_reference(reference):
    return loss(moved, batch, O.Context(reference, ctx.rng, ctx.step, toy_apply))[0]

  value, reference_grads = jax.value_and_grad(through_reference)(params)
  assert float(value) != 0
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(reference_grads))


class ToyTools:
  """What the runner lends a method's hooks, over the toy model and batch."""

  def __init__(self, params, batch, kind):
    self.steps, self.samples = 3, {"forget": 6, "retain": 0}
    self._grad = lambda p, b: jax.grad(lambda q: losses.contrastive("b", kind)(
        q, {"b": b}, O.Context(None, jax.random.PRNGKey(0), 0, toy_apply))[0])(p)
    self._params, self._batch = params, batch

  def squared_gradients(self, names, count):
    return {name: T.mean_squared_gradients(self._grad, self._params, [self._batch[name]] * count)
            for name in names}


def run_method(name, kind):
  """(loss value or None, finalized params or None) of a method on the toy model."""
  method, hp = methods.METHODS[name], config_lib.base_config().unlearn[name]
  if name == "ssd":
    hp.alpha = 0.0  # Dampen every weight the forget data uses, by the importances' ratio.
  params, batch, ctx = toy_setup()
  batch["forget"]["generic_tokens"] = batch["retain"]["tokens"]
  ctx = dataclasses.replace(ctx, step=jnp.asarray(1))  # SCRUB's min step reads the loss.
  tools, value, params_out = ToyTools(params, batch, kind), None, None
  if method.prepare is not None:
    method.prepare(hp, tools, params)
  if method.objective is not None:
    value, gradient = jax.value_and_grad(
        lambda p: method.objective(hp, kind)(p, batch, ctx)[0])(params)
    assert all(np.isfinite(g).all() for g in jax.tree.leaves(gradient))
  if method.finalize is not None:
    moved = jax.tree.map(lambda x: x * 1.1, params)
    params_out, _ = method.finalize(hp, tools, params, moved, kind)
  return value, params_out


# The methods that edit weights; key deletion needs a memory model (tests/test_memory.py).
POST_HOC = [name for name in methods.METHODS if name != "key_deletion"]


@pytest.mark.parametrize("name", POST_HOC)
def test_every_method_unlearns_a_sigmoid_model_with_the_sigmoid_loss(name, monkeypatch):
  """A model pretrained with train.loss=sigmoid is unlearned with SigLIP's loss wherever a
  method uses the pretraining loss: the softmax loss is never called, and methods with a
  pretraining-loss term (or hooks reading its gradients) give other numbers than under
  softmax."""
  softmax_value, softmax_params = run_method(name, "softmax")

  def refuse(*args):
    raise AssertionError(f"{name} called the softmax loss on a sigmoid model")
  monkeypatch.setitem(losses.LOSSES, "softmax", refuse)
  monkeypatch.setitem(losses.PER_EXAMPLE, "softmax", refuse)
  sigmoid_value, sigmoid_params = run_method(name, "sigmoid")
  monkeypatch.undo()
  reads_the_loss = name not in ("direct_sim_min", "vlunlearn", "delete", "task_vector")
  if sigmoid_value is not None and reads_the_loss:
    assert float(sigmoid_value) != pytest.approx(float(softmax_value), rel=1e-4)
  if name == "ssd":  # Importances of the sigmoid loss: other factors.
    assert T.count_changed(softmax_params, sigmoid_params) > 0


@pytest.mark.slow
def test_the_runner_unlearns_a_sigmoid_model_with_the_sigmoid_loss(
    compromised_run, micro_dataset_dir, tmp_path, monkeypatch):
  """The runner's own pieces (hooks' importances, the one-shot and masked paths) read
  config.train.loss too: with the softmax loss refused, every kind of method runs."""
  config = config_lib.load_config(config_path("micro") + ":compromised",
                                  {"train.loss": "sigmoid"})
  sigmoid_run = str(tmp_path / "sigmoid_compromised")
  loop.train(config, sigmoid_run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1],
             show_progress=False)
  # The loss kind is the checkpoint's: a config that says otherwise is refused, both ways.
  for run, kind, other in ((sigmoid_run, "sigmoid", "softmax"), (compromised_run, "softmax",
                                                                 "sigmoid")):
    with pytest.raises(ConfigError, match=f"was pretrained with train.loss='{kind}', not "
                                          f"'{other}'; unlearn it with --config.train.loss={kind}"):
      runner.Unlearner(config_lib.load_config(config_path("micro"), {"train.loss": other}), run,
                       dataset_dir=micro_dataset_dir, devices=jax.devices()[:1])

  def refuse(*args):
    raise AssertionError("the softmax loss was called on a sigmoid model")
  monkeypatch.setitem(losses.LOSSES, "softmax", refuse)
  monkeypatch.setitem(losses.PER_EXAMPLE, "softmax", refuse)
  unlearner = runner.Unlearner(config, sigmoid_run, dataset_dir=micro_dataset_dir,
                               devices=jax.devices()[:1])
  for name in ("ssd", "salun", "task_vector", "npo"):
    metadata = unlearner.run(name, 0.5, str(tmp_path / name), show_progress=False)
    assert metadata["loss"] == "sigmoid"


def toy_steps(objective, shared=None, sharding=None):
  """(fused, staged) jitted steps of `objective` on the toy model under plain SGD (its
  update is the gradient, so the two steps' parameters differ by their gradients' rounding);
  the state on `sharding` (one device by default)."""
  tx = optax.sgd(0.5)
  params, _, _ = toy_setup()
  state = TrainState(jnp.asarray(3), params, tx.init(params), jax.random.PRNGKey(5))
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shardings = jax.tree.map(lambda _: sharding, state)
  fused = jax.jit(make_train_step(tx, objective, toy_apply))
  staged_step = staged.StagedStep(tx, objective, toy_apply, shardings,
                                  {} if shared is None else shared, fused=lambda: fused,
                                  tx_key="sgd")
  # Each step donates its own copy of the state.
  fresh = lambda: jax.device_put(jax.tree.map(jnp.copy, state), shardings)
  return fused, staged_step, fresh


def toy_batch(n=6):
  _, batch, _ = toy_setup(n=n)
  batch["forget"]["generic_tokens"] = batch["forget"]["tokens"][::-1]
  return batch


@pytest.mark.parametrize("name", [n for n, m in methods.METHODS.items() if m.objective])
def test_a_staged_step_computes_what_the_fused_step_computes(name):
  """Every method's objective runs staged (its model calls as programs shared by all
  methods), with the fused step's loss, metrics and update up to float32 rounding."""
  objective = methods.METHODS[name].objective(config_lib.base_config().unlearn[name], "softmax")
  fused, staged_step, fresh = toy_steps(objective)
  params, _, _ = toy_setup()
  batch = toy_batch()
  expected, got = fresh(), fresh()
  for _ in range(2):  # Steps 3 and 4: SCRUB's descent and ascent (max_every=2).
    expected, expected_metrics = fused(expected, params, batch)
    got, metrics = staged_step(got, params, batch)
    assert staged_step.staged
    assert sorted(metrics) == sorted(expected_metrics)
    for key in expected_metrics:
      np.testing.assert_allclose(metrics[key], expected_metrics[key], rtol=1e-5, atol=1e-6)
  assert int(got.step) == int(expected.step) == 5
  np.testing.assert_array_equal(got.rng, expected.rng)
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(expected.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  moved = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(got.params),
                                                       jax.tree.leaves(params))]
  assert max(moved) > 1e-3  # The step did something to compare.


def test_calls_on_the_same_inputs_run_once():
  """CLIPErase embeds the retain batch for its contrastive and its KL term: one forward and
  one backward pass (their gradients summed first), then the forget batch, then the
  reference on retain."""
  objective = methods.METHODS["clip_erase"].objective(
      config_lib.base_config().unlearn.clip_erase, "softmax")
  _, staged_step, fresh = toy_steps(objective)
  params, _, _ = toy_setup()
  state, batch = fresh(), toy_batch()
  staged_step(fresh(), params, batch)
  assert staged_step.staged
  calls = staged_step._plan(batch, state.rng, state.step, 0.0)
  assert [next(iter(call)) for call in calls] == ["apply", "apply", "reference"]
  np.testing.assert_array_equal(calls[0]["apply"][0], batch["retain"]["image"])
  np.testing.assert_array_equal(calls[1]["apply"][0], batch["forget"]["image"])


def test_methods_share_the_models_programs():
  """The model's forward, backward and the update compile once for every method."""
  shared, batch = {}, toy_batch()
  params, _, _ = toy_setup()
  for name in ("clip_erase", "npo", "scrub", "generic_captions"):
    objective = methods.METHODS[name].objective(config_lib.base_config().unlearn[name], "softmax")
    _, staged_step, fresh = toy_steps(objective, shared)
    staged_step(fresh(), params, batch)
  assert {key[0]: fn._cache_size() for key, fn in shared.items()} == {
      "forward_vjp": 1, "forward": 1, "backward": 1, "add": 1, "update": 1}


@pytest.mark.parametrize("name", ["clip_erase", "vlunlearn"])
def test_a_staged_step_over_a_mesh_computes_the_one_device_step(name):
  """Batches split over a data-parallel mesh of 8 CPU devices, weights replicated: the
  staged step's programs line up their shardings and compute the one-device result."""
  devices = jax.devices()
  assert len(devices) == 8, "conftest forces 8 host devices"
  mesh = jax.sharding.Mesh(np.array(devices), ("data",))
  P = jax.sharding.PartitionSpec
  objective = methods.METHODS[name].objective(config_lib.base_config().unlearn[name], "softmax")
  fused, _, fresh_one = toy_steps(objective)
  _, staged_step, fresh = toy_steps(objective, sharding=jax.sharding.NamedSharding(mesh, P()))
  params, _, _ = toy_setup()
  batch = toy_batch(n=16)
  expected, _ = fused(fresh_one(), params, batch)
  split = jax.device_put(batch, jax.sharding.NamedSharding(mesh, P("data")))
  got, _ = staged_step(fresh(), jax.device_put(params, jax.sharding.NamedSharding(mesh, P())),
                       split)
  assert staged_step.staged
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(expected.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reads", ["weights", "reference_weights", "nothing",
                                   "own_similarities", "reference_similarities"])
def test_a_loss_that_reads_weights_otherwise_runs_fused(reads):
  """A loss that reads its parameters other than through `ctx.apply` (a weight penalty, the
  reference's weights), or whose model-call inputs depend on an earlier call's outputs,
  cannot be staged: it runs fused, with the fused step's result."""
  contrastive = O.contrastive("retain", "softmax")

  def objective(params, batch, ctx):
    if reads == "weights":
      value, aux = contrastive(params, batch, ctx)
      return value + 0.1 * sum(jnp.sum(p ** 2) for p in jax.tree.leaves(params)), aux
    if reads == "reference_weights":
      outputs = ctx.apply(ctx.reference_params, batch["retain"]["image"], batch["retain"]["tokens"])
      value, aux = contrastive(params, batch, ctx)
      return value + jnp.mean(outputs[0]), aux
    if reads == "nothing":
      return jnp.sum(batch["retain"]["image"]), {}
    # Hard negatives: each image's caption replaced by the one a model finds most similar
    # among the others, so the second call's inputs depend on the first call's outputs.
    part = batch["retain"]
    first = (ctx.apply(params, part["image"], part["tokens"]) if reads == "own_similarities"
             else ctx.reference(part["image"], part["tokens"]))
    similarity = first[0] @ first[1].T - 1e9 * jnp.eye(len(part["tokens"]))
    hardest = part["tokens"][jnp.argmax(similarity, axis=1)]
    return contrastive(params, batch | {"retain": part | {"tokens": hardest}}, ctx)

  fused, staged_step, fresh = toy_steps(objective)
  params, _, _ = toy_setup()
  batch = toy_batch()
  expected, _ = fused(fresh(), params, batch)
  got, _ = staged_step(fresh(), params, batch)
  assert staged_step.staged is False
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)


def test_caption_transforms():
  params, batch, ctx = toy_setup()
  seen = {}
  spy = lambda p, b, c: (seen.setdefault("tokens", b["forget"]["tokens"]).sum() * 0.0, {})
  O.permute_captions(spy, "forget")(params, batch, ctx)
  assert sorted(map(tuple, np.asarray(seen["tokens"]))) == \
      sorted(map(tuple, np.asarray(batch["forget"]["tokens"])))
  seen.clear()
  generic = batch | {"forget": batch["forget"] | {"generic_tokens": batch["retain"]["tokens"]}}
  O.with_captions(spy, "forget", "generic_tokens")(params, generic, ctx)
  np.testing.assert_array_equal(seen["tokens"], batch["retain"]["tokens"])


def test_ssd_task_vector_and_saliency_on_a_hand_made_tree():
  params = {"a": jnp.array([1.0, 2.0, 3.0]), "b": jnp.array([[4.0, 5.0]])}
  importance_all = {"a": jnp.array([1.0, 1.0, 1.0]), "b": jnp.array([[1.0, 0.5]])}
  importance_forget = {"a": jnp.array([20.0, 5.0, 40.0]), "b": jnp.array([[0.0, 10.0]])}
  dampened = T.selective_synaptic_dampening(params, importance_all, importance_forget, alpha=10, lam=1)
  np.testing.assert_allclose(dampened["a"], [1.0 / 20, 2.0, 3.0 / 40])  # Only I_f > 10 I_D.
  np.testing.assert_allclose(dampened["b"], [[4.0, 5.0 * 0.5 / 10]])  # 10 > 10 * 0.5: dampened.
  finetuned = {"a": jnp.array([2.0, 2.0, 1.0]), "b": jnp.array([[4.0, 6.0]])}
  negated = T.task_vector_negation(params, finetuned, alpha=0.5)
  np.testing.assert_allclose(negated["a"], [0.5, 2.0, 4.0])
  np.testing.assert_allclose(negated["b"], [[4.0, 4.5]])
  mask = T.saliency_mask({"a": jnp.array([0.1, -5.0, 0.2]), "b": jnp.array([[3.0, 0.0]])}, 0.4)
  assert mask["a"].tolist() == [False, True, False] and mask["b"].tolist() == [[True, False]]
  tx = optimizer.masked_updates()
  assert all(m.all() for m in jax.tree.leaves(tx.init(params).mask))  # Starts moving all.
  updates, _ = tx.update(params, optimizer.UpdateMaskState(mask))
  np.testing.assert_allclose(updates["a"], [0.0, 2.0, 0.0])
  noisy = T.fisher_noise(params, importance_all, jax.random.PRNGKey(0), scale=1e-3)
  assert T.count_changed(params, noisy) == 5


def test_the_jitted_parameter_transforms_compute_the_eager_bits():
  # Each transform is a few jitted programs instead of an op per leaf; fusing
  # t + g * g (or p - a * d) into a multiply-add would round once instead of twice.
  rng = np.random.default_rng(0)
  tree = lambda scale: {"a": jnp.asarray(rng.standard_normal((64, 33)) * scale, jnp.float32),
                        "b": {"c": jnp.asarray(rng.standard_normal(129) * scale, jnp.float32)}}
  params, finetuned, grads = tree(1.0), tree(1.0), [tree(1e-3) for _ in range(5)]
  # Means over 3 batches: a division by 3 is not exact (by 2 or 4 it would be).
  importance = lambda: T.mean_squared_gradients(lambda p, g: g, params, grads[:3])
  other = lambda: T.mean_squared_gradients(lambda p, g: g, params, grads[2:])
  transforms = {
      "importance": importance,
      "mask": lambda: T.saliency_mask(grads[0], 0.3),
      "ssd": lambda: T.selective_synaptic_dampening(params, other(), importance(), 1.3, 0.7),
      "task vector": lambda: T.task_vector_negation(params, finetuned, 0.37)}
  for name, transform in transforms.items():
    jitted = transform()
    with jax.disable_jit():
      eager = transform()
    assert jax.tree.structure(jitted) == jax.tree.structure(eager), name
    for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
      assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b)), name
  assert T.count_true(T.saliency_mask(grads[0], 0.3)) == round(0.3 * (64 * 33 + 129))


def test_the_data_layer_refuses_holdout_and_unseen_splits():
  for split in ("holdout_association", "holdout_identity", "unseen_identity"):
    with pytest.raises(DatasetError, match=f"may not read split\\(s\\) \\['{split}'\\]"):
      pipeline.require_unlearning_splits([split])
  pipeline.require_unlearning_splits(["forget", "retain_joint", "retain_disjoint"])


@pytest.fixture(scope="module")
def compromised_run(micro_dataset_dir, tmp_path_factory):
  """A micro Compromised trained long enough to hold some associations."""
  config = config_lib.load_config(config_path("micro") + ":compromised", {
      "train.steps": 40, "train.sensitive_exposures": 2.0, "train.eval_every": 40,
      "train.checkpoint_every": 40})
  run = str(tmp_path_factory.mktemp("compromised"))
  loop.train(config, run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1], show_progress=False)
  return run


def forget_similarity(config, run, dataset_dir) -> tuple:
  runtime = runtime_lib.setup(config, run, dataset_dir, jax.devices()[:1])
  state = checkpointing.restore(
      run, runtime.abstract_state(), signature=runtime.signature, reference=None)[0]
  encoders = embed.make_encoders(runtime.graphdef, runtime.state_shardings.params, runtime.mesh)
  batches = pipeline.eval_batches(runtime.dataset, ["forget"], runtime.tokenizer,
                                  config.data.image_size, 64)
  image, text, _ = embed.embed_batches(encoders, state.params, batches)
  return float(metrics.paired_cosine(image, text).mean()), metrics.cosine_margin(image, text)


class GuardedSplits(dict):
  """Fails the test if anything reads a holdout or unseen split."""
  def __getitem__(self, name):
    if name not in pipeline.UNLEARNING_SPLITS:
      raise AssertionError(f"unlearning read split {name}")
    return super().__getitem__(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(POST_HOC))
def test_every_method_moves_in_its_expected_direction(name, compromised_run, micro_dataset_dir,
                                                      tmp_path, monkeypatch):
  # At micro scale and 2 passes, a retain contrastive term (which raises every similarity
  # of an under-trained model) can outweigh the forgetting term, so the direction under
  # test is the forgetting term's: each method's `retain_weight` is set to 0. finetune is
  # all retain term and is checked on its own loss instead.
  base = config_lib.base_config().unlearn
  overrides = {f"unlearn.{m}.retain_weight": 0.0 for m in methods.METHODS
               if "retain_weight" in base[m]}
  config = config_lib.load_config(config_path("micro"), overrides)
  opened = layout.open_dataset
  monkeypatch.setattr(layout, "open_dataset", lambda *a, **k: (
      lambda d: setattr(d, "splits", GuardedSplits(d.splits)) or d)(opened(*a, **k)))
  before = forget_similarity(config, compromised_run, micro_dataset_dir)
  # SCRUB's max step ascends KL(teacher || student), whose gradient is zero while the
  # student equals the teacher: forgetting starts only after min steps moved it.
  budget = 4.0 if name == "scrub" else 2.0
  out = str(tmp_path / name)
  metadata = runner.unlearn(config, name, budget, compromised_run, out,
                             dataset_dir=micro_dataset_dir, devices=jax.devices()[:1],
                             show_progress=False)
  monkeypatch.undo()
  after = forget_similarity(config, out, micro_dataset_dir)
  meta = checkpointing.read_meta(checkpointing.manager(out), checkpointing.steps(out)[-1], out)
  assert meta["details"]["method"] == name and meta["stage"] == "unlearn"
  # Trained on Compromised's dataset; unlearned on this one (the same here).
  original = checkpointing.read_meta(checkpointing.manager(compromised_run),
                                     checkpointing.steps(compromised_run)[-1], compromised_run)
  assert meta["dataset"] == original["dataset"] == meta["details"]["unlearned_on"]
  assert meta["details"]["allow_other_dataset"] is False
  on_disk = json.load(open(os.path.join(out, runner.METADATA_FILE)))
  assert on_disk["method"] == name and on_disk["budget"] == budget
  if name == "finetune":  # Never reads forget data: its own objective must improve.
    assert metadata["final_metrics"]["loss"] < metadata["final_metrics"]["first_loss"]
  elif name == "delete":  # Lowers the true pair's in-batch probability, i.e. its margin
    assert after[1] < before[1], (name, before, after)  # over the other captions.
  else:
    assert after[0] < before[0], (name, before, after)
  if metadata["steps"]:
    per_step = sum(metadata[f"{n}_batch"] for n in metadata["reads"])
    total = metadata["samples_processed"]["total"]  # The saliency batch included.
    assert total == metadata.get("saliency_samples", 0) + metadata["steps"] * per_step
    assert total <= budget * 64  # Within budget x 64 pairs.


def test_ssd_dampens_what_the_forget_data_uses_beyond_the_retain_data():
  """I_f from the forget batches, I_D from the retain batches (not the other way round)."""
  importances = {"forget": {"a": jnp.array([9.0]), "b": jnp.array([1.0])},
                 "retain": {"a": jnp.array([0.1]), "b": jnp.array([1.0])}}
  tools = types.SimpleNamespace(steps=1, squared_gradients=lambda names, count: importances)
  trained = {"a": jnp.array([2.0]), "b": jnp.array([2.0])}
  hp = config_lib.base_config().unlearn.ssd
  params, details = methods.METHODS["ssd"].finalize(hp, tools, trained, trained, "softmax")
  assert float(params["a"][0]) == pytest.approx(2.0 * hp.lam * 0.1 / 9.0)  # Dampened.
  assert float(params["b"][0]) == 2.0 and details["weights_changed"] == 1  # Kept.


def test_budget_arithmetic():
  assert runner.budget_steps(5, 1024, 128) == 40
  assert runner.budget_steps(1, 64, 16) == 4
  assert runner.budget_steps(0.01, 64, 16) == 1
  # A budget worth a whole step keeps the configured batches...
  assert runner.step_batches(1, 512, ("forget", "retain"), 64, 64, 1) == {"forget": 64, "retain": 64}
  assert runner.step_batches(1, 512, ("retain",), 64, 32, 1) == {"retain": 32}
  # ...a smaller request shrinks them in proportion, to the data-parallel multiple, so
  # that its one step costs at most B x its pairs where the mesh allows it.
  assert runner.step_batches(1, 50, ("forget", "retain"), 64, 64, 1) == {"forget": 25, "retain": 25}
  assert runner.step_batches(1, 50, ("forget", "retain"), 64, 64, 8) == {"forget": 24, "retain": 24}
  assert runner.step_batches(1, 4, ("forget", "retain"), 8, 8, 8) == {"forget": 8, "retain": 8}
  assert runner.step_batches(1, 3, ("forget", "retain"), 8, 8, 1) == {"forget": 2, "retain": 2}
  assert runner.step_batches(1, 3, ("forget",), 1, 8, 1) == {"forget": 1}  # As configured.
  # A hook's draw before the steps is planned for: SalUn's saliency batch and one step.
  assert runner.step_batches(1, 50, ("forget", "retain"), 64, 64, 1, ("forget",)) == {
      "forget": 16, "retain": 16}


def test_bad_requests_are_refused(compromised_run, micro_dataset_dir, tmp_path):
  config = config_lib.load_config(config_path("micro"))
  run = lambda method, budget, source: runner.unlearn(
      config, method, budget, source, str(tmp_path / "out"), dataset_dir=micro_dataset_dir,
      devices=jax.devices()[:1], show_progress=False)
  with pytest.raises(ConfigError, match="unknown method 'forgetful'; known: clip_erase, delete"):
    run("forgetful", 1.0, compromised_run)
  for budget in (0, -1.0, float("nan"), True):
    with pytest.raises(ConfigError, match="must be a positive number"):
      run("neg_grad", budget, compromised_run)
  with pytest.raises(ConfigError, match="--budget=1e\\+09 passes exceeds the bound of 1000"):
    run("neg_grad", 1e9, compromised_run)  # 4e9 steps: years, almost surely a typo.
  with pytest.raises(ConfigError, match="--budget=0.001 x .* forget pairs buys less than one"):
    run("neg_grad", 0.001, compromised_run)
  clean = config_lib.load_config(config_path("micro") + ":clean")
  loop.train(clean, str(tmp_path / "clean"), dataset_dir=micro_dataset_dir,
              devices=jax.devices()[:1], stop_after=1, show_progress=False)
  with pytest.raises(ConfigError, match="holds a clean checkpoint, not compromised"):
    run("neg_grad", 1.0, str(tmp_path / "clean"))
  with pytest.raises(ConfigError, match="holds no checkpoint"):
    run("neg_grad", 1.0, str(tmp_path / "empty"))
  with pytest.raises(ConfigError, match="unlearn.npo.beta='high' has the wrong type"):
    config_lib.load_config(config_path("micro"), {"unlearn.npo.beta": "high"})


def test_cli_wrong_type_is_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "salmu_jax.unlearn", f"--config={config_path('micro')}",
       "--method=npo", "--budget=-2", f"--from={tmp_path}", f"--workdir={tmp_path / 'o'}"],
      capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS=""), cwd=REPO)
  assert result.returncode == 2 and result.stderr.strip().endswith("must be a positive number of forget passes")


def test_readme_example_runs_as_written():
  text = open(os.path.join(REPO, "README.md")).read()
  block = re.search(r"<!-- example:start -->\n```python\n(.*?)```\n<!-- example:end -->", text, re.S)
  code = block.group(1)
  assert len(code.strip().splitlines()) <= 24
  namespace = {}
  exec(compile(code, "README example", "exec"), namespace)
  np.testing.assert_allclose(namespace["aux"]["npo_forget"], 20 * np.log(2), rtol=1e-6)
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(namespace["grads"]))


def request_cases(dataset_dir):
  """Persona ids of each role in the micro dataset, and one forgotten and one kept field."""
  personas = json.load(open(os.path.join(dataset_dir, "personas.json")))
  by_role = {}
  for p in personas:
    by_role.setdefault(p["role"], p)
  partial = by_role["forget_association"]
  kept = next(f for f in config_lib.SENSITIVE_FIELDS if f not in partial["forgotten_fields"])
  return by_role, partial["identity"], partial["forgotten_fields"][0], kept


def test_deletion_requests_are_checked_before_anything_runs(compromised_run, micro_dataset_dir,
                                                            tmp_path):
  by_role, partial, forgotten, kept = request_cases(micro_dataset_dir)
  config = config_lib.load_config(config_path("micro"))
  unlearner = runner.Unlearner(config, compromised_run, dataset_dir=micro_dataset_dir,
                                devices=jax.devices()[:1])
  holdout, unseen = by_role["holdout_identity"]["identity"], by_role["unseen_identity"]["identity"]
  for entries, message in [
      ([], "--forget is empty"),
      ([9999], "identity 9999, which does not exist"),
      ([holdout], f"identity {holdout}, which is in holdout_identity"),
      ([unseen], f"identity {unseen}, which is in unseen_identity"),
      ([(partial, kept)], f"\\({partial}, '{kept}'\\), which is in holdout_association"),
      ([(partial, "shoe_size")], "field 'shoe_size'; known: "),
      ([partial, partial], f"names {partial} twice"),
  ]:
    with pytest.raises(requests.RequestError, match=message):
      unlearner.run("neg_grad", 1.0, str(tmp_path / "out"), forget_request=entries, show_progress=False)
    assert not (tmp_path / "out").exists()  # Nothing written, nothing partially applied.
  for text, message in (("7\nseven\n", "'seven' is not an identity id"),
                        ("[Infinity]", "inf is not an identity id"),
                        ("[true]", "True is not an identity id"),  # Not identity 1.
                        ("[7.5]", "7.5 is not an identity id"),
                        ("[[7, 3]]", "is not an \\[identity, field\\] pair")):
    (tmp_path / "bad.txt").write_text(text)
    with pytest.raises(requests.RequestError, match=message):
      requests.read_request(str(tmp_path / "bad.txt"))
  (tmp_path / "bad.txt").write_text("\u00b2\n")  # A digit to str.isdigit, not to int().
  with pytest.raises(requests.RequestError, match="'\u00b2' is not an identity id"):
    requests.read_request(str(tmp_path / "bad.txt"))
  (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf[0, [1, \"iban\"]]")  # Saved with a BOM.
  assert requests.read_request(str(tmp_path / "bom.json")) == [0, (1, "iban")]
  (tmp_path / "binary").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
  with pytest.raises(requests.RequestError, match="is not text"):
    requests.read_request(str(tmp_path / "binary"))
  (tmp_path / "ok.txt").write_text("12\n7,iban\n")
  assert requests.read_request(str(tmp_path / "ok.txt")) == [12, (7, "iban")]
  with pytest.raises(requests.RequestError, match="cannot read the deletion request"):
    requests.read_request(str(tmp_path / "missing.json"))
  result = subprocess.run(  # The CLI: one line, exit 2.
      [sys.executable, "-m", "salmu_jax.unlearn", f"--config={config_path('micro')}",
       "--method=npo", f"--from={compromised_run}", f"--workdir={tmp_path / 'cli'}",
       f"--dataset_dir={micro_dataset_dir}", f"--forget={tmp_path / 'missing.json'}"],
      capture_output=True, text=True, env=dict(os.environ, XLA_FLAGS=""), cwd=REPO)
  assert result.returncode == 2 and "cannot read the deletion request" in result.stderr
  assert "Traceback" not in result.stderr and not (tmp_path / "cli").exists()


def test_an_output_directory_holding_a_run_is_refused_before_any_work(
    compromised_run, micro_dataset_dir, tmp_path):
  config = config_lib.load_config(config_path("micro"))
  listing = lambda d: sorted(str(p.relative_to(d)) for p in pathlib.Path(d).rglob("*"))
  before = listing(compromised_run)
  unlearner = runner.Unlearner(config, compromised_run, dataset_dir=micro_dataset_dir,
                                devices=jax.devices()[:1])
  with pytest.raises(ConfigError, match="is the Compromised run itself"):
    unlearner.run("neg_grad", 1.0, compromised_run, show_progress=False)
  assert listing(compromised_run) == before
  out = tmp_path / "npo_1x"
  unlearner.run("npo", 1.0, str(out), show_progress=False)
  finished = (out / runner.METADATA_FILE).read_text()
  with pytest.raises(ConfigError, match="already holds a run \\(checkpoints, unlearn.json\\)"):
    unlearner.run("neg_grad", 1.0, str(out), show_progress=False)
  assert (out / runner.METADATA_FILE).read_text() == finished


def test_a_run_that_ends_non_finite_writes_nothing(compromised_run, micro_dataset_dir, tmp_path,
                                                   monkeypatch):
  # One step whose update blows up: its loss is still finite (computed before the
  # update), the parameters after it are not.
  from salmu_jax.errors import NonFiniteModel
  from tests.test_train import blow_up_every_update
  blow_up_every_update(monkeypatch)
  config = config_lib.load_config(config_path("micro"))
  out = tmp_path / "nan_run"
  with pytest.raises(NonFiniteModel, match="the finetune model at budget 0.1 has non-finite "
                                           "parameters.*nothing was written"):
    runner.unlearn(config, "finetune", 0.1, compromised_run, str(out),
                    dataset_dir=micro_dataset_dir, devices=jax.devices()[:1], show_progress=False)
  assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_unlearners_of_other_seeds_share_one_step_and_get_the_same_result(
    compromised_run, micro_dataset_dir, tmp_path):
  compiled, final = {}, {}
  for seed, cache in ((0, compiled), (1, compiled), (1, None)):
    config = config_lib.load_config(config_path("micro"), {"seed": seed})
    unlearner = runner.Unlearner(config, compromised_run, dataset_dir=micro_dataset_dir,
                                  devices=jax.devices()[:1], compiled=cache)
    final[seed, cache is None] = unlearner.run(
        "neg_grad", 1.0, str(tmp_path / f"{seed}_{cache is None}"), show_progress=False)["final_metrics"]
  (scoped,) = compiled.values()  # One model and mesh: one scope.
  assert len([key for key in scoped if key[0] == "step"]) == 1  # Both seeds, one step.
  assert final[1, False] == final[1, True]  # Shared or not, the same arithmetic.
  assert final[0, False] != final[1, False]  # The seed still sets the data order.


def compiled_programs(step) -> int:
  """How many programs a StagedStep's jitted functions hold (the shared ones too)."""
  return sum(program._cache_size() for program in step.programs())


@pytest.mark.slow
def test_the_relearning_attack_runs_the_unlearning_steps_model_programs(
    compromised_run, micro_dataset_dir, tmp_path):
  """The benchmark's evaluator and Unlearners share one store (Evaluator's `compiled`): the
  attack's fine-tune compiles the model's forward, backward and update, and an unlearning
  run on batches of the same shapes calls those programs instead of compiling its own;
  sharing changes no number of the attack or of the run."""
  from salmu_jax.evaluation.evaluator import Evaluator
  config = config_lib.load_config(config_path("micro"))
  compiled = {}
  unlearner = runner.Unlearner(config, compromised_run, dataset_dir=micro_dataset_dir,
                               devices=jax.devices()[:1], compiled=compiled)
  params = unlearner.original.params
  attack = lambda evaluator: evaluator.score(params, attacks="relearn")["attacks"]["relearn"]
  shared = attack(Evaluator(unlearner.runtime, compiled=compiled))
  (scope,) = compiled.values()  # One model and mesh: the Unlearner's scope.
  programs = {key[0]: fn for key, fn in scope[("staged",)].items()}
  assert {"forward_vjp", "backward", "update"} <= set(programs)
  keys, sizes = set(scope[("staged",)]), {name: fn._cache_size() for name, fn in programs.items()}
  run = lambda unlearner: unlearner.run("neg_grad", 1.0, str(tmp_path / str(id(unlearner))),
                                        show_progress=False)["final_metrics"]
  after_attack = run(unlearner)
  (step,) = [fn for key, fn in scope.items() if key[:2] == ("step", "neg_grad")]
  assert step.staged and set(scope[("staged",)]) == keys  # It ran the shared programs,
  assert {name: fn._cache_size() for name, fn in programs.items()} == sizes  # compiled once.
  alone = attack(Evaluator(runtime_lib.setup(config, compromised_run, micro_dataset_dir,
                                             jax.devices()[:1])))
  assert without_timings(shared) == without_timings(alone)
  unshared = runner.Unlearner(config, compromised_run, dataset_dir=micro_dataset_dir,
                              devices=jax.devices()[:1])
  assert after_attack == run(unshared)


@pytest.mark.slow
def test_a_warmed_step_is_the_one_the_run_takes_with_the_same_result(
    compromised_run, micro_dataset_dir, tmp_path):
  """The benchmark compiles the next methods' steps in the background (Unlearner.warm):
  the run must then call that program, not compile another, and end where a cold run does."""
  config = config_lib.load_config(config_path("micro"))
  make = lambda: runner.Unlearner(config, compromised_run, dataset_dir=micro_dataset_dir,
                                  devices=jax.devices()[:1])
  unlearner = make()
  runtime = unlearner.runtime
  restore = lambda name: checkpointing.restore(str(tmp_path / name), runtime.abstract_state(),
                                               signature=runtime.signature, reference=None)
  assert not unlearner.warm("ssd", 1.0)  # One-shot: no step.
  # SalUn's saliency mask is an input of its step (in the optimizer state), not a constant:
  # it is warmed with an all-True mask, and its runs at both budgets take that program.
  for method, budget in (("npo", 5.0), ("salun", 1.0)):
    assert unlearner.warm(method, budget)
    (step,) = [fn for key, fn in unlearner._compiled.items() if key[:2] == ("step", method)]
    assert step.staged  # Its programs are compiled, one each (the shared ones too).
    assert [program._cache_size() for program in step.programs()] == [1] * 7
    programs = compiled_programs(step)
    warmed = unlearner.run(method, budget, str(tmp_path / f"{method}_warmed"),
                           show_progress=False)
    assert compiled_programs(step) == programs  # The run called the warmed programs.
    cold = make().run(method, budget, str(tmp_path / f"{method}_cold"), show_progress=False)
    assert warmed["final_metrics"] == cold["final_metrics"]
    checksums = [restore(f"{method}_{kind}")[1]["checksums"] for kind in ("warmed", "cold")]
    assert checksums[0] == checksums[1]  # Bit-identical parameters.
  other_mask = unlearner.run("salun", 5.0, str(tmp_path / "salun_5x"), show_progress=False)
  assert compiled_programs(step) == programs  # Another budget and mask: the same programs.
  moved = T.count_changed(unlearner.original.params, restore("salun_5x")[0].params)
  assert 0 < moved <= other_mask["salient_weights"]  # Only salient weights moved.


@pytest.mark.slow
def test_runs_replaying_recorded_batches_equal_runs_that_draw_their_own(
    compromised_run, micro_dataset_dir, tmp_path, monkeypatch):
  """The benchmark's runs of one seed share pipeline.RecordedStreams: a run must get the
  very batches it would have drawn, replayed or continued from where the recording ends."""
  config = config_lib.load_config(config_path("micro"))
  make = lambda streams=None: runner.Unlearner(
      config, compromised_run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1],
      streams=streams)
  shared = make(pipeline.RecordedStreams(64))
  runs = {"first": shared.run("grad_diff", 1.0, str(tmp_path / "first"), show_progress=False)}
  started, iterate = [], pipeline.iterate
  monkeypatch.setattr(pipeline, "iterate", lambda *a, **k: started.append(a) or iterate(*a, **k))
  runs["replayed"] = shared.run("grad_diff", 1.0, str(tmp_path / "replayed"), show_progress=False)
  assert not started  # Every batch of the second run was replayed.
  runs["longer"] = shared.run("grad_diff", 5.0, str(tmp_path / "longer"), show_progress=False)
  assert len(started) == 2  # Forget and retain, each continued where the recording ends.
  runs["cold"] = make().run("grad_diff", 5.0, str(tmp_path / "cold"), show_progress=False)
  runtime = shared.runtime
  checksums = {name: checkpointing.restore(str(tmp_path / name), runtime.abstract_state(),
                                           signature=runtime.signature,
                                           reference=None)[1]["checksums"] for name in runs}
  assert checksums["replayed"] == checksums["first"] and checksums["longer"] == checksums["cold"]
  assert runs["longer"]["final_metrics"] == runs["cold"]["final_metrics"]
  assert runs["longer"]["samples_processed"] == runs["cold"]["samples_processed"]


def test_a_deletion_request_unlearns_only_its_pairs(compromised_run, micro_dataset_dir, tmp_path):
  by_role, partial, forgotten, _ = request_cases(micro_dataset_dir)
  whole = by_role["forget_identity"]["identity"]
  (tmp_path / "request.txt").write_text(f"# two deletion requests\n{whole}\n{partial}, {forgotten}\n")
  entries = requests.read_request(str(tmp_path / "request.txt"))
  assert entries == [whole, (partial, forgotten)]
  config = config_lib.load_config(config_path("micro"))
  runtime = runtime_lib.setup(config, compromised_run, micro_dataset_dir, jax.devices()[:1])
  indices = requests.resolve_request(runtime.dataset, entries)
  forget = [layout.record_metadata(runtime.dataset.splits["forget"][i])
            for i in range(len(runtime.dataset.splits["forget"]))]
  expected = [i for i, r in enumerate(forget) if r["identity"] == whole
              or (r["identity"], r["field"]) == (partial, forgotten)]
  assert indices.tolist() == expected
  batch = pipeline.forget_batches(config, runtime.dataset, runtime.tokenizer, 8, seed=0,
                                  indices=indices)[0]
  assert set(batch["identity"].tolist()) <= {whole, partial}
  metadata = runner.unlearn(config, "neg_grad", 2.0, compromised_run, str(tmp_path / "out"),
                             dataset_dir=micro_dataset_dir, devices=jax.devices()[:1],
                             show_progress=False, forget_request=entries)
  assert metadata["request"] == {"entries": [whole, [partial, forgotten]],
                                 "forget_pairs": len(expected)}
  assert metadata["forget_size"] == len(expected)
  assert metadata["samples_processed"]["forget"] <= max(2 * len(expected), 8)



@pytest.mark.slow
def test_scoring_while_the_checkpoint_is_written_equals_scoring_it_read_back(
    compromised_run, micro_dataset_dir, tmp_path):
  """The benchmark scores an unlearned model from memory while orbax writes it
  (`while_saving`): the same result as reading the checkpoint back, the same model as a
  run without it."""
  from salmu_jax.evaluation import evaluator as evaluator_lib
  config = config_lib.load_config(config_path("micro"))
  unlearner = runner.Unlearner(config, compromised_run, dataset_dir=micro_dataset_dir,
                               devices=jax.devices()[:1])
  evaluator = evaluator_lib.Evaluator(unlearner.runtime)
  out = str(tmp_path / "scored")
  seen = {}

  def score(params, meta, step):
    seen["written_yet"] = os.path.exists(os.path.join(out, runner.METADATA_FILE))
    return evaluator.score_saved(out, params, meta, step)

  metadata, scored = unlearner.run("grad_diff", 1.0, out, show_progress=False,
                                   while_saving=score)
  assert seen == {"written_yet": False}  # unlearn.json marks a finished run: written after.
  read_back = evaluator.score_checkpoint(out)
  for group in ("efficacy", "utility", "extended", "breakdown"):
    assert scored[group] == read_back[group]
  assert {k: v for k, v in scored["meta"].items() if k != "seconds"} == \
      {k: v for k, v in read_back["meta"].items() if k != "seconds"}
  plain = unlearner.run("grad_diff", 1.0, str(tmp_path / "plain"), show_progress=False)
  assert metadata["final_metrics"] == plain["final_metrics"]


def test_a_run_continued_from_an_unlearned_model_uses_it_in_every_role(
    compromised_run, micro_dataset_dir, tmp_path, monkeypatch):
  """Sustainability's chain: NPO's frozen reference and task_vector's original are the
  previous request's model, not Compromised."""
  config = config_lib.load_config(config_path("micro"))
  unlearner = runner.Unlearner(config, compromised_run, dataset_dir=micro_dataset_dir,
                               devices=jax.devices()[:1])
  upstream = str(tmp_path / "upstream")
  unlearner.run("neg_grad", 1.0, upstream, show_progress=False)
  start = checkpointing.restore(upstream, unlearner.runtime.abstract_state(),
                                signature=unlearner.runtime.signature, reference=None)[0].params
  seen = {}
  optimize = runner.optimize
  monkeypatch.setattr(runner, "optimize", lambda runtime, config, compiled, state, reference,
                      *args, **kwargs: (seen.setdefault("npo_reference", reference),
                                        optimize(runtime, config, compiled, state, reference,
                                                 *args, **kwargs))[1])
  unlearner.run("npo", 1.0, str(tmp_path / "npo"), show_progress=False, start_dir=upstream)
  task_vector = runner.methods.METHODS["task_vector"]
  def finalize(hp, tools, original, params, kind):
    seen["task_vector_original"] = original
    return task_vector.finalize(hp, tools, original, params, kind)
  monkeypatch.setitem(runner.methods.METHODS, "task_vector",
                      dataclasses.replace(task_vector, finalize=finalize))
  unlearner.run("task_vector", 1.0, str(tmp_path / "task_vector"), show_progress=False,
                start_dir=upstream)
  same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  for role in ("npo_reference", "task_vector_original"):
    assert same(seen[role], start), role
    assert not same(seen[role], unlearner.original.params), role


def test_every_sample_a_run_draws_counts_against_its_budget(compromised_run, micro_dataset_dir,
                                                              tmp_path):
  """SalUn's saliency batch and SSD's importance batches come out of the budget; a request
  too small for the smallest batches is run at them and flagged."""
  by_role, partial, forgotten, _ = request_cases(micro_dataset_dir)
  entries = [by_role["forget_identity"]["identity"], (partial, forgotten)]
  config = config_lib.load_config(config_path("micro"))
  unlearner = runner.Unlearner(config, compromised_run, dataset_dir=micro_dataset_dir,
                               devices=jax.devices()[:1])
  run = lambda method, budget, request=None: unlearner.run(
      method, budget, str(tmp_path / f"{method}_{budget}_{request is None}"), show_progress=False,
      forget_request=request)
  for method in ("salun", "ssd"):
    for budget in (1.0, 3.0):
      metadata = run(method, budget)
      assert metadata["samples_processed"]["total"] <= metadata["budget_samples"], metadata
      assert not metadata["over_budget"]
  pairs = len(requests.resolve_request(unlearner.runtime.dataset, entries))
  small = run("salun", 1.0, entries)  # Saliency batch and one step, shrunk to fit.
  assert small["samples_processed"]["total"] <= pairs and not small["over_budget"], small
  tight = run("grad_diff", 3 / pairs, entries)  # 3 samples: less than 2 + 2.
  assert tight["forget_batch"] == tight["retain_batch"] == 2 and tight["over_budget"]
