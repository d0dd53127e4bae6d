"""Samples/s of the grain training pipeline at 64 and 224 px.

  python benchmarks/data_throughput.py --workdir=/tmp/bench_data

Builds a small SALMU-synth at each resolution (tiny config, fewer personas at
224 px so the build stays short), then times `pipeline.iterate` over the default
mixture and over each source alone, warm-up excluded. Prints a markdown table
with the machine, library versions and date; paste it into benchmarks/RESULTS.md.
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from importlib import metadata

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from salmu_jax import config as config_lib  # noqa: E402
from salmu_jax.data import builder, pipeline, sources  # noqa: E402
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
    config.seed = repeat  # A fresh shuffle each repeat: no warm caches of decoded records.
    iterator = pipeline.iterate(pipeline.training_batches(config, dataset, tokenizer, base,
                                                          mixture=mixture), config)
    for _ in range(3):
      next(iterator)  # Warm-up: thread start, first decodes.
    start = time.perf_counter()
    for _ in range(batches):
      next(iterator)
    rates.append(batches * config.batch_size / (time.perf_counter() - start))
  return statistics.median(rates), min(rates), max(rates)


def cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    return platform.processor() or platform.machine()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--sizes", default="64,224")
  parser.add_argument("--batches", type=int, default=20)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--threads", type=int, default=2)
  args = parser.parse_args()
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  rows = []
  for size in (int(s) for s in args.sizes.split(",")):
    overrides = {"data.image_size": size, "data.loader.num_threads": args.threads,
                 "data.image_format": "png" if size <= 64 else "jpeg"}
    if size > 64:
      overrides |= {"data.num_personas": 32, "data.num_unseen": 4, "data.num_disjoint_people": 128}
    config = config_lib.load_config(os.path.join(repo, "configs", "tiny.py"), overrides)
    root = builder.build_dataset(config, os.path.join(args.workdir, f"{size}px"))
    dataset = sources.open_dataset(root)
    tokenizer = load_tokenizer(config.tokenizer, root)
    base = sources.retain_base_source(config.data)
    for name, mixture in MIXTURES.items():
      median, low, high = time_pipeline(config, dataset, tokenizer, base, mixture, args.batches,
                                        args.repeats)
      rows.append((size, config.data.image_format, name, median, low, high))
      print(f"{size}px {name}: {median:,.0f} samples/s", file=sys.stderr)
  versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("grain", "numpy", "pillow", "tokenizers"))
  print(f"\nData loader throughput, {datetime.date.today()}, {cpu_name()}, "
        f"{os.cpu_count()} cores, {args.threads} grain threads, batch {config.batch_size}; {versions}; "
        f"`python benchmarks/data_throughput.py --workdir=... --sizes={args.sizes} "
        f"--batches={args.batches} --repeats={args.repeats} --threads={args.threads}`\n")
  print("| px | stored as | source | samples/s (median) | min | max |")
  print("|---|---|---|---|---|---|")
  for size, fmt, name, median, low, high in rows:
    print(f"| {size} | {fmt} | {name} | {median:,.0f} | {low:,.0f} | {high:,.0f} |")


if __name__ == "__main__":
  main()
