"""Samples/s of the grain training pipeline at 64 and 224 px.

  python benchmarks/data_throughput.py --workdir=/tmp/bench_data

Builds a small SALMU-synth at each resolution (tiny config, fewer personas at
224 px so the build stays short), then times `pipeline.iterate` over the default
mixture and over each source alone, warm-up excluded. Against it, what training
consumes: the tiny model's train step alone on an in-memory batch, and the step fed
by the loader (both sharing the cores, as in `salmu_jax.train`). Prints markdown
tables with the machine, library versions and date; paste them into
benchmarks/RESULTS.md.
"""
import argparse
import os
import sys
import time

from common import REPO, command_line, device_name, header, markdown_table, median_spread
from train_throughput import FlaxStep

from salmu_jax import config as config_lib  # noqa: E402
from salmu_jax.data import builder, layout, pipeline, sources  # noqa: E402
from salmu_jax.data.tokenizer import load_tokenizer  # noqa: E402

MIXTURES = {
    "default mixture": None,
    "retain_base only (procedural render)": {"retain_base": 1.0},
    "retain_synth only (decode)": {"retain_synth": 1.0},
    "sensitive only (decode)": {"sensitive": 1.0},
}


def time_pipeline(config, dataset, tokenizer, base, mixture, batches, repeats):
  rates = []
  for repeat in range(repeats):
    config.seed = repeat  # A fresh shuffle each repeat.
    # Every read decoded: a training keeps its decoded records (data.loader.record_cache_mb),
    # so a run of many passes decodes each once; these rows price the first pass.
    config.data.loader.record_cache_mb = 0
    iterator = pipeline.iterate(pipeline.training_batches(config, dataset, tokenizer, base,
                                                          mixture=mixture), config)
    for _ in range(3):
      next(iterator)  # Warm-up: thread start, first decodes.
    start = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    rates.append(batches * config.batch_size / (time.perf_counter() - start))
  return median_spread(rates)


def time_training(config, dataset, tokenizer, base, steps, repeats):
  """(step alone, step fed by the loader) samples/s, medians of `repeats` runs."""
  iterator = pipeline.iterate(pipeline.training_batches(config, dataset, tokenizer, base), config)
  step = FlaxStep(config, next(iterator))
  step.run(2, iterator)  # Warm-up: compilation, the loader's threads.
  alone, fed = [], []
  for _ in range(repeats):
    alone.append(steps * config.batch_size / step.run(steps))
    fed.append(steps * config.batch_size / step.run(steps, iterator))
  return median_spread(alone), median_spread(fed)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=os.path.join(REPO, "configs", "tiny.py"))
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--sizes", default="64,224")
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--threads", type=int, default=2)
  args = parser.parse_args()
  rows, training = [], []
  for size in (int(s) for s in args.sizes.split(",")):
    overrides = {"data.image_size": size, "data.loader.num_threads": args.threads,
                 "data.image_format": "png" if size <= 64 else "jpeg"}
    if size > 64:  # Fewer people at high resolution, so that the build stays short.
      overrides |= {"data.num_personas": 32, "data.num_unseen": 4, "data.num_disjoint_people": 128}
    config = config_lib.load_config(args.config, overrides)
    root = builder.build_dataset(config, os.path.join(args.workdir, f"{size}px"))
    dataset = layout.open_dataset(root)
    tokenizer = load_tokenizer(config.tokenizer, root)
    base = sources.retain_base_source(config.data)
    for name, mixture in MIXTURES.items():
      rate = time_pipeline(config, dataset, tokenizer, base, mixture, args.batches, args.repeats)
      rows.append((size, config.data.image_format, name, rate))
      print(f"{size}px {name}: {rate['median']:,.0f} samples/s", file=sys.stderr)
    loader = next(r[3]["median"] for r in rows if r[0] == size and r[2] == "default mixture")
    alone, fed = time_training(config, dataset, tokenizer, base, args.batches, args.repeats)
    training.append([size, f"{loader:,.0f}", f"{alone['median']:,.0f}", f"{fed['median']:,.0f}",
                     f"{fed['median'] / alone['median']:.2f}"])
    print(f"{size}px training: step alone {alone['median']:,.0f}, fed {fed['median']:,.0f}",
          file=sys.stderr)
  print(header(f"Data loader throughput, batch {config.batch_size}, {args.threads} grain threads",
               device_name(), ("grain", "numpy", "pillow", "tokenizers", "jax"), command_line()) + "\n")
  print(markdown_table(["px", "stored as", "source", "samples/s (median)", "min", "max"],
                       [(size, fmt, name, f"{r['median']:,.0f}", f"{r['min']:,.0f}",
                         f"{r['max']:,.0f}") for size, fmt, name, r in rows]))
  print("\nWhat training consumes (tiny model, float32), samples/s, medians:\n")
  print(markdown_table(["px", "loader alone (default mixture)", "train step alone",
                        "train step fed by the loader", "fed / alone"], training))


if __name__ == "__main__":
  main()
