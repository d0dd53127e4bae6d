"""Unlearns the forget split from a Compromised checkpoint with a registered method.

  python -m salmu_jax.unlearn --config=configs/tiny.py --method=neg_grad --budget=5 \
      --from=runs/tiny/compromised --workdir=runs/tiny/neg_grad_5x --dataset_dir=runs/tiny/dataset

`--budget=B` allows B x |forget| samples (docs/protocol.md §4); `--forget=FILE` is a
deletion request (data/requests.py). The runner is salmu_jax/unlearning/runner.py, the
methods salmu_jax/unlearning/methods.py.
"""
from salmu_jax import host_memory

if __name__ == "__main__":  # Our own long-running process, before NumPy starts threads.
  host_memory.retain_freed_memory()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from salmu_jax import cli, distributed  # noqa: E402
from salmu_jax.data import requests  # noqa: E402
from salmu_jax.unlearning import methods, runner  # noqa: E402


def main(argv):
  """The CLI; its flags are defined below, only when this module is the program."""
  del argv

  def body():
    request = requests.read_request(_FORGET.value) if _FORGET.value else None
    metadata = runner.unlearn(_CONFIG.value, _METHOD.value, _BUDGET.value, _FROM.value,
                              _WORKDIR.value, dataset_dir=_DATASET.value, forget_request=request,
                              allow_other_dataset=_OTHER_DATASET.value)
    print(f"{metadata['method']} at budget {metadata['budget']}: {metadata['steps']} steps, "
          f"{metadata['samples_processed']['total']:,} samples, {metadata['wall_seconds']} s "
          f"-> {_WORKDIR.value}")
  cli.run(body)


if __name__ == "__main__":
  distributed.define_flags()
  _CONFIG = config_flags.DEFINE_config_file("config", None, "configs/NAME.py", lock_config=True)
  _METHOD = flags.DEFINE_string("method", None, "One of: " + ", ".join(methods.METHODS))
  _BUDGET = flags.DEFINE_float("budget", 1.0, "Passes' worth of forget samples (> 0).")
  _FROM = flags.DEFINE_string("from", None, "Run directory of the Compromised model.")
  _WORKDIR = flags.DEFINE_string("workdir", None, "Where the unlearned checkpoint goes.")
  _DATASET = flags.DEFINE_string("dataset_dir", None, "The SALMU-synth Compromised trained on.")
  _FORGET = flags.DEFINE_string("forget", None, "A deletion request: a JSON list of identity "
                                "ids and [identity, field] pairs, or one per line (`7` or "
                                "`7,iban`); default: the whole forget split.")
  _OTHER_DATASET = flags.DEFINE_bool("allow_other_dataset", False, "Unlearn on a dataset other "
                                     "than the one Compromised was trained on (recorded).")
  flags.mark_flags_as_required(["config", "method", "from", "workdir"])
  app.run(main, flags_parser=cli.parse_flags)
