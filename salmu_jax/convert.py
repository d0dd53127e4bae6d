"""Moves CLIP weights between OpenCLIP / Hugging Face files and salmu_jax run directories.

  # A released OpenCLIP (or transformers) checkpoint -> a run directory that
  # salmu_jax.unlearn --from=... and salmu_jax.evaluate --checkpoint=... read:
  python -m salmu_jax.convert --config=configs/salmubench.py:compromised \
      --from=openclip:clip-vit-b-16-salmu-compromised/open_clip_model.safetensors \
      --to=runs/salmubench/compromised
  # An unlearned model -> OpenCLIP's safetensors, for the original PyTorch evaluator:
  python -m salmu_jax.convert --from=runs/salmubench/neg_grad_5x --to=openclip:neg_grad.safetensors

The conversions are salmu_jax/interop/runs.py.
"""
from absl import app, flags
from ml_collections import config_flags

from salmu_jax import cli
from salmu_jax.interop import runs


def main(argv):
  del argv
  cli.run(lambda: print(runs.convert(_FROM.value, _TO.value, _CONFIG.value, _LOGIT_BIAS.value)))


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file(
      "config", None, "Importing: configs/NAME.py[:clean|compromised], the model the weights fit "
      "(its reference names the imported model).", lock_config=True)
  _FROM = flags.DEFINE_string("from", None, "openclip:PATH, hf:PATH, or a run directory.")
  _TO = flags.DEFINE_string("to", None, "A run directory, or openclip:PATH.safetensors.")
  _LOGIT_BIAS = flags.DEFINE_bool("logit_bias", False, "Exporting: also write logit_bias "
                                  "(sigmoid-loss models; OpenCLIP's softmax CLIP has none).")
  flags.mark_flags_as_required(["from", "to"])
  app.run(main, flags_parser=cli.parse_flags)
