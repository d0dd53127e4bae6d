"""Comparing two leaderboards' verdicts (agreement.py, python -m salmu_jax.compare)."""
import copy
import json
import os
import subprocess
import sys

import pytest

from salmu_jax import agreement, compare, config as config_lib, io_utils, report
from salmu_jax.errors import ConfigError
from tests.conftest import REPO
from tests.test_benchmark import (CLEAN, COMPROMISED, CRITERIA, HOLDOUTS, THRESHOLDS,
                                  fake_result)

CONFIG = json.loads(config_lib.base_config().to_json())


def seeds(*retfails, holdout=0.45, genknow=0.91):
  return [fake_result({**COMPROMISED, "1.1_RetFail": r, "2.1_GenKnow": genknow,
                       **{k: holdout for k in HOLDOUTS}}) for r in retfails]


def leaderboard(runs: dict, where="cpu, 2 CPUs", config=CONFIG, clean_genknow=0.90) -> dict:
  """A leaderboard.json as the benchmark writes it, of hand-made results of three seeds."""
  clean = [fake_result({**CLEAN, "2.1_GenKnow": clean_genknow})] * 3
  board = report.leaderboard(clean, [fake_result(COMPROMISED)] * 3, runs, THRESHOLDS)
  return json.loads(json.dumps({
      **board, "checks": report.soundness_checks(board, CRITERIA),
      "meta": {"mode": "salmubench", "seeds": [0, 1, 2], "computed_on": [where],
               "config": config}}))


RUNS = {("good", 1.0): seeds(0.01, 0.02, 0.015),
        ("middling", 1.0): seeds(0.05, 0.06, 0.055, holdout=0.4),
        ("weak", 1.0): seeds(0.28, 0.29, 0.27),
        ("blunt", 5.0): [fake_result({**CLEAN, "2.1_GenKnow": 0.3})] * 3}


def test_runs_that_differ_in_their_last_digits_agree():
  a = leaderboard(RUNS)
  nudged = {key: [copy.deepcopy(r) for r in results] for key, results in RUNS.items()}
  for results in nudged.values():
    for r in results:
      r["efficacy"]["1.1_RetFail"]["MRR"] += 1e-4
  b = leaderboard(nudged, where="cpu, 1 CPU")
  result = agreement.compare(a, b)
  assert result["agree"]
  assert result["summary"] == {"rows": 4, "same_failure_modes": 4, "same_first_failure_mode": 4,
                               "settled": [4, 4], "settled_in_either": 4,
                               "verdicts_contradicted": 0,
                               "ranks_inside_intervals": 4, "same_rank": 4,
                               "checks_same": len(a["checks"]), "checks": len(a["checks"]),
                               "orders_reversed": 0}
  # good, middling, weak and blunt are told apart on every resample: 6 orders, all held.
  assert result["orders"]["A"]["claimed"] == result["orders"]["A"]["held"] == 6
  text = agreement.markdown(result)
  assert "**The verdicts agree.**" in text and "computed on cpu, 1 CPU." in text
  assert "Rows whose failure modes differ" not in text


def test_a_changed_label_a_reversed_order_and_a_flipped_check_are_disagreements():
  a = leaderboard(RUNS)
  changed = dict(RUNS)
  changed[("good", 1.0)] = seeds(0.10, 0.11, 0.12, holdout=0.3)  # Now below middling.
  changed[("weak", 1.0)] = seeds(0.08, 0.09, 0.07)  # No longer ineffective.
  b = leaderboard(changed, clean_genknow=0.5)  # Clean lost general knowledge: a check fails.
  result = agreement.compare(a, b, names=("two", "one"))
  assert not result["agree"]
  rows = {r["method"]: r for r in result["rows"]}
  assert rows["weak"]["failure_modes"] == [["ineffective forgetting"], []]
  assert not rows["weak"]["same_failure_modes"] and not rows["weak"]["same_first_failure_mode"]
  assert rows["weak"]["support"] == [1.0, 1.0] and rows["weak"]["contradicted"]
  assert ["good 1x", "middling 1x"] in result["orders"]["two"]["reversed"]
  assert result["summary"]["orders_reversed"] >= 2  # Claimed by each run, reversed by the other.
  flipped = [c["name"] for c in result["checks"] if c["passed"][0] != c["passed"][1]]
  # weak was the one ineffective row: the original's failure mode is no longer visible.
  assert flipped == ["GenKnow: |Compromised - Clean| <= 0.1 of their accuracy above chance",
                     "failure mode visible: ineffective forgetting"]
  text = agreement.markdown(result)
  assert "**The verdicts differ.**" in text
  assert "| weak | 1x |" in text and "good 1x above middling 1x" in text
  assert "ineffective forgetting (100%) **contradicted** | none (100%) **contradicted** |" in text
  assert "passed in two, failed in one" in text


def test_an_unresolved_order_is_not_a_disagreement():
  close = {("a", 1.0): seeds(0.01, 0.05, 0.02), ("b", 1.0): seeds(0.04, 0.01, 0.03)}
  apart = {("a", 1.0): seeds(0.01, 0.011, 0.012), ("b", 1.0): seeds(0.04, 0.041, 0.042)}
  result = agreement.compare(leaderboard(apart), leaderboard(close))
  assert result["agree"]
  assert result["orders"]["A"] == {"claimed": 1, "held": 0, "unresolved": [["a 1x", "b 1x"]],
                                   "reversed": []}


def test_a_verdict_the_seeds_do_not_settle_may_change():
  # One seed of three ineffective (RetFail 0.26 of 0.30) and the mean just past the
  # threshold: the bootstrap gives "ineffective" in a minority of resamples.
  borderline = {("borderline", 1.0): seeds(0.01, 0.16, 0.26), **RUNS}
  a = leaderboard(borderline)
  row = next(r for r in a["rows"] if r["method"] == "borderline")
  assert row["failure_modes"] == [] and 0 < row["failure_modes_support"] < 0.9
  assert report.verdict_cell(row, a) == f"none ({row['failure_modes_support']:.0%})"
  b = leaderboard({**borderline, ("borderline", 1.0): seeds(0.01, 0.20, 0.26)})
  result = agreement.compare(a, b)
  changed = next(r for r in result["rows"] if r["method"] == "borderline")
  assert changed["failure_modes"][1] == ["ineffective forgetting"]
  assert not changed["contradicted"] and not any(changed["settled"])
  assert result["agree"] and result["summary"]["same_failure_modes"] == 4


@pytest.mark.parametrize("change, message", [
    (lambda b: b["rows"].pop(), "rank different rows \\(only in A: blunt 5x; only in B: none\\)"),
    (lambda b: b["meta"]["config"]["unlearn"].update(learning_rate=0.5),
     "compute differently \\(differ in: unlearn.learning_rate\\)"),
    (lambda b: b["meta"]["config"]["eval"].update(ineffective_below=0.4),
     "different thresholds \\(ineffective_below\\)"),
    (lambda b: b.update(rank_confidence=0.8), "different thresholds \\(rank_confidence\\)"),
    (lambda b: b["meta"].update(mode="scalability"), "B is a --mode=scalability leaderboard"),
    (lambda b: b.pop("checks"), "B is not a benchmark leaderboard.json \\(no checks\\)"),
    (lambda b: b["rows"][0].pop("per_seed_labels"), "B's row good lacks per_seed_labels"),
])
def test_leaderboards_that_cannot_be_compared_are_refused(change, message):
  a, b = leaderboard(RUNS), leaderboard(RUNS)
  change(b)
  with pytest.raises(ConfigError, match=message):
    agreement.compare(a, b)


def test_settings_that_change_neither_results_nor_verdicts_do_not_block():
  b = leaderboard(RUNS)
  b["meta"]["config"]["data"]["loader"]["num_threads"] = 7  # config.RESULT_NEUTRAL.
  b["meta"]["config"]["benchmark"]["seeds"] = 5
  assert agreement.compare(leaderboard(RUNS), b)["agree"]


@pytest.mark.slow
def test_the_command_reads_workdirs_writes_the_comparison_and_exits_by_the_verdict(tmp_path):
  same, other = tmp_path / "same", tmp_path / "other"
  for path, runs in ((same, RUNS), (other, {**RUNS, ("weak", 1.0): seeds(0.08, 0.09, 0.07)})):
    os.makedirs(path)
    io_utils.write_json_atomic(path / "leaderboard.json", leaderboard(runs))
  run = lambda *args: subprocess.run([sys.executable, "-m", "salmu_jax.compare", *map(str, args)],
                                     capture_output=True, text=True, cwd=REPO)
  agreed = run(same, same / "leaderboard.json", f"--output={tmp_path / 'agree.md'}")
  assert agreed.returncode == 0, agreed.stderr[-2000:]
  assert (tmp_path / "agree.md").read_text() == agreed.stdout
  assert "**The verdicts agree.**" in agreed.stdout
  differed = run(same, other)
  assert differed.returncode == compare.DIFFERENT_VERDICTS_EXIT_CODE
  assert "| weak | 1x |" in differed.stdout
  missing = run(same, tmp_path / "nowhere")
  assert missing.returncode == 2
  assert missing.stderr.strip() == (f"error: {tmp_path / 'nowhere' / 'leaderboard.json'} does "
                                    f"not exist: pass a benchmark workdir or its leaderboard.json")
  assert run(same).returncode == 2
