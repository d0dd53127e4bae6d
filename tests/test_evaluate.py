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

from salmu_jax import evaluate, train
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


def fake_result(mrr, genknow, inter, intra):
  result = {"efficacy": {k: {"mean": 0.0} for k in OFFICIAL_KEYS["efficacy"]},
            "utility": {k: {"mean": 0.0} for k in OFFICIAL_KEYS["utility"]}}
  result["efficacy"]["1.1_RetFail"] = {"R@1": 0.0, "MRR": mrr}
  result["utility"]["2.1_GenKnow"] = {"accuracy": genknow}
  result["utility"]["2.2_InterIdSim"] = {"mean": inter}
  result["utility"]["2.3_IntraIdSim"] = {"mean": intra}
  return result


@pytest.mark.parametrize("mrr, genknow, inter, label", [
    (0.2, 0.638, 0.32, "ineffective forgetting"),
    (0.001, 0.634, 0.02, "over-generalized forgetting"),
    (0.004, 0.548, 0.21, "catastrophic damage"),
    (0.003, 0.638, 0.21, "none"),
])
def test_failure_modes_of_the_original_table(mrr, genknow, inter, label):
  thresholds = ml_collections.ConfigDict(dict(ineffective_below=0.5, overgeneralized_margin=0.05,
                                              catastrophic_drop=0.05))
  clean, compromised = fake_result(0.001, 0.633, 0.143, 0.143), fake_result(0.236, 0.638, 0.322, 0.321)
  _, diagnosis = evaluate.normalize_and_diagnose(fake_result(mrr, genknow, inter, inter), clean,
                                                 compromised, thresholds)
  assert diagnosis["label"] == label


@pytest.fixture(scope="module")
def trained_micro(micro_dataset_dir, tmp_path_factory):
  from salmu_jax import config as config_lib
  config = config_lib.load_config(config_path("micro") + ":compromised")
  run = str(tmp_path_factory.mktemp("eval_run"))
  train.train(config, run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1], progress=False)
  return config, run


def test_evaluator_writes_the_official_shape_deterministically(trained_micro, micro_dataset_dir):
  config, run = trained_micro
  first = evaluate.evaluate(config, run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1])
  assert {g: list(first[g]) for g in OFFICIAL_KEYS} == OFFICIAL_KEYS
  assert set(first["efficacy"]["1.1_RetFail"]) >= {"R@1", "MRR"}
  for group in OFFICIAL_KEYS:
    for key in first[group]:
      value = evaluate.headline(first, group, key)
      assert np.isfinite(value) and -1 <= value <= 1
  assert first["efficacy"]["1.1_RetFail"]["gallery_size"] == 1 + 63 + 20  # Capped by split sizes.
  assert first["meta"]["model"] == "compromised" and first["meta"]["method"] is None
  assert set(first["breakdown"]["per_field"]) == set(config.data.fields)
  again = evaluate.evaluate(config, run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1])
  for part in ("efficacy", "utility", "breakdown"):  # Same checkpoint, same JSON.
    assert json.dumps(first[part], sort_keys=True) == json.dumps(again[part], sort_keys=True)
  scored = evaluate.evaluate(config, run, dataset_dir=micro_dataset_dir, devices=jax.devices()[:1],
                             clean=first, compromised=first)
  assert scored["normalized"]["utility"]["2.2_InterIdSim"] == pytest.approx(1.0)


def test_cli_writes_json_and_refuses_another_model_shape(trained_micro, micro_dataset_dir, tmp_path):
  config, run = trained_micro
  out = tmp_path / "result.json"
  command = [sys.executable, "-m", "salmu_jax.evaluate", f"--config={config_path('micro')}",
             f"--checkpoint={run}", f"--dataset_dir={micro_dataset_dir}", f"--out={out}"]
  env = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="")
  result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  assert set(json.loads(out.read_text())) >= {"efficacy", "utility", "breakdown", "meta"}
  bad = subprocess.run(command + ["--config.model.vision_width=32", f"--out={tmp_path / 'x.json'}"],
                       capture_output=True, text=True, env=env, cwd=REPO)
  assert bad.returncode == 2 and "different model (vision_width: 64 vs 32)" in bad.stderr
  assert not (tmp_path / "x.json").exists()


def test_missing_split_and_missing_checkpoint_are_named(trained_micro, micro_dataset_dir, tmp_path):
  config, run = trained_micro
  with pytest.raises(ConfigError, match="holds no checkpoint"):
    evaluate.evaluate(config, str(tmp_path), dataset_dir=micro_dataset_dir, devices=jax.devices()[:1])
  import shutil
  copy = tmp_path / "dataset"
  shutil.copytree(micro_dataset_dir, copy)
  os.remove(glob.glob(str(copy / "salmu_synth" / "*" / "*holdout_identity*"))[0])
  with pytest.raises(DatasetError, match="missing file .*holdout_identity"):
    evaluate.evaluate(config, run, dataset_dir=str(copy), devices=jax.devices()[:1])


def test_an_empty_split_is_named(trained_micro, micro_dataset_dir):
  config, run = trained_micro
  trainer = train.setup(config, run, micro_dataset_dir, jax.devices()[:1])
  trainer.dataset.splits["holdout_identity"] = []
  with pytest.raises(DatasetError, match="split holdout_identity is empty"):
    evaluate.Evaluator(trainer).split_batches("holdout_identity")
