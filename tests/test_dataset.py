"""Building, storing and reading SALMU-synth: determinism, atomicity, bad input."""
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from array_record.python import array_record_module
from tensorflow_datasets.proto import tf_example_pb2

from salmu_jax import config as config_lib, io_utils
from salmu_jax.data import builder, faces, layout, scenes, splits
from salmu_jax.data.tokenizer import BPETokenizer, normalize_text
from salmu_jax.errors import ConfigError, DatasetError
from tests.conftest import REPO, config_path


def record_files(root):
  files = sorted(glob.glob(os.path.join(root, builder.TFDS_NAME, "*", "*.array_record*")))
  assert len(files) == len(splits.SPLITS)
  return files


def record_digests(root):
  return {os.path.basename(f): io_utils.sha256_file(f) for f in record_files(root)}


def test_records_match_the_plan(micro_dataset_dir, micro_config):
  dataset = layout.open_dataset(micro_dataset_dir)
  plan = splits.make_plan(micro_config.data)
  assert dataset.card["split_sizes"] == plan.split_sizes()
  for split in splits.SPLITS:
    assert len(dataset.splits[split]) == len(plan.examples[split])
    for index in (0, len(plan.examples[split]) - 1):
      record, spec = dataset.decoded(split, index), plan.examples[split][index]
      assert record["record_id"] == spec.record_id and record["caption"] == spec.caption
      assert record["field"] == spec.field and record["subset"] == spec.subset
      np.testing.assert_array_equal(record["image"], faces.render_face(spec.face, spec.view, 32))
  assert dataset.fragile_ids == plan.fragile_ids
  roles = {p["identity"]: p["role"] for p in dataset.personas}
  assert roles == plan.roles
  assert os.path.getsize(os.path.join(micro_dataset_dir, builder.CONTACT_SHEET_FILE)) > 10_000


def test_same_seed_same_bytes_other_seed_differs(micro_dataset_dir, micro_config, tmp_path):
  # Two render processes must write exactly what one process writes.
  micro_config.data.build_workers = 2
  again = builder.build_dataset(micro_config, str(tmp_path / "again"), progress=False)
  assert record_digests(again) == record_digests(micro_dataset_dir)
  for name in (builder.PERSONAS_FILE, builder.FRAGILE_FILE, "tokenizer.json"):
    assert io_utils.sha256_file(os.path.join(again, name)) == \
        io_utils.sha256_file(os.path.join(micro_dataset_dir, name))
  micro_config.data.seed = 7
  other = builder.build_dataset(micro_config, str(tmp_path / "other"), progress=False)
  assert all(a != b for a, b in zip(record_digests(other).values(),
                                    record_digests(micro_dataset_dir).values()))


def test_build_is_idempotent_and_detects_changes(micro_config, tmp_path):
  root = builder.build_dataset(micro_config, str(tmp_path), progress=False)
  manifest = os.path.join(root, io_utils.MANIFEST_NAME)
  stamp = os.stat(manifest).st_mtime_ns
  assert builder.build_dataset(micro_config, str(tmp_path), progress=False) == root
  assert os.stat(manifest).st_mtime_ns == stamp  # Reused, not rebuilt.

  micro_config.data.images_per_identity = 9
  with pytest.raises(DatasetError, match="data.images_per_identity"):
    builder.build_dataset(micro_config, str(tmp_path), progress=False)
  micro_config.data.images_per_identity = 8

  record_file = glob.glob(os.path.join(root, builder.TFDS_NAME, "*", "*forget.array_record*"))[0]
  with open(record_file, "r+b") as f:
    f.seek(100)
    byte = f.read(1)
    f.seek(100)
    f.write(bytes([byte[0] ^ 0xFF]))
  with pytest.raises(DatasetError, match="modified after building.*changed file"):
    builder.build_dataset(micro_config, str(tmp_path), progress=False)
  with pytest.raises(DatasetError, match="modified after building"):
    layout.open_dataset(root)

  os.remove(manifest)
  with pytest.raises(DatasetError, match="incomplete"):
    builder.build_dataset(micro_config, str(tmp_path), progress=False)


def test_interrupted_build_leaves_nothing_that_looks_complete(micro_config, tmp_path, monkeypatch):
  def crash(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(builder, "_contact_sheet", crash)
  with pytest.raises(KeyboardInterrupt):
    builder.build_dataset(micro_config, str(tmp_path), progress=False)
  assert os.listdir(tmp_path) == []
  monkeypatch.undo()
  root = builder.build_dataset(micro_config, str(tmp_path), progress=False)
  assert layout.open_dataset(root).card["split_sizes"]["forget"] == 64


def test_a_build_leaves_nothing_in_the_temp_dir(micro_config, tmp_path, monkeypatch):
  """tfds's lookup of precomputed info on its bucket made an empty temporary directory per
  build and left it; the build's own temporary files are removed too."""
  temp = tmp_path / "temp"
  temp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(temp))
  builder.build_dataset(micro_config, str(tmp_path / "run"), progress=False)
  assert os.listdir(temp) == []


def test_the_fragile_rule_keeps_the_pairs_a_model_knows_least():
  ids = list(range(100, 120))
  similarities = np.linspace(1, 0, len(ids))  # The last ids are known least.
  assert splits.select_lowest(ids, similarities, 0.1) == [118, 119]
  assert splits.select_lowest(ids[::-1], similarities[::-1], 0.1) == [118, 119]


@pytest.mark.parametrize("overrides, message", [
    ({"data.forget_identity_fraction": 0.6}, "leaves no holdout_identity"),
    ({"data.forget_association_fraction": 1.5}, "strictly between 0 and 1"),
    ({"data.num_personas": 3}, "too small: role"),
    ({"data.images_per_identity": 4}, "below the 8 fields"),
    ({"data.forget_fields_per_partial": 8}, "forget_fields_per_partial=8"),
    ({"data.fields": ("city", "shoe_size")}, "shoe_size"),
    ({"data.image_format": "gif"}, "gif"),
    ({"data.mixture.retain_synth": -1.0}, "retain_synth=-1.0 must be a finite, non-negative"),
    ({"reference": "dirty"}, "reference='dirty'"),
    ({"mesh.fsdp": 0}, "mesh.fsdp=0"),
    ({"model.dtype": "float16"}, "model.dtype='float16'"),
    ({"train.loss": "hinge"}, "train.loss='hinge'"),
    ({"data.nonexistent": 1}, "unknown config key 'data.nonexistent'"),
    ({"train.learning_rate": -1.0}, "train.learning_rate=-1.0 must be a positive, finite"),
    ({"train.learning_rate": float("nan")}, "train.learning_rate=nan must be a positive"),
    ({"unlearn.learning_rate": float("inf")}, "unlearn.learning_rate=inf must be a positive"),
    ({"eval.batch_size": 0}, "eval.batch_size=0 must be a positive integer"),
    ({"eval.gallery_forget": -1}, "eval.gallery_forget=-1 must be a non-negative integer"),
    ({"data.jpeg_quality": 500}, "data.jpeg_quality=500 must lie in 1 .. 100"),
    ({"train.b2": 2.0}, "train.b2=2.0 must lie in \\[0, 1\\)"),
    ({"train.grad_clip_norm": 0.0}, "train.grad_clip_norm=0.0 must be a positive number"),
    ({"model.vision_layers": -1}, "model.vision_layers=-1 must be a positive integer"),
    ({"tokenizer.vocab_size": 0}, "tokenizer.vocab_size=0 must be at least 64"),
    ({"model.text_heads": 3}, "model.text_width=64 is not divisible by model.text_heads=3"),
    ({"model.vision_mlp_ratio": 0.0}, "model.vision_mlp_ratio=0.0 must be a positive number"),
    ({"data.mixture.retain_base": float("inf")}, "retain_base=inf must be a finite, non-negative"),
    ({"data.loader.num_threads": -1}, "data.loader.num_threads=-1 must be a non-negative"),
    ({"data.loader.record_cache_mb": True}, "data.loader.record_cache_mb=True must be a non-neg"),
    ({"unlearn.npo.beta": 0.0}, "unlearn.npo.beta=0.0 must be positive"),
    ({"unlearn.salun.sparsity": 5.0}, "unlearn.salun.sparsity=5.0 must be in \\(0, 1\\]"),
    ({"unlearn.scrub.max_every": 0}, "unlearn.scrub.max_every=0 must be an integer of at least 1"),
    ({"unlearn.ssd.lam": -1.0}, "unlearn.ssd.lam=-1.0 must be non-negative"),
])
def test_bad_config_values_get_one_line_errors(overrides, message):
  with pytest.raises(ConfigError, match=message) as error:
    config_lib.load_config(config_path("micro"), overrides)
  assert "\n" not in str(error.value)


def test_a_config_file_adding_a_key_is_rejected(micro_config):
  micro_config.data.unlock()
  micro_config.data.num_personaz = 5
  with pytest.raises(ConfigError, match="unknown config key 'data.num_personaz'"):
    config_lib.check_config(micro_config)


def test_a_missing_or_malformed_dataset_is_named(micro_config, micro_dataset_dir, tmp_path):
  with pytest.raises(DatasetError, match="nowhere does not exist"):
    builder.check_existing(str(tmp_path / "nowhere"), micro_config)
  (tmp_path / "file").write_text("")
  with pytest.raises(DatasetError, match="is a file, not a dataset directory"):
    builder.check_existing(str(tmp_path / "file"), micro_config)
  copy = tmp_path / "copy"
  shutil.copytree(micro_dataset_dir, copy)
  manifest = json.loads((copy / "MANIFEST.json").read_text())
  (copy / "MANIFEST.json").write_text(json.dumps({"fingerprint": manifest["fingerprint"]}))
  with pytest.raises(DatasetError, match="MANIFEST.json is not a manifest \\(no file list\\)"):
    builder.check_existing(str(copy), micro_config)
  with pytest.raises(DatasetError, match="MANIFEST.json has no file list"):
    layout.open_dataset(str(copy))
  (copy / "MANIFEST.json").write_text("[]")
  with pytest.raises(DatasetError, match="is not a manifest"):
    builder.check_existing(str(copy), micro_config)
  # A stray file in a dataset: named, and the advice is to remove it, not to rebuild.
  shutil.copy(micro_dataset_dir + "/MANIFEST.json", copy / "MANIFEST.json")
  (copy / "comp.json").write_text("{}")
  with pytest.raises(DatasetError, match="unlisted file comp.json.*remove the file"):
    builder.check_existing(str(copy), micro_config)


def test_too_short_context_is_refused(micro_config, tmp_path):
  micro_config.tokenizer.context_length = 12
  with pytest.raises(ConfigError, match="context_length=12 truncates"):
    builder.build_dataset(micro_config, str(tmp_path), progress=False)
  assert not os.path.exists(tmp_path / "dataset")


def test_records_are_stored_in_their_canonical_bytes(micro_dataset_dir):
  """Each stored record is its tf.train.Example serialized with sorted keys, the bytes any
  process writes (a tfds that serialized another way would fail here, not only across
  processes)."""
  for path in record_files(micro_dataset_dir):
    reader = array_record_module.ArrayRecordReader(path)
    try:
      for raw in reader.read(list(range(min(reader.num_records(), 4)))):
        assert tf_example_pb2.Example.FromString(raw).SerializeToString(deterministic=True) == raw
    finally:
      reader.close()


def test_sorted_serialization_holds_while_any_build_writes():
  """Overlapping builds (threads) keep sorted keys until the last one ends, then tfds's own
  method is back, after an error too."""
  serializer = tfds.core.example_serializer.ExampleSerializer
  unsorted = serializer.serialize_example
  first, second = layout._deterministic_serialization(), layout._deterministic_serialization()
  first.__enter__()
  second.__enter__()
  first.__exit__(None, None, None)
  assert serializer.serialize_example is layout._serialize_sorted
  second.__exit__(None, None, None)
  assert serializer.serialize_example is unsorted
  with pytest.raises(KeyError), layout._deterministic_serialization():
    raise KeyError("interrupted build")
  assert serializer.serialize_example is unsorted


@pytest.mark.slow
def test_another_process_writes_the_same_bytes(micro_dataset_dir, tmp_path):
  """The manifest's digests name the dataset in every checkpoint: a rebuild elsewhere must
  reproduce them. tfds stores records as tf.train.Example protos, whose feature map a
  process serializes in its own hash order (a second build in this process cannot tell)."""
  env = dict(os.environ, PYTHONPATH=REPO)
  subprocess.run([sys.executable, "-m", "salmu_jax.make_dataset",
                  f"--config={config_path('micro')}", f"--workdir={tmp_path}",
                  "--config.data.build_workers=2"],  # The render pool too.
                 check=True, capture_output=True, env=env, cwd=REPO)
  again = str(tmp_path / layout.DATASET_DIRNAME)
  assert record_digests(again) == record_digests(micro_dataset_dir)
  assert layout.identity(again) == layout.identity(micro_dataset_dir)


def test_cli_reports_bad_input_in_one_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO)
  run = lambda *args: subprocess.run(
      [sys.executable, "-m", "salmu_jax.make_dataset", f"--config={config_path('micro')}",
       f"--workdir={tmp_path}", *args], capture_output=True, text=True, env=env, cwd=REPO)
  result = run("--config.data.num_personas=2")
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: data.num_personas=2 is too small")
  result = run("--config.data.no_such_field=2")  # One line, not ml_collections' traceback.
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr.strip() == ("error: unknown config key among --config.data.no_such_field=2"
                                   " (no_such_field)")
  os.makedirs(tmp_path / "dataset")
  result = run()
  assert result.returncode == 2 and "incomplete" in result.stderr
  (tmp_path / "a_file").write_text("")  # A file where the workdir (a directory) belongs.
  result = subprocess.run(
      [sys.executable, "-m", "salmu_jax.make_dataset", f"--config={config_path('micro')}",
       f"--workdir={tmp_path / 'a_file' / 'sub'}"], capture_output=True, text=True, env=env,
      cwd=REPO)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith("error: Not a directory: ")


def test_tokenizer_layout_and_normalization(micro_dataset_dir, micro_config):
  tokenizer = BPETokenizer.load(os.path.join(micro_dataset_dir, "tokenizer.json"), 48)
  tokens = tokenizer.encode(["The IBAN of  Ana ÁLVAREZ is ES12 3456.", "a red star."])
  assert tokens.dtype == np.int32 and tokens.shape == (2, 48)
  assert (tokens[:, 0] == tokenizer.sot_id).all()
  assert (tokens.argmax(-1) == (tokens != 0).sum(-1) - 1).all()  # eot: the largest id, last.
  assert tokenizer.decode(tokens[0]).strip() == normalize_text("The IBAN of  Ana ÁLVAREZ is ES12 3456.")
  long = tokenizer.encode(["word " * 100])[0]
  assert long[-1] == tokenizer.eot_id  # Truncation keeps the end-of-text token.


def test_scene_source_is_deterministic_with_valid_labels():
  source = scenes.ProceduralScenes(seed=0, image_size=32, length=50, split="zeroshot")
  first, again = source[3], source[3]
  np.testing.assert_array_equal(first["image"], again["image"])
  assert first["image"].shape == (32, 32, 3) and first["image"].dtype == np.uint8
  labels = [source[i]["label"] for i in range(50)]
  assert all(0 <= l < len(scenes.CLASSES) for l in labels)
  for i in range(50):  # The label names the object's colour and the background it says.
    colour, background = scenes.CLASSES[labels[i]]
    caption = source[i]["caption"].lower()
    assert f"{colour} " in caption and f"{background} background" in caption
  prompts = [scenes.zeroshot_prompts(c) for c in range(len(scenes.CLASSES))]
  assert len({len(p) for p in prompts}) == 1 and len(prompts) == 32  # One ensemble size.
  assert all("red" in p and "dark background" in p for p in prompts[scenes.CLASSES.index(("red", "dark"))])
  with pytest.raises(IndexError):
    source[50]


def test_views_of_one_face_differ_but_render_deterministically():
  rng = np.random.default_rng(0)
  face = faces.sample_identity(rng, "female")
  view_a, view_b = faces.sample_view(np.random.default_rng(1)), faces.sample_view(np.random.default_rng(2))
  a = faces.render_face(face, view_a, 64)
  np.testing.assert_array_equal(a, faces.render_face(face, view_a, 64))
  assert np.abs(a.astype(int) - faces.render_face(face, view_b, 64)).mean() > 10
