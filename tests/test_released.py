"""The released SALMUBench layout imported onto our split schema (data.kind='released')."""
import json
import os

import pytest

from salmu_jax import config as config_lib
from salmu_jax import io_utils
from salmu_jax.data import builder, layout, released
from salmu_jax.errors import ConfigError, DatasetError
from tests import released_fixture
from tests.conftest import config_path


def released_config(released_dir):
  config = config_lib.load_config(config_path("micro"))
  config.data.kind = "released"
  config.data.released_dir = str(released_dir)
  config.tokenizer.kind = "clip_bpe"
  config.tokenizer.context_length = 77
  return config_lib.check_config(config)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  root = tmp_path_factory.mktemp("released")
  expected = released_fixture.write_fixture(str(root / "salmubench"))
  config = released_config(root / "salmubench")
  dataset_dir = builder.build_dataset(config, str(root / "work"), progress=False)
  return config, dataset_dir, expected


def test_splits_follow_the_official_derivation(imported):
  _, dataset_dir, expected = imported
  dataset = layout.open_dataset(dataset_dir)
  sizes = {split: len(source) for split, source in dataset.splits.items()}
  assert sizes == {"forget": 24, "holdout_association": 8, "holdout_identity": 16,
                   "unseen_identity": 0, "retain_joint": 4, "retain_disjoint": 10}
  card = dataset.card
  assert card["retain_synth_unassigned"] == 4  # Generic images of holdout identities.
  assert card["personas_per_role"] == {"forget_identity": 2, "forget_association": 2,
                                       "holdout_identity": 2, "unseen_identity": 0}
  forget = [dataset.decoded("forget", i) for i in range(sizes["forget"])]
  by_file = {row["file_name"]: row for split in ("forget",) for row in expected["rows"][split]}
  record_ids = io_utils.read_json(os.path.join(dataset_dir, released.RECORD_IDS_FILE))
  names = {record_ids[name]: name for name in by_file}
  for record in forget:
    row = by_file[names[record["record_id"]]]
    person = expected["identities"][row["identity_id"]]
    assert record["caption"] == row["text"] and record["name"] == person["name"]
    assert record["value"] == person[record["field"]]
    assert record["generic_caption"].startswith("A portrait photo")
    assert record["subset"] in ("forget_identity", "forget_association")
    assert record["image"].shape == (40, 48, 3)  # Published bytes; cropped on read.
  subsets = {r["subset"] for r in forget if r["name"] == "Person Number2"}
  assert subsets == {"forget_association"}
  personas = {p["identity_id"]: p for p in dataset.personas}
  assert personas["id0002"]["forgotten_fields"] == sorted(
      ["city", "blood_type", "email", "credit_card"])
  fragile = {names_all for names_all, rid in record_ids.items() if rid in set(dataset.fragile_ids)}
  assert fragile == set(released_fixture.FRAGILE)
  joint = [dataset.decoded("retain_joint", i) for i in range(4)]
  assert all(r["field"] == "" and r["caption"] == r["generic_caption"] for r in joint)


def test_import_is_deterministic_and_reused(imported, tmp_path):
  config, dataset_dir, _ = imported
  again = builder.build_dataset(config, str(tmp_path / "work"), progress=False)
  ours, theirs = (io_utils.read_json(os.path.join(d, io_utils.MANIFEST_NAME))["files"]
                  for d in (dataset_dir, again))
  assert ours == theirs  # Same bytes, file by file.
  assert builder.build_dataset(config, os.path.dirname(dataset_dir), progress=False) == dataset_dir


def test_bad_released_data_fails_with_the_offending_value(tmp_path):
  root = tmp_path / "salmubench"
  released_fixture.write_fixture(str(root))
  meta_path = root / released.CAPTIONS_FILE
  meta = json.loads(meta_path.read_text())
  meta["id0000_001.jpg"]["data_field"] = "shoe_size"
  meta_path.write_text(json.dumps(meta))
  with pytest.raises(DatasetError, match="shoe_size"):
    builder.build_dataset(released_config(root), str(tmp_path / "work"), progress=False)
  assert not os.path.exists(tmp_path / "work" / builder.DATASET_DIRNAME)  # Nothing half-written.

  released_fixture.write_fixture(str(root))
  (root / released.FRAGILE_FILE).write_text(json.dumps(["id0000_000.jpg"]))
  with pytest.raises(DatasetError, match="not in retain_disjoint"):
    builder.build_dataset(released_config(root), str(tmp_path / "work"), progress=False)

  with pytest.raises(DatasetError, match="released_dir"):
    builder.build_dataset(released_config(tmp_path / "nowhere"), str(tmp_path / "w2"),
                          progress=False)
  config = config_lib.load_config(config_path("micro"))
  config.data.kind = "released"
  with pytest.raises(ConfigError, match="clip_bpe"):
    config_lib.check_config(config)
