"""Our stages keep XLA:CPU's per-call buffers mapped: repeated calls stop page-faulting."""
import os
import subprocess
import sys

import pytest

from salmu_jax import host_memory

# Minor page faults per call of a jitted function, the least of three windows of ten calls
# after warm-up (the heap may still grow once in a while). Its 64 MiB output is above
# glibc's largest mmap threshold (32 MiB on 64-bit), so the default allocator maps and
# unmaps it on every call whatever the heap's history. A 16 MB temporary was the probe
# before: jaxlib 0.12 faults 0 to 8,193 pages a call on it from run to run by default, and
# reuses or elides a 64 MiB temporary (benchmarks/RESULTS.md, sixteenth session).
PROBE = """
import resource
from salmu_jax import host_memory
host_memory.retain_freed_memory()  # What our command-line stages do first.
import jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sin(x) + 1)
x = jnp.ones((4096, 4096))
for _ in range(5):
  f(x).block_until_ready()
windows = []
for _ in range(3):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(10):
    f(x).block_until_ready()
  windows.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
print(min(windows))
"""


def faults_per_call(opt_out: bool) -> float:
  env = {k: v for k, v in os.environ.items() if k != host_memory.OPT_OUT_VARIABLE}
  if opt_out:
    env[host_memory.OPT_OUT_VARIABLE] = "1"
  env["XLA_FLAGS"] = ""  # One CPU device, as a command-line stage runs.
  result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, check=True)
  return float(result.stdout.split()[-1])


@pytest.mark.slow
@pytest.mark.skipif(host_memory.glibc() is None, reason="the setting is glibc's")
def test_repeated_calls_stop_faulting_in_their_buffers():
  default_malloc = faults_per_call(opt_out=True)
  assert default_malloc > 8_000  # 16,384 pages: glibc maps and unmaps the output each call.
  # Mostly none; in one run of the 18 measured every window faulted the output in once
  # (a tenth of the default's at ten calls a window).
  assert faults_per_call(opt_out=False) < 0.25 * default_malloc


def test_opt_out(monkeypatch):
  monkeypatch.setenv(host_memory.OPT_OUT_VARIABLE, "1")
  assert host_memory.retain_freed_memory() is False
