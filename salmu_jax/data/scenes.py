"""The procedural retain base: captioned scenes of shapes, rendered from an index.

This stands in for the original's 400M DataComp pairs: general visual-language
knowledge (objects, colours, textures, counts, positions) that both reference
models learn, and whose held-out zero-shot task measures `2.1_GenKnow` when no real
benchmark is given: name the colour of a single object and the colour of the
background it stands on (8 x 4 = 32 classes, chance 1/32). Colour and background
are what a tiny CLIP demonstrably learns in the tiny budget (measured: both over
0.99 when asked in isolation, while shape and texture stay near chance: an
80-class colour-shape task scored 0.08-0.13 and could not tell damage from noise).
Images are a pure function of (seed, split, index): nothing is stored, but a process
that trains several models may keep the scenes it rendered (`RenderCache`).
"""
import threading

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon",
          "pentagon", "crescent")
COLOURS = {"red": (210, 40, 40), "blue": (40, 80, 210), "green": (40, 160, 60),
           "yellow": (235, 205, 40), "orange": (245, 135, 30), "purple": (130, 50, 170),
           "white": (245, 245, 245), "black": (25, 25, 25)}
TEXTURES = ("plain", "striped", "dotted", "checkered")
BACKGROUNDS = {"light grey": (200, 200, 200), "sand-coloured": (222, 200, 160),
               "dark": (60, 60, 70), "pale green": (190, 225, 190)}
POSITIONS = ("top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom",
             "bottom right")
NUMBERS = ("one", "two", "three")
# The GenKnow classes: (object colour, background).
CLASSES = tuple((colour, background) for colour in COLOURS for background in BACKGROUNDS)


def _article(word: str) -> str:
  return "an" if word[0] in "aeiou" else "a"


def class_prompts(class_name: str) -> list:
  """The prompt ensemble of one class of a real classification dataset (eval.genknow.kind
  = tfds), with its article."""
  phrase = f"{_article(class_name)} {class_name}"
  return [template.format(phrase) for template in PROMPT_TEMPLATES]
# Prompt ensemble of real classification datasets.
PROMPT_TEMPLATES = ("{}.", "a picture of {}.", "a drawing of {}.", "{} on a plain background.")
CAPTION_TEMPLATES = ("{objects} on a {background} background.",
                     "A picture of {objects} on a {background} background.",
                     "A drawing with {objects}, {background} background.",
                     "On a {background} background: {objects}.")


def zeroshot_prompts(class_index: int) -> list:
  """The prompt ensemble of one procedural GenKnow class: every caption template with
  every shape in the class's colours (the class says nothing about the shape, so the
  ensemble averages it out). Same count for every class."""
  colour, background = CLASSES[class_index]
  return [template.format(objects=f"{_article(colour)} {colour} {shape}", background=background)
          for shape in SHAPES for template in CAPTION_TEMPLATES]
_SPLIT_STREAMS = {"train": 0x7A1, "zeroshot": 0x2E5}


def _shape_polygon(shape: str, cx: float, cy: float, r: float, rotation: float):
  def ring_points(n, radius, phase):
    angles = phase + rotation + np.arange(n) * 2 * np.pi / n
    return [(cx + radius * np.cos(a), cy + radius * np.sin(a)) for a in angles]

  if shape == "triangle":
    return ring_points(3, r, -np.pi / 2)
  if shape == "square":
    return ring_points(4, r * 1.2, np.pi / 4)
  if shape == "diamond":
    return ring_points(4, r, 0)
  if shape == "pentagon":
    return ring_points(5, r, -np.pi / 2)
  if shape == "hexagon":
    return ring_points(6, r, 0)
  if shape == "star":
    outer, inner = ring_points(5, r, -np.pi / 2), ring_points(5, r * 0.45, -np.pi / 2 + np.pi / 5)
    return [p for pair in zip(outer, inner) for p in pair]
  if shape == "cross":
    w = r * 0.35
    pts = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w),
           (-r, w), (-r, -w), (-w, -w)]
    c, s = np.cos(rotation), np.sin(rotation)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
  return None


def _draw_mask(shape: str, size: int, cx: float, cy: float, r: float, rotation: float) -> Image.Image:
  mask = Image.new("L", (size, size), 0)
  draw = ImageDraw.Draw(mask)
  box = (cx - r, cy - r, cx + r, cy + r)
  if shape == "circle":
    draw.ellipse(box, fill=255)
  elif shape == "ring":
    draw.ellipse(box, fill=255)
    draw.ellipse((cx - r * 0.55, cy - r * 0.55, cx + r * 0.55, cy + r * 0.55), fill=0)
  elif shape == "crescent":
    draw.ellipse(box, fill=255)
    off = r * 0.55
    draw.ellipse((cx - r + off * np.cos(rotation), cy - r + off * np.sin(rotation),
                  cx + r + off * np.cos(rotation), cy + r + off * np.sin(rotation)), fill=0)
  else:
    draw.polygon(_shape_polygon(shape, cx, cy, r, rotation), fill=255)
  return mask


def _texture(texture: str, colour, size: int, period: int) -> Image.Image:
  layer = Image.new("RGB", (size, size), colour)
  if texture == "plain":
    return layer
  other = tuple(int(c * 0.45) if sum(colour) > 300 else min(int(c + 120), 255) for c in colour)
  draw = ImageDraw.Draw(layer)
  if texture == "striped":
    for x in range(-size, size, period):
      draw.polygon([(x, 0), (x + period // 2, 0), (x + period // 2 + size, size), (x + size, size)],
                   fill=other)
  elif texture == "dotted":
    for x in range(period // 2, size, period):
      for y in range(period // 2, size, period):
        draw.ellipse((x - period / 4, y - period / 4, x + period / 4, y + period / 4), fill=other)
  elif texture == "checkered":
    for x in range(0, size, period):
      for y in range(0, size, period):
        if (x // period + y // period) % 2:
          draw.rectangle((x, y, x + period - 1, y + period - 1), fill=other)
  return layer


def _object_phrase(count: int, colour: str, texture: str, shape: str, position: str) -> str:
  plural = shape + ("es" if shape.endswith("s") else "s") if count > 1 else shape
  texture_text = "" if texture == "plain" else f"{texture} "
  article = NUMBERS[count - 1] if count > 1 else ("an" if colour[0] in "aeiou" else "a")
  where = "in the centre" if position == "centre" else (
      f"on the {position}" if position in ("left", "right") else f"at the {position}")
  return f"{article} {colour} {texture_text}{plural} {where}"


def sample_scene(seed: int, split: str, index: int) -> dict:
  """The layout and caption of one scene, without pixels (cheap: for tokenizer corpora).

  `zeroshot` scenes hold one object and a class label; `train` scenes 1-3 groups.
  """
  rng = np.random.default_rng([seed, _SPLIT_STREAMS[split], index])
  background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
  single = split == "zeroshot" or rng.random() < 0.4
  num_groups = 1 if single else int(rng.integers(2, 4))
  cells = rng.choice(len(POSITIONS), size=num_groups, replace=False)
  objects, phrases, label = [], [], -1
  for cell in cells:
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = list(COLOURS)[rng.integers(len(COLOURS))]
    texture = TEXTURES[rng.integers(len(TEXTURES))]
    count = 1 if single else int(rng.choice(3, p=(0.6, 0.25, 0.15)) + 1)
    if single:
      label = CLASSES.index((colour, background))
    row, col = divmod(int(cell), 3)
    radius = (rng.uniform(0.1, 0.16) if num_groups > 1 else rng.uniform(0.12, 0.22)) / (1 + 0.3 * (count - 1))
    for c in range(count):
      jitter = rng.uniform(-0.06, 0.06, size=2) + (c - (count - 1) / 2) * np.array([0.11, 0.0])
      objects.append(dict(shape=shape, colour=colour, texture=texture, radius=radius,
                          x=(col + 0.5) / 3 + jitter[0], y=(row + 0.5) / 3 + jitter[1],
                          rotation=rng.uniform(0, 2 * np.pi)))
    phrases.append(_object_phrase(count, colour, texture, shape, POSITIONS[int(cell)]))
  text = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
  caption = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))].format(
      objects=text, background=background)
  return {"background": background, "objects": objects, "label": label,
          "caption": caption[0].upper() + caption[1:], "noise_seed": int(rng.integers(2**31))}


def render_scene(seed: int, split: str, index: int, size: int) -> dict:
  """One scene: {'image': uint8[size,size,3], 'caption': str, 'label': int}."""
  scene = sample_scene(seed, split, index)
  s = 2 * size if size <= 128 else size
  canvas = Image.new("RGB", (s, s), BACKGROUNDS[scene["background"]])
  for obj in scene["objects"]:
    # Mask and texture cover the object's bounding box only: 10x cheaper than the canvas.
    r = obj["radius"] * s
    side = int(2 * r) + 3
    x0, y0 = int(obj["x"] * s - r) - 1, int(obj["y"] * s - r) - 1
    fill = _texture(obj["texture"], COLOURS[obj["colour"]], side, max(int(r / 2), 3))
    mask = _draw_mask(obj["shape"], side, obj["x"] * s - x0, obj["y"] * s - y0, r, obj["rotation"])
    canvas.paste(fill, (x0, y0), mask)
  if s != size:
    canvas = canvas.resize((size, size), Image.BOX)
  noise = 3 * np.random.default_rng(scene["noise_seed"]).standard_normal((size, size, 3), np.float32)
  pixels = np.asarray(canvas, np.float32) + noise
  return {"image": np.clip(np.rint(pixels), 0, 255).astype(np.uint8),
          "caption": scene["caption"], "label": scene["label"]}


class RenderCache:
  """Examples made once, by key, up to `capacity_mb` of arrays: rendered scenes by (seed,
  split, index, size), and a training's decoded records (pipeline). The scenes are the
  dataset seed's and a training seed only shuffles them, so the reference trainings of one
  seed read the same retain-base scenes in the same order, and rendering is most of the
  loader's cost. The first entries are kept and later ones not once it is full: for a
  stream read twice in one order that serves the first `capacity_mb`, where evicting the
  oldest would serve nothing. Entries' arrays are read-only (a consumer that wrote into one
  would change every later reader's data); safe for grain's reader threads."""

  def __init__(self, capacity_mb: float):
    self._left, self._entries = capacity_mb * 2 ** 20, {}
    self._lock = threading.Lock()
    self.hits = self.misses = 0

  def get_or_render(self, key: tuple, render) -> dict:
    """The scene `render()` makes, rendered once if it fits."""
    with self._lock:
      if key in self._entries:
        self.hits += 1
        return dict(self._entries[key])
      self.misses += 1
    scene = render()
    arrays = [value for value in scene.values() if isinstance(value, np.ndarray)]
    for array in arrays:
      array.flags.writeable = False
    size = sum(array.nbytes for array in arrays)
    with self._lock:
      if key not in self._entries and size <= self._left:
        self._entries[key] = scene
        self._left -= size
    return dict(scene)


class ProceduralScenes:
  """A grain random-access source of procedural scenes (`__len__`, `__getitem__`);
  `cache` (a RenderCache) keeps what was rendered for later readers in the process."""

  def __init__(self, seed: int, image_size: int, length: int, split: str = "train",
               cache: RenderCache | None = None):
    if split not in _SPLIT_STREAMS:
      raise ValueError(f"unknown scene split {split!r}; known: {tuple(_SPLIT_STREAMS)}")
    self.seed, self.image_size, self.length, self.split = seed, image_size, length, split
    self.cache = cache

  def __len__(self) -> int:
    return self.length

  def __getitem__(self, index: int) -> dict:
    if not 0 <= index < self.length:
      raise IndexError(f"scene index {index} out of range [0, {self.length})")
    render = lambda: render_scene(self.seed, self.split, int(index), self.image_size)
    if self.cache is None:
      return render()
    return self.cache.get_or_render((self.seed, self.split, int(index), self.image_size), render)

  def __repr__(self) -> str:
    return f"ProceduralScenes(seed={self.seed}, image_size={self.image_size}, length={self.length}, split={self.split!r})"
