"""salmu_jax: the JAX/Flax reference implementation of SALMUBench."""

__version__ = "0.1.0"
