"""Unlearning objectives as pure loss functions and loss transforms.

A loss is a pure function `(params, batch, ctx) -> (scalar, aux)`:
  params  the model being unlearned (any pytree `ctx.apply` accepts)
  batch   named batches, e.g. {"forget": {"image", "tokens", "generic_tokens"},
          "retain": {"image", "tokens"}}
  ctx     a `Context`: the frozen reference parameters, an RNG key, the step, and
          `apply(params, images, tokens) -> (image_emb, text_emb, log_scale, logit_bias)`.
A transform maps losses to losses, so objectives compose like optax transformations:

  objective = weighted(retain=(1.0, contrastive("retain", "softmax")),
                       forget=(3.0, direct_similarity("forget")))
  objective = negate(contrastive("forget", "softmax"))
  objective = npo("forget", beta=0.1, kind="softmax")

The reference model is read only through `ctx.reference(...)`, which stops its
gradient: it is frozen by construction and stored once, outside the optimizer.
"""
import jax
import jax.numpy as jnp

from salmu_jax import losses

# The loss-function protocol and the pretraining loss, defined in salmu_jax.losses (where
# pretraining reads them too) and part of this module's vocabulary.
Context, Loss, contrastive = losses.Context, losses.Loss, losses.contrastive


def _pairwise(outputs):
  """In-batch logits image->text [B, B] from apply's outputs."""
  image_emb, text_emb, log_scale, _ = outputs
  return losses.similarity_logits(image_emb, text_emb, log_scale)


def _tokens_length(tokens):
  return jnp.maximum((tokens != 0).sum(-1), 1).astype(jnp.float32)


# ---- base losses (and losses.contrastive, the pretraining loss) ----------------------------

def direct_similarity(on: str) -> Loss:
  """Mean cos(image, its caption) on batch[on]: minimizing it is Direct Similarity Min."""
  def loss(params, batch, ctx):
    part = batch[on]
    image_emb, text_emb, _, _ = ctx.apply(params, part["image"], part["tokens"])
    value = jnp.einsum("nd,nd->n", image_emb, text_emb).mean()
    return value, {f"similarity_{on}": value}
  return loss


def embedding_distillation(on: str, kinds=("image", "text", "fused")) -> Loss:
  """MSE between current and reference embeddings on batch[on] (MultiDelete's retain terms).
  `fused` is normalize((image + text) / 2)."""
  def loss(params, batch, ctx):
    part = batch[on]
    current = ctx.apply(params, part["image"], part["tokens"])
    frozen = ctx.reference(part["image"], part["tokens"])
    def embeddings(out):
      fused = out[0] + out[1]
      return {"image": out[0], "text": out[1],
              "fused": fused / jnp.linalg.norm(fused, axis=-1, keepdims=True).clip(1e-12)}
    now, then = embeddings(current), embeddings(frozen)
    terms = {k: jnp.mean(jnp.sum(jnp.square(now[k] - then[k]), -1)) for k in kinds}
    return sum(terms.values()), {f"distill_{k}_{on}": v for k, v in terms.items()}
  return loss


def logit_kl(on: str) -> Loss:
  """KL(p_reference || p_current) of the in-batch softmax, image->text plus text->image
  (CLIPErase's retain term)."""
  def loss(params, batch, ctx):
    part = batch[on]
    current = _pairwise(ctx.apply(params, part["image"], part["tokens"]))
    frozen = _pairwise(ctx.reference(part["image"], part["tokens"]))
    value = kl_divergence(frozen, current, axis=1) + kl_divergence(frozen, current, axis=0)
    return value, {f"kl_{on}": value}
  return loss


def kl_divergence(reference_logits, current_logits, axis: int):
  """Mean over rows of KL(softmax(reference) || softmax(current)) along `axis`."""
  p_log = jax.nn.log_softmax(reference_logits, axis=axis)
  q_log = jax.nn.log_softmax(current_logits, axis=axis)
  return jnp.sum(jnp.exp(p_log) * (p_log - q_log), axis=axis).mean()


def masked_logit_distillation(on: str) -> Loss:
  """DELETE's decoupled distillation: the model's full in-batch softmax (both directions)
  is pulled toward the reference's with each row's true pair masked out. The true pair's
  target probability is 0, so it is forgotten, while the non-target knowledge (the
  reference's ranking of the other captions) is kept. (Masking the model's logits too
  would leave the true pair free: the loss would start at its minimum, gradient 0.)"""
  def loss(params, batch, ctx):
    part = batch[on]
    current = _pairwise(ctx.apply(params, part["image"], part["tokens"]))
    frozen = _pairwise(ctx.reference(part["image"], part["tokens"]))
    mask = jnp.eye(current.shape[0], dtype=bool) * -1e9
    value = kl_divergence(frozen + mask, current, axis=1) + \
        kl_divergence(frozen + mask, current, axis=0)
    return value, {f"masked_kl_{on}": value}
  return loss


def matched_similarity_to_permuted(on: str) -> Loss:
  """MultiDelete's forget term: MSE of s_u(I, T) toward stop_grad(s_o(I, permuted T))."""
  def loss(params, batch, ctx):
    part = batch[on]
    permutation = jax.random.permutation(ctx.rng, part["tokens"].shape[0])
    image_emb, text_emb, scale, _ = ctx.apply(params, part["image"], part["tokens"])
    ref_image, ref_text, ref_scale, _ = ctx.reference(part["image"], part["tokens"][permutation])
    current = jnp.exp(scale) * jnp.einsum("nd,nd->n", image_emb, text_emb)
    target = jnp.exp(ref_scale) * jnp.einsum("nd,nd->n", ref_image, ref_text)
    value = jnp.mean(jnp.square(current - jax.lax.stop_gradient(target)))
    return value, {f"permuted_similarity_{on}": value}
  return loss


def per_pair_contrastive(params, part, apply, kind: str):
  """Sequence-level loss of each pair, shape [B]: its share of the pretraining loss
  `kind` (symmetric InfoNCE per pair, or SigLIP's terms of its row)."""
  return losses.PER_EXAMPLE[kind](*apply(params, part["image"], part["tokens"]))


# ---- transforms ---------------------------------------------------------------------------

def negate(loss: Loss) -> Loss:
  """Gradient ascent on `loss`."""
  def negated(params, batch, ctx):
    value, aux = loss(params, batch, ctx)
    return -value, aux
  return negated


def scale(weight: float, loss: Loss) -> Loss:
  def scaled(params, batch, ctx):
    value, aux = loss(params, batch, ctx)
    return weight * value, aux
  return scaled


def weighted(**terms) -> Loss:
  """sum_k w_k * loss_k for terms given as name=(weight, loss); aux reports each term."""
  def combined(params, batch, ctx):
    total, aux = 0.0, {}
    for name, (weight, loss) in terms.items():
      value, term_aux = loss(params, batch, ctx)
      total = total + weight * value
      aux |= term_aux | {f"term_{name}": value}
    return total, aux
  return combined


def with_captions(loss: Loss, on: str, caption_key: str) -> Loss:
  """Caption substitution: batch[on]'s captions replaced by batch[on][caption_key]
  (Generic Captions uses each image's generic caption)."""
  def substituted(params, batch, ctx):
    part = batch[on] | {"tokens": batch[on][caption_key]}
    return loss(params, batch | {on: part}, ctx)
  return substituted


def permute_captions(loss: Loss, on: str) -> Loss:
  """Caption permutation: batch[on]'s captions shuffled with ctx.rng (Shuffled Captions)."""
  def permuted(params, batch, ctx):
    perm = jax.random.permutation(ctx.rng, batch[on]["tokens"].shape[0])
    return loss(params, batch | {on: batch[on] | {"tokens": batch[on]["tokens"][perm]}}, ctx)
  return permuted


def npo(on: str, beta: float, kind: str) -> Loss:
  """Negative Preference Optimization on per-pair (sequence-level) pretraining losses of
  `kind`: -(2/beta) mean log sigmoid(beta * (l_current - l_reference)); (2/beta) log 2 at
  the start."""
  def loss(params, batch, ctx):
    current = per_pair_contrastive(params, batch[on], ctx.apply, kind)
    frozen = losses.PER_EXAMPLE[kind](*ctx.reference(batch[on]["image"], batch[on]["tokens"]))
    value = -(2 / beta) * jax.nn.log_sigmoid(beta * (current - frozen)).mean()
    return value, {f"npo_{on}": value}
  return loss


def simnpo(on: str, beta: float, delta: float, kind: str) -> Loss:
  """SimNPO: reference-free, length-normalized NPO on per-pair losses of `kind`:
  -(2/beta) mean log sigmoid(beta * (l_current / caption_length - delta))."""
  def loss(params, batch, ctx):
    current = per_pair_contrastive(params, batch[on], ctx.apply, kind)
    normalized = current / _tokens_length(batch[on]["tokens"])
    value = -(2 / beta) * jax.nn.log_sigmoid(beta * (normalized - delta)).mean()
    return value, {f"simnpo_{on}": value}
  return loss


def alternating(max_loss: Loss, min_loss: Loss, max_every: int) -> Loss:
  """SCRUB's schedule: every `max_every`-th step ascends `max_loss`, the others descend
  `min_loss` (both are traced; the step picks one)."""
  def loss(params, batch, ctx):
    up, up_aux = max_loss(params, batch, ctx)
    down, down_aux = min_loss(params, batch, ctx)
    is_max = ctx.step % max_every == 0
    return jnp.where(is_max, -up, down), up_aux | down_aux | {"max_step": is_max}
  return loss
