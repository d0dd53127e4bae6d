"""salmu_jax: sensitive-association unlearning for CLIP models in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="salmu_jax",
    version="0.1.0",
    description="SALMUBench in JAX/Flax: SALMU-synth data, Flax CLIP, unlearning and evaluation.",
    packages=find_packages(include=["salmu_jax", "salmu_jax.*"]),
    python_requires=">=3.11",  # flax and numpy 2.4 need it.
    install_requires=[
        "jax>=0.6",
        "flax>=0.11",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "tensorflow-datasets>=4.9.8",
        "grain>=0.2.12",
        "array-record>=0.7",
        "importlib_resources",  # tfds needs it for builders defined in a package (etils[epath]).
        "etils[epath]",
        "numpy>=1.26",
        "scipy>=1.11",  # The Student-t quantile of the replication margins (report.py); jax needs it too.
        "absl-py>=2.1",
        "ml-collections>=1.0",
        "tokenizers>=0.20",
        "ftfy>=6.1",  # OpenAI CLIP's text cleaning (tokenizer.kind="clip_bpe").
        "regex>=2023.0",  # CLIP's pre-tokenizer pattern needs Unicode classes.
        "safetensors>=0.6",  # Weights in and out (salmu_jax.convert), bfloat16 via ml_dtypes.
        "pyarrow>=14",  # The released SALMUBench parquet shards (data.kind="released").
        "faker>=37,<41",
        "pillow>=10",
        "matplotlib>=3.8",
        "tensorboardX>=2.6",
        "tqdm>=4.66",
    ],
    extras_require={
        # pytest-xdist: the README runs the suite in two workers (mostly single-threaded
        # XLA compiling, so two overlap on two cores: 1.5x, benchmarks/RESULTS.md).
        "test": ["pytest>=8", "pytest-xdist>=3.2"],
        # The PyTorch ecosystem, to check the weights interop against (tests/interop) and
        # to read .bin checkpoints; several GB, so a second CI step installs it.
        "interop": ["torch>=2.4", "torchvision", "open_clip_torch>=2.24", "transformers>=4.40"],
        # benchmarks/data_throughput.py needs nothing beyond the base install; the
        # PyTorch peer (open_clip, torch) joins this extra with the throughput issue.
        "bench": [],
    },
)
