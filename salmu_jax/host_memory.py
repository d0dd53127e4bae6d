"""Keep freed host memory mapped, so XLA:CPU steps stop page-faulting their temporaries.

XLA:CPU allocates each step's temporaries as one buffer (335 MB for the tiny config's
train step at batch 128) with malloc, from its worker threads. glibc serves a request
that large from a fresh mmap and unmaps it on free, so every step faults every page of
it in again: about 80k page faults and 230 ms of kernel time in each 850 ms step on one core,
a quarter of the step (benchmarks/RESULTS.md). Serving every thread from the main arena,
never with mmap, and never trimming the heap keeps those pages mapped from one step to
the next, as the caching allocators of GPU runtimes and PyTorch do for theirs.

The price is a single malloc arena for all threads: compiling got ~15% slower in the same
measurements (XLA's compiler threads allocate a lot), so it pays off for runs of many
steps, not for compile-bound ones (the test suite opts out).

The setting is process-wide and only holds for threads that have not used malloc yet,
so the long-running command-line stages (train, unlearn, benchmark) apply it first
thing, before NumPy starts its BLAS threads or JAX its CPU backend. Importing the
library never does: a program that imports our losses keeps its own allocator. A script
of ours (benchmarks/) calls `retain_freed_memory()` before importing NumPy.
SALMU_JAX_SYSTEM_MALLOC=1 opts out.
"""
import ctypes
import os
import sys

OPT_OUT_VARIABLE = "SALMU_JAX_SYSTEM_MALLOC"
# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_NEVER_TRIM = 2 ** 31 - 1  # mallopt takes an int.


def glibc():
  """The process's C library if it is glibc, else None (musl and others lack these knobs)."""
  if not sys.platform.startswith("linux"):
    return None
  libc = ctypes.CDLL(None)
  return libc if hasattr(libc, "gnu_get_libc_version") else None


applied = False  # Whether this process has the setting (tests read it).


def retain_freed_memory() -> bool:
  """Applies the setting; False where opted out or the C library is not glibc."""
  global applied
  libc = glibc()
  if os.environ.get(OPT_OUT_VARIABLE) == "1" or libc is None:
    return False
  applied = all(libc.mallopt(parameter, value) == 1 for parameter, value in (
      (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM)))
  return applied
