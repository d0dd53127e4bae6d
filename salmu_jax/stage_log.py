"""Reading a benchmark's stages.json records (salmu_jax.benchmark writes them,
benchmarks/stage_table.py tabulates them); no jax, so a table script starts fast."""
import re


def ran_compile_seconds(record: dict):
  """The compile seconds of the invocation that ran a record's stage. A record written before
  `ran_compile_seconds` existed has them only where it ran the stage itself (its own
  `compile_seconds`); where it reused the stage they are unknown (None)."""
  if "ran_compile_seconds" in record:
    return record["ran_compile_seconds"]
  return record.get("compile_seconds") if record.get("status", "ran") == "ran" else None


def ran_seconds(record: dict):
  """The wall seconds of the invocation that ran a record's stage, None where unknown: a
  stage a kill ended after its work and before its record, or a record written before
  `ran_seconds` existed that reused the stage (its own `seconds` are the reuse check's)."""
  if "ran_seconds" in record:
    return record["ran_seconds"]
  return record.get("seconds") if record.get("status", "ran") == "ran" else None


def kept(record: dict) -> dict:
  """A record of a stage that a command did not list, as its log keeps it: status `kept`, with
  the costs resolved first (a record older code wrote without them reads them from its own
  status, which this one replaces)."""
  return {**record, "status": "kept", "ran_seconds": ran_seconds(record),
          "ran_compile_seconds": ran_compile_seconds(record)}


def without_seed(name: str) -> str:
  """A stage's name without its "seed S: ": what the same stage of every seed is called."""
  return re.sub(r"^seed \d+: ", "", name)


def stage_kind(name: str) -> str:
  """What a stage does whatever its seed, method and request: "train compromised", "evaluate
  clean", "5x unlearn", "1x evaluate" (an unlearned model's scoring)... The budget stays: a
  5x run takes five times the steps of a 1x one."""
  return re.sub(r"^.*\s([\d.]+x) (request \d+ )?", r"\1 ", without_seed(name))


def time_left(records: list, remaining: list) -> tuple:
  """(seconds, complete): what the `remaining` stage names will take, from the `records` of
  stages that ran (in this invocation or an earlier one: `ran_seconds`; `kept` ones aside).
  A stage is timed by the same stage on another seed less its compile seconds (its programs
  are compiled by then), else by the mean of its kind (`stage_kind`). `complete` is False
  where a remaining stage's kind has not run yet, and the seconds are then a lower bound.
  Stages' costs differ by two orders (a training against a scoring), so a count of stages
  says nothing of the time left."""
  by_name, by_kind = {}, {}
  for record in records:
    seconds = ran_seconds(record)
    if record.get("status") == "kept" or seconds is None:
      continue
    name = without_seed(record["stage"])
    by_name.setdefault(name, []).append(max(0.0, seconds - (ran_compile_seconds(record) or 0.0)))
    by_kind.setdefault(stage_kind(name), []).append(seconds)
  total, complete = 0.0, True
  for stage in remaining:
    name = without_seed(stage)
    known = by_name.get(name) or by_kind.get(stage_kind(name))
    if known:
      total += sum(known) / len(known)
    else:
      complete = False
  return total, complete


def time_left_text(records: list, remaining: list) -> str:
  """"~12 min left", "under 2 min left", "at least 5 min left" (`time_left` not complete),
  or "" before any stage has run or when none remain."""
  seconds, complete = time_left(records, remaining)
  if complete and remaining:
    return f"~{round(seconds / 60)} min left" if seconds >= 90 else "under 2 min left"
  return f"at least {int(seconds // 60)} min left" if seconds >= 60 else ""
