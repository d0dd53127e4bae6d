"""The one place where every config field is declared, with its default.

Config files in `configs/` start from `base_config()` and change values; they may
not add keys. `check_config` rejects unknown keys and impossible values with a
one-line `ConfigError`, so a typo never silently falls back to a default.
"""
import math

import ml_collections

from salmu_jax import io_utils
from salmu_jax.errors import ConfigError

SENSITIVE_FIELDS = (
    "city", "job", "blood_type", "phone_number", "email", "iban", "credit_card", "passport",
)
IMAGE_FORMATS = ("png", "jpeg")
DATA_KINDS = ("salmu_synth", "released")
RETAIN_BASE_KINDS = ("procedural", "tfds", "webdataset")
TOKENIZER_KINDS = ("dataset_bpe", "clip_bpe")
REFERENCE_MODELS = ("clean", "compromised")
LOSS_KINDS = ("softmax", "sigmoid")
DTYPES = ("float32", "bfloat16")
ACTIVATIONS = ("gelu", "quick_gelu")
MEMORY_TRAINS = ("memory", "shared")

# OpenCLIP's shapes (model_configs/ViT-*.json), so released weights import exactly.
MODEL_SIZES = {
    "tiny": dict(embed_dim=128, patch_size=16, vision_width=128, vision_layers=3,
                 vision_heads=2, text_width=128, text_layers=3, text_heads=2),
    "S/16": dict(embed_dim=384, patch_size=16, vision_width=384, vision_layers=12,
                 vision_heads=6, text_width=384, text_layers=12, text_heads=6),
    "B/32": dict(embed_dim=512, patch_size=32, vision_width=768, vision_layers=12,
                 vision_heads=12, text_width=512, text_layers=12, text_heads=8),
    "B/16": dict(embed_dim=512, patch_size=16, vision_width=768, vision_layers=12,
                 vision_heads=12, text_width=512, text_layers=12, text_heads=8),
    "L/14": dict(embed_dim=768, patch_size=14, vision_width=1024, vision_layers=24,
                 vision_heads=16, text_width=768, text_layers=12, text_heads=12),
}


# The `eval` values that only turn scores into verdicts (docs/protocol.md §3): the
# leaderboard recomputes every verdict from the stored results, so a benchmark workdir
# may be reused, and its report rebuilt, under other values of these.
DIAGNOSIS_THRESHOLDS = ("ineffective_below", "overgeneralized_below", "catastrophic_drop_fraction",
                        "collapse_spread_ratio", "superficial_recovery_above",
                        "min_attack_gap_fraction", "collateral_efficacy_above")
# Settings that change how fast the stages run, never what they compute (the loader's
# threads, prefetch and caches give the same batches, bit for bit; the evaluator's input
# cache the same inputs): a workdir is reused under other values.
RESULT_NEUTRAL = ("data.loader.num_threads", "data.loader.prefetch_buffer_size",
                  "data.loader.record_cache_mb", "eval.input_cache_mb")


def computation_differences(saved: dict, current: dict) -> list:
  """Dotted keys in which two configs (as JSON dicts) compute differently: `benchmark.*`
  only selects stages and checks, DIAGNOSIS_THRESHOLDS only turn scores into verdicts, and
  RESULT_NEUTRAL only sets speed, so none of them counts."""
  without = lambda config: {k: v for k, v in config.items() if k != "benchmark"} | {
      "eval": {k: v for k, v in config.get("eval", {}).items() if k not in DIAGNOSIS_THRESHOLDS}}
  return [key for key in io_utils.differing_keys(without(saved), without(current))
          if key not in RESULT_NEUTRAL]


def model_config(preset: str, **overrides) -> ml_collections.ConfigDict:
  """The `config.model` group of one of MODEL_SIZES; `size` names it (override for variants)."""
  if preset not in MODEL_SIZES:
    raise ConfigError(f"unknown model size {preset!r}; known: {sorted(MODEL_SIZES)}")
  model = ml_collections.ConfigDict(dict(
      size=preset, **MODEL_SIZES[preset], vision_mlp_ratio=4.0, text_mlp_ratio=4.0,
      activation="gelu", dtype="bfloat16", remat=False, init_logit_bias=-10.0))
  # A key-value memory of the personal training pairs (unlearning by design, MUNKEY's
  # idea; docs/protocol.md §8): one row per pair of the sensitive and retain_synth splits,
  # keys = the pairs' content addresses, values learned; forgetting = key deletion.
  model.memory = ml_collections.ConfigDict(dict(
      enabled=False,
      # Retrieval: softmax over the valid keys whose cosine to the query's content address
      # is at least min_similarity, at this temperature, beside a null row (value 0) there.
      temperature=0.01, min_similarity=0.95,
      # Values move this many times faster than the weights (model.clip.Memory).
      value_scale=32.0,
      # What the pairs held in memory train: "memory" (their values only: the weights
      # learn from the rest, SILO's split) or "shared" (the weights too).
      trains="memory"))
  model.update(overrides)
  return model


def base_config() -> ml_collections.ConfigDict:
  """Paper-scale defaults (SALMUBENCH.md §2); smaller configs override sizes."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 256
  # Which reference model `salmu_jax.train` builds: `configs/X.py:clean` or `:compromised`.
  config.reference = "compromised"

  data = config.data = ml_collections.ConfigDict()
  # "salmu_synth": generated from the fields below; "released": SALMUBench's published
  # benchmark files in data.released_dir (salmu_jax/data/released.py maps them).
  data.kind = "salmu_synth"
  data.released_dir = ""
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

  # Relative sampling weights of the retain sources in every training mixture. The
  # sensitive share is not set here: train.sensitive_exposures fixes it (0 for Clean).
  mixture = data.mixture = ml_collections.ConfigDict()
  mixture.retain_base = 0.75
  mixture.retain_synth = 0.25

  augment = data.augment = ml_collections.ConfigDict()
  augment.crop_scale_min = 0.85  # Random crop keeps at least this share of each side.
  augment.brightness = 0.1  # Uniform multiplicative jitter, +-.

  loader = data.loader = ml_collections.ConfigDict()
  loader.num_threads = 2
  loader.prefetch_buffer_size = 64
  # A training's stored records, decoded and tokenized once, up to this many MB of arrays
  # (pipeline._MadeOnce): all of them at tiny (~20 MB), a few thousand at paper scale.
  loader.record_cache_mb = 512

  config.model = model_config("B/16")

  mesh = config.mesh = ml_collections.ConfigDict()
  mesh.data = -1  # -1: all devices not used by the other axes.
  mesh.fsdp = 1
  mesh.tensor = 1

  train = config.train = ml_collections.ConfigDict()
  train.steps = 20_000
  train.loss = "softmax"
  # Expected number of times Compromised sees each sensitive pair over the run; it sets
  # the sensitive share of the mixture. Clean sees none, with the same steps and batch.
  train.sensitive_exposures = 32.0
  train.learning_rate = 5e-4
  train.warmup_steps = 2_000
  train.weight_decay = 0.2
  train.b1 = 0.9
  train.b2 = 0.98
  train.eps = 1e-6
  train.grad_clip_norm = 1.0
  train.log_every = 50
  train.eval_every = 1_000
  train.eval_examples = 512  # Held-out procedural pairs for the retrieval check.
  train.checkpoint_every = 1_000
  train.keep_checkpoints = 3

  unlearn = config.unlearn = ml_collections.ConfigDict()
  unlearn.forget_batch = 128  # Forget pairs per step (methods that read forget data).
  unlearn.retain_batch = 128  # Retain pairs per step (methods that read retain data).
  unlearn.learning_rate = 1e-5
  unlearn.weight_decay = 0.0
  unlearn.grad_clip_norm = 1.0
  unlearn.log_every = 10
  # Per-method hyperparameters: the papers' values where SALMUBENCH.md §5 gives them.
  unlearn.neg_grad = ml_collections.ConfigDict(dict(retain_weight=0.0))
  unlearn.vlunlearn = ml_collections.ConfigDict(dict(forget_weight=1.0, fused_weight=1.0,
                                                     unimodal_weight=1.0))
  unlearn.clip_erase = ml_collections.ConfigDict(dict(retain_weight=1.0, forget_weight=3.0,
                                                      kl_weight=3.0))
  unlearn.grad_diff = ml_collections.ConfigDict(dict(forget_weight=1.0, retain_weight=1.0))
  unlearn.npo = ml_collections.ConfigDict(dict(beta=0.1, retain_weight=1.0))
  unlearn.simnpo = ml_collections.ConfigDict(dict(beta=2.5, delta=0.0, retain_weight=1.0))
  unlearn.scrub = ml_collections.ConfigDict(dict(alpha=1.0, max_every=2))
  unlearn.salun = ml_collections.ConfigDict(dict(sparsity=0.5, retain_weight=1.0))
  unlearn.ssd = ml_collections.ConfigDict(dict(alpha=10.0, lam=1.0, importance_batches=8))
  unlearn.task_vector = ml_collections.ConfigDict(dict(alpha=1.0))
  for name in ("finetune", "shuffled_captions", "generic_captions", "direct_sim_min", "delete",
               "key_deletion"):
    unlearn[name] = ml_collections.ConfigDict()  # No hyperparameters beyond the shared ones.

  evaluation = config.eval = ml_collections.ConfigDict()
  evaluation.seed = 0  # Galleries, shuffles and probe splits.
  evaluation.batch_size = 256
  # Decoded evaluation inputs kept in memory, so that scoring many models (the benchmark)
  # decodes and renders them once; what does not fit is streamed for every model. The
  # relearning attack's batches are kept up to as much again (pipeline.RecordedStreams).
  evaluation.input_cache_mb = 2_048
  evaluation.gallery_forget = 1_000  # 1.1_RetFail distractors (capped at the split sizes).
  evaluation.gallery_retain = 1_000
  evaluation.probe_fraction = 0.5  # 1.3_ACS: share of pairs fitting the probe.
  # 2.1_GenKnow: "procedural" (the retain base's held-out task) or a local tfds
  # classification dataset (e.g. imagenet2012, cifar10) with a ClassLabel feature.
  genknow = evaluation.genknow = ml_collections.ConfigDict()
  genknow.kind = "procedural"
  genknow.name = ""
  genknow.data_dir = ""
  genknow.split = "test"
  genknow.image_key = "image"
  genknow.label_key = "label"
  genknow.max_examples = 10_000
  # The attacks on forgetting (evaluation/attacks.py, docs/protocol.md §3). Relearning:
  # fine-tuning on the first forget half for this many passes over its pairs, at this rate.
  attacks = evaluation.attacks = ml_collections.ConfigDict()
  attacks.relearn_budget = 2.0
  attacks.relearn_learning_rate = 1e-3
  # Failure-mode thresholds (docs/protocol.md §3), each relative to the references so
  # that it means the same at every scale.
  evaluation.ineffective_below = 0.5  # Normalized RetFail MRR: under half-way to Clean.
  # Holdout retrieval MRR kept, 0 = Clean (never learned), 1 = Compromised: under this on
  # either holdout split, more than half of what only Compromised knew is gone.
  evaluation.overgeneralized_below = 0.5
  # GenKnow above chance lost, as a share of Compromised's (the original's 0.05 absolute
  # on ImageNet's 0.638 is 0.08 of it).
  evaluation.catastrophic_drop_fraction = 0.1
  # Image or caption spread (1 - mean cosine between different items) under this share
  # of the lower reference's: the representation has collapsed.
  evaluation.collapse_spread_ratio = 0.5
  # An attack on forgetting (evaluation/attacks.py) that brings back more than this share
  # of the Compromised-Clean RetFail gap shows the forgetting was superficial.
  evaluation.superficial_recovery_above = 0.5
  # An attack under which the references keep less than this share of their RetFail gap
  # cannot tell hidden knowledge from removed: its verdict is left unchecked.
  evaluation.min_attack_gap_fraction = 0.25
  # A deletion request's run whose RetFail efficacy on the forget pairs not yet requested
  # lies above this (its whole bootstrap interval) erased people who did not ask.
  evaluation.collateral_efficacy_above = 0.25

  # salmu_jax.benchmark: what it runs, and the soundness criteria it checks (docs/protocol.md §5).
  benchmark = config.benchmark = ml_collections.ConfigDict()
  # Comma-separated names of unlearning.methods.METHODS, "post_hoc" (every method that unlearns
  # the trained Compromised) or "all" (and key_deletion, unlearning by design: its memory
  # references are two more trainings per seed, a third of a seed's wall time at tiny).
  benchmark.methods = "post_hoc"
  benchmark.budgets = (1.0, 5.0)  # Multiples of |forget| samples (docs/protocol.md §4).
  benchmark.seeds = 1  # Training and unlearning seeds config.seed, config.seed + 1, ...
  # Compromised's RetFail MRR, and its holdout retrieval MRR, over Clean's, at least.
  benchmark.min_retfail_ratio = 5.0
  benchmark.min_assocstr_gap = 0.1  # Compromised's AssocStr minus Clean's, at least.
  # |Compromised - Clean| on GenKnow as a share of their mean accuracy above chance, at most.
  benchmark.max_genknow_gap_fraction = 0.1
  # Compromised's pair membership AUC minus Clean's, at least (the attack must see training).
  benchmark.min_membership_auc_gap = 0.25
  benchmark.rank_confidence = 0.9  # Rank intervals: the central share of the seed bootstrap.
  # The attacks on forgetting scored for every model (evaluation/attacks.py): comma-separated
  # of quantize, relearn; "none" for none. Relearning costs 11% of the tiny benchmark's
  # stages, quantization 9% more and changes no verdict at tiny scale (README), so it is
  # asked for with --attacks=quantize,relearn (2026-12-01, 2 cores).
  benchmark.attacks = "relearn"
  # "salmubench", or MUSE's deletion requests (docs/protocol.md §4-5): "scalability" (nested
  # requests of 10-100% of the forget split, each from Compromised) or "sustainability"
  # (four disjoint requests, each from the previous one's model). A request mode runs every
  # method once per request, so it has its own budgets and seeds.
  benchmark.mode = "salmubench"
  benchmark.request_budgets = (1.0,)
  benchmark.request_seeds = 1
  # A request's checkpoint is removed once it is scored and, over time, the next request
  # has run from it (its unlearn.json and result stay): ~15 MB per run at tiny.
  benchmark.keep_request_checkpoints = False
  # Every unlearning run of one seed draws the same forget and retain batches: they are
  # decoded, rendered and augmented once and replayed to the other runs (bit for bit the
  # same data), up to this many MB per seed (0: every run draws its own). ~60 MB at tiny.
  benchmark.batch_cache_mb = 1_024
  # The reference trainings of one seed draw the same procedural retain-base scenes (the
  # training seed only shuffles the dataset seed's scenes): each is rendered once and kept
  # for the seed's next trainings, up to this many MB, the first ones kept (0: each training
  # renders its own). One seed's at tiny (64 px): ~350 MB, released before its scoring.
  benchmark.scene_cache_mb = 1_024
  # Compile the next methods' unlearning steps in a background thread while the current
  # ones run and are scored (one step on zeros each: a second training state is held
  # meanwhile; turn off where accelerator memory is short; a mesh of several devices or
  # processes never does it). Results do not change on CPU; on a GPU, kernels autotuned
  # while another program runs may be other kernels, with other last bits.
  benchmark.compile_ahead = True

  tokenizer = config.tokenizer = ml_collections.ConfigDict()
  # "dataset_bpe": a BPE trained on the dataset's captions (vocab_size below);
  # "clip_bpe": OpenAI CLIP's (49,408 ids, open_clip's exact ids) for imported models.
  tokenizer.kind = "dataset_bpe"
  tokenizer.vocab_path = ""  # clip_bpe: bpe_simple_vocab_16e6.txt.gz; "": open_clip's copy.
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


# Ranges of the methods' hyperparameters, by name (the same name means the same thing in
# every method): (lowest, highest, what the error says).
UNLEARN_RANGES = {
    "beta": (0, math.inf, "positive (NPO and SimNPO divide by it)"),
    "sparsity": (1e-9, 1, "in (0, 1]: the share of weights SalUn trains"),
    "max_every": (1, math.inf, "an integer of at least 1: every max_every-th step ascends"),
    "importance_batches": (1, math.inf, "at least 1"),
    "alpha": (0, math.inf, "non-negative"),
    "lam": (0, math.inf, "non-negative: SSD scales weights by min(lam * I_D / I_f, 1)"),
    "retain_weight": (0, math.inf, "non-negative"),
    "forget_weight": (0, math.inf, "non-negative"),
    "kl_weight": (0, math.inf, "non-negative"),
    "fused_weight": (0, math.inf, "non-negative"),
    "unimodal_weight": (0, math.inf, "non-negative"),
}


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def finite_number(value) -> bool:
  """An int or float, finite (a bool is not one, though Python says it is; an int too large
  for a float is not finite for what reads it)."""
  if not isinstance(value, (int, float)) or isinstance(value, bool):
    return False
  try:
    return math.isfinite(value)
  except OverflowError:
    return False


def _count(value) -> bool:
  """A non-negative int (a bool is not one, though Python says it is)."""
  return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _positive_rate(value, name: str) -> None:
  _require(finite_number(value) and value > 0, f"{name}={value} must be a positive, finite number")


def check_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ConfigError naming the first unknown key or impossible value."""
  _check_keys(config, base_config())
  data = config.data
  _require(data.kind in DATA_KINDS, f"data.kind={data.kind!r} is not one of {DATA_KINDS}")
  _require(data.kind != "released" or config.tokenizer.kind == "clip_bpe",
           f"data.kind='released' needs tokenizer.kind='clip_bpe' (got "
           f"{config.tokenizer.kind!r}): the released models read OpenAI CLIP's tokens")
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
    _require(finite_number(weight) and weight >= 0,
             f"data.mixture.{name}={weight} must be a finite, non-negative weight")
  for name in ("num_threads", "prefetch_buffer_size", "record_cache_mb"):
    value = data.loader[name]
    _require(_count(value),
             f"data.loader.{name}={value!r} must be a non-negative integer")
  _require(sum(data.mixture.values()) > 0, "data.mixture weights are all 0: nothing to train on")
  _require(config.reference in REFERENCE_MODELS,
           f"reference={config.reference!r} is not one of {REFERENCE_MODELS}")
  model = config.model
  _require(model.dtype in DTYPES, f"model.dtype={model.dtype!r} is not one of {DTYPES}")
  _require(model.activation in ACTIVATIONS,
           f"model.activation={model.activation!r} is not one of {ACTIVATIONS}")
  _require(data.image_size % model.patch_size == 0,
           f"data.image_size={data.image_size} is not divisible by model.patch_size={model.patch_size}")
  for tower in ("vision", "text"):
    for part in ("width", "heads", "layers"):
      value = model[f"{tower}_{part}"]
      _require(isinstance(value, int) and value >= 1,
               f"model.{tower}_{part}={value!r} must be a positive integer")
    width, heads = model[f"{tower}_width"], model[f"{tower}_heads"]
    _require(width % heads == 0, f"model.{tower}_width={width} is not divisible by "
                                 f"model.{tower}_heads={heads}")
  for name in ("embed_dim", "patch_size"):
    _require(isinstance(model[name], int) and model[name] >= 1,
             f"model.{name}={model[name]!r} must be a positive integer")
  memory = model.memory
  _require(isinstance(memory.enabled, bool), f"model.memory.enabled={memory.enabled!r} must be a bool")
  _require(finite_number(memory.temperature) and memory.temperature > 0,
           f"model.memory.temperature={memory.temperature} must be a positive number")
  _require(finite_number(memory.min_similarity) and -1 < memory.min_similarity < 1,
           f"model.memory.min_similarity={memory.min_similarity} must lie strictly between -1 and 1")
  _require(finite_number(memory.value_scale) and memory.value_scale > 0,
           f"model.memory.value_scale={memory.value_scale} must be a positive number")
  _require(memory.trains in MEMORY_TRAINS,
           f"model.memory.trains={memory.trains!r} is not one of {MEMORY_TRAINS}")
  for name in ("vision_mlp_ratio", "text_mlp_ratio"):
    if name in model:
      _require(finite_number(model[name]) and model[name] > 0,
               f"model.{name}={model[name]} must be a positive number")
  train = config.train
  _positive_rate(train.learning_rate, "train.learning_rate")
  _positive_rate(config.unlearn.learning_rate, "unlearn.learning_rate")
  for group in (train, config.unlearn):
    prefix = "train" if group is train else "unlearn"
    _require(finite_number(group.grad_clip_norm) and group.grad_clip_norm > 0,
             f"{prefix}.grad_clip_norm={group.grad_clip_norm} must be a positive number")
    _require(finite_number(group.weight_decay) and group.weight_decay >= 0,
             f"{prefix}.weight_decay={group.weight_decay} must be a non-negative number")
  for name in ("b1", "b2"):
    _require(finite_number(train[name]) and 0 <= train[name] < 1,
             f"train.{name}={train[name]} must lie in [0, 1)")
  _require(finite_number(train.eps) and train.eps > 0, f"train.eps={train.eps} must be positive")
  _require(train.loss in LOSS_KINDS, f"train.loss={train.loss!r} is not one of {LOSS_KINDS}")
  _require(train.steps >= 1, f"train.steps={train.steps} must be at least 1")
  _require(0 <= train.warmup_steps <= train.steps,
           f"train.warmup_steps={train.warmup_steps} must lie in [0, train.steps={train.steps}]")
  _require(train.sensitive_exposures >= 0,
           f"train.sensitive_exposures={train.sensitive_exposures} must not be negative")
  for name in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "eval_examples"):
    _require(train[name] >= 1, f"train.{name}={train[name]} must be at least 1")
  _require(config.eval.genknow.kind in ("procedural", "tfds"),
           f"eval.genknow.kind={config.eval.genknow.kind!r} is not one of ('procedural', 'tfds')")
  for name in DIAGNOSIS_THRESHOLDS:
    _require(0 < config.eval[name] < 1, f"eval.{name}={config.eval[name]} must lie strictly "
                                        f"between 0 and 1")
  _require(0 < config.benchmark.rank_confidence < 1, f"benchmark.rank_confidence="
           f"{config.benchmark.rank_confidence} must lie strictly between 0 and 1")
  attacks = config.eval.attacks
  _require(0 < attacks.relearn_budget <= 100, f"eval.attacks.relearn_budget="
           f"{attacks.relearn_budget} must lie in (0, 100] passes over the first forget half")
  _require(0 < attacks.relearn_learning_rate < 1, f"eval.attacks.relearn_learning_rate="
           f"{attacks.relearn_learning_rate} must lie strictly between 0 and 1")
  _require(0 < config.eval.probe_fraction < 1,
           f"eval.probe_fraction={config.eval.probe_fraction} must lie strictly between 0 and 1")
  for name in ("batch_size", "input_cache_mb"):
    _require(isinstance(config.eval[name], int) and config.eval[name] >= (name == "batch_size"),
             f"eval.{name}={config.eval[name]!r} must be a "
             f"{'positive' if name == 'batch_size' else 'non-negative'} integer")
  _require(isinstance(config.benchmark.compile_ahead, bool), f"benchmark.compile_ahead="
           f"{config.benchmark.compile_ahead!r} must be True or False")
  for name in ("batch_cache_mb", "scene_cache_mb"):
    value = config.benchmark[name]
    _require(_count(value),
             f"benchmark.{name}={value!r} must be a non-negative integer")
  for name in ("gallery_forget", "gallery_retain"):
    _require(isinstance(config.eval[name], int) and config.eval[name] >= 0,
             f"eval.{name}={config.eval[name]!r} must be a non-negative integer")
  _require(1 <= data.jpeg_quality <= 100,
           f"data.jpeg_quality={data.jpeg_quality} must lie in 1 .. 100")
  _require(config.tokenizer.vocab_size >= 64,
           f"tokenizer.vocab_size={config.tokenizer.vocab_size} must be at least 64")
  unlearn = config.unlearn
  for name in ("forget_batch", "retain_batch", "log_every"):
    _require(isinstance(unlearn[name], int) and unlearn[name] >= 1,
             f"unlearn.{name}={unlearn[name]!r} must be a positive integer")
  for name, group in unlearn.items():
    if isinstance(group, ml_collections.ConfigDict):
      for key, value in group.items():
        _require(finite_number(value), f"unlearn.{name}.{key}={value!r} must be a finite number")
        low, high, what = UNLEARN_RANGES.get(key, (-math.inf, math.inf, ""))
        _require(low <= value <= high and (key != "max_every" or isinstance(value, int)) and
                 (key not in ("beta",) or value > 0),
                 f"unlearn.{name}.{key}={value!r} must be {what}")
  for axis in ("data", "fsdp", "tensor"):
    _require(config.mesh[axis] == -1 or config.mesh[axis] >= 1,
             f"mesh.{axis}={config.mesh[axis]} must be -1 or at least 1")
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


def with_reference(config: ml_collections.ConfigDict, arg: str | None):
  """Applies the `:clean` / `:compromised` suffix of a config path (none: keep the default)."""
  if arg:
    if arg not in REFERENCE_MODELS:
      raise ConfigError(f"config argument {arg!r} is not one of {REFERENCE_MODELS}")
    config.reference = arg
  return config


def load_config(path: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """Loads `configs/NAME.py[:ARG]` as the CLI does, applies dotted overrides, checks it."""
  import importlib.util
  path, _, arg = path.partition(":")
  spec = importlib.util.spec_from_file_location("salmu_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  for dotted, value in (overrides or {}).items():
    *parents, leaf = dotted.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    if leaf not in node:
      raise ConfigError(f"unknown config key '{dotted}'")
    try:
      node[leaf] = value
    except TypeError as e:  # ConfigDict keeps each field's type.
      raise ConfigError(f"config key {dotted}={value!r} has the wrong type "
                        f"(expected {type(node[leaf]).__name__})") from e
  return check_config(config)
