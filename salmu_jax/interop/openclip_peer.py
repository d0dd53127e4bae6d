"""The open_clip (PyTorch) CLIP with the same shapes as a salmu_jax config's model: the peer
benchmarks/train_throughput.py races, and the model the interop tests compare weights with.

Needs the `interop` extra (torch, open_clip_torch); nothing else in salmu_jax imports it.
"""
import open_clip
import torch


def openclip_model(config, vocab_size: int, context_length: int, seed: int = 0):
  """An open_clip.model.CLIP of config.model's widths, depths, heads, patch and activation
  at config.data.image_size, randomly initialized from `seed` (float32, train mode)."""
  m = config.model
  torch.manual_seed(seed)
  return open_clip.model.CLIP(
      m.embed_dim,
      open_clip.model.CLIPVisionCfg(layers=m.vision_layers, width=m.vision_width,
                                    head_width=m.vision_width // m.vision_heads,
                                    mlp_ratio=m.vision_mlp_ratio, patch_size=m.patch_size,
                                    image_size=config.data.image_size),
      open_clip.model.CLIPTextCfg(context_length=context_length, vocab_size=vocab_size,
                                  width=m.text_width, heads=m.text_heads, layers=m.text_layers,
                                  mlp_ratio=m.text_mlp_ratio),
      quick_gelu=m.activation == "quick_gelu")
