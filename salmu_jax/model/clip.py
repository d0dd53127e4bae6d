"""A Flax NNX CLIP with OpenCLIP's architecture, so its weights can be imported exactly.

Vision: patch embedding (a bias-free conv, applied as a matmul on patches),
class token, learned positions, ln_pre, pre-norm residual blocks, ln_post, class
pooling, projection. Text: token and position embeddings, causal pre-norm blocks,
ln_final, pooling at the end-of-text token (the largest id, as in OpenCLIP),
projection. A learnable logit scale, and a logit bias for the sigmoid loss.

Only the pooled position of each tower's output is read, so the last block computes
keys and values for every position but its query, attention output and MLP for the
pooled row alone (`ResidualBlock.pooled`): the same function as OpenCLIP's, which
computes every row of the last block and discards all but one, with 5/6 of that
block's matmuls left out (a third of the tiny model's step, 7% of a 12-layer one's).

With `cfg.memory.enabled`, a key-value memory of the personal training pairs sits after
both towers (`Memory`): forgetting a pair is deleting its key (docs/protocol.md §8).

Every parameter carries logical axis names (`salmu_jax/model/sharding.py` maps
them to mesh axes); nothing here knows about devices. Parameters are float32;
`dtype` is the compute dtype (bf16 on accelerators), applied at use.
"""
import math

import jax
import jax.numpy as jnp
from flax import nnx

# OpenAI CLIP's pixel normalization, used by OpenCLIP and by us everywhere.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
LN_EPS = 1e-5


def _param(value, names):
  """A float32 parameter with logical axis names; sharding happens at jit time."""
  return nnx.Param(value, out_sharding=names, eager_sharding=False)


def _normal(rngs, shape, std):
  return std * jax.random.normal(rngs.params(), shape, jnp.float32)


def activation_fn(name: str):
  if name == "gelu":
    return lambda x: jax.nn.gelu(x, approximate=False)  # torch.nn.GELU()
  if name == "quick_gelu":
    return lambda x: x * jax.nn.sigmoid(1.702 * x)  # OpenAI's original CLIP
  raise ValueError(f"unknown activation {name!r}; known: gelu, quick_gelu")


def pick_rows(x, positions):
  """x[b, positions[b]] for each row b: [B, T, D], int [B] -> [B, D]."""
  return jnp.take_along_axis(x, positions[:, None, None], axis=1)[:, 0]


def dense(x, kernel, bias, dtype):
  """x[..., d] @ kernel[d, f] + bias as one 2-D matmul: XLA:CPU runs the backward of a
  3-D dot about twice as slowly as the same matmul on flattened rows."""
  y = x.reshape(-1, x.shape[-1]) @ kernel.astype(dtype) + bias.astype(dtype)
  return y.reshape(*x.shape[:-1], kernel.shape[-1])


class LayerNorm(nnx.Module):
  def __init__(self, width: int):
    self.scale = _param(jnp.ones((width,), jnp.float32), ("norm",))
    self.bias = _param(jnp.zeros((width,), jnp.float32), ("norm",))

  def __call__(self, x):
    # Statistics in float32 whatever the compute dtype, as torch autocast does.
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + LN_EPS) * self.scale[...] + self.bias[...]
    return y.astype(x.dtype)


class Attention(nnx.Module):
  """Multi-head self-attention laid out as torch.nn.MultiheadAttention's in/out projections."""

  def __init__(self, width: int, heads: int, proj_std: float, rngs: nnx.Rngs):
    if width % heads:
      raise ValueError(f"width {width} is not divisible by {heads} heads")
    head_dim = width // heads
    self.heads = heads
    self.qkv_kernel = _param(_normal(rngs, (width, 3, heads, head_dim), width ** -0.5),
                             ("embed", "qkv", "heads", "kv"))
    self.qkv_bias = _param(jnp.zeros((3, heads, head_dim), jnp.float32), ("qkv", "heads", "kv"))
    self.out_kernel = _param(_normal(rngs, (heads, head_dim, width), proj_std),
                             ("heads", "kv", "embed"))
    self.out_bias = _param(jnp.zeros((width,), jnp.float32), ("norm",))

  def __call__(self, x, causal: bool, dtype):
    b, t, d = x.shape
    _, three, heads, head_dim = self.qkv_kernel[...].shape
    qkv = dense(x, self.qkv_kernel[...].reshape(d, -1), self.qkv_bias[...].reshape(-1), dtype)
    q, k, v = jnp.moveaxis(qkv.reshape(b, t, three, heads, head_dim), 2, 0)
    out = jax.nn.dot_product_attention(q, k, v, is_causal=causal).reshape(b, t, heads * head_dim)
    return dense(out, self.out_kernel[...].reshape(heads * head_dim, d), self.out_bias[...], dtype)

  def pooled(self, x, positions, causal: bool, dtype):
    """The attention output at one position per row (`positions`: int [B]) of x [B, T, D]:
    keys and values from every position (with `causal`, those up to the row's own),
    the query from that position only -> [B, D]. Equal to `__call__(...)[b, positions]`."""
    b, t, d = x.shape
    _, three, heads, head_dim = self.qkv_kernel[...].shape
    kernel, bias = self.qkv_kernel[...], self.qkv_bias[...]
    q = dense(pick_rows(x, positions), kernel[:, 0].reshape(d, -1), bias[0].reshape(-1), dtype)
    kv = dense(x, kernel[:, 1:].reshape(d, -1), bias[1:].reshape(-1), dtype)
    k, v = jnp.moveaxis(kv.reshape(b, t, three - 1, heads, head_dim), 2, 0)
    mask = None
    if causal:  # [B, heads, queries, keys]: the query sees the keys up to its position.
      mask = (jnp.arange(t)[None, :] <= positions[:, None])[:, None, None, :]
    out = jax.nn.dot_product_attention(q.reshape(b, 1, heads, head_dim), k, v, mask=mask)
    return dense(out.reshape(b, heads * head_dim), self.out_kernel[...].reshape(heads * head_dim, d),
                 self.out_bias[...], dtype)


class MLP(nnx.Module):
  def __init__(self, width: int, hidden: int, proj_std: float, activation: str, rngs: nnx.Rngs):
    self.fc_kernel = _param(_normal(rngs, (width, hidden), (2 * width) ** -0.5), ("embed", "mlp"))
    self.fc_bias = _param(jnp.zeros((hidden,), jnp.float32), ("mlp",))
    self.proj_kernel = _param(_normal(rngs, (hidden, width), proj_std), ("mlp", "embed"))
    self.proj_bias = _param(jnp.zeros((width,), jnp.float32), ("norm",))
    self.activation = activation

  def __call__(self, x, dtype):
    h = activation_fn(self.activation)(dense(x, self.fc_kernel[...], self.fc_bias[...], dtype))
    return dense(h, self.proj_kernel[...], self.proj_bias[...], dtype)


class ResidualBlock(nnx.Module):
  def __init__(self, width, heads, mlp_ratio, layers, activation, rngs):
    proj_std = width ** -0.5 * (2 * layers) ** -0.5  # OpenCLIP's init.
    self.ln_1 = LayerNorm(width)
    self.attn = Attention(width, heads, proj_std, rngs)
    self.ln_2 = LayerNorm(width)
    self.mlp = MLP(width, int(width * mlp_ratio), proj_std, activation, rngs)

  def __call__(self, x, causal: bool, dtype):
    x = x + self.attn(self.ln_1(x), causal, dtype)
    return x + self.mlp(self.ln_2(x), dtype)

  def pooled(self, x, positions, causal: bool, dtype):
    """`__call__(x)` at one position per row (int [B]) -> [B, D], the rest not computed."""
    rows = pick_rows(x, positions) + self.attn.pooled(self.ln_1(x), positions, causal, dtype)
    return rows + self.mlp(self.ln_2(rows), dtype)


class Transformer(nnx.Module):
  def __init__(self, width, layers, heads, mlp_ratio, activation, remat, rngs):
    self.blocks = nnx.List([ResidualBlock(width, heads, mlp_ratio, layers, activation, rngs)
                            for _ in range(layers)])
    self.remat = remat

  def __call__(self, x, positions, causal: bool, dtype):
    """x [B, T, D] -> the last block's output at `positions` (int [B], one per row), [B, D]:
    the towers read one position each, so the last block computes that row only."""
    *blocks, last = self.blocks
    maybe_remat = nnx.remat if self.remat else (lambda fn: fn)
    for block in blocks:
      x = maybe_remat(lambda b, y: b(y, causal, dtype))(block, x)
    return maybe_remat(lambda b, y: b.pooled(y, positions, causal, dtype))(last, x)


class VisionTower(nnx.Module):
  def __init__(self, cfg, image_size: int, rngs: nnx.Rngs):
    p, width = cfg.patch_size, cfg.vision_width
    if image_size % p:
      raise ValueError(f"image size {image_size} is not divisible by patch size {p}")
    self.patch_size, self.grid = p, image_size // p
    scale = width ** -0.5
    # torch conv1.weight (width, 3, p, p) transposed to (p, p, 3, width).
    self.patch_kernel = _param(_normal(rngs, (p, p, 3, width), (3 * p * p) ** -0.5),
                               ("patch", "patch", "channels", "embed"))
    self.class_embedding = _param(_normal(rngs, (width,), scale), ("norm",))
    self.positional_embedding = _param(_normal(rngs, (self.grid ** 2 + 1, width), scale),
                                       ("length", "embed"))
    self.ln_pre = LayerNorm(width)
    self.transformer = Transformer(width, cfg.vision_layers, cfg.vision_heads,
                                   cfg.vision_mlp_ratio, cfg.activation, cfg.remat, rngs)
    self.ln_post = LayerNorm(width)
    self.proj = _param(_normal(rngs, (width, cfg.embed_dim), scale), ("embed", "joint"))

  def __call__(self, images, dtype):
    """images: uint8 or float in [0, 255], [B, H, W, 3] -> features [B, embed_dim]."""
    x = images.astype(jnp.float32) / 255.0
    x = ((x - jnp.asarray(IMAGE_MEAN)) / jnp.asarray(IMAGE_STD)).astype(dtype)
    b, p, g = x.shape[0], self.patch_size, self.grid
    if x.shape[1:3] != (g * p, g * p):
      raise ValueError(f"images of shape {x.shape[1:3]} do not match the model's "
                       f"{g * p}x{g * p} input")
    patches = x.reshape(b, g, p, g, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, p * p * 3)
    kernel = self.patch_kernel[...].reshape(p * p * 3, -1).astype(dtype)
    x = patches @ kernel
    cls = jnp.broadcast_to(self.class_embedding[...].astype(dtype), (b, 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=1) + self.positional_embedding[...].astype(dtype)
    class_position = jnp.zeros((b,), jnp.int32)
    pooled = self.transformer(self.ln_pre(x), class_position, causal=False, dtype=dtype)
    return self.ln_post(pooled) @ self.proj[...].astype(dtype)


class TextTower(nnx.Module):
  def __init__(self, cfg, vocab_size: int, context_length: int, rngs: nnx.Rngs):
    width = cfg.text_width
    self.context_length = context_length
    self.token_embedding = _param(_normal(rngs, (vocab_size, width), 0.02), ("vocab", "embed"))
    self.positional_embedding = _param(_normal(rngs, (context_length, width), 0.01),
                                       ("length", "embed"))
    self.transformer = Transformer(width, cfg.text_layers, cfg.text_heads, cfg.text_mlp_ratio,
                                   cfg.activation, cfg.remat, rngs)
    self.ln_final = LayerNorm(width)
    self.text_projection = _param(_normal(rngs, (width, cfg.embed_dim), width ** -0.5),
                                  ("embed", "joint"))

  def __call__(self, tokens, dtype):
    """tokens: int32 [B, L <= context_length] -> features [B, embed_dim].

    Attention is causal, so the padding after the end-of-text token never reaches the
    pooled position: rows cut after their longest caption embed exactly as full rows.
    """
    length = tokens.shape[1]
    if length > self.context_length:
      raise ValueError(f"tokens of length {length} exceed the model's context length "
                       f"{self.context_length}")
    x = jnp.take(self.token_embedding[...], tokens, axis=0).astype(dtype)
    x = x + self.positional_embedding[:length].astype(dtype)
    end_of_text = tokens.argmax(-1)  # The end-of-text token has the largest id.
    pooled = self.ln_final(self.transformer(x, end_of_text, causal=True, dtype=dtype))
    return pooled @ self.text_projection[...].astype(dtype)


def normalize(x):
  x = x.astype(jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


ADDRESS_POOL = 16  # Images are addressed by their 16 x 16 average-pooled pixels (or 8 x 8).


def _address_vectors(seed: int, ids, dim: int):
  """A fixed random Gaussian vector per integer id (token id, pixel index), [.., dim]."""
  key = jax.random.PRNGKey(seed)
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (dim,)))(
      ids.reshape(-1)).reshape(*ids.shape, dim)


def image_address(images, dim: int):
  """Content address of images [B, H, W, 3]: a fixed random projection of their pooled,
  centred pixels, normalized. Depends on no weight: an exact copy of a stored image has
  cosine 1 with its key; other images, photos of the same person included, less."""
  x = images.astype(jnp.float32) / 255.0
  b, h, w, c = x.shape
  side = ADDRESS_POOL if h % ADDRESS_POOL == 0 and w % ADDRESS_POOL == 0 else 8  # 8 | size.
  x = x.reshape(b, side, h // side, side, w // side, c).mean(axis=(2, 4)).reshape(b, -1)
  x = x - x.mean(axis=1, keepdims=True)
  projection = _address_vectors(1, jnp.arange(x.shape[1]), dim)
  return normalize(x @ projection)


def text_address(tokens, dim: int):
  """Content address of token rows [B, L]: the sum of a fixed random vector per token id
  (padding, id 0, excluded), normalized; the same caption at any padding length gives the
  same address."""
  vectors = _address_vectors(2, tokens, dim) * (tokens > 0)[..., None]
  return normalize(vectors.sum(axis=1))


class Memory(nnx.Module):
  """One row per personal training pair: an image key and a text key (the pair's content
  addresses, `image_address` / `text_address`, written after training), a learned value in
  the joint space shared by both towers, and `valid` (1.0 / 0.0; deletion sets 0).

  A query reads softmax(q K^T / tau + log valid) over the keys within `min_similarity`
  of it, beside a null row of value 0 at `min_similarity`: a query far from every key
  reads nothing, and deleting a key changes only the queries that key was within
  `min_similarity` of (the others' weights are bit-identical). Keys and `valid` are
  read through stop_gradient: only values learn. Rows shard over the `memory` axis.
  """

  def __init__(self, rows: int, dim: int, temperature: float, min_similarity: float,
               value_scale: float):
    zeros = lambda *shape: jnp.zeros(shape, jnp.float32)
    self.image_keys = _param(zeros(rows, dim), ("memory", "joint"))
    self.text_keys = _param(zeros(rows, dim), ("memory", "joint"))
    # Stored divided by value_scale: a row's gradient is non-zero only on the steps its pair
    # is in the batch (a few tens in a run), the weights' on every step, and Adam moves
    # each parameter about one learning rate per step, so values move value_scale x faster.
    self.values = _param(zeros(rows, dim), ("memory", "joint"))
    self.valid = _param(zeros(rows), ("memory",))
    self.temperature, self.min_similarity = temperature, min_similarity
    self.value_scale = value_scale

  def _values(self):
    return self.value_scale * self.values[...]

  def weights(self, query, keys):
    """[B, rows] read weights of normalized queries [B, D] (rows beyond reach: exactly 0)."""
    similarity = query @ jax.lax.stop_gradient(keys).T
    reach = (jax.lax.stop_gradient(self.valid[...]) > 0.5) & (similarity >= self.min_similarity)
    logits = jnp.where(reach, similarity / self.temperature, -jnp.inf)
    null = jnp.full((query.shape[0], 1), self.min_similarity / self.temperature, logits.dtype)
    return jax.nn.softmax(jnp.concatenate([null, logits], axis=1), axis=1)[:, 1:]

  def read(self, query, keys):
    return self.weights(query, keys) @ self._values()

  def lookup(self, rows):
    """Training's read: each pair's own value (rows -1, pairs not held, read 0)."""
    held = (rows >= 0)[:, None]
    return jnp.where(held, jnp.take(self._values(), jnp.maximum(rows, 0), axis=0), 0.0)


class CLIP(nnx.Module):
  """encode_image / encode_text return L2-normalized float32 embeddings."""

  def __init__(self, cfg, *, image_size: int, vocab_size: int, context_length: int,
               rngs: nnx.Rngs, memory_rows: int = 0):
    self.visual = VisionTower(cfg, image_size, rngs)
    self.text = TextTower(cfg, vocab_size, context_length, rngs)
    self.logit_scale = _param(jnp.asarray(math.log(1 / 0.07), jnp.float32), ())
    self.logit_bias = _param(jnp.asarray(cfg.init_logit_bias, jnp.float32), ())
    self.dtype = jnp.dtype(cfg.dtype)
    memory = cfg.get("memory")
    if memory is not None and memory.enabled:
      if memory_rows < 1:
        raise ValueError(f"model.memory is enabled but memory_rows={memory_rows}: the "
                         f"memory needs the number of personal training pairs")
      self.memory = Memory(memory_rows, cfg.embed_dim, memory.temperature,
                           memory.min_similarity, memory.value_scale)
      self.memory_trains = memory.trains
    else:
      self.memory = None

  def image_address(self, images):
    """What the memory is keyed and queried by (`image_address`); no weight involved."""
    return image_address(images, self.memory.values.shape[1])

  def text_address(self, tokens):
    return text_address(tokens, self.memory.values.shape[1])

  def _with_memory(self, tower, address, keys, memory_rows):
    tower = normalize(tower)
    if self.memory is None:
      return tower
    if memory_rows is None:
      return normalize(tower + self.memory.read(address(), keys[...]))
    # Training: held pairs read their own value; with trains="memory" their loss reaches
    # the values only, so the weights learn from the pairs not held.
    if self.memory_trains == "memory":
      tower = jnp.where((memory_rows >= 0)[:, None], jax.lax.stop_gradient(tower), tower)
    return normalize(tower + self.memory.lookup(memory_rows))

  def encode_image(self, images, memory_rows=None):
    keys = None if self.memory is None else self.memory.image_keys
    return self._with_memory(self.visual(images, self.dtype), lambda: self.image_address(images),
                             keys, memory_rows)

  def encode_text(self, tokens, memory_rows=None):
    keys = None if self.memory is None else self.memory.text_keys
    return self._with_memory(self.text(tokens, self.dtype), lambda: self.text_address(tokens),
                             keys, memory_rows)

  def __call__(self, images, tokens, memory_rows=None):
    """`memory_rows` [B] (training only): each pair's memory row, -1 for pairs not held;
    None: the memory is read by similarity, as at evaluation."""
    return (self.encode_image(images, memory_rows), self.encode_text(tokens, memory_rows),
            self.logit_scale[...], self.logit_bias[...])
