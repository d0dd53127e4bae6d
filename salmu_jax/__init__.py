"""salmu_jax: the JAX/Flax reference implementation of SALMUBench."""
from salmu_jax import host_memory as _host_memory

__version__ = "0.1.0"

# Before NumPy or JAX start threads: see host_memory (a quarter of a CPU train step).
_host_memory.retain_freed_memory()
