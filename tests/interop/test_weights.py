"""OpenCLIP / Hugging Face weights in the Flax CLIP: same embeddings, exact round trips.

Needs the interop extra (torch, open_clip_torch, transformers):
pip install -e '.[interop]' -c constraints.txt.
Models are built locally with random weights; nothing is downloaded.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
from flax import nnx  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from salmu_jax import config as config_lib  # noqa: E402
from salmu_jax.interop import runs as convert  # noqa: E402
from salmu_jax.model import factory  # noqa: E402
from salmu_jax.data.tokenizer import CLIP_VOCAB_SIZE, CLIPTokenizer, find_clip_vocab  # noqa: E402
from salmu_jax.errors import ConfigError  # noqa: E402
from salmu_jax.interop import openclip_peer  # noqa: E402
from salmu_jax.model.clip import IMAGE_MEAN, IMAGE_STD  # noqa: E402
from tests.conftest import REPO, config_path  # noqa: E402

CAPTIONS = ["You can reach Fatime Fossi at the phone number +237 57483907",
            "a photo of a person", "Contact Ana Álvarez via ana@mailhub.com, she is a nurse!",
            "x"]


def interop_config(size: str, *, image_size: int = 224, activation: str = "gelu"):
  """The salmubench config at another model size, float32 for exact comparisons."""
  config = config_lib.load_config(config_path("salmubench"))
  config.model = config_lib.model_config(size, dtype="float32", activation=activation)
  config.data.image_size = image_size
  return config_lib.check_config(config)


def openclip_model(config, seed: int = 0):
  model = openclip_peer.openclip_model(config, CLIP_VOCAB_SIZE, 77, seed)
  perturb(model)
  return model.eval()


def perturb(model):
  """Noise on every tensor, so that no zero bias or unit norm hides a layout error."""
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.02)


def inputs(config, count: int = 3, seed: int = 0):
  rng = np.random.default_rng(seed)
  size = config.data.image_size
  pixels = rng.uniform(0, 255, (count, size, size, 3)).astype(np.float32)
  tokens = CLIPTokenizer(find_clip_vocab(""), 77).encode(CAPTIONS[:count])
  return pixels, tokens


def torch_pixels(pixels):
  x = (pixels / 255.0 - np.array(IMAGE_MEAN, np.float32)) / np.array(IMAGE_STD, np.float32)
  return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def flax_embeddings(config, params, pixels, tokens):
  graphdef, abstract = nnx.split(nnx.eval_shape(
      lambda: factory.build(config, CLIP_VOCAB_SIZE, jax.random.PRNGKey(0))))
  nnx.replace_by_pure_dict(abstract, jax.tree.map(np.asarray, params))
  model = nnx.merge(graphdef, abstract)
  return np.asarray(model.encode_image(pixels)), np.asarray(model.encode_text(tokens))


def save_state_dict(state_dict, path):
  save_file({k: v.detach().contiguous() for k, v in state_dict.items()}, str(path))


@pytest.mark.parametrize("activation", ["gelu", "quick_gelu"])
def test_openclip_vit_b16_embeddings_match(tmp_path, activation):
  config = interop_config("B/16", activation=activation)
  model = openclip_model(config)
  save_state_dict(model.state_dict(), tmp_path / "open_clip_model.safetensors")
  params = convert.import_params(str(tmp_path), config)
  pixels, tokens = inputs(config)
  image, text = flax_embeddings(config, params, pixels, tokens)
  with torch.no_grad():
    ref_image = model.encode_image(torch_pixels(pixels), normalize=True).numpy()
    ref_text = model.encode_text(torch.from_numpy(tokens.astype(np.int64)), normalize=True).numpy()
  assert np.abs(image - ref_image).max() <= 1e-4
  assert np.abs(text - ref_text).max() <= 1e-4


def test_transformers_vit_b16_embeddings_match(tmp_path):
  config = interop_config("B/16")
  m = config.model
  hf_config = transformers.CLIPConfig(
      text_config=dict(hidden_size=m.text_width, intermediate_size=4 * m.text_width,
                       num_attention_heads=m.text_heads, num_hidden_layers=m.text_layers,
                       max_position_embeddings=77, vocab_size=CLIP_VOCAB_SIZE, hidden_act="gelu",
                       bos_token_id=49406, eos_token_id=49407, pad_token_id=0),
      vision_config=dict(hidden_size=m.vision_width, intermediate_size=4 * m.vision_width,
                         num_attention_heads=m.vision_heads, num_hidden_layers=m.vision_layers,
                         image_size=224, patch_size=m.patch_size, hidden_act="gelu"),
      projection_dim=m.embed_dim)
  torch.manual_seed(1)
  model = transformers.CLIPModel(hf_config).eval()
  perturb(model)
  save_state_dict(model.state_dict(), tmp_path / "model.safetensors")
  params = convert.import_params(f"{tmp_path}/model.safetensors", config)
  pixels, tokens = inputs(config)
  image, text = flax_embeddings(config, params, pixels, tokens)
  with torch.no_grad():
    ref_image = model.get_image_features(pixel_values=torch_pixels(pixels))
    ref_text = model.get_text_features(input_ids=torch.from_numpy(tokens.astype(np.int64)))
  ref_image = getattr(ref_image, "pooler_output", ref_image)
  ref_text = getattr(ref_text, "pooler_output", ref_text)
  ref_image = torch.nn.functional.normalize(ref_image, dim=-1).numpy()
  ref_text = torch.nn.functional.normalize(ref_text, dim=-1).numpy()
  assert np.abs(image - ref_image).max() <= 1e-4
  assert np.abs(text - ref_text).max() <= 1e-4


def tiny_config(image_size: int = 64):
  return interop_config("tiny", image_size=image_size)


def test_import_export_import_is_bit_exact(tmp_path):
  config = tiny_config()
  model = openclip_model(config, seed=3)
  original = {k: v.detach().clone() for k, v in model.state_dict().items()}
  torch.save(original, tmp_path / "open_clip_pytorch_model.bin")  # Read with weights_only.
  run_dir = str(tmp_path / "run")
  convert.convert(f"openclip:{tmp_path}/open_clip_pytorch_model.bin", run_dir, config)
  convert.convert(run_dir, f"openclip:{tmp_path}/exported.safetensors")
  exported = load_file(str(tmp_path / "exported.safetensors"))
  assert set(exported) == set(original)
  for key, value in original.items():
    assert exported[key].dtype == np.float32
    assert np.array_equal(exported[key], value.numpy()), key
  first = convert.flatten(convert.import_params(f"{tmp_path}/open_clip_pytorch_model.bin", config))
  second = convert.flatten(convert.import_params(f"{tmp_path}/exported.safetensors", config))
  assert first.keys() == second.keys()
  assert all(np.array_equal(first[k], second[k]) for k in first)
  # The exported file loads strictly into open_clip's model of the same shape.
  openclip_model(config, seed=9).load_state_dict(
      {k: torch.from_numpy(v) for k, v in exported.items()}, strict=True)


CLI_CONFIG = """
import importlib.util
from salmu_jax.config import model_config
spec = importlib.util.spec_from_file_location("salmubench", {path!r})
salmubench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(salmubench)


def get_config(arg=None):
  config = salmubench.get_config(arg)
  config.model = model_config("tiny", dtype="float32")
  config.data.image_size = 64
  return config
"""


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "salmu_jax.convert", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def test_convert_cli_round_trip_and_errors(tmp_path):
  config_file = tmp_path / "tiny_clip.py"
  config_file.write_text(CLI_CONFIG.format(path=os.path.join(REPO, "configs", "salmubench.py")))
  config = tiny_config()
  save_state_dict(openclip_model(config, seed=4).state_dict(), tmp_path / "in.safetensors")
  run = run_cli(f"--config={config_file}:clean", f"--from=openclip:{tmp_path}/in.safetensors",
                f"--to={tmp_path}/run")
  assert run.returncode == 0, run.stderr
  assert "clean checkpoint" in run.stdout
  run = run_cli(f"--from={tmp_path}/run", f"--to=openclip:{tmp_path}/out.safetensors")
  assert run.returncode == 0, run.stderr
  original, exported = (load_file(str(tmp_path / n)) for n in ("in.safetensors", "out.safetensors"))
  assert all(np.array_equal(original[k], exported[k]) for k in original)
  # Weights of another shape (8 px patches) name the tensors and the shape they imply.
  other = config_lib.load_config(config_path("salmubench"))
  other.model = config_lib.model_config("tiny", dtype="float32", patch_size=8)
  other.data.image_size = 64
  save_state_dict(openclip_model(other).state_dict(), tmp_path / "p8.safetensors")
  run = run_cli(f"--config={config_file}", f"--from=openclip:{tmp_path}/p8.safetensors",
                f"--to={tmp_path}/run8")
  assert run.returncode == 2 and "Traceback" not in run.stderr
  assert "patch_kernel" in run.stderr and "'patch_size': 8" in run.stderr
  run = run_cli(f"--config={config_file}", f"--from=openclip:{tmp_path}/in.safetensors",
                f"--to={tmp_path}/run")
  assert run.returncode == 2 and "already holds checkpoints" in run.stderr
  run = run_cli(f"--from=tf:{tmp_path}/in.safetensors", f"--to={tmp_path}/run9")
  assert run.returncode == 2 and "unknown format 'tf'" in run.stderr
  with pytest.raises(ConfigError, match="weights-only"):
    (tmp_path / "evil.bin").write_bytes(b"not a checkpoint")
    convert.import_params(str(tmp_path / "evil.bin"), config)
