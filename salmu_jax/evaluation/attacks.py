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
from salmu_jax.errors import ConfigError
from salmu_jax.evaluation import diagnosis, privacy, registry
from salmu_jax.evaluation.context import EvalContext
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
  unknown = [n for n in names if n not in ATTACKS]
  if unknown or len(set(names)) != len(names):
    raise ConfigError(f"attacks {spec!r}: {'unknown ' + str(unknown) if unknown else 'repeated'}"
                      f"; known: {', '.join(ATTACKS)} (or none)")
  return tuple(n for n in ATTACKS if n in names)


def quantize_array(weight: jax.Array, bits: int) -> jax.Array:
  """Round trip through signed `bits`-bit integers, symmetric, one scale per channel: per
  index of every axis but the first (the input axis of each kernel, the row axis of the
  embedding tables), scale = max |w| / (2^(bits-1) - 1). Vectors and scalars (biases,
  norms, the logit scale) stay in float32, as weight-only quantization keeps them."""
  if weight.ndim < 2:
    return weight
  levels = 2 ** (bits - 1) - 1
  scale = jnp.max(jnp.abs(weight), axis=0, keepdims=True) / levels
  safe = jnp.where(scale > 0, scale, 1.0)
  return (jnp.clip(jnp.round(weight / safe), -levels, levels) * safe).astype(weight.dtype)


@functools.partial(jax.jit, static_argnums=1)
def _quantize_tree(params, bits: int):
  return jax.tree.map(lambda w: quantize_array(w, bits), params)


def quantize(params, bits: int):
  """`params` with every weight of two or more axes `quantize_array`d."""
  if bits not in QUANTIZATION_BITS:
    raise ConfigError(f"quantization to {bits} bits: supported {QUANTIZATION_BITS}")
  return _quantize_tree(params, bits)


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
    self.evaluator, self.config, self.compiled = evaluator, config, {}
    self.first, self.second = forget_halves(evaluator.inputs.records("forget"),
                                             config.eval.seed)
    self.steps = max(int(attacks.relearn_budget * len(self.first) // config.unlearn.forget_batch), 1)

  def __call__(self, params, before_ctx) -> dict:
    """The second half's RetFail and pair AUC before (from `before_ctx`, the model's own
    EvalContext) and after the fine-tune of `params` (kept: a copy is trained)."""
    start = time.perf_counter()
    runtime, kind = self.evaluator.runtime, self.config.train.loss
    batches = runner.Batches(runtime, self.config, seed=self.config.eval.seed,
                             forget_indices=self.first)
    state = TrainState(jnp.zeros((), jnp.int32), params, None,
                       jax.random.PRNGKey(self.config.eval.seed))
    state, final = runner.optimize(runtime, self.config, self.compiled, state, params,
                                   losses.contrastive("forget", kind), ("relearn", kind),
                                   ("forget",), self.steps, batches, show_progress=False)
    after = EvalContext(self.evaluator, state.params)
    return {"before": _second_half(before_ctx, self.second),
            "after": _second_half(after, self.second),
            "steps": self.steps, "samples": batches.samples["forget"],
            "learning_rate": self.config.unlearn.learning_rate,
            "first_half_pairs": int(len(self.first)), "second_half_pairs": int(len(self.second)),
            "final_loss": final["loss"], "seconds": round(time.perf_counter() - start, 2)}

