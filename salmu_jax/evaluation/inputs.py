"""The evaluation inputs (decoded images, tokens, rendered GenKnow scenes), prepared once.

Kept in memory up to `eval.input_cache_mb` (and the relearning attack's batches up to as
much again), so that scoring many models (the benchmark) decodes and renders them once;
what does not fit is streamed again for every model.
"""
import grain
import numpy as np

from salmu_jax import embed
from salmu_jax.data import layout, pipeline, scenes, sources
from salmu_jax.errors import DatasetError


class EvalInputs:
  """Batches of the splits and of the GenKnow task of one dataset, for any model."""

  def __init__(self, config, dataset: layout.SalmuDataset, tokenizer):
    self.config, self.dataset, self.tokenizer = config, dataset, tokenizer
    self._inputs, self._records, self._genknow, self._tokens = {}, {}, None, {}
    self._cache_left = config.eval.input_cache_mb * 2 ** 20
    # The relearning attack's batches, the same for every model: drawn once.
    self.streams = pipeline.RecordedStreams(config.eval.input_cache_mb)

  def serves(self, config, dataset, tokenizer) -> bool:
    """Are these the inputs an evaluator of `config` on `dataset` would prepare?"""
    return (dataset is self.dataset and tokenizer is self.tokenizer and
            config.data.to_dict() == self.config.data.to_dict() and
            config.eval.to_dict() == self.config.eval.to_dict())

  def _cached(self, key, make, count: int):
    """`make()`'s batches, kept as a list when `count` images of this size still fit."""
    if key in self._inputs:
      return self._inputs[key]
    batches, size = make(), count * self.config.data.image_size ** 2 * 3
    if size <= self._cache_left:
      batches, self._cache_left = list(batches), self._cache_left - size
      self._inputs[key] = batches
    return batches

  def split_batches(self, name: str):
    source = self.dataset.splits[name]
    if len(source) == 0:
      raise DatasetError(f"split {name} is empty at this scale; raise the config's sizes")
    return self._cached(name, lambda: pipeline.eval_batches(
        self.dataset, [name], self.tokenizer, self.config.data.image_size,
        self.config.eval.batch_size), len(source))

  def text_tokens(self, texts) -> tuple:
    """Token batches (embed.token_batches) of a sequence of strings; the metrics ask every
    model for the same prompts and names, so each sequence is tokenized once (kept
    whole: tokens are small, and the lists are the dataset's and the requests')."""
    texts = tuple(texts)
    if texts not in self._tokens:
      batches = tuple(np.ascontiguousarray(tokens) for tokens in embed.token_batches(
          self.tokenizer, list(texts), self.config.eval.batch_size))
      for tokens in batches:
        tokens.flags.writeable = False  # Shared by every model's scoring.
      self._tokens[texts] = batches
    return self._tokens[texts]

  def records(self, name: str) -> list:
    if name not in self._records:
      source = self.dataset.splits[name]
      self._records[name] = [layout.record_metadata(source[i]) for i in range(len(source))]
    return self._records[name]

  def genknow(self) -> tuple:
    """(batches of images and labels, each class's prompt ensemble) of the 2.1_GenKnow
    task; its source (a tfds dataset, possibly) is opened once per evaluator."""
    if self._genknow is None:
      genknow = self.config.eval.genknow
      if genknow.kind == "procedural":
        self._genknow = sources.zeroshot_source(self.config.data), [
            scenes.zeroshot_prompts(c) for c in range(len(scenes.CLASSES))]
      else:
        source = sources.TfdsClassification(genknow)
        self._genknow = source, [scenes.class_prompts(name) for name in source.class_names]
    source, class_prompts = self._genknow
    size = self.config.data.image_size
    return self._cached("genknow", lambda: grain.MapDataset.source(source).map(
        lambda item: {"image": pipeline.fit_image(item["image"], size),
                      "label": np.int32(item["label"])}).batch(self.config.eval.batch_size),
        len(source)), class_prompts
