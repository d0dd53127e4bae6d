"""What every benchmark script shares: the repository on sys.path, the machine and library
versions its table names, dotted config overrides, and median/min/max of repeated runs."""
import datetime
import os
import platform
import statistics
import sys
from importlib import metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from salmu_jax import host_memory  # noqa: E402

host_memory.retain_freed_memory()  # First: the setting must precede NumPy's threads.


def device_name() -> str:
  """The machine a table's figures come from: the CPU and its usable cores, or the
  accelerators JAX sees."""
  import jax
  from salmu_jax.training import runtime
  device = jax.devices()[0]
  if device.platform == "cpu":
    return f"{runtime.processor()}, {runtime.usable_cpus()} cores, CPU only"
  return f"{jax.device_count()} x {device.device_kind}"


def versions(*packages) -> str:
  found = []
  for package in packages:
    try:
      found.append(f"{package} {metadata.version(package)}")
    except metadata.PackageNotFoundError:
      pass
  return ", ".join(found)


def header(title: str, device: str, packages, command: str) -> str:
  """The line above a results table: what, when, where, with which versions, how."""
  return (f"{title}, {datetime.date.today()}, {device}; Python {platform.python_version()}, "
          f"{versions(*packages)}.\nCommand: `{command}`")


def command_line() -> str:
  return "python " + " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])


def parse_overrides(items) -> dict:
  """["model.dtype=bfloat16", "batch_size=64"] -> {dotted key: value}, values as Python
  literals where they parse (numbers, booleans), strings otherwise."""
  import ast
  overrides = {}
  for item in items or ():
    key, sep, value = item.partition("=")
    if not sep:
      raise SystemExit(f"error: override {item!r} is not KEY=VALUE")
    try:
      overrides[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key] = value
  return overrides


def median_spread(values) -> dict:
  return {"median": statistics.median(values), "min": min(values), "max": max(values),
          "runs": len(values)}


def markdown_table(columns, rows) -> str:
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
  return "\n".join(lines)
