"""The ten SALMUBench metrics: hand-checkable fixtures, the evaluator, its JSON and errors."""
import glob
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from salmu_jax import checkpointing
from salmu_jax.evaluation import context, diagnosis, evaluator, privacy, registry
from salmu_jax.training import loop, runtime as runtime_lib
from salmu_jax.errors import ConfigError, DatasetError
from salmu_jax.evaluation import metrics
from tests.conftest import REPO, config_path

OFFICIAL_KEYS = {
    "efficacy": ["1.1_RetFail", "1.2_AssocStr", "1.3_ACS", "1.4_IdZSC", "1.5_CoreAssoc"],
    "utility": ["2.1_GenKnow", "2.2_InterIdSim", "2.3_IntraIdSim", "2.4_VisIdInt", "2.5_FragSim"],
}


def unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_perfect_model_ranks_first_and_random_model_is_at_chance():
  rng = np.random.default_rng(0)
  emb = unit(rng.normal(size=(200, 256)))
  gallery = unit(rng.normal(size=(400, 256)))
  perfect = metrics.recall_and_mrr(metrics.retrieval_ranks(emb, emb, gallery))
  assert perfect == {"R@1": 1.0, "MRR": 1.0}
  # Random captions: the true one is a uniform draw among 401 -> MRR = H(401) / 401.
  texts = unit(rng.normal(size=(200, 256)))
  random = metrics.recall_and_mrr(metrics.retrieval_ranks(emb, texts, gallery))
  chance = (1 / np.arange(1, 402)).sum() / 401
  assert abs(random["MRR"] - chance) < 0.01 and random["R@1"] < 0.03


def test_exclusion_removes_the_true_caption_from_its_own_gallery():
  emb = np.eye(3)
  ranks = metrics.retrieval_ranks(emb, emb, emb, exclude=np.eye(3, dtype=bool))
  assert ranks.tolist() == [1, 1, 1]  # Without the mask, ties would push each to rank 2.
  assert metrics.retrieval_ranks(emb, emb, emb).tolist() == [2, 2, 2]


def test_paired_cosine_of_identical_embeddings_is_one():
  x = unit(np.random.default_rng(1).normal(size=(5, 8)))
  np.testing.assert_allclose(metrics.paired_cosine(x, x), 1.0)
  np.testing.assert_allclose(metrics.paired_cosine(x, -x), -1.0)


def test_probe_separates_separable_pairs_and_not_random_ones():
  rng = np.random.default_rng(2)
  images = unit(rng.normal(size=(300, 16)))
  aligned = metrics.association_coherence(images, images, np.random.default_rng(0))
  assert aligned["accuracy"] > 0.95
  noise = metrics.association_coherence(images, unit(rng.normal(size=(300, 16))),
                                        np.random.default_rng(0))
  assert 0.35 < noise["accuracy"] < 0.65
  assert aligned["probe_size"] == aligned["test_size"] == 300


def test_derangement_moves_everyone():
  for n in (2, 3, 10, 101):
    perm = metrics.derangement(n, np.random.default_rng(n))
    assert sorted(perm) == list(range(n)) and (perm != np.arange(n)).all()


def test_zero_shot_with_prompt_ensembles():
  prompts = unit(np.array([[1, 0.1, 0], [1, -0.1, 0], [0, 1, 0.1], [0, 1, -0.1]], float))
  classes = metrics.class_embeddings(prompts, 2)
  np.testing.assert_allclose(classes, [[1, 0, 0], [0, 1, 0]], atol=1e-12)
  images = unit(np.array([[0.9, 0.1, 0], [0.2, 0.8, 0], [0.6, 0.4, 0]]))
  assert metrics.zero_shot_accuracy(images, classes, np.array([0, 1, 1])) == pytest.approx(2 / 3)


def test_normalized_scores():
  assert metrics.normalized_score(0.236, 0.236, 0.001, "efficacy") == 0
  assert metrics.normalized_score(0.001, 0.236, 0.001, "efficacy") == 1
  assert metrics.normalized_score(0.638, 0.638, 0.633, "utility") == 1
  assert metrics.normalized_score(0.319, 0.638, 0.633, "utility") == pytest.approx(0.5)


def test_grouped_probe_split_shares_no_image_or_caption():
  for n in (4, 5, 101, 512):
    probe, test = metrics.grouped_probe_split(n, np.random.default_rng(n), 0.5)
    seen_by_probe, seen_by_test = set(probe[0]) | set(probe[1]), set(test[0]) | set(test[1])
    assert not seen_by_probe & seen_by_test
    assert sorted(np.concatenate([probe[0], test[0]])) == list(range(n))
    for rows, shuffled in (probe, test):  # Each half's negatives are its own captions, moved.
      assert set(shuffled) == set(rows) and (shuffled != rows).all()
  with pytest.raises(ValueError, match="at least 4 pairs"):
    metrics.grouped_probe_split(3, np.random.default_rng(0), 0.5)


def test_a_model_that_knows_nothing_scores_chance_on_acs():
  # Captions unrelated to images: the old split (pairs of one image in both halves) let the
  # probe fit image-specific features; by image, accuracy is chance on average.
  accuracies = []
  for seed in range(20):
    rng = np.random.default_rng(seed)
    images, texts = unit(rng.normal(size=(128, 16))), unit(rng.normal(size=(128, 16)))
    accuracies.append(metrics.association_coherence(images, texts, np.random.default_rng(seed))["accuracy"])
  assert abs(np.mean(accuracies) - 0.5) < 0.03


def test_offdiagonal_cosine_and_margin_match_brute_force():
  rng = np.random.default_rng(3)
  a, b = unit(rng.normal(size=(40, 8))), unit(rng.normal(size=(40, 8)))
  off = ~np.eye(40, dtype=bool)
  assert metrics.mean_offdiagonal_cosine(a) == pytest.approx((a @ a.T)[off].mean())
  assert metrics.mean_offdiagonal_cosine(a, b) == pytest.approx((a @ b.T)[off].mean())
  brute = np.mean([a[i] @ b[i] - np.mean([a[i] @ b[j] for j in range(40) if j != i])
                   for i in range(40)])
  assert metrics.cosine_margin(a, b) == pytest.approx(brute)
  # Closed forms: one point for everything; orthonormal rows; captions equal to images.
  same = np.tile(unit(rng.normal(size=(1, 8))), (10, 1))
  assert metrics.mean_offdiagonal_cosine(same) == pytest.approx(1.0)
  assert metrics.cosine_margin(same, same) == pytest.approx(0.0)
  assert metrics.mean_offdiagonal_cosine(np.eye(8)) == pytest.approx(0.0)
  assert metrics.cosine_margin(np.eye(8), np.eye(8)) == pytest.approx(1.0)
  assert metrics.kept_above_chance(0.5, 0.9, 0.1) == pytest.approx(0.5)
  assert metrics.kept_above_chance(0.1, 0.9, 0.1) == 0.0


class FakeContext:
  """The evaluator's context over hand-built embeddings: what the extended metrics read."""

  def __init__(self, splits: dict, fragile_ids, gallery=(1000, 1000)):
    self.splits = splits
    self.fragile_ids = list(fragile_ids)
    self.config = ml_collections.ConfigDict(dict(eval=dict(
        seed=0, gallery_forget=gallery[0], gallery_retain=gallery[1])))

  def split(self, name):
    return self.splits[name]

  def rng(self, stream):
    return np.random.default_rng([0, stream])


SPLIT_SIZES = {"forget": 64, "holdout_identity": 48, "holdout_association": 48,
               "retain_joint": 32, "retain_disjoint": 96}


def hand_built_model(kind: str, dim: int = 32) -> FakeContext:
  """Embeddings of a model that `knows` some splits: a known pair's image and caption share
  a direction; an unknown pair's caption is an unrelated direction. `collapsed`: every
  embedding close to one point and only retain pairs still known (the issue's case)."""
  rng = np.random.default_rng(7)
  knows = {"compromised": set(SPLIT_SIZES), "clean": {"retain_joint", "retain_disjoint"},
           "forgets_forget": set(SPLIT_SIZES) - {"forget"},
           "forgets_everything": {"retain_joint", "retain_disjoint"},
           "collapsed": {"retain_joint", "retain_disjoint"}}[kind]
  splits, record_id = {}, 0
  for name, n in SPLIT_SIZES.items():
    images = unit(rng.normal(size=(n, dim)))
    captions = unit(images + 0.3 * rng.normal(size=(n, dim)) / np.sqrt(dim)) if name in knows else unit(
        rng.normal(size=(n, dim)))
    if kind == "collapsed":
      point = np.ones(dim) / np.sqrt(dim)
      images, captions = unit(point + 0.05 * images), unit(point + 0.05 * captions)
    records = [{"record_id": record_id + i, "caption": f"{name} caption {i}"} for i in range(n)]
    record_id += n
    splits[name] = context.SplitEmbeddings(images, captions, records)
  fragile = [r["record_id"] for r in splits["retain_disjoint"].records[:20]]
  return FakeContext(splits, fragile)


def result_of(kind: str, genknow: float = 0.9) -> dict:
  """A result whose extended block is computed from a hand-built model (official headlines
  are placeholders: the diagnosis under test reads the extended block and GenKnow)."""
  ctx = hand_built_model(kind)
  result = {"efficacy": {k: {"mean": 0.5} for k in OFFICIAL_KEYS["efficacy"]},
            "utility": {k: {"mean": 0.5} for k in OFFICIAL_KEYS["utility"]},
            "extended": {key: fn(ctx) for key, fn in registry.EXTENDED.items()}}
  forget_mrr = metrics.recall_and_mrr(registry.forget_ranks(ctx))["MRR"]
  result["efficacy"]["1.1_RetFail"] = {"MRR": forget_mrr}
  result["utility"]["2.1_GenKnow"] = {"accuracy": genknow, "classes": 32}
  return result


THRESHOLDS = ml_collections.ConfigDict(dict(
    ineffective_below=0.5, overgeneralized_below=0.5, catastrophic_drop_fraction=0.1,
    collapse_spread_ratio=0.5, superficial_recovery_above=0.5, min_attack_gap_fraction=0.25))


def diagnose(kind: str, genknow: float = 0.9) -> tuple:
  clean, compromised = (diagnosis.headlines(result_of(k)) for k in ("clean", "compromised"))
  return diagnosis.normalize_and_diagnose(diagnosis.headlines(result_of(kind, genknow)), clean,
                                         compromised, THRESHOLDS)


def test_extended_metrics_of_hand_built_models():
  compromised, clean, collapsed = (result_of(k)["extended"] for k in
                                   ("compromised", "clean", "collapsed"))
  for split in diagnosis.RETRIEVAL_SPLITS:
    assert compromised["retrieval"][split]["MRR"] > 0.9
  assert compromised["retrieval"]["fragile"]["count"] == 20
  assert compromised["retrieval"]["holdout_identity"]["gallery_size"] == 1 + 47 + 96
  for split in ("holdout_identity", "holdout_association"):  # Clean never learned them.
    assert clean["retrieval"][split]["MRR"] < 0.1 and abs(clean["margin"][split]) < 0.1
  assert compromised["margin"]["forget"] > 0.8
  assert compromised["collapse"]["image_cosine"] < 0.1
  assert collapsed["collapse"]["image_cosine"] > 0.95 and collapsed["collapse"]["caption_cosine"] > 0.95
  assert all(abs(m) < 0.05 for m in collapsed["margin"].values())


def test_same_caption_text_is_not_a_distractor():
  ctx = hand_built_model("compromised")
  joint = ctx.splits["retain_joint"]
  # Every retain_joint image shares its caption's text and embedding with image 0's.
  for record in joint.records:
    record["caption"] = "a person in a blue shirt."
  joint.caption[:] = joint.caption[0]
  ranks, _ = registry.own_caption_ranks(ctx, "retain_joint", 103)
  assert (ranks[1:] > 1).any()  # Ties with identical captions count against...
  ranks, _ = registry.own_caption_ranks(ctx, "retain_joint", 103, exclude_same_text=True)
  plain, _ = registry.own_caption_ranks(ctx, "retain_joint", 103)
  assert (ranks <= plain).all() and ranks.sum() < plain.sum()  # ...unless excluded.


@pytest.mark.parametrize("kind, genknow, modes", [
    ("forgets_forget", 0.9, []),
    ("compromised", 0.9, ["ineffective forgetting"]),
    ("forgets_everything", 0.9, ["over-generalized forgetting"]),
    ("forgets_forget", 0.5, ["catastrophic damage"]),
    ("collapsed", 0.9, ["representation collapse"]),
])
def test_diagnosis_of_hand_built_models(kind, genknow, modes):
  normalized, diagnosis = diagnose(kind, genknow)
  if kind == "collapsed":  # Whatever else it shows, a collapsed model is never "none".
    assert "representation collapse" in diagnosis["failure_modes"] and diagnosis["label"] != "none"
  else:
    assert diagnosis["failure_modes"] == modes
  if kind == "forgets_forget":
    assert normalized["kept"]["retrieval/holdout_identity"] > 0.9


def test_a_collapsed_model_with_high_mean_cosines_ranks_below_a_real_forgetter():
  # The case: the collapsed model keeps every mean cosine near Compromised's, so
  # the official cosine-ratio utility would call it intact; knowledge kept does not.
  from salmu_jax import report
  normalized, diagnosis = diagnose("collapsed")
  good, _ = diagnose("forgets_forget")
  assert max(normalized["kept"]["retrieval/holdout_identity"],
             normalized["kept"]["retrieval/holdout_association"]) < 0.1
  assert report.scores(normalized)["utility"] < report.scores(good)["utility"] - 0.3
  assert "over-generalized forgetting" in diagnosis["failure_modes"]


def test_genknow_damage_is_relative_to_the_task():
  # A 0.1 drop is a ninth of an easy task's knowledge above chance but most of a hard
  # one's; the original's figures (ImageNet, chance 0.001) keep their labels.
  assert metrics.kept_above_chance(0.8, 0.9, 1 / 32) == pytest.approx(0.885, abs=1e-3)
  assert metrics.kept_above_chance(0.02, 0.12, 1 / 80) < 0.1
  assert metrics.kept_above_chance(0.548, 0.638, 0.001) < 0.9  # Shuffled Captions: damaged.
  assert metrics.kept_above_chance(0.615, 0.638, 0.001) > 0.9  # Direct Sim. Min.: not.


@pytest.fixture(scope="module")
def trained_micro(micro_dataset_dir, tmp_path_factory):
  from salmu_jax import config as config_lib
  config = config_lib.load_config(config_path("micro") + ":compromised")
  run = str(tmp_path_factory.mktemp("eval_run"))
  loop.train(config, run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1], show_progress=False)
  return config, run


def test_evaluator_writes_the_official_shape_deterministically(trained_micro, micro_dataset_dir):
  config, run = trained_micro
  first = evaluator.evaluate(config, run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1])
  assert {g: list(first[g]) for g in OFFICIAL_KEYS} == OFFICIAL_KEYS
  assert set(first["efficacy"]["1.1_RetFail"]) >= {"R@1", "MRR"}
  for group in OFFICIAL_KEYS:
    for key in first[group]:
      value = diagnosis.headline(first, group, key)
      assert np.isfinite(value) and -1 <= value <= 1
  assert first["efficacy"]["1.1_RetFail"]["gallery_size"] == 1 + 63 + 20  # Capped by split sizes.
  assert first["meta"]["model"] == "compromised" and first["meta"]["method"] is None
  assert set(first["breakdown"]["per_field"]) == set(config.data.fields)
  extended = first["extended"]
  assert list(extended) == ["retrieval", "margin", "collapse"]
  assert list(extended["retrieval"]) == list(diagnosis.RETRIEVAL_SPLITS)
  assert extended["retrieval"]["holdout_identity"]["gallery_size"] == 1 + 31 + 20
  assert extended["retrieval"]["fragile"]["count"] == len(fragile_ids_of(micro_dataset_dir))
  assert all(-1 <= v <= 2 for v in extended["margin"].values())
  streamed = config.copy_and_resolve_references()
  streamed.eval.input_cache_mb = 0  # Inputs read again for every use instead of kept.
  again = evaluator.evaluate(streamed, run, dataset_dir=micro_dataset_dir,
                             devices=jax.devices()[:1])
  for part in ("efficacy", "utility", "breakdown"):  # Same checkpoint, same JSON.
    assert json.dumps(first[part], sort_keys=True) == json.dumps(again[part], sort_keys=True)
  clean = json.loads(json.dumps(first))  # A Clean-like reference: forgets, knows less.
  clean["efficacy"]["1.1_RetFail"]["MRR"] /= 10
  clean["utility"]["2.2_InterIdSim"]["mean"] -= 0.1
  scored = evaluator.evaluate(config, run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1],
                              clean=clean, compromised=first, show_progress=False)
  assert scored["normalized"]["utility"]["2.2_InterIdSim"] == pytest.approx(1.0)
  # References that cannot be the two references are refused before any work.
  for references, message in (((first, first), "identical"), ((first, clean), "swapped")):
    with pytest.raises(ConfigError, match=message):
      evaluator.evaluate(config, "/nonexistent", dataset_dir=micro_dataset_dir,
                         clean=references[0], compromised=references[1])


def test_membership_inference_and_attacks_of_a_trained_model(trained_micro, micro_dataset_dir):
  config, run = trained_micro
  score = lambda attacks: evaluator.evaluate(config, run, dataset_dir=micro_dataset_dir,
                                             devices=jax.devices()[:1], attacks=attacks,
                                             show_progress=False)
  result = score("quantize,relearn")
  card = json.load(open(os.path.join(micro_dataset_dir, "card.json")))
  sizes, roles = card["split_sizes"], card["personas_per_role"]
  block = result["privacy"]
  assert list(block) == ["pair", "pair_augmented", "identity", "records_sha256"]
  for name in ("pair", "pair_augmented"):
    assert (block[name]["members"], block[name]["nonmembers"]) == (sizes["forget"],
                                                                   sizes["unseen_identity"])
  assert (block["identity"]["members"], block["identity"]["nonmembers"]) == (
      roles["forget_identity"], roles["unseen_identity"])
  # The stored scores give the AUC back exactly, so the leaderboard can rebuild curves and
  # calibrated attacks from the JSON alone.
  for name in registry.PRIVACY:
    assert 0 <= block[name]["auc"] <= 1
    assert block[name]["auc"] == privacy.roc_auc(block[name]["scores"]["member"],
                                                 block[name]["scores"]["nonmember"])
  quantized, relearned = result["attacks"]["quantize"], result["attacks"]["relearn"]
  assert set(quantized) == {"int8", "int4", "seconds"}
  assert set(quantized["int8"]) == set(OFFICIAL_KEYS["efficacy"]) | {"privacy_pair",
                                                                     "privacy_identity"}
  # int8 keeps the model: its RetFail moves by little; both stay valid MRRs.
  assert quantized["int8"]["1.1_RetFail"] == pytest.approx(
      result["efficacy"]["1.1_RetFail"]["MRR"], abs=0.05)
  assert relearned["first_half_pairs"] + relearned["second_half_pairs"] == sizes["forget"]
  assert relearned["steps"] >= 1 and relearned["samples"] == relearned["steps"] * \
      config.unlearn.forget_batch
  assert set(relearned["before"]) == set(relearned["after"]) == {"retfail_mrr", "privacy_pair"}
  assert relearned["after"] != relearned["before"]  # The fine-tune moved the model.
  flat = diagnosis.headlines(result)
  assert {"privacy/pair", "quantize/int4/1.1_RetFail", "relearn/after/retfail_mrr"} <= set(flat)
  again = score("relearn")  # Seeded: the same fine-tune, the same numbers.
  assert again["attacks"]["relearn"]["after"] == relearned["after"]
  assert "quantize" not in again["attacks"] and "attacks" not in score("none")
  with pytest.raises(ConfigError, match="unknown"):  # Before any work.
    evaluator.evaluate(config, "/nonexistent", dataset_dir=micro_dataset_dir, attacks="quantise")


def test_a_diverged_relearning_is_recorded_and_the_evaluation_goes_on(
    trained_micro, micro_dataset_dir, monkeypatch):
  from salmu_jax.errors import NonFiniteLoss
  from salmu_jax.unlearning import runner

  def diverge(*args, **kwargs):
    raise NonFiniteLoss("unlearning loss is nan at step 2; nothing was written; lower "
                        "unlearn.learning_rate")
  monkeypatch.setattr(runner, "optimize", diverge)
  config, run = trained_micro
  result = evaluator.evaluate(config, run, dataset_dir=micro_dataset_dir,
                              devices=jax.devices()[:1], attacks="relearn", show_progress=False)
  relearned = result["attacks"]["relearn"]
  assert "after" not in relearned and "eval.attacks.relearn_learning_rate" in relearned["failed"]
  assert "unlearn.learning_rate" not in relearned["failed"].replace("relearn_learning_rate", "")
  flat = diagnosis.headlines(result)
  assert flat["relearn/failed"] == 1.0 and np.isnan(flat["relearn/after/retfail_mrr"])
  # Against references (here diverged too), the verdict names the attack as unchecked.
  clean = json.loads(json.dumps(result))
  clean["efficacy"]["1.1_RetFail"]["MRR"] /= 10
  judged = evaluator.evaluate(config, run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1],
                              attacks="relearn", clean=clean, compromised=result,
                              show_progress=False)
  assert judged["diagnosis"]["label"].endswith("(unchecked: relearn)")
  assert "diverged for the model, Clean, Compromised" in judged["diagnosis"]["unchecked"]["relearn"]
  # References not scored with an attack asked for are refused before any work.
  with pytest.raises(ConfigError, match="--clean was not scored with the attacks quantize"):
    evaluator.evaluate(config, "/nonexistent", dataset_dir=micro_dataset_dir,
                       attacks="quantize,relearn", clean=clean, compromised=result)


def fragile_ids_of(dataset_dir):
  return json.load(open(os.path.join(dataset_dir, "fragile_set_ids.json")))


def test_cli_writes_json_and_refuses_another_model_shape(trained_micro, micro_dataset_dir, tmp_path):
  from salmu_jax.data import requests
  config, run = trained_micro
  out, request = tmp_path / "result.json", tmp_path / "request.json"
  entries = requests.sustainability_requests(forget_records(micro_dataset_dir), seed=0)[1]
  request.write_text(json.dumps([list(e) if isinstance(e, tuple) else e for e in entries]))
  command = [sys.executable, "-m", "salmu_jax.evaluate", f"--config={config_path('micro')}",
             f"--checkpoint={run}", f"--dataset_dir={micro_dataset_dir}", f"--out={out}"]
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="")
  result = subprocess.run(command + [f"--requested={request}"], capture_output=True, text=True,
                          env=env, cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  written = json.loads(out.read_text())
  assert set(written) >= {"efficacy", "utility", "breakdown", "meta", "request"}
  pairs = written["request"]["pairs"]
  assert f"requested ({pairs['requested']} pairs): 1.1_RetFail" in result.stdout
  assert f"not_requested ({pairs['not_requested']} pairs): 1.1_RetFail" in result.stdout
  # It says which step it scored.
  assert result.stdout.strip().splitlines()[-1].startswith(
      f"step 6 of {run} (compromised) written to {out}")
  for extra, message in ((f"--out={tmp_path}", f"--out={tmp_path} is a directory"),
                         (f"--clean={micro_dataset_dir}/card.json", "card.json: a result without"),
                         (f"--fragile_set={out}", "is also --fragile_set: it would be overwritten"),
                         (f"--out={micro_dataset_dir}/result.json", "lies inside the dataset"),
                         (f"--requested={tmp_path}/none.json", "cannot read the deletion request")):
    refused = subprocess.run(command + [extra], capture_output=True, text=True, env=env, cwd=REPO)
    assert refused.returncode == 2 and message in refused.stderr, refused.stderr[-1000:]
  bad = subprocess.run(command + ["--config.model.vision_width=32", f"--out={tmp_path / 'x.json'}"],
                       capture_output=True, text=True, env=env, cwd=REPO)
  assert bad.returncode == 2 and "different model (vision_width: 64 vs 32)" in bad.stderr
  assert not (tmp_path / "x.json").exists()


def test_a_model_with_non_finite_parameters_is_refused(trained_micro, micro_dataset_dir):
  # NaN similarities compare False with everything, so a NaN model would rank every true
  # caption first (RetFail MRR 1.0): it must never be scored.
  from salmu_jax.errors import NonFiniteModel
  config, run = trained_micro
  runtime = runtime_lib.setup(config, run, micro_dataset_dir, jax.devices()[:1])
  params = checkpointing.restore(
      run, runtime.abstract_state(), signature=runtime.signature, reference=None)[0].params
  leaves, treedef = jax.tree.flatten(params)
  leaves[0] = leaves[0] * np.nan
  with pytest.raises(NonFiniteModel, match="the model to score has non-finite parameters in 1 "):
    evaluator.Evaluator(runtime).score(jax.tree.unflatten(treedef, leaves))


def test_a_model_whose_embeddings_overflow_is_refused(trained_micro, micro_dataset_dir):
  # Finite parameters, non-finite embeddings (the reviewer's 1e20-scaled model): its NaN
  # similarities would rank every true caption first.
  from salmu_jax.errors import NonFiniteModel
  config, run = trained_micro
  runtime = runtime_lib.setup(config, run, micro_dataset_dir, jax.devices()[:1])
  params = checkpointing.restore(
      run, runtime.abstract_state(), signature=runtime.signature, reference=None)[0].params
  with pytest.raises(NonFiniteModel, match="gives non-finite embeddings for .* images"):
    evaluator.Evaluator(runtime).score(jax.tree.map(lambda x: x * np.float32(1e20), params))
  with pytest.raises(NonFiniteModel, match="for 1 of 3 GenKnow images"):
    context.finite(np.array([[1.0, 0.0], [np.nan, 0.0], [0.0, 1.0]]), "GenKnow images")


def test_missing_split_and_missing_checkpoint_are_named(trained_micro, micro_dataset_dir, tmp_path):
  config, run = trained_micro
  with pytest.raises(ConfigError, match="holds no checkpoint"):
    evaluator.evaluate(config, str(tmp_path), dataset_dir=micro_dataset_dir, devices=jax.devices()[:1])
  import shutil
  copy = tmp_path / "dataset"
  shutil.copytree(micro_dataset_dir, copy)
  os.remove(glob.glob(str(copy / "salmu_synth" / "*" / "*holdout_identity*"))[0])
  with pytest.raises(DatasetError, match="missing file .*holdout_identity"):
    evaluator.evaluate(config, run, dataset_dir=str(copy), devices=jax.devices()[:1])


def test_an_empty_split_is_named(trained_micro, micro_dataset_dir):
  config, run = trained_micro
  runtime = runtime_lib.setup(config, run, micro_dataset_dir, jax.devices()[:1])
  runtime.dataset.splits["holdout_identity"] = []
  with pytest.raises(DatasetError, match="split holdout_identity is empty"):
    evaluator.Evaluator(runtime).inputs.split_batches("holdout_identity")


def test_a_model_is_refused_on_a_dataset_it_was_not_trained_on(trained_micro, micro_dataset_dir,
                                                               tmp_path):
  """Another data seed gives other captions and another tokenizer: scores there would mean
  nothing (issue: IdZSC 0.344 instead of 0.063). Refused in one line unless asked for."""
  from salmu_jax import config as config_lib
  from salmu_jax.data import builder
  config, run = trained_micro
  other = config_lib.load_config(config_path("micro") + ":compromised", {"data.seed": 1})
  other_dir = builder.build_dataset(other, str(tmp_path), progress=False)
  with pytest.raises(ConfigError, match="was trained on another dataset .*differs in: data.seed"):
    evaluator.evaluate(other, run, dataset_dir=other_dir, devices=jax.devices()[:1],
                       show_progress=False)
  study = evaluator.evaluate(other, run, dataset_dir=other_dir, devices=jax.devices()[:1],
                             allow_other_dataset=True, show_progress=False)
  meta = study["meta"]
  assert meta["allow_other_dataset"] and meta["dataset"] != meta["trained_on"]
  own = evaluator.evaluate(config, run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1],
                           show_progress=False)["meta"]
  assert own["dataset"] == own["trained_on"] and not own["allow_other_dataset"]


def test_a_damaged_checkpoint_is_named_and_never_moved_by_the_evaluator(
    trained_micro, micro_dataset_dir, tmp_path):
  import shutil
  config, run = trained_micro
  copy = tmp_path / "run"
  shutil.copytree(run, copy)
  for path in glob.glob(str(copy / "checkpoints" / "6" / "state" / "**" / "*"), recursive=True):
    if os.path.isfile(path) and os.path.getsize(path) > 64:
      with open(path, "r+b") as f:
        f.write(b"\0" * 64)
  before = sorted(str(p) for p in copy.rglob("*"))
  with pytest.raises(ConfigError, match="checkpoint step 6 in .* is unreadable .*nothing was moved"):
    evaluator.evaluate(config, str(copy), dataset_dir=micro_dataset_dir,
                       devices=jax.devices()[:1], show_progress=False)
  assert sorted(str(p) for p in copy.rglob("*")) == before  # Nothing set aside or deleted.


def test_evaluation_reads_a_recomputed_fragile_set_and_leaves_the_dataset_alone(
    trained_micro, micro_dataset_dir, tmp_path):
  config, run = trained_micro
  manifest = open(os.path.join(micro_dataset_dir, "MANIFEST.json")).read()
  recomputed = evaluator.evaluate(config, run, dataset_dir=micro_dataset_dir,
                                  devices=jax.devices()[:1], recompute_fragile=True,
                                  show_progress=False)
  ids = recomputed["fragile_set_ids"]
  assert recomputed["meta"]["fragile_set"]["source"].startswith("recomputed from ")
  assert open(os.path.join(micro_dataset_dir, "MANIFEST.json")).read() == manifest
  path = tmp_path / "compromised.json"
  path.write_text(json.dumps(recomputed))
  again = evaluator.evaluate(config, run, dataset_dir=micro_dataset_dir,
                             devices=jax.devices()[:1], fragile_set=str(path), show_progress=False)
  assert again["meta"]["fragile_set"] == {"source": str(path), "size": len(ids)}
  assert again["utility"]["2.5_FragSim"] == recomputed["utility"]["2.5_FragSim"]
  elsewhere = json.loads(json.dumps(recomputed))  # As if computed on another dataset.
  elsewhere["meta"]["dataset"]["content_sha256"] = "0" * 64
  (tmp_path / "elsewhere.json").write_text(json.dumps(elsewhere))
  with pytest.raises(ConfigError, match="elsewhere.json was computed on another dataset"):
    evaluator.evaluate(config, run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1],
                       fragile_set=str(tmp_path / "elsewhere.json"), show_progress=False)
  clean = json.loads(json.dumps(elsewhere))
  clean["efficacy"]["1.1_RetFail"]["MRR"] /= 10
  with pytest.raises(ConfigError, match="--clean was computed on another dataset"):
    evaluator.evaluate(config, run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1],
                       clean=clean, compromised=recomputed, show_progress=False)
  (tmp_path / "bad.json").write_text("[1.5]")
  with pytest.raises(ConfigError, match="is not a fragile set"):
    evaluator.evaluate(config, run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1],
                       fragile_set=str(tmp_path / "bad.json"), show_progress=False)
  (tmp_path / "outside.json").write_text("[999999]")
  with pytest.raises(DatasetError, match="record ids \\[999999\\] are not in retain_disjoint"):
    evaluator.evaluate(config, run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1],
                       fragile_set=str(tmp_path / "outside.json"), show_progress=False)


def forget_records(dataset_dir):
  from salmu_jax.data import layout
  forget = layout.open_dataset(dataset_dir).splits["forget"]
  return [layout.record_metadata(forget[i]) for i in range(len(forget))]


def test_request_schedules_are_nested_or_disjoint_and_cover_the_split(micro_dataset_dir):
  from salmu_jax.data import layout, requests
  dataset, records = layout.open_dataset(micro_dataset_dir), forget_records(micro_dataset_dir)
  identities, associations = requests.request_units(records)
  nested = requests.scalability_requests(records, seed=0)
  rows = [set(requests.resolve_request(dataset, r).tolist()) for r in nested]
  assert all(a < b for a, b in zip(rows, rows[1:]))  # Strictly nested...
  assert rows[-1] == set(range(len(records)))  # ...up to the whole forget split,
  for fraction, request in zip(requests.SCALABILITY_FRACTIONS, nested):  # in proportion.
    whole = [e for e in request if isinstance(e, int)]
    assert len(whole) == max(1, round(fraction * len(identities)))
    assert len(request) - len(whole) == max(1, round(fraction * len(associations)))
  disjoint = requests.sustainability_requests(records, seed=0)
  parts = [requests.resolve_request(dataset, r).tolist() for r in disjoint]
  assert len(parts) == requests.SUSTAINABILITY_REQUESTS
  assert sorted(sum(parts, [])) == list(range(len(records)))  # Disjoint and covering.
  # Drawn independently of the nested schedule: its first request is not one of those.
  assert all(set(parts[0]) != r for r in rows)
  assert requests.sustainability_requests(records, seed=0) == disjoint  # Seeded...
  assert requests.scalability_requests(records, seed=1) != nested  # ...and the seed matters.
  with pytest.raises(requests.RequestError, match="disjoint requests need at least"):
    requests.sustainability_requests(records, seed=0, count=len(records) + 1)
  with pytest.raises(requests.RequestError, match="must increase"):
    requests.scalability_requests(records, seed=0, fractions=(0.5, 0.25))


def test_a_request_splits_efficacy_into_its_pairs_and_the_others(trained_micro, micro_dataset_dir):
  from salmu_jax.data import layout, requests
  config, run = trained_micro
  records = forget_records(micro_dataset_dir)
  request = requests.sustainability_requests(records, seed=0)[0]
  requested = requests.resolve_request(layout.open_dataset(micro_dataset_dir), request)
  score = lambda **kw: evaluator.evaluate(config, run, dataset_dir=micro_dataset_dir,
                                          devices=jax.devices()[:1], show_progress=False, **kw)
  result = score(request=request)
  block = result["request"]
  rest = np.setdiff1d(np.arange(len(records)), requested)
  assert block["pairs"] == {"requested": len(requested), "not_requested": len(rest)}
  # Each side is computed on its own pairs only: AssocStr is the mean paired cosine there.
  ev = evaluator.Evaluator(runtime_lib.setup(config, run, micro_dataset_dir, jax.devices()[:1]))
  state, _, _ = checkpointing.restore(run, ev.runtime.abstract_state(),
                                      signature=ev.runtime.signature, reference=None)
  forget = context.EvalContext(ev, state.params).split("forget")
  cos = metrics.paired_cosine(forget.image, forget.caption)
  for side, rows in (("requested", requested), ("not_requested", rest)):
    assert block[side]["1.2_AssocStr"]["mean"] == pytest.approx(float(cos[rows].mean()), abs=1e-6)
    assert block[side]["1.2_AssocStr"]["count"] == len(rows)
    # RetFail ranks each side's images in the whole split's one gallery, whatever the request.
    assert block[side]["1.1_RetFail"]["gallery_size"] == result["efficacy"]["1.1_RetFail"]["gallery_size"]
    side_ranks = np.array(block["retfail_ranks"])[rows]
    assert block[side]["1.1_RetFail"]["MRR"] == pytest.approx(float((1 / side_ranks).mean()))
  assert np.mean(1 / np.array(block["retfail_ranks"])) == pytest.approx(
      result["efficacy"]["1.1_RetFail"]["MRR"])
  # The whole split as the request: its side is the official efficacy block itself.
  everything = score(request=requests.scalability_requests(records, seed=0)[-1])
  assert everything["request"]["requested"] == everything["efficacy"]
  assert "not_requested" not in everything["request"]
  # Normalized against references scored on the same request; refused on another.
  clean = json.loads(json.dumps(result))
  for side in ("requested", "not_requested"):
    clean["request"][side]["1.1_RetFail"]["MRR"] /= 10
  clean["efficacy"]["1.1_RetFail"]["MRR"] /= 10
  normalized = score(request=request, clean=clean, compromised=result)["normalized"]["request"]
  assert normalized["requested"]["1.1_RetFail"] == pytest.approx(0.0)  # At Compromised's level.
  with pytest.raises(ConfigError, match="not scored on this deletion request"):
    score(request=request[1:], clean=clean, compromised=result)
  association = next(e for e in request if isinstance(e, tuple))  # One pair: too few for ACS.
  with pytest.raises(ConfigError, match="names 1 forget pairs .* at least 4 pairs"):
    score(request=[association])
