"""Gradient-side unlearning tools: importances, saliency masks (applied by
salmu_jax.training.optimizer.masked_updates) and one-shot parameter transforms.

All functions act on arbitrary parameter pytrees, so they apply to any JAX model. The
importances, the saliency mask, SSD's dampening, the task vector's negation and `count_true`
run as jitted programs over the whole tree: run eagerly, every operation compiles once per
parameter shape. The programs compute the eager bits: no multiply and add share one, which
the backend would contract into a fused multiply-add that rounds once.
"""
import jax
import jax.numpy as jnp
import numpy as np


def mean_squared_gradients(grad_fn, params, batches):
  """Diagonal Fisher / importance: mean over batches of grad**2 (`grad_fn(params, batch)`)."""
  total, count = None, 0
  for batch in batches:
    gradients = grad_fn(params, batch)
    squares = _squares(gradients)
    total = squares if total is None else _added(total, squares)
    count += 1
  if count == 0:
    raise ValueError("no batches to estimate importances from")
  return _divided(total, count)


@jax.jit
def _squares(gradients):
  return jax.tree.map(jnp.square, gradients)


@jax.jit
def _added(total, squares):
  return jax.tree.map(jnp.add, total, squares)


@jax.jit
def _divided(tree, count):
  return jax.tree.map(lambda x: x / count, tree)


def saliency_mask(gradients, fraction: float):
  """SalUn: True for the `fraction` of weights (over the whole tree) with the largest |grad|."""
  if not 0 < fraction <= 1:
    raise ValueError(f"saliency fraction {fraction} must lie in (0, 1]")
  size = sum(int(np.size(g)) for g in jax.tree.leaves(gradients))
  return _largest(gradients, max(int(round(fraction * size)), 1))


@jax.jit
def _largest(gradients, k):
  """True for the `k` weights with the largest |gradient| (ties at the threshold included);
  `k` traced, so that every fraction runs one program."""
  flat = jnp.concatenate([jnp.abs(g).ravel() for g in jax.tree.leaves(gradients)])
  threshold = jnp.sort(flat)[flat.size - k]
  return jax.tree.map(lambda g: jnp.abs(g) >= threshold, gradients)


def selective_synaptic_dampening(params, importance_all, importance_forget, alpha: float,
                                 lam: float):
  """SSD (Foster et al. 2024): where I_f > alpha * I_D, theta *= min(lam * I_D / I_f, 1)."""
  return _dampened(params, importance_all, importance_forget, alpha, lam)


@jax.jit
def _dampened(params, importance_all, importance_forget, alpha, lam):
  def dampen(theta, i_all, i_forget):
    selected = i_forget > alpha * i_all
    factor = jnp.minimum(lam * i_all / jnp.where(i_forget > 0, i_forget, 1.0), 1.0)
    return jnp.where(selected, theta * factor, theta)
  return jax.tree.map(dampen, params, importance_all, importance_forget)


def task_vector_negation(params, finetuned, alpha: float):
  """theta_u = theta - alpha * (theta_finetuned - theta) (Ilharco et al. 2023)."""
  return _subtracted(params, _scaled_differences(params, finetuned, alpha))


@jax.jit
def _scaled_differences(params, finetuned, alpha):
  return jax.tree.map(lambda p, f: alpha * (f - p), params, finetuned)


@jax.jit
def _subtracted(params, steps):
  return jax.tree.map(jnp.subtract, params, steps)


def fisher_noise(params, fisher, rng, scale: float = 1e-3, floor: float = 1e-8,
                 max_std: float = 1e-2):
  """Fisher forgetting (Golatkar et al. 2020): Gaussian noise with std
  scale * (F + floor)^(-1/4), capped at max_std; weights the retain data relies on
  (large Fisher) move least."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.tree.unflatten(treedef, list(jax.random.split(rng, len(leaves))))
  def perturb(theta, f, key):
    std = jnp.minimum(scale * jnp.power(f + floor, -0.25), max_std)
    return theta + std * jax.random.normal(key, theta.shape, theta.dtype)
  return jax.tree.map(perturb, params, fisher, keys)


def count_changed(before, after) -> int:
  """How many weights a transform changed (for reports and tests)."""
  return int(sum(np.sum(np.asarray(a) != np.asarray(b))
                 for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))))


def count_true(mask) -> int:
  """How many weights a boolean mask selects."""
  return sum(int(count) for count in jax.device_get(_true_counts(mask)))


@jax.jit
def _true_counts(mask):
  return [jnp.sum(m) for m in jax.tree.leaves(mask)]
