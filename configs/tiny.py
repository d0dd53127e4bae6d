"""Tiny scale: minutes on 2 CPU cores (128 personas, 64 px)."""
from salmu_jax.config import base_config


def get_config():
  config = base_config()
  config.batch_size = 128
  data = config.data
  data.num_personas = 128
  data.num_unseen = 16
  data.images_per_identity = 16  # Two images per field and persona.
  data.retain_joint_per_identity = 2
  data.num_disjoint_people = 512
  data.image_size = 64
  data.image_format = "png"
  data.retain_base.zeroshot_examples = 2_000
  config.tokenizer.vocab_size = 4_096
  config.tokenizer.context_length = 48
  config.tokenizer.scene_captions = 20_000
  return config
