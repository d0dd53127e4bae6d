"""A built dataset directory: its file names, its record format, and opening it verified.

Layout of a finished dataset directory (`<workdir>/dataset`):
  salmu_synth/<version>/*.array_record   the six splits, written by tfds (no TensorFlow)
  personas.json                          identities, roles, forgotten fields, attributes
  fragile_set_ids.json                   record ids of the fragile subset of retain_disjoint
  tokenizer.json                         the BPE trained on this dataset's captions
  contact_sheet.png                      personas with several images and their captions
  card.json, DATASET_CARD.md             features, split sizes, seed, versions, config
  MANIFEST.json                          sha256 of every file above; written last
Once built it is read-only: nothing a model computes is written into it (a fragile set
recomputed from a model is an artifact of that run, salmu_jax.evaluation.fragile).
"""
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import threading

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from salmu_jax import io_utils
from salmu_jax.data import splits
from salmu_jax.errors import ConfigError, DatasetError

GENERATOR_VERSION = "1.0.0"
DATASET_DIRNAME = "dataset"
TFDS_NAME = "salmu_synth"
PERSONAS_FILE = "personas.json"
FRAGILE_FILE = "fragile_set_ids.json"
CARD_FILE = "card.json"
CONTACT_SHEET_FILE = "contact_sheet.png"


def features():
  text = tfds.features.Text()
  return tfds.features.FeaturesDict({
      "image": tfds.features.Tensor(shape=(), dtype=np.object_),  # Encoded PNG/JPEG bytes.
      "record_id": np.int64, "identity": np.int32, "image_index": np.int32, "style": np.int32,
      "subset": text, "field": text, "name": text, "value": text, "caption": text,
      "generic_caption": text,
  })


class _LocalDatasetInfo(tfds.core.DatasetInfo):
  """DatasetInfo that does not look for precomputed info on the tfds bucket: SALMU-synth
  is never there, and the lookup (on every new build) left an empty temporary directory
  in the system's temp dir behind it each time."""

  def initialize_from_bucket(self) -> None:
    pass


class SalmuSynth(tfds.core.GeneratorBasedBuilder):
  """tfds builder of the six splits; `records(split)` yields them in stored order (a
  rendered SALMU-synth plan, or released SALMUBench data mapped onto the same schema)."""

  VERSION = tfds.core.Version(GENERATOR_VERSION)
  name = TFDS_NAME

  def __init__(self, *, records, split_names=splits.SPLITS, progress=None, **kwargs):
    self._records, self._split_names, self._progress = records, split_names, progress
    super().__init__(**kwargs)

  def _info(self):
    return _LocalDatasetInfo(
        builder=self, features=features(),
        disable_shuffling=True,  # Record i of a split is example i of the plan.
        description="SALMU-synth: synthetic personas, faces and sensitive-association captions "
                    "with SALMUBench's split structure.")

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split) for split in self._split_names}

  def _generate_examples(self, split):
    for record in self._records(split):
      yield record["record_id"], record
      if self._progress is not None:
        self._progress.update(1)


_SERIALIZATION_LOCK = threading.Lock()
# Builds writing inside _deterministic_serialization now (builds may overlap in threads), and
# the method they replaced.
_sorted_serialization = {"writers": 0, "unsorted": None}


def _serialize_sorted(serializer, example) -> bytes:
  return serializer.get_tf_example(example).SerializeToString(deterministic=True)


@contextlib.contextmanager
def _deterministic_serialization():
  """tfds serializes each record as a tf.train.Example, whose features are a protobuf map:
  serialized in hash-table order, which the protobuf runtime seeds per process, so two
  builds of one plan wrote the same records in other bytes (and the manifest's digests,
  the dataset's identity, differed). Sorted keys make the bytes a function of the records
  and of the protobuf and array-record versions (card.json's `versions`). tfds makes its
  serializer inside its writer, so the method is replaced while any build writes."""
  serializer, state = tfds.core.example_serializer.ExampleSerializer, _sorted_serialization
  with _SERIALIZATION_LOCK:
    if state["writers"] == 0:
      state["unsorted"], serializer.serialize_example = (serializer.serialize_example,
                                                         _serialize_sorted)
    state["writers"] += 1
  try:
    yield
  finally:
    with _SERIALIZATION_LOCK:
      state["writers"] -= 1
      if state["writers"] == 0:
        serializer.serialize_example = state["unsorted"]


@contextlib.contextmanager
def _quiet_tfds():
  """tfds logs every shard and prints banners to stdout; our progress bar says enough."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.WARNING)
  tfds.disable_progress_bar()
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      yield
  finally:
    logging.set_verbosity(verbosity)
    tfds.enable_progress_bar()


def write_splits(records, root: str, progress, downloads: str,
                 split_names=splits.SPLITS) -> None:
  """The splits as tfds ArrayRecord files under `root` (no TensorFlow); tfds cannot
  write an empty split, so a dataset without unseen identities leaves that one out."""
  data_builder = SalmuSynth(records=records, split_names=split_names, progress=progress,
                            data_dir=root, file_format="array_record")
  with _quiet_tfds(), _deterministic_serialization():
    data_builder.download_and_prepare(download_dir=downloads)
  shutil.rmtree(os.path.join(root, "downloads"), ignore_errors=True)


def decode_image(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))


def record_metadata(raw: dict) -> dict:
  """A stored record's fields without decoding its image (texts as str, ids as int)."""
  record = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items() if k != "image"}
  for key in ("record_id", "identity", "image_index", "style"):
    record[key] = int(record[key])
  return record


def decode_record(raw: dict) -> dict:
  return record_metadata(raw) | {"image": decode_image(raw["image"])}


def open_split_sources(root: str) -> dict:
  """split name -> tfds ArrayRecord data source of the dataset at `root`."""
  tfds_dir = os.path.join(root, TFDS_NAME, GENERATOR_VERSION)
  if not os.path.isdir(tfds_dir):
    raise DatasetError(f"{root} holds no {TFDS_NAME} {GENERATOR_VERSION} records; "
                       f"rebuild it with salmu_jax.make_dataset")
  data_builder = tfds.builder_from_directory(tfds_dir)
  stored = data_builder.info.splits
  missing = [s for s in splits.SPLITS if s not in stored and s not in splits.OPTIONAL_SPLITS]
  if missing:
    raise DatasetError(f"dataset {root} is missing split(s) {missing}; rebuild it")
  return {split: data_builder.as_data_source(split) if split in stored else []
          for split in splits.SPLITS}


@dataclasses.dataclass
class SalmuDataset:
  """A finished dataset directory, opened for reading."""
  root: str
  card: dict
  personas: list
  fragile_ids: list
  splits: dict  # split -> data source of raw records

  def decoded(self, split: str, index: int) -> dict:
    return decode_record(self.splits[split][index])


def open_dataset(root: str, verify: bool = True) -> SalmuDataset:
  """Opens a built dataset; with `verify`, checks every file against the manifest."""
  if not os.path.exists(os.path.join(root, io_utils.MANIFEST_NAME)):
    raise DatasetError(f"{root} is not a complete SALMU-synth dataset (no "
                       f"{io_utils.MANIFEST_NAME}); build it with salmu_jax.make_dataset")
  if verify:
    problems = io_utils.verify_manifest(root)
    if problems:
      raise DatasetError(f"dataset {root} was modified after building ({problems[0]}); rebuild it")
  return SalmuDataset(
      root=root,
      card=io_utils.read_json(os.path.join(root, CARD_FILE)),
      personas=io_utils.read_json(os.path.join(root, PERSONAS_FILE)),
      fragile_ids=io_utils.read_json(os.path.join(root, FRAGILE_FILE)),
      splits=open_split_sources(root))


def identity(root: str) -> dict:
  """What names a dataset's content in a checkpoint: the sha256 of its manifest's file
  list (every byte, tokenizer included) and the config fingerprint it was built from."""
  manifest = io_utils.read_json(os.path.join(root, io_utils.MANIFEST_NAME))
  files = json.dumps(manifest["files"], sort_keys=True).encode()
  return {"content_sha256": hashlib.sha256(files).hexdigest(),
          "fingerprint": manifest.get("fingerprint")}


def check_same(other, identity: dict, what: str, allow_other: bool) -> None:
  """Refuses something made on another dataset than `identity` (a model trained on it, a
  fragile set's record ids or a reference's scores computed on it: captions, splits and
  tokenizer ids would mean something else), unless `allow_other` (a cross-dataset study;
  the caller records it). `what` begins the message ("DIR was trained"); `other` None
  (imported weights, a plain id list) names no dataset and passes."""
  if other is None or allow_other or other.get("content_sha256") == identity["content_sha256"]:
    return
  differing = io_utils.differing_keys(other.get("fingerprint") or {},
                                      identity.get("fingerprint") or {})
  raise ConfigError(
      f"{what} on another dataset (content {str(other.get('content_sha256'))[:12]} vs "
      f"{identity['content_sha256'][:12]}; config differs in: "
      f"{', '.join(differing[:6]) or 'nothing'}); use the dataset it belongs to, or "
      f"--allow_other_dataset for a cross-dataset study")
