"""The optimizers: AdamW with global-norm clipping and a decay mask, composed with optax.

Pretraining runs it with its warm-up-cosine schedule. Unlearning chains the same
transformations (so the optimizer state of every checkpoint has one structure) at a
unit rate, then its learning rate as an injected hyperparameter (an input of the
compiled step, not a constant, so one compilation serves every budget), then an
optional saliency mask, held in the optimizer state for the same reason (one compilation
serves every mask: every budget and seed of SalUn).
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

NO_DECAY = ("positional_embedding", "class_embedding", "logit_scale", "logit_bias")
LEARNING_RATE = "step_size"  # The injected hyperparameter of `unlearning`'s last link.


def decay_mask(params):
  """Weight decay on matrices only: not on norms and biases (1-D), positions, class token,
  or the logit scale and bias."""
  def decays(path, x):
    names = [str(getattr(k, "key", getattr(k, "name", ""))) for k in path]
    return x.ndim >= 2 and not any(name in NO_DECAY or name.endswith("bias") for name in names)
  return jax.tree_util.tree_map_with_path(decays, params)


class UpdateMaskState(NamedTuple):
  mask: Any  # A boolean tree shaped like the parameters.


def all_true_mask(params):
  """The update mask that moves every weight."""
  return jax.tree.map(lambda p: jnp.ones(jnp.shape(p), bool), params)


def masked_updates() -> optax.GradientTransformation:
  """Zeroes the updates of weights where the mask in its state is False: only the others
  move (SalUn's salient weights). Elementwise, unlike optax.masked, which masks whole
  leaves. The mask starts all True; `with_update_mask` sets it."""
  def init(params):
    return UpdateMaskState(all_true_mask(params))

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, m: jnp.where(m, u, 0), updates, state.mask), state
  return optax.GradientTransformation(init, update)


def _in_memory(path) -> bool:
  return any(getattr(k, "key", None) == "memory" for k in path)


def clip_by_global_norm_apart_from_memory(max_norm: float) -> optax.GradientTransformation:
  """optax.clip_by_global_norm, with a memory model's memory (model.clip.Memory) clipped on
  its own: its rows' gradients, scaled up by value_scale, would otherwise shrink every
  weight's step. A model without a memory goes through optax.clip_by_global_norm itself, so
  it trains bit for bit as before the memory existed (its factor form below rounds
  differently, and 300 steps make that a different model)."""
  plain = optax.clip_by_global_norm(max_norm).update

  def clip(leaves):
    norm = optax.tree.norm(leaves)
    factor = jnp.where(norm > max_norm, max_norm / jnp.maximum(norm, 1e-30), 1.0)
    return [g * factor.astype(g.dtype) for g in leaves]

  def update(updates, state, params=None):
    del params
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(updates)
    groups = [[i for i, (path, _) in enumerate(paths_leaves) if _in_memory(path) == memory]
              for memory in (False, True)]
    if not groups[1]:
      return plain(updates, state)
    out = [leaf for _, leaf in paths_leaves]
    for group in groups:
      for i, leaf in zip(group, clip([out[i] for i in group])):
        out[i] = leaf
    return jax.tree.unflatten(treedef, out), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def adamw(learning_rate, train, *, weight_decay: float, grad_clip_norm: float):
  """Clipping then AdamW (train.b1, b2, eps) at `learning_rate` (a number or schedule)."""
  return optax.chain(
      clip_by_global_norm_apart_from_memory(grad_clip_norm),
      optax.adamw(learning_rate, b1=train.b1, b2=train.b2, eps=train.eps,
                  weight_decay=weight_decay, mask=decay_mask))


def pretraining(train):
  """(optimizer, schedule): linear warm-up and cosine decay to 0 over train.steps."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, train.learning_rate, train.warmup_steps, train.steps, end_value=0.0)
  return adamw(schedule, train, weight_decay=train.weight_decay,
               grad_clip_norm=train.grad_clip_norm), schedule


def unlearning(train, unlearn, masked: bool = False):
  """The unlearning optimizer: `adamw` at rate 1 with unlearn's decay and clipping, then
  the rate, set each step (`with_learning_rate`), then, if `masked`, an update mask
  (SalUn's saliency mask, set by `with_update_mask`). Its first link's state has the
  structure of `pretraining`'s (`base_state`)."""
  # A constant schedule, not the number 1: the pretraining state's structure (a step count).
  links = [adamw(optax.constant_schedule(1.0), train, weight_decay=unlearn.weight_decay,
                 grad_clip_norm=unlearn.grad_clip_norm),
           optax.inject_hyperparams(optax.scale)(**{LEARNING_RATE: 1.0})]
  if masked:
    links.append(masked_updates())
  return optax.chain(*links)


def learning_rate_schedule(unlearn, steps: int):
  """Unlearning's rate: no warm-up, cosine decay to 0 over `steps`."""
  return optax.cosine_decay_schedule(unlearn.learning_rate, steps)


def with_learning_rate(opt_state, learning_rate):
  """`unlearning`'s state with the rate of this step (a traced scalar inside the step)."""
  base, injected, *rest = opt_state
  hyperparams = dict(injected.hyperparams, **{LEARNING_RATE: learning_rate})
  return (base, injected._replace(hyperparams=hyperparams), *rest)


def with_update_mask(opt_state, mask):
  """A masked `unlearning` chain's state with `mask` (a boolean tree like the parameters)."""
  *links, last = opt_state
  if not isinstance(last, UpdateMaskState):
    raise TypeError("with_update_mask needs the state of optimizer.unlearning(masked=True)")
  return (*links, UpdateMaskState(mask))


def base_state(opt_state):
  """The part of an unlearning optimizer state that a checkpoint stores: the structure of
  a pretraining state, so that every kind of run restores alike."""
  return opt_state[0]
