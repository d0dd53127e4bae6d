"""The key-value memory CLIP (model.clip.Memory) and key deletion (docs/protocol.md §8)."""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from salmu_jax import benchmark, config as config_lib, embed, io_utils, losses
from salmu_jax.data import pipeline, requests
from salmu_jax.errors import ConfigError
from salmu_jax.model import factory, sharding
from salmu_jax.training import loop, memory
from salmu_jax.unlearning import runner
from tests.test_model import encode_image, encode_text

ROWS = 24


def memory_config(micro_config, **memory):
  micro_config.model.memory.enabled = True
  micro_config.model.memory.update(memory)
  return config_lib.check_config(micro_config)


def written_model(config, seed=0):
  """A random memory model whose rows are keyed by its own towers' embeddings of ROWS
  random pairs, with random values, every row valid; and those pairs."""
  model = factory.build(config, 64, jax.random.PRNGKey(seed), memory_rows=ROWS)
  rng = np.random.default_rng(seed)
  size = config.data.image_size
  images = rng.integers(0, 256, (ROWS, size, size, 3)).astype(np.uint8)
  tokens = rng.integers(1, 63, (ROWS, 8)).astype(np.int32)
  tokens[:, -1] = 63  # The end-of-text token: the largest id.
  model.memory.image_keys[...] = model.image_address(images)
  model.memory.text_keys[...] = model.text_address(tokens)
  model.memory.values[...] = jnp.asarray(rng.normal(size=(ROWS, config.model.embed_dim)),
                                          jnp.float32)
  model.memory.valid[...] = jnp.ones(ROWS)
  return model, images, tokens


def encode(model, images, tokens):
  return np.asarray(encode_image(model, images)), np.asarray(encode_text(model, tokens))


def test_deleting_a_key_changes_exactly_the_queries_within_its_reach(micro_config):
  config = memory_config(micro_config, min_similarity=0.95)
  model, images, tokens = written_model(config)
  images[1] = images[5]  # A copy of the deleted pair's image: within its reach.
  tokens[2] = tokens[5]
  before = encode(model, images, tokens)
  graphdef, params = nnx.split(model)
  deleted_row = 5
  deleted, was_valid = memory.delete_rows(params, [deleted_row])
  assert was_valid == 1 and memory.delete_rows(deleted, [deleted_row])[1] == 0
  after = encode(nnx.merge(graphdef, deleted), images, tokens)
  for tower, (address, keys) in enumerate(((model.image_address(images), model.memory.image_keys),
                                            (model.text_address(tokens), model.memory.text_keys))):
    reach = np.asarray(address @ keys[...][deleted_row]) >= 0.95
    changed = np.any(before[tower] != after[tower], axis=1)
    assert reach[deleted_row] and changed[deleted_row]
    np.testing.assert_array_equal(changed, reach)  # Others bit-identical.
    assert not reach.all()
  # The caller's parameters are not mutated.
  np.testing.assert_array_equal(encode(nnx.merge(graphdef, params), images, tokens)[0], before[0])


def test_deleting_every_key_equals_an_empty_memory_and_the_towers_alone(micro_config):
  config = memory_config(micro_config)
  model, images, tokens = written_model(config)
  graphdef, params = nnx.split(model)
  deleted_params, _ = memory.delete_rows(params, np.arange(ROWS))
  deleted = nnx.merge(graphdef, deleted_params)
  empty = factory.build(config, 64, jax.random.PRNGKey(0), memory_rows=ROWS)  # Never written.
  # Nothing of the deleted pairs stays in the parameters: setting `valid` back reads nothing.
  for name in ("image_keys", "text_keys", "values", "valid"):
    np.testing.assert_array_equal(deleted_params["memory"][name][...],
                                  nnx.state(empty)["memory"][name][...])
  for a, b in zip(encode(deleted, images, tokens), encode(empty, images, tokens)):
    np.testing.assert_array_equal(a, b)
  micro_config.model.memory.enabled = False
  plain = factory.build(micro_config, 64, jax.random.PRNGKey(0))
  for a, b in zip(encode(deleted, images, tokens), encode(plain, images, tokens)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  with pytest.raises(ValueError, match="outside the memory's 24 rows"):
    memory.delete_rows(params, [ROWS])


def test_a_key_nobody_is_near_reads_nothing_and_only_values_learn(micro_config):
  config = memory_config(micro_config)
  model, images, tokens = written_model(config)
  # Far from every key (the negated keys): the null row wins, the towers' embedding stays.
  far = -model.memory.image_keys[...]
  assert float(jnp.abs(model.memory.weights(far, model.memory.image_keys[...])).max()) == 0.0
  graphdef, params = nnx.split(model)

  def loss(p, rows):  # The pretraining loss, as the trainer calls it.
    ctx = losses.Context(None, jax.random.PRNGKey(0), 0, factory.apply_fn(graphdef))
    batch = {"train": {"image": images, "tokens": tokens, "memory_row": rows}}
    return losses.contrastive("train", "softmax")(p, batch, ctx)[0]

  gradients = jax.jit(jax.grad(loss))
  held = gradients(params, jnp.arange(ROWS, dtype=jnp.int32))  # trains="memory"
  leaves = lambda tree, inside: [np.abs(np.asarray(x)).max() for path, x in
                                 jax.tree_util.tree_leaves_with_path(tree)
                                 if ("memory" in jax.tree_util.keystr(path)) == inside
                                 and "logit_scale" not in jax.tree_util.keystr(path)]
  # Held pairs reach no weight but the learned temperature (docs/protocol.md §8).
  assert max(leaves(held, False)) == 0.0
  assert float(held["logit_scale"][...]) != 0.0
  assert np.abs(np.asarray(held["memory"]["values"][...])).max() > 0
  for name in ("image_keys", "text_keys", "valid"):
    assert np.abs(np.asarray(held["memory"][name][...])).max() == 0.0
  not_held = gradients(params, jnp.full((ROWS,), -1, jnp.int32))
  assert max(leaves(not_held, False)) > 0
  micro_config.model.memory.trains = "shared"  # The weights learn from held pairs too.
  graphdef, _ = nnx.split(factory.build(micro_config, 64, jax.random.PRNGKey(0), ROWS))
  # A new jit: `loss` reads the new graphdef only when traced again.
  shared = jax.jit(jax.grad(loss))(params, jnp.arange(ROWS, dtype=jnp.int32))
  assert max(leaves(shared, False)) > 0


def test_the_memory_shards_its_rows_over_the_mesh_and_matches_one_device(micro_config):
  config = memory_config(micro_config)
  model, images, tokens = written_model(config)
  graphdef, params = nnx.split(model)
  results = []
  for mesh_config in ({"data": 1, "fsdp": 1, "tensor": 1}, {"data": 1, "fsdp": 8, "tensor": 1}):
    devices = jax.devices()[:8 if mesh_config["fsdp"] == 8 else 1]
    mesh = sharding.make_mesh(mesh_config, devices)
    shardings = sharding.state_shardings(params, mesh)
    placed = jax.device_put(params, shardings)
    if mesh_config["fsdp"] == 8:
      assert placed["memory"]["values"][...].sharding.spec[0] == "fsdp"
      assert len(placed["memory"]["values"][...].addressable_shards) == 8
    encoders = embed.make_encoders(graphdef, shardings, mesh)
    results.append((embed.embed_images(encoders, placed, images),
                    np.asarray(embed._padded_call(encoders.text, placed, tokens, mesh))))
  for a, b in zip(*results):
    np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.parametrize("overrides, message", [
    ({"temperature": 0.0}, "model.memory.temperature=0.0"),
    ({"min_similarity": 1.0}, "model.memory.min_similarity=1.0"),
    ({"value_scale": -1.0}, "model.memory.value_scale=-1.0"),
    ({"trains": "weights"}, "model.memory.trains='weights'"),
])
def test_bad_memory_settings_are_named(micro_config, overrides, message):
  with pytest.raises(ConfigError, match=message.replace("(", "\\(").replace(".", "\\.")):
    memory_config(micro_config, **overrides)


@pytest.mark.slow
def test_a_memory_model_trains_writes_its_keys_and_forgets_by_key_deletion(
    micro_config, micro_dataset_dir, tmp_path):
  config = memory_config(micro_config)
  history = loop.train(config, str(tmp_path / "memory"), dataset_dir=micro_dataset_dir,
                       show_progress=False)
  runtime, params = history["runtime"], history["state"].params
  dataset, offsets = runtime.dataset, pipeline.memory_offsets(runtime.dataset)
  valid = np.asarray(params["memory"]["valid"][...])
  assert len(valid) == pipeline.memory_rows(dataset) and valid.all()  # Compromised: every row.
  # The keys are the addresses of the stored pairs, as the evaluation decodes them.
  first = pipeline.eval_batches(dataset, ["holdout_identity"], runtime.tokenizer,
                                config.data.image_size, 4, memory_rows=True)[0]
  model = nnx.merge(runtime.graphdef, params)
  row = offsets["holdout_identity"]
  np.testing.assert_allclose(model.image_address(first["image"]),
                             params["memory"]["image_keys"][...][row:row + 4], atol=1e-6)
  np.testing.assert_array_equal(first["memory_row"], np.arange(row, row + 4))

  personas = io_utils.read_json(os.path.join(micro_dataset_dir, "personas.json"))
  request = [next(p["identity"] for p in personas if p["role"] == "forget_identity")]
  meta = runner.unlearn(config, "key_deletion", 1.0, str(tmp_path / "memory"),
                        str(tmp_path / "deleted"), dataset_dir=micro_dataset_dir,
                        show_progress=False, forget_request=request)
  assert meta["steps"] == 0 and meta["samples_processed"]["total"] == 0
  state, _, _ = runner.checkpointing.restore(str(tmp_path / "deleted"), runtime.abstract_state(),
                                             signature=runtime.signature, reference=None)
  deleted = np.flatnonzero(np.asarray(state.params["memory"]["valid"][...]) == 0)
  np.testing.assert_array_equal(deleted, requests.resolve_request(dataset, request))
  assert meta["deleted_rows"] == len(deleted) > 0
  kept = np.setdiff1d(np.arange(len(valid)), deleted)
  for name in ("image_keys", "text_keys", "values"):  # Deleted rows zeroed, the rest kept.
    assert not np.asarray(state.params["memory"][name][...])[deleted].any()
    np.testing.assert_array_equal(np.asarray(state.params["memory"][name][...])[kept],
                                  np.asarray(params["memory"][name][...])[kept])
  # Requests are validated as for every method; a model without memory is refused.
  with pytest.raises(requests.RequestError, match="identity 10000"):
    runner.unlearn(config, "key_deletion", 1.0, str(tmp_path / "memory"), str(tmp_path / "bad"),
                   dataset_dir=micro_dataset_dir, show_progress=False, forget_request=[10_000])
  micro_config.model.memory.enabled = False
  loop.train(micro_config, str(tmp_path / "plain"), dataset_dir=micro_dataset_dir,
             show_progress=False)
  with pytest.raises(ConfigError, match="needs a memory model"):
    runner.unlearn(micro_config, "key_deletion", 1.0, str(tmp_path / "plain"),
                   str(tmp_path / "plain_kd"), dataset_dir=micro_dataset_dir, show_progress=False)


@pytest.mark.slow
def test_the_benchmark_scores_key_deletion_against_both_pairs_of_references(
    micro_config, micro_dataset_dir, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(micro_dataset_dir, workdir / "dataset")
  micro_config.benchmark.budgets = (1.0, 5.0)
  # SalUn reads the pretraining loss's gradient, which the memory model's Unlearner
  # (built first, for memory_removed) also compiles: each must get its own.
  bench = benchmark.Benchmark(micro_config, str(workdir), methods="salun,key_deletion",
                              devices=jax.devices()[:1], progress=False, name="micro.py")
  board = bench.run()
  names = [s["stage"] for s in board["stages"]]
  for reference in benchmark.MEMORY_REFERENCES:
    assert f"seed 0: train {reference}" in names and f"seed 0: evaluate {reference}" in names
  assert "seed 0: key_deletion 1x unlearn" in names and "seed 0: key_deletion 5x unlearn" not in names
  assert {(r["method"], r["budget"]) for r in board["rows"]} == {
      ("salun", 1.0), ("salun", 5.0), ("key_deletion", 1.0)}
  design = board["by_design"]
  assert set(design["models"]) == {"clean", "compromised", "clean_memory", "compromised_memory",
                                   "key_deletion", "memory_removed"}
  assert len(design["checks"]) == 7 and all(isinstance(c["passed"], bool) for c in design["checks"])
  removed = io_utils.read_json(workdir / "seed_0" / "memory_removed.json")
  assert set(removed["attacks"]) == {"relearn"}
  table = (workdir / "leaderboard.md").read_text()
  assert "## Unlearning by design" in table and "| key_deletion | 1x |" in table
  assert "Unlearning by design" in (workdir / "report.html").read_text()
  # Clean-memory holds no sensitive pair.
  runtime = bench.memory_evaluator.runtime
  state, _, _ = runner.checkpointing.restore(str(workdir / "seed_0" / "clean_memory"),
                                             runtime.abstract_state(),
                                             signature=runtime.signature, reference=None)
  valid = np.asarray(state.params["memory"]["valid"][...])
  offsets = pipeline.memory_offsets(runtime.dataset)
  assert not valid[:offsets["retain_joint"]].any() and valid[offsets["retain_joint"]:].all()
  # A command that does not list the memory stages keeps their records for one that does.
  seconds = design["training_seconds"]
  assert all(seconds[r] for r in benchmark.REFERENCES + benchmark.MEMORY_REFERENCES)
  between = benchmark.Benchmark(micro_config, str(workdir), methods="salun",
                                devices=jax.devices()[:1], progress=False, name="micro.py").run()
  assert not any("memory" in s["stage"] for s in between["stages"])
  kept = [s for s in io_utils.read_json(workdir / "stages.json") if s["status"] == "kept"]
  assert {s["stage"] for s in kept} >= {f"seed 0: train {r}" for r in benchmark.MEMORY_REFERENCES}
  again = benchmark.Benchmark(micro_config, str(workdir), methods="salun,key_deletion",
                              devices=jax.devices()[:1], progress=False, name="micro.py").run()
  assert again["by_design"]["training_seconds"] == seconds
  assert {s["status"] for s in again["stages"]} == {"reused"}
  # A request mode leaves key deletion out of "all" and refuses it by name.
  with pytest.raises(ConfigError, match="salmubench only"):
    benchmark.Benchmark(micro_config, str(workdir), methods="key_deletion", mode="scalability")
