"""grain input pipelines: decode, augment (train only), tokenize, mix, shard, batch.

Training draws from up to three sources with configured weights:
  retain_base   procedural scenes (or a local tfds / webdataset corpus)
  retain_synth  retain_joint + retain_disjoint (generic captions)
  sensitive     forget + holdout_association + holdout_identity (Compromised only)
Each source is shuffled and repeated, the mixture is sliced per process
(`shard_index::shard_count`) and batched. Everything is a grain MapDataset, so
the iterator state is one integer and a resumed run sees the same next batch.
Images leave the pipeline as uint8 (normalized on device, where it is cheap).
"""
import numpy as np
import grain
from PIL import Image

from salmu_jax.data import layout, scenes, splits
from salmu_jax.errors import ConfigError, DatasetError

SOURCE_IDS = {"retain_base": 0, "retain_synth": 1, "sensitive": 2}
SOURCE_SPLITS = {"retain_synth": splits.RETAIN_SYNTH_SPLITS,
                 "sensitive": splits.TRAINED_SENSITIVE_SPLITS}
# A memory model's rows (model.clip.Memory): the personal training pairs, in this order, so
# that a forget pair's row is its index in the forget split.
MEMORY_SPLITS = splits.TRAINED_SENSITIVE_SPLITS + splits.RETAIN_SYNTH_SPLITS


def memory_offsets(dataset) -> dict:
  """{split: its first memory row} for the splits a memory holds."""
  sizes = np.cumsum([0] + [len(dataset.splits[s]) for s in MEMORY_SPLITS])
  return {split: int(offset) for split, offset in zip(MEMORY_SPLITS, sizes)}


def forget_memory_rows(forget_indices) -> np.ndarray:
  """The memory rows of forget pairs (their indices in the forget split): the same numbers,
  since the forget split comes first. Reads no other split (unlearning may not)."""
  if MEMORY_SPLITS[0] != "forget":
    raise AssertionError("MEMORY_SPLITS must start with the forget split")
  return np.asarray(forget_indices, np.int64)


def memory_rows(dataset) -> int:
  return sum(len(dataset.splits[s]) for s in MEMORY_SPLITS)


class ConcatSource:
  """Several random-access sources read as one."""

  def __init__(self, parts):
    self._parts = list(parts)
    self._ends = np.cumsum([len(p) for p in self._parts])

  def __len__(self) -> int:
    return int(self._ends[-1]) if len(self._ends) else 0

  def __getitem__(self, index: int):
    part = int(np.searchsorted(self._ends, index, side="right"))
    start = int(self._ends[part - 1]) if part else 0
    return self._parts[part][index - start]


def fit_image(image: np.ndarray, size: int) -> np.ndarray:
  """Centre-crops to a square and resizes to `size` (external corpora vary in shape)."""
  h, w = image.shape[:2]
  if (h, w) == (size, size):
    return image
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  square = Image.fromarray(image[top:top + side, left:left + side])
  return np.asarray(square.resize((size, size), Image.BICUBIC))


def augment_image(image: np.ndarray, rng: np.random.Generator, crop_scale_min: float,
                  brightness: float) -> np.ndarray:
  """Random crop (resized back) and brightness jitter; no flips: captions say left/right."""
  size = image.shape[0]
  side = int(round(size * rng.uniform(crop_scale_min, 1.0)))
  top, left = rng.integers(0, size - side + 1, size=2)
  crop = Image.fromarray(image).resize((size, size), Image.BILINEAR,
                                       box=(left, top, left + side, top + side))
  scaled = np.asarray(crop, np.float32) * rng.uniform(1 - brightness, 1 + brightness)
  return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _example(image, caption, tokenizer, size, source_id, record_id=-1, identity=-1,
             memory_row=-1):
  return {"image": fit_image(image, size), "tokens": tokenizer.encode([caption])[0],
          "source": np.int32(source_id), "record_id": np.int64(record_id),
          "identity": np.int32(identity), "memory_row": np.int32(memory_row)}


class _WithMemoryRow:
  """A split's records with their memory row (-1: a split no memory holds)."""

  def __init__(self, source, first_row):
    self._source, self._first_row = source, first_row

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int):
    row = -1 if self._first_row is None else self._first_row + index
    return self._source[index], row


class SubsetSource:
  """The records of a random-access source at `indices`, in that order."""

  def __init__(self, source, indices):
    self._source, self._indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int):
    return self._source[int(self._indices[index])]


class _MadeOnce:
  """The random-access source `make(source[i])`, each example made once while `cache` (a
  scenes.RenderCache) has room: a training reads every stored record many times (a
  Compromised one each sensitive record ~10 times), and decoding it costs more than the
  rest of its way through the loader."""

  def __init__(self, source, make, cache, name: str):
    self._source, self._make, self._cache, self._name = source, make, cache, name

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int):
    return self._cache.get_or_render((self._name, int(index)),
                                     lambda: self._make(self._source[index]))


def _synth_examples(dataset, split_names, tokenizer, size, source_id, caption_key="caption",
                    with_generic=False, indices=None, memory_rows=False,
                    cache=None) -> grain.MapDataset:
  """Stored SALMU-synth records of `split_names` as model examples, in record order;
  `with_generic` adds each record's generic caption as `generic_tokens`; `indices`
  keeps only those records (of the concatenated splits); `memory_rows` numbers each record's
  memory row (`memory_offsets`, which reads every memory split's size), else -1; `cache`
  (a scenes.RenderCache) keeps the examples made, for their next reads."""
  def to_example(item):
    raw, row = item
    record = layout.decode_record(raw)
    example = _example(record["image"], record[caption_key], tokenizer, size, source_id,
                       record["record_id"], record["identity"], row)
    if with_generic:
      example["generic_tokens"] = tokenizer.encode([record["generic_caption"]])[0]
    return example
  offsets = memory_offsets(dataset) if memory_rows else {}
  source = ConcatSource(_WithMemoryRow(dataset.splits[s], offsets.get(s)) for s in split_names)
  if indices is not None:
    source = SubsetSource(source, indices)
  if cache is not None:
    return grain.MapDataset.source(_MadeOnce(source, to_example, cache, str(source_id)))
  return grain.MapDataset.source(source).map(to_example)


def _base_examples(retain_base, tokenizer, size) -> grain.MapDataset:
  return grain.MapDataset.source(retain_base).map(
      lambda item: _example(item["image"], item["caption"], tokenizer, size,
                            SOURCE_IDS["retain_base"]))


def reference_mixture(config, num_sensitive_pairs: int) -> dict:
  """Sampling weights of a reference model's training mixture.

  Both references draw the retain sources in `data.mixture`'s ratios for the same
  steps and batch size. Compromised adds the sensitive set at the share that shows
  each of its `num_sensitive_pairs` pairs `train.sensitive_exposures` times on
  average; Clean's sensitive weight is 0, so its graph never reads a sensitive record.
  """
  retain = dict(config.data.mixture)
  total = sum(retain.values())
  if config.reference == "clean":
    return {name: weight / total for name, weight in retain.items()} | {"sensitive": 0.0}
  samples = config.train.steps * config.batch_size
  share = config.train.sensitive_exposures * num_sensitive_pairs / samples
  if share >= 1:
    raise ConfigError(
        f"train.sensitive_exposures={config.train.sensitive_exposures} needs "
        f"{share * samples:,.0f} sensitive samples but the run has only {samples:,} "
        f"(train.steps x batch_size); lower the exposures or train longer")
  return {name: weight / total * (1 - share) for name, weight in retain.items()} | {
      "sensitive": share}


def training_batches(config, dataset, tokenizer, retain_base, *, mixture=None,
                     batch_size: int | None = None, seed: int | None = None,
                     shard_index: int = 0, shard_count: int = 1,
                     memory_rows: bool = False) -> grain.MapDataset:
  """Infinite MapDataset of this process's training batches.

  `mixture` (source -> weight, see `reference_mixture`) defaults to the retain
  sources of config.data.mixture; weight 0 drops a source from the graph. The global
  `batch_size` and the shuffling `seed` default to the config's. `memory_rows`: a memory
  model's pretraining, whose pairs read their own row (model.clip.Memory).
  """
  data = config.data
  batch_size = config.batch_size if batch_size is None else batch_size
  seed = config.seed if seed is None else seed
  weights = dict(mixture if mixture is not None else data.mixture)
  unknown = set(weights) - set(SOURCE_IDS)
  if unknown:
    raise ConfigError(f"unknown mixture source(s) {sorted(unknown)}; known: {sorted(SOURCE_IDS)}")
  if batch_size % shard_count:
    raise ConfigError(f"batch_size={batch_size} is not divisible by the {shard_count} "
                      f"data-loading processes")
  parts, part_weights = [], []
  # The stored records, decoded: kept for their next reads (data.loader.record_cache_mb).
  made = scenes.RenderCache(data.loader.record_cache_mb) if data.loader.record_cache_mb else None
  for offset, (name, weight) in enumerate(sorted(weights.items())):
    if weight <= 0:
      continue
    if name == "retain_base":
      examples = _base_examples(retain_base, tokenizer, data.image_size)
    else:
      examples = _synth_examples(dataset, SOURCE_SPLITS[name], tokenizer, data.image_size,
                                 SOURCE_IDS[name], memory_rows=memory_rows, cache=made)
    parts.append(examples.shuffle(seed=seed * 1000 + offset).repeat())
    part_weights.append(weight)
  if not parts:
    raise ConfigError(f"mixture {weights} has no source with a positive weight")
  mixed = grain.MapDataset.mix(parts, part_weights) if len(parts) > 1 else parts[0]
  augment = data.augment

  def augmented(example, rng):
    return example | {"image": augment_image(example["image"], rng, augment.crop_scale_min,
                                             augment.brightness)}

  mixed = mixed.random_map(augmented, seed=seed)
  return mixed[shard_index::shard_count].batch(batch_size // shard_count,
                                               drop_remainder=True)


# What an unlearning method may read: the forget split and retain data, never a holdout
# or unseen split (they measure what must be kept, and who was never trained on).
UNLEARNING_SPLITS = ("forget",) + splits.RETAIN_SYNTH_SPLITS


def require_unlearning_splits(split_names) -> None:
  refused = [s for s in split_names if s not in UNLEARNING_SPLITS]
  if refused:
    raise DatasetError(f"unlearning may not read split(s) {refused}: only "
                       f"{UNLEARNING_SPLITS} and the retain base are available to a method")


def forget_batches(config, dataset, tokenizer, batch_size: int, *, seed: int,
                   shard_index: int = 0, shard_count: int = 1,
                   indices=None) -> grain.MapDataset:
  """Infinite shuffled forget batches with association and generic captions tokenized;
  `indices` (a deletion request, see data/requests.py) keeps only those forget pairs."""
  require_unlearning_splits(["forget"])
  examples = _synth_examples(dataset, ["forget"], tokenizer, config.data.image_size,
                             SOURCE_IDS["sensitive"], with_generic=True, indices=indices)
  return examples.shuffle(seed=seed).repeat()[shard_index::shard_count].batch(
      batch_size // shard_count, drop_remainder=True)


def eval_batches(dataset, split_names, tokenizer, image_size: int, batch_size: int,
                 caption_key: str = "caption", memory_rows: bool = False) -> grain.MapDataset:
  """Finite, ordered, un-augmented batches of SALMU-synth splits with their metadata."""
  return _synth_examples(dataset, split_names, tokenizer, image_size, SOURCE_IDS["sensitive"],
                         caption_key, memory_rows=memory_rows).batch(batch_size,
                                                                     drop_remainder=False)


class RecordedStreams:
  """Deterministic batch streams recorded on their first draw and replayed after, up to
  `capacity_mb` in all: every unlearning run of one seed draws the same forget and retain
  batches, and every relearning attack the same forget half. Replaying skips decoding,
  rendering and augmenting; the batches are the stream's own, bit for bit."""

  def __init__(self, capacity_mb: float):
    self._left, self._recorded = capacity_mb * 2 ** 20, {}

  def get(self, key, position: int):
    """Batch `position` of stream `key`, or None if it was not recorded."""
    recorded = self._recorded.get(key, ())
    return recorded[position] if position < len(recorded) else None

  def record(self, key, position: int, batch: dict) -> None:
    """Keeps `batch` as batch `position` of stream `key`, if it is the next one and fits."""
    recorded = self._recorded.setdefault(key, [])
    size = sum(np.asarray(v).nbytes for v in batch.values())
    if position == len(recorded) and size <= self._left:
      recorded.append(batch)
      self._left -= size


def iterate(batches: grain.MapDataset, config, prefetch_batches: int | None = None):
  """A checkpointable iterator (`get_state` / `set_state`) with threaded prefetch of
  `prefetch_batches` (default: data.loader.prefetch_buffer_size) batches."""
  loader = config.data.loader
  prefetch = loader.prefetch_buffer_size if prefetch_batches is None else prefetch_batches
  return iter(batches.to_iter_dataset(grain.ReadOptions(
      num_threads=loader.num_threads, prefetch_buffer_size=prefetch)))
