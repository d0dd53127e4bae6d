"""The state an optimizer step carries, and how a run's first state is made."""
import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from salmu_jax.model import factory


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: nnx.State
  opt_state: optax.OptState
  rng: jax.Array  # Split every step and handed to the loss (unlearning losses use it).


def initializer(config, vocab_size: int, tx, memory_rows: int = 0):
  """(key, params=None) -> TrainState of the model `config` describes: random weights
  from `key`, or `params` (imported weights) in their place."""
  def init_state(key, params=None):
    if params is None:
      params = nnx.state(factory.build(config, vocab_size, key, memory_rows))
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params),
                      jax.random.fold_in(key, 1))
  return init_state
