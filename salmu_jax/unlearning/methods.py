"""The baseline unlearning methods of SALMUBENCH.md §5, each a short composition.

A method is either an objective trained for the budget (`objective(hp)` returns a
loss, `uses` names the batches it reads) or a one-shot parameter transform
(`one_shot`). Hyperparameters live in `config.unlearn.<name>`; defaults are the
papers' values where §5 gives them (docs/protocol.md §4 lists every choice).
"""
import dataclasses
from typing import Callable

from salmu_jax.unlearning import objectives as O


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  uses: Callable  # hp -> the named batches the objective reads each step ("forget", "retain").
  objective: Callable | None = None  # hp -> loss
  one_shot: str | None = None  # "ssd" or "task_vector": handled by the runner.
  saliency: bool = False  # SalUn: train only the most forget-salient weights.
  paper: str = ""


def _with_retain(forget_loss, hp):
  """forget_loss alone, or plus retain_weight * contrastive(retain) when retain_weight > 0."""
  if hp.retain_weight > 0:
    return O.weighted(forget=(1.0, forget_loss), retain=(hp.retain_weight, O.contrastive("retain")))
  return forget_loss


def _forget_and_optional_retain(hp):
  return ("forget", "retain") if hp.retain_weight > 0 else ("forget",)


def _always(*names):
  return lambda hp: names


METHODS = {}


def register(method: Method) -> Method:
  METHODS[method.name] = method
  return method


register(Method("finetune", _always("retain"), lambda hp: O.contrastive("retain"),
                paper="Finetuning on retain data only"))
register(Method("neg_grad", _forget_and_optional_retain,
                lambda hp: _with_retain(O.negate(O.contrastive("forget")), hp),
                paper="Negative Gradient"))
register(Method("shuffled_captions", _always("forget"),
                lambda hp: O.permute_captions(O.contrastive("forget"), on="forget"),
                paper="Shuffled Captions"))
register(Method("generic_captions", _always("forget"),
                lambda hp: O.with_captions(O.contrastive("forget"), "forget", "generic_tokens"),
                paper="Generic Captions"))
register(Method("direct_sim_min", _always("forget"), lambda hp: O.direct_similarity("forget"),
                paper="Direct Similarity Minimization"))
register(Method("vlunlearn", _always("forget", "retain"), lambda hp: O.weighted(
    forget=(hp.forget_weight, O.matched_similarity_to_permuted("forget")),
    fused=(hp.fused_weight, O.embedding_distillation("retain", kinds=("fused",))),
    unimodal=(hp.unimodal_weight, O.embedding_distillation("retain", kinds=("image", "text")))),
    paper="VLUnlearn / MultiDelete, arXiv 2311.12047"))
register(Method("clip_erase", _always("forget", "retain"), lambda hp: O.weighted(
    retain=(hp.retain_weight, O.contrastive("retain")),
    forget=(hp.forget_weight, O.direct_similarity("forget")),
    kl=(hp.kl_weight, O.logit_kl("retain"))), paper="CLIPErase, arXiv 2410.23330"))
register(Method("delete", _always("forget"), lambda hp: O.masked_logit_distillation("forget"),
                paper="DELETE, arXiv 2503.23751"))
register(Method("grad_diff", _always("forget", "retain"), lambda hp: O.weighted(
    forget=(-hp.forget_weight, O.contrastive("forget")),
    retain=(hp.retain_weight, O.contrastive("retain"))), paper="Gradient Difference"))
register(Method("npo", _forget_and_optional_retain,
                lambda hp: _with_retain(O.npo("forget", hp.beta), hp),
                paper="NPO, Zhang et al. 2024"))
register(Method("simnpo", _forget_and_optional_retain,
                lambda hp: _with_retain(O.simnpo("forget", hp.beta, hp.delta), hp),
                paper="SimNPO, Fan et al. 2024"))
register(Method("scrub", _always("forget", "retain"), lambda hp: O.alternating(
    max_loss=O.logit_kl("forget"),
    min_loss=O.weighted(ce=(1.0, O.contrastive("retain")), kl=(hp.alpha, O.logit_kl("retain"))),
    max_every=hp.max_every), paper="SCRUB, Kurmanji et al. 2023"))
register(Method("salun", _always("forget", "retain"), lambda hp: O.weighted(
    forget=(1.0, O.permute_captions(O.contrastive("forget"), on="forget")),
    retain=(hp.retain_weight, O.contrastive("retain"))), saliency=True,
    paper="SalUn, Fan et al. 2024: random relabeling (shuffled captions) on salient weights"))
register(Method("ssd", _always("forget", "retain"), one_shot="ssd",
                paper="Selective Synaptic Dampening, Foster et al. 2024"))
register(Method("task_vector", _always("forget"), one_shot="task_vector",
                paper="Task-vector negation, Ilharco et al. 2023"))
