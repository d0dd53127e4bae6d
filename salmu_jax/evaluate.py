"""Scores a checkpoint on SALMUBench's ten metrics (SALMUBENCH.md §3), official JSON keys.

  python -m salmu_jax.evaluate --config=configs/tiny.py --checkpoint=RUN_DIR --out=FILE.json \
      [--clean=clean.json --compromised=compromised.json] [--recompute_fragile | --fragile_set=F] \
      [--attacks=quantize,relearn] [--requested=REQUEST]

With the two reference results, scores are also normalized (efficacy: 0 = Compromised,
1 = Clean; utility: 1 = Compromised) and a failure mode is diagnosed. Reads only: the
checkpoint and the dataset are never changed. `--recompute_fragile` (on Compromised)
puts the fragile set it computes into the result (`fragile_set_ids`), which later
evaluations read with `--fragile_set=THAT_RESULT.json`. Membership inference is always
scored (`privacy`); `--attacks` adds the quantization and relearning attacks (`attacks`).
`--requested` (a deletion request, as `unlearn --forget` reads it) adds the efficacy
metrics on its pairs and on the forget pairs it does not name (`request`); the references
must then be scored with the same request.
The evaluator is salmu_jax/evaluation/.
"""
import os

from absl import app, flags
from ml_collections import config_flags

from salmu_jax import cli, io_utils
from salmu_jax.data import requests
from salmu_jax.errors import ConfigError
from salmu_jax.evaluation import diagnosis, evaluator


def _read_reference(path: str | None):
  """A reference result, checked before any evaluation work."""
  if path is None:
    return None
  try:
    reference = io_utils.read_json(path)
    diagnosis.headlines(reference)
  except ConfigError as e:
    raise ConfigError(f"{path}: {e}") from None
  except (OSError, ValueError) as e:
    raise ConfigError(f"{path}: not a readable result ({e})") from None
  return reference


def main(argv):
  """The CLI; its flags are defined below, only when this module is the program."""
  del argv

  def body():
    out = os.path.abspath(_OUT.value)
    if os.path.isdir(out):
      raise ConfigError(f"--out={_OUT.value} is a directory; name the result file")
    inputs = {flag: os.path.abspath(path) for flag, path in (
        ("--clean", _CLEAN.value), ("--compromised", _COMPROMISED.value),
        ("--fragile_set", _FRAGILE_SET.value)) if path}
    clash = [flag for flag, path in inputs.items() if path == out]
    if clash:
      raise ConfigError(f"--out={_OUT.value} is also {clash[0]}: it would be overwritten; "
                        f"write the result elsewhere")
    dataset = os.path.abspath(_DATASET.value or os.path.join(_CHECKPOINT.value, "data",
                                                             "dataset"))
    if out.startswith(dataset + os.sep):
      raise ConfigError(f"--out={_OUT.value} lies inside the dataset {dataset}, which is "
                        f"read-only; write the result elsewhere")
    references = [_read_reference(p) for p in (_CLEAN.value, _COMPROMISED.value)]
    request = requests.read_request(_REQUESTED.value) if _REQUESTED.value else None
    result = evaluator.evaluate(
        _CONFIG.value, _CHECKPOINT.value, dataset_dir=_DATASET.value, clean=references[0],
        compromised=references[1], recompute_fragile=_RECOMPUTE.value,
        fragile_set=_FRAGILE_SET.value, allow_other_dataset=_OTHER_DATASET.value,
        attacks=_ATTACKS.value, request=request)
    io_utils.write_json_atomic(_OUT.value, result)
    for group in ("efficacy", "utility"):
      print(group + ": " + ", ".join(f"{k} {diagnosis.headline(result, group, k):.4f}"
                                     for k in result[group]))
    flat = diagnosis.headlines(result)
    print("membership AUC: " + (", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in flat.items()
                                          if k.startswith("privacy/"))
                                or result["privacy"].get("unavailable", "")))
    print("extended: " + ", ".join(f"{k} {v:.4f}" for k, v in diagnosis.headlines(result).items()
                                   if k.startswith(("retrieval/", "spread/"))))
    for side in ("requested", "not_requested"):
      if side in result.get("request", {}):
        normalized = result.get("normalized", {}).get("request", {}).get(side, {})
        print(f"{side} ({result['request']['pairs'][side]} pairs): " + ", ".join(
            f"{k} {diagnosis.headline({'efficacy': result['request'][side]}, 'efficacy', k):.4f}"
            + (f" (normalized {normalized[k]:.2f})" if k in normalized else "")
            for k in result["request"][side]))
    if "diagnosis" in result:
      print(f"diagnosis: {result['diagnosis']['label']}")
    print(f"step {result['meta']['step']} of {_CHECKPOINT.value} ({result['meta']['model']}) "
          f"written to {_OUT.value} in {result['meta']['seconds']} s")
  cli.run(body)


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", None, "configs/NAME.py[:clean|compromised]",
                                            lock_config=True)
  _CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A run directory (train, unlearn, "
                                    "convert).")
  _OUT = flags.DEFINE_string("out", None, "Where the JSON result is written (atomically).")
  _DATASET = flags.DEFINE_string("dataset_dir", None, "The SALMU-synth the run used; default "
                                 "CHECKPOINT/data/dataset.")
  _CLEAN = flags.DEFINE_string("clean", None, "Clean's result JSON, for normalized scores.")
  _COMPROMISED = flags.DEFINE_string("compromised", None, "Compromised's result JSON.")
  _RECOMPUTE = flags.DEFINE_bool("recompute_fragile", False, "Recompute the fragile set from "
                                 "this (Compromised) model; the result holds it.")
  _FRAGILE_SET = flags.DEFINE_string("fragile_set", None, "The result of a --recompute_fragile "
                                     "evaluation (or a JSON list of record ids): its fragile "
                                     "set replaces the dataset's.")
  _ATTACKS = flags.DEFINE_string("attacks", "none", "Attacks on forgetting to score too: "
                                 "comma-separated of quantize, relearn (docs/protocol.md §3).")
  _REQUESTED = flags.DEFINE_string("requested", None, "A deletion request (unlearn --forget's "
                                   "format): efficacy on its pairs and on the other forget "
                                   "pairs, separately.")
  _OTHER_DATASET = flags.DEFINE_bool("allow_other_dataset", False, "Score a model on a dataset "
                                     "other than the one it was trained on (recorded in meta).")
  flags.mark_flags_as_required(["config", "checkpoint", "out"])
  app.run(main, flags_parser=cli.parse_flags)
