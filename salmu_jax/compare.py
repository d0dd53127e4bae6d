"""Do two benchmark runs reach the same verdicts? (agreement.py)

  python -m salmu_jax.compare runs/tiny /elsewhere/runs/tiny [--output=agreement.md]

Each argument is a benchmark workdir (or its leaderboard.json) of the same config: the same
run on another machine, core count or code version, or with other seeds. Prints which rows
keep their failure modes, which ranks stay inside the other run's interval, which soundness
checks keep their outcome, and whether any order of two rows that one run's intervals tell
apart is reversed in the other. Exit code 0 when the verdicts agree, 3 when they do not, 2
for input that cannot be compared.
"""
import sys

from absl import app, flags

from salmu_jax import agreement, cli, io_utils
from salmu_jax.errors import ConfigError

DIFFERENT_VERDICTS_EXIT_CODE = 3  # As the benchmark's failed soundness check.


def main(argv):
  def body():
    paths = argv[1:]
    if len(paths) != 2:
      raise ConfigError(f"pass two benchmark workdirs (or leaderboard.json files); got "
                           f"{len(paths)}: {' '.join(paths) or 'none'}")
    boards = [agreement.read_leaderboard(path) for path in paths]
    result = agreement.compare(*boards, names=tuple(paths))
    text = agreement.markdown(result)
    if _OUTPUT.value:
      io_utils.write_bytes_atomic(_OUTPUT.value, text.encode())
    print(text, end="")
    if not result["agree"]:
      sys.exit(DIFFERENT_VERDICTS_EXIT_CODE)
  cli.run(body)


if __name__ == "__main__":
  _OUTPUT = flags.DEFINE_string("output", None, "Also write the comparison (markdown) here.")
  app.run(main, flags_parser=cli.parse_flags)
