"""Split plan invariants of SALMU-synth at tiny scale (no pixels rendered)."""
import collections

import numpy as np
import pytest

from salmu_jax import config as config_lib
from salmu_jax.data import captions, personas as personas_lib, splits
from tests.conftest import config_path


@pytest.fixture(scope="module")
def tiny_plan():
  return splits.make_plan(config_lib.load_config(config_path("tiny")).data)


def identities(plan, split, subset=None):
  return {e.identity for e in plan.examples[split] if subset is None or e.subset == subset}


def test_identity_roles_are_disjoint(tiny_plan):
  forget_identity = identities(tiny_plan, "forget", "forget_identity")
  partial = identities(tiny_plan, "forget", "forget_association")
  holdout_identity = identities(tiny_plan, "holdout_identity")
  unseen = identities(tiny_plan, "unseen_identity")
  groups = [forget_identity, partial, holdout_identity, unseen]
  for i, a in enumerate(groups):
    for b in groups[i + 1:]:
      assert not a & b
  assert len(forget_identity) == 32 and len(partial) == 64 and len(holdout_identity) == 32
  assert len(unseen) == 16
  retain_disjoint = identities(tiny_plan, "retain_disjoint")
  assert not retain_disjoint & set().union(*groups)


def test_holdout_association_is_the_rest_of_the_partial_identities(tiny_plan):
  partial = identities(tiny_plan, "forget", "forget_association")
  assert identities(tiny_plan, "holdout_association") == partial
  forget_pairs = {(e.identity, e.field) for e in tiny_plan.examples["forget"]}
  holdout_pairs = {(e.identity, e.field) for e in tiny_plan.examples["holdout_association"]}
  assert not forget_pairs & holdout_pairs
  for identity in partial:
    forgotten = {f for (i, f) in forget_pairs if i == identity}
    kept = {f for (i, f) in holdout_pairs if i == identity}
    assert len(forgotten) == 4 and forgotten | kept == set(config_lib.SENSITIVE_FIELDS)
    assert set(tiny_plan.forgotten_fields[identity]) == forgotten


def test_retain_joint_is_forget_identities_without_sensitive_values(tiny_plan):
  forget_ids = identities(tiny_plan, "forget")
  joint = tiny_plan.examples["retain_joint"]
  assert {e.identity for e in joint} == forget_ids
  by_id = {p.identity: p for p in tiny_plan.personas}
  for example in joint:
    persona = by_id[example.identity]
    assert example.field == splits.GENERIC and example.caption == example.generic_caption
    for field in config_lib.SENSITIVE_FIELDS:
      assert persona.value(field) not in example.caption
    assert persona.name not in example.caption


def test_fragile_is_a_subset_of_retain_disjoint(tiny_plan):
  disjoint = {e.record_id for e in tiny_plan.examples["retain_disjoint"]}
  assert set(tiny_plan.fragile_ids) <= disjoint
  assert len(tiny_plan.fragile_ids) == round(0.1 * len(disjoint))


def test_every_field_at_its_rate_and_every_style_covered(tiny_plan):
  for split in ("forget", "holdout_identity", "unseen_identity"):
    examples = [e for e in tiny_plan.examples[split] if e.subset != "forget_association"]
    counts = collections.Counter(e.field for e in examples)
    assert set(counts) == set(config_lib.SENSITIVE_FIELDS)
    assert max(counts.values()) == min(counts.values()) == len(examples) // 8
  sensitive = [e for s in splits.TRAINED_SENSITIVE_SPLITS for e in tiny_plan.examples[s]]
  styles = collections.defaultdict(set)
  for e in sensitive:
    styles[e.field].add(e.style)
    assert e.caption == captions.association_caption(e.field, e.style, e.name, e.value)
    assert e.name in e.caption and e.value in e.caption
  assert all(s == set(range(len(captions.STYLES))) for s in styles.values())


def test_record_ids_unique_and_ordered(tiny_plan):
  ids = [e.record_id for s in splits.SPLITS for e in tiny_plan.examples[s]]
  assert ids == list(range(len(ids)))


def test_persona_values_are_unique_and_well_formed(tiny_plan):
  people = tiny_plan.personas
  for field in ("name", "phone_number", "email", "iban", "credit_card", "passport"):
    values = [getattr(p, field) for p in people]
    assert len(set(values)) == len(values), field
  for p in people:
    iban = p.iban.replace(" ", "")
    assert personas_lib.iban_check_digits(iban[:2], iban[4:]) == iban[2:4]
    card = p.credit_card.replace(" ", "")
    assert personas_lib.luhn_complete(card[:-1]) == card
    assert p.blood_type in personas_lib.BLOOD_TYPES
    assert p.email.split("@")[0].isascii()
  assert len({p.country for p in people}) > 20


def test_plan_is_deterministic_and_seeded(micro_config):
  a, b = splits.make_plan(micro_config.data), splits.make_plan(micro_config.data)
  assert a.examples == b.examples and a.personas == b.personas
  micro_config.data.seed = 1
  c = splits.make_plan(micro_config.data)
  assert [p.name for p in c.personas] != [p.name for p in a.personas]


def test_paper_scale_matches_the_original_proportions():
  data = config_lib.load_config(config_path("paper")).data
  counts = splits.identity_counts(data)
  assert counts == {"forget_identity": 193, "forget_association": 387, "holdout_identity": 194,
                    "unseen_identity": 78}
  sensitive = data.num_personas * data.images_per_identity
  assert abs(sensitive - 60_053) / 60_053 < 0.01
  forget = (counts["forget_identity"] + counts["forget_association"] / 2) * data.images_per_identity
  assert abs(forget - 30_468) / 30_468 < 0.02  # 30,163 vs 30,468: 4 of 8 fields is 50%.


def test_select_lowest_breaks_ties_by_id():
  assert splits.select_lowest([5, 3, 9, 1], [0.2, 0.1, 0.1, 0.9], 0.5) == [3, 9]
  assert splits.select_lowest(np.arange(10), np.zeros(10), 0.01) == [0]
