"""Reading a benchmark's stages.json records (salmu_jax.benchmark writes them,
benchmarks/stage_table.py tabulates them); no jax, so a table script starts fast."""


def ran_compile_seconds(record: dict):
  """The compile seconds of the invocation that ran a record's stage. A record written before
  `ran_compile_seconds` existed has them only where it ran the stage itself (its own
  `compile_seconds`); where it reused the stage they are unknown (None)."""
  if "ran_compile_seconds" in record:
    return record["ran_compile_seconds"]
  return record.get("compile_seconds") if record.get("status", "ran") == "ran" else None
