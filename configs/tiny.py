"""Tiny scale: minutes on 2 CPU cores (128 personas, 64 px, a 1.2M-parameter CLIP).

`configs/tiny.py:clean` or `configs/tiny.py:compromised` selects the reference model.
"""
from salmu_jax.config import base_config, model_config, with_reference


def get_config(arg=None):
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
  config.model = model_config("tiny", dtype="float32")  # bf16 is slow on CPUs.
  train = config.train
  train.steps = 400
  train.warmup_steps = 40
  train.learning_rate = 2e-3
  train.weight_decay = 0.05
  train.sensitive_exposures = 10.0
  train.log_every = 10
  train.eval_every = 100
  train.checkpoint_every = 100
  config.unlearn.forget_batch = 64
  config.unlearn.retain_batch = 64
  config.unlearn.learning_rate = 1e-4
  return with_reference(config, arg)
