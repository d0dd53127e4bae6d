"""User-facing errors: one line that names the offending value and what to do.

Entry points catch `SalmuError` and print its message instead of a traceback.
"""
import functools


class SalmuError(ValueError):
  """Base class of every error caused by bad user input."""


class ConfigError(SalmuError):
  """A config value is unknown, has the wrong type or is impossible."""


class DatasetError(SalmuError):
  """A dataset directory is missing, incomplete, corrupted or mismatched."""


class NonFiniteLoss(SalmuError):
  """The loss became NaN or infinite (usually a learning rate too high); the last good
  checkpoint is kept."""


class NonFiniteModel(SalmuError):
  """A model holds NaN or infinite parameters: never scored (NaN ranks as a perfect
  retrieval) and never saved as a result."""


@functools.cache
def _finite_leaves():
  """The finiteness of every leaf as one jitted program (compiled once per tree structure,
  shapes and shardings), where eager reductions compiled two small programs per leaf shape."""
  import jax
  import jax.numpy as jnp
  return jax.jit(lambda tree: jax.tree.map(lambda x: jnp.isfinite(x).all(), tree))


def non_finite_leaves(params) -> list:
  """Paths of the arrays of `params` holding NaN or Inf. The reduction runs where the
  arrays live (sharded and multi-process arrays included); one boolean per leaf reaches
  the host."""
  import jax
  finite = jax.device_get(_finite_leaves()(params))
  return [jax.tree_util.keystr(path) for path, ok in jax.tree_util.tree_leaves_with_path(finite)
          if not ok]


def check_finite(params, what: str, hint: str = "") -> None:
  """Raises NonFiniteModel naming the first few non-finite leaves of `params`."""
  bad = non_finite_leaves(params)
  if bad:
    raise NonFiniteModel(f"{what} has non-finite parameters in {len(bad)} arrays "
                         f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
                         + (f"; {hint}" if hint else ""))


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint of the last finished step was written. Not a user error:
  the same command resumes from it."""

  def __init__(self, step: int, run_dir: str):
    super().__init__(f"preempted (SIGTERM) at step {step}; checkpoint saved in {run_dir}; "
                     f"run the same command to resume")
    self.step = step
