"""Membership inference and the attacks on forgetting, on hand-built cases with known answers."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from salmu_jax import report
from salmu_jax.errors import ConfigError
from salmu_jax.evaluation import attacks, context, diagnosis, privacy, registry
from tests.test_benchmark import CLEAN, COMPROMISED, THRESHOLDS, fake_result


def unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_roc_auc_matches_the_pairwise_definition():
  rng = np.random.default_rng(0)
  members, nonmembers = rng.normal(0.5, 1, 300).round(1), rng.normal(0, 1, 200).round(1)
  brute = ((members[:, None] > nonmembers) + 0.5 * (members[:, None] == nonmembers)).mean()
  assert privacy.roc_auc(members, nonmembers) == pytest.approx(brute)  # Ties included.
  assert privacy.roc_auc(members, members) == 0.5  # Identical members and non-members.
  assert privacy.roc_auc([2.0, 3.0], [1.0]) == 1.0 and privacy.roc_auc([0.0], [1.0, 2.0]) == 0.0
  fpr, tpr = privacy.roc_curve(members, nonmembers)
  assert np.trapezoid(tpr, fpr) == pytest.approx(brute)
  with pytest.raises(ValueError, match="needs members and non-members"):
    privacy.roc_auc([], [1.0])


ENCODER = np.random.default_rng(5).normal(size=(3, 16))


def encode(images: np.ndarray) -> np.ndarray:
  """A fake image tower: a fixed projection of the mean colour (so flips and shifts of a
  single-coloured image embed exactly as the image)."""
  return unit(np.asarray(images, float).mean(axis=(1, 2)) @ ENCODER)


PEOPLE, IMAGES = 8, 4  # Per side: members (forget_identity) and non-members (unseen).


class PrivacyContext:
  """What the membership attacks read of an EvalContext, over hand-built embeddings:
  forget_identity personas 0-7 and unseen personas 8-15, four single-coloured images
  each (a person's images share a colour up to a few levels)."""

  def __init__(self, memorized: bool, identical: bool = False):
    rng = np.random.default_rng(11)
    people = {privacy.MEMBER_SPLIT: range(PEOPLE), privacy.NONMEMBER_SPLIT: range(PEOPLE, 2 * PEOPLE)}
    self.dataset = types.SimpleNamespace(
        personas=[{"identity": i, "name": f"person {i}"} for i in range(2 * PEOPLE)],
        splits={privacy.NONMEMBER_SPLIT: [None] * PEOPLE * IMAGES})
    self._raw, self._splits, names = {}, {}, {}
    for split, who in people.items():
      colors = np.concatenate([rng.integers(20, 236, (1, 3)) + rng.integers(-3, 4, (IMAGES, 3))
                               for _ in who])
      self._raw[split] = np.broadcast_to(colors[:, None, None, :],
                                         (len(colors), 8, 8, 3)).astype(np.uint8)
      images = encode(self._raw[split])
      knows = memorized and split == privacy.MEMBER_SPLIT
      captions = unit(images + 0.1 * rng.normal(size=images.shape)) if knows else unit(
          rng.normal(size=images.shape))
      records = [{"identity": p, "subset": "forget_identity" if split == "forget" else split}
                 for p in who for _ in range(IMAGES)]
      for n, p in enumerate(who):  # A model that memorized who is who: the name is the face.
        names[f"a photo of person {p}."] = unit(images[n * IMAGES:(n + 1) * IMAGES].mean(0)) \
            if knows else unit(rng.normal(size=images.shape[1]))
      self._splits[split] = context.SplitEmbeddings(images, captions, records)
    if identical:  # Non-members exactly as members.
      self._raw[privacy.NONMEMBER_SPLIT] = self._raw[privacy.MEMBER_SPLIT]
      self._splits[privacy.NONMEMBER_SPLIT] = self._splits[privacy.MEMBER_SPLIT]
    self._names = names
    self.evaluator = types.SimpleNamespace(inputs=types.SimpleNamespace(
        split_batches=lambda split: [{"image": self._raw[split]}]))

  def split(self, name):
    return self._splits[name]

  def images(self, images):
    return encode(images)

  def texts(self, texts):
    return np.stack([self._names[t] for t in texts])


def scores_of(ctx) -> dict:
  return {"pair": privacy.pair_scores(ctx), "pair_augmented": privacy.augmented_pair_scores(ctx),
          "identity": registry.identity_attack(ctx)}


def test_membership_attacks_of_hand_built_models():
  memorized = {k: privacy.roc_auc(v["member"], v["nonmember"])
               for k, v in scores_of(PrivacyContext(memorized=True)).items()}
  assert memorized["pair"] > 0.95 and memorized["pair_augmented"] > 0.95
  assert memorized["identity"] == 1.0  # Members' names are their nearest; unseen ones' not.
  untouched = {k: privacy.roc_auc(v["member"], v["nonmember"])
               for k, v in scores_of(PrivacyContext(memorized=False)).items()}
  assert abs(untouched["pair"] - 0.5) < 0.2 and abs(untouched["pair_augmented"] - 0.5) < 0.2
  same = scores_of(PrivacyContext(memorized=True, identical=True))
  assert all(privacy.roc_auc(v["member"], v["nonmember"]) == 0.5 for v in same.values())
  # Single-coloured images: every flipped or shifted view is the image, so the
  # augmentation attack scores exactly as the plain one.
  plain = scores_of(PrivacyContext(memorized=False))
  np.testing.assert_allclose(plain["pair_augmented"]["member"], plain["pair"]["member"])
  assert len(plain["identity"]["member"]) == len(plain["identity"]["nonmember"]) == PEOPLE


def test_calibrated_attack_against_itself_is_exactly_chance():
  block = {name: privacy.summary(s) for name, s in scores_of(PrivacyContext(True)).items()}
  assert privacy.calibrated_aucs(block, block) == {"pair_calibrated": 0.5,
                                                    "identity_calibrated": 0.5}
  other = {name: privacy.summary(s) for name, s in scores_of(PrivacyContext(False)).items()}
  assert privacy.calibrated_aucs(block, other)["pair_calibrated"] > 0.9
  short = {k: {"scores": {"member": v["scores"]["member"][:3], "nonmember": v["scores"]["nonmember"]}}
           for k, v in other.items()}
  with pytest.raises(ValueError, match="not the same dataset"):
    privacy.calibrated_aucs(block, short)


def test_augmented_views_flip_and_shift_with_edges_replicated():
  images = np.arange(2 * 16 * 16 * 3, dtype=np.uint32).reshape(2, 16, 16, 3).astype(np.uint8)
  flip, down_right, up_left = privacy.augmented_views(images)
  assert flip.shape == down_right.shape == up_left.shape == images.shape
  np.testing.assert_array_equal(flip, images[:, :, ::-1])
  np.testing.assert_array_equal(down_right[:, 1:, 1:], images[:, :-1, :-1])  # Shift by 1 px.
  np.testing.assert_array_equal(down_right[:, 0, 1:], images[:, 0, :-1])  # Edge replicated.
  np.testing.assert_array_equal(up_left[:, :-1, :-1], images[:, 1:, 1:])


def test_quantizing_an_int8_exact_model_changes_nothing():
  rng = np.random.default_rng(3)
  levels = rng.integers(-127, 128, (8, 6)).astype(np.float32)
  levels[0] = 127  # Every channel reaches the largest level, so its scale is the grid's.
  scale = 2.0 ** -7  # Exact in float32: w / scale and back lose nothing.
  params = {"kernel": jnp.asarray(levels * scale), "bias": jnp.asarray(rng.normal(size=6), jnp.float32)}
  assert jax.tree.map(np.array_equal, attacks.quantize(params, 8), params) == {
      "kernel": True, "bias": True}
  four = attacks.quantize(params, 4)
  assert np.array_equal(four["bias"], params["bias"])  # Vectors stay float32.
  kernel, quantized = np.asarray(params["kernel"]), np.asarray(four["kernel"])
  channel_scale = np.abs(kernel).max(axis=0) / 7
  assert (np.abs(quantized - kernel) <= channel_scale / 2 + 1e-7).all()  # Round to nearest.
  assert all(len(np.unique(quantized[:, c])) <= 15 for c in range(6))  # Levels -7..7.
  with pytest.raises(ConfigError, match="supported"):
    attacks.quantize(params, 3)


def test_forget_halves_split_identities_disjointly_and_cover_the_split():
  records = [{"identity": i // 3} for i in range(30)]  # 10 identities, 3 pairs each.
  first, second = attacks.forget_halves(records, seed=0)
  assert sorted(np.concatenate([first, second]).tolist()) == list(range(30))
  people = lambda rows: {records[i]["identity"] for i in rows}
  assert not people(first) & people(second) and len(people(first)) == 5
  again = attacks.forget_halves(records, seed=0)
  assert all(np.array_equal(a, b) for a, b in zip(again, (first, second)))
  assert not np.array_equal(attacks.forget_halves(records, seed=1)[0], first)
  with pytest.raises(ConfigError, match="at least 2 forget identities"):
    attacks.forget_halves([{"identity": 0}] * 3, seed=0)


@pytest.mark.parametrize("spec, expected", [("quantize,relearn", ("quantize", "relearn")),
                                            ("relearn, quantize", ("quantize", "relearn")),
                                            ("none", ()), ("", ()), (("relearn",), ("relearn",))])
def test_attack_names(spec, expected):
  assert attacks.parse_attacks(spec) == expected


@pytest.mark.parametrize("spec, message", [("quantise", "unknown"), ("relearn,relearn", "repeated")])
def test_bad_attack_names_are_named(spec, message):
  with pytest.raises(ConfigError, match=message):
    attacks.parse_attacks(spec)


def attacked(values: dict, relearn_before: float, relearn_after: float, int4: float,
             pair: float = 0.5) -> dict:
  """A fake result with membership AUCs and the attacks' raw numbers."""
  result = fake_result(values)
  result["privacy"] = {name: {"auc": pair} for name in ("pair", "pair_augmented", "identity")}
  result["attacks"] = {
      "quantize": {"int8": {"1.1_RetFail": values["1.1_RetFail"], "privacy_pair": pair},
                   "int4": {"1.1_RetFail": int4, "privacy_pair": pair}, "seconds": 1.0},
      "relearn": {"before": {"retfail_mrr": relearn_before, "privacy_pair": pair},
                  "after": {"retfail_mrr": relearn_after, "privacy_pair": pair}, "seconds": 2.0}}
  return result


def test_superficial_forgetting_and_recovery_against_the_attacked_references():
  clean = attacked(CLEAN, 0.001, 0.011, 0.001, pair=0.5)
  compromised = attacked(COMPROMISED, 0.30, 0.25, 0.28, pair=0.99)
  holdouts = {k: 0.45 for k in ("retrieval/holdout_identity", "retrieval/holdout_association")}
  runs = {
      # Forgotten and stays forgotten.
      ("robust", 1.0): [attacked({**COMPROMISED, "1.1_RetFail": 0.01, **holdouts}, 0.01, 0.02,
                                 0.01, pair=0.52)],
      # Forgotten by RetFail, but the fine-tune on the other half brings 80% back.
      ("hidden", 1.0): [attacked({**COMPROMISED, "1.1_RetFail": 0.01, **holdouts}, 0.01,
                                 0.011 + 0.8 * 0.299, 0.01, pair=0.9)],
      # A small update that rounding to 4 bits undoes.
      ("fragile", 1.0): [attacked({**COMPROMISED, "1.1_RetFail": 0.01, **holdouts}, 0.01, 0.02,
                                  0.25)],
      # Never forgot: ineffective, not superficial.
      ("weak", 1.0): [attacked({**COMPROMISED, "1.1_RetFail": 0.29, **holdouts}, 0.29, 0.29, 0.28)],
  }
  board = report.leaderboard([clean], [compromised], runs, THRESHOLDS)
  rows = {r["method"]: r for r in board["rows"]}
  assert rows["robust"]["failure_modes"] == []
  assert rows["hidden"]["failure_modes"] == [diagnosis.SUPERFICIAL]
  assert rows["fragile"]["failure_modes"] == [diagnosis.SUPERFICIAL]
  assert rows["weak"]["failure_modes"] == [diagnosis.INEFFECTIVE]
  relearn = rows["hidden"]["normalized"]["attacks"]["relearn"]
  assert relearn["residual_after"] == pytest.approx(0.8)  # Clean's fine-tuned level is 0.
  assert relearn["recovery"] == pytest.approx(0.8 - (0.01 - 0.001) / 0.299)
  assert relearn["privleak_after"] == pytest.approx((0.9 - 0.5) / 0.5 * 100)
  int4 = rows["fragile"]["normalized"]["attacks"]["quantize_int4"]
  assert int4["residual_after"] == pytest.approx((0.25 - 0.001) / (0.28 - 0.001))
  assert rows["robust"]["normalized"]["privleak"]["pair"] == pytest.approx(4.0)
  assert [r["method"] for r in board["rows"]][0] == "robust"  # Fewest failure modes first.
  header, table = report.privacy_rows(board)
  assert header[3:5] == ["pair AUC", "PrivLeak pair"]
  assert table[1][3:5] == ["0.990", "+98.0%"]  # Compromised.
  assert "n/a" in table[0]  # One seed's Clean calibrated against itself: 0.5, but no scores here.
  # An attacked RetFail that cannot be computed (references equal under the attack) fails.
  flat = lambda r: diagnosis.headlines(r)
  equal = attacked(COMPROMISED, 0.30, 0.25, 0.28)
  _, verdict = diagnosis.normalize_and_diagnose(flat(runs[("robust", 1.0)][0]), flat(equal | {
      "efficacy": clean["efficacy"]}), flat(equal), THRESHOLDS)
  assert diagnosis.SUPERFICIAL in verdict["failure_modes"]


def test_pair_roc_curves_of_stored_scores():
  def with_scores(values, members):
    result = fake_result(values)
    result["privacy"] = {"pair": {"auc": privacy.roc_auc(members, [0.0, 0.1, 0.2, 0.3]),
                                  "scores": {"member": members, "nonmember": [0.0, 0.1, 0.2, 0.3]}}}
    return result
  board = report.leaderboard([with_scores(CLEAN, [0.05, 0.15, 0.25, 0.35])],
                             [with_scores(COMPROMISED, [0.9, 0.8, 0.7, 0.6])],
                             {("m", 1.0): [with_scores(CLEAN, [0.5, 0.0, 0.0, 0.0])]}, THRESHOLDS)
  curves = board["roc_pair"]
  assert set(curves) == {"clean", "compromised", "m@1x"}
  assert curves["compromised"][0] == 1.0  # Every member above every non-member.
  assert all(np.diff(c).min() >= 0 and c[-1] == 1.0 for c in curves.values())


def test_membership_needs_unseen_personas():
  ctx = types.SimpleNamespace(dataset=types.SimpleNamespace(splits={"forget": [1]}))
  assert "no unseen_identity split" in registry.privacy_block(ctx)["unavailable"]
