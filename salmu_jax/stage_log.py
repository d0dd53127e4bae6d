"""Reading a benchmark's stages.json records (salmu_jax.benchmark writes them,
benchmarks/stage_table.py tabulates them); no jax, so a table script starts fast."""


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
