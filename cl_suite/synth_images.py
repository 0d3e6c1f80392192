"""Procedural 32x32 RGB images with known attributes: shapes, glyphs, textures, faces and backgrounds.

Why: no CLIP weights ship in any wheel, so the tiny CLIP is pretrained on image-caption pairs generated here
(cl_suite.models.tiny_clip_data), and the clip-tiny scenario draws its "shapes" domain from the same renderers.
Everything is a pure function of a ``numpy.random.Generator``: the same seed gives the same pixels on any machine
with the same Pillow version. Only Pillow's bundled fonts are used (Aileron and the bitmap font), never system fonts.
Images are float32 arrays (32, 32, 3) in [0, 1]; drawing happens at 64x64 and is downsampled for anti-aliasing.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE, CANVAS = 32, 64
COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (235, 215, 40),
    "purple": (150, 60, 200), "orange": (245, 140, 30), "cyan": (40, 210, 220), "pink": (245, 130, 190),
}  # fmt: skip
SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond")
FILLS = ("solid", "striped", "dotted", "checkered")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
DIGITS = tuple("0123456789")
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")
FONTS = ("sans", "bold", "italic", "pixel")
TEXTURES = ("brick", "grass", "gravel", "stripes", "dots", "checkerboard", "noise")


def to_array(img: Image.Image) -> np.ndarray:
    """A Pillow image (any size) -> float32 (32, 32, 3) in [0, 1]."""
    img = img.convert("RGB")
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.float32) / 255.0


def _background(rng: np.random.Generator) -> Image.Image:
    """A dark, slightly noisy, slightly tinted background."""
    base = rng.uniform(0, 70, size=3)
    noise = rng.normal(0, rng.uniform(2, 12), size=(CANVAS, CANVAS, 1))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(n: int, radii: list[float], offset: float) -> list[tuple[float, float]]:
        pts = []
        for i in range(n):
            a = offset + angle + 2 * math.pi * i / n
            rad = r * radii[i % len(radii)]
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts

    if shape == "square":
        return ring(4, [1.0], math.pi / 4)
    if shape == "triangle":
        return ring(3, [1.0], -math.pi / 2)
    if shape == "diamond":
        return ring(4, [1.0, 0.6], -math.pi / 2)
    if shape == "star":
        return ring(10, [1.0, 0.45], -math.pi / 2)
    if shape == "cross":
        w = 0.35
        base = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in base]
    raise ValueError(f"unknown shape {shape!r}; accepted: {', '.join(SHAPES)}")


def _fill_pattern(fill: str, colour: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    """A full-canvas RGB pattern: the colour, modulated by the fill style."""
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS]
    period = int(rng.integers(6, 10))
    if fill == "solid":
        on = np.ones((CANVAS, CANVAS), bool)
    elif fill == "striped":
        on = ((xx + yy) // (period // 2)) % 2 == 0
    elif fill == "dotted":
        on = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2) < (period / 3.2) ** 2
    elif fill == "checkered":
        on = ((xx // (period // 2 + 1)) + (yy // (period // 2 + 1))) % 2 == 0
    else:
        raise ValueError(f"unknown fill {fill!r}; accepted: {', '.join(FILLS)}")
    shade = np.where(on, 1.0, 0.25)[..., None] * np.array(colour)[None, None, :]
    return Image.fromarray(np.clip(shade, 0, 255).astype(np.uint8))


def _place(size: str, position: str, rng: np.random.Generator) -> tuple[float, float, float]:
    r = rng.uniform(9, 12) if size == "small" else rng.uniform(20, 26)
    offsets = {"left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1), "center": (0, 0)}
    dx, dy = offsets[position]
    shift = CANVAS / 2 - r - 3 if size == "small" else 0
    jitter = rng.uniform(-2, 2, size=2)
    return CANVAS / 2 + dx * shift + jitter[0], CANVAS / 2 + dy * shift + jitter[1], r


def shape(rng: np.random.Generator, kind: str, colour: str, fill: str = "solid", size: str = "large",
          position: str = "center") -> np.ndarray:  # fmt: skip
    """A coloured shape with a fill style, of a size, at a position, on a dark noisy background."""
    cx, cy, r = _place(size, position, rng)
    mask = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(mask)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, rng.uniform(-0.2, 0.2)), fill=255)
    img = _background(rng)
    img.paste(_fill_pattern(fill, COLOURS[colour], rng), (0, 0), mask)
    return to_array(img)


@cache
def _font(name: str, size: int):
    if name == "pixel":
        return ImageFont.load_default_imagefont()
    return ImageFont.load_default(size=size)  # Pillow's bundled Aileron


def glyph(rng: np.random.Generator, char: str, font: str = "sans", colour: str | None = None,
          low_res: bool = False) -> np.ndarray:  # fmt: skip
    """A digit or letter in one of Pillow's bundled fonts (bold = stroked, italic = sheared, pixel = the bitmap
    font scaled up), randomly rotated and placed; ``low_res`` blurs it through 8x8 (like sklearn's digits)."""
    if font not in FONTS:
        raise ValueError(f"unknown font {font!r}; accepted: {', '.join(FONTS)}")
    ink = COLOURS[colour] if colour else (255, 255, 255)
    layer = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(layer)
    if font == "pixel":
        small = Image.new("L", (8, 12), 0)
        ImageDraw.Draw(small).text((1, 0), char, fill=255, font=_font("pixel", 11))
        scale = int(rng.integers(3, 5))
        big = small.resize((8 * scale, 12 * scale), Image.Resampling.NEAREST)
        layer.paste(big, (int((CANVAS - big.width) / 2 + rng.integers(-3, 4)), int((CANVAS - big.height) / 2 + rng.integers(-3, 4))))
    else:
        size = int(rng.integers(34, 48))
        f = _font("sans", size)
        box = draw.textbbox((0, 0), char, font=f, stroke_width=3 if font == "bold" else 0)
        x = (CANVAS - (box[2] - box[0])) / 2 - box[0] + rng.integers(-3, 4)
        y = (CANVAS - (box[3] - box[1])) / 2 - box[1] + rng.integers(-3, 4)
        draw.text((x, y), char, fill=255, font=f, stroke_width=3 if font == "bold" else 0, stroke_fill=255)
        if font == "italic":
            layer = layer.transform(layer.size, Image.Transform.AFFINE, (1, 0.3, -10, 0, 1, 0), Image.Resampling.BILINEAR)
    layer = layer.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
    img = _background(rng)
    img.paste(Image.new("RGB", img.size, ink), (0, 0), layer)
    if low_res:
        img = img.resize((8, 8), Image.Resampling.BOX).resize((CANVAS, CANVAS), Image.Resampling.BILINEAR)
    return to_array(img)


def texture(rng: np.random.Generator, kind: str) -> np.ndarray:
    """A full-frame grey-level texture (brick, grass, gravel, stripes, dots, checkerboard, noise), lightly tinted."""
    img = Image.new("L", (CANVAS, CANVAS), int(rng.integers(60, 140)))
    draw = ImageDraw.Draw(img)
    if kind == "brick":
        h, w = int(rng.integers(9, 14)), int(rng.integers(18, 28))
        for row, y in enumerate(range(-h, CANVAS + h, h)):
            shift = (row % 2) * w // 2 + int(rng.integers(0, 3))
            for x in range(-w, CANVAS + w, w):
                tone = int(rng.integers(110, 200))
                draw.rectangle([x + shift + 1, y + 1, x + shift + w - 2, y + h - 2], fill=tone)
        img = Image.composite(img, Image.new("L", img.size, 50), Image.new("L", img.size, 255))
    elif kind == "grass":
        for _ in range(int(rng.integers(90, 140))):
            x, y = rng.uniform(0, CANVAS, size=2)
            length, lean = rng.uniform(8, 24), rng.uniform(-0.5, 0.5)
            draw.line([x, y, x + lean * length, y - length], fill=int(rng.integers(20, 235)), width=int(rng.integers(1, 3)))
    elif kind == "gravel":
        for _ in range(int(rng.integers(40, 70))):
            x, y = rng.uniform(-4, CANVAS + 4, size=2)
            rx, ry = rng.uniform(3, 8, size=2)
            draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=int(rng.integers(40, 230)), outline=int(rng.integers(0, 60)))
    elif kind in ("stripes", "dots", "checkerboard"):
        pattern = {"stripes": "striped", "dots": "dotted", "checkerboard": "checkered"}[kind]
        img = _fill_pattern(pattern, (230, 230, 230), rng).convert("L")
    elif kind == "noise":
        img = Image.fromarray(rng.integers(0, 256, size=(CANVAS, CANVAS), dtype=np.uint8))
    else:
        raise ValueError(f"unknown texture {kind!r}; accepted: {', '.join(TEXTURES)}")
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) * rng.uniform(0.85, 1.15, size=3)
    return to_array(Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)))


def face(rng: np.random.Generator) -> np.ndarray:
    """A frontal grey-level face filling the frame (skin oval, hair, eyes, brows, nose shadow, mouth), blurred."""
    skin = int(rng.integers(120, 210))
    img = Image.new("L", (CANVAS, CANVAS), int(rng.integers(20, 200)))
    d = ImageDraw.Draw(img)
    cx, cy = CANVAS / 2 + rng.uniform(-3, 3), CANVAS / 2 + rng.uniform(0, 5)
    w, h = rng.uniform(22, 30), rng.uniform(28, 36)
    d.ellipse([cx - w, cy - h - 8, cx + w, cy + h - 14], fill=int(rng.integers(10, 90)))  # hair
    d.ellipse([cx - w, cy - h, cx + w, cy + h], fill=skin)
    ey, ex = cy - h * rng.uniform(0.15, 0.3), w * rng.uniform(0.35, 0.5)
    for sx in (-1, 1):
        d.ellipse([cx + sx * ex - 4, ey - 2.5, cx + sx * ex + 4, ey + 2.5], fill=int(rng.integers(10, 60)))
        d.line([cx + sx * ex - 6, ey - 7, cx + sx * ex + 6, ey - 7], fill=max(0, skin - 90), width=2)
    d.polygon([(cx, ey + 2), (cx - 4, cy + 8), (cx + 4, cy + 8)], fill=max(0, skin - 40))
    my = cy + h * rng.uniform(0.35, 0.5)
    d.line([cx - w * 0.35, my, cx + w * 0.35, my], fill=max(0, skin - 80), width=3)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 2.5)))
    return to_array(img)


def background(rng: np.random.Generator) -> np.ndarray:
    """A patch of scenery that is not a face: smooth noise, gradients, edges and blobs, grey-level."""
    coarse = rng.uniform(0, 255, size=(int(rng.integers(2, 9)),) * 2).astype(np.uint8)
    img = Image.fromarray(coarse).resize((CANVAS, CANVAS), Image.Resampling.BICUBIC)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 6))):
        pts = rng.uniform(0, CANVAS, size=4)
        d.line(list(pts), fill=int(rng.integers(0, 256)), width=int(rng.integers(1, 6)))
    noise = rng.normal(0, rng.uniform(0, 20), size=(CANVAS, CANVAS))
    arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return to_array(Image.fromarray(arr).filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0))))
