"""What every command-line stage shares: its opening, and one line (not a traceback) for
what a user can fix.

Exit codes: 0 done; 2 a user error (`SalmuError`: bad input, config, data, diverged
model), printed as `error: ...`; 143 preempted (SIGTERM), with a checkpoint to resume
from; salmu_jax.benchmark adds 3 for a failed soundness check.
"""
import signal
import sys

from absl import flags, logging

from salmu_jax import distributed
from salmu_jax.errors import Preempted, SalmuError

USER_ERROR_EXIT_CODE = 2
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM  # What a shell reports for a SIGTERM'd program.


def run(body) -> None:
  """Runs a stage's `body()` the way every stage runs: libraries' logs at WARNING, the
  multi-process runtime started when the distributed flags ask for it, and the errors
  above as one line and an exit code."""
  logging.set_verbosity(logging.WARNING)  # tfds and orbax log every file they touch.
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
