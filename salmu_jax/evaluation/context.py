"""One model's embeddings of the evaluation splits, computed on demand and once."""
import dataclasses

import numpy as np

from salmu_jax import embed
from salmu_jax.errors import NonFiniteModel


@dataclasses.dataclass
class SplitEmbeddings:
  image: np.ndarray  # [N, D]
  caption: np.ndarray  # [N, D]: the split's own caption (association or generic)
  records: list  # per example: record_id, identity, subset, field, style, name, value, ...


class EvalContext:
  """One model's embeddings, computed on demand and once; random draws come from eval.seed."""

  def __init__(self, evaluator, params):
    """`evaluator`: an evaluation.evaluator.Evaluator (its inputs, encoders and fragile set)."""
    self.evaluator, self.params = evaluator, params
    self.config, self.dataset = evaluator.config, evaluator.dataset
    self.fragile_ids = evaluator.fragile_ids
    self._splits, self._generic = {}, {}

  def rng(self, stream: int) -> np.random.Generator:
    return np.random.default_rng([self.config.eval.seed, stream])

  def split(self, name: str) -> SplitEmbeddings:
    if name not in self._splits:
      batches = self.evaluator.inputs.split_batches(name)
      image, caption, _ = embed.embed_batches(self.evaluator.encoders, self.params, batches)
      self._splits[name] = SplitEmbeddings(finite(image, f"{name} images"),
                                           finite(caption, f"{name} captions"),
                                           self.evaluator.inputs.records(name))
    return self._splits[name]

  def generic(self, name: str) -> np.ndarray:
    """Embeddings of each record's generic caption."""
    if name not in self._generic:
      self._generic[name] = self.texts(r["generic_caption"] for r in self.split(name).records)
    return self._generic[name]

  def restricted(self, split: str, rows) -> "EvalContext":
    """This model's context with `split` cut to the examples at `rows` (a deletion
    request's pairs, say); embeddings already computed are shared, not recomputed."""
    ctx = EvalContext(self.evaluator, self.params)
    full = self.split(split)
    ctx._splits = dict(self._splits) | {split: SplitEmbeddings(
        full.image[rows], full.caption[rows], [full.records[i] for i in rows])}
    ctx._generic = {name: emb for name, emb in self._generic.items() if name != split}
    if split in self._generic:
      ctx._generic[split] = self._generic[split][rows]
    return ctx

  def images(self, images: np.ndarray) -> np.ndarray:
    """Embeddings of an array of images [N, H, W, 3] (augmented views, say)."""
    return finite(embed.embed_images(self.evaluator.encoders, self.params, images), "images")

  def texts(self, texts) -> np.ndarray:
    """Embeddings of strings (prompts, names), tokenized once per evaluator."""
    return finite(embed.embed_tokens(self.evaluator.encoders, self.params,
                                     self.evaluator.inputs.text_tokens(texts)), "texts")


def finite(embeddings: np.ndarray, what: str) -> np.ndarray:
  """`embeddings`, or NonFiniteModel: finite parameters can still overflow to NaN or Inf
  embeddings, and a NaN similarity ranks first in every retrieval."""
  if not np.isfinite(embeddings).all():
    rows = int((~np.isfinite(embeddings)).any(axis=-1).sum())
    raise NonFiniteModel(f"the model to score gives non-finite embeddings for {rows} of "
                         f"{len(embeddings)} {what}")
  return embeddings
