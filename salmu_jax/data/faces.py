"""Procedural synthetic portraits: one identity, many different-looking images.

An identity (`FaceIdentity`) fixes the traits a person keeps across photos: head
and jaw shape, skin tone, hair style and colour, eyes, brows, nose, mouth, facial
hair, glasses, ears, moles, freckles. A view (`FaceView`) varies everything a
model must see past: pose (shift, scale, rotation, a slight turn), expression,
lighting, background, clothing, crop and noise. `render_face` is a pure function
of (identity, view, size), so the same seed gives the same pixels.
"""
import dataclasses
import math

import numpy as np
from PIL import Image, ImageDraw

SKIN_TONES = ((255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 134, 96),
              (161, 102, 70), (125, 80, 52), (92, 58, 38), (232, 190, 172))
HAIR_COLOURS = {
    "black": (28, 24, 22), "dark brown": (66, 42, 28), "brown": (110, 72, 42),
    "auburn": (142, 58, 32), "blonde": (222, 190, 120), "red": (190, 70, 30),
    "grey": (150, 150, 150), "white": (232, 232, 226), "blue": (50, 90, 200),
    "pink": (230, 120, 170),
}
HAIR_COLOUR_WEIGHTS = (0.26, 0.2, 0.16, 0.07, 0.1, 0.05, 0.07, 0.03, 0.03, 0.03)
HAIR_STYLES = ("short", "buzz", "curly", "side-parted", "mohawk", "long", "bob", "bun",
               "ponytail", "bald")
EYE_COLOURS = {"brown": (90, 55, 30), "dark": (40, 28, 20), "blue": (70, 120, 190),
               "green": (70, 130, 80), "hazel": (130, 100, 50), "grey": (120, 130, 140)}
JAWS = ("round", "square", "pointed")
NOSES = ("straight", "wide", "button")
FACIAL_HAIR = ("none", "beard", "moustache", "goatee", "stubble")
GLASSES = ("none", "round glasses", "square glasses", "sunglasses")
NAMED_COLOURS = {
    "red": (200, 40, 40), "blue": (40, 80, 200), "green": (40, 150, 60),
    "yellow": (230, 200, 40), "orange": (240, 130, 30), "purple": (120, 50, 160),
    "pink": (235, 130, 170), "white": (240, 240, 240), "black": (30, 30, 30),
    "grey": (128, 128, 128), "brown": (120, 80, 40), "teal": (30, 140, 140),
}
CLOTHING = ("t-shirt", "collared shirt", "sweater", "jacket", "hoodie")
EXPRESSIONS = ("neutral", "smiling", "laughing", "frowning", "surprised")
BACKGROUNDS = ("plain", "studio", "curtain", "park", "office", "beach", "night", "brick")


@dataclasses.dataclass(frozen=True)
class FaceIdentity:
  gender: str
  skin: tuple
  head_w: float
  head_h: float
  jaw: str
  hair_style: str
  hair_colour: str
  eye_colour: str
  eye_spacing: float
  eye_size: float
  brow_thickness: float
  brow_tilt: float
  nose: str
  nose_length: float
  mouth_width: float
  lip_colour: tuple
  facial_hair: str
  glasses: str
  ear_size: float
  earrings: bool
  mole: tuple | None  # (dx, dy) relative to the face centre, or None.
  freckles: tuple  # ((dx, dy), ...) relative to the face centre.


@dataclasses.dataclass(frozen=True)
class FaceView:
  shift: tuple
  scale: float
  rotation: float  # Degrees.
  turn: float  # -1..1: features slide sideways as the head turns.
  expression: str
  light_angle: float
  light_strength: float
  brightness: float
  background: str
  background_colour: str
  clothing: str
  clothing_colour: str
  crop: tuple  # (x0, y0, side) as fractions of the canvas.
  noise: float
  noise_seed: int


def _pick(rng, options, weights=None):
  return options[int(rng.choice(len(options), p=weights))]


def sample_identity(rng: np.random.Generator, gender: str) -> FaceIdentity:
  female = gender == "female"
  styles_p = np.array([3, 2, 2, 2, 1, 5, 4, 3, 3, 0.5] if female else
                      [6, 4, 3, 3, 1, 1, 1, 0.5, 0.5, 3], float)
  skin = np.array(_pick(rng, SKIN_TONES), float) + rng.normal(0, 6, 3)
  return FaceIdentity(
      gender=gender,
      skin=tuple(int(v) for v in np.clip(skin, 0, 255)),
      head_w=float(rng.uniform(0.165, 0.215)),
      head_h=float(rng.uniform(0.215, 0.26)),
      jaw=_pick(rng, JAWS),
      hair_style=_pick(rng, HAIR_STYLES, styles_p / styles_p.sum()),
      hair_colour=_pick(rng, tuple(HAIR_COLOURS), HAIR_COLOUR_WEIGHTS),
      eye_colour=_pick(rng, tuple(EYE_COLOURS)),
      eye_spacing=float(rng.uniform(0.065, 0.09)),
      eye_size=float(rng.uniform(0.026, 0.04)),
      brow_thickness=float(rng.uniform(0.008, 0.02)),
      brow_tilt=float(rng.uniform(-0.015, 0.015)),
      nose=_pick(rng, NOSES),
      nose_length=float(rng.uniform(0.05, 0.085)),
      mouth_width=float(rng.uniform(0.045, 0.075)),
      lip_colour=tuple(int(v) for v in rng.integers((150, 60, 60), (215, 120, 120))),
      facial_hair="none" if female else _pick(rng, FACIAL_HAIR, (0.55, 0.15, 0.12, 0.08, 0.10)),
      glasses=_pick(rng, GLASSES, (0.62, 0.15, 0.15, 0.08)),
      ear_size=float(rng.uniform(0.025, 0.042)),
      earrings=bool(rng.random() < (0.4 if female else 0.08)),
      mole=(float(rng.uniform(-0.12, 0.12)), float(rng.uniform(-0.02, 0.15)))
      if rng.random() < 0.3 else None,
      freckles=tuple((float(x), float(y)) for x, y in rng.uniform(
          (-0.13, 0.0), (0.13, 0.06), size=(int(rng.integers(8, 20)), 2)))
      if rng.random() < 0.2 else (),
  )


def sample_view(rng: np.random.Generator) -> FaceView:
  side = float(rng.uniform(0.8, 1.0))
  return FaceView(
      shift=(float(rng.uniform(-0.07, 0.07)), float(rng.uniform(-0.05, 0.06))),
      scale=float(rng.uniform(0.85, 1.12)),
      rotation=float(rng.uniform(-12, 12)),
      turn=float(rng.uniform(-1, 1)),
      expression=_pick(rng, EXPRESSIONS, (0.3, 0.3, 0.15, 0.13, 0.12)),
      light_angle=float(rng.uniform(0, 2 * math.pi)),
      light_strength=float(rng.uniform(0.0, 0.45)),
      brightness=float(rng.uniform(0.75, 1.15)),
      background=_pick(rng, BACKGROUNDS),
      background_colour=_pick(rng, tuple(NAMED_COLOURS)),
      clothing=_pick(rng, CLOTHING),
      clothing_colour=_pick(rng, tuple(NAMED_COLOURS)),
      crop=(float(rng.uniform(0, 1 - side)), float(rng.uniform(0, 1 - side)), side),
      noise=float(rng.uniform(0, 7)),
      noise_seed=int(rng.integers(2**31)),
  )


def _mix(a, b, t):
  return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))


def _shade(colour, factor):
  return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)


def _draw_background(draw: ImageDraw.ImageDraw, view: FaceView, s: int) -> None:
  colour = NAMED_COLOURS[view.background_colour]
  kind = view.background
  if kind == "plain":
    draw.rectangle((0, 0, s, s), fill=colour)
  elif kind == "studio":
    for i in range(s):
      draw.line((0, i, s, i), fill=_mix(_shade(colour, 1.2), _shade(colour, 0.45), i / s))
  elif kind == "curtain":
    step = max(s // 12, 2)
    for x in range(0, s, step):
      draw.rectangle((x, 0, x + step, s), fill=_shade(colour, 1.0 if (x // step) % 2 else 0.7))
  elif kind == "park":
    draw.rectangle((0, 0, s, s * 0.6), fill=(135, 190, 235))
    draw.rectangle((0, s * 0.6, s, s), fill=(70, 140, 60))
    draw.ellipse((s * 0.05, s * 0.25, s * 0.35, s * 0.65), fill=(40, 100, 40))
  elif kind == "office":
    draw.rectangle((0, 0, s, s), fill=(200, 200, 195))
    draw.rectangle((s * 0.62, s * 0.1, s * 0.95, s * 0.45), fill=(170, 210, 240),
                   outline=(90, 90, 90), width=max(s // 64, 1))
    draw.rectangle((0, s * 0.82, s, s), fill=(120, 80, 50))
  elif kind == "beach":
    draw.rectangle((0, 0, s, s * 0.5), fill=(120, 190, 240))
    draw.rectangle((0, s * 0.5, s, s * 0.65), fill=(30, 110, 170))
    draw.rectangle((0, s * 0.65, s, s), fill=(230, 210, 160))
  elif kind == "night":
    draw.rectangle((0, 0, s, s), fill=(15, 20, 55))
    stars = np.random.default_rng(view.noise_seed).uniform(0, s, size=(24, 2))
    for x, y in stars:
      draw.ellipse((x - 1, y - 1, x + 1, y + 1), fill=(250, 250, 210))
  elif kind == "brick":
    draw.rectangle((0, 0, s, s), fill=(150, 70, 50))
    row = max(s // 10, 2)
    for r, y in enumerate(range(0, s, row)):
      draw.line((0, y, s, y), fill=(200, 190, 180), width=max(s // 96, 1))
      for x in range((r % 2) * row, s, 2 * row):
        draw.line((x, y, x, y + row), fill=(200, 190, 180), width=max(s // 96, 1))
  else:
    raise ValueError(f"unknown background {kind!r}")


def _draw_person(draw: ImageDraw.ImageDraw, face: FaceIdentity, view: FaceView, s: int) -> None:
  """Draws the person on a transparent layer in unit coordinates scaled by `s`."""
  def box(cx, cy, rx, ry):
    return (s * (cx - rx), s * (cy - ry), s * (cx + rx), s * (cy + ry))

  def pt(x, y):
    return (s * x, s * y)

  width = lambda w: max(int(round(s * w)), 1)
  cx, cy = 0.5, 0.45
  hw, hh = face.head_w, face.head_h
  skin = face.skin
  hair = HAIR_COLOURS[face.hair_colour]
  cloth = NAMED_COLOURS[view.clothing_colour]
  dx = view.turn * hw * 0.25  # Features slide sideways as the head turns.

  # Clothing and neck.
  draw.ellipse(box(0.5, 1.08, 0.38, 0.3), fill=cloth)
  if view.clothing == "hoodie":
    draw.ellipse(box(0.5, 0.8, 0.2, 0.08), fill=_shade(cloth, 0.8))
  draw.rectangle((s * 0.44, s * (cy + hh * 0.6), s * 0.56, s * 0.83), fill=_shade(skin, 0.9))
  if view.clothing == "collared shirt":
    draw.polygon([pt(0.42, 0.8), pt(0.5, 0.88), pt(0.46, 0.9), pt(0.38, 0.83)], fill=(245, 245, 245))
    draw.polygon([pt(0.58, 0.8), pt(0.5, 0.88), pt(0.54, 0.9), pt(0.62, 0.83)], fill=(245, 245, 245))
  elif view.clothing == "jacket":
    draw.polygon([pt(0.45, 0.82), pt(0.5, 1.0), pt(0.55, 0.82)], fill=(240, 240, 240))
    draw.line((pt(0.45, 0.82), pt(0.5, 1.0), pt(0.55, 0.82)), fill=_shade(cloth, 0.5), width=width(0.012))
  elif view.clothing == "sweater":
    draw.arc(box(0.5, 0.8, 0.08, 0.04), 0, 180, fill=_shade(cloth, 0.6), width=width(0.02))

  # Hair behind the head.
  if face.hair_style in ("long", "ponytail"):
    draw.rounded_rectangle(box(cx, cy + 0.13, hw * 1.25, hh * 1.05), radius=s * 0.08, fill=hair)
  elif face.hair_style == "bob":
    draw.rounded_rectangle(box(cx, cy + 0.02, hw * 1.22, hh * 0.95), radius=s * 0.08, fill=hair)
  if face.hair_style == "ponytail":
    draw.ellipse(box(cx + hw * 1.1, cy - 0.02, 0.05, 0.09), fill=hair)

  # Ears, head and jaw.
  for side in (-1, 1):
    draw.ellipse(box(cx + side * hw * 0.98 + dx * 0.3, cy + 0.01, face.ear_size * 0.7,
                     face.ear_size), fill=_shade(skin, 0.93))
    if face.earrings:
      draw.ellipse(box(cx + side * hw * 0.98 + dx * 0.3, cy + 0.01 + face.ear_size, 0.008, 0.008),
                   fill=(230, 190, 40))
  draw.ellipse(box(cx, cy, hw, hh), fill=skin)
  if face.jaw == "square":
    draw.rounded_rectangle(box(cx, cy + hh * 0.45, hw * 0.92, hh * 0.5), radius=s * 0.04, fill=skin)
  elif face.jaw == "pointed":
    draw.polygon([pt(cx - hw * 0.9, cy + hh * 0.3), pt(cx + hw * 0.9, cy + hh * 0.3),
                  pt(cx + dx * 0.5, cy + hh * 1.12)], fill=skin)

  # Hair on top.
  style = face.hair_style
  top = (cx - hw * 1.08, cy - hh * 1.12, cx + hw * 1.08, cy + hh * 0.4)
  top_px = tuple(v * s for v in top)
  if style in ("short", "long", "bob", "ponytail", "bun", "side-parted"):
    draw.chord(top_px, 180, 360, fill=hair)
  if style == "side-parted":
    draw.polygon([pt(cx - hw * 1.05, cy - hh * 0.35), pt(cx + hw * 0.3, cy - hh * 1.0),
                  pt(cx + hw * 1.05, cy - hh * 0.5), pt(cx + hw * 1.05, cy - hh * 0.2)], fill=hair)
  elif style == "buzz":
    draw.chord(tuple(v * s for v in (cx - hw, cy - hh * 1.02, cx + hw, cy + hh * 0.2)), 180, 360,
               fill=_mix(hair, skin, 0.45))
  elif style == "curly":
    for angle in np.linspace(math.pi * 1.05, math.pi * 1.95, 9):
      draw.ellipse(box(cx + hw * 0.95 * math.cos(angle), cy + hh * 0.95 * math.sin(angle),
                       0.045, 0.045), fill=hair)
  elif style == "mohawk":
    draw.rounded_rectangle(box(cx + dx * 0.3, cy - hh * 0.9, 0.03, hh * 0.35), radius=s * 0.02,
                           fill=hair)
  elif style == "bun":
    draw.ellipse(box(cx, cy - hh * 1.15, 0.055, 0.05), fill=hair)

  # Eyes, brows, glasses.
  openness = {"surprised": 1.35, "laughing": 0.55, "smiling": 0.85}.get(view.expression, 1.0)
  brow_raise = {"surprised": 0.02, "frowning": -0.01}.get(view.expression, 0.0)
  eye_y = cy - hh * 0.05
  for side in (-1, 1):
    ex = cx + side * face.eye_spacing + dx
    r = face.eye_size
    draw.ellipse(box(ex, eye_y, r, r * 0.6 * openness), fill=(250, 250, 250))
    draw.ellipse(box(ex + dx * 0.2, eye_y, r * 0.5, min(r * 0.5, r * 0.6 * openness)),
                 fill=EYE_COLOURS[face.eye_colour])
    draw.ellipse(box(ex + dx * 0.2, eye_y, r * 0.22, min(r * 0.22, r * 0.5 * openness)),
                 fill=(10, 10, 10))
    by = eye_y - r * 1.3 - brow_raise
    tilt = face.brow_tilt * side + (0.012 * side if view.expression == "frowning" else 0)
    draw.line((pt(ex - r * 1.1, by + tilt), pt(ex + r * 1.1, by - tilt)),
              fill=_shade(hair, 0.7) if face.hair_colour not in ("white", "grey") else (90, 90, 90),
              width=width(face.brow_thickness))
  if face.glasses != "none":
    frame = (25, 25, 25)
    for side in (-1, 1):
      ex = cx + side * face.eye_spacing + dx
      r = face.eye_size * 1.45
      if face.glasses == "round glasses":
        draw.ellipse(box(ex, eye_y, r, r), outline=frame, width=width(0.008))
      elif face.glasses == "square glasses":
        draw.rectangle(box(ex, eye_y, r, r * 0.8), outline=frame, width=width(0.008))
      else:
        draw.rounded_rectangle(box(ex, eye_y, r, r * 0.75), radius=s * 0.01, fill=(20, 20, 30))
    draw.line((pt(cx - face.eye_spacing + face.eye_size * 1.45 + dx, eye_y),
               pt(cx + face.eye_spacing - face.eye_size * 1.45 + dx, eye_y)), fill=frame,
              width=width(0.007))

  # Nose.
  nx, ny, nl = cx + dx * 1.2, eye_y + 0.015, face.nose_length
  nose_colour = _shade(skin, 0.78)
  if face.nose == "straight":
    draw.line((pt(nx, ny), pt(nx + 0.012, ny + nl), pt(nx - 0.012, ny + nl)), fill=nose_colour,
              width=width(0.008))
  elif face.nose == "wide":
    draw.polygon([pt(nx, ny), pt(nx + 0.028, ny + nl), pt(nx - 0.028, ny + nl)], fill=nose_colour)
  else:
    draw.ellipse(box(nx, ny + nl * 0.85, 0.018, 0.013), fill=nose_colour)

  # Mouth, by expression.
  mx, my, mw = cx + dx, cy + hh * 0.55, face.mouth_width
  lip = face.lip_colour
  if view.expression == "smiling":
    draw.arc(box(mx, my - 0.02, mw, 0.03), 20, 160, fill=lip, width=width(0.012))
  elif view.expression == "laughing":
    draw.chord(box(mx, my - 0.01, mw, 0.035), 0, 180, fill=(90, 20, 30))
    draw.chord(box(mx, my - 0.01, mw * 0.8, 0.015), 0, 180, fill=(245, 245, 245))
  elif view.expression == "frowning":
    draw.arc(box(mx, my + 0.025, mw * 0.9, 0.025), 200, 340, fill=lip, width=width(0.012))
  elif view.expression == "surprised":
    draw.ellipse(box(mx, my, mw * 0.4, 0.025), fill=(90, 20, 30))
  else:
    draw.line((pt(mx - mw, my), pt(mx + mw, my)), fill=lip, width=width(0.012))

  # Facial hair, marks.
  beard = face.facial_hair
  if beard in ("beard", "stubble"):
    colour = hair if beard == "beard" else _mix(skin, hair, 0.35)
    draw.chord(box(cx, cy + hh * 0.25, hw * 0.98, hh * 0.85), 0, 180, fill=colour)
    draw.ellipse(box(mx, my, mw * 1.05, 0.022), fill=_shade(skin, 0.5) if beard == "beard" else colour)
  if beard in ("beard", "moustache"):
    draw.rounded_rectangle(box(mx, my - 0.025, mw * 1.05, 0.012), radius=s * 0.008, fill=hair)
  if beard == "goatee":
    draw.ellipse(box(mx, my + 0.045, mw * 0.45, 0.03), fill=hair)
  if face.mole is not None:
    draw.ellipse(box(cx + face.mole[0] + dx, cy + face.mole[1], 0.007, 0.007), fill=(60, 35, 25))
  for fx, fy in face.freckles:
    draw.ellipse(box(cx + fx + dx, cy + fy, 0.0045, 0.0045), fill=_shade(skin, 0.72))


def render_face(face: FaceIdentity, view: FaceView, size: int) -> np.ndarray:
  """Renders one image, uint8[size, size, 3]; supersampled for clean edges."""
  s = 2 * size if size <= 128 else size
  canvas = Image.new("RGB", (s, s))
  _draw_background(ImageDraw.Draw(canvas), view, s)
  person = Image.new("RGBA", (s, s), (0, 0, 0, 0))
  _draw_person(ImageDraw.Draw(person), face, view, s)
  person = person.rotate(view.rotation, resample=Image.BILINEAR, center=(s * 0.5, s * 0.55))
  scaled = max(int(s * view.scale), 8)
  person = person.resize((scaled, scaled), Image.BILINEAR)
  offset = (int(s * (0.5 + view.shift[0]) - scaled / 2), int(s * (0.5 + view.shift[1]) - scaled / 2))
  canvas.paste(person, offset, person)

  x0, y0, side = view.crop
  canvas = canvas.resize((size, size), Image.BOX,
                         box=(x0 * s, y0 * s, (x0 + side) * s, (y0 + side) * s))
  pixels = np.asarray(canvas, dtype=np.float32)
  grid = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
  light = (np.cos(view.light_angle) * grid[None, :] + np.sin(view.light_angle) * grid[:, None])
  pixels *= (view.brightness * (1 + view.light_strength * light))[..., None]
  pixels += view.noise * np.random.default_rng(view.noise_seed).standard_normal(pixels.shape, np.float32)
  return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def describe_person(face: FaceIdentity) -> str:
  """Appearance traits that hold in every photo of this person."""
  hair = face.hair_colour
  hair_text = {
      "bald": "a shaved head", "buzz": f"a {hair} buzz cut", "mohawk": f"a {hair} mohawk",
      "bun": f"{hair} hair in a bun", "ponytail": f"{hair} hair in a ponytail",
      "side-parted": f"side-parted {hair} hair",
  }.get(face.hair_style, f"{face.hair_style} {hair} hair")
  traits = [hair_text]
  if face.glasses != "none":
    traits.append(face.glasses)
  if face.facial_hair != "none":
    traits.append({"stubble": "stubble"}.get(face.facial_hair, f"a {face.facial_hair}"))
  person = "a woman" if face.gender == "female" else "a man"
  return f"{person} with {', '.join(traits[:-1]) + ' and ' + traits[-1] if len(traits) > 1 else traits[0]}"


def describe_view(view: FaceView) -> tuple[str, str, str]:
  """(expression, clothing, setting) phrases of one photo."""
  expression = {"neutral": "with a calm expression", "smiling": "smiling", "laughing": "laughing",
                "frowning": "frowning", "surprised": "looking surprised"}[view.expression]
  clothing = f"a {view.clothing_colour} {view.clothing}"
  setting = {
      "plain": f"in front of a {view.background_colour} wall", "studio": "in a photo studio",
      "curtain": f"in front of a {view.background_colour} curtain", "park": "outdoors in a park",
      "office": "in an office", "beach": "at the beach", "night": "outside at night",
      "brick": "in front of a brick wall",
  }[view.background]
  return expression, clothing, setting
