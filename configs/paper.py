"""Paper scale (SALMUBENCH.md §2): 774 personas, ~60K sensitive pairs, 224 px, ViT-B/16.

`configs/paper.py:clean` or `configs/paper.py:compromised` selects the reference model.
"""
from salmu_jax.config import base_config, with_reference


def get_config(arg=None):
  return with_reference(base_config(), arg)  # The base defaults are the paper's numbers.
