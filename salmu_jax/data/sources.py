"""Random-access sources beside SALMU-synth: the retain base and classification tasks.

Every source here follows grain's random-access protocol (`__len__`, `__getitem__`).
Retain-base sources yield {'image': uint8[H,W,3], 'caption': str}; classification
sources (2.1_GenKnow) {'image': uint8[H,W,3], 'label': int}. The built SALMU-synth
splits are opened by data/layout.py.
"""
import json
import os
import tarfile

import numpy as np
import tensorflow_datasets as tfds

from salmu_jax.data import scenes
from salmu_jax.data.layout import decode_image
from salmu_jax.errors import ConfigError

def rgb_image(value) -> np.ndarray:
  """An image feature of any tfds dataset (encoded bytes or a uint8 tensor) as [H, W, 3]."""
  image = decode_image(value) if isinstance(value, bytes) else np.asarray(value)
  if image.ndim == 2 or image.shape[-1] == 1:
    image = np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=-1)
  return image


def open_tfds(name: str, data_dir: str, split: str, owner: str):
  """(builder, data source) of a prepared local tfds dataset; a ConfigError naming `owner`
  (the config group) if it cannot be opened."""
  try:
    data_builder = tfds.builder(name, data_dir=data_dir or None)
    return data_builder, data_builder.as_data_source(split)
  except Exception as e:  # tfds raises several types for a missing dataset.
    raise ConfigError(f"{owner}: cannot open tfds dataset {name!r} split {split!r} in "
                      f"{data_dir or 'the default data_dir'} ({type(e).__name__}: {e})") from e


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


class TfdsClassification:
  """A local tfds classification dataset for 2.1_GenKnow (e.g. imagenet2012, cifar10),
  configured by `eval.genknow`."""

  def __init__(self, genknow):
    data_builder, self._source = open_tfds(genknow.name, genknow.data_dir, genknow.split,
                                           "eval.genknow")
    feature = data_builder.info.features[genknow.label_key]
    if not hasattr(feature, "names"):
      raise ConfigError(f"eval.genknow.label_key={genknow.label_key!r} is not a ClassLabel")
    self.class_names = [n.replace("_", " ") for n in feature.names]
    self._keys, self._limit = (genknow.image_key, genknow.label_key), genknow.max_examples

  def __len__(self):
    return min(len(self._source), self._limit)

  def __getitem__(self, index):
    raw = self._source[index]
    return {"image": rgb_image(raw[self._keys[0]]), "label": int(raw[self._keys[1]])}


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


def retain_base_source(data_config, scene_cache: scenes.RenderCache | None = None):
  """The retain base a config names: procedural scenes (kept in `scene_cache` if given),
  a tfds dataset or shards."""
  base = data_config.retain_base
  if base.kind == "procedural":
    return scenes.ProceduralScenes(data_config.seed, data_config.image_size, base.size, "train",
                                   cache=scene_cache)
  if base.kind == "tfds":
    return TfdsImageText(base.name, base.data_dir, base.split, base.image_key, base.text_key)
  if base.kind == "webdataset":
    return WebDataset(base.path)
  raise ConfigError(f"data.retain_base.kind={base.kind!r} is not known")


def zeroshot_source(data_config):
  """The held-out GenKnow task of the procedural base (labels index scenes.CLASSES)."""
  return scenes.ProceduralScenes(data_config.seed, data_config.image_size,
                                 data_config.retain_base.zeroshot_examples, "zeroshot")
