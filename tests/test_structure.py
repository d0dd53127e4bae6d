"""The house rules of the package layout (README, "Layout"), checked from the source."""
import ast
import os
import re
import subprocess
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

PACKAGE = os.path.join(REPO, "salmu_jax")
# The command-line stages: thin programs over the library, which never import one another.
STAGES = {"salmu_jax.train", "salmu_jax.unlearn", "salmu_jax.evaluate", "salmu_jax.convert",
          "salmu_jax.benchmark", "salmu_jax.make_dataset", "salmu_jax.compare"}


def module_imports() -> dict:
  """module name -> the salmu_jax modules it imports (from X import Y counts X.Y if a module)."""
  modules = {}
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")
        modules[module] = path
  imports = {}
  for module, path in modules.items():
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
      if isinstance(node, ast.Import):
        found |= {a.name for a in node.names if a.name.startswith("salmu_jax")}
      elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("salmu_jax"):
        found.add(node.module)
        found |= {f"{node.module}.{a.name}" for a in node.names
                  if f"{node.module}.{a.name}" in modules}
    imports[module] = found
  return imports


def test_no_stage_imports_another_and_nothing_below_imports_a_stage():
  imports = module_imports()
  assert STAGES <= set(imports)
  offenders = {m: sorted(found & STAGES) for m, found in imports.items() if found & STAGES}
  assert offenders == {}


def test_pretraining_and_the_data_layer_do_not_depend_on_what_sits_above_them():
  imports = module_imports()
  below = {"salmu_jax.training": ("salmu_jax.unlearning", "salmu_jax.evaluation"),
           "salmu_jax.data": ("salmu_jax.training", "salmu_jax.unlearning",
                              "salmu_jax.evaluation", "salmu_jax.config"),
           "salmu_jax.model": ("salmu_jax.training", "salmu_jax.unlearning", "salmu_jax.data")}
  for package, forbidden in below.items():
    for module, found in imports.items():
      if module.startswith(package):
        assert not [f for f in found if f.startswith(forbidden)], module
  # The diagnosis and the membership arithmetic it reads (calibrated attacks) are NumPy on
  # result files: no JAX, so a leaderboard rebuilds anywhere.
  for name in ("diagnosis", "privacy"):
    source = open(os.path.join(PACKAGE, "evaluation", f"{name}.py")).read()
    assert "import jax" not in source and "from jax" not in source, name
  numpy_only = {"salmu_jax.errors", "salmu_jax.evaluation.metrics", "salmu_jax.evaluation"}
  assert imports["salmu_jax.evaluation.privacy"] <= numpy_only
  assert imports["salmu_jax.evaluation.diagnosis"] <= numpy_only | {"salmu_jax.evaluation.privacy"}


def test_no_import_cycle_among_the_data_modules():
  imports = module_imports()
  data = {m for m in imports if m.startswith("salmu_jax.data.")}

  def reaches(start, target, seen=()):
    return any(n == target or (n in data and n not in seen and reaches(n, target, seen + (n,)))
               for n in imports[start] if n in data)
  assert [m for m in data if reaches(m, m)] == []


def test_importing_the_library_changes_nothing_in_the_process():
  probe = ("import salmu_jax, salmu_jax.losses, salmu_jax.unlearning.objectives, "
           "salmu_jax.unlearning.methods, salmu_jax.model.clip, salmu_jax.model.factory, "
           "salmu_jax.evaluation.registry, salmu_jax.training.step\n"
           "from salmu_jax import host_memory\n"
           "print(host_memory.applied)")
  env = {k: v for k, v in os.environ.items() if k != "SALMU_JAX_SYSTEM_MALLOC"}
  out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True,
                       text=True, check=True)
  assert out.stdout.split()[-1] == "False"


def test_every_stage_reports_a_full_disk_in_one_line(capsys):
  """What every stage's opening (cli.run) does with an error from the operating system."""
  import errno

  import pytest

  from salmu_jax import cli

  def full_disk():
    raise OSError(errno.ENOSPC, "No space left on device", "/runs/tiny/metrics.jsonl")
  with pytest.raises(SystemExit) as exit_info:
    cli.run(full_disk)
  assert exit_info.value.code == cli.USER_ERROR_EXIT_CODE
  assert capsys.readouterr().err == (
      "error: No space left on device: /runs/tiny/metrics.jsonl; free some space and run the "
      "same command again: finished work is kept\n")


def test_the_cpu_compiler_flags_are_added_only_where_nobody_chose_otherwise(monkeypatch):
  """cli.use_cpu_compiler_flags: every stage's XLA:CPU optimization level, not a user's, an
  accelerator's, or one set too late to apply."""
  from salmu_jax import cli

  installed = set()  # The accelerator runtimes this fake machine has.
  monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: name in installed or None)
  monkeypatch.setattr(cli.importlib.metadata, "entry_points", lambda group: [])
  monkeypatch.setattr(cli.xla_bridge, "backends_are_initialized", lambda: False)
  for name in ("JAX_PLATFORMS", "TPU_LIBRARY_PATH", "PJRT_NAMES_AND_LIBRARY_PATHS"):
    monkeypatch.delenv(name, raising=False)

  def flags_after(xla_flags, platforms=""):
    monkeypatch.setenv("XLA_FLAGS", xla_flags)
    monkeypatch.setenv("JAX_PLATFORMS", platforms)
    cli.use_cpu_compiler_flags()
    return os.environ["XLA_FLAGS"]
  level1 = "--xla_backend_optimization_level=1"
  assert flags_after("") == level1 and flags_after("", "cpu,cuda") == level1  # Only a CPU here.
  assert flags_after("--xla_force_host_platform_device_count=8", "cpu") == (
      "--xla_force_host_platform_device_count=8 " + level1)
  assert flags_after("--xla_backend_optimization_level=2") == "--xla_backend_optimization_level=2"
  installed.add("libtpu")  # A TPU runtime: its compiler reads the flag too.
  assert flags_after("") == "" and flags_after("", "cpu,tpu") == ""
  assert flags_after("", " cpu") == level1  # Unless the CPU alone is asked for.
  installed.clear()
  monkeypatch.setenv("TPU_LIBRARY_PATH", "/opt/libtpu.so")
  assert flags_after("") == ""
  monkeypatch.delenv("TPU_LIBRARY_PATH")
  # jax has read XLA_FLAGS already: a flag set now would be recorded without applying.
  monkeypatch.setattr(cli.xla_bridge, "backends_are_initialized", lambda: True)
  assert flags_after("") == ""


def test_no_stage_starts_jax_before_its_opening_sets_the_compiler_flags():
  """Importing a command-line stage must leave jax's backend unstarted: cli.run sets
  XLA_FLAGS after the imports, and XLA reads them once, when the backend starts."""
  code = ("import importlib\n"
          f"for stage in {sorted(STAGES)!r}:\n"
          "  importlib.import_module(stage)\n"
          "from jax._src import xla_bridge\n"
          "assert not xla_bridge.backends_are_initialized()\n")
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                        env=dict(os.environ, XLA_FLAGS=""))
  assert done.returncode == 0, done.stderr[-2000:]


def test_the_readme_and_ci_install_the_pinned_versions_and_every_requirement_is_pinned():
  pins = [Requirement(line.strip()) for line in open(os.path.join(REPO, "constraints.txt"))
          if line.strip() and not line.startswith("#")]
  assert all(len(pin.specifier) == 1 and next(iter(pin.specifier)).operator == "=="
             for pin in pins), "constraints.txt pins exact versions only"
  pinned = {canonicalize_name(pin.name): next(iter(pin.specifier)).version for pin in pins}
  setup = ast.parse(open(os.path.join(REPO, "setup.py")).read())
  keywords = {k.arg: ast.literal_eval(k.value) for node in ast.walk(setup)
              if isinstance(node, ast.Call) for k in node.keywords
              if k.arg in ("install_requires", "extras_require")}
  requirements = [Requirement(r) for r in keywords["install_requires"] + sum(
      keywords["extras_require"].values(), [])]
  names = {canonicalize_name(r.name) for r in requirements}
  assert {"jax", "flax", "pytest-xdist", "open-clip-torch"} <= names  # The parse found them.
  assert names - set(pinned) == set()
  for requirement in requirements:  # At a version setup.py allows.
    version = pinned[canonicalize_name(requirement.name)]
    assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
  # Every pip install of the README's two commands and of CI, and nothing else, uses the pins.
  readme = open(os.path.join(REPO, "README.md")).read()
  commands = readme.split("```bash\n", 1)[1].split("```", 1)[0]
  ci = open(os.path.join(REPO, ".ci", "run")).read()
  installs = [step.split() for text in (commands, ci) for step in re.split(r"&&|;|\n", text)
              if "pip install" in step or "pip3 install" in step]
  assert len(installs) == 3, installs
  for words in installs:
    assert any(words[i:i + 2] == ["-c", "constraints.txt"] for i in range(len(words))), words
