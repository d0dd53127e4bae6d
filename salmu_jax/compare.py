"""Do two benchmark runs reach the same verdicts? (agreement.py)

  python -m salmu_jax.compare runs/tiny /elsewhere/runs/tiny [--output=agreement.md]

Each argument is a benchmark workdir (or its leaderboard.json) of the same config and
attacks: the same run on another machine, core count or code version, or with other seeds.
Prints whether either contradicts the other's claims (a failure-mode verdict its seeds
settle, an order of two rows its rank intervals tell apart, a soundness check's outcome),
and every row whose failure modes or rank moved. Exit code 0 when nothing is contradicted,
3 (cli.CHECK_FAILED_EXIT_CODE) when something is, 2 for input that cannot be compared.
"""
import sys

from absl import app, flags

from salmu_jax import agreement, cli, io_utils
from salmu_jax.errors import ConfigError


def main(argv):
  def body():
    paths = argv[1:]
    if len(paths) != 2:
      raise ConfigError(f"pass two benchmark workdirs (or leaderboard.json files); got "
                        f"{len(paths)}: {' '.join(paths) or 'none'}")
    boards = [agreement.read_leaderboard(path) for path in paths]
    result = agreement.compare(*boards, names=tuple(paths))
    text = agreement.markdown(result)
    print(text, end="")
    if _OUTPUT.value:
      io_utils.write_bytes_atomic(_OUTPUT.value, text.encode())
    if not result["agree"]:
      sys.exit(cli.CHECK_FAILED_EXIT_CODE)
  cli.run(body)


if __name__ == "__main__":
  _OUTPUT = flags.DEFINE_string("output", None, "Also write the comparison (markdown) here.")
  app.run(main, flags_parser=cli.parse_flags)
