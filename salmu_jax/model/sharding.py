"""The one place where logical axis names meet mesh axes.

Mesh axes: `data` (pure data parallelism), `fsdp` (data parallelism with
parameters and optimizer state sharded across it), `tensor` (model parallelism
of heads and MLP hidden units). Batches are split over data x fsdp.
"""
import math

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from salmu_jax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical name -> mesh axis (None: replicated). Every parameter name in model/ is here.
LOGICAL_AXIS_RULES = {
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "vocab": "tensor",
    "kv": None,
    "qkv": None,
    "joint": None,
    "norm": None,
    "length": None,
    "patch": None,
    "channels": None,
    "memory": "fsdp",  # Memory rows (one per personal training pair) shard like weights.
}


def make_mesh(mesh_config, devices=None) -> Mesh:
  """A mesh over `devices` (default: all) with sizes from config; -1 takes the rest."""
  devices = list(devices if devices is not None else jax.devices())
  sizes = {axis: int(mesh_config[axis]) for axis in MESH_AXES}
  unknown = [axis for axis, size in sizes.items() if size == -1]
  if len(unknown) > 1:
    raise ConfigError(f"mesh axes {unknown} are all -1; at most one axis can take the rest")
  fixed = math.prod(size for size in sizes.values() if size != -1)
  if any(size == 0 or size < -1 for size in sizes.values()):
    raise ConfigError(f"mesh sizes {sizes} must be positive or -1")
  if unknown:
    if len(devices) % fixed:
      raise ConfigError(f"mesh {sizes}: the fixed axes ({fixed} devices) do not divide the "
                        f"{len(devices)} devices present")
    sizes[unknown[0]] = len(devices) // fixed
  if math.prod(sizes.values()) != len(devices):
    raise ConfigError(
        f"mesh {' x '.join(f'{a}={s}' for a, s in sizes.items())} = {math.prod(sizes.values())} "
        f"devices, but {len(devices)} are present; make the sizes multiply to {len(devices)}")
  grid = np.asarray(devices).reshape([sizes[axis] for axis in MESH_AXES])
  return Mesh(grid, MESH_AXES)


def data_parallel_size(mesh: Mesh) -> int:
  return math.prod(mesh.shape[axis] for axis in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def logical_to_mesh(names, shape, mesh: Mesh) -> P:
  """Maps one parameter's logical names to a PartitionSpec; a dimension that the mesh
  axis does not divide evenly stays replicated (e.g. a 3-way qkv over 2 devices)."""
  spec, used = [], set()
  for name, dim in zip(names, shape):
    if name not in LOGICAL_AXIS_RULES:
      raise ValueError(f"logical axis {name!r} has no rule in LOGICAL_AXIS_RULES")
    axis = LOGICAL_AXIS_RULES[name]
    if axis is None or axis in used or mesh.shape[axis] == 1 or dim % mesh.shape[axis]:
      spec.append(None)
    else:
      spec.append(axis)
      used.add(axis)
  return P(*spec)


def state_shardings(abstract_state, mesh: Mesh):
  """NamedShardings for an (abstract) nnx.State whose Params carry logical names."""
  logical = nnx.get_partition_spec(abstract_state)

  def to_sharding(spec, leaf):
    shape = getattr(leaf, "shape", ())
    names = tuple(spec) if spec is not None else ()
    return NamedSharding(mesh, logical_to_mesh(names, shape, mesh) if names else P())

  return jax.tree.map(to_sharding, logical, abstract_state,
                      is_leaf=lambda x: isinstance(x, P) or x is None)
