"""The GPU suite: what a lent accelerator should measure first, in one command under 10 minutes.

  bash benchmarks/gpu_suite.sh              # on the GPU machine: installs .whl/, then this
  python benchmarks/gpu_suite.py --out=DIR [--smoke] [--budget_s=540]

1. Train step: ViT-B/16 at 224 px (configs/paper.py) with bf16 compute over float32
   weights, over a batch sweep: our jitted step's samples/s and MFU against the device's
   datasheet dense-bf16 peak, and open_clip's step on the same card and inputs when torch
   and open_clip import there (otherwise the table says why not). The harness is
   benchmarks/train_throughput.py's: same architecture, optimizer, inputs, warm-up and
   interleaved timed runs.
2. Evaluation: the full ten-metric evaluation (extended block and breakdowns included) of
   a randomly initialized ViT-B/16 on a synthetic dataset of paper size: the paper
   config's whole split plan (~60K sensitive pairs, 15.7K retain_disjoint, 10K GenKnow
   scenes) with faces rendered for a small pool of examples and reused, so that no
   hour-long dataset build is needed. Wall time of the first model (decoding, rendering,
   compiling) and of a further one.

Writes DIR/gpu_suite.json (every figure) and DIR/gpu_suite.md (a RESULTS.md section:
device, versions, date, command). Every part runs under the time budget: a part or a
batch size that would start after its share of --budget_s is reported as skipped, never
silently dropped. --smoke runs the same code at micro scale on any device (CPU in CI),
so that the suite cannot rot between GPU sessions.
"""
import argparse
import datetime
import os
import platform
import sys
import time
import traceback

from common import REPO, command_line, device_name, markdown_table, parse_overrides, versions

import jax  # noqa: E402
import numpy as np  # noqa: E402

import eval_throughput  # noqa: E402
import train_throughput  # noqa: E402
from salmu_jax import config as config_lib, io_utils  # noqa: E402
from salmu_jax.data import builder, faces, layout, splits  # noqa: E402
from salmu_jax.evaluation import diagnosis  # noqa: E402
from salmu_jax.model import sharding  # noqa: E402
from salmu_jax.training import runtime as runtime_lib  # noqa: E402

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
            "tensorflow-datasets", "numpy", "torch", "open_clip_torch")
FULL = {"config": "paper.py", "overrides": ["model.dtype=bfloat16"],
        "batch_sizes": [64, 128, 256, 512], "steps": 10, "repeats": 3, "warmup": 3,
        "face_pool": 256}
# Micro: the same code paths in about a minute on 2 CPU cores.
SMOKE = {"config": "micro.py", "overrides": [], "batch_sizes": [8, 16], "steps": 2,
         "repeats": 2, "warmup": 1, "face_pool": 8}
TRAIN_SHARE = 0.55  # Of the budget: the sweep stops starting batch sizes after this.


def peer_status() -> tuple:
  """('open_clip', None) when the PyTorch peer imports here, else ('none', why not)."""
  try:
    import open_clip  # noqa: F401
    import torch  # noqa: F401
  except Exception as e:  # noqa: BLE001 -- any import failure is the answer.
    return "none", f"open_clip not importable here ({type(e).__name__}: {e})"
  return "open_clip", None


def train_part(spec, config_path: str, deadline: float) -> dict:
  """The batch sweep of train_throughput.measure; batch sizes past `deadline` are skipped."""
  peer, peer_missing = peer_status()
  args = argparse.Namespace(config=config_path, set=spec["overrides"], peer=peer,
                            torch_compile=False, profile_dir=None, steps=spec["steps"],
                            repeats=spec["repeats"], warmup=spec["warmup"])
  config = config_lib.load_config(config_path, parse_overrides(spec["overrides"]))
  peak, peak_source = train_throughput.device_peak(config)
  rows, skipped = [], []
  for batch_size in spec["batch_sizes"]:
    if time.perf_counter() > deadline:
      skipped.append(batch_size)
      continue
    rows.append(train_throughput.measure(batch_size, args))
    print(f"train batch {batch_size}: " + ", ".join(
        f"{k} {train_throughput.fmt_rate(rows[-1][k])}" for k in ("salmu_jax", "open_clip")
        if k in rows[-1]), file=sys.stderr, flush=True)
  return {"model": f"{config.model.size} at {config.data.image_size} px, {config.model.dtype}",
          "peak_flops": peak, "peak_source": peak_source, "peer": peer,
          "peer_missing": peer_missing, "rows": rows, "skipped_batch_sizes": skipped,
          "steps": spec["steps"], "repeats": spec["repeats"], "warmup": spec["warmup"]}


def synthetic_dataset(config, face_pool: int):
  """(dataset, tokenizer, seconds) of `config`'s full split plan held in memory, every
  record's image one of `face_pool` faces rendered from the plan's own examples: the
  evaluation's inputs at their real sizes, formats and metadata, without a dataset build."""
  start = time.perf_counter()
  data = config.data
  plan = splits.make_plan(data)
  tokenizer, _ = builder.train_tokenizer(config, plan)
  examples = [e for s in splits.SPLITS for e in plan.examples[s]]
  pool = [builder.encode_image(faces.render_face(e.face, e.view, data.image_size),
                               data.image_format, data.jpeg_quality)
          for e in examples[::max(len(examples) // face_pool, 1)][:face_pool]]
  records = {s: [builder.record_of(e, pool[e.record_id % len(pool)]) for e in plan.examples[s]]
             for s in splits.SPLITS}
  dataset = layout.SalmuDataset(root="(synthetic, in memory)",
                                card={"split_sizes": plan.split_sizes()},
                                personas=builder.persona_entries(plan),
                                fragile_ids=plan.fragile_ids, splits=records)
  return dataset, tokenizer, time.perf_counter() - start


def eval_part(spec, config_path: str, models: int = 2) -> dict:
  """Wall time of `models` evaluations with one Evaluator (the first one cold)."""
  config = config_lib.load_config(config_path, parse_overrides(spec["overrides"]))
  dataset, tokenizer, build_seconds = synthetic_dataset(config, spec["face_pool"])
  runtime = runtime_lib.for_dataset(
      config, sharding.make_mesh(config.mesh), dataset, tokenizer,
      {"content_sha256": "synthetic", "fingerprint": builder.fingerprint(config)})
  seconds, result = eval_throughput.score_random_models(runtime, models, sys.stderr)
  scores = diagnosis.headlines(result)  # Each official metric's number, and the extended ones.
  broken = [k for k, v in scores.items() if not np.isfinite(v)]
  if broken:
    raise RuntimeError(f"the synthetic evaluation gave no finite number for {broken}: "
                       f"{ {k: scores[k] for k in broken} }")
  image_bytes = sum(len(s) for s in dataset.splits.values()) * config.data.image_size ** 2 * 3
  return {"model": f"{config.model.size} at {config.data.image_size} px, {config.model.dtype}",
          "split_sizes": dict(dataset.card["split_sizes"]),
          "genknow_examples": config.data.retain_base.zeroshot_examples,
          "eval_batch_size": config.eval.batch_size, "synthetic_inputs_seconds":
          round(build_seconds, 2), "seconds": [round(t, 2) for t in seconds],
          "decoded_images_mb": round(image_bytes / 2 ** 20),
          "input_cache_mb": config.eval.input_cache_mb, "metrics": scores}


def run_part(make) -> dict:
  """A part's figures, or the error that stopped it (the other parts still run)."""
  start = time.perf_counter()
  try:
    figures = make()
    status = "ok"
  except Exception as e:  # noqa: BLE001 -- reported in the JSON and the section.
    traceback.print_exc()
    figures, status = {"error": f"{type(e).__name__}: {e}"}, "failed"
  return {"status": status, "wall_seconds": round(time.perf_counter() - start, 1), **figures}


def section(report: dict) -> str:
  """The RESULTS.md section of one suite run."""
  train, evaluation = report["train"], report["eval"]
  lines = [f"## GPU suite — `benchmarks/gpu_suite.py`{' (smoke)' if report['smoke'] else ''}",
           "", f"{report['date']}, {report['device']}; Python {report['python']}, "
           f"{report['versions']}. Command: `{report['command']}` "
           f"({report['wall_seconds']:.0f} s in all).", ""]
  if train["status"] == "ok":
    lines += [f"Train step, {train['model']}: {train['steps']} steps per timed run, "
              f"{train['repeats']} runs per side, {train['warmup']} warm-up steps "
              f"({train['wall_seconds']:.0f} s).", "",
              train_throughput.summarize(train["rows"], train["peak_flops"],
                                         train["peak_source"]), ""]
    if train["peer_missing"]:
      lines += [f"open_clip was not measured: {train['peer_missing']}.", ""]
    if train["skipped_batch_sizes"]:
      lines += [f"Skipped for the time budget: batch sizes {train['skipped_batch_sizes']}.", ""]
  else:
    lines += [f"Train step: failed ({train['error']}).", ""]
  if evaluation["status"] == "ok":
    sizes = ", ".join(f"{k} {v:,}" for k, v in evaluation["split_sizes"].items())
    seconds = evaluation["seconds"]
    lines += [f"Ten-metric evaluation, {evaluation['model']}, eval batch "
              f"{evaluation['eval_batch_size']}, on a synthetic dataset of this size (splits: "
              f"{sizes}; GenKnow {evaluation['genknow_examples']:,} scenes; "
              f"{evaluation['decoded_images_mb']:,} MB of decoded split images against an "
              f"input cache of {evaluation['input_cache_mb']:,} MB):", "",
              markdown_table(["synthetic inputs s", "first model s (decode, render, compile)",
                              "further model s"],
                             [[f"{evaluation['synthetic_inputs_seconds']:.1f}",
                               f"{seconds[0]:.1f}",
                               ", ".join(f"{s:.1f}" for s in seconds[1:]) or "-"]]), ""]
  elif evaluation["status"] == "skipped":
    lines += [f"Evaluation: skipped ({evaluation['error']}).", ""]
  else:
    lines += [f"Evaluation: failed ({evaluation['error']}).", ""]
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="where gpu_suite.json and .md go")
  parser.add_argument("--smoke", action="store_true", help="micro sizes (any device, ~1 min)")
  parser.add_argument("--budget_s", type=float, default=540.0,
                      help="no part or batch size starts after its share of this")
  parser.add_argument("--batch_sizes", help="override the sweep, e.g. 128,256")
  args = parser.parse_args()
  spec = dict(SMOKE if args.smoke else FULL)
  if args.batch_sizes:
    try:
      spec["batch_sizes"] = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
      sys.exit(f"error: --batch_sizes={args.batch_sizes!r} is not a comma-separated list of "
               f"integers")
  if args.budget_s <= 0:
    sys.exit(f"error: --budget_s={args.budget_s} must be positive")
  config_path = os.path.join(REPO, "configs", spec["config"])
  start = time.perf_counter()
  train = run_part(lambda: train_part(spec, config_path, start + TRAIN_SHARE * args.budget_s))
  if time.perf_counter() - start < args.budget_s:
    evaluation = run_part(lambda: eval_part(spec, config_path))
  else:
    evaluation = {"status": "skipped", "error": f"the train part used the {args.budget_s:.0f} "
                  f"s budget", "wall_seconds": 0.0}
  report = {"smoke": args.smoke, "date": str(datetime.date.today()), "device": device_name(),
            "devices": [d.device_kind for d in jax.devices()], "python": platform.python_version(),
            "versions": versions(*PACKAGES), "command": command_line(),
            "wall_seconds": round(time.perf_counter() - start, 1), "train": train,
            "eval": evaluation}
  os.makedirs(args.out, exist_ok=True)
  io_utils.write_json_atomic(os.path.join(args.out, "gpu_suite.json"), report)
  text = section(report)
  io_utils.write_bytes_atomic(os.path.join(args.out, "gpu_suite.md"), text.encode())
  print(text)
  if "failed" in (train["status"], evaluation["status"]):
    sys.exit(1)


if __name__ == "__main__":
  main()
