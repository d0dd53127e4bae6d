"""The leaderboard, the soundness checks and the HTML report of a benchmark run.

Input: evaluation results (salmu_jax.evaluate's JSON dicts) of Clean, Compromised and
every (method, budget), one per seed. Everything here is arithmetic and drawing on
those dicts, so a leaderboard can be rebuilt from the JSON files alone.
"""
import base64
import datetime
import html
import io
import math

import numpy as np

from salmu_jax import evaluate

METRICS = [name.split("/") for name in evaluate.EVALUATORS]  # [(group, key)] official order.
SHORT = {key: key.split("_", 1)[1] for _, key in METRICS}  # "1.1_RetFail" -> "RetFail"
MODE_COLORS = {"none": "#2a9d8f", evaluate.INEFFECTIVE: "#8d99ae",
               evaluate.OVERGENERALIZED: "#e76f51", evaluate.CATASTROPHIC: "#9b2226",
               "several": "#6a4c93"}


def spread(values) -> dict:
  values = np.asarray(values, float)
  return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
          "n": int(len(values))}


def summarize(results: list) -> dict:
  """Headline of each metric over seeds: {key: {mean, std, n}}."""
  return {key: spread([evaluate.headline(r, group, key) for r in results]) for group, key in METRICS}


def _as_result(summary: dict) -> dict:
  """A result dict of seed-mean headlines, in the shape evaluate.headline reads."""
  result = {"efficacy": {}, "utility": {}}
  for group, key in METRICS:
    result[group][key] = {"MRR" if key == "1.1_RetFail" else "mean": summary[key]["mean"]}
  return result


def scores(normalized: dict) -> dict:
  """Two summary numbers: mean normalized efficacy (0 = Compromised, 1 = Clean) and mean
  utility kept (1 = Compromised's level), each metric clipped to [0, 1] first so that
  overshooting Clean or beating Compromised on one metric cannot hide another; and
  their harmonic mean, which is high only when both are."""
  efficacy = float(np.mean([np.clip(v, 0, 1) for v in normalized["efficacy"].values()]))
  utility = float(np.mean([np.clip(v, 0, 1) for v in normalized["utility"].values()]))
  balanced = 2 * efficacy * utility / (efficacy + utility) if efficacy + utility > 0 else 0.0
  return {"efficacy": efficacy, "utility": utility, "balanced": float(balanced)}


def leaderboard(clean: list, compromised: list, runs: dict, thresholds) -> dict:
  """clean/compromised: per-seed results; runs: {(method, budget): [per-seed results]}.

  Rows are ordered by the number of failure modes, then by the balanced score.
  Normalization and diagnosis use seed means (references of the same seeds).
  """
  references = {"clean": summarize(clean), "compromised": summarize(compromised)}
  clean_mean, compromised_mean = (_as_result(references[n]) for n in ("clean", "compromised"))
  rows = []
  for (method, budget), results in runs.items():
    summary = summarize(results)
    normalized, diagnosis = evaluate.normalize_and_diagnose(
        _as_result(summary), clean_mean, compromised_mean, thresholds)
    rows.append({"method": method, "budget": budget, "metrics": summary,
                 "normalized": normalized, "scores": scores(normalized),
                 "failure_modes": diagnosis["failure_modes"], "label": diagnosis["label"],
                 "leakage_rate": spread([r["breakdown"]["leakage_rate"] for r in results])})
  rows.sort(key=lambda r: (len(r["failure_modes"]), -r["scores"]["balanced"], r["method"],
                           r["budget"]))
  for rank, row in enumerate(rows, 1):
    row["rank"] = rank
  normalized_clean, _ = evaluate.normalize_and_diagnose(clean_mean, clean_mean, compromised_mean,
                                                        thresholds)
  return {"references": references, "rows": rows,
          "reference_scores": {"clean": scores(normalized_clean),
                               "compromised": {"efficacy": 0.0, "utility": 1.0, "balanced": 0.0}}}


def soundness_checks(board: dict, criteria) -> list:
  """Does the benchmark measure what it claims? Compromised must have memorized the
  associations and Clean not, with general knowledge equal; the failure modes of the
  original should be visible among the baselines. Each check: name, value, passed."""
  clean, compromised = (board["references"][n] for n in ("clean", "compromised"))
  mean = lambda summary, key: summary[key]["mean"]
  checks = []
  retfail_clean, retfail_comp = mean(clean, "1.1_RetFail"), mean(compromised, "1.1_RetFail")
  ratio = retfail_comp / retfail_clean if retfail_clean > 0 else math.inf
  checks.append({"name": f"RetFail MRR: Compromised >= {criteria.min_retfail_ratio:g}x Clean",
                 "value": f"{retfail_comp:.4f} vs {retfail_clean:.4f} ({ratio:.0f}x)",
                 "passed": bool(ratio >= criteria.min_retfail_ratio)})
  gap = mean(compromised, "1.2_AssocStr") - mean(clean, "1.2_AssocStr")
  checks.append({"name": f"AssocStr: Compromised >= Clean + {criteria.min_assocstr_gap:g}",
                 "value": f"gap {gap:+.3f}", "passed": bool(gap >= criteria.min_assocstr_gap)})
  efficacy_keys = [key for group, key in METRICS if group == "efficacy"]
  below = [SHORT[k] for k in efficacy_keys if mean(compromised, k) <= mean(clean, k)]
  checks.append({"name": "every efficacy metric: Compromised > Clean",
                 "value": "all" if not below else "not " + ", ".join(below),
                 "passed": not below})
  genknow_gap = mean(compromised, "2.1_GenKnow") - mean(clean, "2.1_GenKnow")
  checks.append({"name": f"GenKnow: |Compromised - Clean| <= {criteria.max_genknow_gap:g}",
                 "value": f"{genknow_gap:+.3f}",
                 "passed": bool(abs(genknow_gap) <= criteria.max_genknow_gap)})
  for key in ("2.2_InterIdSim", "2.3_IntraIdSim"):
    checks.append({"name": f"{SHORT[key]}: Compromised > Clean",
                   "value": f"{mean(compromised, key):.3f} vs {mean(clean, key):.3f}",
                   "passed": bool(mean(compromised, key) > mean(clean, key))})
  for mode in evaluate.FAILURE_MODES:
    shown = [f"{r['method']}@{r['budget']:g}x" for r in board["rows"] if mode in r["failure_modes"]]
    listed = ", ".join(shown[:4]) + (f" and {len(shown) - 4} more" if len(shown) > 4 else "")
    checks.append({"name": f"failure mode visible: {mode}",
                   "value": listed if shown else "no method shows it",
                   "passed": bool(shown)})
  return checks


def _cell(spread: dict) -> str:
  if spread["n"] > 1:
    return f"{spread['mean']:.3f} ± {spread['std']:.3f}"
  return f"{spread['mean']:.4f}" if abs(spread["mean"]) < 0.01 else f"{spread['mean']:.3f}"


def table_rows(board: dict) -> tuple:
  """(header, rows of strings): references first, then the ranked methods."""
  header = ["rank", "method", "budget"] + [SHORT[k] for _, k in METRICS] + [
      "efficacy", "utility", "balanced", "failure modes"]
  rows = []
  for name in ("clean", "compromised"):
    s = board["reference_scores"][name]
    rows.append(["", name.capitalize(), ""] + [_cell(board["references"][name][k])
                                               for _, k in METRICS]
                + [f"{s['efficacy']:.2f}", f"{s['utility']:.2f}", f"{s['balanced']:.2f}", ""])
  for row in board["rows"]:
    s = row["scores"]
    rows.append([str(row["rank"]), row["method"], f"{row['budget']:g}x"]
                + [_cell(row["metrics"][k]) for _, k in METRICS]
                + [f"{s['efficacy']:.2f}", f"{s['utility']:.2f}", f"{s['balanced']:.2f}", row["label"]])
  return header, rows


def markdown(board: dict, checks: list, meta: dict) -> str:
  header, rows = table_rows(board)
  lines = [f"# SALMUBench leaderboard: {meta['config_name']}", "",
           f"{meta['date']}; {meta['device']}; seeds {meta['seeds']}; "
           f"jax {meta['versions']['jax']}, flax {meta['versions']['flax']}.", "",
           "Headline of each metric (RetFail: MRR); mean ± std over seeds when there are several. "
           "efficacy = mean normalized efficacy (0 = Compromised, 1 = Clean), utility = mean "
           "utility kept (1 = Compromised), both clipped to [0, 1] per metric; balanced = their "
           "harmonic mean. Ranked by the number of failure modes, then balanced "
           "(docs/protocol.md §5).", "",
           "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  lines += ["", "## Soundness checks", "", "| check | value | passed |", "|---|---|---|"]
  lines += [f"| {c['name']} | {c['value']} | {'yes' if c['passed'] else 'NO'} |" for c in checks]
  return "\n".join(lines) + "\n"


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


def report_html(board: dict, checks: list, meta: dict, contact_sheet_png: bytes | None,
                stages: list) -> str:
  """A self-contained page (PNGs embedded): checks, plots, leaderboard, data, timings."""
  plt = pyplot()
  images = {}
  for name, make in (("tradeoff", plot_tradeoff), ("metrics", plot_metrics)):
    figure = make(board)
    images[name] = base64.b64encode(png_bytes(figure)).decode()
    plt.close(figure)
  esc = html.escape
  header, rows = table_rows(board)
  table = "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" + "".join(
      "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows) + "</table>"
  check_rows = "".join(
      f"<tr class='{'pass' if c['passed'] else 'fail'}'><td>{esc(c['name'])}</td>"
      f"<td>{esc(c['value'])}</td><td>{'yes' if c['passed'] else 'NO'}</td></tr>" for c in checks)
  stage_rows = "".join(f"<tr><td>{esc(s['stage'])}</td><td>{s['status']}</td>"
                       f"<td>{s['seconds']:.1f}</td></tr>" for s in stages)
  sheet = (f"<h2>The data</h2><p>SALMU-synth contact sheet.</p><img src='data:image/png;base64,"
           f"{base64.b64encode(contact_sheet_png).decode()}' style='max-width:100%'>"
           if contact_sheet_png else "")
  versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
  return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>SALMUBench report: {esc(meta['config_name'])}</title>
<style>body{{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;font-size:12px;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 6px}}
tr.pass td:last-child{{color:#2a9d8f}}tr.fail td:last-child{{color:#d62828;font-weight:bold}}</style>
</head><body>
<h1>SALMUBench report: {esc(meta['config_name'])}</h1>
<p>{esc(meta['date'])}; device {esc(meta['device'])}; seeds {esc(str(meta['seeds']))};
budgets {esc(', '.join(f'{b:g}x' for b in meta['budgets']))}; {esc(versions)}.</p>
<h2>Is the benchmark sound?</h2>
<table><tr><th>check</th><th>value</th><th>passed</th></tr>{check_rows}</table>
<h2>Efficacy against utility</h2>
<img src="data:image/png;base64,{images['tradeoff']}">
<h2>Every metric, with the two references</h2>
<img src="data:image/png;base64,{images['metrics']}" style="max-width:100%">
<h2>Leaderboard</h2>
<p>Ranked by the number of failure modes, then by the harmonic mean of efficacy and utility
(docs/protocol.md §5). Failure modes: {esc(', '.join(evaluate.FAILURE_MODES))}.</p>
{table}
{sheet}
<h2>Stages</h2>
<table><tr><th>stage</th><th>status</th><th>seconds</th></tr>{stage_rows}</table>
<p>Total wall time of the last invocation: {meta['wall_seconds']:.0f} s.</p>
</body></html>
"""


def now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

