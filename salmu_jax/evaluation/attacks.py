"""Does the forgetting survive an attack? Quantization and relearning (docs/protocol.md §3).

- Quantization (Zhang et al., ICLR 2025, arXiv 2410.16454): the weights round-tripped
  through int8 and 4-bit integers, per channel and symmetric; small unlearning updates
  can vanish under the rounding, and the knowledge with them. The efficacy metrics and
  the membership attacks are scored again on the quantized model.
- Relearning (Deeb & Roger, arXiv 2410.08827; Hu et al., arXiv 2406.13356): the forget
  identities split in two halves with the evaluation seed; the model is fine-tuned on the
  first half's pairs for a small fixed budget (the pretraining loss), then RetFail and the
  pair attack are measured on the second half, which the fine-tune never saw. Knowledge
  that was hidden rather than removed comes back; Clean, given the same fine-tune, is the
  control.

Each attack writes raw numbers into the result (`attacks`); how much of the
Compromised-Clean gap comes back is computed against the references' results of the same
attack (diagnosis.py), so a verdict can be rebuilt from the JSON files alone.
"""
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from salmu_jax import losses
from salmu_jax.errors import ConfigError, NonFiniteLoss, NonFiniteModel
from salmu_jax.evaluation import diagnosis, privacy, registry
from salmu_jax.evaluation.context import EvalContext
from salmu_jax.training import staged
from salmu_jax.training.state import TrainState
from salmu_jax.unlearning import runner

ATTACKS = ("quantize", "relearn")
QUANTIZATION_BITS = (8, 4)
# The membership attacks scored again on a quantized model.
MEMBERSHIP_REATTACKED = ("pair", "identity")
RELEARN_HALF_STREAM = 201  # The evaluation seed's stream that splits the forget identities.


def parse_attacks(spec) -> tuple:
  """"quantize,relearn" (or a sequence; "" or "none": no attack) -> the names, checked."""
  names = [n.strip() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
  if names == ["none"]:
    return ()
  if "none" in names:
    raise ConfigError(f"attacks {spec!r}: none means no attack and cannot be combined with "
                      f"others; known: {', '.join(ATTACKS)}")
  unknown = [n for n in names if n not in ATTACKS]
  if unknown or len(set(names)) != len(names):
    raise ConfigError(f"attacks {spec!r}: {'unknown ' + str(unknown) if unknown else 'repeated'}"
                      f"; known: {', '.join(ATTACKS)} (or none)")
  return tuple(n for n in ATTACKS if n in names)


# Weight-only quantization's scope, by parameter name (salmu_jax/model/clip.py): every
# matmul weight and embedding table, with the axes that one scale is shared over. For a
# kernel these are its input axes, so that there is one scale per output channel of its
# dense [in, out] view (qkv: in = width; out: in = heads x head_dim; patches: in = p x p x 3);
# for a table its width, one scale per row (token, position). Everything else (biases,
# norms, the class token, the logit scale) stays float32, as weight-only quantization
# keeps it; a parameter of two or more axes that is not named here is refused, so a new
# weight cannot escape the attack unnoticed.
SCALE_SHARED_OVER = {
    "qkv_kernel": (0,), "out_kernel": (0, 1), "fc_kernel": (0,), "proj_kernel": (0,),
    "patch_kernel": (0, 1, 2), "proj": (0,), "text_projection": (0,),
    "token_embedding": (1,), "positional_embedding": (1,),
    "values": (1,)}  # A memory model's values (model.clip.Memory): one scale per row.
# A memory's keys are its index (content addresses of the stored pairs), not weights a
# deployment quantizes: kept in float32 like the norms.
KEPT_FLOAT32 = ("image_keys", "text_keys")


def quantize_array(weight: jax.Array, bits: int, shared_over: tuple) -> jax.Array:
  """Round trip through signed `bits`-bit integers, symmetric: one scale per index of the
  axes not in `shared_over`, scale = max |w| over `shared_over` / (2^(bits-1) - 1)."""
  levels = 2 ** (bits - 1) - 1
  scale = jnp.max(jnp.abs(weight), axis=shared_over, keepdims=True) / levels
  safe = jnp.where(scale > 0, scale, 1.0)
  return (jnp.clip(jnp.round(weight / safe), -levels, levels) * safe).astype(weight.dtype)


def _parameter_name(path) -> str:
  """The attribute name of a leaf's parameter: the last string key of its path (an
  nnx.State leaf's path ends in `.value`, a pure dict's at the name)."""
  return next((k.key for k in reversed(path) if isinstance(getattr(k, "key", None), str)), "")


def quantization_axes(params) -> list:
  """SCALE_SHARED_OVER's axes for each leaf of `params` (None: kept in float32)."""
  axes = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    name = _parameter_name(path)
    if name in SCALE_SHARED_OVER:
      shared = SCALE_SHARED_OVER[name]
      if max(shared) >= jnp.ndim(leaf) or jnp.ndim(leaf) < 2:
        raise ConfigError(f"parameter {jax.tree_util.keystr(path)} of shape "
                          f"{jnp.shape(leaf)} does not have the axes {shared} that "
                          f"quantization shares a scale over")
      axes.append(shared)
    elif jnp.ndim(leaf) >= 2 and not name.endswith("bias") and name not in KEPT_FLOAT32:
      raise ConfigError(f"parameter {jax.tree_util.keystr(path)} of shape {jnp.shape(leaf)} "
                        f"has no quantization rule in attacks.SCALE_SHARED_OVER")
    else:
      axes.append(None)
  return axes


@functools.partial(jax.jit, static_argnums=(1, 2))
def _quantize_tree(params, bits: int, axes: tuple):
  leaves, treedef = jax.tree.flatten(params)
  return jax.tree.unflatten(treedef, [leaf if shared is None else quantize_array(leaf, bits, shared)
                                      for leaf, shared in zip(leaves, axes)])


def quantize(params, bits: int):
  """`params` with every weight of SCALE_SHARED_OVER `quantize_array`d."""
  if bits not in QUANTIZATION_BITS:
    raise ConfigError(f"quantization to {bits} bits: supported {QUANTIZATION_BITS}")
  return _quantize_tree(params, bits, tuple(quantization_axes(params)))


def _efficacy_and_membership(ctx) -> dict:
  """The five official efficacy headlines and the pair and identity attacks' AUCs."""
  result = {"efficacy": {key: registry.EVALUATORS[f"efficacy/{key}"](ctx)
                         for key in diagnosis.OFFICIAL["efficacy"]}}
  out = {key: diagnosis.headline(result, "efficacy", key) for key in diagnosis.OFFICIAL["efficacy"]}
  if privacy.has_nonmembers(ctx.dataset):
    block = registry.privacy_block(ctx, attacks=MEMBERSHIP_REATTACKED)
    out |= {f"privacy_{name}": block[name]["auc"] for name in MEMBERSHIP_REATTACKED}
  return out


def quantization_attack(evaluator, params) -> dict:
  """The efficacy metrics and membership AUCs of `params` quantized to each of QUANTIZATION_BITS."""
  start = time.perf_counter()
  out = {f"int{bits}": _efficacy_and_membership(EvalContext(evaluator, quantize(params, bits)))
         for bits in QUANTIZATION_BITS}
  return out | {"seconds": round(time.perf_counter() - start, 2)}


def forget_halves(records: list, seed: int) -> tuple:
  """(first-half forget positions, second-half forget positions): the identities of the
  forget split's `records` shuffled with `seed` and cut in two (the first half one
  smaller when their number is odd)."""
  identities = np.array([int(r["identity"]) for r in records])
  people = np.unique(identities)
  if len(people) < 2:
    raise ConfigError(f"the relearning attack needs at least 2 forget identities; the forget "
                      f"split has {len(people)}")
  shuffled = np.random.default_rng([seed, RELEARN_HALF_STREAM]).permutation(people)
  first = np.isin(identities, shuffled[:len(people) // 2])
  return np.flatnonzero(first), np.flatnonzero(~first)


def _second_half(ctx, second: np.ndarray) -> dict:
  """RetFail MRR (RetFail's own ranks, kept on the second half's rows) and the pair
  attack's AUC with the second half's pairs as members."""
  ranks = registry.forget_ranks(ctx)[second]
  out = {"retfail_mrr": float((1.0 / ranks).mean())}
  if privacy.has_nonmembers(ctx.dataset):
    scores = privacy.pair_scores(ctx)
    out["privacy_pair"] = privacy.roc_auc(scores["member"][second], scores["nonmember"])
  return out


class Relearner:
  """Fine-tunes any model of one shape on the first forget half, within a fixed budget
  (`eval.attacks`): forget batches of `unlearn.forget_batch` pairs, the pretraining loss,
  the unlearning optimizer at `relearn_learning_rate`."""

  def __init__(self, evaluator):
    config = evaluator.config.copy_and_resolve_references()
    attacks = config.eval.attacks
    config.unlearn.learning_rate = attacks.relearn_learning_rate
    self.evaluator, self.config = evaluator, config
    self.compiled = staged.cached(evaluator.compiled, runner.program_scope(evaluator.runtime),
                                  dict)
    self.first, self.second = forget_halves(evaluator.inputs.records("forget"),
                                             config.eval.seed)
    self.steps = max(int(attacks.relearn_budget * len(self.first) // config.unlearn.forget_batch), 1)

  def __call__(self, params, before_ctx) -> dict:
    """The second half's RetFail and pair AUC before (from `before_ctx`, the model's own
    EvalContext) and after the fine-tune of `params` (kept: a copy is trained). A fine-tune
    that diverges is recorded as `failed`, with no `after`: the diagnosis then leaves this
    attack unchecked for the model instead of aborting the evaluation."""
    start = time.perf_counter()
    runtime, kind = self.evaluator.runtime, self.config.train.loss
    batches = runner.Batches(runtime, self.config, seed=self.config.eval.seed,
                             batch_sizes={"forget": self.config.unlearn.forget_batch},
                             forget_indices=self.first, streams=self.evaluator.inputs.streams)
    state = TrainState(jnp.zeros((), jnp.int32), params, None,
                       jax.random.PRNGKey(self.config.eval.seed))
    out = {"before": _second_half(before_ctx, self.second), "steps": self.steps,
           "learning_rate": self.config.unlearn.learning_rate,
           "first_half_pairs": int(len(self.first)), "second_half_pairs": int(len(self.second))}
    try:
      state, final = runner.optimize(
          runtime, self.config, self.compiled, state, params,
          losses.contrastive("forget", kind), ("relearn", kind), ("forget",), self.steps,
          batches, show_progress=False)
      out["after"] = _second_half(EvalContext(self.evaluator, state.params), self.second)
      out["final_loss"] = final["loss"]
    except (NonFiniteLoss, NonFiniteModel) as e:
      what = "loss" if isinstance(e, NonFiniteLoss) else "embeddings of the fine-tuned copy"
      out["failed"] = (f"the fine-tune diverged (non-finite {what}) at "
                       f"eval.attacks.relearn_learning_rate={out['learning_rate']:g}")
    return out | {"samples": batches.samples["forget"],
                  "seconds": round(time.perf_counter() - start, 2)}
