"""What every command-line stage shares: its opening, and one line (not a traceback) for
what a user can fix.

Exit codes: 0 done; 2 a user error (`SalmuError`: bad input, config, data, diverged
model), printed as `error: ...`; 143 preempted (SIGTERM), with a checkpoint to resume
from; 3 a check the stage exists for failed, after every output (salmu_jax.benchmark: a
soundness check; salmu_jax.compare: two leaderboards' verdicts contradict each other).
"""
import errno
import importlib.metadata
import importlib.util
import os
import signal
import sys

from absl import flags, logging
from jax._src import xla_bridge  # backends_are_initialized: no public equivalent.

from salmu_jax import distributed
from salmu_jax.errors import Preempted, SalmuError

USER_ERROR_EXIT_CODE = 2
CHECK_FAILED_EXIT_CODE = 3
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # What a shell reports for a SIGTERM'd program.
# XLA:CPU's LLVM optimization level: 1 instead of the default 2 compiled one cold seed of the
# tiny benchmark in 51-52 s instead of 60-65 s (6 min 3 s and 5 min 58 s against 6 min 35 s
# and 6 min 27 s in all, two alternating pairs), with the same bits in every result file and
# a train step as fast (benchmarks/RESULTS.md, thirteenth session).
CPU_COMPILER_FLAGS = {"--xla_backend_optimization_level": "1"}


def use_cpu_compiler_flags() -> None:
  """Adds CPU_COMPILER_FLAGS to XLA_FLAGS where the user has not set them and jax can only
  run on the CPU (an accelerator's compiler reads the same flag). XLA reads XLA_FLAGS when
  jax initializes its backend; after that, a flag set here would be recorded in results
  (training.runtime.cpu_meta) and in the compilation cache's keys without applying, so
  nothing is set then."""
  if not _cpu_only() or xla_bridge.backends_are_initialized():
    return
  current = os.environ.get("XLA_FLAGS", "")
  given = {item.split("=", 1)[0] for item in current.split()}
  extra = [f"{flag}={value}" for flag, value in CPU_COMPILER_FLAGS.items() if flag not in given]
  if extra:
    os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()


def _cpu_only() -> bool:
  """JAX_PLATFORMS names the CPU alone, or no accelerator runtime is installed: a jax plugin
  (entry point or `jax_plugins` package), libtpu, or a PJRT library named in the environment."""
  platforms = {p.strip().lower() for p in os.environ.get("JAX_PLATFORMS", "").split(",")}
  if platforms - {""} == {"cpu"}:
    return True
  return not (importlib.metadata.entry_points(group="jax_plugins")
              or importlib.util.find_spec("jax_plugins") or importlib.util.find_spec("libtpu")
              or os.environ.get("TPU_LIBRARY_PATH")
              or os.environ.get("PJRT_NAMES_AND_LIBRARY_PATHS"))


def run(body) -> None:
  """Runs a stage's `body()` the way every stage runs: libraries' logs at WARNING, the CPU
  compiler's flags, the multi-process runtime started when the distributed flags ask for
  it, and the errors above as one line and an exit code."""
  logging.set_verbosity(logging.WARNING)  # tfds and orbax log every file they touch.
  use_cpu_compiler_flags()
  try:
    if "distributed" in flags.FLAGS:
      distributed.initialize_from_flags()
    body()
  except SalmuError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_CODE)
  except Preempted as e:  # Not an error: the same command resumes.
    print(str(e), file=sys.stderr)
    sys.exit(PREEMPTED_EXIT_CODE)
  except OSError as e:  # A full disk, a file where a directory belongs, no permission.
    hint = "; free some space and run the same command again: finished work is kept" \
        if e.errno == errno.ENOSPC else ""
    print(f"error: {e.strerror or e}{f': {e.filename}' if e.filename else ''}{hint}",
          file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_CODE)


def parse_flags(argv):
  """absl's flag parsing, with an unknown config key (`--config.data.num_personaz=3`) as
  one line instead of ml_collections' traceback. Pass as app.run's flags_parser."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"error: {e}\nPass --helpshort or --helpfull to see help on flags.", file=sys.stderr)
    sys.exit(1)
  except (AttributeError, KeyError) as e:
    detail = str(e.args[0] if e.args else e).replace("\\n", " ").replace("\\'", "")
    detail = " ".join(detail.strip("'\"").split())
    given = [a for a in argv[1:] if a.startswith("--config.")]
    print(f"error: unknown config key among {' '.join(given) or 'the flags'} ({detail})",
          file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_CODE)
