"""Our stages keep XLA:CPU's per-call buffers mapped: repeated calls stop page-faulting."""
import os
import subprocess
import sys

import pytest

from salmu_jax import host_memory

# Minor page faults per call of a jitted function whose temporaries (16 MB each) exceed
# what glibc serves without mmap: the least of three windows of five calls after warm-up
# (the heap may still grow once in a while; the default allocator faults on every call).
PROBE = """
import resource
from salmu_jax import host_memory
host_memory.retain_freed_memory()  # What our command-line stages do first.
import jax, jax.numpy as jnp
f = jax.jit(lambda x: (jnp.sin(x) @ jnp.cos(x)).sum())
x = jnp.ones((2048, 2048))
for _ in range(5):
  f(x).block_until_ready()
windows = []
for _ in range(3):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(5):
    f(x).block_until_ready()
  windows.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
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
  assert default_malloc > 2_000  # 16 MB per temporary: glibc maps and unmaps them each call.
  # Mostly none at all; a few hundred when a run's heap layout leaves some growth.
  assert faults_per_call(opt_out=False) < 0.25 * default_malloc


def test_opt_out(monkeypatch):
  monkeypatch.setenv(host_memory.OPT_OUT_VARIABLE, "1")
  assert host_memory.retain_freed_memory() is False
