"""Trains a CLIP from scratch: the Clean and Compromised reference models.

  python -m salmu_jax.train --config=configs/tiny.py:compromised --workdir=runs/tiny/compromised
  python -m salmu_jax.train --config=configs/tiny.py:clean --workdir=runs/tiny/clean

Rerun the same command to resume. The loop is salmu_jax/training/loop.py.
"""
from salmu_jax import host_memory

if __name__ == "__main__":  # Our own long-running process, before NumPy starts threads.
  host_memory.retain_freed_memory()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from salmu_jax import cli, distributed  # noqa: E402
from salmu_jax.training import loop  # noqa: E402


def main(argv):
  """The CLI; its flags are defined below, only when this module is the program."""
  del argv

  def body():
    history = loop.train(_CONFIG.value, _WORKDIR.value, dataset_dir=_DATASET.value)
    summary = [f"{_CONFIG.value.reference} is at step {history['steps_done']}"]
    if history["losses"]:
      summary.append(f"last loss {history['losses'][max(history['losses'])]:.4f}")
    for name in ("heldout_retrieval_r1", "forget_association_r1"):
      if history[name]:
        summary.append(f"{name} {history[name][max(history[name])]:.3f}")
    print("; ".join(summary) + f" ({_WORKDIR.value})")
  cli.run(body)


if __name__ == "__main__":
  distributed.define_flags()
  _CONFIG = config_flags.DEFINE_config_file("config", None, "configs/NAME.py:clean|compromised",
                                            lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, TensorBoard, metrics.")
  _DATASET = flags.DEFINE_string("dataset_dir", None,
                                 "A built SALMU-synth; default: build one under WORKDIR/data.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main, flags_parser=cli.parse_flags)
