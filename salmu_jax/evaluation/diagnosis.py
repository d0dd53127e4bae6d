"""From results to verdicts: headline numbers, normalization and failure modes (NumPy only).

Everything here reads result dicts (salmu_jax.evaluation.evaluator's JSON) or the flat
`headlines` of them, so that a leaderboard can be rebuilt, and a verdict checked, from
the JSON files alone (docs/protocol.md §3).
"""
import math

from salmu_jax.errors import ConfigError
from salmu_jax.evaluation import metrics, privacy

# The official JSON keys, in the official order (SALMUBENCH.md §3); the registry
# (evaluation/registry.py) registers one evaluator per key.
OFFICIAL = {"efficacy": ("1.1_RetFail", "1.2_AssocStr", "1.3_ACS", "1.4_IdZSC", "1.5_CoreAssoc"),
            "utility": ("2.1_GenKnow", "2.2_InterIdSim", "2.3_IntraIdSim", "2.4_VisIdInt",
                        "2.5_FragSim")}
# The original's three failure modes and ours, representation collapse and superficial
# forgetting (docs/protocol.md §3), as diagnosis labels.
INEFFECTIVE, OVERGENERALIZED, CATASTROPHIC, COLLAPSE, SUPERFICIAL = FAILURE_MODES = (
    "ineffective forgetting", "over-generalized forgetting", "catastrophic damage",
    "representation collapse", "superficial forgetting")
# Membership attacks (evaluation/privacy.py) whose AUCs the headlines carry; the leaderboard
# adds the calibrated ones ("privacy/pair_calibrated", ...) from two results' scores.
PRIVACY_ATTACKS = ("pair", "pair_augmented", "identity")
# Each image's own caption retrieved in a gallery built like 1.1_RetFail's; the splits a
# model must keep (holdouts: what only Compromised learned; retain: what both learned).
RETRIEVAL_SPLITS = ("holdout_identity", "holdout_association", "retain_joint", "fragile")
# Those the utility summary reads. Not the fragile set: it is chosen as the retain pairs
# Compromised knows least (its retrieval MRR is a few times chance), so a ratio to
# Compromised's would mostly measure noise; it stays in the extended block and the tables.
KEPT_RETRIEVAL = ("holdout_identity", "holdout_association", "retain_joint")


def official_metrics() -> list:
  """[(group, key)] of the ten official metrics, in order."""
  return [(group, key) for group, keys in OFFICIAL.items() for key in keys]


def headline(result: dict, group: str, key: str) -> float:
  """The number a metric is judged by: MRR for RetFail, else its first value."""
  value = result[group][key]
  return value["MRR"] if key == "1.1_RetFail" else value.get("mean", value.get("accuracy"))


def headlines(result: dict, calibrate_with: dict | None = None) -> dict:
  """The flat numbers that normalization, diagnosis and the leaderboard read: each official
  metric's headline, own-caption MRR per RETRIEVAL_SPLITS ("retrieval/SPLIT"), the spread
  of images and of captions (1 - mean cosine between different items) and GenKnow's
  chance level. Seed means of these are what a leaderboard row is judged by."""
  if "extended" not in result:
    raise ConfigError("a result without the `extended` block (written by an older version); "
                      "evaluate its checkpoint again")
  try:
    flat = {key: headline(result, group, key) for group in ("efficacy", "utility")
            for key in result[group]}
    extended = result["extended"]
    for split in RETRIEVAL_SPLITS:
      flat[f"retrieval/{split}"] = extended["retrieval"][split]["MRR"]
    flat["spread/image"] = 1 - extended["collapse"]["image_cosine"]
    flat["spread/caption"] = 1 - extended["collapse"]["caption_cosine"]
    flat["genknow_chance"] = 1 / result["utility"]["2.1_GenKnow"]["classes"]
    flat |= attack_headlines(result)
    if calibrate_with is not None and all("scores" in d.get("privacy", {}).get(name, {})
                                          for d in (result, calibrate_with)
                                          for name in privacy.CALIBRATED):
      flat |= {f"privacy/{name}": auc for name, auc in privacy.calibrated_aucs(
          result["privacy"], calibrate_with["privacy"]).items()}
  except (KeyError, TypeError) as e:
    raise ConfigError(f"a result without {e} where salmu_jax.evaluation writes it; evaluate "
                      f"its checkpoint again") from None
  return flat


def attack_headlines(result: dict) -> dict:
  """The membership AUCs ("privacy/ATTACK") and the raw numbers of the attacks on
  forgetting ("quantize/intB/KEY", "relearn/before|after/KEY", "relearn/failed": 1 when
  the relearning fine-tune diverged, its "after" numbers then NaN) that a result holds."""
  flat = {}
  for name in PRIVACY_ATTACKS:
    if name in result.get("privacy", {}):
      flat[f"privacy/{name}"] = result["privacy"][name]["auc"]
  attacks = result.get("attacks", {})
  for bits, values in attacks.get("quantize", {}).items():
    if bits != "seconds":
      flat |= {f"quantize/{bits}/{key}": value for key, value in values.items()}
  if "relearn" in attacks:
    relearn = attacks["relearn"]
    flat["relearn/failed"] = float("failed" in relearn)
    flat |= {f"relearn/before/{key}": value for key, value in relearn["before"].items()}
    flat |= {f"relearn/after/{key}": relearn["after"][key] if "after" in relearn else float("nan")
             for key in relearn["before"]}
  return flat


def _share_of_gap(value: float, clean: float, compromised: float) -> float:
  """Where `value` lies from Clean's level (0) to Compromised's (1); NaN without a gap."""
  gap = compromised - clean
  return float((value - clean) / gap) if gap else float("nan")


# The attacks of `attack_recovery`: (key of RetFail before, after, the attacked pair AUC).
ATTACK_KEYS = {"relearn": ("relearn/before/retfail_mrr", "relearn/after/retfail_mrr",
                           "relearn/after/privacy_pair"),
               **{f"quantize_{bits}": ("1.1_RetFail", f"quantize/{bits}/1.1_RetFail",
                                       f"quantize/{bits}/privacy_pair") for bits in ("int8", "int4")}}
# Headlines of a relearned copy: NaN in a result whose fine-tune diverged, so seed means
# (report.summarize, and the bootstrap's) average them over the seeds where it ran.
RAN_ONLY_PREFIX = "relearn/after/"


def attack_recovery(values: dict, clean: dict, compromised: dict, min_gap_fraction: float) -> dict:
  """What each attack brings back, from `headlines` of a model and of the two references
  that went through the same attack. RetFail MRR as a share of the references' gap
  before the attack (0 = Clean's level, 1 = Compromised's; relearning: on the second
  forget half): `residual_before`, and `recovery` = the model's change under the attack
  minus Clean's change under the same attack, over that gap (Deeb & Roger: what comes
  back beyond what the same fine-tune teaches a model that never learned it);
  `residual_after` = residual_before + recovery. `reference_gap_kept` = the references'
  gap under the attack over theirs before it; Compromised's own recovery is measured
  like any model's (the fine-tune on one half costs it some of the other). An attack
  cannot show anything, and is `unchecked` with why, when the references were not scored
  with it, when they keep less than `min_gap_fraction` of their gap under it, or when
  its fine-tune diverged for the model or a reference in every seed. Membership after the
  attack: PrivLeak against Clean attacked alike (`privleak_after`)."""
  out = {}
  for attack, (before_key, after_key, pair_key) in ATTACK_KEYS.items():
    if after_key not in values:
      continue
    if not all(after_key in d for d in (clean, compromised)):
      out[attack] = {"unchecked": "the references were not scored with this attack"}
      continue
    gap = compromised[before_key] - clean[before_key]
    share = lambda change: float(change / gap) if gap else float("nan")
    before = _share_of_gap(values[before_key], clean[before_key], compromised[before_key])
    recovery = share((values[after_key] - values[before_key])
                     - (clean[after_key] - clean[before_key]))
    kept = share(compromised[after_key] - clean[after_key]) if gap > 0 else float("nan")
    result = out[attack] = {"residual_before": before, "residual_after": before + recovery,
                            "recovery": recovery, "reference_gap_kept": kept}
    diverged = [name for name, d in (("the model", values), ("Clean", clean),
                                     ("Compromised", compromised))
                if attack == "relearn" and d.get("relearn/failed", 0) >= 1]
    if diverged:
      result["unchecked"] = (f"the relearning fine-tune diverged for {', '.join(diverged)} "
                             f"(non-finite loss or embeddings)")
    elif not kept >= min_gap_fraction:
      result["unchecked"] = (
          f"under the attack the references keep {kept:.2f} of their RetFail gap "
          f"({clean[after_key]:.4f} vs {compromised[after_key]:.4f}), under "
          f"eval.min_attack_gap_fraction={min_gap_fraction:g}: the attack cannot tell "
          f"hidden knowledge from removed")
    if attack == "relearn" and 0 < values.get("relearn/failed", 0) < 1:
      result["diverged_share"] = values["relearn/failed"]  # Of the seeds: the rest measured.
    if all(pair_key in d for d in (values, clean)):
      result["privleak_after"] = metrics.priv_leak(values[pair_key], clean[pair_key])
  return out


def request_normalized(block: dict, clean: dict, compromised: dict) -> dict:
  """Normalized efficacy (0 = Compromised's level, 1 = Clean's) of each side of a deletion
  request's block (registry.request_block), against the references' blocks of the same
  request: the requested pairs should reach 1, the pairs not requested stay at 0."""
  if not block["requested_sha256"] == clean["requested_sha256"] == compromised["requested_sha256"]:
    raise ConfigError("the references were scored on another deletion request (their "
                      "requested_sha256 differ); score them with the same --requested")
  out = {}
  for side in ("requested", "not_requested"):
    if side in block:
      value = lambda result, key: headline({"efficacy": result[side]}, "efficacy", key)
      out[side] = {key: metrics.normalized_score(value(block, key), value(compromised, key),
                                                 value(clean, key), "efficacy")
                   for key in block[side]}
  return out


def privacy_leakage(values: dict, clean: dict) -> dict:
  """PrivLeak (percent) of every membership AUC both `headlines` hold, against Clean's."""
  return {key.split("/", 1)[1]: metrics.priv_leak(values[key], clean[key])
          for key in values if key.startswith("privacy/") and key in clean}


def check_references(clean: dict, compromised: dict) -> None:
  """Refuses reference results that cannot be the two references: the same result twice
  (every normalized score would be 0/0), or a Clean that retrieves the forget set better
  than Compromised (swapped files: every verdict would flip). `headlines` of each."""
  if clean == compromised:
    raise ConfigError("the Clean and Compromised results are identical (the same file "
                      "twice?); normalization needs both references")
  if not clean["1.1_RetFail"] < compromised["1.1_RetFail"]:
    raise ConfigError(f"Clean's RetFail MRR {clean['1.1_RetFail']:.4f} is not below "
                      f"Compromised's {compromised['1.1_RetFail']:.4f}: are --clean and "
                      f"--compromised swapped?")


def knowledge_kept(values: dict, clean: dict, compromised: dict) -> dict:
  """What a model still tells apart, 1 = Compromised's level: GenKnow above chance as a
  share of Compromised's; holdout retrieval between Clean (0: never learned) and
  Compromised (1); retain_joint retrieval (both references learned it) as a ratio."""
  chance = compromised["genknow_chance"]
  kept = {"2.1_GenKnow": metrics.kept_above_chance(values["2.1_GenKnow"],
                                                   compromised["2.1_GenKnow"], chance)}
  for split in KEPT_RETRIEVAL:
    key = f"retrieval/{split}"
    if split.startswith("holdout"):
      kept[key] = 1 - metrics.normalized_score(values[key], compromised[key], clean[key],
                                               "efficacy")
    else:
      kept[key] = metrics.normalized_score(values[key], compromised[key], clean[key], "utility")
  return kept


def normalize_and_diagnose(values: dict, clean: dict, compromised: dict, thresholds) -> tuple:
  """Normalized scores and failure modes from `headlines(...)` of a model and the two
  references (docs/protocol.md §3). The official ten are normalized as before; the
  diagnosis reads what the model still discriminates (`kept`), not mean cosines, which
  a collapsed model keeps high."""
  normalized = {"efficacy": {}, "utility": {}}
  for group, key in official_metrics():
    normalized[group][key] = metrics.normalized_score(values[key], compromised[key], clean[key],
                                                      group)
  normalized["kept"] = kept = knowledge_kept(values, clean, compromised)
  normalized["privleak"] = privacy_leakage(values, clean)
  normalized["attacks"] = recovered = attack_recovery(values, clean, compromised,
                                                      thresholds.min_attack_gap_fraction)
  margins = criterion_margins(normalized, values, clean, compromised, thresholds)
  # Each check passes only when its margin is at least 0, so a number that cannot be
  # computed (NaN: a degenerate reference) fails it instead of passing silently.
  modes = [mode for mode in FAILURE_MODES[:4] if not margins[mode] >= 0]
  # Forgotten by the behavioural metrics, but an attack brings back more than
  # `superficial_recovery_above` of the gap (a recovery that cannot be computed fails).
  unchecked = {name: attack["unchecked"] for name, attack in recovered.items()
               if "unchecked" in attack}
  if INEFFECTIVE not in modes and SUPERFICIAL in margins and not margins[SUPERFICIAL] >= 0:
    modes.append(SUPERFICIAL)
  label = ", ".join(modes) or "none"
  if unchecked:
    label += f" (unchecked: {', '.join(unchecked)})"
  return normalized, {"failure_modes": modes, "label": label, "unchecked": unchecked,
                      "margins": margins}


def criterion_margins(normalized: dict, values: dict, clean: dict, compromised: dict,
                      thresholds) -> dict:
  """{failure mode: how far its number lies on the passing side of its threshold}: the
  mode is diagnosed when the margin is below 0 or NaN. Superficial forgetting's is left out
  when no attack was checked. A verdict whose margins are small beside the seeds' spread
  may come out otherwise on other seeds (report.settled)."""
  kept = normalized["kept"]
  margins = {
      INEFFECTIVE: _margin(normalized["efficacy"]["1.1_RetFail"], thresholds.ineffective_below),
      OVERGENERALIZED: _least(_margin(kept[f"retrieval/{split}"], thresholds.overgeneralized_below)
                              for split in ("holdout_identity", "holdout_association")),
      CATASTROPHIC: _margin(kept["2.1_GenKnow"], 1 - thresholds.catastrophic_drop_fraction),
      COLLAPSE: _least(_margin(values[key], thresholds.collapse_spread_ratio
                               * min(clean[key], compromised[key]))
                       for key in ("spread/image", "spread/caption"))}
  recoveries = [attack["recovery"] for attack in normalized["attacks"].values()
                if "unchecked" not in attack]
  if recoveries:
    margins[SUPERFICIAL] = _least(_margin(thresholds.superficial_recovery_above, r)
                                  for r in recoveries)
  return {mode: float(margin) for mode, margin in margins.items()}


def _margin(value, threshold) -> float:
  """value - threshold, whose sign is the check `value >= threshold` (NaN: fails), also
  where both are the same infinity (0: passes)."""
  difference = value - threshold
  return 0.0 if difference != difference and value >= threshold else difference


def _least(margins) -> float:
  """The smallest margin, NaN if any is NaN (a check that cannot be computed fails)."""
  margins = list(margins)
  return math.nan if any(m != m for m in margins) else min(margins)
