"""One optimizer step of any loss function (salmu_jax.losses.Loss), pure and jittable."""
import math

import jax
import optax

from salmu_jax import losses
from salmu_jax.errors import NonFiniteLoss
from salmu_jax.model import factory, sharding
from salmu_jax.training import optimizer
from salmu_jax.training.state import TrainState


def make_train_step(tx, objective, apply):
  """(state, reference_params, batch, learning_rate=None) -> (state, metrics).

  Pure, so it jits with named shardings and donation. `reference_params` is the frozen
  original model (None when pretraining); `learning_rate`, when given, is the rate of
  an `optimizer.unlearning` chain for this step (an input, so every budget shares one
  compiled step). Every update goes through `tx`; the logit scale is then clamped.
  """
  def train_step(state: TrainState, reference_params, batch, learning_rate=None):
    ctx = losses.Context(reference_params, loss_rng(state.rng), state.step, apply)
    (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params, batch, ctx)
    state, grad_norm = apply_gradients(tx, state, grads, learning_rate)
    return state, {"loss": loss, "grad_norm": grad_norm, **aux}
  return train_step


def loss_rng(rng):
  """The key a step's loss draws from; the state keeps the other half of the split."""
  return jax.random.split(rng)[1]


def apply_gradients(tx, state: TrainState, grads, learning_rate=None):
  """(the state after one update by `grads`, their global norm): every update goes through
  `tx` (at `learning_rate` if given), then the logit scale is clamped."""
  opt_state = state.opt_state if learning_rate is None else \
      optimizer.with_learning_rate(state.opt_state, learning_rate)
  updates, opt_state = tx.update(grads, opt_state, state.params)
  params = factory.clamp_logit_scale(optax.apply_updates(state.params, updates))
  rng, _ = jax.random.split(state.rng)
  return TrainState(state.step + 1, params, opt_state, rng), optax.tree.norm(grads)


def pretraining_step(config, graphdef, tx, state_shardings, mesh):
  """The jitted contrastive step of the reference models, state donated; (state, None,
  {"train": batch}) -> (state, metrics). benchmarks/train_throughput.py times it."""
  return jax.jit(
      make_train_step(tx, losses.contrastive("train", config.train.loss),
                      factory.apply_fn(graphdef)),
      in_shardings=(state_shardings, None, {"train": sharding.batch_sharding(mesh)}),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=(0,))


def check_loss(loss, step: int, what: str, consequence) -> float:
  """`loss` as a float, or NonFiniteLoss saying that `what` diverged at `step` and
  `consequence()` (what was kept, what to do; called only then)."""
  value = float(loss)
  if not math.isfinite(value):
    raise NonFiniteLoss(f"{what} is {value} at step {step}; {consequence()}")
  return value
