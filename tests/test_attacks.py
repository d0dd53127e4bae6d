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
      records = [{"identity": p, "subset": "forget_identity" if split == "forget" else split,
                  "record_id": f"{split}-{p}-{n}"} for p in who for n in range(IMAGES)]
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
  # Identical members and non-members, through the result block (rounding included).
  same = registry.privacy_block(PrivacyContext(memorized=True, identical=True))
  assert {name: same[name]["auc"] for name in registry.PRIVACY} == dict.fromkeys(registry.PRIVACY, 0.5)
  # Single-coloured images: every flipped or shifted view is the image, so the
  # augmentation attack scores exactly as the plain one.
  plain = scores_of(PrivacyContext(memorized=False))
  np.testing.assert_allclose(plain["pair_augmented"]["member"], plain["pair"]["member"])
  assert len(plain["identity"]["member"]) == len(plain["identity"]["nonmember"]) == PEOPLE


def test_calibrated_attack_against_itself_is_exactly_chance():
  stamp = {"records_sha256": "same records"}
  block = {name: privacy.summary(s) for name, s in scores_of(PrivacyContext(True)).items()} | stamp
  assert privacy.calibrated_aucs(block, block) == {"pair_calibrated": 0.5,
                                                    "identity_calibrated": 0.5}
  other = {name: privacy.summary(s) for name, s in scores_of(PrivacyContext(False)).items()} | stamp
  assert privacy.calibrated_aucs(block, other)["pair_calibrated"] > 0.9
  short = {k: {"scores": {"member": v["scores"]["member"][:3], "nonmember": v["scores"]["nonmember"]}}
           for k, v in other.items() if k in privacy.CALIBRATED} | stamp
  with pytest.raises(ValueError, match="not the same dataset"):
    privacy.calibrated_aucs(block, short)
  with pytest.raises(ConfigError, match="one is missing"):  # A result of an older version.
    privacy.calibrated_aucs(block, {k: v for k, v in other.items() if k != "records_sha256"})
  ctx = PrivacyContext(True)
  stamped = registry.privacy_block(ctx)
  assert privacy.calibrated_aucs(stamped, stamped)["pair_calibrated"] == 0.5
  ctx._splits[privacy.NONMEMBER_SPLIT].records.reverse()  # Same counts, other order.
  with pytest.raises(ValueError, match="records_sha256 differ"):
    privacy.calibrated_aucs(stamped, registry.privacy_block(ctx))


def test_augmented_attack_averages_the_image_and_its_views():
  rng = np.random.default_rng(2)
  ctx = PrivacyContext(memorized=True)
  projection = rng.normal(size=(8 * 8 * 3, 16))
  position_aware = lambda images: unit(np.asarray(images, float).reshape(len(images), -1) @ projection)
  for split in privacy.SIDES.values():  # Images whose views embed differently.
    ctx._raw[split] = rng.integers(0, 256, ctx._raw[split].shape).astype(np.uint8)
    ctx._splits[split].image = position_aware(ctx._raw[split])
  ctx.images = position_aware
  plain, augmented = privacy.pair_scores(ctx), privacy.augmented_pair_scores(ctx)
  for side, split in privacy.SIDES.items():
    views = [ctx._raw[split]] + privacy.augmented_views(ctx._raw[split])
    expected = np.mean([np.sum(position_aware(v) * ctx._splits[split].caption, -1) for v in views], 0)
    np.testing.assert_allclose(augmented[side], expected, rtol=1e-6)
    assert not np.allclose(augmented[side], plain[side])


def test_augmented_views_flip_and_shift_with_edges_replicated():
  images = np.arange(2 * 16 * 16 * 3, dtype=np.uint32).reshape(2, 16, 16, 3).astype(np.uint8)
  flip, down_right, up_left = privacy.augmented_views(images)
  assert flip.shape == down_right.shape == up_left.shape == images.shape
  np.testing.assert_array_equal(flip, images[:, :, ::-1])
  np.testing.assert_array_equal(down_right[:, 1:, 1:], images[:, :-1, :-1])  # Shift by 1 px.
  np.testing.assert_array_equal(down_right[:, 0, 1:], images[:, 0, :-1])  # Edge replicated.
  np.testing.assert_array_equal(up_left[:, :-1, :-1], images[:, 1:, 1:])


# Weights of every layout the model has, as [in axes..., out axes...] (tables: [rows, width]).
QUANTIZED_SHAPES = {"qkv_kernel": (8, 3, 2, 4), "out_kernel": (2, 4, 8), "patch_kernel": (2, 2, 3, 8),
                    "fc_kernel": (8, 16), "token_embedding": (10, 8)}


def dense_view(name, weight):
  """[in, out] of a kernel, [rows, width].T of a table: one scale per column."""
  weight = np.asarray(weight)
  if name == "token_embedding":
    return weight.T
  shared = len(attacks.SCALE_SHARED_OVER[name])
  return weight.reshape(int(np.prod(weight.shape[:shared])), -1)


def int8_exact(rng, name, shape):
  """Integer levels times a power-of-two scale per output channel (per row of a table),
  each channel reaching level 127, so that the int8 round trip is exact in float32."""
  view = dense_view(name, np.zeros(shape))
  levels = rng.integers(-127, 128, view.shape).astype(np.float32)
  levels[0] = 127
  scaled = levels * 2.0 ** -rng.integers(3, 9, view.shape[1]).astype(np.float32)
  return scaled.T.copy() if name == "token_embedding" else scaled.reshape(shape)


def test_quantization_is_per_output_channel_of_every_weight_layout():
  rng = np.random.default_rng(3)
  params = {"block": {name: jnp.asarray(int8_exact(rng, name, shape))
                      for name, shape in QUANTIZED_SHAPES.items()}}
  params["block"] |= {"qkv_bias": jnp.asarray(rng.normal(size=(3, 2, 4)), jnp.float32),
                      "scale": jnp.asarray(rng.normal(size=8), jnp.float32)}
  same = jax.tree.map(np.array_equal, attacks.quantize(params, 8), params)
  assert all(jax.tree.leaves(same)), same  # int8-exact: nothing changes.
  four = attacks.quantize(params, 4)["block"]
  for name in ("qkv_bias", "scale"):  # Biases (3-D too) and norms stay float32.
    np.testing.assert_array_equal(four[name], params["block"][name])
  for name in QUANTIZED_SHAPES:
    weight, quantized = dense_view(name, params["block"][name]), dense_view(name, four[name])
    step = np.abs(weight).max(axis=0) / 7  # One scale per output channel of the dense view.
    assert (np.abs(quantized - weight) <= step / 2 + 1e-7).all(), name  # Round to nearest.
    levels = np.round(quantized / step)
    np.testing.assert_allclose(quantized, levels * step, rtol=1e-6, err_msg=name)
    assert set(np.unique(levels)) <= set(range(-7, 8)) and (np.abs(levels).max(0) == 7).all(), name
  with pytest.raises(ConfigError, match="supported"):
    attacks.quantize(params, 3)
  with pytest.raises(ConfigError, match=r"'new_kernel'.*no quantization rule"):
    attacks.quantize({"new_kernel": jnp.ones((4, 4))}, 8)
  with pytest.raises(ConfigError, match=r"out_kernel.*does not have the axes \(0, 1\)"):
    attacks.quantize({"out_kernel": jnp.ones((4,))}, 8)


def test_every_weight_of_the_model_has_a_quantization_rule():
  """Every weight of a plain model and of a memory model (whose values quantize per row
  and whose keys stay float32) has a rule, and the rules name no weight neither has."""
  from flax import nnx

  from salmu_jax import config as config_lib
  from salmu_jax.model import factory
  config = config_lib.load_config("configs/tiny.py")
  quantized = {}
  for memory in (False, True):
    config.model.memory.enabled = memory
    _, params = nnx.split(factory.abstract(config, vocab_size=64, memory_rows=8 * memory),
                          nnx.Param)
    rules = {jax.tree_util.keystr(path): shared for (path, _), shared in zip(
        jax.tree_util.tree_leaves_with_path(params), attacks.quantization_axes(params))}
    quantized[memory] = {key.split("'")[-2] for key, shared in rules.items()
                         if shared is not None}
    assert not any(shared for key, shared in rules.items() if "bias" in key or "ln_" in key)
    assert not any(rules[key] for key in rules if key.split("'")[-2] in attacks.KEPT_FLOAT32)
  assert quantized[True] - quantized[False] == {"values"}
  assert quantized[True] == set(attacks.SCALE_SHARED_OVER)


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


@pytest.mark.parametrize("spec, message", [("quantise", "unknown"), ("relearn,relearn", "repeated"),
                                           ("relearn,none", "cannot be combined")])
def test_bad_attack_names_are_named(spec, message):
  with pytest.raises(ConfigError, match=message):
    attacks.parse_attacks(spec)


def attacked(values: dict, relearn_before: float, relearn_after: float | None, int4: float,
             pair: float = 0.5) -> dict:
  """A fake result with membership AUCs and the attacks' raw numbers (`relearn_after`
  None: the relearning fine-tune diverged)."""
  result = fake_result(values)
  result["privacy"] = {name: {"auc": pair} for name in ("pair", "pair_augmented", "identity")}
  relearn = {"before": {"retfail_mrr": relearn_before, "privacy_pair": pair}, "seconds": 2.0}
  if relearn_after is None:
    relearn["failed"] = "the fine-tune diverged (non-finite loss)"
  else:
    relearn["after"] = {"retfail_mrr": relearn_after, "privacy_pair": pair}
  result["attacks"] = {
      "quantize": {"int8": {"1.1_RetFail": values["1.1_RetFail"], "privacy_pair": pair},
                   "int4": {"1.1_RetFail": int4, "privacy_pair": pair}, "seconds": 1.0},
      "relearn": relearn}
  return result


# RetFail MRR of the references: unattacked 0.001 / 0.30 (tests.test_benchmark); on the second
# forget half 0.001 / 0.30 before the fine-tune, 0.011 / 0.25 after it (the fine-tune teaches
# Clean a little and costs Compromised a little); quantized to 4 bits 0.001 / 0.28.
GAP = 0.30 - 0.001
CLEAN_RISE = 0.011 - 0.001
HOLDOUTS = {k: 0.45 for k in ("retrieval/holdout_identity", "retrieval/holdout_association")}


def forgot(retfail: float) -> dict:
  return {**COMPROMISED, "1.1_RetFail": retfail, **HOLDOUTS}


def references():
  return (attacked(CLEAN, 0.001, 0.011, 0.001, pair=0.5),
          attacked(COMPROMISED, 0.30, 0.25, 0.28, pair=0.99))


def back(before: float, share: float) -> float:
  """The second-half RetFail after a fine-tune that brings back `share` of the gap."""
  return before + CLEAN_RISE + share * GAP


def test_superficial_forgetting_is_more_than_half_of_the_gap_brought_back():
  clean, compromised = references()
  halfway = 0.001 + 0.45 * GAP
  runs = {
      # Forgotten and stays forgotten: it rises no more than Clean does.
      ("robust", 1.0): [attacked(forgot(0.01), 0.01, back(0.01, 0.0), 0.01, pair=0.52)],
      # Forgotten by RetFail, but the fine-tune on the other half brings 80% of the gap back.
      ("hidden", 1.0): [attacked(forgot(0.01), 0.01, back(0.01, 0.8), 0.01, pair=0.9)],
      # A small update that rounding to 4 bits undoes.
      ("fragile", 1.0): [attacked(forgot(0.01), 0.01, back(0.01, 0.0), 0.25)],
      # Just past half-way, and the fine-tune brings back 0.15: it lands past half-way to
      # Compromised (0.60), but brought back little: not superficial.
      ("borderline", 1.0): [attacked(forgot(halfway), halfway, back(halfway, 0.15), halfway)],
      # Nothing moves under the attack: no recovery, even though Clean rises.
      ("static", 1.0): [attacked(forgot(0.01), 0.01, 0.01, 0.01)],
      # Never forgot: ineffective, not superficial.
      ("weak", 1.0): [attacked(forgot(0.29), 0.29, 0.29, 0.28)],
      # The fine-tune of this model diverged: relearning cannot say anything about it.
      ("diverged", 1.0): [attacked(forgot(0.01), 0.01, None, 0.01)],
  }
  board = report.leaderboard([clean], [compromised], runs, THRESHOLDS)
  rows = {r["method"]: r for r in board["rows"]}
  assert {name: row["failure_modes"] for name, row in rows.items()} == {
      "robust": [], "hidden": [diagnosis.SUPERFICIAL], "fragile": [diagnosis.SUPERFICIAL],
      "borderline": [], "static": [], "weak": [diagnosis.INEFFECTIVE], "diverged": []}
  attack = lambda name, which="relearn": rows[name]["normalized"]["attacks"][which]
  assert attack("hidden")["recovery"] == pytest.approx(0.8)
  assert attack("hidden")["residual_before"] == pytest.approx((0.01 - 0.001) / GAP)
  assert attack("hidden")["residual_after"] == pytest.approx((0.01 - 0.001) / GAP + 0.8)
  assert attack("hidden")["reference_gap_kept"] == pytest.approx((0.25 - 0.011) / GAP)
  assert attack("hidden")["privleak_after"] == pytest.approx((0.9 - 0.5) / 0.5 * 100)
  assert attack("borderline")["recovery"] == pytest.approx(0.15)
  assert attack("borderline")["residual_after"] == pytest.approx(0.60)
  assert attack("static")["recovery"] == pytest.approx(-CLEAN_RISE / GAP)  # Never positive.
  assert attack("fragile", "quantize_int4")["recovery"] == pytest.approx((0.25 - 0.01) / GAP)
  assert attack("robust", "quantize_int4")["recovery"] == pytest.approx(0.0)
  assert rows["diverged"]["label"] == "none (unchecked: relearn)"
  assert "diverged for the model" in attack("diverged")["unchecked"]
  # Compromised's own recovery is measured, not defined: the fine-tune cost it 0.05.
  assert board["reference_normalized"]["compromised"]["attacks"]["relearn"]["recovery"] == \
      pytest.approx((0.25 - 0.30 - CLEAN_RISE) / GAP)
  header, table = report.privacy_rows(board)
  cell = lambda method, column: next(r for r in table if r[1] == method)[header.index(column)]
  assert cell("diverged", "relearn recovery") == "n/a" and cell("hidden", "relearn recovery") == "+0.80"
  assert rows["robust"]["normalized"]["privleak"]["pair"] == pytest.approx(4.0)
  order = [r["method"] for r in board["rows"]]
  # No failure mode first; the unchecked row after the fully checked ones.
  assert set(order[:3]) == {"robust", "borderline", "static"} and order[3] == "diverged"
  assert header[3:5] == ["pair AUC", "PrivLeak pair"]
  assert table[1][3:5] == ["0.990", "+98.0%"]  # Compromised.
  assert "n/a" in table[0]  # One seed's Clean calibrated against itself: 0.5, but no scores here.


def test_a_seed_whose_fine_tune_diverged_does_not_hide_the_others():
  clean, compromised = references()
  hidden = attacked(forgot(0.01), 0.01, back(0.01, 0.8), 0.01)
  diverged = attacked(forgot(0.01), 0.01, None, 0.01)
  board = report.leaderboard([clean] * 3, [compromised] * 3,
                             {("m", 1.0): [hidden, hidden, diverged]}, THRESHOLDS)
  row = board["rows"][0]
  assert row["failure_modes"] == [diagnosis.SUPERFICIAL]  # From the two seeds that ran.
  assert row["normalized"]["attacks"]["relearn"]["recovery"] == pytest.approx(0.8)
  assert row["normalized"]["attacks"]["relearn"]["diverged_share"] == pytest.approx(1 / 3)
  assert row["per_seed_labels"] == ["superficial forgetting"] * 2 + ["none (unchecked: relearn)"]
  # A resample of the diverged seed alone is unchecked, never superficial by a NaN; one
  # without it is superficial: the seed left out does not enter the mean.
  weights = [0.0, 0.0, 1.0]
  alone = report._weighted_mean([diagnosis.headlines(r) for r in (hidden, hidden, diverged)], weights)
  assert alone["relearn/failed"] == 1.0
  flat = lambda r: diagnosis.headlines(r)
  assert diagnosis.normalize_and_diagnose(alone, flat(clean), flat(compromised),
                                          THRESHOLDS)[1]["failure_modes"] == []
  without = report._weighted_mean([flat(r) for r in (hidden, hidden, diverged)], [0.5, 0.5, 0.0])
  assert without["relearn/after/retfail_mrr"] == pytest.approx(back(0.01, 0.8))


def test_an_attack_the_references_were_not_scored_with_is_unchecked():
  clean, compromised = references()
  for result in (clean, compromised):
    del result["attacks"]["relearn"]
  model = diagnosis.headlines(attacked(forgot(0.01), 0.01, back(0.01, 1.0), 0.01))
  _, verdict = diagnosis.normalize_and_diagnose(model, diagnosis.headlines(clean),
                                                diagnosis.headlines(compromised), THRESHOLDS)
  assert verdict["unchecked"] == {"relearn": "the references were not scored with this attack"}
  assert verdict["failure_modes"] == []


def test_an_attack_the_references_do_not_survive_is_left_unchecked():
  flat = diagnosis.headlines
  model = flat(attacked(forgot(0.01), 0.01, 0.21, 0.2))
  clean = flat(attacked(CLEAN, 0.001, 0.2, 0.2))
  # Under both attacks Compromised falls to Clean's level (0.21 vs 0.2; 0.2 vs 0.2).
  compromised = flat(attacked(COMPROMISED, 0.30, 0.21, 0.2))
  normalized, verdict = diagnosis.normalize_and_diagnose(model, clean, compromised, THRESHOLDS)
  assert verdict["failure_modes"] == []
  assert set(verdict["unchecked"]) == {"relearn", "quantize_int4"}
  assert "keep 0.03 of their RetFail gap" in verdict["unchecked"]["relearn"]
  assert verdict["label"] == "none (unchecked: relearn, quantize_int4)"
  # With the guard off, the model would pass an attack that erased what everyone knew: a
  # vacuous pass, which the guard turns into "unchecked".
  loose = THRESHOLDS.copy_and_resolve_references()
  loose.min_attack_gap_fraction = 1e-9
  vacuous = diagnosis.normalize_and_diagnose(model, clean, compromised, loose)[1]
  assert vacuous["failure_modes"] == [] and set(vacuous["unchecked"]) == {"quantize_int4"}
  # A recovery that cannot be computed (a NaN RetFail after the attack) fails the check.
  broken = dict(model, **{"quantize/int8/1.1_RetFail": float("nan")})
  assert diagnosis.SUPERFICIAL in diagnosis.normalize_and_diagnose(
      broken, clean, flat(attacked(COMPROMISED, 0.30, 0.25, 0.28)), THRESHOLDS)[1]["failure_modes"]


def test_seeds_scored_with_different_attacks_are_refused():
  one = diagnosis.headlines(attacked(CLEAN, 0.001, 0.01, 0.001))
  other = {k: v for k, v in one.items() if not k.startswith("quantize/")}
  with pytest.raises(ValueError, match="the 1st and the 2nd seed's differ in quantize/int4/1.1_RetFail"):
    report.summarize([one, other])
  with pytest.raises(ValueError, match="scored differently"):
    report.summarize([other, one])


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
