"""Deletion requests at scale and over time (MUSE's scalability and sustainability): the
per-request table, its markdown and the plots of `benchmark --mode=scalability|sustainability`.

Every number is rebuilt from the result files: each unlearned model's result after each
request (with its `request` block: efficacy on the pairs requested so far and on the forget
pairs not yet requested) and the references' blocks for the same requests
(docs/protocol.md §4-5).
"""
import base64
import html

import numpy as np

from salmu_jax import report
from salmu_jax.evaluation import diagnosis

# What each request's row reports: (column, where in the per-seed numbers). RetFail's
# efficacies and their difference also carry a bootstrap interval (`retfail_intervals`).
COLUMNS = (("RetFail efficacy, requested", "requested_retfail"),
           ("efficacy, requested (metrics the references separate)", "requested_efficacy"),
           ("RetFail efficacy, not yet requested", "not_requested_retfail"),
           ("selectivity (requested - not yet requested)", "selectivity"),
           ("holdout_identity kept", "kept/retrieval/holdout_identity"),
           ("holdout_association kept", "kept/retrieval/holdout_association"),
           ("GenKnow kept", "kept/2.1_GenKnow"),
           ("samples / budget", "samples_per_budget"))
INTERVALS = ("requested_retfail", "not_requested_retfail", "selectivity")
# RetFail intervals: each side's personas resampled with replacement within its whole
# identities and within its associations, the same resamples for every model
# (docs/protocol.md §4); a side with more than MAX_DEGENERATE of resamples where the
# references tie gets none.
RESAMPLES, CONFIDENCE, MAX_DEGENERATE = 2000, 0.95, 0.05
# The raw numbers the plots show, with the references' as bands.
PLOTTED = (("requested_mrr", "RetFail MRR on the pairs requested so far"),
           ("not_requested_mrr", "RetFail MRR on the forget pairs not yet requested"),
           ("retrieval/holdout_identity", "holdout_identity own-caption MRR"),
           ("2.1_GenKnow", "GenKnow accuracy"))


def _side_mrr(block: dict, side: str) -> float:
  return block[side]["1.1_RetFail"]["MRR"] if side in block else float("nan")


def _numbers(result: dict, clean: dict, compromised: dict, thresholds) -> dict:
  """One seed's numbers after one request: normalized against that seed's references
  (their main results, with their blocks of the same request), and raw."""
  # The verdict reads RetFail on the pairs requested so far, not on the whole forget split
  # (a method that forgets exactly a 10% request would read ineffective there).
  side = lambda r, flat: flat | {"1.1_RetFail": _side_mrr(r["request"], "requested")}
  flat = diagnosis.headlines(result)
  normalized, verdict = diagnosis.normalize_and_diagnose(
      side(result, flat), side(clean, diagnosis.headlines(clean)),
      side(compromised, diagnosis.headlines(compromised)), thresholds)
  split = diagnosis.request_normalized(result["request"], clean["request"], compromised["request"])
  requested = split["requested"]
  unlearned = result["meta"]["unlearn"]
  out = {"requested_retfail": requested["1.1_RetFail"],
         # Clipped as the main leaderboard's efficacy, over the metrics the references
         # separate on these pairs (not IdZSC where both classify none of a small request).
         "requested_efficacy": float(np.nanmean(np.clip(list(requested.values()), 0, 1))),
         "not_requested_retfail": split.get("not_requested", {}).get("1.1_RetFail", float("nan")),
         "samples_per_budget": unlearned["samples_processed"]["total"] / (
             unlearned["budget"] * unlearned["forget_size"]),
         **_plotted(result, flat)}
  out["selectivity"] = out["requested_retfail"] - out["not_requested_retfail"]
  out |= {f"kept/{key}": value for key, value in normalized["kept"].items()}
  return out | {"label": verdict["label"]}


def _plotted(result: dict, flat: dict) -> dict:
  """The PLOTTED numbers of one result with its request block (`flat`: its headlines)."""
  return {"requested_mrr": _side_mrr(result["request"], "requested"),
          "not_requested_mrr": _side_mrr(result["request"], "not_requested"),
          "retrieval/holdout_identity": flat["retrieval/holdout_identity"],
          "2.1_GenKnow": flat["2.1_GenKnow"]}


def _cluster_weights(clusters: np.ndarray, strata: np.ndarray, rng) -> np.ndarray:
  """[RESAMPLES, pairs]: how often each pair enters a resample of its side. Each stratum
  (whole identities; associations) keeps its size, as every request does; within it the
  personas are drawn with replacement, all of a persona's pairs (one face) together."""
  weights = np.zeros((RESAMPLES, len(clusters)))
  for stratum in np.unique(strata):
    members = np.flatnonzero(strata == stratum)
    unique, inverse = np.unique(clusters[members], return_inverse=True)
    drawn = rng.integers(0, len(unique), (RESAMPLES, len(unique)))
    counts = np.zeros((RESAMPLES, len(unique)))
    np.add.at(counts, (np.arange(RESAMPLES)[:, None], drawn), 1)
    weights[:, members] = counts[:, inverse]
  return weights


def retfail_intervals(schedule: dict, k: int, results: list, clean: list, compromised: list,
                      thresholds) -> dict:
  """Bootstrap intervals of RetFail's normalized efficacy on each side of request k and
  of their difference (selectivity), and the collateral verdict: "yes" where the whole
  interval of the not-yet-requested side lies above `collateral_efficacy_above` (people
  who did not ask were erased), "no" where it lies below, "unresolved" where it spans it,
  "unmeasurable" where the side has no interval, None where no pair is left unrequested.

  What the interval covers: which personas a side happens to hold, for these trained
  models and the one RetFail gallery; each resample takes every seed's model and
  references on the same resampled pairs and averages the seeds (their spread is the
  ± std beside it, not part of the interval). A resample where the references do not
  differ has no efficacy; where more than MAX_DEGENERATE of them are such, the side gets
  no interval (and no verdict)."""
  rows = np.asarray(schedule["requested_rows"][k], int)
  clusters, strata = np.asarray(schedule["pair_personas"]), np.asarray(schedule["pair_strata"])
  sides = {"requested_retfail": rows,
           "not_requested_retfail": np.setdiff1d(np.arange(len(clusters)), rows)}
  reciprocal = lambda seeds: np.array([1.0 / np.asarray(r["request"]["retfail_ranks"], float)
                                       for r in seeds])
  model, low, high = reciprocal(results), reciprocal(clean), reciprocal(compromised)
  resampled, out, tail = {}, {"degenerate": {}}, (1 - CONFIDENCE) / 2
  for i, (side, pairs) in enumerate(sides.items()):
    if not len(pairs):
      continue
    weights = _cluster_weights(clusters[pairs], strata[pairs], np.random.default_rng([k, i]))
    mrr = lambda rr: (weights @ rr[:, pairs].T) / weights.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
      efficacy = (mrr(high) - mrr(model)) / (mrr(high) - mrr(low))  # [RESAMPLES, seeds]
    efficacy[~np.isfinite(efficacy)] = np.nan  # References tied on this resample.
    degenerate = float(np.isnan(efficacy).any(axis=1).mean())
    out["degenerate"][side] = degenerate
    if degenerate <= MAX_DEGENERATE:
      resampled[side] = np.nanmean(efficacy, axis=1)
  if len(resampled) == 2:
    resampled["selectivity"] = resampled["requested_retfail"] - resampled["not_requested_retfail"]
  for key, values in resampled.items():
    kept = values[np.isfinite(values)]
    out[key] = [float(v) for v in np.quantile(kept, [tail, 1 - tail])]
  # None: nobody is left unrequested; "unmeasurable": the references tie there.
  out["collateral"] = "unmeasurable" if "not_requested_retfail" in out["degenerate"] else None
  if "not_requested_retfail" in out:
    lo, hi = out["not_requested_retfail"]
    bound = thresholds.collateral_efficacy_above
    out["collateral"] = "yes" if lo > bound else "no" if hi < bound else "unresolved"
  return out


def board(mode: str, schedule: dict, clean: list, compromised: list, runs: dict,
          thresholds) -> dict:
  """The mode's leaderboard. `schedule`: the requests file's content; clean/compromised:
  per request, per seed, the references' results with that request's block; runs:
  {(method, budget): per request, per seed, the unlearned model's result}."""
  steps = len(schedule["requests"])
  rows = []
  for (method, budget), per_request in runs.items():
    after = []
    for k in range(steps):
      seeds = [_numbers(r, c, p, thresholds)
               for r, c, p in zip(per_request[k], clean[k], compromised[k])]
      after.append({key: report.spread([s[key] for s in seeds]) for key in seeds[0]
                    if key != "label"} | {"labels": [s["label"] for s in seeds]} | {
          "intervals": retfail_intervals(schedule, k, per_request[k], clean[k],
                                         compromised[k], thresholds)})
    rows.append({"method": method, "budget": budget, "after_request": after})
  def reference_spreads(seeds):
    plotted = [_plotted(r, diagnosis.headlines(r)) for r in seeds]
    return {key: report.spread([p[key] for p in plotted]) for key, _ in PLOTTED}
  references = {name: [reference_spreads(seeds) for seeds in per_request]
                for name, per_request in (("clean", clean), ("compromised", compromised))}
  return {"mode": mode, "x": schedule["x"], "x_label": schedule["x_label"],
          "pairs": schedule["pairs_so_far"], "rows": rows, "references": references}


def _cell(spread: dict) -> str:
  """A table cell; "-" where nothing is left to measure (no pair not yet requested)."""
  return "-" if np.isnan(spread["mean"]) else report.cell(spread)


def _interval_cell(after: dict, key: str) -> str:
  """The seed mean (± std) and, for RetFail's, its bootstrap interval."""
  text = _cell(after[key])
  interval = after["intervals"].get(key) if key in INTERVALS else None
  return text if interval is None or text == "-" else f"{text} [{interval[0]:.2f}, {interval[1]:.2f}]"


def table_rows(board: dict) -> tuple:
  header = ["method", "budget", board["x_label"], "pairs requested so far"] + [
      c for c, _ in COLUMNS] + ["collateral erasure", "failure modes (per seed)"]
  rows = []
  for row in board["rows"]:
    for x, pairs, after in zip(board["x"], board["pairs"], row["after_request"]):
      rows.append([row["method"], f"{row['budget']:g}x", f"{x:g}", str(pairs)]
                  + [_interval_cell(after, key) for _, key in COLUMNS]
                  + [after["intervals"]["collateral"] or "-", "; ".join(after["labels"])])
  return header, rows


NOTE = {
    "scalability": "Nested requests of growing size, each unlearned from Compromised with "
                   "the budget counted against the request's size.",
    "sustainability": "Disjoint requests unlearned one after another, each from the previous "
                      "request's model, with the same budget per request."}
COMMON_NOTE = ("Efficacy normalized against the references scored on the same pairs (0 = "
               "Compromised's level, 1 = Clean's): on the pairs requested so far it should reach "
               "1; on the forget pairs not yet requested stay at 0 (unlearning one person must "
               "not erase another who has not asked). RetFail's brackets: the "
               f"{CONFIDENCE:.0%} interval of a bootstrap of each side's personas (within its "
               "whole identities and within its associations; the seeds' spread is the ± std). "
               "Collateral erasure: yes where that interval on the pairs not yet requested lies "
               "above eval.collateral_efficacy_above, no where below, unresolved where it spans "
               "it. Kept: 1 = Compromised's level. Samples / budget above 1: the one step the "
               "smallest batches allow costs more than the budget (docs/protocol.md §3-4).")


def markdown(board: dict, meta: dict) -> str:
  lines = [f"# Deletion requests: {board['mode']} ({meta['config_name']})", "",
           f"{meta['date']}; {report.device_line(meta)}; seeds {meta['seeds']}; "
           f"jax {meta['versions']['jax']}, flax {meta['versions']['flax']}. "
           f"{report.computed_on_line(meta)}".rstrip(), "",
           NOTE[board["mode"]] + " " + COMMON_NOTE, ""]
  lines += report.markdown_table(*table_rows(board))
  return "\n".join(lines) + "\n"


def plot(board: dict):
  """Each PLOTTED number against the request (size or number), one line per method and
  budget, the references as bands (mean ± std over seeds)."""
  plt = report.pyplot()
  figure, axes = plt.subplots(2, 2, figsize=(13, 9))
  x = np.array(board["x"], float)
  colors = plt.get_cmap("tab20")
  for axis, (key, title) in zip(axes.flat, PLOTTED):
    for name, color in (("clean", "#2a9d8f"), ("compromised", "#d62828")):
      mean = np.array([r[key]["mean"] for r in board["references"][name]])
      std = np.array([r[key]["std"] for r in board["references"][name]])
      axis.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
      axis.plot(x, mean, color=color, linewidth=3, alpha=0.6, label=name.capitalize())
    for i, row in enumerate(board["rows"]):
      axis.plot(x, [a[key]["mean"] for a in row["after_request"]], marker="o", markersize=3,
                linewidth=1, color=colors(i % 20), label=f"{row['method']} {row['budget']:g}x")
    axis.set_title(title, fontsize=9)
    axis.set_xlabel(board["x_label"])
    axis.set_xticks(x)
    axis.grid(alpha=0.3)
  handles, labels = axes.flat[0].get_legend_handles_labels()
  figure.legend(handles, labels, loc="center right", fontsize=7)
  figure.tight_layout(rect=(0, 0, 0.84, 1))
  return figure


def report_html(board: dict, meta: dict) -> str:
  """A self-contained page: what the mode does, the plots and the table."""
  plt = report.pyplot()
  figure = plot(board)
  image = base64.b64encode(report.png_bytes(figure)).decode()
  plt.close(figure)
  esc = html.escape
  header, rows = table_rows(board)
  table = "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" + "".join(
      "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>"
  return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Deletion requests: {esc(board['mode'])}</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;font-size:12px;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 6px}}</style>
</head><body>
<h1>Deletion requests: {esc(board['mode'])} ({esc(meta['config_name'])})</h1>
<p>{esc(meta['date'])}; device {esc(report.device_line(meta))}; seeds {esc(str(meta['seeds']))}.
{esc(report.computed_on_line(meta))}</p>
<p>{esc(NOTE[board['mode']] + ' ' + COMMON_NOTE)}</p>
<img src="data:image/png;base64,{image}" style="max-width:100%">
{table}
</body></html>
"""
