"""The baseline unlearning methods of SALMUBENCH.md §5, each a short composition.

A method is an objective trained for the budget's steps plus optional hooks:
`prepare` (before the steps: SalUn's saliency mask) and `finalize` (after them: the
task vector's negation, SSD's dampening). Everything is built from the method's
hyperparameters (`config.unlearn.<name>`, the one place for their defaults: the
papers' values where §5 gives them, docs/protocol.md §4) and the loss kind the model
was pretrained with (`config.train.loss`), so a SigLIP-style model is unlearned with
its own loss. The runner (runner.py) calls the hooks and never names a method.

Hooks receive `tools`, what the runner lends them:
  tools.steps                       the budget's optimizer steps (what `prepare` draws is
                                    taken from them afterwards)
  tools.squared_gradients(names, n) {name: mean squared gradients of the pretraining loss
                                    over n draws of that batch} (forget, retain)
  tools.samples                     samples drawn so far, by batch name
  tools.forget_rows                 the memory rows of the requested forget pairs (a
                                    memory model's, model.clip.Memory)
"""
import dataclasses
from typing import Callable

from salmu_jax.errors import ConfigError
from salmu_jax.training import memory
from salmu_jax.unlearning import objectives as O
from salmu_jax.unlearning import parameter_transforms as T


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  uses: Callable  # hp -> the named batches each step reads ("forget", "retain").
  # (hp, loss_kind) -> the loss trained for the budget's steps; None: no steps (one-shot).
  objective: Callable | None = None
  # (hp, tools, params) -> (update mask, details): before the steps, which move only the
  # weights where the mask is True (an input of the compiled step, shared by every mask).
  prepare: Callable | None = None
  # (hp, tools, original_params, trained_params, loss_kind) -> (params, details).
  finalize: Callable | None = None
  paper: str = ""
  prepare_draws: tuple = ()  # The batches `prepare` draws once (the budget plans for them).


def _with_retain(forget_loss, hp, kind):
  """forget_loss alone, or plus retain_weight * the pretraining loss on retain."""
  if hp.retain_weight > 0:
    return O.weighted(forget=(1.0, forget_loss),
                      retain=(hp.retain_weight, O.contrastive("retain", kind)))
  return forget_loss


def _forget_and_optional_retain(hp):
  return ("forget", "retain") if hp.retain_weight > 0 else ("forget",)


def _always(*names):
  return lambda hp: names


def _saliency_mask(hp, tools, params):
  """SalUn: the `sparsity` share of weights with the largest forget gradient."""
  mask = T.saliency_mask(tools.squared_gradients(("forget",), 1)["forget"], hp.sparsity)
  return mask, {"salient_weights": T.count_true(mask),
                "saliency_samples": tools.samples["forget"]}  # The mask's forget batch.


def _dampen(hp, tools, original, trained, kind):
  """SSD: importances over the budget's batches (at most importance_batches of each).
  The retain data stands in for the training data D, a departure from the paper (D holds
  the forget pairs, about 13% of Compromised's samples at tiny, and the holdout personas,
  which no method may read). An I_D averaging forget and retain batches alike bounds
  I_f / I_D by 2 in expectation, so alpha = 10 would select only weights where two forget
  draws disagree by over 5x (docs/protocol.md §4)."""
  count = max(min(hp.importance_batches, tools.steps), 1)
  importance = tools.squared_gradients(("forget", "retain"), count)
  params = T.selective_synaptic_dampening(trained, importance["retain"], importance["forget"],
                                          hp.alpha, hp.lam)
  return params, {"weights_changed": T.count_changed(trained, params)}


def _negate_task_vector(hp, tools, original, trained, kind):
  return T.task_vector_negation(original, trained, hp.alpha), {}


def _delete_keys(hp, tools, original, trained, kind):
  """MUNKEY's forgetting by design: the requested pairs' memory rows are deleted (keys and
  values zeroed, `valid` 0); no weight changes and no data is read (docs/protocol.md §8)."""
  if "memory" not in trained:
    raise ConfigError("key_deletion needs a memory model (model.memory.enabled, trained with "
                      "it); this model has no memory to delete from")
  params, deleted = memory.delete_rows(trained, tools.forget_rows)
  return params, {"deleted_rows": deleted, "requested_rows": len(tools.forget_rows)}


METHODS = {}


def register(method: Method) -> Method:
  METHODS[method.name] = method
  return method


register(Method("finetune", _always("retain"), lambda hp, kind: O.contrastive("retain", kind),
                paper="Finetuning on retain data only"))
register(Method("neg_grad", _forget_and_optional_retain, lambda hp, kind: _with_retain(
    O.negate(O.contrastive("forget", kind)), hp, kind), paper="Negative Gradient"))
register(Method("shuffled_captions", _always("forget"), lambda hp, kind: O.permute_captions(
    O.contrastive("forget", kind), on="forget"), paper="Shuffled Captions"))
register(Method("generic_captions", _always("forget"), lambda hp, kind: O.with_captions(
    O.contrastive("forget", kind), "forget", "generic_tokens"), paper="Generic Captions"))
register(Method("direct_sim_min", _always("forget"),
                lambda hp, kind: O.direct_similarity("forget"),
                paper="Direct Similarity Minimization"))
register(Method("vlunlearn", _always("forget", "retain"), lambda hp, kind: O.weighted(
    forget=(hp.forget_weight, O.matched_similarity_to_permuted("forget")),
    fused=(hp.fused_weight, O.embedding_distillation("retain", kinds=("fused",))),
    unimodal=(hp.unimodal_weight, O.embedding_distillation("retain", kinds=("image", "text")))),
    paper="VLUnlearn / MultiDelete, arXiv 2311.12047"))
register(Method("clip_erase", _always("forget", "retain"), lambda hp, kind: O.weighted(
    retain=(hp.retain_weight, O.contrastive("retain", kind)),
    forget=(hp.forget_weight, O.direct_similarity("forget")),
    kl=(hp.kl_weight, O.logit_kl("retain"))), paper="CLIPErase, arXiv 2410.23330"))
register(Method("delete", _always("forget"),
                lambda hp, kind: O.masked_logit_distillation("forget"),
                paper="DELETE, arXiv 2503.23751"))
register(Method("grad_diff", _always("forget", "retain"), lambda hp, kind: O.weighted(
    forget=(-hp.forget_weight, O.contrastive("forget", kind)),
    retain=(hp.retain_weight, O.contrastive("retain", kind))), paper="Gradient Difference"))
register(Method("npo", _forget_and_optional_retain, lambda hp, kind: _with_retain(
    O.npo("forget", hp.beta, kind), hp, kind), paper="NPO, Zhang et al. 2024"))
register(Method("simnpo", _forget_and_optional_retain, lambda hp, kind: _with_retain(
    O.simnpo("forget", hp.beta, hp.delta, kind), hp, kind), paper="SimNPO, Fan et al. 2024"))
register(Method("scrub", _always("forget", "retain"), lambda hp, kind: O.alternating(
    max_loss=O.logit_kl("forget"),
    min_loss=O.weighted(ce=(1.0, O.contrastive("retain", kind)),
                        kl=(hp.alpha, O.logit_kl("retain"))),
    max_every=hp.max_every), paper="SCRUB, Kurmanji et al. 2023"))
register(Method("salun", _always("forget", "retain"), lambda hp, kind: O.weighted(
    forget=(1.0, O.permute_captions(O.contrastive("forget", kind), on="forget")),
    retain=(hp.retain_weight, O.contrastive("retain", kind))), prepare=_saliency_mask,
    prepare_draws=("forget",),
    paper="SalUn, Fan et al. 2024: random relabeling (shuffled captions) on salient weights"))
register(Method("ssd", _always("forget", "retain"), finalize=_dampen,
                paper="Selective Synaptic Dampening, Foster et al. 2024"))
register(Method("key_deletion", _always(), finalize=_delete_keys,
                paper="Key deletion in a key-value memory CLIP (MUNKEY's idea, arXiv 2603.15033)"))
register(Method("task_vector", _always("forget"), lambda hp, kind: O.contrastive("forget", kind),
                finalize=_negate_task_vector,
                paper="Task-vector negation, Ilharco et al. 2023"))
