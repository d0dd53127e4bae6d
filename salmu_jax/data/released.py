"""SALMUBench's released benchmark data, mapped onto SALMU-synth's split schema.

Reads a local copy of the published benchmark dataset (as the official evaluator
does; nothing is downloaded):
  data/{split}-*.parquet    splits forget, holdout_association, holdout_identity and
                            retain_synth; columns image ({bytes, path}), text,
                            identity_id (null for people who are not personas), file_name
  identities_metadata.json              {identity_id: {"name": ..., field: value, ...}}
  sensitive_set_captions_metadata.json  {file_name: {"data_field": field, "caption": ...}}
  sensitive_set_generic_captions.json   {file_name: generic caption}
  fragile_set_ids.json                  [file_name, ...] (a subset of retain_disjoint)
and writes the same dataset directory (data/layout.py) `builder.build_dataset` writes for SALMU-synth
(`data.kind = "released"` selects this), so training, unlearning and evaluation read
it unchanged. Derived splits follow the official evaluator: retain_joint = retain_synth
images of forget identities, retain_disjoint = those without an identity,
forget_identity = forget identities absent from holdout_association. Images keep their
published bytes (512 px on the longest side); the pipeline crops and resizes on read.
Where the release leaves the schema open (the field value of a caption), the reading
is documented in docs/protocol.md §7.
"""
import glob
import json
import os
import tempfile

from salmu_jax import io_utils, progress as progress_lib
from salmu_jax.data import layout, splits
from salmu_jax.errors import DatasetError

ADAPTER_VERSION = "1.0.0"
IDENTITIES_FILE = "identities_metadata.json"
CAPTIONS_FILE = "sensitive_set_captions_metadata.json"
GENERIC_FILE = "sensitive_set_generic_captions.json"
FRAGILE_FILE = "fragile_set_ids.json"
RECORD_IDS_FILE = "released_record_ids.json"  # file_name -> record_id, written beside the splits.


def fingerprint(config) -> dict:
  return {"adapter_version": ADAPTER_VERSION,
          "data": {"kind": "released", "released_dir": os.path.abspath(config.data.released_dir),
                   "fields": list(config.data.fields)}}


def _read_json(root: str, name: str):
  path = os.path.join(root, name)
  try:
    with open(path) as f:
      return json.load(f)
  except OSError as e:
    raise DatasetError(f"the released SALMUBench data at {root} lacks {name} ({e.strerror})") from e
  except ValueError as e:
    raise DatasetError(f"{path} is not valid JSON ({e})") from e


def _shards(root: str, split: str) -> list:
  files = sorted(glob.glob(os.path.join(root, "data", f"{split}-*.parquet")))
  if not files:
    raise DatasetError(f"no parquet shards data/{split}-*.parquet in {root}")
  return files


def read_rows(root: str, split: str):
  """Rows of one published split, in file and row order: dicts with image bytes,
  text, identity_id (None or str) and file_name."""
  import pyarrow.parquet as pq
  for path in _shards(root, split):
    table = pq.ParquetFile(path)
    missing = {"image", "text", "identity_id", "file_name"} - set(table.schema_arrow.names)
    if missing:
      raise DatasetError(f"{path} lacks column(s) {sorted(missing)}")
    for batch in table.iter_batches(batch_size=256):
      for row in batch.to_pylist():
        image = row["image"]
        data = image.get("bytes") if isinstance(image, dict) else image
        if data is None and isinstance(image, dict) and image.get("path"):
          with open(os.path.join(root, image["path"]), "rb") as f:
            data = f.read()
        if not data:
          raise DatasetError(f"{path}: row {row['file_name']!r} has no image bytes")
        yield {"image": data, "text": row["text"], "identity_id": row["identity_id"],
               "file_name": row["file_name"]}


def _value(caption_meta: dict, identity: dict, field: str, file_name: str) -> str:
  """The sensitive value a caption states: its own entry if it names one, else the
  identity's attribute of that field."""
  for key in ("value", "data_value"):
    if caption_meta.get(key) not in (None, ""):
      return str(caption_meta[key])
  for source in (identity, identity.get("attributes", {})):
    if isinstance(source, dict) and source.get(field) not in (None, ""):
      return str(source[field])
  raise DatasetError(f"no value of field {field!r} for {file_name}: neither its captions "
                     f"metadata nor its identity's metadata holds one")


class _Mapper:
  """Released rows -> SALMU-synth records; ids assigned in stored order."""

  def __init__(self, root: str, fields):
    self.root = root
    self.identities = _read_json(root, IDENTITIES_FILE)
    self.captions = _read_json(root, CAPTIONS_FILE)
    self.generic = _read_json(root, GENERIC_FILE)
    self.fields = tuple(fields)
    self.identity_index = {key: i for i, key in enumerate(sorted(self.identities))}
    # Who is in which sensitive split, and which fields each forget identity loses:
    # read once, from the two small columns, before any image.
    self.split_identities = {split: set() for split in splits.TRAINED_SENSITIVE_SPLITS}
    self.forget_fields = {}
    for split in splits.TRAINED_SENSITIVE_SPLITS:
      for identity_id, field in self._index_rows(split):
        self.split_identities[split].add(identity_id)
        if split == "forget":
          self.forget_fields.setdefault(identity_id, set()).add(field)
    self.record_ids, self.split_of, self.unassigned, self.images = {}, {}, 0, {}

  def _index_rows(self, split):
    import pyarrow.parquet as pq
    for path in _shards(self.root, split):
      for row in pq.read_table(path, columns=["identity_id", "file_name"]).to_pylist():
        yield row["identity_id"], self.captions.get(row["file_name"], {}).get("data_field")

  def role(self, identity_id: str) -> str:
    if identity_id in self.split_identities["forget"]:
      if identity_id in self.split_identities["holdout_association"]:
        return "forget_association"
      return "forget_identity"
    if identity_id in self.split_identities["holdout_identity"]:
      return "holdout_identity"
    return "unseen_identity"  # In the metadata but in no published split.

  def _identity(self, identity_id: str, file_name: str) -> dict:
    if identity_id not in self.identities:
      raise DatasetError(f"{file_name}: identity {identity_id!r} is not in {IDENTITIES_FILE}")
    return self.identities[identity_id]

  def record(self, row: dict, split: str) -> dict:
    file_name, identity_id = row["file_name"], row["identity_id"]
    if file_name in self.record_ids:
      raise DatasetError(f"file_name {file_name!r} appears twice in the released splits")
    record_id = self.record_ids[file_name] = len(self.record_ids)
    self.split_of[file_name] = split
    person = self._identity(identity_id, file_name) if identity_id is not None else {}
    identity = self.identity_index[identity_id] if identity_id is not None else -1
    self.images[identity] = self.images.get(identity, 0) + 1
    record = {"image": row["image"], "record_id": record_id, "identity": identity,
              "image_index": self.images[identity] - 1, "style": -1,
              "name": str(person.get("name", "")), "caption": row["text"]}
    if split in splits.RETAIN_SYNTH_SPLITS:
      return record | {"subset": split, "field": splits.GENERIC, "value": "",
                       "generic_caption": row["text"]}
    meta = self.captions.get(file_name)
    if meta is None:
      raise DatasetError(f"{file_name} ({split}) has no entry in {CAPTIONS_FILE}")
    field = meta.get("data_field")
    if field not in self.fields:
      raise DatasetError(f"{file_name}: field {field!r} is not one of data.fields {self.fields}")
    if file_name not in self.generic:
      raise DatasetError(f"{file_name} ({split}) has no generic caption in {GENERIC_FILE}")
    return record | {"subset": self.role(identity_id), "field": field,
                     "value": _value(meta, person, field, file_name),
                     "generic_caption": self.generic[file_name]}

  def records(self, split: str):
    """Records of one of our splits, from the published split it derives from."""
    if split in splits.RETAIN_SYNTH_SPLITS:
      forget_ids = self.split_identities["forget"]
      for row in read_rows(self.root, "retain_synth"):
        joint = row["identity_id"] is not None and row["identity_id"] in forget_ids
        disjoint = row["identity_id"] is None
        if (split == "retain_joint" and joint) or (split == "retain_disjoint" and disjoint):
          yield self.record(row, split)
        elif split == "retain_disjoint" and not joint:
          self.unassigned += 1  # The official evaluator uses neither split for these.
      return
    for row in read_rows(self.root, split):
      yield self.record(row, split)

  def personas(self) -> list:
    entries = []
    for identity_id, index in self.identity_index.items():
      role = self.role(identity_id)
      person = self.identities[identity_id]
      entries.append({
          "identity": index, "identity_id": identity_id, "name": str(person.get("name", "")),
          "role": role, "attributes": person,
          "forgotten_fields": sorted(self.forget_fields.get(identity_id, ())) if role.startswith(
              "forget") else []})
    return entries


def write_dataset(config, root: str, progress: bool = True) -> None:
  """Writes the dataset directory contents (everything but the manifest) into `root`."""
  released_dir = config.data.released_dir
  if not released_dir or not os.path.isdir(released_dir):
    raise DatasetError(f"data.released_dir={released_dir!r} is not a directory holding the "
                       f"released SALMUBench benchmark data")
  mapper = _Mapper(released_dir, config.data.fields)
  fragile_names = _read_json(released_dir, FRAGILE_FILE)
  with progress_lib.bar(desc="importing SALMUBench", unit="img", enabled=progress) as bar, \
      tempfile.TemporaryDirectory() as downloads:
    layout.write_splits(mapper.records, root, bar, downloads, split_names=[
        s for s in splits.SPLITS if s not in splits.OPTIONAL_SPLITS])
  unknown = [n for n in fragile_names if mapper.split_of.get(n) != "retain_disjoint"]
  if unknown:
    raise DatasetError(f"{FRAGILE_FILE} names {len(unknown)} images not in retain_disjoint "
                       f"(e.g. {unknown[:3]})")
  fragile = sorted(mapper.record_ids[n] for n in fragile_names)
  sizes = {split: len(source) for split, source in layout.open_split_sources(root).items()}
  empty = [s for s in splits.TRAINED_SENSITIVE_SPLITS if not sizes[s]]
  if empty:
    raise DatasetError(f"the released data at {released_dir} leaves {empty} empty")
  personas = mapper.personas()
  io_utils.write_json_atomic(os.path.join(root, layout.PERSONAS_FILE), personas)
  io_utils.write_json_atomic(os.path.join(root, layout.FRAGILE_FILE), fragile)
  io_utils.write_json_atomic(os.path.join(root, RECORD_IDS_FILE), mapper.record_ids)
  card = {
      "name": "salmubench_released", "adapter_version": ADAPTER_VERSION,
      "source": os.path.abspath(released_dir),
      "source_sha256": {name: io_utils.sha256_file(os.path.join(released_dir, name))
                        for name in (IDENTITIES_FILE, CAPTIONS_FILE, GENERIC_FILE, FRAGILE_FILE)},
      "split_sizes": sizes | {"fragile": len(fragile)},
      "retain_synth_unassigned": mapper.unassigned,
      "personas_per_role": {role: sum(p["role"] == role for p in personas)
                            for role in splits.ROLES},
      "fingerprint": fingerprint(config),
  }
  io_utils.write_json_atomic(os.path.join(root, layout.CARD_FILE), card)
