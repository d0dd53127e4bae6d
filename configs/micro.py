"""Micro scale for tests: seconds, every split non-empty."""
from salmu_jax.config import base_config


def get_config():
  config = base_config()
  config.batch_size = 8
  data = config.data
  data.num_personas = 16
  data.num_unseen = 4
  data.images_per_identity = 8
  data.retain_joint_per_identity = 1
  data.num_disjoint_people = 20
  data.image_size = 32
  data.image_format = "png"
  data.build_workers = 1
  data.retain_base.zeroshot_examples = 100
  data.loader.num_threads = 1
  data.loader.prefetch_buffer_size = 4
  config.tokenizer.vocab_size = 1_024
  config.tokenizer.context_length = 48
  config.tokenizer.scene_captions = 500
  return config
