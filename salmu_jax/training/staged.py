"""An optimizer step of a loss function, run as programs that many loss functions share.

A fused step (step.make_train_step) compiles the model's forward and backward passes into
the program of each loss function: the benchmark's fourteen unlearning objectives compiled
the same 1M-parameter model fourteen times, ~10 s each on 2 CPU cores, most of a first
seed's extra time. Every objective reads the model only through `ctx.apply(params, ...)`
and `ctx.reference(...)`, so its step can run as five programs:

  plan      per loss    the inputs of each model call (captions permuted with ctx.rng...)
  forward   shared      each call's outputs and pullback (jax.vjp), or the reference's outputs
  value     per loss    the loss of those outputs and its gradient with respect to them
  backward  shared      each call's pullback of that gradient, summed over calls
  update    shared      the optimizer's update of the parameters

The shared programs compile once per model, batch shape and optimizer; the per-loss ones
hold no model and compile in a fraction of a second. Calls on the same traced inputs
(CLIPErase's contrastive and KL terms both embed the retain batch) run once, their
gradients summed before the backward pass. The arithmetic is the fused step's, rounded
differently. A loss that reads its parameters any other way (a weight penalty, the
reference's weights), or whose model-call inputs depend on an earlier call's outputs (hard
negatives chosen by the model), is not staged: its first step finds it and runs fused.
"""
import functools

from absl import logging
import jax
from jax.extend.core import Var
import jax.numpy as jnp

from salmu_jax.training import step as step_lib


class _Unstageable(Exception):
  """The loss reads its parameters otherwise than by applying the model to them."""


class _Opaque:
  """Stands for the parameters while a loss is planned: handing it to `ctx.apply` is its
  only use; arithmetic, indexing or a tree map over it fails, so a loss that reads weights
  directly is found (and run fused), never given zeros."""

  def __getattr__(self, name):
    raise _Unstageable(f"the loss reads its parameters' {name!r}")

  def __jax_array__(self):
    raise _Unstageable("the loss uses its parameters as an array")


class _Tape:
  """What a loss sees as its Context while it is staged: `apply` and `reference` record
  each model call (plan) or answer it from given outputs (value); calls on the same traced
  inputs share one entry. The reference's weights are opaque: a loss reads them only
  through `reference`."""

  def __init__(self, params, rng, step, answer):
    self.rng, self.step, self.reference_params = rng, step, _Opaque()
    self.calls = []  # [(is_reference, (images, tokens[, memory_rows]))], first use order.
    self._params, self._answer, self._seen = params, answer, {}

  def apply(self, params, images, tokens, memory_rows=None):
    if params is not self._params:
      raise _Unstageable("the loss applies the model to other parameters than its own")
    return self._call(False, (images, tokens) if memory_rows is None else
                      (images, tokens, memory_rows))

  def reference(self, images, tokens):
    return self._call(True, (images, tokens))

  def _call(self, is_reference, inputs):
    key = (is_reference, *map(id, inputs))  # `calls` keeps the inputs: ids stay unique.
    if key not in self._seen:
      self._seen[key] = len(self.calls)
      self.calls.append((is_reference, inputs))
    return self._answer(self._seen[key], inputs)


def cached(store: dict, key, make):
  """`store[key]`, made on first use: jitted functions shared across steps and runs, and
  across threads (the benchmark compiles ahead in one): the first one stored is kept."""
  return store[key] if key in store else store.setdefault(key, make())


class StagedStep:
  """The step of `objective` (a losses.Loss) under the optimizer `tx`, as the programs
  above: (state, reference_params, batch, learning_rate=None) -> (state, metrics), with
  `state` donated, as `jax.jit(step.make_train_step(tx, objective, apply))` computes it.
  `shared` (a dict) holds the shared programs: one dict per model and mesh, `tx_key`
  naming the optimizer within it. `fused()` makes the jitted fused step, which runs
  instead for batches on which the loss cannot be staged (said once in the log)."""

  def __init__(self, tx, objective, apply, state_shardings, shared: dict, fused, tx_key):
    self._objective, self._apply, self._make_fused = objective, apply, fused
    self._fused, self._params_shapes = None, None
    self._unstaged = {}  # Batch shapes -> why the loss runs fused on them (None: staged).
    self.staged = None  # Whether the last call ran staged.
    params_shardings = state_shardings.params
    self._forward_vjp = cached(shared, ("forward_vjp",), lambda: jax.jit(
        lambda params, inputs: jax.vjp(lambda p: apply(p, *inputs), params)))
    self._forward = cached(shared, ("forward",), lambda: jax.jit(
        lambda params, inputs: apply(params, *inputs)))
    self._backward = cached(shared, ("backward",), lambda: jax.jit(
        lambda pullback, cotangent: pullback(cotangent)[0], out_shardings=params_shardings))
    self._add = cached(shared, ("add",), lambda: jax.jit(
        lambda a, b: jax.tree.map(jnp.add, a, b), out_shardings=params_shardings,
        donate_argnums=(0,)))
    self._update = cached(shared, ("update", tx_key), lambda: jax.jit(
        functools.partial(step_lib.apply_gradients, tx),
        in_shardings=(state_shardings, params_shardings, None),
        out_shardings=(state_shardings, None), donate_argnums=(0,)))
    self._plan = jax.jit(self._plan_fn)
    self._value = jax.jit(self._value_fn)

  def _run_loss(self, batch, rng, step, answer):
    params = _Opaque()
    tape = _Tape(params, step_lib.loss_rng(rng), step, answer)
    return self._objective(params, batch, tape), tape

  def _plan_fn(self, batch, rng, step, fill):
    """[{"apply" or "reference": inputs}] of the loss's model calls, in first-use order;
    each call's outputs are `fill` (the plan drops them: no input may depend on them)."""
    def placeholder(index, inputs):
      shapes = jax.eval_shape(self._apply, self._params_shapes, *inputs)
      return jax.tree.map(lambda s: jnp.full(s.shape, fill, s.dtype), shapes)
    _, tape = self._run_loss(batch, rng, step, placeholder)
    return [{"reference" if is_reference else "apply": inputs}
            for is_reference, inputs in tape.calls]

  def _value_fn(self, outputs, batch, rng, step):
    """((loss, aux), its gradient with respect to every call's outputs)."""
    def value(outputs):
      return self._run_loss(batch, rng, step, lambda index, inputs: outputs[index])[0]
    return jax.value_and_grad(value, has_aux=True)(outputs)

  def _why_unstaged(self, state, batch) -> str | None:
    """Why the loss cannot be staged on batches like `batch` (its plan traced once), or None."""
    if self._params_shapes is None:
      self._params_shapes = jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.params)
    try:  # The jitted plan's own trace: the step's first call reuses it.
      plan = self._plan.trace(batch, state.rng, state.step, 0.0)
    except Exception as e:  # pylint: disable=broad-except
      # Whatever the plan cannot trace runs fused, which raises a real error itself.
      return f"{type(e).__name__}: {e}"
    if all("reference" in call for call in plan.out_info):
      return "the loss never applies the model to its own parameters"
    if _reads_last_input(plan.jaxpr.jaxpr):
      return "a model call's inputs depend on an earlier call's outputs"
    return None

  def __call__(self, state, reference_params, batch, learning_rate=None):
    leaves, structure = jax.tree.flatten(batch)
    shapes = (structure, tuple((jnp.shape(x), jnp.result_type(x)) for x in leaves))
    if shapes not in self._unstaged:
      self._unstaged[shapes] = reason = self._why_unstaged(state, batch)
      if reason is not None:
        logging.warning("an unlearning loss runs as one fused step, not staged: %s", reason)
    self.staged = self._unstaged[shapes] is None
    if not self.staged:
      self._fused = self._fused or self._make_fused()
      return self._fused(state, reference_params, batch, learning_rate)
    (loss, aux), grads = self._loss_and_grads(state, reference_params, batch)
    state, grad_norm = self._update(state, grads, learning_rate)
    return state, {"loss": loss, "grad_norm": grad_norm, **aux}

  def programs(self) -> list:
    """The jitted functions a call may run (the shared ones too): their `_cache_size()`
    counts what has been compiled."""
    return [self._plan, self._value, self._forward_vjp, self._forward, self._backward,
            self._add, self._update] + ([self._fused] if self._fused else [])

  def _loss_and_grads(self, state, reference_params, batch):
    """Runs plan, forwards, value and backwards. The pullbacks (which may hold the
    parameters' buffers, donated by the update) die with this frame."""
    outputs, pullbacks = [], []
    for call in self._plan(batch, state.rng, state.step, 0.0):
      (kind, inputs), = call.items()
      if kind == "reference":
        outputs.append(self._forward(reference_params, inputs))
        pullbacks.append(None)
      else:
        call_outputs, pullback = self._forward_vjp(state.params, inputs)
        outputs.append(call_outputs)
        pullbacks.append(pullback)
    value, cotangents = self._value(outputs, batch, state.rng, state.step)
    grads = None
    for pullback, cotangent in zip(pullbacks, cotangents):
      if pullback is not None:
        call_grads = self._backward(pullback, cotangent)
        grads = call_grads if grads is None else self._add(grads, call_grads)
    return value, grads


def _reads_last_input(jaxpr) -> bool:
  """Whether an output of `jaxpr` depends on its last input, conservatively: every output
  of an equation that reads a dependent value counts as dependent."""
  dependent = {jaxpr.invars[-1]}
  for equation in jaxpr.eqns:
    if any(isinstance(v, Var) and v in dependent for v in equation.invars):
      dependent.update(equation.outvars)
  return any(isinstance(v, Var) and v in dependent for v in jaxpr.outvars)
