"""Paper scale (SALMUBENCH.md §2): 774 personas, ~60K sensitive pairs, 224 px, ViT-B/16."""
from salmu_jax.config import base_config


def get_config():
  return base_config()  # The base defaults are the paper's numbers.
