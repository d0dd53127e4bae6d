"""Multi-process JAX: one process per host (or per accelerator), all running one command.

Each command-line stage (train, unlearn, benchmark) calls `initialize_from_flags()`
before any JAX computation. With `--distributed`, jax.distributed.initialize() finds the
coordinator, process count and process id itself (Cloud TPU pods, SLURM, Open MPI);
elsewhere pass `--coordinator_address`, `--num_processes` and `--process_id` (what
launch/local.py does). Training then reads this process's shard of every batch,
builds global arrays from process-local data, writes orbax checkpoints from all
processes together and logs from process 0 only.
"""
import jax
from absl import flags

from salmu_jax.errors import ConfigError


def define_flags() -> None:
  """The distributed flags, for a CLI's `__main__` block."""
  flags.DEFINE_bool("distributed", False, "Initialize jax.distributed with automatic "
                    "detection (Cloud TPU pods, SLURM, Open MPI).")
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0's coordinator; "
                      "with --num_processes and --process_id, for clusters without detection.")
  flags.DEFINE_integer("num_processes", None, "Number of processes in the run.")
  flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")


def initialize_from_flags() -> None:
  """Starts the multi-process runtime when the flags ask for it (no-op otherwise)."""
  f = flags.FLAGS
  explicit = (f.coordinator_address, f.num_processes, f.process_id)
  if not f.distributed and all(value is None for value in explicit):
    return
  if not f.distributed and any(value is None for value in explicit):
    raise ConfigError("--coordinator_address, --num_processes and --process_id go together "
                      f"(got {explicit}); or pass --distributed for automatic detection")
  if f.num_processes is not None and not 0 <= f.process_id < f.num_processes:
    raise ConfigError(f"--process_id={f.process_id} must lie in 0 .. {f.num_processes - 1}")
  # CPU processes exchange collectives through gloo (accelerators use their own links).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
