"""salmu_jax: the JAX/Flax reference implementation of SALMUBench.

Importing it (or any module below it) changes nothing in the process: the host-memory
setting (host_memory.py) is applied only by our own command-line stages.
"""
__version__ = "0.1.0"
