"""Do two leaderboards reach the same verdicts?

A benchmark recomputed elsewhere never matches bit for bit: a training's last digits depend
on the processor and on how many CPUs the process may use (README, "What reproduces, and
where"), and a change that only reorders a reduction moves every number after it. What
must survive such a change is the verdicts: each row's failure modes, the soundness
checks, and every order of two rows that the rank intervals claim to tell apart. `compare`
reads two leaderboard.json of the same config and says where they agree and where not.
"""
import itertools
import os

from salmu_jax import config as config_lib, io_utils
from salmu_jax.errors import ConfigError

NEEDED_KEYS = ("rows", "checks", "meta")
NEEDED_ROW_KEYS = ("method", "budget", "rank", "rank_interval", "failure_modes",
                   "failure_modes_support", "per_seed_labels", "scores")


def row_key(row: dict) -> tuple:
  return row["method"], float(row["budget"])


def row_name(key: tuple) -> str:
  return f"{key[0]} {key[1]:g}x"


def check_comparable(a: dict, b: dict, names=("A", "B")) -> None:
  """Refuses what has no verdicts to compare: a file that is not a SALMUBench
  leaderboard.json, leaderboards of other rows, or of configs that compute or judge
  differently (the seeds may differ: another seed set is a check too)."""
  for name, board in zip(names, (a, b)):
    missing = [k for k in NEEDED_KEYS if k not in board]
    if missing or not board["rows"]:
      raise ConfigError(f"{name} is not a benchmark leaderboard.json (no {', '.join(missing) or 'rows'})")
    mode = board["meta"].get("mode", "salmubench")
    if mode != "salmubench":
      raise ConfigError(f"{name} is a --mode={mode} leaderboard; compare the main mode's "
                        f"(WORKDIR/leaderboard.json)")
    for row in board["rows"]:
      absent = [k for k in NEEDED_ROW_KEYS if k not in row]
      if absent:
        raise ConfigError(f"{name}'s row {row.get('method')} lacks {', '.join(absent)}: written "
                          f"by an older version; rebuild it by running the benchmark's command "
                          f"on its workdir again")
  only_a = sorted(set(map(row_key, a["rows"])) - set(map(row_key, b["rows"])))
  only_b = sorted(set(map(row_key, b["rows"])) - set(map(row_key, a["rows"])))
  if only_a or only_b:
    listed = lambda keys: ", ".join(map(row_name, keys[:6])) or "none"
    raise ConfigError(f"the leaderboards rank different rows (only in {names[0]}: "
                      f"{listed(only_a)}; only in {names[1]}: {listed(only_b)}); run both with "
                      f"the same --methods and --budgets")
  configs = [board["meta"].get("config") for board in (a, b)]
  if None in configs:
    raise ConfigError("a leaderboard without its config (meta.config) cannot be checked for "
                      "comparability")
  differing = config_lib.computation_differences(*configs)
  if differing:
    raise ConfigError(f"the leaderboards come from configs that compute differently (differ "
                      f"in: {', '.join(differing[:8])}): their numbers are not two measurements "
                      f"of one thing")
  judged = [key for key in config_lib.DIAGNOSIS_THRESHOLDS
            if configs[0]["eval"].get(key) != configs[1]["eval"].get(key)]
  judged += [key for key in ("rank_confidence",) if a.get(key) != b.get(key)]
  if judged:
    raise ConfigError(f"the leaderboards judge by different thresholds ({', '.join(judged)}): "
                      f"their verdicts differ by construction")


def verdict_checks(board: dict) -> list:
  """The soundness checks, and with unlearning by design (`--methods=all`) its targets."""
  by_design = board.get("by_design", {}).get("checks", [])
  return board["checks"] + [{**c, "name": f"by design: {c['name']}"} for c in by_design]


def separated(upper: dict, lower: dict) -> bool:
  """Do the rank intervals tell `upper` (ranked above) and `lower` apart?"""
  return upper["rank_interval"][1] < lower["rank_interval"][0]


def order_claims(claims_from: dict, tested_on: dict) -> dict:
  """Every pair of rows that `claims_from`'s intervals tell apart, looked up in `tested_on`:
  held (the same order, told apart there too), unresolved there (the same order or not, its
  intervals overlap) or reversed (told apart in the opposite order: a contradiction)."""
  rows, other = claims_from["rows"], {row_key(r): r for r in tested_on["rows"]}
  held, unresolved, reversed_ = [], [], []
  for upper, lower in itertools.combinations(sorted(rows, key=lambda r: r["rank"]), 2):
    if not separated(upper, lower):
      continue
    pair = [row_name(row_key(upper)), row_name(row_key(lower))]
    there_upper, there_lower = other[row_key(upper)], other[row_key(lower)]
    if separated(there_upper, there_lower):
      held.append(pair)
    elif separated(there_lower, there_upper):
      reversed_.append(pair)
    else:
      unresolved.append(pair)
  return {"claimed": len(held) + len(unresolved) + len(reversed_), "held": len(held),
          "unresolved": unresolved, "reversed": reversed_}


def settled(row: dict, board: dict) -> bool:
  """Does the board claim this row's failure modes: as often as its rank intervals' confidence
  over its seed bootstrap? (report.verdict_cell marks the others.)"""
  return row["failure_modes_support"] >= board["rank_confidence"]


def compare(a: dict, b: dict, names=("A", "B")) -> dict:
  """Where leaderboards `a` and `b` agree. They agree when neither contradicts a claim of
  the other: every failure-mode verdict that either settles (`settled`) is the same in the
  other, no order of two rows that either's intervals tell apart is reversed, and every
  soundness check has the same outcome. Unsettled verdicts may change and ranks may move
  inside their intervals (both counted and listed, not disagreements)."""
  check_comparable(a, b, names)
  rows_b = {row_key(r): r for r in b["rows"]}
  rows = []
  for row_a in sorted(a["rows"], key=lambda r: r["rank"]):
    row_b = rows_b[row_key(row_a)]
    low_a, high_a = row_a["rank_interval"]
    low_b, high_b = row_b["rank_interval"]
    same = set(row_a["failure_modes"]) == set(row_b["failure_modes"])
    rows.append({
        "method": row_a["method"], "budget": row_a["budget"],
        "rank": [row_a["rank"], row_b["rank"]],
        "rank_interval": [row_a["rank_interval"], row_b["rank_interval"]],
        "rank_inside": low_a <= row_b["rank"] <= high_a and low_b <= row_a["rank"] <= high_b,
        "failure_modes": [row_a["failure_modes"], row_b["failure_modes"]],
        "support": [row_a["failure_modes_support"], row_b["failure_modes_support"]],
        "settled": [settled(row_a, a), settled(row_b, b)],
        "same_failure_modes": same,
        "same_first_failure_mode": row_a["failure_modes"][:1] == row_b["failure_modes"][:1],
        "contradicted": not same and (settled(row_a, a) or settled(row_b, b)),
        "per_seed_labels": [row_a["per_seed_labels"], row_b["per_seed_labels"]],
        "balanced": [row_a["scores"]["balanced"], row_b["scores"]["balanced"]]})
  checks_b = {c["name"]: c for c in verdict_checks(b)}
  checks = [{"name": c["name"], "passed": [c["passed"], checks_b[c["name"]]["passed"]]}
            for c in verdict_checks(a) if c["name"] in checks_b]
  orders = {names[0]: order_claims(a, b), names[1]: order_claims(b, a)}
  contradicted = [r for r in rows if r["contradicted"]]
  check_changes = [c for c in checks if c["passed"][0] != c["passed"][1]]
  reversed_ = sum(len(o["reversed"]) for o in orders.values())
  return {
      "names": list(names), "rows": rows, "checks": checks, "orders": orders,
      "computed_on": [board["meta"].get("computed_on", []) for board in (a, b)],
      "seeds": [board["meta"].get("seeds") for board in (a, b)],
      "summary": {
          "rows": len(rows), "same_failure_modes": sum(r["same_failure_modes"] for r in rows),
          "same_first_failure_mode": sum(r["same_first_failure_mode"] for r in rows),
          "settled": [sum(r["settled"][i] for r in rows) for i in (0, 1)],
          "settled_in_either": sum(any(r["settled"]) for r in rows),
          "verdicts_contradicted": len(contradicted),
          "ranks_inside_intervals": sum(r["rank_inside"] for r in rows),
          "same_rank": sum(r["rank"][0] == r["rank"][1] for r in rows),
          "checks_same": len(checks) - len(check_changes), "checks": len(checks),
          "orders_reversed": reversed_},
      "agree": not contradicted and not check_changes and not reversed_}


def markdown(result: dict) -> str:
  """The comparison as the text a reviewer reads: the verdict, then every disagreement."""
  a, b = result["names"]
  s = result["summary"]
  where = lambda i: "; ".join(result["computed_on"][i]) or "unrecorded"
  lines = [f"# Do {a} and {b} reach the same verdicts?", "",
           f"{a}: seeds {result['seeds'][0]}, computed on {where(0)}.",
           f"{b}: seeds {result['seeds'][1]}, computed on {where(1)}.", "",
           ("**The verdicts agree.**" if result["agree"] else "**The verdicts differ.**")
           + f" Of {s['rows']} rows, {s['settled_in_either']} have failure modes that either "
           f"leaderboard settles (in {s['settled'][0]} and {s['settled'][1]} rows: as often as "
           f"its rank confidence over its seed bootstrap), and {s['verdicts_contradicted']} of "
           f"those differ in the other; {s['same_failure_modes']} of the {s['rows']} have the "
           f"same failure modes ({s['same_first_failure_mode']} the same first one); "
           f"{s['ranks_inside_intervals']} ranks lie inside the other leaderboard's interval "
           f"({s['same_rank']} equal); {s['checks_same']} of {s['checks']} soundness checks have "
           f"the same outcome."]
  for name, o in result["orders"].items():
    lines.append(f"- The {o['claimed']} orders of two rows that {name}'s intervals tell apart: "
                 f"{o['held']} told apart the same way by the other, {len(o['unresolved'])} "
                 f"unresolved there, {len(o['reversed'])} reversed.")
  lines.append("")
  changed = [r for r in result["rows"] if not r["same_failure_modes"] or not r["rank_inside"]]
  if changed:
    lines += [f"Rows whose failure modes differ or whose rank leaves the other's interval "
              f"(failure modes with the share of the bootstrap that gives them; **contradicted**: "
              f"settled in one, different in the other):", "",
              f"| method | budget | rank {a} | rank {b} | failure modes {a} | failure modes {b} "
              f"| per seed {a} | per seed {b} | balanced {a} / {b} |",
              "|---|---|---|---|---|---|---|---|---|"]
    rank = lambda r, i: f"{r['rank'][i]} ({r['rank_interval'][i][0]}-{r['rank_interval'][i][1]})"
    modes = lambda r, i: (f"{', '.join(r['failure_modes'][i]) or 'none'} ({r['support'][i]:.0%})"
                          + (" **contradicted**" if r["contradicted"] and r["settled"][i] else ""))
    seeds = lambda r, i: "; ".join(r["per_seed_labels"][i])
    for r in changed:
      lines.append(f"| {r['method']} | {r['budget']:g}x | {rank(r, 0)} | {rank(r, 1)} | "
                   f"{modes(r, 0)} | {modes(r, 1)} | {seeds(r, 0)} | {seeds(r, 1)} | "
                   f"{r['balanced'][0]:.2f} / {r['balanced'][1]:.2f} |")
    lines.append("")
  for name, o in result["orders"].items():
    if o["reversed"]:
      lines.append(f"Orders {name} claims and the other reverses: "
                   + "; ".join(f"{u} above {l}" for u, l in o["reversed"]) + ".")
  for c in result["checks"]:
    if c["passed"][0] != c["passed"][1]:
      lines.append(f"Soundness check `{c['name']}`: {'passed' if c['passed'][0] else 'failed'} "
                   f"in {a}, {'passed' if c['passed'][1] else 'failed'} in {b}.")
  return "\n".join(lines).rstrip() + "\n"


def read_leaderboard(path: str) -> dict:
  """A benchmark workdir's leaderboard.json, or that file itself."""
  file = path if path.endswith(".json") else os.path.join(path, "leaderboard.json")
  try:
    return io_utils.read_json(file)
  except FileNotFoundError:
    raise ConfigError(f"{file} does not exist: pass a benchmark workdir or its "
                      f"leaderboard.json") from None
  except (OSError, ValueError) as e:
    raise ConfigError(f"cannot read {file} ({e})") from None
