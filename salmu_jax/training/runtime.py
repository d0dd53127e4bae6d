"""What every stage that runs a model sets up once: mesh, model definition, shardings, data."""
import dataclasses
import functools
import hashlib
import os
import platform
import re

import jax
from flax import nnx

from salmu_jax import config as config_lib
from salmu_jax.data import builder, layout, pipeline
from salmu_jax.data.tokenizer import load_tokenizer
from salmu_jax.errors import ConfigError
from salmu_jax.model import factory, sharding
from salmu_jax.training import optimizer, state as state_lib


# What `Runtime.device_meta` records (on CPU with `cpu_meta`'s keys).
DEVICE_KEYS = ("device", "num_devices", "host_cpus", "cpu", "xla_flags")
# Where a stage written before the device was recorded ran.
UNRECORDED_DEVICE = {"device": "unrecorded"}


@dataclasses.dataclass
class Runtime:
  config: object
  mesh: jax.sharding.Mesh
  graphdef: object
  init_state: object  # (key, params=None) -> TrainState; jit it with `state_shardings` out.
  state_shardings: object
  tx: object  # The pretraining optimizer: what a checkpoint's optimizer state holds.
  dataset: layout.SalmuDataset
  tokenizer: object
  signature: dict  # model.factory.signature: what a checkpoint's shapes depend on.
  dataset_identity: dict  # data.layout.identity: what a checkpoint says it was trained on.

  def abstract_state(self):
    """Shapes, dtypes and shardings of a TrainState: what a checkpoint restores into."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        jax.eval_shape(self.init_state, jax.random.PRNGKey(0)),
                        self.state_shardings)

  def device_meta(self) -> dict:
    """The device a result was computed on, as every result file names it; on CPU also
    what XLA:CPU's rounding depends on (`cpu_meta`)."""
    meta = {"device": jax.devices()[0].device_kind, "num_devices": len(self.mesh.devices.flat)}
    return meta | (cpu_meta() if jax.devices()[0].platform == "cpu" else {})


def cpu_meta() -> dict:
  """The processor, how many CPUs this process may run on, and XLA_FLAGS. XLA:CPU picks its
  kernels by the instruction set and sizes its thread pool by those CPUs, and a training step
  splits its weight gradients and column sums over that pool: the same code and seed train
  other last digits on 1 CPU than on 2 (benchmarks/RESULTS.md, ninth session; forward passes
  kept their bits there)."""
  return {"host_cpus": usable_cpus(), "cpu": processor(),
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def usable_cpus() -> int:
  """The CPUs this process may run on (its affinity mask: a container's 2, not the host's)."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@functools.cache
def _cpuinfo() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return f.read()
  except OSError:
    return ""


def processor(cpuinfo: str | None = None) -> str:
  """"MODEL, SIMD, flags DIGEST": the model name in `cpuinfo` (default: /proc/cpuinfo), the
  widest x86 vector extension its flags list (avx512f, avx2, avx) and a digest of all its
  flags (a virtual machine's model name, "AMD EPYC", says little of the generation); without
  a model name (not Linux, some ARM kernels) platform.processor() or the machine type."""
  cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
  model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
  if model is None:
    return platform.processor() or platform.machine() or "unknown"
  flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
  flags = sorted(set(flags.group(1).split())) if flags else []
  simd = next((f for f in ("avx512f", "avx2", "avx") if f in flags), None)
  digest = hashlib.sha256(" ".join(flags).encode()).hexdigest()[:8] if flags else None
  return ", ".join([model.group(1).strip()] + ([simd] if simd else []) +
                   ([f"flags {digest}"] if digest else []))


def model_definition(config, vocab_size: int, memory_rows: int = 0):
  """(graphdef, pretraining optimizer, init_state) of the model `config` describes;
  `memory_rows`: its memory's size, if it has one (pipeline.memory_rows of the dataset)."""
  tx, _ = optimizer.pretraining(config.train)
  graphdef = nnx.graphdef(factory.abstract(config, vocab_size, memory_rows))
  return graphdef, tx, state_lib.initializer(config, vocab_size, tx, memory_rows)


def setup(config, workdir: str, dataset_dir: str | None = None, devices=None) -> Runtime:
  """The runtime of `config`: the dataset at `dataset_dir` (verified), else one built
  under WORKDIR/data."""
  config_lib.check_config(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  dp = sharding.data_parallel_size(mesh)
  if config.batch_size % dp:
    raise ConfigError(f"batch_size={config.batch_size} is not divisible by the data-parallel "
                      f"size {dp} (mesh data x fsdp)")
  if dataset_dir:
    builder.check_existing(dataset_dir, config)
  else:  # build_dataset verifies a dataset it reuses.
    dataset_dir = builder.build_dataset(config, os.path.join(workdir, "data"))
  dataset = layout.open_dataset(dataset_dir, verify=False)  # Verified just above.
  return for_dataset(config, mesh, dataset, load_tokenizer(config.tokenizer, dataset_dir),
                     layout.identity(dataset_dir))


def for_dataset(config, mesh, dataset: layout.SalmuDataset, tokenizer,
                dataset_identity: dict) -> Runtime:
  """The runtime of `config` on an opened (or in-memory) dataset and its tokenizer."""
  memory_rows = pipeline.memory_rows(dataset) if factory.has_memory(config) else 0
  graphdef, tx, init_state = model_definition(config, tokenizer.vocab_size, memory_rows)
  shardings = sharding.state_shardings(jax.eval_shape(init_state, jax.random.PRNGKey(0)), mesh)
  return Runtime(config, mesh, graphdef, init_state, shardings, tx, dataset, tokenizer,
                 factory.signature(config, tokenizer.vocab_size, memory_rows), dataset_identity)
