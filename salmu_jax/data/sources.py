"""Random-access sources: the built SALMU-synth splits and the retain base.

Every source here follows grain's random-access protocol (`__len__`,
`__getitem__`) and yields raw records; `decode_record` turns a stored SALMU-synth
record into {'image': uint8[H,W,3], text fields: str, ids: int}. Retain-base
sources yield {'image': uint8[H,W,3], 'caption': str}.
"""
import dataclasses
import io
import json
import os
import tarfile

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from salmu_jax import io_utils
from salmu_jax.data import builder, scenes, splits
from salmu_jax.errors import ConfigError, DatasetError

_TEXT_FIELDS = ("subset", "field", "name", "value", "caption", "generic_caption")


def decode_image(data: bytes) -> np.ndarray:
  with Image.open(io.BytesIO(data)) as image:
    return np.asarray(image.convert("RGB"))


def rgb_image(value) -> np.ndarray:
  """An image feature of any tfds dataset (encoded bytes or a uint8 tensor) as [H, W, 3]."""
  image = decode_image(value) if isinstance(value, bytes) else np.asarray(value)
  if image.ndim == 2 or image.shape[-1] == 1:
    image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=-1)
  return image


def record_metadata(raw: dict) -> dict:
  """A stored record's fields without decoding its image (texts as str, ids as int)."""
  record = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in raw.items() if k != "image"}
  for key in ("record_id", "identity", "image_index", "style"):
    record[key] = int(record[key])
  return record


def decode_record(raw: dict) -> dict:
  return record_metadata(raw) | {"image": decode_image(raw["image"])}


def open_tfds(name: str, data_dir: str, split: str, owner: str):
  """(builder, data source) of a prepared local tfds dataset; a ConfigError naming `owner`
  (the config group) if it cannot be opened."""
  try:
    data_builder = tfds.builder(name, data_dir=data_dir or None)
    return data_builder, data_builder.as_data_source(split)
  except Exception as e:  # tfds raises several types for a missing dataset.
    raise ConfigError(f"{owner}: cannot open tfds dataset {name!r} split {split!r} in "
                      f"{data_dir or 'the default data_dir'} ({type(e).__name__}: {e})") from e


def open_split_sources(root: str) -> dict:
  """split name -> tfds ArrayRecord data source of the dataset at `root`."""
  tfds_dir = os.path.join(root, builder.TFDS_NAME, builder.GENERATOR_VERSION)
  if not os.path.isdir(tfds_dir):
    raise DatasetError(f"{root} holds no {builder.TFDS_NAME} {builder.GENERATOR_VERSION} records; "
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
      card=io_utils.read_json(os.path.join(root, builder.CARD_FILE)),
      personas=io_utils.read_json(os.path.join(root, builder.PERSONAS_FILE)),
      fragile_ids=io_utils.read_json(os.path.join(root, builder.FRAGILE_FILE)),
      splits=open_split_sources(root))


def recompute_fragile_set(dataset: SalmuDataset, record_ids, similarities, fraction: float) -> list:
  """The SALMUBench rule: the `fraction` of retain_disjoint pairs a model knows least.

  `similarities[i]` is the model's image-caption cosine of `record_ids[i]`. The
  result replaces fragile_set_ids.json and the manifest is re-written.
  """
  disjoint = {int(dataset.splits["retain_disjoint"][i]["record_id"])
              for i in range(len(dataset.splits["retain_disjoint"]))}
  record_ids = np.asarray(record_ids)
  outside = sorted(set(record_ids.tolist()) - disjoint)
  if outside:
    raise DatasetError(f"record ids {outside[:5]} are not in retain_disjoint")
  fragile = splits.select_lowest(record_ids, similarities, fraction)
  io_utils.write_json_atomic(os.path.join(dataset.root, builder.FRAGILE_FILE), fragile)
  manifest = io_utils.read_json(os.path.join(dataset.root, io_utils.MANIFEST_NAME))
  io_utils.write_manifest(dataset.root, {k: v for k, v in manifest.items() if k != "files"})
  dataset.fragile_ids = fragile
  return fragile


class TfdsImageText:
  """Any local tfds dataset with an image and a text feature, as a retain base."""

  def __init__(self, name: str, data_dir: str, split: str, image_key: str, text_key: str):
    _, self._source = open_tfds(name, data_dir, split, "data.retain_base")
    first = self._source[0]
    for key in (image_key, text_key):
      if key not in first:
        raise ConfigError(f"data.retain_base: tfds dataset {name!r} has no feature {key!r}; "
                          f"features: {sorted(first)}")
    self._image_key, self._text_key = image_key, text_key

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    raw = self._source[index]
    text = raw[self._text_key]
    return {"image": rgb_image(raw[self._image_key]),
            "caption": text.decode() if isinstance(text, bytes) else str(text)}


_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
_TEXT_EXTS = ("txt", "caption", "json")


class WebDataset:
  """A folder of webdataset-style tar shards (`KEY.jpg` + `KEY.txt`), random access.

  Member offsets are indexed once when opened; reads seek straight to them.
  """

  def __init__(self, path: str):
    shards = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".tar")) \
        if os.path.isdir(path) else []
    if not shards:
      raise ConfigError(f"data.retain_base.path={path!r} holds no .tar shards")
    self._items = []
    for shard in shards:
      members = {}
      with tarfile.open(shard) as tar:
        for member in tar.getmembers():
          folder, base = os.path.split(member.name)
          if member.isfile() and "." in base:
            stem, ext = base.split(".", 1)  # webdataset: the key ends at the first dot.
            members.setdefault(os.path.join(folder, stem), {})[ext.lower()] = (
                member.offset_data, member.size)
      for key in sorted(members):
        exts = members[key]
        image = next((exts[e] for e in _IMAGE_EXTS if e in exts), None)
        text_ext = next((e for e in _TEXT_EXTS if e in exts), None)
        if image and text_ext:
          self._items.append((shard, image, text_ext, exts[text_ext]))
    if not self._items:
      raise ConfigError(f"data.retain_base.path={path!r}: no sample has both an image "
                        f"({'/'.join(_IMAGE_EXTS)}) and a caption ({'/'.join(_TEXT_EXTS)})")

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, index: int) -> dict:
    shard, (image_offset, image_size), text_ext, (text_offset, text_size) = self._items[index]
    with open(shard, "rb") as f:
      f.seek(image_offset)
      image = decode_image(f.read(image_size))
      f.seek(text_offset)
      text = f.read(text_size).decode()
    if text_ext == "json":
      text = json.loads(text).get("caption", "")
    return {"image": image, "caption": text.strip()}


def retain_base_source(data_config):
  """The retain base a config names: procedural scenes, a tfds dataset or shards."""
  base = data_config.retain_base
  if base.kind == "procedural":
    return scenes.ProceduralScenes(data_config.seed, data_config.image_size, base.size, "train")
  if base.kind == "tfds":
    return TfdsImageText(base.name, base.data_dir, base.split, base.image_key, base.text_key)
  if base.kind == "webdataset":
    return WebDataset(base.path)
  raise ConfigError(f"data.retain_base.kind={base.kind!r} is not known")


def zeroshot_source(data_config):
  """The held-out GenKnow task of the procedural base (labels index scenes.CLASSES)."""
  return scenes.ProceduralScenes(data_config.seed, data_config.image_size,
                                 data_config.retain_base.zeroshot_examples, "zeroshot")
