"""Analytic FLOPs of the CLIP in salmu_jax.model.clip, for model FLOPs utilization (MFU).

Counts the matmuls only (2 FLOPs per multiply-add), as MFU conventionally does
(PaLM, Chowdhery et al. 2022, appendix B): projections, attention scores and
weighted sums over the full (not causally halved) square, the patch embedding, the
output projections and the batch's similarity matrix. The count is of what the model
runs: each tower's last block computes keys and values for every position but the rest
for its pooled row only (model/clip.py), where OpenCLIP computes every row; a
samples/s comparison with it is of the same function. A training step costs three
forward passes (the backward computes gradients for activations and for weights).
Norms, activations, softmax and the optimizer are left out; XLA's cost analysis
counts them too, which is how the tests cross-check this count.
"""


def _tower(tokens: int, width: int, layers: int, mlp_ratio: float) -> int:
  hidden = int(width * mlp_ratio)
  per_row = 2 * width * 2 * width + 2 * width * hidden * 2  # q and output projections, MLP
  full_block = (tokens * per_row
                + 2 * tokens * width * 2 * width    # k and v projections
                + 2 * 2 * tokens * tokens * width)  # q @ k^T and softmax @ v
  pooled_block = per_row + 2 * tokens * width * 2 * width + 2 * 2 * tokens * width
  return (layers - 1) * full_block + pooled_block


def forward_flops_per_example(model_cfg, image_size: int, text_length: int) -> dict:
  """{'vision', 'text'} forward FLOPs for one image and one caption of `text_length` tokens."""
  m = model_cfg
  patches = (image_size // m.patch_size) ** 2
  vision = (2 * patches * m.patch_size ** 2 * 3 * m.vision_width
            + _tower(patches + 1, m.vision_width, m.vision_layers, m.vision_mlp_ratio)
            + 2 * m.vision_width * m.embed_dim)
  text = (_tower(text_length, m.text_width, m.text_layers, m.text_mlp_ratio)
          + 2 * m.text_width * m.embed_dim)
  return {"vision": vision, "text": text}


def train_flops_per_example(model_cfg, image_size: int, text_length: int,
                            batch_size: int) -> int:
  """FLOPs of one contrastive training step divided by its batch size."""
  towers = forward_flops_per_example(model_cfg, image_size, text_length)
  similarity = 2 * batch_size * model_cfg.embed_dim  # One row of the [B, B] logits.
  return 3 * (towers["vision"] + towers["text"] + similarity)
