"""Wall time and samples processed by every unlearning method at each budget.

  python benchmarks/unlearn_cost.py --config=configs/tiny.py --workdir=runs/tiny

WORKDIR is a `salmu_jax.benchmark` workdir: its dataset and its first seed's
Compromised are reused, or built and trained first by the benchmark's own stages.
Each (method, budget) then runs from that Compromised into WORKDIR/unlearn_cost/
(fresh every time), in the order the benchmark runs them, with the benchmark's
persistent compilation cache, so the figures are what a benchmark run pays: the
first budget of a method compiles its step, the others find it in the cache.
"""
import argparse
import os
import shutil
import time

from common import REPO, command_line, device_name, header, markdown_table

from salmu_jax import benchmark, config as config_lib  # noqa: E402

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=os.path.join(REPO, "configs", "tiny.py"))
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--methods", default=None, help="comma-separated, post_hoc or all "
                      "(default: the config's benchmark.methods; key_deletion, which needs a "
                      "memory model, is left out)")
  parser.add_argument("--budgets", default="1,5")
  args = parser.parse_args()
  config = config_lib.load_config(args.config)
  workdir = os.path.abspath(args.workdir)
  benchmark.enable_compilation_cache(os.path.join(workdir, "jax_cache"))
  bench = benchmark.Benchmark(config, workdir, methods=args.methods,
                              budgets=args.budgets.split(","), seeds=1, progress=False)
  seed = bench.seeds[0]
  needed = ("build SALMU-synth", f"seed {seed}: train compromised")
  for stage in bench.stages():
    if stage.name in needed and not stage.done():
      print(f"{stage.name} ...", flush=True)
      stage.run()
  bench.check_workdir()
  unlearner = bench.unlearner(seed)
  out_root = os.path.join(workdir, "unlearn_cost")
  rows = []
  if benchmark.BY_DESIGN in bench.methods:  # Needs a memory model; 0 steps at any budget.
    print(f"{benchmark.BY_DESIGN}: left out (it unlearns a memory model, not Compromised)")
  for method in (m for m in bench.methods if m != benchmark.BY_DESIGN):
    for budget in bench.budgets:
      run_dir = os.path.join(out_root, benchmark.run_dir_name(method, budget))
      shutil.rmtree(run_dir, ignore_errors=True)
      start = time.perf_counter()
      meta = unlearner.run(method, budget, run_dir, show_progress=False)
      seconds = time.perf_counter() - start
      samples = meta["samples_processed"]["total"]
      rows.append([method, f"{budget:g}x", meta["steps"], f"{samples:,}",
                   f"{seconds:.1f}", f"{samples / seconds:,.0f}"])
      print(" | ".join(str(c) for c in rows[-1]), flush=True)
  print("\n" + header(f"Unlearning cost, {os.path.basename(args.config)}", device_name(), PACKAGES,
                      command_line()))
  print(f"Forget set {meta['forget_size']:,} pairs; forget batch {meta['forget_batch']}, "
        f"retain batch {meta['retain_batch']}; wall time includes compiling (first budget of "
        f"each method) and writing the checkpoint.\n")
  print(markdown_table(["method", "budget", "steps", "samples processed", "wall s",
                        "samples/s"], rows))


if __name__ == "__main__":
  main()
