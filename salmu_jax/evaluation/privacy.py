"""Can the forgotten associations still be extracted? Membership inference (MUSE's PrivLeak).

Members are the forget pairs (or, for the identity attack, the forget_identity personas);
non-members the `unseen_identity` ones, personas of the same distribution that no model
ever saw. Each attack gives every member and non-member a score (higher: "was trained
on"), and its strength is the ROC AUC of members against non-members: 0.5 when the model
cannot tell them apart, as Clean, which never saw either. PrivLeak = (AUC - AUC_Clean) /
AUC_Clean x 100; ideal 0, MUSE counts [-5, 5] as passing (docs/protocol.md §3).

The scores are stored in the result, so that the calibrated attack (a score minus a
reference model's score for the same pair) and the ROC curves are rebuilt from the JSON
files alone. NumPy only: the evaluation context (context.py) embeds.
"""
import hashlib
import json

import numpy as np

from salmu_jax.errors import ConfigError
from salmu_jax.evaluation import metrics

MEMBER_SPLIT, NONMEMBER_SPLIT = "forget", "unseen_identity"
SIDES = {"member": MEMBER_SPLIT, "nonmember": NONMEMBER_SPLIT}  # Score side -> its split.
CALIBRATED = ("pair", "identity")  # Also scored minus a reference model's scores.
# MUSE's pass band for PrivLeak, in percent.
PRIVLEAK_BAND = 5.0
# The augmentation attack's fixed views of each image (besides the image itself): a
# horizontal flip and shifts by SHIFT_FRACTION of the side, edges replicated.
SHIFT_FRACTION = 1 / 16


def roc_auc(members, nonmembers) -> float:
  """P(score of a random member > that of a random non-member), ties counted as half
  (the Mann-Whitney statistic): 0.5 for indistinguishable scores, exactly 0.5 for equal
  ones."""
  members, nonmembers = np.asarray(members, float), np.asarray(nonmembers, float)
  if not len(members) or not len(nonmembers):
    raise ValueError(f"an AUC needs members and non-members; got {len(members)} and "
                     f"{len(nonmembers)}")
  ordered = np.sort(nonmembers)
  below = np.searchsorted(ordered, members, side="left")
  tied = np.searchsorted(ordered, members, side="right") - below
  return float((below + 0.5 * tied).sum() / (len(members) * len(nonmembers)))


def roc_curve(members, nonmembers) -> tuple:
  """(false positive rates, true positive rates) at every threshold, from (0, 0) to (1, 1)."""
  members, nonmembers = np.asarray(members, float), np.asarray(nonmembers, float)
  thresholds = np.unique(np.concatenate([members, nonmembers]))[::-1]
  tpr = [(members >= t).mean() for t in thresholds]
  fpr = [(nonmembers >= t).mean() for t in thresholds]
  return np.array([0.0] + fpr), np.array([0.0] + tpr)


def augmented_views(images: np.ndarray) -> list:
  """The augmentation attack's views of uint8 images [B, H, W, 3]: flipped and shifted
  (diagonally both ways, edges replicated), all of the original size."""
  shift = max(int(round(images.shape[1] * SHIFT_FRACTION)), 1)
  padded = np.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="edge")
  h, w = images.shape[1:3]
  return [images[:, :, ::-1], padded[:, :h, :w], padded[:, 2 * shift:, 2 * shift:]]


def _view_cosines(ctx, split: str) -> np.ndarray:
  """cos(view of the image, its caption) for each of `augmented_views`: [V, N]."""
  data, views = ctx.split(split), []
  for batch in ctx.evaluator.inputs.split_batches(split):
    views.append(np.stack([ctx.images(view) for view in augmented_views(
        np.asarray(batch["image"]))]))
  return np.einsum("vnd,nd->vn", np.concatenate(views, axis=1), data.caption)


def has_nonmembers(dataset) -> bool:
  split = dataset.splits.get(NONMEMBER_SPLIT)
  return split is not None and len(split) > 0


def _sides(ctx) -> dict:
  return {side: ctx.split(split) for side, split in SIDES.items()}


def pair_scores(ctx) -> dict:
  """cos(image, association caption): the cosine attack of Ko et al. (ICCV 2023)."""
  return {side: metrics.paired_cosine(data.image, data.caption)
          for side, data in _sides(ctx).items()}


def augmented_pair_scores(ctx) -> dict:
  """The cosine attack's mean over the image and its `augmented_views`."""
  cos, out = pair_scores(ctx), {}
  for side, split in SIDES.items():
    views = _view_cosines(ctx, split)
    out[side] = (cos[side] + views.sum(0)) / (1 + len(views))
  return out


def identity_scores(ctx, name_prompts: list) -> dict:
  """Per persona (members: forget_identity, all of whose pairs are forgotten;
  non-members: unseen), the mean over its images of the margin of its true name's prompt
  over the best other candidate (every persona's name, unseen ones included): the
  identity inference attack of Hintersdorf et al. (arXiv 2209.07341) as a score, positive
  on an image exactly when the model names the person right. `name_prompts`: one text per
  persona of `ctx.dataset.personas`, in that order."""
  column = {p["identity"]: i for i, p in enumerate(ctx.dataset.personas)}
  name_emb = ctx.texts(name_prompts)
  out = {}
  for side, data in _sides(ctx).items():
    rows = np.array([side == "nonmember" or r["subset"] == "forget_identity"
                     for r in data.records])
    identities = np.array([r["identity"] for r in data.records])[rows]
    sims = data.image[rows] @ name_emb.T
    truth = np.array([column[i] for i in identities])
    true_sim = sims[np.arange(len(truth)), truth].copy()
    sims[np.arange(len(truth)), truth] = -np.inf
    margin = true_sim - sims.max(axis=1)
    out[side] = np.array([margin[identities == i].mean() for i in np.unique(identities)])
  return out


def summary(scores: dict) -> dict:
  """One attack's block in the result: the scores (6 digits), their counts and the AUC of
  the stored scores, so that the JSON alone gives the same AUC again."""
  stored = {side: [round(float(v), 6) for v in values] for side, values in scores.items()}
  return {"auc": roc_auc(stored["member"], stored["nonmember"]),
          "members": len(stored["member"]), "nonmembers": len(stored["nonmember"]),
          "scores": stored}


def digest(lines) -> str:
  """SHA-256 of text lines: what names a set of records in a result."""
  return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def records_digest(ctx) -> str:
  """`digest` of the dataset's fingerprint and the record ids of the member and
  non-member splits, in order: two results' scores pair up (calibration) only when their
  digests agree."""
  ids = [str(r["record_id"]) for split in SIDES.values() for r in ctx.split(split).records]
  identity = json.dumps(getattr(ctx.dataset, "card", {}).get("fingerprint"), sort_keys=True)
  return digest([identity] + ids)


def calibrated_aucs(block: dict, reference_block: dict) -> dict:
  """{attack_calibrated: AUC} of each CALIBRATED attack scored as the model's score minus
  the reference model's for the same pair or persona: the difficulty calibration an
  attacker with a public model of the same distribution can do. Both blocks must come from
  the same dataset (same members in the same order: `records_sha256`)."""
  digests = block.get("records_sha256"), reference_block.get("records_sha256")
  if None in digests or digests[0] != digests[1]:
    raise ConfigError("privacy scores of different member and non-member records (their "
                      "records_sha256 differ or one is missing): not the same dataset, or a "
                      "result of an older version; evaluate again")
  out = {}
  for name in CALIBRATED:
    model, reference = block[name]["scores"], reference_block[name]["scores"]
    for side in ("member", "nonmember"):
      if len(model[side]) != len(reference[side]):
        raise ConfigError(f"privacy scores of {name}: {len(model[side])} {side}s against the "
                          f"reference's {len(reference[side])}; not the same dataset")
    diff = {side: np.subtract(model[side], reference[side]) for side in model}
    out[f"{name}_calibrated"] = roc_auc(diff["member"], diff["nonmember"])
  return out
