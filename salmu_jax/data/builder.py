"""Writes SALMU-synth to disk (the layout of data/layout.py), or imports the released
SALMUBench data into the same layout (data/released.py).

Everything is built in a temporary sibling directory and renamed into place, so a
directory named `dataset` without a valid manifest is never the result of a build.
"""
import contextlib
import dataclasses
import functools
import io
import json
import multiprocessing
import os
import shutil
import tempfile
from importlib import metadata

import numpy as np
from PIL import Image

from salmu_jax import io_utils, progress as progress_lib
from salmu_jax.data import faces, layout, released, scenes, splits
from salmu_jax.data.layout import (CARD_FILE, CONTACT_SHEET_FILE, DATASET_DIRNAME, FRAGILE_FILE,
                                   GENERATOR_VERSION, PERSONAS_FILE, TFDS_NAME)
from salmu_jax.data.tokenizer import TOKENIZER_FILE, BPETokenizer
from salmu_jax.errors import ConfigError, DatasetError


# config.data fields that shape how data is read, not the stored bytes (the builder
# writes the same bytes with any number of render workers: tested).
_READ_ONLY_FIELDS = ("mixture", "augment", "loader", "retain_base", "build_workers")


def fingerprint(config) -> dict:
  """What the dataset's bytes depend on; a reused dataset must match it exactly."""
  if config.data.kind == "released":
    return released.fingerprint(config)
  data = {k: v for k, v in json.loads(config.data.to_json()).items() if k not in _READ_ONLY_FIELDS}
  return {"generator_version": GENERATOR_VERSION, "data": data,
          "tokenizer": json.loads(config.tokenizer.to_json())}


def encode_image(pixels: np.ndarray, image_format: str, jpeg_quality: int) -> bytes:
  buffer = io.BytesIO()
  if image_format == "png":
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=False, compress_level=6)
  else:
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
  return buffer.getvalue()


def record_of(example: splits.ExampleSpec, image: bytes) -> dict:
  """The stored record of a planned example (layout.features()), with its encoded image."""
  return {k: getattr(example, k) for k in ("record_id", "identity", "image_index", "style",
                                           "subset", "field", "name", "value", "caption",
                                           "generic_caption")} | {"image": image}


def _render_record(args) -> dict:
  """Runs in worker processes: one ExampleSpec -> one tfds example."""
  example, image_size, image_format, jpeg_quality = args
  pixels = faces.render_face(example.face, example.view, image_size)
  return record_of(example, encode_image(pixels, image_format, jpeg_quality))


@contextlib.contextmanager
def rendered_records(plan: splits.Plan, data_config):
  """split -> the plan's records with rendered, encoded images, in plan order; one pool
  of `build_workers` processes renders every split (a spawned worker imports the
  program's modules, seconds each: a pool per split paid that for each of them)."""
  d = data_config

  def records(render, split):
    jobs = [(e, d.image_size, d.image_format, d.jpeg_quality) for e in plan.examples[split]]
    yield from render(_render_record, jobs)

  if d.build_workers <= 1:
    yield functools.partial(records, map)
    return
  # spawn, not fork: the parent may already hold JAX or grain threads.
  with multiprocessing.get_context("spawn").Pool(d.build_workers) as pool:
    yield functools.partial(records, functools.partial(pool.imap, chunksize=32))


def persona_entries(plan: splits.Plan) -> list:
  entries = []
  for persona in plan.personas:
    entry = dataclasses.asdict(persona)
    entry["role"] = plan.roles[persona.identity]
    entry["forgotten_fields"] = list(plan.forgotten_fields.get(persona.identity, ()))
    entries.append(entry)
  return entries


def train_tokenizer(config, plan: splits.Plan) -> BPETokenizer:
  texts = [e.caption for split in splits.SPLITS for e in plan.examples[split]]
  texts += [e.generic_caption for split in splits.SPLITS for e in plan.examples[split]]
  texts += [scenes.sample_scene(config.data.seed, "train", i)["caption"]
            for i in range(config.tokenizer.scene_captions)]
  texts += [p for c in range(len(scenes.CLASSES)) for p in scenes.zeroshot_prompts(c)]
  tokenizer = BPETokenizer.train(texts, config.tokenizer.vocab_size, config.tokenizer.context_length)
  lengths = tokenizer.token_lengths(texts)
  too_long = lengths > config.tokenizer.context_length
  if too_long.any():
    raise ConfigError(
        f"tokenizer.context_length={config.tokenizer.context_length} truncates "
        f"{int(too_long.sum())} captions (longest {int(lengths.max())} tokens); raise it to at "
        f"least {int(lengths.max())}")
  return tokenizer, int(lengths.max())


def _card(config, plan: splits.Plan, max_tokens: int) -> dict:
  roles = {role: sum(1 for r in plan.roles.values() if r == role) for role in splits.ROLES}
  identities = {split: len({e.identity for e in plan.examples[split]}) for split in splits.SPLITS}
  forget = plan.examples["forget"]
  return {
      "name": TFDS_NAME,
      "generator_version": GENERATOR_VERSION,
      "seed": config.data.seed,
      "image_size": config.data.image_size,
      "image_format": config.data.image_format,
      "split_sizes": plan.split_sizes(),
      "split_identities": identities,
      "forget_subsets": {s: sum(1 for e in forget if e.subset == s)
                         for s in ("forget_identity", "forget_association")},
      "personas_per_role": roles,
      "countries": len({p.country for p in plan.personas}),
      "distinct_jobs": len({p.job for p in plan.personas}),
      "tokenizer": {"kind": "dataset_bpe", "vocab_size": config.tokenizer.vocab_size,
                    "context_length": config.tokenizer.context_length,
                    "longest_caption_tokens": max_tokens},
      "features": {k: repr(v) for k, v in layout.features().items()},
      "versions": {p: metadata.version(p) for p in
                   ("faker", "pillow", "numpy", "tensorflow-datasets", "tokenizers",
                    "protobuf", "array-record")},  # The stored bytes depend on all of them.
      "fingerprint": fingerprint(config),
  }


def _card_markdown(card: dict) -> str:
  rows = "\n".join(f"| {split} | {size:,} | {card['split_identities'].get(split, '-')} |"
                   for split, size in card["split_sizes"].items())
  features = "\n".join(f"- `{k}`: {v}" for k, v in card["features"].items())
  return f"""# SALMU-synth dataset card

Generator {card['generator_version']}, seed {card['seed']}.
Images {card['image_size']} px, stored as {card['image_format'].upper()} bytes.
{card['countries']} countries, {card['distinct_jobs']} distinct jobs.

| split | pairs | identities |
|---|---|---|
{rows}

forget = forget_identity ({card['forget_subsets']['forget_identity']:,} pairs) + forget_association
({card['forget_subsets']['forget_association']:,} pairs). Personas per role: {card['personas_per_role']}.

## Features
{features}

## Versions
{json.dumps(card['versions'])}
"""


def write_contact_sheet(path: str, rows: list, cell: int = 144, caption_lines: int = 5) -> None:
  """rows: [(label, [(uint8 image, caption), ...]), ...] -> one PNG with wrapped captions."""
  import textwrap
  from PIL import ImageDraw
  columns = max(len(images) for _, images in rows)
  label_w, line_h = 150, 11
  height = cell + caption_lines * line_h + 8
  sheet = Image.new("RGB", (label_w + columns * (cell + 6), len(rows) * height), "white")
  draw = ImageDraw.Draw(sheet)
  for r, (label, images) in enumerate(rows):
    y = r * height
    for i, line in enumerate(textwrap.wrap(label, 24)[:8]):
      draw.text((4, y + 4 + i * line_h), line, fill="black")
    for c, (pixels, caption) in enumerate(images):
      x = label_w + c * (cell + 6)
      sheet.paste(Image.fromarray(pixels).resize((cell, cell), Image.BICUBIC), (x, y))
      for i, line in enumerate(textwrap.wrap(caption, 26)[:caption_lines]):
        draw.text((x, y + cell + 2 + i * line_h), line, fill=(40, 40, 40))
  buffer = io.BytesIO()
  sheet.save(buffer, format="PNG")
  io_utils.write_bytes_atomic(path, buffer.getvalue())


def _contact_sheet(root: str, plan: splits.Plan, per_row: int = 5) -> None:
  dataset = layout.open_split_sources(root)
  rows = []
  for role in splits.ROLES:
    identity = min(i for i, r in plan.roles.items() if r == role)
    persona = plan.personas[identity]
    picked = [(split, i) for split in splits.SPLITS
              for i, e in enumerate(plan.examples[split]) if e.identity == identity][:per_row]
    images = []
    for split, index in picked:
      record = layout.decode_record(dataset[split][index])
      images.append((record["image"], record["caption"]))
    rows.append((f"{persona.name} ({persona.country}) - {role}", images))
  disjoint = [(layout.decode_record(dataset["retain_disjoint"][i])) for i in range(per_row)]
  rows.append(("retain_disjoint: other people, generic captions",
               [(r["image"], r["caption"]) for r in disjoint]))
  write_contact_sheet(os.path.join(root, CONTACT_SHEET_FILE), rows)


def check_existing(final: str, config) -> None:
  """Raises DatasetError unless `final` is a complete, unmodified build of `config`."""
  manifest_path = os.path.join(final, io_utils.MANIFEST_NAME)
  if not os.path.exists(final):
    raise DatasetError(f"{final} does not exist; build it with salmu_jax.make_dataset or pass "
                       f"the directory the dataset was built in")
  if not os.path.isdir(final):
    raise DatasetError(f"{final} is a file, not a dataset directory")
  if not os.path.exists(manifest_path):
    raise DatasetError(
        f"{final} exists but has no {io_utils.MANIFEST_NAME}: it is incomplete or not a "
        f"SALMU-synth dataset; delete it and run make_dataset again")
  try:
    manifest = io_utils.read_json(manifest_path)
  except (OSError, ValueError) as e:
    raise DatasetError(f"{manifest_path} is unreadable ({e}); delete {final} and rebuild") from e
  if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
    raise DatasetError(f"{manifest_path} is not a manifest (no file list); rebuild {final}")
  if manifest.get("fingerprint") != fingerprint(config):
    differing = io_utils.differing_keys(manifest.get("fingerprint", {}), fingerprint(config))
    raise DatasetError(
        f"{final} was built from a different config (differs in: {', '.join(differing)}); "
        f"pass the config it was built with, or build a dataset of this config elsewhere")
  problems = io_utils.verify_manifest(final)
  if problems:
    only_extra = all(p.startswith("unlisted file") for p in problems)
    raise DatasetError(
        f"{final} is corrupted or was modified after building ({problems[0]}"
        f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}); "
        + ("remove the file(s) that were added to it" if only_extra else
           "restore it from a copy, or delete it and rebuild (the build is deterministic)"))


def build_dataset(config, workdir: str, progress: bool = True) -> str:
  """Builds SALMU-synth (or imports the released SALMUBench data, `data.kind`) under
  `workdir` (idempotent); returns the dataset directory."""
  final = os.path.join(workdir, DATASET_DIRNAME)
  if os.path.exists(final):
    check_existing(final, config)
    return final
  os.makedirs(workdir, exist_ok=True)
  for stale in os.listdir(workdir):
    if stale.startswith(f".{DATASET_DIRNAME}.partial-"):
      shutil.rmtree(os.path.join(workdir, stale), ignore_errors=True)
  tmp = tempfile.mkdtemp(prefix=f".{DATASET_DIRNAME}.partial-", dir=workdir)
  try:
    if config.data.kind == "released":
      released.write_dataset(config, tmp, progress)
    else:
      _write_synth(config, tmp, progress)
    io_utils.write_manifest(tmp, {"fingerprint": fingerprint(config)})
    os.replace(tmp, final)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return final


def _write_synth(config, tmp: str, progress: bool) -> None:
  plan = splits.make_plan(config.data)
  tokenizer, max_tokens = train_tokenizer(config, plan)
  total = sum(plan.split_sizes()[s] for s in splits.SPLITS)
  with progress_lib.bar(total=total, desc="rendering SALMU-synth", unit="img",
                        enabled=progress) as bar, \
      tempfile.TemporaryDirectory() as downloads, \
      rendered_records(plan, config.data) as records:
    layout.write_splits(records, tmp, bar, downloads)
  tokenizer.save(os.path.join(tmp, TOKENIZER_FILE))
  io_utils.write_json_atomic(os.path.join(tmp, PERSONAS_FILE), persona_entries(plan))
  io_utils.write_json_atomic(os.path.join(tmp, FRAGILE_FILE), plan.fragile_ids)
  card = _card(config, plan, max_tokens)
  io_utils.write_json_atomic(os.path.join(tmp, CARD_FILE), card)
  io_utils.write_bytes_atomic(os.path.join(tmp, "DATASET_CARD.md"), _card_markdown(card).encode())
  _contact_sheet(tmp, plan)
