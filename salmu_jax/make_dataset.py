"""Builds SALMU-synth under --workdir (idempotent: a finished dataset is reused).

  python -m salmu_jax.make_dataset --config=configs/tiny.py --workdir=runs/tiny
"""
import os

from absl import app, flags
from ml_collections import config_flags

from salmu_jax import cli, io_utils
from salmu_jax import config as config_lib
from salmu_jax.data import builder, layout


def main(argv):
  del argv

  def body():
    root = builder.build_dataset(config_lib.check_config(_CONFIG.value), _WORKDIR.value)
    card = io_utils.read_json(os.path.join(root, layout.CARD_FILE))
    sizes = ", ".join(f"{k} {v:,}" for k, v in card["split_sizes"].items())
    print(f"dataset ready at {root}: {sizes}")
  cli.run(body)


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).",
                                            lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Directory that receives dataset/.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=cli.parse_flags)
