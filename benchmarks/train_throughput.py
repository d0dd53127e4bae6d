"""Train-step samples/s and MFU of our Flax CLIP against open_clip (PyTorch).

  python benchmarks/train_throughput.py --config=configs/tiny.py --batch_sizes=32,64,128,256

Both sides get the same architecture (open_clip built from the config's shapes by
salmu_jax/interop/openclip_peer.py), batch, precision (config.model.dtype: float32, or
bf16 compute over float32 weights, which is torch autocast as in open_clip's amp_bf16)
and optimizer (AdamW with the same hyperparameters and decay mask, global-norm
clipping, the logit-scale clamp), and the same uint8 images and captions; both
normalize pixels inside the timed step. Our side is the exact jitted step
`salmu_jax.train` runs. The input pipeline is left out (benchmarks/data_throughput.py).

Per batch size: warm-up steps (compilation, allocator) are not timed, then --repeats
runs of --steps steps alternate which side goes first, so drifts in machine load hit
both; the table gives the median and the range. MFU: analytic matmul FLOPs
(salmu_jax/model/flops.py), cross-checked against XLA's cost analysis of the compiled
step, over the device's peak (GPU: the datasheet's dense bf16 figure; CPU: the rate of
a large float32 matmul measured here, said so in the table). A batch that does not fit
is reported as OOM, and the sweep goes on.
"""
import argparse
import contextlib
import math
import os
import resource
import sys
import time

from common import (REPO, command_line, device_name, header, markdown_table, median_spread,
                    parse_overrides)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from salmu_jax import config as config_lib  # noqa: E402
from salmu_jax import io_utils, report  # noqa: E402
from salmu_jax.training import optimizer, runtime as runtime_lib, step as step_lib  # noqa: E402
from salmu_jax.data.tokenizer import CLIP_VOCAB_SIZE  # noqa: E402
from salmu_jax.model import flops, sharding  # noqa: E402
from salmu_jax.model.clip import IMAGE_MEAN, IMAGE_STD  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, FLOP/s.
GPU_BF16_PEAK = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12,
                 "L4": 121e12}
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "open_clip_torch")


def vocab_size(config) -> int:
  return CLIP_VOCAB_SIZE if config.tokenizer.kind == "clip_bpe" else config.tokenizer.vocab_size


def random_batch(config, batch_size: int, seed: int = 0) -> dict:
  """uint8 images and captions of 8-30 tokens ending in the end-of-text id (the largest),
  zero-padded to the context length, as the data pipeline yields them."""
  rng = np.random.default_rng(seed)
  size, length, vocab = config.data.image_size, config.tokenizer.context_length, vocab_size(config)
  tokens = np.zeros((batch_size, length), np.int32)
  for row, n in enumerate(rng.integers(8, min(30, length - 1) + 1, batch_size)):
    tokens[row, :n] = rng.integers(1, vocab - 1, n)
    tokens[row, n] = vocab - 1
  return {"image": rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
          "tokens": tokens}


def is_out_of_memory(error: Exception) -> bool:
  return "RESOURCE_EXHAUSTED" in str(error) or type(error).__name__ == "OutOfMemoryError"


class FlaxStep:
  """salmu_jax.train's step on its mesh; `run(n)` times n steps."""
  name = "salmu_jax"

  def __init__(self, config, batch: dict, devices=None):
    mesh = sharding.make_mesh(config.mesh, devices)
    graphdef, tx, init_state = runtime_lib.model_definition(config, vocab_size(config))
    shardings = sharding.state_shardings(jax.eval_shape(init_state, jax.random.PRNGKey(0)), mesh)
    self.state = jax.jit(init_state, out_shardings=shardings)(jax.random.PRNGKey(config.seed))
    self.batch_sharding = sharding.batch_sharding(mesh)
    self.put(batch)
    # Compiled once, ahead of time: timed and cost-analysed as the same executable.
    self.compiled = step_lib.pretraining_step(config, graphdef, tx, shardings, mesh).lower(
        self.state, None, self.batch).compile()

  def put(self, batch: dict) -> None:
    """Makes a host batch ({'image', 'tokens'}) the one the next steps train on."""
    self.batch = {"train": {k: jax.device_put(batch[k], self.batch_sharding)
                            for k in ("image", "tokens")}}

  def xla_flops(self) -> float | None:
    analysis = self.compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # Older jax: one dict per computation.
      analysis = analysis[0] if analysis else None
    return float(analysis["flops"]) if analysis and "flops" in analysis else None

  def run(self, steps: int, host_batches=None) -> float:
    """Seconds for `steps` steps, on the current batch or, as in salmu_jax.train, each on
    the next of `host_batches` (an iterator of the data pipeline)."""
    start = time.perf_counter()
    for _ in range(steps):
      if host_batches is not None:
        self.put(next(host_batches))
      self.state, metrics = self.compiled(self.state, None, self.batch)
    jax.block_until_ready((self.state, metrics))
    return time.perf_counter() - start


class OpenClipStep:
  """open_clip's model, ClipLoss and open_clip's training-loop order of operations."""
  name = "open_clip"

  def __init__(self, config, batch: dict, compile_model: bool = False):
    import open_clip
    import torch
    from salmu_jax.interop.openclip_peer import openclip_model
    self.torch = torch
    self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = openclip_model(config, vocab_size(config), config.tokenizer.context_length,
                           config.seed).to(self.device).train()
    self.model = torch.compile(model) if compile_model else model
    self.raw_model = model
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # salmu_jax.training.optimizer.decay_mask's rule.
      exempt = p.ndim < 2 or name.endswith("bias") or any(
          key in name for key in optimizer.NO_DECAY)
      (no_decay if exempt else decay).append(p)
    t = config.train
    self.optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t.learning_rate, betas=(t.b1, t.b2), eps=t.eps)
    self.loss = open_clip.ClipLoss()
    self.clip_norm = t.grad_clip_norm
    self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16)
                     if config.model.dtype == "bfloat16" else contextlib.nullcontext())
    self.images = torch.from_numpy(batch["image"]).to(self.device)
    self.tokens = torch.from_numpy(batch["tokens"].astype(np.int64)).to(self.device)
    self.mean = torch.tensor(IMAGE_MEAN, device=self.device).view(1, 3, 1, 1)
    self.std = torch.tensor(IMAGE_STD, device=self.device).view(1, 3, 1, 1)

  def _step(self):
    torch = self.torch
    pixels = (self.images.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
    with self.autocast:
      image_features, text_features, logit_scale = self.model(pixels, self.tokens)
      loss = self.loss(image_features, text_features, logit_scale)
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.clip_norm)
    self.optimizer.step()
    with torch.no_grad():
      self.raw_model.logit_scale.clamp_(0, math.log(100))
    return loss

  def run(self, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
      loss = self._step()
    loss.item()  # Waits for the device.
    return time.perf_counter() - start


def measured_cpu_peak(size: int = 1024, repeats: int = 5) -> float:
  """FLOP/s of a size^3 float32 matmul on this CPU under XLA, the best of `repeats`."""
  matmul = jax.jit(lambda a, b: a @ b)
  a = jnp.ones((size, size), jnp.float32)
  matmul(a, a).block_until_ready()
  best = math.inf
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(10):
      out = matmul(a, a)
    out.block_until_ready()
    best = min(best, (time.perf_counter() - start) / 10)
  return 2 * size ** 3 / best


def device_peak(config) -> tuple:
  """(peak FLOP/s or None, how it was obtained)."""
  device = jax.devices()[0]
  if device.platform == "cpu":
    return measured_cpu_peak(), "measured float32 matmul rate"
  if config.model.dtype != "bfloat16":
    return None, f"no datasheet peak for {config.model.dtype}"
  for name, peak in GPU_BF16_PEAK.items():  # Most specific names first.
    if name in device.device_kind:
      return peak, f"{device.device_kind} dense bf16 datasheet peak"
  return None, f"no datasheet peak for {device.device_kind}"


def measure(batch_size: int, args) -> dict:
  """Both sides at one batch size: interleaved timed runs after warm-up."""
  config = config_lib.load_config(args.config, parse_overrides(args.set) | {"batch_size": batch_size})
  batch = random_batch(config, batch_size, config.seed)
  sides, row = [], {"batch_size": batch_size}
  makers = [("salmu_jax", lambda: FlaxStep(config, batch))]
  if args.peer == "open_clip":
    makers.append(("open_clip", lambda: OpenClipStep(config, batch, args.torch_compile)))
  for name, make in makers:
    try:
      side = make()
      side.run(args.warmup)
      sides.append(side)
    except Exception as e:  # noqa: BLE001 -- only running out of memory is a result.
      if not is_out_of_memory(e):
        raise
      row[name] = "OOM"
  analytic = flops.train_flops_per_example(config.model, config.data.image_size,
                                           config.tokenizer.context_length, batch_size)
  row["analytic_flops_per_example"] = analytic
  rates = {side.name: [] for side in sides}
  faults = {side.name: 0 for side in sides}
  for repeat in range(args.repeats):
    for side in sides if repeat % 2 == 0 else sides[::-1]:
      profile = (jax.profiler.trace(os.path.join(args.profile_dir, f"batch{batch_size}"))
                 if args.profile_dir and side.name == "salmu_jax" and repeat == 0
                 else contextlib.nullcontext())
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      with profile:
        seconds = side.run(args.steps)
      faults[side.name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
      rates[side.name].append(args.steps * batch_size / seconds)
  for side in sides:
    row[side.name] = median_spread(rates[side.name])
    # Memory the step maps afresh each time (salmu_jax/host_memory.py): the kernel's time.
    row[f"{side.name}_page_faults_per_step"] = faults[side.name] / (args.repeats * args.steps)
    if side.name == "salmu_jax":
      xla = side.xla_flops()
      row["xla_flops_per_example"] = xla / batch_size if xla else None
  return row


def fmt_rate(value) -> str:
  if not isinstance(value, dict):
    return value or "-"
  return f"{value['median']:,.0f} ({value['min']:,.0f}-{value['max']:,.0f})"


def summarize(rows, peak, peak_source) -> str:
  table = []
  for row in rows:
    ours, theirs = row.get("salmu_jax"), row.get("open_clip")
    both = isinstance(ours, dict) and isinstance(theirs, dict)
    ratio = f"{ours['median'] / theirs['median']:.2f}x" if both else "-"
    mfu = (f"{100 * ours['median'] * row['analytic_flops_per_example'] / peak:.1f}%"
           if isinstance(ours, dict) and peak else "-")
    xla = row.get("xla_flops_per_example")
    faults = "/".join(f"{row[key]:,.0f}" if key in row else "-" for key in (
        "salmu_jax_page_faults_per_step", "open_clip_page_faults_per_step"))
    table.append([row["batch_size"], fmt_rate(ours), fmt_rate(theirs), ratio, mfu,
                  f"{row['analytic_flops_per_example'] / 1e9:.3f}",
                  f"{xla / 1e9:.3f}" if xla else "-", faults])
  peak_text = f"{peak / 1e12:.3g} TFLOP/s ({peak_source})" if peak else peak_source
  return (markdown_table(["batch", "salmu_jax samples/s", "open_clip samples/s", "ratio",
                          "MFU", "GFLOP/example (analytic)", "GFLOP/example (XLA)",
                          "page faults/step (ours/theirs)"], table)
          + f"\n\nMFU over {peak_text}.")


def plot(rows, path: str, title: str) -> None:
  plt = report.pyplot()
  figure, axis = plt.subplots(figsize=(6, 4))
  for name, marker in (("salmu_jax", "o"), ("open_clip", "s")):
    points = [(r["batch_size"], r[name]) for r in rows if isinstance(r.get(name), dict)]
    if points:
      axis.errorbar([b for b, _ in points], [v["median"] for _, v in points],
                    yerr=[[v["median"] - v["min"] for _, v in points],
                          [v["max"] - v["median"] for _, v in points]],
                    marker=marker, capsize=3, label=name)
  axis.set_xscale("log", base=2)
  axis.set_xlabel("batch size")
  axis.set_ylabel("train samples/s")
  axis.set_title(title, fontsize=9)
  axis.legend()
  io_utils.write_bytes_atomic(path, report.png_bytes(figure))
  plt.close(figure)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default=os.path.join(REPO, "configs", "tiny.py"))
  parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                      help="config override, e.g. --set=model.dtype=bfloat16 (repeatable)")
  parser.add_argument("--batch_sizes", default="128")
  parser.add_argument("--steps", type=int, default=10, help="steps per timed run")
  parser.add_argument("--repeats", type=int, default=5, help="timed runs per side")
  parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side")
  parser.add_argument("--peer", choices=("open_clip", "none"), default="open_clip")
  parser.add_argument("--torch_compile", action="store_true",
                      help="torch.compile the open_clip model (open_clip's --torchcompile)")
  parser.add_argument("--profile_dir", help="write a jax.profiler trace of one timed run")
  parser.add_argument("--json", help="write the raw figures here")
  parser.add_argument("--plot", help="write samples/s against batch size here (PNG)")
  args = parser.parse_args()
  try:
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
  except ValueError:
    sys.exit(f"error: --batch_sizes={args.batch_sizes!r} is not a comma-separated list of integers")
  config = config_lib.load_config(args.config, parse_overrides(args.set))
  peak, peak_source = device_peak(config)
  rows = []
  for batch_size in batch_sizes:
    rows.append(measure(batch_size, args))
    print(f"batch {batch_size}: " + ", ".join(
        f"{k} {fmt_rate(rows[-1][k])}" for k in ("salmu_jax", "open_clip") if k in rows[-1]),
        file=sys.stderr)
  title = f"{config.model.size} at {config.data.image_size} px, {config.model.dtype}"
  print(header(f"Train step throughput, {title}", device_name(), PACKAGES, command_line()))
  print(f"{args.steps} steps per run, {args.repeats} runs per side (median, min-max), "
        f"{args.warmup} warm-up steps.\n")
  print(summarize(rows, peak, peak_source))
  if args.json:
    io_utils.write_json_atomic(args.json, {"title": title, "peak_flops": peak,
                                           "peak_source": peak_source, "rows": rows,
                                           "command": command_line()})
  if args.plot:
    plot(rows, args.plot, f"{title}, {device_name()}")


if __name__ == "__main__":
  main()
