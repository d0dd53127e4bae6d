"""Small scale: a longer CPU run or a quick GPU run (384 personas, 64 px)."""
from salmu_jax.config import base_config


def get_config():
  config = base_config()
  config.batch_size = 256
  data = config.data
  data.num_personas = 384
  data.num_unseen = 40
  data.images_per_identity = 40
  data.num_disjoint_people = 4_000
  data.image_size = 64
  data.image_format = "png"
  data.retain_base.zeroshot_examples = 5_000
  config.tokenizer.vocab_size = 8_192
  config.tokenizer.context_length = 48
  return config
