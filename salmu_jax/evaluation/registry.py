"""The metric registry: the ten official metrics (official JSON keys, in order), the
`extended` block and the breakdown, each a function of an EvalContext (context.py)
doing NumPy arithmetic (metrics.py) on the model's embeddings."""
import numpy as np

from salmu_jax import embed
from salmu_jax.data import captions
from salmu_jax.errors import DatasetError
from salmu_jax.evaluation import diagnosis, metrics, privacy
from salmu_jax.evaluation.context import finite
from salmu_jax.evaluation.diagnosis import RETRIEVAL_SPLITS

IDENTITY_PROMPT = "a photo of {}."  # 1.4_IdZSC: one prompt per identity name.
EVALUATORS = {}  # "group/key" -> fn(ctx) -> dict, in registration (official) order.
# The `extended` block beside the official ten (docs/protocol.md §3): metrics that tell a
# model that still discriminates from one that maps everything close together.
EXTENDED = {}  # key -> fn(ctx) -> dict
# Membership inference (privacy.py; docs/protocol.md §3): attack -> fn(ctx) -> member and
# non-member scores. Needs the unseen_identity split.
PRIVACY = {}
MARGIN_SPLITS = ("forget", "holdout_identity", "holdout_association", "retain_joint",
                 "retain_disjoint")
# What the collapse statistics pool: every split a model should keep apart.
SPREAD_SPLITS = ("holdout_identity", "holdout_association", "retain_joint", "retain_disjoint")


def register(group: str, key: str):
  def wrap(fn):
    if group in ("extended", "privacy"):
      (EXTENDED if group == "extended" else PRIVACY)[key] = fn
    else:
      expected = diagnosis.official_metrics()[len(EVALUATORS)]
      if (group, key) != expected:
        raise ValueError(f"official metrics register in order: {group}/{key} before {expected}")
      EVALUATORS[f"{group}/{key}"] = fn
    return fn
  return wrap


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
  batches, class_prompts = ctx.evaluator.inputs.genknow()
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
  fragile = set(ctx.fragile_ids)
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


@register("privacy", "pair")
def pair_attack(ctx):
  return privacy.pair_scores(ctx)


@register("privacy", "pair_augmented")
def augmented_pair_attack(ctx):
  return privacy.augmented_pair_scores(ctx)


@register("privacy", "identity")
def identity_attack(ctx):
  return privacy.identity_scores(ctx, [IDENTITY_PROMPT.format(p["name"])
                                       for p in ctx.dataset.personas])


def privacy_block(ctx, attacks=None) -> dict:
  """{attack: privacy.summary} of the PRIVACY attacks (all, or those named), or
  {"unavailable": why} for a dataset without non-members (the released SALMUBench data)."""
  if not privacy.has_nonmembers(ctx.dataset):
    return {"unavailable": f"no {privacy.NONMEMBER_SPLIT} split in this dataset: membership "
                           f"inference needs personas no model saw"}
  return {name: privacy.summary(fn(ctx)) for name, fn in PRIVACY.items()
          if attacks is None or name in attacks} | {"records_sha256": privacy.records_digest(ctx)}


def requested_digest(records: list, requested) -> str:
  """privacy.digest of the record ids of the requested forget pairs: results of one request."""
  return privacy.digest(str(records[i]["record_id"]) for i in np.unique(np.asarray(requested, int)))


# ACS splits a side's pairs into two halves of at least two (metrics.grouped_probe_split).
MIN_REQUEST_SIDE = 4


def request_block(ctx, requested) -> dict:
  """The five efficacy metrics on the forget pairs a deletion request names (`requested`:
  indices into the forget split) and on the forget pairs it does not name: the first must
  reach Clean's level, the second stay at Compromised's (unlearning one person must not
  erase another who has not asked; docs/protocol.md §3). IdZSC classifies whole
  identities, so it is left out of a side that holds none (`omitted`)."""
  records = ctx.split("forget").records
  requested = np.unique(np.asarray(requested, int))
  sides = {"requested": requested, "not_requested": np.setdiff1d(np.arange(len(records)), requested)}
  # RetFail ranks every forget image among the one gallery of the whole split's RetFail,
  # whatever the side: a side's score then changes with its pairs, never with its gallery.
  ranks, gallery_size = own_caption_ranks(ctx, "forget", 11)
  out = {"pairs": {side: int(len(rows)) for side, rows in sides.items()},
         "requested_sha256": requested_digest(records, requested),
         "retfail_ranks": [int(r) for r in ranks]}  # Per forget pair: the report's bootstrap.
  for side, rows in sides.items():
    if not len(rows):
      continue
    sub = ctx.restricted("forget", rows)
    whole = any(records[i]["subset"] == "forget_identity" for i in rows)
    out[side] = {"1.1_RetFail": metrics.recall_and_mrr(ranks[rows]) | {
        "gallery_size": int(gallery_size)}} | {
        key: EVALUATORS[f"efficacy/{key}"](sub) for key in diagnosis.OFFICIAL["efficacy"][1:]
        if whole or key != "1.4_IdZSC"}
    if not whole:
      out.setdefault("omitted", {})[side] = ["1.4_IdZSC"]
  return out


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
