"""Wall time of the full ten-metric SALMUBench evaluation of one model.

  python benchmarks/eval_throughput.py --config=configs/tiny.py --workdir=/tmp/bench_eval

Builds (or reuses) the config's SALMU-synth under WORKDIR, then scores --models
randomly initialized models of the config's shape with one `evaluator.Evaluator`, as
the benchmark does: the first call pays decoding, rendering and compiling the
encoders; the later ones only their forward passes and the metrics. Evaluation cost
does not depend on the weights. Paper scale (configs/paper.py: ViT-B/16, 224 px,
~60K sensitive pairs) is meant for an accelerator.
"""
import argparse
import os
import statistics
import sys
import time

from common import REPO, command_line, device_name, header, markdown_table

import jax  # noqa: E402

from salmu_jax import config as config_lib  # noqa: E402
from salmu_jax.evaluation import evaluator as evaluator_lib  # noqa: E402
from salmu_jax.training import runtime as runtime_lib  # noqa: E402
from salmu_jax.data import builder  # noqa: E402

PACKAGES = ("jax", "jaxlib", "flax", "grain", "numpy", "tensorflow-datasets")


def score_random_models(runtime, models: int, stream=sys.stdout) -> tuple:
  """(seconds of each, the last result) of scoring `models` randomly initialized models
  with one Evaluator, as the benchmark does: the first pays decoding, rendering and
  compiling, the later ones only their forward passes and the metrics."""
  evaluator = evaluator_lib.Evaluator(runtime)
  init = jax.jit(runtime.init_state, out_shardings=runtime.state_shardings)
  seconds, result = [], None
  for index in range(models):
    params = init(jax.random.PRNGKey(index)).params
    jax.block_until_ready(params)
    begin = time.perf_counter()
    result = evaluator.score(params)
    seconds.append(time.perf_counter() - begin)
    print(f"model {index}: {seconds[-1]:.1f} s", file=stream, flush=True)
  return seconds, result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=os.path.join(REPO, "configs", "tiny.py"))
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--models", type=int, default=4, help="models scored (first one cold)")
  args = parser.parse_args()
  if args.models < 2:
    parser.error(f"--models={args.models}: need at least 2 (one cold, one warm)")
  config = config_lib.load_config(args.config)
  start = time.perf_counter()
  dataset_dir = builder.build_dataset(config, args.workdir)
  build_seconds = time.perf_counter() - start
  runtime = runtime_lib.setup(config, args.workdir, dataset_dir)
  seconds, _ = score_random_models(runtime, args.models)
  sizes = {name: len(source) for name, source in runtime.dataset.splits.items()}
  print("\n" + header(f"Ten-metric evaluation, {os.path.basename(args.config)}", device_name(),
                      PACKAGES, command_line()))
  print(f"Model {config.model.size} at {config.data.image_size} px ({config.model.dtype}), "
        f"eval batch {config.eval.batch_size}; split sizes: "
        + ", ".join(f"{k} {v:,}" for k, v in sizes.items()) + ".\n")
  warm = seconds[1:]
  print(markdown_table(
      ["dataset build or reuse s", "first model s (decode, render, compile)",
       "further models s (median, min-max)"],
      [[f"{build_seconds:.1f}", f"{seconds[0]:.1f}",
        f"{statistics.median(warm):.1f} ({min(warm):.1f}-{max(warm):.1f})"]]))


if __name__ == "__main__":
  main()
