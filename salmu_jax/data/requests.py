"""Deletion requests: which forget pairs an unlearning run removes (`unlearn --forget=FILE`).

A request names whole identities or single (identity, field) associations, as a JSON list
(`[12, 40, [7, "iban"]]`) or as lines of text (`12`, `7,iban`). It may only name what
the forget split holds: the holdout and unseen splits are what the benchmark measures
as kept, so a request touching them is refused, as are unknown ids, unknown fields,
duplicates and an empty request. Every entry is checked before anything runs.
"""
import json
import math
import re

import numpy as np

from salmu_jax.data import layout
from salmu_jax.errors import SalmuError


class RequestError(SalmuError):
  """A deletion request names something that is not in the forget split."""


def read_request(path: str) -> list:
  """Entries of a request file: identity ids (int) and (identity, field) pairs."""
  try:
    with open(path, encoding="utf-8-sig") as f:  # A byte-order mark is not part of the list.
      text = f.read()
  except OSError as e:
    raise RequestError(f"cannot read the deletion request {path}: {e.strerror}") from None
  except UnicodeDecodeError:
    raise RequestError(f"the deletion request {path} is not text (JSON or lines of ids)") from None
  try:
    raw = json.loads(text)
  except ValueError:
    raw = [line.split("#")[0].strip() for line in text.splitlines()]
    raw = [[part.strip() for part in line.split(",")] if "," in line else line
           for line in raw if line]
  if not isinstance(raw, list):
    raise RequestError(f"{path} must hold a list of identity ids or [identity, field] pairs")
  return [_entry(item, path) for item in raw]


def _entry(item, path):
  def identity(value):
    # JSON true is not identity 1, nor Infinity or 7.5 an id; "12" (a line) is.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
      raise RequestError(f"{path}: {value!r} is not an identity id")
    if isinstance(value, float) and not (math.isfinite(value) and value == int(value)):
      raise RequestError(f"{path}: {value!r} is not an identity id")
    if isinstance(value, str) and not re.fullmatch(r"-?[0-9]+", value.strip()):  # Not "²".
      raise RequestError(f"{path}: {value!r} is not an identity id")
    return int(value)
  if isinstance(item, (list, tuple)):
    if len(item) != 2 or not isinstance(item[1], str):
      raise RequestError(f"{path}: {item!r} is not an [identity, field] pair")
    return identity(item[0]), item[1].strip()
  return identity(item)


def as_json(entries: list) -> list:
  """A request's entries as JSON holds them: (identity, field) pairs as lists."""
  return [list(e) if isinstance(e, tuple) else e for e in entries]


def resolve_request(dataset, entries: list, source: str = "the request") -> np.ndarray:
  """Indices into the forget split of the pairs `entries` names (sorted, unique)."""
  if not entries:
    raise RequestError(f"{source} is empty: name at least one identity or association")
  seen = set()
  for entry in entries:
    if entry in seen:
      raise RequestError(f"{source} names {entry!r} twice")
    seen.add(entry)
  personas = {p["identity"]: p for p in dataset.personas}
  fields = set(dataset.card["fingerprint"]["data"]["fields"])
  forget = dataset.splits["forget"]
  records = [layout.record_metadata(forget[i]) for i in range(len(forget))]
  identities = np.array([r["identity"] for r in records])
  record_fields = np.array([r["field"] for r in records])
  rows = np.zeros(len(records), bool)
  for entry in entries:
    identity, field = entry if isinstance(entry, tuple) else (entry, None)
    if identity not in personas:
      raise RequestError(f"{source} names identity {identity}, which does not exist "
                         f"(ids run from 0 to {max(personas)})")
    role = personas[identity]["role"]
    if role in ("holdout_identity", "unseen_identity"):
      raise RequestError(f"{source} names identity {identity}, which is in {role}: only "
                         f"forget identities can be unlearned (holdouts measure what is kept)")
    if field is not None and field not in fields:
      raise RequestError(f"{source} names field {field!r}; known: {', '.join(sorted(fields))}")
    matches = (identities == identity) & ((record_fields == field) if field is not None else True)
    if field is not None and not matches.any():
      raise RequestError(f"{source} names ({identity}, {field!r}), which is in "
                         f"holdout_association: identity {identity} forgets only "
                         f"{', '.join(personas[identity]['forgotten_fields'])}")
    rows |= matches
  return np.flatnonzero(rows)


# MUSE's two request schedules (SALMUBENCH.md §6; docs/protocol.md §4): nested requests of
# growing size (scalability), and disjoint requests applied one after another
# (sustainability), each a share of the forget split's identities and associations.
SCALABILITY_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
SUSTAINABILITY_REQUESTS = 4
# The seed's streams that order the forget split's units, one per schedule: the two modes
# draw independently (a shared order would make sustainability's first request one of
# scalability's, the same runs twice).
SCALABILITY_STREAM, SUSTAINABILITY_STREAM = 211, 212


def request_units(records: list) -> tuple:
  """(whole identities, (identity, field) associations) of the forget split's `records`
  (layout.record_metadata dicts), sorted: forget_identity personas are requested whole,
  forget_association personas field by field (their other fields are holdouts)."""
  identities = sorted({int(r["identity"]) for r in records if r["subset"] == "forget_identity"})
  associations = sorted({(int(r["identity"]), r["field"]) for r in records
                         if r["subset"] == "forget_association"})
  return identities, associations


def _shuffled_units(records: list, seed: int, stream: int) -> tuple:
  rng = np.random.default_rng([seed, stream])
  identities, associations = request_units(records)
  if not identities or not associations:
    raise RequestError(f"request schedules draw whole identities and associations in the "
                       f"forget split's proportions; it has {len(identities)} forget "
                       f"identities and {len(associations)} associations")
  return ([identities[i] for i in rng.permutation(len(identities))],
          [associations[i] for i in rng.permutation(len(associations))])


def scalability_requests(records: list, seed: int, fractions=SCALABILITY_FRACTIONS) -> list:
  """Nested requests (each contains the one before), the k-th naming `fractions[k]` of
  the forget split's identities and of its associations (rounded, at least one of each),
  drawn in one order fixed by `seed`."""
  if list(fractions) != sorted(fractions) or not all(0 < f <= 1 for f in fractions):
    raise RequestError(f"scalability fractions {list(fractions)} must increase within (0, 1]")
  identities, associations = _shuffled_units(records, seed, SCALABILITY_STREAM)
  take = lambda units, f: units[:max(1, round(f * len(units)))]
  return [take(identities, f) + take(associations, f) for f in fractions]


def sustainability_requests(records: list, seed: int, count: int = SUSTAINABILITY_REQUESTS) -> list:
  """`count` disjoint requests that together cover the forget split, each with an equal
  share (to one unit) of its identities and of its associations, in an order fixed by
  `seed`."""
  identities, associations = _shuffled_units(records, seed, SUSTAINABILITY_STREAM)
  if count < 1 or count > min(len(identities), len(associations)):
    raise RequestError(f"{count} disjoint requests need at least {count} forget identities "
                       f"and associations; the forget split has {len(identities)} and "
                       f"{len(associations)}")
  parts = lambda units: [[units[i] for i in part]
                         for part in np.array_split(np.arange(len(units)), count)]
  return [ids + assoc for ids, assoc in zip(parts(identities), parts(associations))]
