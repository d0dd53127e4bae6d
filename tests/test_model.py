"""The Flax CLIP and the contrastive losses."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from salmu_jax import embed, losses
from salmu_jax.model import clip
from salmu_jax.model import factory
from salmu_jax.training import optimizer, step as step_lib
from salmu_jax.training.state import TrainState


def micro_model(micro_config, dtype="float32", vocab=64, context=12, seed=0):
  micro_config.model.dtype = dtype
  micro_config.tokenizer.context_length = context
  return factory.build(micro_config, vocab, jax.random.PRNGKey(seed))


# Jitted: eager, every op of a forward pass compiles on its own (seconds per test).
forward = nnx.jit(lambda model, images, tokens: model(images, tokens))
encode_image = nnx.jit(lambda model, images: model.encode_image(images))
encode_text = nnx.jit(lambda model, tokens: model.encode_text(tokens))


def random_pairs(n, size=32, vocab=64, context=12, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, vocab - 1, (n, context)).astype(np.int32)
  ends = rng.integers(4, context, n)
  tokens[np.arange(n), ends] = vocab - 1  # eot: the largest id
  tokens[np.arange(context)[None] > ends[:, None]] = 0
  return rng.integers(0, 256, (n, size, size, 3)).astype(np.uint8), tokens


def test_forward_shapes_dtypes_and_parameter_layout(micro_config):
  model = micro_model(micro_config)
  images, tokens = random_pairs(4)
  image_emb, text_emb, scale, bias = forward(model, images, tokens)
  assert image_emb.shape == text_emb.shape == (4, 32) and image_emb.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(image_emb, axis=-1), 1, rtol=1e-5)
  np.testing.assert_allclose(float(scale), np.log(1 / 0.07), rtol=1e-6)
  assert float(bias) == -10.0
  # OpenCLIP's shapes: conv1 (width,3,p,p) as (p,p,3,width); 3*width qkv; 4x MLP.
  assert model.visual.patch_kernel[...].shape == (8, 8, 3, 64)
  assert model.visual.positional_embedding[...].shape == (17, 64)
  assert model.text.transformer.blocks[0].attn.qkv_kernel[...].shape == (64, 3, 2, 32)
  assert model.text.transformer.blocks[0].mlp.fc_kernel[...].shape == (64, 256)
  params = nnx.state(model, nnx.Param)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  names = nnx.get_partition_spec(params)
  assert all(spec is not None for spec in jax.tree.leaves(names, is_leaf=lambda x: x is None))


def test_bf16_compute_keeps_float32_parameters(micro_config):
  images, tokens = random_pairs(4)
  full = micro_model(micro_config, "float32")
  half = micro_model(micro_config, "bfloat16")
  assert half.visual.proj[...].dtype == jnp.float32
  a, b = encode_image(full, images), encode_image(half, images)
  assert b.dtype == jnp.float32
  np.testing.assert_allclose(a, b, atol=5e-2)


def test_text_pools_at_end_of_text_and_is_causal(micro_config):
  model = micro_model(micro_config)
  _, tokens = random_pairs(2)
  changed = tokens.copy()
  after_eot = tokens.argmax(-1) + 1
  for row, start in enumerate(after_eot):
    changed[row, start:] = 5  # Tokens after eot cannot reach it through a causal mask.
  np.testing.assert_allclose(encode_text(model, tokens), encode_text(model, changed), atol=1e-6)
  # So rows cut after the longest caption (what embed.trim_padding does) embed the same.
  short = tokens.copy()
  short[:, 5], short[:, 6:] = 63, 0  # Captions of 6 tokens, eot included.
  trimmed = embed.trim_padding(short, multiple=4)
  assert trimmed.shape == (2, 8) and not trimmed[:, 6:].any()
  np.testing.assert_allclose(encode_text(model, short), encode_text(model, trimmed), atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_the_last_block_computed_at_the_pooled_rows_equals_the_full_block(micro_config, causal):
  """Each tower reads one position of its last block (model/clip.py); `pooled` computes that
  row only and must give what the full block gives there, in value and in gradient."""
  block = micro_model(micro_config).text.transformer.blocks[-1]
  x = jax.random.normal(jax.random.PRNGKey(1), (5, 12, 64))
  positions = jnp.array([0, 11, 4, 7, 4])
  graphdef, params = nnx.split(block)
  rows = jnp.arange(5)

  @jax.jit  # Eager, every op would compile on its own.
  def full(params, x):
    return nnx.merge(graphdef, params)(x, causal, jnp.float32)[rows, positions]

  @jax.jit
  def pooled(params, x):
    return nnx.merge(graphdef, params).pooled(x, positions, causal, jnp.float32)

  np.testing.assert_allclose(pooled(params, x), full(params, x), rtol=1e-5, atol=1e-6)
  weights = jax.random.normal(jax.random.PRNGKey(2), (5, 64))
  grads = [jax.jit(jax.grad(lambda p, x: jnp.sum(fn(p, x) * weights), argnums=(0, 1)))(params, x)
           for fn in (full, pooled)]
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  if causal:  # The positions after a pooled one do not reach it (rows 0, 2-4 pool before 8).
    later, before_8 = x.at[:, 8:].set(3.0), np.array([0, 2, 3, 4])
    np.testing.assert_allclose(pooled(params, later)[before_8], pooled(params, x)[before_8],
                               atol=1e-6)
    assert not np.allclose(pooled(params, later)[1], pooled(params, x)[1], atol=1e-3)


def test_bad_input_shapes_are_named(micro_config):
  model = micro_model(micro_config)
  images, tokens = random_pairs(2)
  with pytest.raises(ValueError, match="do not match the model's 32x32"):
    model.encode_image(images[:, :16, :16])
  with pytest.raises(ValueError, match="context length 12"):
    model.encode_text(np.concatenate([tokens, tokens], axis=1))


def numpy_softmax_loss(img, txt, log_scale):
  logits = np.exp(log_scale) * img @ txt.T
  def ce(l):
    l = l - l.max(1, keepdims=True)
    return -(np.diag(l) - np.log(np.exp(l).sum(1))).mean()
  return (ce(logits) + ce(logits.T)) / 2


def numpy_sigmoid_loss(img, txt, log_scale, bias):
  logits = np.exp(log_scale) * img @ txt.T + bias
  labels = 2 * np.eye(len(img)) - 1
  return np.log1p(np.exp(-labels * logits)).sum() / len(img)


def test_losses_match_numpy_references():
  rng = np.random.default_rng(0)
  img, txt = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in rng.normal(size=(2, 6, 5)))
  np.testing.assert_allclose(losses.clip_softmax_loss(img, txt, 2.0),
                             numpy_softmax_loss(img, txt, 2.0), rtol=1e-5)
  np.testing.assert_allclose(losses.siglip_loss(img, txt, 2.0, -1.5),
                             numpy_sigmoid_loss(img, txt, 2.0, -1.5), rtol=1e-5)
  # Perfectly aligned, sharp embeddings: both losses approach 0.
  eye = np.eye(4)
  assert float(losses.clip_softmax_loss(eye, eye, np.log(100.0))) < 1e-3
  assert float(losses.siglip_loss(eye, eye, np.log(100.0), -50.0)) < 1e-3


@pytest.mark.slow
def test_tiny_model_overfits_a_handful_of_pairs(micro_config):
  images, tokens = random_pairs(8, seed=3)
  model = micro_model(micro_config, seed=1)
  graphdef, params = nnx.split(model)
  tx = optax.adam(3e-3)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), jax.random.PRNGKey(0))
  step = jax.jit(step_lib.make_train_step(tx, losses.contrastive("train", "softmax"),
                                       factory.apply_fn(graphdef)))
  batch = {"train": {"image": images, "tokens": tokens}}
  first = None
  for _ in range(150):
    state, metrics = step(state, None, batch)
    first = first if first is not None else float(metrics["loss"])
  assert first > 1.5 and float(metrics["loss"]) < 0.05
  trained = nnx.merge(graphdef, state.params)
  sims = np.asarray(encode_image(trained, images) @ encode_text(trained, tokens).T)
  assert (sims.argmax(1) == np.arange(8)).all()


def test_weight_decay_mask_skips_norms_biases_positions_and_scale(micro_config):
  params = nnx.state(micro_model(micro_config), nnx.Param)
  mask = optimizer.decay_mask(params)
  flat = {jax.tree_util.keystr(path): leaf for path, leaf in
          jax.tree_util.tree_flatten_with_path(mask)[0]}
  decayed = {k for k, v in flat.items() if v}
  assert any("fc_kernel" in k for k in decayed) and any("token_embedding" in k for k in decayed)
  for name in ("positional_embedding", "class_embedding", "logit_scale", "ln_1", "bias"):
    assert not any(name in k for k in decayed), name


@pytest.mark.parametrize("size, millions", [("B/32", 151.28), ("B/16", 149.62), ("L/14", 427.62)])
def test_sizes_have_openclip_parameter_counts(size, millions):
  """OpenCLIP's published counts (CLIP vocabulary 49,408, context 77, 224 px); +1 is our
  SigLIP logit bias."""
  from salmu_jax.config import model_config
  abstract = nnx.eval_shape(lambda: clip.CLIP(model_config(size), image_size=224, vocab_size=49_408,
                                              context_length=77, rngs=nnx.Rngs(0)))
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract)))
  assert round((count - 1) / 1e6, 2) == millions


@pytest.mark.slow
def test_remat_changes_memory_not_results(micro_config):
  images, tokens = random_pairs(4)

  def loss_and_grads(remat):
    micro_config.model.remat = remat
    graphdef, params = nnx.split(micro_model(micro_config))
    ctx = losses.Context(None, jax.random.PRNGKey(0), 0, factory.apply_fn(graphdef))
    loss_fn = losses.contrastive("train", "softmax")
    return jax.jit(jax.value_and_grad(  # Jitted: eager, every op compiles on its own.
        lambda p: loss_fn(p, {"train": {"image": images, "tokens": tokens}}, ctx)[0]))(params)

  (plain, plain_grads), (remat, remat_grads) = loss_and_grads(False), loss_and_grads(True)
  np.testing.assert_allclose(plain, remat, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(plain_grads), jax.tree.leaves(remat_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
