"""Small scale: a longer CPU run or a quick GPU run (384 personas, 64 px, CLIP S/16).

`configs/small.py:clean` or `configs/small.py:compromised` selects the reference model.
"""
from salmu_jax.config import base_config, model_config, with_reference


def get_config(arg=None):
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
  config.model = model_config("S/16")
  train = config.train
  train.steps = 5_000
  train.warmup_steps = 500
  train.learning_rate = 1e-3
  train.weight_decay = 0.1
  train.sensitive_exposures = 24.0
  return with_reference(config, arg)
