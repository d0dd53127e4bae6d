import atexit
import os
import shutil
import tempfile

# Eight fake CPU devices for the sharding tests; set before anything imports JAX. Once: the
# README runs the suite in two pytest-xdist workers, which inherit the controller's
# environment (this file ran there first) and run this file again.
_EIGHT_DEVICES = "--xla_force_host_platform_device_count=8"
if _EIGHT_DEVICES not in os.environ.get("XLA_FLAGS", "").split():
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_EIGHT_DEVICES}".strip()
# The suite is mostly compilation, which salmu_jax/host_memory.py's single malloc arena
# slows by ~15%; its steady-state gain needs long runs. tests/test_host_memory.py sets
# its own. Before anything imports salmu_jax; SALMU_JAX_SYSTEM_MALLOC=0 tests with it.
os.environ.setdefault("SALMU_JAX_SYSTEM_MALLOC", "1")
# Many tests compile the same micro programs (one step per method, the encoders) in new
# closures, new Unlearners or subprocesses: one persistent compilation cache for the
# session, every program in it, read by the subprocesses too (they inherit the
# environment, so the benchmark CLI's WORKDIR/jax_cache is not used under tests). Fresh per
# session and removed after, so no test depends on an earlier run (benchmarks/RESULTS.md,
# "Test suite"). The xdist workers inherit the controller's directory, so both fill and read
# one cache, and the controller alone removes it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache_dir = tempfile.mkdtemp(prefix="salmu_jax_test_cache_")
  atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
# The CPU compiler's flags of every command-line stage (salmu_jax/cli.py): the suite is
# mostly compiling, and its in-process stages should compile as the commands do. After the
# cache's settings: importing salmu_jax imports jax, which reads them once.
from salmu_jax import cli  # noqa: E402

cli.use_cpu_compiler_flags()

import jax  # noqa: E402
import pytest  # noqa: E402

assert jax.config.jax_compilation_cache_dir == os.environ["JAX_COMPILATION_CACHE_DIR"], (
    "jax was imported before tests/conftest.py set its compilation cache")

from salmu_jax import config as config_lib  # noqa: E402
from salmu_jax.data import builder  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_path(name: str) -> str:
  return os.path.join(REPO, "configs", f"{name}.py")


def without_timings(tree, volatile=("seconds", "wall_seconds", "meta", "from",
                                    "batches_replayed")):
  """A result or unlearn.json without what differs between identical runs: wall times,
  paths and the count of replayed batches."""
  if isinstance(tree, dict):
    return {k: without_timings(v) for k, v in tree.items() if k not in volatile}
  return [without_timings(v) for v in tree] if isinstance(tree, list) else tree


@pytest.fixture
def micro_config():
  return config_lib.load_config(config_path("micro"))


@pytest.fixture(scope="session")
def micro_dataset_dir(tmp_path_factory):
  """One micro SALMU-synth build shared by the read-only tests."""
  config = config_lib.load_config(config_path("micro"))
  return builder.build_dataset(config, str(tmp_path_factory.mktemp("micro")), progress=False)


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: end-to-end runs and subprocesses; everyday work "
                          "runs `pytest -m 'not slow'` (README, Tests)")
