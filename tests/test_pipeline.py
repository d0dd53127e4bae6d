"""grain pipelines: shapes, mixture, sharding, resume, and the retain-base adapters."""
import io
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from salmu_jax.data import layout, pipeline, scenes, sources
from salmu_jax.data.tokenizer import load_tokenizer
from salmu_jax.errors import ConfigError


@pytest.fixture(scope="module")
def micro(micro_dataset_dir):
  from salmu_jax import config as config_lib
  from tests.conftest import config_path
  config = config_lib.load_config(config_path("micro"))
  dataset = layout.open_dataset(micro_dataset_dir)
  tokenizer = load_tokenizer(config.tokenizer, micro_dataset_dir)
  return config, dataset, tokenizer, sources.retain_base_source(config.data)


def test_training_batch_shapes_and_dtypes(micro):
  config, dataset, tokenizer, base = micro
  batches = pipeline.training_batches(config, dataset, tokenizer, base)
  batch = batches[0]
  assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert batch["tokens"].shape == (8, 48) and batch["tokens"].dtype == np.int32
  assert batch["source"].dtype == np.int32 and batch["record_id"].dtype == np.int64
  assert (batch["tokens"][:, 0] == tokenizer.sot_id).all()


def test_render_cache_gives_the_same_batches_and_keeps_to_its_capacity(micro):
  """Two trainings of one seed read the same scenes (benchmark.scene_cache_mb): the second
  reads them from the cache, through grain's reader threads, and its batches are the
  uncached ones bit for bit."""
  config, dataset, tokenizer, _ = micro
  plain = pipeline.training_batches(config, dataset, tokenizer, sources.retain_base_source(config.data))
  expected = [plain[i] for i in range(4)]
  scene_mb = 32 * 32 * 3 / 2 ** 20
  cache = scenes.RenderCache(capacity_mb=100 * scene_mb)
  for _ in range(2):  # The first run renders and keeps, the second reads.
    cached = pipeline.training_batches(config, dataset, tokenizer,
                                       sources.retain_base_source(config.data, cache))
    iterator = pipeline.iterate(cached, config)
    for want in expected:
      got = next(iterator)
      for key in want:
        np.testing.assert_array_equal(got[key], want[key])
  # The 4 batches hold some 24 retain-base scenes (the prefetch reads on, so more are drawn).
  assert cache.hits >= 20
  small = scenes.RenderCache(capacity_mb=5 * scene_mb)
  source = scenes.ProceduralScenes(0, 32, 100, cache=small)
  for index in range(8):
    source[index]
  assert list(small._entries) == [(0, "train", i, 32) for i in range(5)]  # The first kept.
  with pytest.raises(ValueError):  # A consumer writing into a kept scene would corrupt it.
    source[4]["image"][0, 0] = 0
  nothing_kept = scenes.RenderCache(capacity_mb=0)
  scenes.ProceduralScenes(0, 32, 100, cache=nothing_kept)[5]
  assert not nothing_kept._entries


def test_a_training_decodes_each_stored_record_once_with_the_same_batches(micro, monkeypatch):
  """A training reads every stored record many times (a Compromised one each sensitive
  record ~10 times): it decodes and tokenizes each once (data.loader.record_cache_mb),
  and its batches are the uncached ones bit for bit."""
  config, dataset, tokenizer, base = micro
  uncached = config.copy_and_resolve_references()
  uncached.data.loader.record_cache_mb = 0
  stored = {name: sum(len(dataset.splits[s]) for s in pipeline.SOURCE_SPLITS[name])
            for name in ("retain_synth", "sensitive")}
  # Compromised's mixture: two stored sources share the cache.
  mixture = {"retain_base": 0.4, "retain_synth": 0.3, "sensitive": 0.3}
  made, make_cache = [], scenes.RenderCache
  monkeypatch.setattr(scenes, "RenderCache", lambda mb: made.append(make_cache(mb)) or made[-1])
  plain = pipeline.training_batches(uncached, dataset, tokenizer, base, mixture=mixture)
  assert not made  # Capacity 0: no cache at all.
  cached = pipeline.iterate(pipeline.training_batches(config, dataset, tokenizer, base,
                                                      mixture=mixture), config)
  for index in range(60):  # ~140 draws of each stored source: every record read again.
    want, got = plain[index], next(cached)  # Through grain's reader threads.
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  (kept,) = made
  by_source = {name: sum(key[0] == str(pipeline.SOURCE_IDS[name]) for key in kept._entries)
               for name in stored}
  assert 0 < by_source["retain_synth"] <= stored["retain_synth"]
  assert 0 < by_source["sensitive"] <= stored["sensitive"] and kept.hits >= 100
  example = next(iter(kept._entries.values()))
  for key in ("image", "tokens"):
    with pytest.raises(ValueError):  # Kept examples are read-only.
      example[key][0] = 0


def test_reference_mixtures(micro):
  config = micro[0].copy_and_resolve_references()
  config.train.steps, config.batch_size, config.train.sensitive_exposures = 100, 8, 2.0
  compromised = pipeline.reference_mixture(config, num_sensitive_pairs=100)
  assert compromised == pytest.approx({"retain_base": 0.75 * 0.75, "retain_synth": 0.25 * 0.75,
                                       "sensitive": 0.25})  # 2 x 100 of 800 samples.
  config.reference = "clean"
  assert pipeline.reference_mixture(config, 100) == pytest.approx(
      {"retain_base": 0.75, "retain_synth": 0.25, "sensitive": 0.0})
  config.reference, config.train.sensitive_exposures = "compromised", 9.0
  with pytest.raises(ConfigError, match="needs 900 sensitive samples but the run has only 800"):
    pipeline.reference_mixture(config, 100)


def test_mixture_weights_and_clean_never_sees_sensitive(micro):
  config, dataset, tokenizer, base = micro
  batches = pipeline.training_batches(
      config, dataset, tokenizer, base,
      mixture={"retain_base": 0.6, "retain_synth": 0.2, "sensitive": 0.2})
  drawn = np.concatenate([batches[i]["source"] for i in range(40)])
  shares = np.bincount(drawn, minlength=3) / drawn.size
  np.testing.assert_allclose(shares, [0.6, 0.2, 0.2], atol=0.07)
  clean = pipeline.training_batches(config, dataset, tokenizer, base)  # Retain sources only.
  for i in range(40):
    batch = clean[i]
    assert (batch["source"] != pipeline.SOURCE_IDS["sensitive"]).all()
  sensitive_ids = {int(dataset.splits[s][i]["record_id"]) for s in ("forget", "holdout_association",
                                                                   "holdout_identity")
                   for i in range(len(dataset.splits[s]))}
  seen = np.concatenate([batches[i]["record_id"] for i in range(40)])
  assert set(seen[np.concatenate([batches[i]["source"] for i in range(40)]) == 2]) <= sensitive_ids


def test_shards_partition_the_global_stream(micro):
  config, dataset, tokenizer, base = micro
  config.batch_size = 8
  mixture = {"retain_base": 0.5, "retain_synth": 0.25, "sensitive": 0.25}
  whole = pipeline.training_batches(config, dataset, tokenizer, base, mixture=mixture)
  halves = [pipeline.training_batches(config, dataset, tokenizer, base, mixture=mixture,
                                      shard_index=i, shard_count=2) for i in range(2)]
  stream = np.concatenate([whole[i]["tokens"] for i in range(2)])
  for i, half in enumerate(halves):
    np.testing.assert_array_equal(half[0]["tokens"], stream[i::2][:4])
  with pytest.raises(ConfigError, match="batch_size=8 is not divisible by the 3"):
    pipeline.training_batches(config, dataset, tokenizer, base, shard_count=3)


def test_the_reader_threads_change_no_batch(micro):
  """data.loader.num_threads is a speed setting (config.RESULT_NEUTRAL): the batches,
  augmentation included, are the same with none, one or two reader threads."""
  config, dataset, tokenizer, base = micro
  config = config.copy_and_resolve_references()
  drawn = []
  for threads in (0, 1, 2):
    config.data.loader.num_threads = threads
    iterator = pipeline.iterate(pipeline.training_batches(config, dataset, tokenizer, base),
                                config)
    drawn.append([next(iterator) for _ in range(6)])
  for batches in drawn[1:]:
    for got, want in zip(batches, drawn[0]):
      for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_resumed_iterator_gives_the_same_next_batch(micro):
  config, dataset, tokenizer, base = micro
  batches = pipeline.training_batches(config, dataset, tokenizer, base)
  iterator = pipeline.iterate(batches, config)
  for _ in range(3):
    next(iterator)
  state = iterator.get_state()
  expected = next(iterator)
  resumed = pipeline.iterate(pipeline.training_batches(config, dataset, tokenizer, base), config)
  resumed.set_state(state)
  got = next(resumed)
  for key in expected:
    np.testing.assert_array_equal(got[key], expected[key])


def test_eval_batches_are_ordered_and_unaugmented(micro):
  config, dataset, tokenizer, _ = micro
  batches = pipeline.eval_batches(dataset, ["forget"], tokenizer, 32, batch_size=16)
  assert len(batches) == 4
  first = batches[0]
  np.testing.assert_array_equal(first["image"][0], dataset.decoded("forget", 0)["image"])
  assert first["record_id"].tolist() == list(range(16))


def test_augmentation_keeps_shape_and_varies():
  image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
  a = pipeline.augment_image(image, np.random.default_rng(1), 0.8, 0.1)
  b = pipeline.augment_image(image, np.random.default_rng(2), 0.8, 0.1)
  assert a.shape == image.shape and a.dtype == np.uint8 and not np.array_equal(a, b)


def _jpeg(value, shape=(40, 50, 3)):
  buffer = io.BytesIO()
  Image.fromarray(np.full(shape, value, np.uint8)).save(buffer, format="JPEG")
  return buffer.getvalue()


def test_webdataset_shards_as_retain_base(micro, tmp_path):
  config, dataset, tokenizer, _ = micro
  for shard in range(2):
    with tarfile.open(tmp_path / f"shard-{shard:05d}.tar", "w") as tar:
      for i in range(3):
        for name, data in ((f"s{shard}/{i:04d}.jpg", _jpeg(40 * i)),
                           (f"s{shard}/{i:04d}.txt", f"caption {shard} {i}".encode())):
          info = tarfile.TarInfo(name)
          info.size = len(data)
          tar.addfile(info, io.BytesIO(data))
  config.data.retain_base.kind, config.data.retain_base.path = "webdataset", str(tmp_path)
  source = sources.retain_base_source(config.data)
  assert len(source) == 6
  item = source[4]
  assert item["caption"] == "caption 1 1" and item["image"].shape == (40, 50, 3)
  batch = pipeline.training_batches(config, dataset, tokenizer, source,
                                    mixture={"retain_base": 1.0})[0]
  assert batch["image"].shape == (8, 32, 32, 3)  # Centre-cropped and resized.
  config.data.retain_base.path = str(tmp_path / "missing")
  with pytest.raises(ConfigError, match="holds no .tar shards"):
    sources.retain_base_source(config.data)


class LocalCaptions(tfds.core.GeneratorBasedBuilder):
  """A local image-caption tfds dataset, images as encoded bytes (no TensorFlow)."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "jpeg": tfds.features.Tensor(shape=(), dtype=np.object_), "text": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(4):
      yield i, {"jpeg": _jpeg(50 * i), "text": f"picture {i}"}


def test_tfds_dataset_as_retain_base(micro, tmp_path):
  config = micro[0]
  LocalCaptions(data_dir=str(tmp_path), file_format="array_record").download_and_prepare(
      download_dir=str(tmp_path / "dl"))
  base = config.data.retain_base
  base.kind, base.name, base.data_dir = "tfds", "local_captions", str(tmp_path)
  base.image_key, base.text_key = "jpeg", "text"
  source = sources.retain_base_source(config.data)
  assert len(source) == 4 and sorted(source[i]["caption"] for i in range(4))[0] == "picture 0"
  assert source[0]["image"].dtype == np.uint8
  base.text_key = "caption"
  with pytest.raises(ConfigError, match="has no feature 'caption'"):
    sources.retain_base_source(config.data)
  base.name = "no_such_dataset"
  with pytest.raises(ConfigError, match="cannot open tfds dataset 'no_such_dataset'"):
    sources.retain_base_source(config.data)
