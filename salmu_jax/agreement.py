"""Do two leaderboards reach the same verdicts?

A benchmark recomputed elsewhere never matches bit for bit: a training's last digits depend
on the processor and on how many CPUs the process may use (README, "What reproduces, and
where"), and a change that only reorders a reduction moves every number after it. What
must survive such a change is what a leaderboard claims: the failure modes its seeds settle
(report.settled), every order of two rows that its rank intervals tell apart, and the
soundness checks' outcomes. `compare` reads two leaderboard.json of one config and says
where either contradicts the other.
"""
import itertools
import math
import os

from salmu_jax import config as config_lib, io_utils, report
from salmu_jax.evaluation import diagnosis
from salmu_jax.errors import ConfigError


def row_key(row: dict) -> tuple:
  return row["method"], float(row["budget"])


def row_name(key: tuple) -> str:
  return f"{key[0]} {key[1]:g}x"


def check_leaderboard(board, name: str) -> None:
  """Refuses, in one line, what is not a main-mode leaderboard.json of this version."""
  if not isinstance(board, dict) or not isinstance(board.get("meta"), dict):
    raise ConfigError(f"{name} is not a benchmark leaderboard.json (no meta)")
  mode = board["meta"].get("mode", "salmubench")
  if mode != "salmubench":
    raise ConfigError(f"{name} is a --mode={mode} leaderboard; compare the main mode's "
                      f"(WORKDIR/leaderboard.json)")
  missing = [k for k in ("rows", "checks", "rank_confidence", "per_seed") if k not in board]
  missing += [f"meta.{k}" for k in ("config", "seeds", "attacks") if k not in board["meta"]]
  if missing:
    raise ConfigError(f"{name} is not a benchmark leaderboard.json of this version (no "
                      f"{', '.join(missing)}); rebuild it by running the benchmark's command on "
                      f"its workdir again")
  meta = board["meta"]
  checks_valid = lambda checks: isinstance(checks, list) and all(
      isinstance(c, dict) and isinstance(c.get("name"), str) and "passed" in c for c in checks)
  shapes = {"rows": isinstance(board["rows"], list) and bool(board["rows"]),
            "checks": checks_valid(board["checks"]),
            "by_design": isinstance(board.get("by_design", {}), dict)
                         and checks_valid(board.get("by_design", {}).get("checks", [])),
            "meta.computed_on": isinstance(meta.get("computed_on", []), list)
                                and all(isinstance(w, str) for w in meta.get("computed_on", [])),
            "rank_confidence": config_lib.finite_number(board["rank_confidence"]),
            "per_seed": isinstance(board["per_seed"], dict)
                        and isinstance(board["per_seed"].get("clean"), list),
            "meta.config": isinstance(meta["config"], dict)
                           and isinstance(meta["config"].get("eval"), dict),
            "meta.seeds": isinstance(meta["seeds"], list),
            "meta.attacks": isinstance(meta["attacks"], list)}
  malformed = [key for key, ok in shapes.items() if not ok]
  if malformed:
    raise ConfigError(f"{name}'s {', '.join(malformed)} {'is' if len(malformed) == 1 else 'are'} "
                      f"empty or malformed: not a leaderboard.json the benchmark wrote")
  seen = set()
  for i, row in enumerate(board["rows"]):
    where = f"{name}'s row {i + 1}"
    if not isinstance(row, dict):
      raise ConfigError(f"{where} is not an object")
    if "failure_modes_support" not in row and "failure_modes" in row:
      raise ConfigError(f"{where} ({row.get('method')}) has no failure_modes_support: written "
                        f"by an older version; rebuild it by running the benchmark's command "
                        f"on its workdir again")
    interval, labels = row.get("rank_interval"), row.get("per_seed_labels")
    valid = (isinstance(row.get("method"), str) and config_lib.finite_number(row.get("budget"))
             and isinstance(row.get("rank"), int) and isinstance(interval, list)
             and len(interval) == 2 and all(isinstance(v, int) for v in interval)
             and isinstance(row.get("failure_modes"), list)
             and all(isinstance(mode, str) for mode in row["failure_modes"])
             and isinstance(row.get("scores", {}), dict)
             and config_lib.finite_number(row.get("failure_modes_support"))
             and 0 <= row["failure_modes_support"] <= 1
             # report.settled reads the row's label against each seed's.
             and isinstance(row.get("label"), str) and isinstance(labels, list)
             and len(labels) == len(board["per_seed"]["clean"])
             and all(isinstance(label, str) for label in labels)
             # And each failure mode's replication margin (report.near_thresholds), and
             # the recoveries' of the attacks another draw may check or not.
             and _margins_valid(row.get("margins"))
             and _open_attacks_valid(row.get("checkability_near", []), row.get("attack_margins")))
    if not valid:
      raise ConfigError(f"{where} ({row.get('method')}) lacks a method, budget, rank, "
                        f"rank_interval [low, high], failure_modes, failure_modes_support in "
                        f"[0, 1], label, per_seed_labels (one per seed) or margins (mean and "
                        f"needed per failure mode, and per open attack; rebuild a leaderboard "
                        f"of an older version by running the benchmark's command on its "
                        f"workdir again)")
    if row_key(row) in seen:
      raise ConfigError(f"{name} ranks {row_name(row_key(row))} twice")
    seen.add(row_key(row))


def check_comparable(a: dict, b: dict, names=("A", "B")) -> None:
  """Refuses what has no verdicts to compare: leaderboards of other rows, attacks or
  soundness checks, or of configs that compute or judge differently (the seeds may differ:
  another seed set is a check too)."""
  for name, board in zip(names, (a, b)):
    check_leaderboard(board, name)
  only = lambda x, y: sorted(set(x) - set(y))
  rows = [list(map(row_key, board["rows"])) for board in (a, b)]
  only_a, only_b = only(*rows), only(*reversed(rows))
  if only_a or only_b:
    listed = lambda keys: ", ".join(map(row_name, keys[:6])) or "none"
    raise ConfigError(f"the leaderboards rank different rows (only in {names[0]}: "
                      f"{listed(only_a)}; only in {names[1]}: {listed(only_b)}); run both with "
                      f"the same --methods and --budgets")
  attacks = [sorted(board["meta"]["attacks"]) for board in (a, b)]
  if attacks[0] != attacks[1]:
    raise ConfigError(f"the leaderboards ran other attacks ({names[0]}: "
                      f"{','.join(attacks[0]) or 'none'}; {names[1]}: {','.join(attacks[1]) or 'none'}): "
                      f"superficial forgetting is judged by them; run both with the same --attacks")
  configs = [board["meta"]["config"] for board in (a, b)]
  # The first training seed (`--config.seed`) picks the seed set, which may differ.
  differing = [key for key in config_lib.computation_differences(*configs) if key != "seed"]
  if differing:
    raise ConfigError(f"the leaderboards come from configs that compute differently (differ "
                      f"in: {', '.join(differing[:8])}): their numbers are not two measurements "
                      f"of one thing")
  judged = [key for key in config_lib.DIAGNOSIS_THRESHOLDS
            if configs[0]["eval"].get(key) != configs[1]["eval"].get(key)]
  judged += [key for key in ("rank_confidence",) if a["rank_confidence"] != b["rank_confidence"]]
  if judged:
    raise ConfigError(f"the leaderboards judge by different thresholds ({', '.join(judged)}): "
                      f"their verdicts differ by construction")
  checks = [[c["name"] for c in verdict_checks(board)] for board in (a, b)]
  only_a, only_b = only(*checks), only(*reversed(checks))
  if only_a or only_b:
    raise ConfigError(f"the leaderboards run different soundness checks (only in {names[0]}: "
                      f"{'; '.join(only_a) or 'none'}; only in {names[1]}: "
                      f"{'; '.join(only_b) or 'none'}): their criteria (config.benchmark) differ")


def _margins_valid(margins) -> bool:
  """Every failure mode judged without an attack has a margin; each a finite or NaN mean
  and a non-negative (or NaN: not measured) needed margin."""
  return (isinstance(margins, dict) and set(diagnosis.FAILURE_MODES[:4]) <= set(margins)
          and set(margins) <= set(diagnosis.FAILURE_MODES) and _numbers_valid(margins.values()))


def _numbers_valid(margins) -> bool:
  """Each margin a finite or NaN mean and a non-negative (or NaN: not measured) needed one."""
  number = lambda v: config_lib.finite_number(v) or (isinstance(v, float) and math.isnan(v))
  return all(isinstance(m, dict) and number(m.get("mean")) and number(m.get("needed"))
             and not m["needed"] < 0 for m in margins)


def _open_attacks_valid(attacks, margins) -> bool:
  """The attacks another draw may check or not (a list of names), each with a recovery
  margin when there is one."""
  if not isinstance(attacks, list) or not all(isinstance(a, str) for a in attacks):
    return False
  return not attacks or (isinstance(margins, dict) and _numbers_valid(margins.values()))


def verdict_checks(board: dict) -> list:
  """The soundness checks, and with unlearning by design (`--methods=all`) its targets."""
  by_design = board.get("by_design", {}).get("checks", [])
  return board["checks"] + [{**c, "name": f"by design: {c['name']}"} for c in by_design]


def separated(upper: dict, lower: dict) -> bool:
  """Do the rank intervals tell `upper` (ranked above) and `lower` apart?"""
  return upper["rank_interval"][1] < lower["rank_interval"][0]


def order_claims(claims_from: dict, tested_on: dict) -> dict:
  """Every pair of rows that `claims_from`'s intervals tell apart, looked up in `tested_on`:
  held (the same order, told apart there too), unresolved there (its intervals overlap, or
  one seed) or reversed (told apart in the opposite order: a contradiction)."""
  held, unresolved, reversed_ = [], [], []
  if report.has_spread(claims_from):
    other = {row_key(r): r for r in tested_on["rows"]}
    resolves = report.has_spread(tested_on)
    rows = sorted(claims_from["rows"], key=lambda r: r["rank"])
    for upper, lower in itertools.combinations(rows, 2):
      if not separated(upper, lower):
        continue
      pair = [row_name(row_key(upper)), row_name(row_key(lower))]
      there_upper, there_lower = other[row_key(upper)], other[row_key(lower)]
      if resolves and separated(there_upper, there_lower):
        held.append(pair)
      elif resolves and separated(there_lower, there_upper):
        reversed_.append(pair)
      else:
        unresolved.append(pair)
  return {"claimed": len(held) + len(unresolved) + len(reversed_), "held": len(held),
          "unresolved": unresolved, "reversed": reversed_}


def compare(a: dict, b: dict, names=("A", "B")) -> dict:
  """Where leaderboards `a` and `b` agree. They agree when neither contradicts a claim of
  the other: every failure-mode verdict that either settles (report.settled) is the same in
  the other, no order of two rows that either's intervals tell apart is reversed, and every
  soundness check has the same outcome. Unsettled verdicts may change and ranks may move
  inside their intervals (both counted and listed, not disagreements)."""
  check_comparable(a, b, names)
  rows_b = {row_key(r): r for r in b["rows"]}
  rows = []
  for row_a in sorted(a["rows"], key=lambda r: r["rank"]):
    row_b = rows_b[row_key(row_a)]
    pair = (row_a, row_b)
    inside = [low <= other["rank"] <= high for (low, high), other in
              ((row_a["rank_interval"], row_b), (row_b["rank_interval"], row_a))]
    settled = [report.settled(row_a, a), report.settled(row_b, b)]
    same = set(row_a["failure_modes"]) == set(row_b["failure_modes"])
    rows.append({
        "method": row_a["method"], "budget": row_a["budget"],
        "rank": [r["rank"] for r in pair], "rank_interval": [r["rank_interval"] for r in pair],
        "rank_inside": all(inside),
        "failure_modes": [r["failure_modes"] for r in pair],
        "support": [r["failure_modes_support"] for r in pair], "settled": settled,
        "same_failure_modes": same,
        "same_first_failure_mode": row_a["failure_modes"][:1] == row_b["failure_modes"][:1],
        "contradicted": not same and any(settled),
        "per_seed_labels": [r["per_seed_labels"] for r in pair],
        "balanced": [r.get("scores", {}).get("balanced", math.nan) for r in pair]})
  checks_b = {c["name"]: c for c in verdict_checks(b)}
  checks = [{"name": c["name"], "passed": [c["passed"], checks_b[c["name"]]["passed"]]}
            for c in verdict_checks(a)]
  orders = {names[0]: order_claims(a, b), names[1]: order_claims(b, a)}
  contradicted = [r for r in rows if r["contradicted"]]
  check_changes = [c for c in checks if c["passed"][0] != c["passed"][1]]
  # A pair both claim in opposite orders is one contradiction.
  reversed_ = {frozenset(pair) for o in orders.values() for pair in o["reversed"]}
  return {
      "names": list(names), "rows": rows, "checks": checks, "orders": orders,
      "computed_on": [board["meta"].get("computed_on", []) for board in (a, b)],
      "seeds": [board["meta"]["seeds"] for board in (a, b)],
      "summary": {
          "rows": len(rows), "same_failure_modes": sum(r["same_failure_modes"] for r in rows),
          "same_first_failure_mode": sum(r["same_first_failure_mode"] for r in rows),
          "settled": [sum(r["settled"][i] for r in rows) for i in (0, 1)],
          "settled_in_either": sum(any(r["settled"]) for r in rows),
          "verdicts_contradicted": len(contradicted),
          "ranks_inside_intervals": sum(r["rank_inside"] for r in rows),
          "same_rank": sum(r["rank"][0] == r["rank"][1] for r in rows),
          "checks_same": len(checks) - len(check_changes), "checks": len(checks),
          "checks_failed_in_both": [c["name"] for c in checks if not any(c["passed"])],
          "orders_reversed": len(reversed_)},
      "agree": not contradicted and not check_changes and not reversed_}


def markdown(result: dict) -> str:
  """The comparison as the text a reviewer reads: the verdict, then every disagreement.
  Tables name the leaderboards A and B (the header says which is which)."""
  s = result["summary"]
  where = lambda i: "; ".join(result["computed_on"][i]) or "unrecorded"
  lines = ["# Do two leaderboards reach the same verdicts?", ""]
  lines += [f"{label}: {result['names'][i]}, seeds {result['seeds'][i]}, computed on {where(i)}."
            for i, label in enumerate("AB")]
  lines += ["", ("**The verdicts agree.**" if result["agree"] else "**The verdicts differ.**")
            + f" Of {s['rows']} rows, {s['settled_in_either']} have failure modes that A or B "
            f"settles (A {s['settled'][0]}, B {s['settled'][1]}: given by at least the rank "
            f"confidence's share of its seed bootstrap and by most of its seeds, every "
            f"threshold beyond the replication margin), of which "
            f"{s['verdicts_contradicted']} "
            f"differ{'s' if s['verdicts_contradicted'] == 1 else ''} in the other; "
            f"{s['same_failure_modes']} of the {s['rows']} have the same failure modes "
            f"({s['same_first_failure_mode']} the same first one); {s['ranks_inside_intervals']} "
            f"ranks lie inside each other's intervals ({s['same_rank']} equal); "
            f"{s['checks_same']} of {s['checks']} soundness checks have the same outcome."]
  for label, o in zip("AB", result["orders"].values()):
    lines.append(f"- The {o['claimed']} orders of two rows that {label}'s intervals tell apart: "
                 f"{o['held']} told apart the same way by the other, {len(o['unresolved'])} "
                 f"unresolved there, {len(o['reversed'])} reversed.")
  if s["checks_failed_in_both"]:
    lines.append(f"- Both fail: {'; '.join(s['checks_failed_in_both'])}.")
  lines.append("")
  changed = [r for r in result["rows"] if not r["same_failure_modes"] or not r["rank_inside"]]
  if changed:
    rank = lambda r, i: f"{r['rank'][i]} ({r['rank_interval'][i][0]}-{r['rank_interval'][i][1]})"
    modes = lambda r, i: (f"{', '.join(r['failure_modes'][i]) or 'none'} "
                          f"({report.percent(r['support'][i])})"
                          + (" **contradicted**" if r["contradicted"] and r["settled"][i] else ""))
    lines += ["Rows whose failure modes differ or whose rank leaves the other's interval "
              "(failure modes with the share of the seed bootstrap that gives them; "
              "**contradicted**: settled there, different in the other):", ""]
    lines += report.markdown_table(
        ["method", "budget", "rank A", "rank B", "failure modes A", "failure modes B",
         "per seed A", "per seed B", "balanced A / B"],
        [[r["method"], f"{r['budget']:g}x", rank(r, 0), rank(r, 1), modes(r, 0), modes(r, 1),
          "; ".join(r["per_seed_labels"][0]), "; ".join(r["per_seed_labels"][1]),
          f"{r['balanced'][0]:.2f} / {r['balanced'][1]:.2f}"] for r in changed])
    lines.append("")
  for label, o in zip("AB", result["orders"].values()):
    if o["reversed"]:
      lines.append(f"Orders {label} claims and the other reverses: "
                   + "; ".join(f"{u} above {l}" for u, l in o["reversed"]) + ".")
  for c in result["checks"]:
    if c["passed"][0] != c["passed"][1]:
      lines.append(f"Soundness check `{c['name']}`: {'passed' if c['passed'][0] else 'failed'} "
                   f"in A, {'passed' if c['passed'][1] else 'failed'} in B.")
  return "\n".join(lines).rstrip() + "\n"


def read_leaderboard(path: str) -> dict:
  """A benchmark workdir's leaderboard.json, or that file itself."""
  file = path if os.path.isfile(path) else os.path.join(path, "leaderboard.json")
  try:
    return io_utils.read_json(file)
  except FileNotFoundError:
    raise ConfigError(f"{file} does not exist: pass a benchmark workdir or its "
                      f"leaderboard.json") from None
  except (OSError, ValueError) as e:
    raise ConfigError(f"cannot read {file} ({e})") from None
