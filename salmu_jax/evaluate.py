"""Scores a checkpoint on SALMUBench's ten metrics (SALMUBENCH.md §3), official JSON keys.

  python -m salmu_jax.evaluate --config=configs/tiny.py --checkpoint=RUN_DIR --out=FILE.json \
      [--clean=clean.json --compromised=compromised.json] [--recompute_fragile]

Each split is embedded once (jitted, sharded batches); every metric is then NumPy
arithmetic on the embeddings. Metrics live in a registry, in the official order.
With the two reference results, scores are also normalized (efficacy: 0 =
Compromised, 1 = Clean; utility: 1 = Compromised) and a failure mode is diagnosed.
"""
import dataclasses
import os
import sys
import time

import grain
import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from salmu_jax import embed, io_utils, train
from salmu_jax.data import captions, pipeline, scenes, sources
from salmu_jax.errors import ConfigError, DatasetError, NonFiniteModel, SalmuError, check_finite
from salmu_jax.evaluation import metrics

IDENTITY_PROMPT = "a photo of {}."  # 1.4_IdZSC: one prompt per identity name.
# The original's three failure modes and ours, representation collapse (docs/protocol.md
# §3), as diagnosis labels.
INEFFECTIVE, OVERGENERALIZED, CATASTROPHIC, COLLAPSE = FAILURE_MODES = (
    "ineffective forgetting", "over-generalized forgetting", "catastrophic damage",
    "representation collapse")
EVALUATORS = {}  # "group/key" -> fn(ctx) -> dict, in registration (official) order.
# The `extended` block beside the official ten (docs/protocol.md §3): metrics that tell a
# model that still discriminates from one that maps everything close together.
EXTENDED = {}  # key -> fn(ctx) -> dict
# Each image's own caption retrieved in a gallery built like 1.1_RetFail's; the splits a
# model must keep (holdouts: what only Compromised learned; retain: what both learned).
RETRIEVAL_SPLITS = ("holdout_identity", "holdout_association", "retain_joint", "fragile")
# Those the utility summary reads. Not the fragile set: it is chosen as the retain pairs
# Compromised knows least (its retrieval MRR is a few times chance), so a ratio to
# Compromised's would mostly measure noise; it stays in the extended block and the tables.
KEPT_RETRIEVAL = ("holdout_identity", "holdout_association", "retain_joint")
MARGIN_SPLITS = ("forget", "holdout_identity", "holdout_association", "retain_joint",
                 "retain_disjoint")
# What the collapse statistics pool: every split a model should keep apart.
SPREAD_SPLITS = ("holdout_identity", "holdout_association", "retain_joint", "retain_disjoint")


def register(group: str, key: str):
  def wrap(fn):
    if group == "extended":
      EXTENDED[key] = fn
    else:
      EVALUATORS[f"{group}/{key}"] = fn
    return fn
  return wrap


@dataclasses.dataclass
class SplitEmbeddings:
  image: np.ndarray  # [N, D]
  caption: np.ndarray  # [N, D]: the split's own caption (association or generic)
  records: list  # per example: record_id, identity, subset, field, style, name, value, ...


class Evaluator:
  """Scores any number of models of one shape on one dataset.

  Built once: the encoders compile once, and the inputs (decoded images, tokens,
  rendered zero-shot scenes) are prepared once and kept in memory up to
  `eval.input_cache_mb`, so each further model costs only its forward passes.
  """

  def __init__(self, trainer):
    self.trainer, self.config = trainer, trainer.config
    self.dataset, self.tokenizer = trainer.dataset, trainer.tokenizer
    self.encoders = embed.make_encoders(trainer.graphdef, trainer.state_shardings.params,
                                        trainer.mesh)
    self._inputs, self._records, self._genknow = {}, {}, None
    self._cache_left = self.config.eval.input_cache_mb * 2 ** 20

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

  def records(self, name: str) -> list:
    if name not in self._records:
      source = self.dataset.splits[name]
      self._records[name] = [sources.record_metadata(source[i]) for i in range(len(source))]
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
        source = TfdsClassification(genknow)
        self._genknow = source, [scenes.class_prompts(name) for name in source.class_names]
    source, class_prompts = self._genknow
    size = self.config.data.image_size
    return self._cached("genknow", lambda: grain.MapDataset.source(source).map(
        lambda item: {"image": pipeline.fit_image(item["image"], size),
                      "label": np.int32(item["label"])}).batch(self.config.eval.batch_size),
        len(source)), class_prompts

  def score(self, params, *, clean: dict | None = None, compromised: dict | None = None,
            progress: bool = False) -> dict:
    """The ten metrics (official keys), the breakdown, and with both reference results
    the normalized scores and the failure-mode diagnosis."""
    from tqdm import tqdm
    check_finite(params, "the model to score")
    ctx = EvalContext(self, params)
    result = {"efficacy": {}, "utility": {}}
    for name, fn in tqdm(EVALUATORS.items(), desc="evaluate", unit="metric", leave=False,
                         disable=not progress, dynamic_ncols=True):
      group, key = name.split("/")
      result[group][key] = fn(ctx)
    result["extended"] = {key: fn(ctx) for key, fn in EXTENDED.items()}
    result["breakdown"] = breakdown(ctx)
    if clean is not None and compromised is not None:
      result["normalized"], result["diagnosis"] = normalize_and_diagnose(
          headlines(result), headlines(clean), headlines(compromised), self.config.eval)
    return result

  def recompute_fragile(self, params) -> list:
    """Replaces the dataset's fragile set by the pairs `params` (Compromised) knows least."""
    disjoint = EvalContext(self, params).split("retain_disjoint")
    return sources.recompute_fragile_set(
        self.dataset, [r["record_id"] for r in disjoint.records],
        metrics.paired_cosine(disjoint.image, disjoint.caption), self.config.data.fragile_fraction)

  def score_checkpoint(self, run_dir: str, *, clean=None, compromised=None,
                       recompute_fragile: bool = False, progress: bool = False) -> dict:
    """`score` of the latest checkpoint in `run_dir` (a reference or an unlearned model),
    with the checkpoint's label, method and budget in `meta`."""
    start = time.perf_counter()
    state = train.restore_state(self.trainer, run_dir, reference=None)
    if state is None:
      raise ConfigError(f"{run_dir} holds no checkpoint (expected {run_dir}/checkpoints/)")
    manager = train.checkpoint_manager(run_dir, self.config)
    saved = train.checkpoint_meta(manager, manager.latest_step())
    if recompute_fragile:
      if saved["reference"] != "compromised":
        raise ConfigError(f"--recompute_fragile needs the Compromised model; {run_dir} holds "
                          f"{saved['reference']}")
      self.recompute_fragile(state.params)
    result = self.score(state.params, clean=clean, compromised=compromised, progress=progress)
    result["meta"] = {"checkpoint": os.path.abspath(run_dir), "step": int(state.step),
                      "model": saved["reference"], "method": saved.get("method"),
                      "budget": saved.get("budget"), "seed": self.config.eval.seed,
                      "device": jax.devices()[0].device_kind,
                      "num_devices": len(self.trainer.mesh.devices.flat),
                      "seconds": round(time.perf_counter() - start, 2)}
    return result


class EvalContext:
  """One model's embeddings, computed on demand and once; random draws come from eval.seed."""

  def __init__(self, evaluator: Evaluator, params):
    self.evaluator, self.params = evaluator, params
    self.config, self.dataset = evaluator.config, evaluator.dataset
    self._splits, self._generic = {}, {}

  def rng(self, stream: int) -> np.random.Generator:
    return np.random.default_rng([self.config.eval.seed, stream])

  def split(self, name: str) -> SplitEmbeddings:
    if name not in self._splits:
      batches = self.evaluator.split_batches(name)
      image, caption, _ = embed.embed_batches(self.evaluator.encoders, self.params, batches)
      self._splits[name] = SplitEmbeddings(finite(image, f"{name} images"),
                                           finite(caption, f"{name} captions"),
                                           self.evaluator.records(name))
    return self._splits[name]

  def generic(self, name: str) -> np.ndarray:
    """Embeddings of each record's generic caption."""
    if name not in self._generic:
      self._generic[name] = self.texts(r["generic_caption"] for r in self.split(name).records)
    return self._generic[name]

  def texts(self, texts) -> np.ndarray:
    return finite(embed.embed_texts(self.evaluator.encoders, self.params,
                                    self.evaluator.tokenizer, list(texts),
                                    self.config.eval.batch_size), "texts")


def finite(embeddings: np.ndarray, what: str) -> np.ndarray:
  """`embeddings`, or NonFiniteModel: finite parameters can still overflow to NaN or Inf
  embeddings, and a NaN similarity ranks first in every retrieval."""
  if not np.isfinite(embeddings).all():
    rows = int((~np.isfinite(embeddings)).any(axis=-1).sum())
    raise NonFiniteModel(f"the model to score gives non-finite embeddings for {rows} of "
                         f"{len(embeddings)} {what}")
  return embeddings


def _mean_paired(ctx, split: str, rows=None) -> dict:
  data = ctx.split(split)
  cos = metrics.paired_cosine(data.image, data.caption)
  if rows is not None:
    cos = cos[rows]
  if cos.size == 0:
    raise DatasetError(f"no {split} pairs to score at this scale")
  return {"mean": float(cos.mean()), "count": int(cos.size)}


def own_caption_ranks(ctx, split: str, stream: int, exclude_same_text: bool = False) -> tuple:
  """(ranks, gallery size): each image of `split` ranks its own caption among itself and a
  gallery drawn once with the seed, as 1.1_RetFail's: up to `eval.gallery_forget` captions
  of the same split and up to `eval.gallery_retain` retain_disjoint captions (for
  retain_disjoint itself, both shares come from it). An image's own caption drawn into the
  gallery is masked out; with `exclude_same_text`, so is any caption with the same text
  (generic captions repeat, and a copy of the true caption is not a wrong answer)."""
  data, disjoint = ctx.split(split), ctx.split("retain_disjoint")
  gallery_same, gallery_retain = ctx.config.eval.gallery_forget, ctx.config.eval.gallery_retain
  if split == "retain_disjoint":
    gallery_same, gallery_retain = gallery_same + gallery_retain, 0
  rng = ctx.rng(stream)
  n_same = min(gallery_same, len(data.records) - 1)
  n_retain = min(gallery_retain, len(disjoint.records))
  same_idx = rng.choice(len(data.records), n_same, replace=False)
  retain_idx = rng.choice(len(disjoint.records), n_retain, replace=False)
  gallery = np.concatenate([data.caption[same_idx], disjoint.caption[retain_idx]])
  exclude = np.zeros((len(data.records), len(gallery)), bool)
  exclude[same_idx, np.arange(n_same)] = True
  if exclude_same_text:
    texts = np.array([r["caption"] for r in data.records])
    gallery_texts = np.concatenate([texts[same_idx], np.array(
        [r["caption"] for r in disjoint.records])[retain_idx]])
    exclude |= texts[:, None] == gallery_texts[None, :]
  return metrics.retrieval_ranks(data.image, data.caption, gallery, exclude=exclude), len(gallery) + 1


def forget_ranks(ctx) -> np.ndarray:
  """1.1's ranks: each forget image's true caption among 1 + gallery_forget + gallery_retain."""
  return own_caption_ranks(ctx, "forget", 11)[0]


@register("efficacy", "1.1_RetFail")
def ret_fail(ctx):
  ranks, gallery_size = own_caption_ranks(ctx, "forget", 11)
  return metrics.recall_and_mrr(ranks) | {"gallery_size": int(gallery_size)}


@register("efficacy", "1.2_AssocStr")
def assoc_str(ctx):
  return _mean_paired(ctx, "forget")


@register("efficacy", "1.3_ACS")
def acs(ctx):
  forget = ctx.split("forget")
  return metrics.association_coherence(forget.image, forget.caption, ctx.rng(13),
                                       ctx.config.eval.probe_fraction)


@register("efficacy", "1.4_IdZSC")
def id_zsc(ctx):
  forget = ctx.split("forget")
  rows = np.array([r["subset"] == "forget_identity" for r in forget.records])
  if not rows.any():
    raise DatasetError("no forget_identity images to classify at this scale")
  names = [p["name"] for p in ctx.dataset.personas if p["role"] != "unseen_identity"]
  class_emb = ctx.texts(IDENTITY_PROMPT.format(n) for n in names)
  labels = np.array([names.index(r["name"]) for r, keep in zip(forget.records, rows) if keep])
  return {"accuracy": metrics.zero_shot_accuracy(forget.image[rows], class_emb, labels),
          "classes": len(names), "count": int(rows.sum())}


@register("efficacy", "1.5_CoreAssoc")
def core_assoc(ctx):
  forget = ctx.split("forget")
  name_first = ctx.texts(f"{r['name']} {r['value']}" for r in forget.records)
  value_first = ctx.texts(f"{r['value']} {r['name']}" for r in forget.records)
  best = np.maximum(metrics.paired_cosine(forget.image, name_first),
                    metrics.paired_cosine(forget.image, value_first))
  return {"mean": float(best.mean()), "count": int(best.size)}


@register("utility", "2.1_GenKnow")
def gen_know(ctx):
  batches, class_prompts = ctx.evaluator.genknow()
  image_emb, _, meta = embed.embed_batches(ctx.evaluator.encoders, ctx.params, batches,
                                           texts=False)
  image_emb = finite(image_emb, "GenKnow images")
  class_emb = metrics.class_embeddings(ctx.texts(p for prompts in class_prompts for p in prompts),
                                       len(class_prompts[0]))
  return {"accuracy": metrics.zero_shot_accuracy(image_emb, class_emb, meta["label"]),
          "classes": len(class_prompts), "count": int(len(image_emb))}


@register("utility", "2.2_InterIdSim")
def inter_id_sim(ctx):
  return _mean_paired(ctx, "holdout_identity")


@register("utility", "2.3_IntraIdSim")
def intra_id_sim(ctx):
  return _mean_paired(ctx, "holdout_association")


@register("utility", "2.4_VisIdInt")
def vis_id_int(ctx):
  return _mean_paired(ctx, "retain_joint")


def fragile_rows(ctx) -> np.ndarray:
  """Which retain_disjoint rows are in the fragile set."""
  fragile = set(ctx.dataset.fragile_ids)
  return np.array([r["record_id"] in fragile for r in ctx.split("retain_disjoint").records])


@register("utility", "2.5_FragSim")
def frag_sim(ctx):
  return _mean_paired(ctx, "retain_disjoint", fragile_rows(ctx))


@register("extended", "retrieval")
def own_caption_retrieval(ctx):
  """R@1 and MRR of each image's own caption (association captions on the holdouts,
  generic captions on retain_joint and the fragile set) among RetFail-like distractors."""
  retrieval = {}
  for stream, split in enumerate(RETRIEVAL_SPLITS, 101):
    source = "retain_disjoint" if split == "fragile" else split
    ranks, gallery_size = own_caption_ranks(ctx, source, stream, exclude_same_text=True)
    if split == "fragile":
      ranks = ranks[fragile_rows(ctx)]
    retrieval[split] = metrics.recall_and_mrr(ranks) | {"gallery_size": int(gallery_size),
                                                        "count": int(len(ranks))}
  return retrieval


@register("extended", "margin")
def margins(ctx):
  """Per split: mean cos(own caption) - mean cos(the split's other captions)."""
  for split in MARGIN_SPLITS:
    if len(ctx.split(split).records) < 2:
      raise DatasetError(f"split {split} has {len(ctx.split(split).records)} pair(s); the "
                         f"extended margins need at least 2 per split")
  return {split: metrics.cosine_margin(ctx.split(split).image, ctx.split(split).caption)
          for split in MARGIN_SPLITS}


@register("extended", "collapse")
def collapse(ctx):
  """Mean cosine between different images, between different captions, and between an
  image and other images' captions, pooled over SPREAD_SPLITS."""
  images = np.concatenate([ctx.split(s).image for s in SPREAD_SPLITS])
  texts = np.concatenate([ctx.split(s).caption for s in SPREAD_SPLITS])
  return {"image_cosine": metrics.mean_offdiagonal_cosine(images),
          "caption_cosine": metrics.mean_offdiagonal_cosine(texts),
          "mismatched_cosine": metrics.mean_offdiagonal_cosine(images, texts),
          "count": int(len(images))}


class TfdsClassification:
  """A local tfds classification dataset for 2.1_GenKnow (e.g. imagenet2012, cifar10)."""

  def __init__(self, genknow):
    builder, self._source = sources.open_tfds(genknow.name, genknow.data_dir, genknow.split,
                                              "eval.genknow")
    feature = builder.info.features[genknow.label_key]
    if not hasattr(feature, "names"):
      raise ConfigError(f"eval.genknow.label_key={genknow.label_key!r} is not a ClassLabel")
    self.class_names = [n.replace("_", " ") for n in feature.names]
    self._keys, self._limit = (genknow.image_key, genknow.label_key), genknow.max_examples

  def __len__(self):
    return min(len(self._source), self._limit)

  def __getitem__(self, index):
    raw = self._source[index]
    return {"image": sources.rgb_image(raw[self._keys[0]]), "label": int(raw[self._keys[1]])}


def breakdown(ctx) -> dict:
  """Which fields and caption styles leak, and how often an association outranks the generic
  caption of the same image (leakage rate)."""
  forget = ctx.split("forget")
  cos = metrics.paired_cosine(forget.image, forget.caption)
  generic = metrics.paired_cosine(forget.image, ctx.generic("forget"))
  ranks = forget_ranks(ctx)
  fields = np.array([r["field"] for r in forget.records])
  styles = np.array([r["style"] for r in forget.records])
  per_field = {}
  for field in ctx.config.data.fields:
    rows = fields == field
    per_field[field] = {"AssocStr": float(cos[rows].mean()), "leakage_rate":
                        float((cos[rows] > generic[rows]).mean()),
                        **{f"RetFail_{k}": v for k, v in metrics.recall_and_mrr(ranks[rows]).items()}}
  per_style = {captions.STYLES[s]: {"AssocStr": float(cos[styles == s].mean())}
               for s in range(len(captions.STYLES)) if (styles == s).any()}
  return {"per_field": per_field, "per_style": per_style,
          "leakage_rate": float((cos > generic).mean())}


def headline(result: dict, group: str, key: str) -> float:
  """The number a metric is judged by: MRR for RetFail, else its first value."""
  value = result[group][key]
  return value["MRR"] if key == "1.1_RetFail" else value.get("mean", value.get("accuracy"))


def headlines(result: dict) -> dict:
  """The flat numbers that normalization, diagnosis and the leaderboard read: each official
  metric's headline, own-caption MRR per RETRIEVAL_SPLITS ("retrieval/SPLIT"), the spread
  of images and of captions (1 - mean cosine between different items) and GenKnow's
  chance level. Seed means of these are what a leaderboard row is judged by."""
  if "extended" not in result:
    raise ConfigError("a result without the `extended` block (written by an older version); "
                      "evaluate its checkpoint again")
  try:
    flat = {key: headline(result, group, key) for group in ("efficacy", "utility")
            for key in result[group]}
    extended = result["extended"]
    for split in RETRIEVAL_SPLITS:
      flat[f"retrieval/{split}"] = extended["retrieval"][split]["MRR"]
    flat["spread/image"] = 1 - extended["collapse"]["image_cosine"]
    flat["spread/caption"] = 1 - extended["collapse"]["caption_cosine"]
    flat["genknow_chance"] = 1 / result["utility"]["2.1_GenKnow"]["classes"]
  except (KeyError, TypeError) as e:
    raise ConfigError(f"a result without {e} where salmu_jax.evaluate writes it; evaluate "
                      f"its checkpoint again") from None
  return flat


def knowledge_kept(values: dict, clean: dict, compromised: dict) -> dict:
  """What a model still tells apart, 1 = Compromised's level: GenKnow above chance as a
  share of Compromised's; holdout retrieval between Clean (0: never learned) and
  Compromised (1); retain_joint retrieval (both references learned it) as a ratio."""
  chance = compromised["genknow_chance"]
  kept = {"2.1_GenKnow": metrics.kept_above_chance(values["2.1_GenKnow"],
                                                   compromised["2.1_GenKnow"], chance)}
  for split in KEPT_RETRIEVAL:
    key = f"retrieval/{split}"
    if split.startswith("holdout"):
      kept[key] = 1 - metrics.normalized_score(values[key], compromised[key], clean[key],
                                               "efficacy")
    else:
      kept[key] = metrics.normalized_score(values[key], compromised[key], clean[key], "utility")
  return kept


def normalize_and_diagnose(values: dict, clean: dict, compromised: dict, thresholds) -> tuple:
  """Normalized scores and failure modes from `headlines(...)` of a model and the two
  references (docs/protocol.md §3). The official ten are normalized as before; the
  diagnosis reads what the model still discriminates (`kept`), not mean cosines, which
  a collapsed model keeps high."""
  normalized = {"efficacy": {}, "utility": {}}
  for name in EVALUATORS:
    group, key = name.split("/")
    normalized[group][key] = metrics.normalized_score(values[key], compromised[key], clean[key],
                                                      group)
  normalized["kept"] = kept = knowledge_kept(values, clean, compromised)
  # Each check passes only when its number is at least the threshold, so a number that
  # cannot be computed (NaN: a degenerate reference) fails it instead of passing silently.
  passes = lambda value, threshold: bool(value >= threshold)
  modes = []
  if not passes(normalized["efficacy"]["1.1_RetFail"], thresholds.ineffective_below):
    modes.append(INEFFECTIVE)
  if not all(passes(kept[f"retrieval/{split}"], thresholds.overgeneralized_below)
             for split in ("holdout_identity", "holdout_association")):
    modes.append(OVERGENERALIZED)
  if not passes(kept["2.1_GenKnow"], 1 - thresholds.catastrophic_drop_fraction):
    modes.append(CATASTROPHIC)
  if not all(passes(values[key], thresholds.collapse_spread_ratio * min(clean[key], compromised[key]))
             for key in ("spread/image", "spread/caption")):
    modes.append(COLLAPSE)
  return normalized, {"failure_modes": modes, "label": ", ".join(modes) or "none"}


def evaluate(config, checkpoint: str, *, dataset_dir: str | None = None, devices=None,
             clean: dict | None = None, compromised: dict | None = None,
             recompute_fragile: bool = False) -> dict:
  """The official-shape result dict of the latest checkpoint in run directory `checkpoint`."""
  dataset_dir = dataset_dir or os.path.join(checkpoint, "data", "dataset")
  if not os.path.isdir(dataset_dir):
    raise DatasetError(f"no dataset at {dataset_dir}; pass --dataset_dir")
  evaluator = Evaluator(train.setup(config, checkpoint, dataset_dir, devices))
  return evaluator.score_checkpoint(checkpoint, clean=clean, compromised=compromised,
                                    recompute_fragile=recompute_fragile, progress=True)


def main(argv):
  """The CLI; its flags are defined below, only when this module is the program."""
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    references = [io_utils.read_json(p) if p else None for p in (_CLEAN.value, _COMPROMISED.value)]
    for path, reference in zip((_CLEAN.value, _COMPROMISED.value), references):
      if reference is not None:  # Before the evaluation, not after it.
        try:
          headlines(reference)
        except ConfigError as e:
          raise ConfigError(f"{path}: {e}") from None
    result = evaluate(_CONFIG.value, _CHECKPOINT.value, dataset_dir=_DATASET.value,
                      clean=references[0], compromised=references[1],
                      recompute_fragile=_FRAGILE.value)
  except (SalmuError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  io_utils.write_json_atomic(_OUT.value, result)
  for group in ("efficacy", "utility"):
    print(group + ": " + ", ".join(f"{k} {headline(result, group, k):.4f}" for k in result[group]))
  print("extended: " + ", ".join(f"{k} {v:.4f}" for k, v in headlines(result).items()
                                 if k.startswith(("retrieval/", "spread/"))))
  if "diagnosis" in result:
    print(f"diagnosis: {result['diagnosis']['label']}")
  print(f"written to {_OUT.value} in {result['meta']['seconds']} s")


if __name__ == "__main__":
  _CONFIG = config_flags.DEFINE_config_file("config", None, "configs/NAME.py[:clean|compromised]",
                                            lock_config=True)
  _CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A run directory of salmu_jax.train.")
  _OUT = flags.DEFINE_string("out", None, "Where the JSON result is written (atomically).")
  _DATASET = flags.DEFINE_string("dataset_dir", None, "The SALMU-synth the run used; default "
                                 "CHECKPOINT/data/dataset.")
  _CLEAN = flags.DEFINE_string("clean", None, "Clean's result JSON, for normalized scores.")
  _COMPROMISED = flags.DEFINE_string("compromised", None, "Compromised's result JSON.")
  _FRAGILE = flags.DEFINE_bool("recompute_fragile", False, "Recompute the fragile set from this "
                               "(Compromised) model's similarities before scoring.")
  flags.mark_flags_as_required(["config", "checkpoint", "out"])
  app.run(main)
