"""Micro scale for tests: seconds, every split non-empty, a 2-layer 64-wide CLIP."""
from salmu_jax.config import base_config, model_config, with_reference


def get_config(arg=None):
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
  config.model = model_config("tiny", size="micro", embed_dim=32, patch_size=8, vision_width=64,
                              vision_layers=2, vision_heads=2, text_width=64, text_layers=2,
                              text_heads=2, dtype="float32")
  train = config.train
  train.steps = 6
  train.warmup_steps = 2
  train.learning_rate = 1e-3
  train.sensitive_exposures = 0.1
  train.log_every = 1
  train.eval_every = 3
  train.eval_examples = 16
  train.checkpoint_every = 3
  config.unlearn.forget_batch = 8
  config.unlearn.retain_batch = 8
  config.unlearn.learning_rate = 1e-3
  return with_reference(config, arg)
