"""The leaderboard, the soundness checks and the HTML report of a benchmark run.

Input: evaluation results (salmu_jax.evaluation's JSON dicts) of Clean, Compromised and
every (method, budget), one per seed. Everything here is arithmetic and drawing on
those dicts, so a leaderboard can be rebuilt from the JSON files alone.
"""
import base64
import datetime
import functools
import html
import io
import itertools
import math

import numpy as np
from scipy import special

from salmu_jax.evaluation import diagnosis as diagnosis_lib, metrics as metrics_lib, privacy

METRICS = diagnosis_lib.official_metrics()  # [(group, key)] in the official order.
SHORT = {key: key.split("_", 1)[1] for _, key in METRICS}  # "1.1_RetFail" -> "RetFail"
# The discriminative numbers (diagnosis_lib.headlines) shown beside the official ten.
EXTENDED_COLUMNS = {"retrieval/holdout_identity": "holdout_identity MRR",
                    "retrieval/holdout_association": "holdout_association MRR",
                    "retrieval/retain_joint": "retain_joint MRR",
                    "retrieval/fragile": "fragile MRR",
                    "spread/image": "image spread", "spread/caption": "caption spread"}
MODE_COLORS = {"none": "#2a9d8f", diagnosis_lib.INEFFECTIVE: "#8d99ae",
               diagnosis_lib.OVERGENERALIZED: "#e76f51", diagnosis_lib.CATASTROPHIC: "#9b2226",
               diagnosis_lib.COLLAPSE: "#f4a261", diagnosis_lib.SUPERFICIAL: "#457b9d",
               "several": "#6a4c93"}
# The privacy table's columns: (label, where in a row's `normalized` or `metrics`).
PRIVACY_COLUMNS = (
    ("pair AUC", ("metrics", "privacy/pair")),
    ("PrivLeak pair", ("privleak", "pair")),
    ("PrivLeak pair augm.", ("privleak", "pair_augmented")),
    ("PrivLeak pair calibr.", ("privleak", "pair_calibrated")),
    ("identity AUC", ("metrics", "privacy/identity")),
    ("PrivLeak identity", ("privleak", "identity")),
    ("PrivLeak identity calibr.", ("privleak", "identity_calibrated")),
    ("relearn recovery", ("attacks", "relearn", "recovery")),
    ("PrivLeak after relearn", ("attacks", "relearn", "privleak_after")),
    ("int8 recovery", ("attacks", "quantize_int8", "recovery")),
    ("int4 recovery", ("attacks", "quantize_int4", "recovery")),
    ("PrivLeak after int4", ("attacks", "quantize_int4", "privleak_after")))
ROC_GRID = np.linspace(0, 1, 51)  # False positive rates at which ROC curves are stored.
# Exact bootstrap over seeds up to this many seeds (462 resamples at 6); Monte Carlo above.
EXACT_BOOTSTRAP_SEEDS, MONTE_CARLO_RESAMPLES = 6, 1000


def spread(values) -> dict:
  values = np.asarray(values, float)
  return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
          "n": int(len(values))}


def summarize(flat_results: list) -> dict:
  """{key: {mean, std, n}} over seeds of diagnosis_lib.headlines(...) dicts, which must
  hold the same numbers (results scored alike: the same attacks)."""
  keys = set(flat_results[0])
  for position, flat in enumerate(flat_results[1:], 2):
    if set(flat) != keys:
      differ = sorted(keys ^ set(flat))
      raise ValueError(f"results scored differently across seeds: the 1st and the "
                       f"{ordinal(position)} seed's "
                       f"differ in {', '.join(differ[:4])}{', ...' if len(differ) > 4 else ''}; "
                       f"score them again with the same --attacks")
  return {key: spread(_ran([r[key] for r in flat_results], key)) for key in flat_results[0]}


def ordinal(n: int) -> str:
  """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 22nd, ..."""
  suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
  return f"{n}{suffix}"


def _ran(values: list, key: str, weights=None):
  """The seeds' values of `key` (and their weights) that a seed mean averages: those of
  the seeds with weight, and for a relearned copy's numbers only the seeds where its
  fine-tune ran (NaN where it diverged; none ran: NaN)."""
  values = np.asarray(values, float)
  keep = np.ones(len(values), bool) if weights is None else np.asarray(weights) > 0
  if key.startswith(diagnosis_lib.RAN_ONLY_PREFIX) and np.isfinite(values[keep]).any():
    keep &= np.isfinite(values)
  return values[keep] if weights is None else (values[keep], np.asarray(weights)[keep])


def scores(normalized: dict) -> dict:
  """Two summary numbers: mean normalized efficacy over the official five (0 =
  Compromised, 1 = Clean) and mean knowledge kept (normalized["kept"]: GenKnow above
  chance and own-caption retrieval on the holdouts and retain_joint, 1 = Compromised),
  each clipped to [0, 1] first so that overshooting on one cannot hide another (a number
  that cannot be computed counts as 0); and their harmonic mean, which is high only when
  both are. Utility reads what a model still tells apart, not mean cosines, which a
  collapsed model keeps high."""
  clipped = lambda values: [np.nan_to_num(np.clip(v, 0, 1)) for v in values.values()]
  efficacy = float(np.mean(clipped(normalized["efficacy"])))
  utility = float(np.mean(clipped(normalized["kept"])))
  balanced = 2 * efficacy * utility / (efficacy + utility) if efficacy + utility > 0 else 0.0
  return {"efficacy": efficacy, "utility": utility, "balanced": float(balanced)}


def _judge(values: dict, clean: dict, compromised: dict, thresholds) -> tuple:
  normalized, diagnosis = diagnosis_lib.normalize_and_diagnose(values, clean, compromised, thresholds)
  return normalized, diagnosis, scores(normalized)


def _rank_order(judged: dict) -> list:
  """Row keys best first: fewer failure modes, then fully checked before a row with an
  attack left unchecked (one that could not show anything has not passed), then a higher
  balanced score."""
  return sorted(judged, key=lambda k: (len(judged[k][1]["failure_modes"]),
                                       bool(judged[k][1]["unchecked"]),
                                       -judged[k][2]["balanced"], k[0], k[1]))


def _weighted_mean(flat_results: list, weights) -> dict:
  """A bootstrap resample's seed mean: seeds left out (weight 0) do not enter, NaN
  included."""
  means = {}
  for key in flat_results[0]:
    values, kept = _ran([r[key] for r in flat_results], key, weights)
    means[key] = float(np.dot(kept, values) / kept.sum()) if kept.sum() else float("nan")
  return means


def seed_resamples(n: int) -> list:
  """(weights over the n seeds, probability) of every bootstrap resample: exact (each
  multiset of seeds with its multinomial probability) up to EXACT_BOOTSTRAP_SEEDS seeds,
  else MONTE_CARLO_RESAMPLES draws with a fixed seed. Seeds are paired: a resample takes
  a seed's references and unlearned models together."""
  if n <= EXACT_BOOTSTRAP_SEEDS:
    resamples = []
    for combo in itertools.combinations_with_replacement(range(n), n):
      counts = np.bincount(combo, minlength=n)
      ways = math.factorial(n) / np.prod([math.factorial(c) for c in counts])
      resamples.append((counts / n, ways / n ** n))
    return resamples
  rng = np.random.default_rng(0)
  return [(np.bincount(rng.integers(n, size=n), minlength=n) / n, 1 / MONTE_CARLO_RESAMPLES)
          for _ in range(MONTE_CARLO_RESAMPLES)]


def seed_bootstrap(clean: list, compromised: list, runs: dict, thresholds, confidence: float,
                   undecided=None, open_checks=None, shared_open=frozenset()) -> tuple:
  """What these seeds settle, from the seed means of every bootstrap resample:
  ({row key: (low, high)}, the central `confidence` share of each row's rank: two rows
  whose intervals overlap are not told apart; {row key: {failure modes (frozenset):
  probability}}: how often each verdict comes out).

  undecided: {row key: failure modes (`undecided_modes`)} that another draw of seeds may
  decide either way, which the resamples of a few seeds under-read. Rows are ranked by their
  number of failure modes first, so in each resample a row's low end is its rank with the
  fewest failure modes its undecided ones allow against every other row with the most
  theirs allow, and its high end the reverse: in that resample, a row whose high end lies
  above another's low end stays above it however those verdicts come out.

  A row with an attack left unchecked ranks below the fully checked rows of its failure
  count, and another draw may check an attack or not (`open_attacks`). open_checks: {row
  key: attacks open for that row alone} (its relearning diverged on some seeds): its low
  end takes them as checked, its high end as unchecked. shared_open: attacks open for every
  row at once (the references'), which leave every row unchecked or none: the ends are
  taken over both cases."""
  undecided, open_checks = undecided or {}, open_checks or {}
  best, worst = {key: [] for key in runs}, {key: [] for key in runs}
  verdicts = {key: {} for key in runs}
  for weights, probability in seed_resamples(len(clean)):
    clean_mean, compromised_mean = (_weighted_mean(r, weights) for r in (clean, compromised))
    means = {key: _weighted_mean(results, weights) for key, results in runs.items()}
    judged = {key: _judge(means[key], clean_mean, compromised_mean, thresholds)
              for key in runs}
    fewest, most, cases = {}, {}, [{}, {}] if shared_open else [{}]
    for key, (_, diagnosis, row_scores) in judged.items():
      modes = frozenset(diagnosis["failure_modes"])
      verdicts[key][modes] = verdicts[key].get(modes, 0.0) + probability
      fewest[key], most[key] = _count_range(modes, frozenset(undecided.get(key, ())))
      # _rank_order's key after the count: unchecked, then the balanced score.
      rest = (-row_scores["balanced"], key[0], key[1])
      row_open = open_checks.get(key, frozenset())
      unchecked = set(diagnosis["unchecked"]) - set(shared_open)
      if "relearn" in shared_open and means[key].get("relearn/failed", 0) >= 1:
        unchecked.add("relearn")  # Diverged on every seed drawn: the row's own.
      # The shared attacks checked: (best, worst); unchecked: every row is.
      cases[0][key] = ((bool(unchecked - row_open),) + rest, (bool(unchecked | row_open),) + rest)
      if shared_open:
        cases[1][key] = ((True,) + rest,) * 2
    for key in runs:
      above = lambda counts, ties, this: sum((counts[o], ties[o]) < this for o in runs if o != key)
      best[key].append((min(1 + above(most, {o: t[1] for o, t in ties.items()},
                                      (fewest[key], ties[key][0])) for ties in cases), probability))
      worst[key].append((max(1 + above(fewest, {o: t[0] for o, t in ties.items()},
                                       (most[key], ties[key][1])) for ties in cases), probability))
  intervals = {key: (_quantile(best[key], (1 - confidence) / 2),
                     _quantile(worst[key], (1 + confidence) / 2)) for key in runs}
  return intervals, verdicts


@functools.lru_cache(maxsize=None)
def _count_range(modes: frozenset, undecided: frozenset) -> tuple:
  """(fewest, most) failure modes a row with these can have when each undecided one may
  come out either way. Superficial forgetting is judged only on a row that is not
  ineffective, so no outcome counts both."""
  counts = []
  for size in range(len(undecided) + 1):
    for chosen in itertools.combinations(sorted(undecided), size):
      outcome = set(modes - undecided) | set(chosen)
      if diagnosis_lib.INEFFECTIVE in outcome:
        outcome.discard(diagnosis_lib.SUPERFICIAL)
      counts.append(len(outcome))
  return min(counts), max(counts)


def _quantile(draws: list, share: float) -> int:
  """The smallest rank at or below which `share` of the (rank, probability) draws lie."""
  values = np.array(sorted(draws))
  cumulative = np.cumsum(values[:, 1]) / values[:, 1].sum()
  return int(values[np.searchsorted(cumulative, share - 1e-12), 0])


def leaderboard(clean: list, compromised: list, runs: dict, thresholds,
                confidence: float = 0.9) -> dict:
  """clean/compromised: per-seed results; runs: {(method, budget): [per-seed results]},
  seed lists in the same order.

  Normalization and diagnosis use seed means (references of the same seeds). Rows are
  ordered by the number of failure modes, then by the balanced score; each carries the
  rank interval of the seed bootstrap, widened by the verdicts another draw of seeds may
  decide otherwise, and how often the bootstrap gives its failure modes (`seed_bootstrap`).
  """
  if not clean:
    raise ValueError("a leaderboard needs the references' results of at least one seed")
  uneven = [key for key, results in runs.items() if len(results) != len(clean)]
  if len(compromised) != len(clean) or uneven:
    raise ValueError(f"every row needs one result per seed ({len(clean)}); uneven: "
                     f"{uneven or 'compromised'}")
  # Calibrated membership attacks subtract a Clean's scores: another seed's when there are
  # several (an independent model of the same data), else the same one's (docs/protocol.md §3).
  flat = lambda results: [diagnosis_lib.headlines(r, calibrate_with=clean[(i + 1) % len(clean)])
                          for i, r in enumerate(results)]
  clean_flat, compromised_flat = flat(clean), flat(compromised)
  runs_flat = {key: flat(results) for key, results in runs.items()}
  references = {"clean": summarize(clean_flat), "compromised": summarize(compromised_flat)}
  mean = lambda summary: {key: value["mean"] for key, value in summary.items()}
  clean_mean, compromised_mean = mean(references["clean"]), mean(references["compromised"])
  judged, rows = {}, {}
  for key, results in runs_flat.items():
    summary = summarize(results)
    judged[key] = _judge(mean(summary), clean_mean, compromised_mean, thresholds)
    normalized, diagnosis, row_scores = judged[key]
    # Each seed's own verdict (its run against its references): a seed mean can average
    # one collapsed seed into a clean label.
    per_seed = [_judge(r, c, p, thresholds) for r, c, p in
                zip(results, clean_flat, compromised_flat)]
    rows[key] = {"method": key[0], "budget": key[1], "metrics": summary,
                 "normalized": normalized, "scores": row_scores,
                 "failure_modes": diagnosis["failure_modes"], "label": diagnosis["label"],
                 "per_seed_labels": [d["label"] for _, d, _ in per_seed],
                 "margins": replication_margins(diagnosis["margins"],
                                                [d["margins"] for _, d, _ in per_seed], confidence),
                 "attack_margins": _margins(recovery_margins(normalized, thresholds),
                                            [recovery_margins(n, thresholds) for n, _, _ in per_seed],
                                            per_threshold(diagnosis["margins"], confidence)),
                 "leakage_rate": spread([r["breakdown"]["leakage_rate"] for r in runs[key]]),
                 "attack_seconds": attack_seconds(runs[key])}
  # One seed tells no rows apart (has_spread) and measures no margin: nothing to widen.
  several = len(clean) > 1
  checkability = attack_checkability(clean_mean, compromised_mean, clean_flat, compromised_flat,
                                     thresholds, confidence)
  shared_open = open_attacks(checkability, clean_flat, compromised_flat) if several else []
  open_checks = {key: frozenset(open_attacks({}, results) if several else ())
                 for key, results in runs_flat.items()}
  for key in rows:
    rows[key]["checkability_near"] = sorted(set(shared_open) | open_checks[key])
  undecided = {key: undecided_modes(row) for key, row in rows.items()} if several else {}
  intervals, verdicts = seed_bootstrap(clean_flat, compromised_flat, runs_flat, thresholds,
                                       confidence, undecided, open_checks,
                                       frozenset(shared_open))
  ordered = []
  for rank, key in enumerate(_rank_order(judged), 1):
    # The seed mean's own rank lies inside (from 5 seeds on, the resample that takes each
    # seed once can fall outside the central share).
    low, high = intervals[key]
    rows[key]["rank"], rows[key]["rank_interval"] = rank, [min(low, rank), max(high, rank)]
    # The share of resamples whose seed mean gives this row's failure modes. Below
    # `confidence` another seed draw, or another machine's rounding, may well change them.
    total = sum(verdicts[key].values())
    rows[key]["failure_modes_support"] = round(
        verdicts[key].get(frozenset(rows[key]["failure_modes"]), 0.0) / total, 4)
    ordered.append(rows[key])
  clean_scores = _judge(clean_mean, clean_mean, compromised_mean, thresholds)[2]
  reference_normalized = {name: _judge(values, clean_mean, compromised_mean, thresholds)[0]
                          for name, values in (("clean", clean_mean),
                                               ("compromised", compromised_mean))}
  return {"references": references, "rows": ordered,
          "reference_normalized": reference_normalized,
          "attack_checkability": checkability,
          "ineffective_below": thresholds.ineffective_below,
          "superficial_recovery_above": thresholds.superficial_recovery_above,
          "reference_attack_seconds": {"clean": attack_seconds(clean),
                                       "compromised": attack_seconds(compromised)},
          "roc_pair": roc_curves(clean[0], compromised[0], {k: r[0] for k, r in runs.items()}),
          "per_seed": {"clean": clean_flat, "compromised": compromised_flat},
          "rank_confidence": confidence,
          "reference_scores": {"clean": clean_scores,
                               "compromised": {"efficacy": 0.0, "utility": 1.0, "balanced": 0.0}}}


def replication_margins(mean_margins: dict, per_seed_margins: list, confidence: float) -> dict:
  """{failure mode: {"mean": the seed mean's margin (diagnosis.criterion_margins), "per_seed":
  each seed's, "needed": how far from 0 it must lie for another draw of as many seeds to
  land on the same side (`prediction_margin`)}}, at `confidence` shared out over the k
  thresholds the verdict is judged at (1 - (1 - confidence) / k each, so that the verdict as
  a whole holds at `confidence`). A seed bootstrap of three seeds knows only 10 resamples and
  under-reads their spread, so a mean just past a threshold can be settled by it and come
  out otherwise on other seeds."""
  return _margins(mean_margins, per_seed_margins, per_threshold(mean_margins, confidence))


def per_threshold(mean_margins: dict, confidence: float) -> float:
  """The confidence each of a verdict's judged thresholds is held at (`shared_confidence`)."""
  return shared_confidence(confidence, len(judged_modes(mean_margins)))


def shared_confidence(confidence: float, thresholds: int) -> float:
  """1 - (1 - confidence) / k for each of k thresholds, so that a verdict that holds only
  when all of them do holds at `confidence`."""
  return 1 - (1 - confidence) / max(thresholds, 1)


def _margins(mean_margins: dict, per_seed_margins: list, confidence: float) -> dict:
  out = {}
  for name, value in mean_margins.items():
    seeds = [m.get(name, math.nan) for m in per_seed_margins]
    out[name] = {"mean": value, "per_seed": seeds, "needed": prediction_margin(seeds, confidence)}
  return out


def prediction_margin(per_seed: list, confidence: float) -> float:
  """How far from 0 a seed mean must lie for another draw of as many seeds to land on the
  same side at `confidence`: the one-sided Student-t prediction margin for the difference of
  two means of n seeds, t(n-1) * sd * sqrt(2 / n), over the finite values (NaN with fewer
  than two)."""
  finite = [m for m in per_seed if math.isfinite(m)]
  if len(finite) < 2:
    return math.nan
  n = len(finite)
  # special.stdtrit: the Student-t quantile (scipy.stats.t.ppf's, without importing
  # scipy.stats, ~0.6 s on every start of a CLI that reads reports).
  return float(special.stdtrit(n - 1, confidence) * np.std(finite, ddof=1) * math.sqrt(2 / n))


def judged_modes(mean_margins: dict) -> list:
  """The failure modes a verdict is judged at, by their seed-mean margins: a number that
  cannot be computed (NaN) fails its check on any draw of seeds, and superficial forgetting
  is not judged on a row that is ineffective."""
  ineffective = mean_margins[diagnosis_lib.INEFFECTIVE]
  return [mode for mode in diagnosis_lib.FAILURE_MODES  # In this order, however stored.
          if mode in mean_margins and math.isfinite(mean_margins[mode])
          and not (mode == diagnosis_lib.SUPERFICIAL and not ineffective >= 0)]


def near_thresholds(row: dict) -> list:
  """The failure modes whose threshold the row's seed mean lies within the replication
  margin of (`replication_margins`): another draw of seeds may decide them otherwise. One
  whose margin was not measured (fewer than two seeds with a finite number) counts as near.
  Superficial forgetting also counts as near on a row that is not ineffective when another
  draw may find an attack checkable or not (`checkability_near`) whose recovery is not
  clearly below the superficial threshold (`attack_margins`): it would enter the verdict,
  or leave it."""
  margins = row["margins"]
  near = {mode for mode in judged_modes({mode: m["mean"] for mode, m in margins.items()})
          if not abs(margins[mode]["mean"]) > margins[mode]["needed"]}
  if _open_recoveries(row) and margins[diagnosis_lib.INEFFECTIVE]["mean"] >= 0:
    near.add(diagnosis_lib.SUPERFICIAL)
  return [mode for mode in diagnosis_lib.FAILURE_MODES if mode in near]


def _open_recoveries(row: dict) -> list:
  """The attacks of `checkability_near` whose recovery lies past or within the replication
  margin of the superficial threshold (NaN: not clearly below; a recovery that cannot be
  computed fails the check): whether they are checked decides the verdict. A relearning
  that diverged on every seed of the row is unchecked for it on any draw and enters none."""
  def clearly_below(attack):
    margin = row["attack_margins"].get(attack, {"mean": math.nan, "needed": math.nan})
    return margin["mean"] > margin["needed"]
  diverged = lambda: row["metrics"].get("relearn/failed", {}).get("mean", 0) >= 1
  return [attack for attack in row.get("checkability_near", ())
          if not (attack == "relearn" and diverged()) and not clearly_below(attack)]


def undecided_modes(row: dict) -> frozenset:
  """The failure modes another draw of seeds may give the row or not: those near their
  threshold (`near_thresholds`), and superficial forgetting too when ineffective forgetting
  is near (it is judged only on a row that is not ineffective)."""
  near = set(near_thresholds(row))
  if diagnosis_lib.INEFFECTIVE in near and (diagnosis_lib.SUPERFICIAL in row["margins"]
                                            or _open_recoveries(row)):
    near.add(diagnosis_lib.SUPERFICIAL)
  return frozenset(near)


def recovery_margins(normalized: dict, thresholds) -> dict:
  """{attack: how far its recovery lies below eval.superficial_recovery_above}, of every
  attack the references went through, checked or not."""
  return {attack: thresholds.superficial_recovery_above - result["recovery"]
          for attack, result in normalized["attacks"].items() if "recovery" in result}


def attack_checkability(clean_mean: dict, compromised_mean: dict, clean: list,
                        compromised: list, thresholds, confidence: float) -> dict:
  """{attack: {"mean", "per_seed", "needed"}: the margin of the share of their RetFail gap
  the references keep under it over eval.min_attack_gap_fraction}, from the references'
  seed means and per-seed `headlines`, and the `prediction_margin` it must exceed, at the
  per-threshold confidence of a verdict judged at every failure mode's threshold: below that
  share the attack cannot show anything and is unchecked for every row, so references just
  above it on a few seeds can be just below it on others."""
  kept = lambda c, p: {attack: result["reference_gap_kept"] - thresholds.min_attack_gap_fraction
                       for attack, result in diagnosis_lib.attack_recovery(
                           p, c, p, thresholds.min_attack_gap_fraction).items()
                       if "reference_gap_kept" in result}
  return _margins(kept(clean_mean, compromised_mean),
                  [kept(c, p) for c, p in zip(clean, compromised)],
                  shared_confidence(confidence, len(diagnosis_lib.FAILURE_MODES)))


def open_attacks(checkability: dict, *seed_groups) -> list:
  """The attacks another draw of seeds may find checkable or not: those whose references'
  gap kept lies within its margin of the least share (`attack_checkability`; a gap no seed
  measured, references whose relearning diverged on every seed, leaves it unchecked on any
  draw), and relearning when its fine-tune diverged on some seeds but not all of one of
  `seed_groups` (per-seed `headlines`: the references', or a row's). Seeds that all diverge,
  or none, decide it."""
  near = {attack for attack, margin in checkability.items()
          if any(math.isfinite(m) for m in margin["per_seed"])
          and not abs(margin["mean"]) > margin["needed"]}
  for seeds in seed_groups:
    diverged = [r["relearn/failed"] >= 1 for r in seeds if "relearn/failed" in r]
    if any(diverged) and not all(diverged):
      near.add("relearn")
  return sorted(near)


def attack_seconds(results: list) -> dict:
  """{attack: spread of its seconds per result} of the attacks the results went through."""
  names = set.intersection(*(set(r.get("attacks", {})) for r in results)) if results else ()
  return {name: spread([r["attacks"][name]["seconds"] for r in results]) for name in sorted(names)}


def roc_curves(clean: dict, compromised: dict, runs: dict) -> dict:
  """The pair attack's ROC curve of one seed's results, as true positive rates at
  ROC_GRID's false positive rates: {"clean", "compromised", "METHOD@Bx": [...]}; empty when
  the results hold no membership scores."""
  named = {"clean": clean, "compromised": compromised} | {
      f"{method}@{budget:g}x": result for (method, budget), result in runs.items()}
  curves = {}
  for name, result in named.items():
    scores = result.get("privacy", {}).get("pair", {}).get("scores")
    if scores is None:
      return {}
    fpr, tpr = privacy.roc_curve(scores["member"], scores["nonmember"])
    # The upper envelope at each grid point: the best true positive rate at that false one.
    curves[name] = [round(float(tpr[fpr <= x].max()), 4) for x in ROC_GRID]
  return curves


def _reference_checks(clean: dict, compromised: dict, criteria) -> list:
  """(name, value, passed) of each check on one seed's references."""
  checks = []
  ratio = lambda a, b: a / b if b > 0 else math.inf
  for key, label in (("1.1_RetFail", "RetFail MRR"),
                     ("retrieval/holdout_identity", "holdout_identity retrieval MRR"),
                     ("retrieval/holdout_association", "holdout_association retrieval MRR")):
    r = ratio(compromised[key], clean[key])
    checks.append((f"{label}: Compromised >= {criteria.min_retfail_ratio:g}x Clean",
                   f"{compromised[key]:.3f} vs {clean[key]:.4f} ({r:.0f}x)",
                   bool(r >= criteria.min_retfail_ratio)))
  gap = compromised["1.2_AssocStr"] - clean["1.2_AssocStr"]
  checks.append((f"AssocStr: Compromised >= Clean + {criteria.min_assocstr_gap:g}",
                 f"{gap:+.3f}", bool(gap >= criteria.min_assocstr_gap)))
  below = [SHORT[k] for group, k in METRICS if group == "efficacy" and compromised[k] <= clean[k]]
  checks.append(("every efficacy metric: Compromised > Clean",
                 "all" if not below else "not " + ", ".join(below), not below))
  chance = compromised["genknow_chance"]
  above = (compromised["2.1_GenKnow"] + clean["2.1_GenKnow"]) / 2 - chance
  difference = compromised["2.1_GenKnow"] - clean["2.1_GenKnow"]
  gap = difference / above if above > 0 else (0.0 if difference == 0 else math.inf)
  checks.append((f"GenKnow: |Compromised - Clean| <= {criteria.max_genknow_gap_fraction:g} of "
                 f"their accuracy above chance",
                 f"{compromised['2.1_GenKnow']:.3f} vs {clean['2.1_GenKnow']:.3f} ({gap:+.3f})",
                 bool(abs(gap) <= criteria.max_genknow_gap_fraction)))
  for key in ("2.2_InterIdSim", "2.3_IntraIdSim"):
    checks.append((f"{SHORT[key]}: Compromised > Clean",
                   f"{compromised[key]:.3f} vs {clean[key]:.3f}", bool(compromised[key] > clean[key])))
  if "privacy/pair" in clean and "privacy/pair" in compromised:
    gap = compromised["privacy/pair"] - clean["privacy/pair"]
    checks.append((f"pair membership AUC: Compromised >= Clean + {criteria.min_membership_auc_gap:g}",
                   f"{compromised['privacy/pair']:.3f} vs {clean['privacy/pair']:.3f}",
                   bool(gap >= criteria.min_membership_auc_gap)))
  return checks


def soundness_checks(board: dict, criteria, seeds: list) -> list:
  """Does the benchmark measure what it claims? On every seed, Compromised must have
  memorized the associations (forget and holdouts) and Clean not, with general knowledge
  equal; over the seed means, the original's failure modes should be visible among the
  baselines. Each check: name, value (per seed, named by `seeds`: the training seeds of
  the board's per-seed results, in order), passed (on every seed)."""
  per_seed = [_reference_checks(c, p, criteria) for c, p in
              zip(board["per_seed"]["clean"], board["per_seed"]["compromised"])]
  if len(seeds) != len(per_seed):
    raise ValueError(f"{len(seeds)} seeds named for {len(per_seed)} seeds' results")
  checks = []
  for i, (name, _, _) in enumerate(per_seed[0]):
    values = [seed_checks[i] for seed_checks in per_seed]
    value = values[0][1] if len(values) == 1 else "; ".join(
        f"seed {seed}: {v[1]}" for seed, v in zip(seeds, values))
    checks.append({"name": name, "value": value, "passed": all(v[2] for v in values),
                   "per_seed": [v[2] for v in values]})
  for mode in diagnosis_lib.FAILURE_MODES[:3]:  # The original's three; collapse is ours.
    shown = [f"{r['method']}@{r['budget']:g}x" for r in board["rows"] if mode in r["failure_modes"]]
    listed = ", ".join(shown[:4]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")
    checks.append({"name": f"failure mode visible: {mode}",
                   "value": listed if shown else "no method shows it", "passed": bool(shown)})
  return checks


def cell(spread: dict) -> str:
  if spread["n"] > 1:
    return f"{spread['mean']:.3f} ± {spread['std']:.3f}"
  return f"{spread['mean']:.4f}" if abs(spread["mean"]) < 0.01 else f"{spread['mean']:.3f}"


def _rank_cell(row: dict) -> str:
  low, high = row["rank_interval"]
  return str(row["rank"]) if low == high else f"{row['rank']} ({low}-{high})"


def has_spread(board: dict) -> bool:
  """Several seeds: one settles no verdict and tells no two rows apart (its bootstrap is
  that seed alone)."""
  return len(board["per_seed"]["clean"]) > 1


def seeds_agreeing(row: dict) -> int:
  """How many seeds give the row's failure modes on their own (its run against that seed's
  references)."""
  return sum(label == row["label"] for label in row["per_seed_labels"])


def settled(row: dict, board: dict) -> bool:
  """Do the board's seeds settle the row's failure modes: given by at least the rank
  intervals' confidence share of the seed bootstrap, by most seeds on their own, and with
  every threshold the verdict is judged at beyond the replication margin (`near_thresholds`)?
  A seed mean just past two thresholds can come out the same in most resamples while each
  seed says something else; three seeds that agree just past a threshold can be followed by
  three that do not (benchmarks/RESULTS.md, twelfth session)."""
  return (has_spread(board) and row["failure_modes_support"] >= board["rank_confidence"]
          and 2 * seeds_agreeing(row) > len(row["per_seed_labels"])
          and not near_thresholds(row))


def percent(share: float) -> str:
  """A share as a whole percentage rounded down: 0.899 is 89%, never the 90% it is under."""
  return f"{math.floor(share * 100 + 1e-9)}%"


def verdict_cell(row: dict, board: dict) -> str:
  """A row's failure modes, with the share of seed-bootstrap resamples and the number of
  seeds that give them when its seeds do not settle them (`settled`)."""
  if has_spread(board) and not settled(row, board):
    near = [SHORT_MODE[mode] for mode in near_thresholds(row)]
    return (f"{row['label']} ({percent(row['failure_modes_support'])}, "
            f"{seeds_agreeing(row)} of {len(row['per_seed_labels'])} seeds"
            f"{', near: ' + ', '.join(near) if near else ''})")
  return row["label"]


# How an unsettled verdict's mark names the thresholds it lies near.
SHORT_MODE = dict(zip(diagnosis_lib.FAILURE_MODES, ("ineffective", "over-generalized",
                                                    "catastrophic", "collapse", "superficial")))


def table_rows(board: dict) -> tuple:
  """(header, rows of strings): references first, then the ranked methods."""
  header = ["rank", "method", "budget"] + [SHORT[k] for _, k in METRICS] + [
      "efficacy", "utility", "balanced", "failure modes"]
  rows = []
  for name in ("clean", "compromised"):
    s = board["reference_scores"][name]
    rows.append(["", name.capitalize(), ""] + [cell(board["references"][name][k])
                                               for _, k in METRICS]
                + [f"{s['efficacy']:.2f}", f"{s['utility']:.2f}", f"{s['balanced']:.2f}", ""])
  for row in board["rows"]:
    s = row["scores"]
    rows.append([_rank_cell(row), row["method"], f"{row['budget']:g}x"]
                + [cell(row["metrics"][k]) for _, k in METRICS]
                + [f"{s['efficacy']:.2f}", f"{s['utility']:.2f}", f"{s['balanced']:.2f}",
                   verdict_cell(row, board)])
  return header, rows


def extended_rows(board: dict) -> tuple:
  """(header, rows of strings) of the discriminative numbers behind utility and diagnosis."""
  header = ["rank", "method", "budget"] + list(EXTENDED_COLUMNS.values())
  rows = [["", name.capitalize(), ""] + [cell(board["references"][name][k]) for k in EXTENDED_COLUMNS]
          for name in ("clean", "compromised")]
  rows += [[str(row["rank"]), row["method"], f"{row['budget']:g}x"]
           + [cell(row["metrics"][k]) for k in EXTENDED_COLUMNS] for row in board["rows"]]
  return header, rows


def _lookup(row_normalized: dict, row_metrics: dict, where: tuple):
  """A privacy-table number of a row (None when the results do not hold it)."""
  value = row_metrics if where[0] == "metrics" else row_normalized
  for key in (where[1:] if where[0] == "metrics" else where):
    if not isinstance(value, dict) or key not in value or (
        "unchecked" in value and key in ("recovery", "residual_after")):
      return None  # Not measured, or the recovery of an attack that cannot show anything.
    value = value[key]
  return value["mean"] if isinstance(value, dict) else value


def _privacy_cell(value, where: tuple) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "n/a"
  if where[0] == "privleak" or where[-1] == "privleak_after":
    return f"{value:+.1f}%"
  return f"{value:.3f}" if where[0] == "metrics" else f"{value:+.2f}"


def privacy_rows(board: dict) -> tuple:
  """(header, rows of strings) of membership inference and the attacks on forgetting."""
  header = ["rank", "method", "budget"] + [label for label, _ in PRIVACY_COLUMNS]
  rows = []
  for name in ("clean", "compromised"):
    normalized, summary = board["reference_normalized"][name], board["references"][name]
    rows.append(["", name.capitalize(), ""] + [
        _privacy_cell(_lookup(normalized, summary, where), where) for _, where in PRIVACY_COLUMNS])
  for row in board["rows"]:
    rows.append([str(row["rank"]), row["method"], f"{row['budget']:g}x"] + [
        _privacy_cell(_lookup(row["normalized"], row["metrics"], where), where)
        for _, where in PRIVACY_COLUMNS])
  return header, rows


PRIVACY_NOTE = (
    "Membership inference (members: forget pairs, or forget_identity personas for the "
    "identity attack; non-members: unseen personas): ROC AUC, and PrivLeak = (AUC - Clean's) / "
    f"Clean's, in percent (ideal 0; MUSE passes [-{privacy.PRIVLEAK_BAND:g}%, "
    f"+{privacy.PRIVLEAK_BAND:g}%]); calibr.: the score minus a Clean's for the same pair or "
    "persona (another seed's Clean when there are several). Recovery: how much of the "
    "Compromised-Clean RetFail gap the attack brings back (relearning: a fine-tune on half "
    "the forget identities, measured on the other half, Clean given the same fine-tune; "
    "int8/int4: the weights quantized, the references too): the model's change under the "
    "attack minus Clean's, as a share of the gap before it; an attack that brings back more "
    "than eval.superficial_recovery_above (0.5) of the gap to a model that was not "
    "ineffective shows *superficial forgetting*; one that cannot show anything (references "
    "not attacked alike, keeping too little of their gap, or a fine-tune that diverged) "
    "reads n/a, is named in the label as unchecked and ranks the row below the fully "
    "checked rows of its failure count (docs/protocol.md §3).")


def markdown_table(header: list, rows: list) -> list:
  return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
          + ["| " + " | ".join(row) + " |" for row in rows])


def device_line(meta: dict) -> str:
  """Where something was computed: the device (and how many), on CPU the processor and the
  CPUs the process could use, and XLA_FLAGS when set (runtime.cpu_meta: a training rounds by
  them)."""
  line = meta["device"] + (f" x {meta['num_devices']}" if meta.get("num_devices", 1) > 1 else "")
  if "host_cpus" in meta:
    cpus = meta["host_cpus"]
    line += f", {cpus} CPU{'s' if cpus != 1 else ''} ({meta['cpu']})"
  return line + (f", XLA_FLAGS={meta['xla_flags']}" if meta.get("xla_flags") else "")


def computed_on_line(meta: dict) -> str:
  """The header's sentence on where the models were trained and unlearned (benchmark's
  `computed_on`): one environment, or the several a resumed workdir mixes."""
  where = meta.get("computed_on")
  if not where:
    return ""
  if len(where) == 1:
    return f"Models trained and unlearned on {where[0]}."
  return (f"Models trained and unlearned on {len(where)} environments, which round "
          f"differently: {'; '.join(where)}.")


def markdown(board: dict, checks: list, meta: dict) -> str:
  seeds = len(meta["seeds"])
  confidence = f"{board['rank_confidence']:.0%}"
  lines = [f"# SALMUBench leaderboard: {meta['config_name']}", "",
           f"{meta['date']}; {device_line(meta)}; seeds {meta['seeds']}; "
           f"jax {meta['versions']['jax']}, flax {meta['versions']['flax']}. "
           f"{computed_on_line(meta)}".rstrip(), "",
           "Headline of each official metric (RetFail: MRR); mean ± std over seeds when there "
           "are several. efficacy = mean normalized efficacy of the official five (0 = "
           "Compromised, 1 = Clean); utility = mean knowledge kept (GenKnow above chance, "
           "own-caption retrieval on the holdouts and retain_joint; 1 = "
           "Compromised), each clipped to [0, 1]; balanced = their harmonic mean. Ranked by the "
           "number of failure modes, then balanced (docs/protocol.md §5). "
           + (f"Rank (low-high): the central {confidence} of the rank over a bootstrap of the "
              f"{seeds} seeds, each row's low end taken without the failure modes it lies "
              f"near and every other row with theirs, its high end the reverse (another draw of "
              f"seeds may decide those either way); "
              f"rows whose intervals overlap are not told apart by these seeds. "
              f"A mark after the failure modes (the share of the bootstrap's seed means that "
              f"give them, how many seeds give them on their own, and the thresholds the seed "
              f"mean lies near), printed when that share is under {confidence}, when half the "
              f"seeds or more say otherwise, or when the seed mean lies within the one-sided "
              f"Student-t prediction margin of a threshold for another draw of {seeds} seeds "
              f"({confidence} for the verdict, shared out over its thresholds): a verdict these "
              f"seeds do not settle, which another seed draw or another machine's rounding may "
              f"well change."
              if seeds > 1 else "One seed: no spread measured, so no rank is known to be "
                                "resolved; run with --seeds=3."), ""]
  lines += markdown_table(*table_rows(board))
  lines += ["", "## What the models still tell apart (extended metrics)", "",
            "Own-caption retrieval MRR per split (gallery built like RetFail's) and the spread "
            "of images and captions (1 - mean cosine between different items; near 0 = "
            "collapsed). Utility and the over-generalization and collapse diagnoses read these "
            "(docs/protocol.md §3).", ""]
  lines += markdown_table(*extended_rows(board))
  lines += ["", "## Privacy leakage and attacks on forgetting", "", PRIVACY_NOTE, ""]
  lines += markdown_table(*privacy_rows(board))
  lines += [attack_cost_line(board, meta), ""]
  if "by_design" in board:
    lines += by_design_markdown(board["by_design"])
  lines += ["", "## Soundness checks", "",
            f"Reference checks hold on every seed separately ({seeds} seed{'s' * (seeds > 1)}).",
            "", "| check | value | passed |", "|---|---|---|"]
  lines += [f"| {c['name']} | {c['value']} | {'yes' if c['passed'] else 'NO'} |" for c in checks]
  return "\n".join(lines) + "\n"


def attack_cost_line(board: dict, meta: dict) -> str:
  """What the attacks cost, summed over every scored model, against the run's stages."""
  totals = {}
  for seconds in [r["attack_seconds"] for r in board["rows"]] + list(
      board["reference_attack_seconds"].values()):
    for name, value in seconds.items():
      totals[name] = totals.get(name, 0.0) + value["mean"] * value["n"]
  if not totals:
    return "No attack on forgetting was run (benchmark.attacks=none)."
  spent = meta.get("ran_seconds_total") or 0
  unknown = meta.get("ran_seconds_unknown") or 0
  # A share of a total that leaves stages out would overstate the attacks' (their seconds
  # come from the results of every stage).
  share = lambda v: f" ({v / spent:.0%} of the stages' {spent:.0f} s)" if spent and not unknown \
      else ""
  missing = (f" (no share of the stages' total: the cost of {unknown} "
             f"stage{'s' * (unknown > 1)} is unknown)" if unknown else "")
  return "Attack cost: " + ", ".join(f"{name} {value:.0f} s{share(value)}"
                                     for name, value in totals.items()) + missing + "."


def _mode_color(row) -> str:
  modes = row["failure_modes"]
  return MODE_COLORS["several" if len(modes) > 1 else (modes[0] if modes else "none")]


def png_bytes(figure) -> bytes:
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
  return buffer.getvalue()


def pyplot():
  """pyplot on the file-only Agg backend (no display on servers and CI)."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot
  return pyplot


def plot_tradeoff(board: dict):
  """Efficacy (x) against utility (y), with Clean and Compromised; colour = failure mode."""
  plt = pyplot()
  figure, axis = plt.subplots(figsize=(7.5, 5.5))
  for name, color in (("clean", "#1d3557"), ("compromised", "#d62828")):
    s = board["reference_scores"][name]
    axis.scatter(s["efficacy"], s["utility"], marker="*", s=260, color=color, zorder=3,
                 label=name.capitalize())
  budgets = sorted({r["budget"] for r in board["rows"]})
  markers = dict(zip(budgets, "os^Dvp"))
  for row in board["rows"]:
    axis.scatter(row["scores"]["efficacy"], row["scores"]["utility"], color=_mode_color(row),
                 marker=markers[row["budget"]], s=55, edgecolor="black", linewidth=0.5, zorder=2)
    axis.annotate(f"{row['method']} {row['budget']:g}x", (row["scores"]["efficacy"],
                  row["scores"]["utility"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
  for mode, color in MODE_COLORS.items():
    axis.scatter([], [], color=color, label=f"failure: {mode}", s=40)
  for budget, marker in markers.items():
    axis.scatter([], [], color="white", edgecolor="black", marker=marker, label=f"budget {budget:g}x")
  axis.set_xlabel("forgetting efficacy (0 = Compromised, 1 = Clean)")
  axis.set_ylabel("utility kept (1 = Compromised)")
  axis.set_xlim(-0.05, 1.1)
  axis.set_ylim(-0.05, 1.1)
  axis.grid(alpha=0.3)
  axis.legend(fontsize=7, loc="lower left")
  return figure


def plot_metrics(board: dict):
  """One panel per metric: every run's headline, with Clean and Compromised drawn as lines."""
  plt = pyplot()
  rows = board["rows"]
  labels = [f"{r['method']} {r['budget']:g}x" for r in rows]
  figure, axes = plt.subplots(2, 5, figsize=(20, 8.5), sharey=False)
  for axis, (group, key) in zip(axes.flat, METRICS):
    values = [r["metrics"][key]["mean"] for r in rows]
    errors = [r["metrics"][key]["std"] for r in rows]
    axis.barh(range(len(rows)), values, xerr=errors if any(errors) else None,
              color=[_mode_color(r) for r in rows])
    for name, color in (("clean", "#1d3557"), ("compromised", "#d62828")):
      axis.axvline(board["references"][name][key]["mean"], color=color, linestyle="--",
                   label=name.capitalize())
    axis.set_yticks(range(len(rows)))
    axis.set_yticklabels(labels if key in ("1.1_RetFail", "2.1_GenKnow") else [], fontsize=7)
    axis.invert_yaxis()
    axis.set_title(f"{key} ({'target: Clean' if group == 'efficacy' else 'target: Compromised'})",
                   fontsize=9)
    axis.tick_params(axis="x", labelsize=7)
  axes.flat[0].legend(fontsize=7)
  figure.tight_layout()
  return figure


def plot_roc(board: dict):
  """The pair membership attack's ROC curves (first seed): the references bold, each method
  thin, coloured by its failure mode; the diagonal is chance."""
  plt = pyplot()
  figure, axis = plt.subplots(figsize=(6.5, 5.5))
  curves = board["roc_pair"]
  modes = {f"{r['method']}@{r['budget']:g}x": r for r in board["rows"]}
  for name, tpr in curves.items():
    if name in modes:
      axis.plot(ROC_GRID, tpr, color=_mode_color(modes[name]), linewidth=0.8, alpha=0.7)
  for name, color in (("clean", "#1d3557"), ("compromised", "#d62828")):
    axis.plot(ROC_GRID, curves[name], color=color, linewidth=2.5, label=name.capitalize())
  axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
  for mode, color in MODE_COLORS.items():
    axis.plot([], [], color=color, label=f"failure: {mode}")
  axis.set_xlabel("false positive rate (unseen pairs called members)")
  axis.set_ylabel("true positive rate (forget pairs called members)")
  axis.legend(fontsize=7, loc="lower right")
  axis.grid(alpha=0.3)
  return figure


def plot_attacks(board: dict):
  """Normalized RetFail efficacy before (x) against after (y) each attack, one panel per
  attack; under the diagonal, the attack brought knowledge back."""
  plt = pyplot()
  attacks = [a for a in ("relearn", "quantize_int8", "quantize_int4")
             if board["rows"] and a in board["rows"][0]["normalized"]["attacks"]]
  figure, axes = plt.subplots(1, len(attacks), figsize=(5.5 * len(attacks), 5), squeeze=False)
  for axis, attack in zip(axes[0], attacks):
    for row in board["rows"]:
      result = row["normalized"]["attacks"][attack]
      if "unchecked" in result:
        continue
      before, after = 1 - result["residual_before"], 1 - result["residual_after"]
      axis.scatter(before, after, color=_mode_color(row), s=40, edgecolor="black",
                   linewidth=0.5)
      axis.annotate(f"{row['method']} {row['budget']:g}x", (before, after), fontsize=6,
                    xytext=(3, 2), textcoords="offset points")
    axis.plot([-0.1, 1.1], [-0.1, 1.1], color="grey", linestyle=":")
    # Below this line (and right of the ineffective threshold): superficial forgetting.
    threshold = board["superficial_recovery_above"]
    axis.plot([-0.1, 1.1], [-0.1 - threshold, 1.1 - threshold], color="#8d99ae",
              linestyle="--", linewidth=0.8)
    if attack != "relearn":  # Relearning's axes read the second forget half only.
      axis.axvline(board["ineffective_below"], color="#8d99ae", linestyle=":", linewidth=0.8)
    axis.set_title(attack.replace("_", " "), fontsize=9)
    axis.set_xlabel("RetFail efficacy before the attack (0 = Compromised, 1 = Clean)")
    axis.set_ylabel("after the attack")
    axis.grid(alpha=0.3)
  figure.tight_layout()
  return figure


def report_html(board: dict, checks: list, meta: dict, contact_sheet_png: bytes | None,
                stages: list) -> str:
  """A self-contained page (PNGs embedded): checks, plots, leaderboard, data, timings."""
  plt = pyplot()
  images = {}
  plots = [("tradeoff", plot_tradeoff), ("metrics", plot_metrics)]
  if board["roc_pair"]:
    plots.append(("roc", plot_roc))
  if board["rows"] and board["rows"][0]["normalized"]["attacks"]:
    plots.append(("attacks", plot_attacks))
  for name, make in plots:
    figure = make(board)
    images[name] = base64.b64encode(png_bytes(figure)).decode()
    plt.close(figure)
  esc = html.escape

  def html_table(header, rows):
    return "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>"

  table, extended = html_table(*table_rows(board)), html_table(*extended_rows(board))
  private = html_table(*privacy_rows(board))
  design = ""
  if "by_design" in board:
    header, rows, cost_line, targets = by_design_rows(board["by_design"])
    design = (f"<h2>Unlearning by design: key deletion in a memory CLIP</h2><p>"
              f"{esc(BY_DESIGN_NOTE)}</p>{html_table(header, rows)}<p>{esc(cost_line)}</p>"
              f"{html_table(['target', 'value', 'passed'], targets)}")
  image = lambda name, caption: (f"<p>{esc(caption)}</p><img src='data:image/png;base64,"
                                 f"{images[name]}' style='max-width:100%'>" if name in images
                                 else "")
  check_rows = "".join(
      f"<tr class='{'pass' if c['passed'] else 'fail'}'><td>{esc(c['name'])}</td>"
      f"<td>{esc(c['value'])}</td><td>{'yes' if c['passed'] else 'NO'}</td></tr>" for c in checks)
  stage_rows = "".join(f"<tr><td>{esc(s['stage'])}</td><td>{s['status']}</td>"
                       f"<td>{s['seconds']:.1f}</td><td>{_seconds(s.get('ran_seconds'))}</td>"
                       f"</tr>" for s in stages)
  sheet = (f"<h2>The data</h2><p>SALMU-synth contact sheet.</p><img src='data:image/png;base64,"
           f"{base64.b64encode(contact_sheet_png).decode()}' style='max-width:100%'>"
           if contact_sheet_png else "")
  versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
  unknown = meta.get("ran_seconds_unknown") or 0
  unknown_cost = (f", besides {unknown} stage{'s' * (unknown > 1)} whose cost is unknown"
                  if unknown else "")
  return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>SALMUBench report: {esc(meta['config_name'])}</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;font-size:12px;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 6px}}
tr.pass td:last-child{{color:#2a9d8f}}tr.fail td:last-child{{color:#d62828;font-weight:bold}}</style>
</head><body>
<h1>SALMUBench report: {esc(meta['config_name'])}</h1>
<p>{esc(meta['date'])}; device {esc(device_line(meta))}; seeds {esc(str(meta['seeds']))};
budgets {esc(', '.join(f'{b:g}x' for b in meta['budgets']))}; {esc(versions)}.
{esc(computed_on_line(meta))}</p>
<h2>Is the benchmark sound?</h2>
<table><tr><th>check</th><th>value</th><th>passed</th></tr>{check_rows}</table>
<h2>Efficacy against utility</h2>
<img src="data:image/png;base64,{images['tradeoff']}">
<h2>Every metric, with the two references</h2>
<img src="data:image/png;base64,{images['metrics']}" style="max-width:100%">
<h2>Leaderboard</h2>
<p>Ranked by the number of failure modes, then by the harmonic mean of efficacy and utility
(docs/protocol.md §5); rank (low-high) is the central {board['rank_confidence']:.0%} over a
bootstrap of the seeds, the low end taken without the failure modes a row lies near and every
other row with theirs, the high end the reverse. Failure modes: {esc(', '.join(diagnosis_lib.FAILURE_MODES))}.</p>
{table}
<h2>What the models still tell apart</h2>
<p>Own-caption retrieval MRR per split and the spread of images and captions (1 - mean cosine
between different items); utility, over-generalization and collapse read these.</p>
{extended}
<h2>Privacy leakage and attacks on forgetting</h2>
<p>{esc(PRIVACY_NOTE)}</p>
{private}
<p>{esc(attack_cost_line(board, meta))}</p>
{image("roc", "The pair membership attack's ROC curves (first seed).")}
{image("attacks", "RetFail efficacy before and after each attack; below the diagonal the "
       "attack brought knowledge back, below the dashed line more than "
       "eval.superficial_recovery_above of the gap (superficial forgetting).")}
{design}
{sheet}
<h2>Stages</h2>
<table><tr><th>stage</th><th>status</th><th>seconds</th><th>seconds when it ran</th></tr>{stage_rows}</table>
<p>Total wall time of the last invocation: {meta['wall_seconds']:.0f} s; the stages cost
{meta['ran_seconds_total']:.0f} s when they ran{unknown_cost}.</p>
</body></html>
"""


def _seconds(value) -> str:
  return "unknown" if value is None else f"{value:.1f}"


def now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")



# Unlearning by design (docs/protocol.md §8): the numbers its section shows for each model.
BY_DESIGN_COLUMNS = {"1.1_RetFail": "RetFail MRR", "retrieval/holdout_identity": "holdout_identity MRR",
                     "retrieval/holdout_association": "holdout_association MRR",
                     "2.1_GenKnow": "GenKnow", "privacy/pair": "pair AUC",
                     "relearn/after/retfail_mrr": "RetFail after relearn"}
BY_DESIGN_KEPT = ("retrieval/holdout_identity", "retrieval/holdout_association", "2.1_GenKnow")
BY_DESIGN_EFFICACY_AT_LEAST, BY_DESIGN_KEPT_AT_LEAST = 0.9, 0.95


def by_design(clean: list, compromised: list, compromised_memory: list, clean_memory: list,
              memory_removed: list, key_deletion: list, budget: float, thresholds,
              training_seconds: dict) -> dict:
  """Key deletion judged against Clean and Compromised, and against the memory models' own
  references; the memory removed altogether (what the weights still carry); the design's
  cost (Compromised-memory against Compromised); and issue 22's targets as checks."""
  runs = {(name, budget): results for name, results in (("key_deletion", key_deletion),
                                                        ("memory_removed", memory_removed))}
  standard = leaderboard(clean, compromised, runs, thresholds)
  own = leaderboard(clean_memory, compromised_memory, runs, thresholds)
  models = {name: standard["references"][name] for name in ("clean", "compromised")}
  models |= {f"{name}_memory": own["references"][name] for name in ("clean", "compromised")}
  by_row = lambda board: {row["method"]: row for row in board["rows"]}
  rows, own_rows = by_row(standard), by_row(own)
  models |= {name: rows[name]["metrics"] for name in ("key_deletion", "memory_removed")}
  mean = lambda name, key: models[name][key]["mean"] if key in models[name] else float("nan")
  deleted = rows["key_deletion"]
  ratio = lambda a, b: a / b if b else float("nan")  # NaN fails its check, as it should.
  kept = {key: ratio(mean("key_deletion", key), mean("compromised_memory", key))
          for key in BY_DESIGN_KEPT}
  privleak = deleted["normalized"]["privleak"].get("pair", float("nan"))
  efficacy = deleted["normalized"]["efficacy"]["1.1_RetFail"]
  checks = [
      {"name": "key deletion's RetFail efficacy (0 = Compromised, 1 = Clean)",
       "value": round(efficacy, 3), "target": f">= {BY_DESIGN_EFFICACY_AT_LEAST}",
       "passed": bool(efficacy >= BY_DESIGN_EFFICACY_AT_LEAST)},
      *({"name": f"{key} kept, of Compromised-memory's", "value": round(kept[key], 3),
         "target": f">= {BY_DESIGN_KEPT_AT_LEAST}", "passed": bool(kept[key] >= BY_DESIGN_KEPT_AT_LEAST)}
        for key in BY_DESIGN_KEPT),
      {"name": "pair PrivLeak against Clean (%), seed mean", "value": round(privleak, 1),
       "target": f"within ±{privacy.PRIVLEAK_BAND:g}",
       "passed": bool(abs(privleak) <= privacy.PRIVLEAK_BAND)}]
  # And on every seed against its own Clean, as the soundness checks are held.
  pair_auc = lambda result: diagnosis_lib.headlines(result).get("privacy/pair", float("nan"))
  per_seed = {name: [metrics_lib.priv_leak(pair_auc(k), pair_auc(c)) for k, c in
                     zip(key_deletion, references)]
              for name, references in (("Clean", clean), ("Clean-memory", clean_memory))}
  checks += [{"name": f"pair PrivLeak against {name} (%), each seed",
              "value": ", ".join(f"{v:+.1f}" for v in values),
              "target": f"within ±{privacy.PRIVLEAK_BAND:g}",
              "passed": bool(all(abs(v) <= privacy.PRIVLEAK_BAND for v in values))}
             for name, values in per_seed.items()]
  seconds = {name: spread([s for s in values if s is not None]) if any(
      s is not None for s in values) else None for name, values in training_seconds.items()}
  return {"budget": budget, "models": models, "checks": checks,
          "against_clean": {name: {k: rows[name][k] for k in ("normalized", "scores", "label")}
                            for name in rows},
          "against_memory_references": {name: {k: own_rows[name][k] for k in
                                               ("normalized", "scores", "label")}
                                        for name in own_rows},
          "cost": {key: ratio(mean("compromised_memory", key), mean("compromised", key))
                   for key in BY_DESIGN_KEPT},
          "training_seconds": seconds}


BY_DESIGN_MODELS = (("compromised", "Compromised"), ("clean", "Clean"),
                    ("compromised_memory", "Compromised-memory"), ("clean_memory", "Clean-memory"),
                    ("key_deletion", "key deletion"),
                    ("memory_removed", "Compromised-memory, memory removed"))


BY_DESIGN_NOTE = (
    "Key deletion deletes the forget pairs' rows of a key-value memory (no weight changes, no "
    "data read; docs/protocol.md §8). Compromised-memory and Clean-memory are trained like "
    "Compromised and Clean with the memory; *memory removed* is Compromised-memory with every "
    "key deleted: what its weights alone still carry. Efficacy: 0 = the upper reference, 1 = "
    "the lower one (Compromised and Clean, or the memory references).")


def by_design_rows(section: dict) -> tuple:
  """(header, rows of strings, the cost line, the target rows) of the by-design section."""
  header = ["model"] + list(BY_DESIGN_COLUMNS.values()) + [
      "RetFail efficacy vs Clean", "vs Clean-memory", "PrivLeak pair vs Clean",
      "vs Clean-memory", "label vs Clean", "label vs memory refs"]
  rows = []
  for name, label in BY_DESIGN_MODELS:
    metrics = section["models"][name]
    verdict = section["against_clean"].get(name)
    own = section["against_memory_references"].get(name)
    judged = []
    if verdict:
      leak = lambda v: _privacy_cell(v["normalized"]["privleak"].get("pair"), ("privleak",))
      judged = [f"{verdict['normalized']['efficacy']['1.1_RetFail']:.2f}",
                f"{own['normalized']['efficacy']['1.1_RetFail']:.2f}", leak(verdict), leak(own),
                verdict["label"], own["label"]]
    rows.append([label] + [cell(metrics[k]) if k in metrics else "n/a" for k in BY_DESIGN_COLUMNS]
                + (judged or [""] * 6))
  cost = ", ".join(f"{BY_DESIGN_COLUMNS[k]} {v:.3f}" for k, v in section["cost"].items())
  timing = "; ".join(f"{name} {s['mean']:.0f} s" for name, s in
                     section["training_seconds"].items() if s)
  cost_line = (f"The design's cost, Compromised-memory over Compromised: {cost}. Training time "
               f"per seed: {timing or 'not measured'}.")
  targets = [[f"{c['name']} {c['target']}", str(c["value"]), "yes" if c["passed"] else "NO"]
             for c in section["checks"]]
  return header, rows, cost_line, targets


def by_design_markdown(section: dict) -> list:
  header, rows, cost_line, targets = by_design_rows(section)
  return (["", "## Unlearning by design: key deletion in a memory CLIP", "", BY_DESIGN_NOTE, ""]
          + markdown_table(header, rows) + ["", cost_line, ""]
          + markdown_table(["target", "value", "passed"], targets))
