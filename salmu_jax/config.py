"""The one place where every config field is declared, with its default.

Config files in `configs/` start from `base_config()` and change values; they may
not add keys. `check_config` rejects unknown keys and impossible values with a
one-line `ConfigError`, so a typo never silently falls back to a default.
"""
import ml_collections

from salmu_jax.errors import ConfigError

SENSITIVE_FIELDS = (
    "city", "job", "blood_type", "phone_number", "email", "iban", "credit_card", "passport",
)
IMAGE_FORMATS = ("png", "jpeg")
RETAIN_BASE_KINDS = ("procedural", "tfds", "webdataset")
TOKENIZER_KINDS = ("dataset_bpe",)


def base_config() -> ml_collections.ConfigDict:
  """Paper-scale defaults (SALMUBENCH.md §2); smaller configs override sizes."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 256

  data = config.data = ml_collections.ConfigDict()
  data.seed = 0
  # Identities of the sensitive set (forget_identity + partially forgotten + holdout_identity).
  data.num_personas = 774
  # Extra personas in no training mixture, for membership-inference tests (not in the original).
  data.num_unseen = 78
  data.forget_identity_fraction = 0.25  # 193 / 774 in the original.
  data.forget_association_fraction = 0.5  # 387 / 774: some fields forgotten, the rest held out.
  data.forget_fields_per_partial = 4  # Of the 8 fields of a partially forgotten identity.
  data.fields = SENSITIVE_FIELDS
  data.images_per_identity = 78  # Sensitive pairs per persona: 60,053 / 774 in the original.
  data.retain_joint_per_identity = 2  # Generic-caption images of each forget identity (~1k).
  data.num_disjoint_people = 15_700  # retain_disjoint: non-persona people, generic captions.
  data.images_per_disjoint_person = 1
  data.fragile_fraction = 0.1  # Share of retain_disjoint in the fragile set.
  data.image_size = 224
  data.image_format = "jpeg"
  data.jpeg_quality = 95
  data.build_workers = 2  # Processes rendering images while the dataset is written.

  base = data.retain_base = ml_collections.ConfigDict()
  base.kind = "procedural"  # Or "tfds" (name/data_dir/split) or "webdataset" (path).
  base.size = 1 << 24  # Procedural scenes are rendered from their index: no storage.
  base.zeroshot_examples = 10_000  # Held-out GenKnow task of the procedural base.
  base.name = ""
  base.data_dir = ""
  base.split = "train"
  base.path = ""
  base.image_key = "image"
  base.text_key = "caption"

  # Relative sampling weights of the training mixture; 0 removes a source.
  mixture = data.mixture = ml_collections.ConfigDict()
  mixture.retain_base = 0.6
  mixture.retain_synth = 0.2
  mixture.sensitive = 0.2

  augment = data.augment = ml_collections.ConfigDict()
  augment.crop_scale_min = 0.85  # Random crop keeps at least this share of each side.
  augment.brightness = 0.1  # Uniform multiplicative jitter, +-.

  loader = data.loader = ml_collections.ConfigDict()
  loader.num_threads = 2
  loader.prefetch_buffer_size = 64

  tokenizer = config.tokenizer = ml_collections.ConfigDict()
  tokenizer.kind = "dataset_bpe"
  tokenizer.vocab_size = 16_384
  tokenizer.context_length = 77
  tokenizer.scene_captions = 50_000  # Procedural-base captions added to the BPE corpus.
  return config


def _check_keys(config, reference, prefix=""):
  for key in config.keys():
    path = f"{prefix}{key}"
    if key not in reference:
      known = ", ".join(sorted(reference.keys()))
      raise ConfigError(f"unknown config key '{path}'; known keys here: {known}")
    if isinstance(reference[key], ml_collections.ConfigDict):
      if not isinstance(config[key], ml_collections.ConfigDict):
        raise ConfigError(f"config key '{path}' must be a group of fields, got {config[key]!r}")
      _check_keys(config[key], reference[key], path + ".")


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def check_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ConfigError naming the first unknown key or impossible value."""
  _check_keys(config, base_config())
  data = config.data
  for name in ("forget_identity_fraction", "forget_association_fraction"):
    value = data[name]
    _require(0 < value < 1, f"data.{name}={value} must lie strictly between 0 and 1")
  rest = 1 - data.forget_identity_fraction - data.forget_association_fraction
  _require(rest > 0, (
      f"data.forget_identity_fraction + data.forget_association_fraction = "
      f"{1 - rest:g} leaves no holdout_identity personas; keep the sum below 1"))
  unknown = [f for f in data.fields if f not in SENSITIVE_FIELDS]
  _require(not unknown, f"data.fields has unknown field(s) {unknown}; known: {SENSITIVE_FIELDS}")
  _require(len(set(data.fields)) == len(data.fields), f"data.fields repeats a field: {data.fields}")
  _require(len(data.fields) >= 2, f"data.fields={data.fields} needs at least 2 fields to split")
  _require(1 <= data.forget_fields_per_partial < len(data.fields), (
      f"data.forget_fields_per_partial={data.forget_fields_per_partial} must be between 1 and "
      f"{len(data.fields) - 1} so that some fields are forgotten and some held out"))
  _require(data.images_per_identity >= len(data.fields), (
      f"data.images_per_identity={data.images_per_identity} is below the {len(data.fields)} "
      f"fields: every field needs at least one image per persona"))
  for name in ("num_unseen", "retain_joint_per_identity", "num_disjoint_people",
               "images_per_disjoint_person"):
    _require(data[name] >= 1, f"data.{name}={data[name]} must be at least 1")
  _require(0 < data.fragile_fraction < 1,
           f"data.fragile_fraction={data.fragile_fraction} must lie strictly between 0 and 1")
  _require(data.image_size >= 16 and data.image_size % 8 == 0,
           f"data.image_size={data.image_size} must be a multiple of 8, at least 16")
  _require(data.image_format in IMAGE_FORMATS,
           f"data.image_format={data.image_format!r} is not one of {IMAGE_FORMATS}")
  _require(data.retain_base.kind in RETAIN_BASE_KINDS,
           f"data.retain_base.kind={data.retain_base.kind!r} is not one of {RETAIN_BASE_KINDS}")
  for name, weight in data.mixture.items():
    _require(weight >= 0, f"data.mixture.{name}={weight} must not be negative")
  _require(sum(data.mixture.values()) > 0, "data.mixture weights are all 0: nothing to train on")
  _require(0 < data.augment.crop_scale_min <= 1,
           f"data.augment.crop_scale_min={data.augment.crop_scale_min} must be in (0, 1]")
  _require(config.tokenizer.kind in TOKENIZER_KINDS,
           f"tokenizer.kind={config.tokenizer.kind!r} is not one of {TOKENIZER_KINDS}")
  _require(config.tokenizer.context_length >= 8,
           f"tokenizer.context_length={config.tokenizer.context_length} must be at least 8")
  _require(config.batch_size >= 1, f"batch_size={config.batch_size} must be at least 1")
  # Imported here: the split plan depends on this module for the field list.
  from salmu_jax.data import splits
  splits.identity_counts(data)  # Raises if the scale is too small to fill every split.
  return config


def load_config(path: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """Loads `configs/NAME.py` as the CLI does, applies dotted overrides, checks it."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("salmu_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for dotted, value in (overrides or {}).items():
    *parents, leaf = dotted.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    if leaf not in node:
      raise ConfigError(f"unknown config key '{dotted}'")
    node[leaf] = value
  return check_config(config)
