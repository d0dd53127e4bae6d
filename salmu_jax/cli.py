"""What every command-line stage shares: its opening, and one line (not a traceback) for
what a user can fix.

Exit codes: 0 done; 2 a user error (`SalmuError`: bad input, config, data, diverged
model), printed as `error: ...`; 143 preempted (SIGTERM), with a checkpoint to resume
from; 3 a check the stage exists for failed, after every output (salmu_jax.benchmark: a
soundness check; salmu_jax.compare: two leaderboards' verdicts contradict each other).
"""
import errno
import signal
import sys

from absl import flags, logging

from salmu_jax import distributed
from salmu_jax.errors import Preempted, SalmuError

USER_ERROR_EXIT_CODE = 2
CHECK_FAILED_EXIT_CODE = 3
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
