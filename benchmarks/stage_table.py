"""The benchmark's per-stage cost, side by side for several runs, from their stages.json.

  python benchmarks/stage_table.py before=/tmp/before/run after=/tmp/after/run

Each NAME=WORKDIR is a `salmu_jax.benchmark` workdir (or its stages.json). Stages are
grouped as a reader of the README asks about them: the dataset, each reference's
training, the references' scoring, the unlearning runs and their scoring, and the memory
models of unlearning by design; each cell is wall seconds (compile seconds in brackets,
the tracing, lowering and XLA compiling done while the stage ran); `count` is the number
of stages in the group (the distinct numbers, a/b, where the runs differ). A reused stage
counts with the seconds of the invocation that ran it (`ran_seconds`, `ran_compile_seconds`;
"?" where they are unknown: compile seconds where older code reused it and kept only its wall
seconds, both where a kill ended the stage after its work and before its record; "N+?" is a
group's known N seconds besides such stages); a `kept` one
(a stage of an earlier command that this one did not list) does not count. An unlearned
model scored inside its unlearning stage moves its wall seconds to the scoring's row, and
its compile seconds stay in the unlearning's.
"""
import argparse
import json
import os
import re

from common import markdown_table

from salmu_jax import stage_log

GROUPS = (  # (label, pattern of the stage name after "seed S: ")
    ("build SALMU-synth", r"build SALMU-synth"),
    ("train Compromised", r"train compromised"),
    ("train Clean", r"train clean"),
    ("evaluate the references", r"evaluate (compromised|clean)"),
    ("train Compromised-memory, Clean-memory", r"train (compromised|clean)_memory"),
    ("evaluate the memory references and memory removed",
     r"evaluate ((compromised|clean)_memory|memory_removed)"),
    ("unlearn (every method and budget)", r"\w+ [\d.]+x unlearn"),
    ("evaluate the unlearned models", r"\w+ [\d.]+x evaluate"),
)


def read_stages(path: str) -> list:
  if os.path.isdir(path):
    path = os.path.join(path, "stages.json")
  with open(path) as f:
    return json.load(f)


def grouped(stages) -> dict:
  """{group label: [count, wall seconds, compile seconds]}, and the total under "total";
  seconds are [known sum, count unknown] (stage_log.ran_seconds, ran_compile_seconds)."""
  table = {label: [0, [0.0, 0], [0.0, 0]] for label, _ in GROUPS} | {
      "total": [0, [0.0, 0], [0.0, 0]]}
  for stage in stages:
    if stage.get("status") == "kept":
      continue
    name = stage_log.without_seed(stage["stage"])
    label = next((label for label, pattern in GROUPS if re.fullmatch(pattern, name)), None)
    if label is None:
      raise SystemExit(f"error: stage {stage['stage']!r} belongs to no group of this table")
    for key in (label, "total"):
      table[key][0] += 1
      for column, seconds in ((1, stage_log.ran_seconds(stage)),
                              (2, stage_log.ran_compile_seconds(stage))):
        if seconds is None:
          table[key][column][1] += 1
        else:
          table[key][column][0] += seconds
  return table


def seconds_cell(known: float, unknown: int, count: int) -> str:
  """The known seconds, "+?" where some stages' are unknown, "?" where all are."""
  return "?" if unknown == count else f"{known:.0f}" + ("+?" if unknown else "")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("runs", nargs="+", metavar="NAME=WORKDIR")
  args = parser.parse_args()
  runs = {}
  for item in args.runs:
    name, sep, path = item.partition("=")
    if not sep or not name:
      raise SystemExit(f"error: {item!r} is not NAME=WORKDIR")
    runs[name] = grouped(read_stages(path))
  rows = []
  for label in [label for label, _ in GROUPS] + ["total"]:
    cells = [f"{seconds_cell(*t[label][1], t[label][0])} "
             f"({seconds_cell(*t[label][2], t[label][0])})" if t[label][0] else "-"
             for t in runs.values()]
    counts = {t[label][0] for t in runs.values()}
    rows.append([label, "/".join(str(c) for c in sorted(counts))] + cells)
  print(markdown_table(["stages", "count"] + [f"{name} s (compile s)" for name in runs], rows))


if __name__ == "__main__":
  main()
