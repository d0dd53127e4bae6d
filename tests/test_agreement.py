"""Comparing two leaderboards' verdicts (agreement.py, python -m salmu_jax.compare)."""
import copy
import json
import math
import os
import subprocess
import sys

import pytest

from salmu_jax import agreement, cli, config as config_lib, io_utils, report
from salmu_jax.errors import ConfigError
from tests.conftest import REPO
from tests.test_benchmark import (CLEAN, COMPROMISED, CRITERIA, HOLDOUTS, THRESHOLDS,
                                  fake_result)

CONFIG = json.loads(config_lib.base_config().to_json())


def seeds(*retfails, holdout=0.45):
  return [fake_result({**COMPROMISED, "1.1_RetFail": r, **{k: holdout for k in HOLDOUTS}})
          for r in retfails]


def leaderboard(runs: dict, where="cpu, 2 CPUs", clean=None) -> dict:
  """A leaderboard.json as the benchmark writes it, of hand-made results of one seed per
  result given (three unless the runs say otherwise)."""
  n = len(next(iter(runs.values())))
  clean = clean or [fake_result(CLEAN)] * n
  board = report.leaderboard(clean, [fake_result(COMPROMISED)] * n, runs, THRESHOLDS)
  return json.loads(json.dumps({
      **board, "checks": report.soundness_checks(board, CRITERIA, list(range(n))),
      "meta": {"mode": "salmubench", "seeds": list(range(n)), "computed_on": [where],
               "attacks": ["relearn"], "config": CONFIG}}))


RUNS = {("good", 1.0): seeds(0.01, 0.02, 0.015),
        ("middling", 1.0): seeds(0.05, 0.06, 0.055, holdout=0.4),
        ("weak", 1.0): seeds(0.28, 0.29, 0.27),
        ("blunt", 5.0): [fake_result({**CLEAN, "2.1_GenKnow": 0.3})] * 3}
# One seed of three ineffective and the mean just on the good side: "none" in 16 of the 27
# equally likely draws of the exact bootstrap.
BORDERLINE = seeds(0.01, 0.16, 0.26)


def row(board, method):
  return next(r for r in board["rows"] if r["method"] == method)


def test_runs_that_differ_in_their_last_digits_agree():
  a = leaderboard(RUNS)
  nudged = {key: [copy.deepcopy(r) for r in results] for key, results in RUNS.items()}
  for results in nudged.values():
    for r in results:
      r["efficacy"]["1.1_RetFail"]["MRR"] += 1e-4
  b = leaderboard(nudged, where="cpu, 1 CPU")
  row(b, "blunt")["failure_modes"].reverse()  # The same verdict listed in another order.
  result = agreement.compare(a, b)
  assert result["agree"]
  assert result["summary"] == {"rows": 4, "same_failure_modes": 4, "same_first_failure_mode": 3,
                               "settled": [4, 4], "settled_in_either": 4,
                               "verdicts_contradicted": 0,
                               "ranks_inside_intervals": 4, "same_rank": 4,
                               "checks_same": len(a["checks"]), "checks": len(a["checks"]),
                               "checks_failed_in_both": [], "orders_reversed": 0}
  # good, middling, weak and blunt are told apart on every resample: 6 orders, all held.
  assert result["orders"]["A"] == {"claimed": 6, "held": 6, "unresolved": [], "reversed": []}
  text = agreement.markdown(result)
  assert "**The verdicts agree.**" in text and "B: B, seeds [0, 1, 2], computed on cpu, 1 CPU." in text


def test_the_support_is_the_bootstraps_share_and_marks_what_the_seeds_do_not_settle():
  a = leaderboard({("borderline", 1.0): BORDERLINE, **RUNS})
  borderline = row(a, "borderline")
  assert borderline["failure_modes"] == []
  assert borderline["failure_modes_support"] == round(16 / 27, 4)
  assert not report.settled(borderline, a) and report.settled(row(a, "weak"), a)
  assert report.verdict_cell(borderline, a) == "none (59%, 1 of 3 seeds, near: ineffective)"
  assert report.verdict_cell(row(a, "weak"), a) == "ineffective forgetting"
  assert [report.percent(x) for x in (0.8998, 0.9, 1.0, 0.5926)] == ["89%", "90%", "100%", "59%"]
  two_seeds = {"per_seed": {"clean": [0, 1]}, "rank_confidence": 0.9}
  clear = {"ineffective forgetting": {"mean": 0.3, "per_seed": [0.29, 0.31], "needed": 0.05}}
  at_confidence = {"failure_modes_support": 0.9, "label": "none", "per_seed_labels": ["none"] * 2,
                   "margins": clear}
  assert report.settled(at_confidence, two_seeds)
  # Half the seeds is not most of them.
  assert not report.settled({**at_confidence, "per_seed_labels": ["none", "collapse"]}, two_seeds)
  # The row's own verdict's share, even where another verdict comes out more often: the
  # seed mean says "none", 9 of 27 draws; "ineffective" comes out in 10.
  split = [fake_result({**COMPROMISED, "1.1_RetFail": r, **{k: h for k in HOLDOUTS}})
           for r, h in ((0.01, 0.2), (0.1, 0.25), (0.28, 0.45))]
  board = leaderboard({("split", 1.0): split, **RUNS})
  assert row(board, "split")["failure_modes"] == []
  assert row(board, "split")["failure_modes_support"] == round(9 / 27, 4)
  single = leaderboard({key: results[:1] for key, results in RUNS.items()})
  assert not any(report.settled(r, single) for r in single["rows"])  # One seed settles nothing.
  assert report.verdict_cell(row(single, "weak"), single) == "ineffective forgetting"


# Ineffective, over-generalized, free of both: one seed each, and a seed mean just past both
# thresholds, where 25 of the 27 draws of the exact bootstrap land too.
DISAGREEING = [fake_result({**COMPROMISED, "1.1_RetFail": r, **{k: h for k in HOLDOUTS}})
               for r, h in ((0.16, 0.45), (0.05, 0.2), (0.05, 0.45))]


def genknow_kept(*kept):
  """Results that forget well and keep the holdouts, with GenKnow at `kept` of Compromised's
  accuracy above chance (catastrophic below 0.9)."""
  chance = 1 / 32
  return [fake_result({**COMPROMISED, "1.1_RetFail": 0.01, **{k: 0.45 for k in HOLDOUTS},
                       "2.1_GenKnow": chance + k * (COMPROMISED["2.1_GenKnow"] - chance)})
          for k in kept]


def test_three_seeds_that_agree_just_past_a_threshold_do_not_settle_it():
  """Task Vector 5x of the README's seeds 0-2: catastrophic on every seed, 100% of the
  bootstrap, at 0.879-0.897 of GenKnow kept; seeds 3-5 then read 0.89-0.97 and call it
  otherwise. The seed mean must clear the threshold by the Student-t prediction margin of
  another draw of as many seeds, at the rank confidence shared out over the thresholds."""
  board = leaderboard({("near", 5.0): genknow_kept(0.885, 0.897, 0.879),
                       ("far", 5.0): genknow_kept(0.70, 0.75, 0.72), **RUNS})
  near, far = row(board, "near"), row(board, "far")
  for r in (near, far):
    assert r["failure_modes"] == ["catastrophic damage"] and r["failure_modes_support"] == 1.0
    assert r["per_seed_labels"] == ["catastrophic damage"] * 3
  margin = near["margins"]["catastrophic damage"]
  assert margin["per_seed"] == pytest.approx([-0.015, -0.003, -0.021], abs=1e-9)
  assert margin["mean"] == pytest.approx(-0.013, abs=1e-9)
  sd = math.sqrt(((0.002 ** 2) + (0.010 ** 2) + (0.008 ** 2)) / 2)
  # Four thresholds judged (no attack was run): each at 1 - 0.1 / 4, t(0.975, 2) = 4.3027.
  assert margin["needed"] == pytest.approx(4.3027 * sd * math.sqrt(2 / 3), rel=1e-3)
  assert report.near_thresholds(near) == ["catastrophic damage"]
  # Named in the failure modes' order, however stored (leaderboard.json sorts its keys).
  margin = lambda mean: {"mean": mean, "per_seed": [], "needed": 0.05}
  stored = {"margins": {"catastrophic damage": margin(-0.01), "ineffective forgetting": margin(0.02),
                        "over-generalized forgetting": margin(0.3)}}
  assert report.near_thresholds(stored) == ["ineffective forgetting", "catastrophic damage"]
  assert not report.settled(near, board) and report.settled(far, board)
  assert report.verdict_cell(near, board) == "catastrophic damage (100%, 3 of 3 seeds, near: catastrophic)"
  assert report.verdict_cell(far, board) == "catastrophic damage"
  # Another draw that calls it otherwise contradicts no verdict this board claims.
  other = leaderboard({("near", 5.0): genknow_kept(0.965, 0.886, 0.943),
                       ("far", 5.0): genknow_kept(0.70, 0.75, 0.72), **RUNS})
  assert row(other, "near")["failure_modes"] == []
  assert agreement.compare(board, other)["summary"]["verdicts_contradicted"] == 0


def test_a_verdict_most_seeds_contradict_is_not_settled_however_often_the_mean_gives_it():
  a = leaderboard({("disagreeing", 1.0): DISAGREEING, **RUNS})
  disagreeing = row(a, "disagreeing")
  assert disagreeing["per_seed_labels"] == ["ineffective forgetting",
                                            "over-generalized forgetting", "none"]
  assert disagreeing["failure_modes"] == [] and report.seeds_agreeing(disagreeing) == 1
  assert disagreeing["failure_modes_support"] == round(25 / 27, 4)
  assert not report.settled(disagreeing, a)
  assert report.verdict_cell(disagreeing, a) == \
      "none (92%, 1 of 3 seeds, near: ineffective, over-generalized)"
  # Another run may call it ineffective; what makes that a contradiction is the other run
  # settling "ineffective", not this row's 92%.
  b = leaderboard({("disagreeing", 1.0): seeds(0.22, 0.23, 0.22), **RUNS})
  changed = next(r for r in agreement.compare(a, b)["rows"] if r["method"] == "disagreeing")
  assert changed["failure_modes"] == [[], ["ineffective forgetting"]]
  assert changed["settled"] == [False, True] and changed["contradicted"]


def test_an_unsettled_verdict_may_change():
  a = leaderboard({("borderline", 1.0): BORDERLINE, **RUNS})
  b = leaderboard({("borderline", 1.0): seeds(0.01, 0.20, 0.26), **RUNS})
  changed = next(r for r in agreement.compare(a, b)["rows"] if r["method"] == "borderline")
  assert changed["failure_modes"] == [[], ["ineffective forgetting"]]
  assert changed["support"] == [round(16 / 27, 4), round(17 / 27, 4)]
  assert changed["settled"] == [False, False] and not changed["contradicted"]
  assert agreement.compare(a, b)["agree"]


@pytest.mark.parametrize("swap", [False, True])
def test_a_verdict_settled_on_one_side_only_is_contradicted_from_either_side(swap):
  a = leaderboard({("borderline", 1.0): BORDERLINE, **RUNS})  # none, 59%: unsettled.
  b = leaderboard({("borderline", 1.0): seeds(0.24, 0.25, 0.26), **RUNS})  # ineffective, 100%.
  result = agreement.compare(*((b, a) if swap else (a, b)))
  changed = next(r for r in result["rows"] if r["method"] == "borderline")
  assert changed["contradicted"] and changed["settled"] == ([True, False] if swap else [False, True])
  assert not result["agree"]
  assert result["summary"]["verdicts_contradicted"] == 1
  assert result["summary"]["orders_reversed"] == 0  # Nothing else disagrees.
  assert result["summary"]["checks_same"] == result["summary"]["checks"]
  assert "ineffective forgetting (100%) **contradicted**" in agreement.markdown(result)


def test_a_reversed_order_alone_is_a_disagreement():
  a = leaderboard(RUNS)
  swapped = {**RUNS, ("good", 1.0): RUNS[("middling", 1.0)], ("middling", 1.0): RUNS[("good", 1.0)]}
  b = leaderboard(swapped)
  result = agreement.compare(a, b)
  assert result["summary"]["verdicts_contradicted"] == 0
  assert result["summary"]["checks_same"] == result["summary"]["checks"]
  assert result["orders"]["A"]["reversed"] == [["good 1x", "middling 1x"]]
  assert result["orders"]["B"]["reversed"] == [["middling 1x", "good 1x"]]
  assert result["summary"]["orders_reversed"] == 1  # One pair, claimed both ways.
  assert not result["agree"]
  assert "Orders A claims and the other reverses: good 1x above middling 1x." in agreement.markdown(result)


@pytest.mark.parametrize("by_design", [False, True])
def test_a_flipped_check_alone_is_a_disagreement(by_design):
  a, b = leaderboard(RUNS), leaderboard(RUNS)
  if by_design:  # --methods=all: unlearning by design's targets are checks too.
    for board, passed in ((a, True), (b, False)):
      board["by_design"] = {"checks": [{"name": "GenKnow kept", "passed": passed}]}
    name = "by design: GenKnow kept"
  else:  # Clean above Compromised on InterIdSim: a soundness check, not a row's verdict.
    b = leaderboard(RUNS, clean=[fake_result({**CLEAN, "2.2_InterIdSim": 0.9})] * 3)
    name = "InterIdSim: Compromised > Clean"
  result = agreement.compare(a, b)
  assert [c["name"] for c in result["checks"] if c["passed"][0] != c["passed"][1]] == [name]
  assert result["summary"]["verdicts_contradicted"] == result["summary"]["orders_reversed"] == 0
  assert not result["agree"]
  assert f"Soundness check `{name}`: passed in A, failed in B." in agreement.markdown(result)


def test_both_failing_a_check_agree_and_say_so():
  failing = [fake_result({**CLEAN, "2.2_InterIdSim": 0.9})] * 3
  result = agreement.compare(leaderboard(RUNS, clean=failing), leaderboard(RUNS, clean=failing))
  assert result["agree"]
  assert result["summary"]["checks_failed_in_both"] == ["InterIdSim: Compromised > Clean"]
  assert "- Both fail: InterIdSim: Compromised > Clean." in agreement.markdown(result)


def test_overlapping_intervals_claim_no_order_and_one_seed_claims_nothing():
  close = {("a", 1.0): seeds(0.01, 0.05, 0.02), ("b", 1.0): seeds(0.04, 0.01, 0.03)}
  apart = {("a", 1.0): seeds(0.04, 0.041, 0.042), ("b", 1.0): seeds(0.01, 0.011, 0.012)}
  result = agreement.compare(leaderboard(close), leaderboard(apart))
  assert result["agree"]  # B's b-above-a is unresolved in A, not contradicted.
  assert result["orders"]["A"]["claimed"] == 0
  assert result["orders"]["B"] == {"claimed": 1, "held": 0, "unresolved": [["b 1x", "a 1x"]],
                                   "reversed": []}
  a_row = next(r for r in result["rows"] if r["method"] == "a")
  assert a_row["rank"] == [1, 2] and a_row["rank_interval"] == [[1, 2], [2, 2]]
  assert not a_row["rank_inside"]  # B's rank is inside A's interval, A's not inside B's.
  # One seed: its intervals are single ranks and its verdicts one draw; it claims nothing,
  # and resolves nothing another board claims.
  one = lambda runs: leaderboard({key: results[:1] for key, results in runs.items()})
  swapped = {**RUNS, ("good", 1.0): RUNS[("weak", 1.0)], ("weak", 1.0): RUNS[("good", 1.0)]}
  single = agreement.compare(one(RUNS), one(swapped))
  assert single["agree"] and single["summary"]["settled"] == [0, 0]
  assert single["orders"]["A"]["claimed"] == single["orders"]["B"]["claimed"] == 0
  mixed = agreement.compare(leaderboard(RUNS), one(RUNS))
  assert mixed["orders"]["A"]["held"] == 0 and len(mixed["orders"]["A"]["unresolved"]) == 6


def edited(edit):
  """A change made in place, as a function returning the changed board."""
  return lambda board: (edit(board), board)[1]


@pytest.mark.parametrize("change, message", [
    (edited(lambda b: b["rows"].pop()), "rank different rows \\(only in A: blunt 5x; only in B: none\\)"),
    (edited(lambda b: b["meta"]["config"]["unlearn"].update(learning_rate=0.5)),
     "compute differently \\(differ in: unlearn.learning_rate\\)"),
    (edited(lambda b: b["meta"]["config"]["eval"].update(ineffective_below=0.4)),
     "different thresholds \\(ineffective_below\\)"),
    (edited(lambda b: b.update(rank_confidence=0.8)), "different thresholds \\(rank_confidence\\)"),
    (edited(lambda b: b["meta"].update(attacks=[])), "other attacks \\(A: relearn; B: none\\)"),
    (edited(lambda b: b["checks"][0].update(name="RetFail MRR: Compromised >= 3x Clean")),
     "different soundness checks \\(only in A: RetFail MRR: Compromised >= 5x Clean; only in B: "
     "RetFail MRR: Compromised >= 3x Clean\\)"),
    (edited(lambda b: b.update(checks=[])), "different soundness checks"),
    # A request mode's leaderboard has no checks: its mode is named first.
    (lambda b: {"meta": {"mode": "scalability"}, "rows": []}, "B is a --mode=scalability leaderboard"),
])
def test_leaderboards_that_cannot_be_compared_are_refused(change, message):
  a, b = leaderboard(RUNS), change(leaderboard(RUNS))
  with pytest.raises(ConfigError, match=message):
    agreement.compare(a, b)


@pytest.mark.parametrize("change, message", [
    (lambda b: None, "B is not a benchmark leaderboard.json \\(no meta\\)"),  # A JSON null.
    (lambda b: 3, "B is not a benchmark leaderboard.json \\(no meta\\)"),
    (edited(lambda b: b.update(meta=[])), "B is not a benchmark leaderboard.json \\(no meta\\)"),
    (edited(lambda b: b.pop("rank_confidence")),
     "B is not a benchmark leaderboard.json of this version \\(no rank_confidence\\); rebuild it"),
    (edited(lambda b: b["rows"][0].pop("failure_modes_support")),
     "B's row 1 \\(good\\) has no failure_modes_support: written by an older version"),
    (edited(lambda b: b.update(rows={})), "B's rows is empty or malformed"),
    (edited(lambda b: b["rows"][0].update(rank_interval=[1])), "B's row 1 \\(good\\) lacks"),
    (edited(lambda b: b["rows"][0].update(budget="five")), "B's row 1 \\(good\\) lacks"),
    (edited(lambda b: b["rows"][0].update(failure_modes_support=math.nan)),
     "B's row 1 \\(good\\) lacks"),
    (edited(lambda b: b["rows"][0].pop("per_seed_labels")), "B's row 1 \\(good\\) lacks"),
    # The replication margins settled() reads: every threshold's, numbers, none negative.
    (edited(lambda b: b["rows"][0].pop("margins")), "B's row 1 \\(good\\) lacks"),
    (edited(lambda b: b["rows"][0]["margins"].pop("catastrophic damage")), "B's row 1 \\(good\\) lacks"),
    (edited(lambda b: b["rows"][0]["margins"]["catastrophic damage"].update(mean=10 ** 400)),
     "B's row 1 \\(good\\) lacks"),
    (edited(lambda b: b["rows"][0]["margins"]["catastrophic damage"].update(needed=-1.0)),
     "B's row 1 \\(good\\) lacks"),
    (edited(lambda b: b["rows"][0].update(failure_modes=[["collapse"]])), "B's row 1 \\(good\\) lacks"),
    (edited(lambda b: b["rows"][0].update(scores=[])), "B's row 1 \\(good\\) lacks"),
    (edited(lambda b: b["meta"].update(computed_on=3)), "B's meta.computed_on is empty or malformed"),
    (edited(lambda b: b.update(by_design=[])), "B's by_design is empty or malformed"),
    (edited(lambda b: b["checks"][0].update(name=["x"])), "B's checks is empty or malformed"),
    (edited(lambda b: b["rows"][0]["per_seed_labels"].pop()), "B's row 1 \\(good\\) lacks"),
    (edited(lambda b: b["rows"].append(dict(b["rows"][0]))), "B ranks good 1x twice"),
])
def test_malformed_leaderboards_get_one_line_naming_what_is_wrong(change, message):
  with pytest.raises(ConfigError, match=message):
    agreement.compare(leaderboard(RUNS), change(leaderboard(RUNS)))


def test_settings_that_change_neither_results_nor_verdicts_do_not_block():
  b = leaderboard(RUNS)
  b["meta"]["config"]["data"]["loader"]["num_threads"] = 7  # config.RESULT_NEUTRAL.
  b["meta"]["config"]["benchmark"]["seeds"] = 5
  b["meta"]["config"]["seed"], b["meta"]["seeds"] = 3, [3, 4, 5]  # Another seed set: a check.
  b["rows"].reverse()  # Rows are matched by method and budget.
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
  assert differed.returncode == cli.CHECK_FAILED_EXIT_CODE
  assert "| weak | 1x |" in differed.stdout
  missing = run(same, tmp_path / "nowhere")
  assert missing.returncode == cli.USER_ERROR_EXIT_CODE
  assert missing.stderr.strip() == (f"error: {tmp_path / 'nowhere' / 'leaderboard.json'} does "
                                    f"not exist: pass a benchmark workdir or its leaderboard.json")
  (tmp_path / "null.json").write_text("null")
  malformed = run(same, tmp_path / "null.json")
  assert malformed.returncode == cli.USER_ERROR_EXIT_CODE
  assert malformed.stderr.strip().startswith("error: ") and "Traceback" not in malformed.stderr
  assert run(same).returncode == cli.USER_ERROR_EXIT_CODE


def test_the_kept_tiny_leaderboard_can_be_compared_with_a_run_of_the_readme_command():
  """benchmarks/results/tiny_default_leaderboard_zen3.json is what a user's run of the
  README's first command is checked against (README, "Checking verdicts, not digits"): it
  must stay a leaderboard this version's compare reads, of today's tiny default config."""
  kept = agreement.read_leaderboard(os.path.join(REPO, "benchmarks", "results",
                                                 "tiny_default_leaderboard_zen3.json"))
  result = agreement.compare(kept, copy.deepcopy(kept))
  assert result["agree"]
  # A recipe change makes it stale (compare would refuse every run of the new default):
  # run the README's first command again and keep its leaderboard.json instead.
  tiny = json.loads(config_lib.load_config(os.path.join(REPO, "configs", "tiny.py")).to_json())
  assert config_lib.computation_differences(kept["meta"]["config"], tiny) == []
  assert kept["meta"]["attacks"] == ["relearn"] and kept["meta"]["seeds"] == [0, 1, 2]
  assert len(kept["rows"]) == 30 and all(c["passed"] for c in kept["checks"])
