"""Procedural 32x32 RGB images with known attributes: shapes, glyphs, textures, faces and backgrounds.

Why: no CLIP weights ship in any wheel, so the tiny CLIP is pretrained on image-caption pairs generated here
(cl_suite.models.tiny_clip_data), and the clip-tiny scenario draws its "shapes" domain from the same renderers.
The other clip-tiny domains are real images, so the renderers imitate how those reach the model (without ever using
them): handwritten digits are pen strokes with handwriting variation put through scikit-learn's digits
preprocessing (fit to a 32x32 bitmap, 4x4 block counts -> 8x8 with 17 grey levels, bilinear upsampling, white on
black; :func:`digits_8x8`); faces are tight, shaded, LFW-like crops and backgrounds are non-face scenery (drawn, or
crops of other bundled scikit-image photographs, :data:`PHOTOS`), both brought through 25x25; brick, grass and
gravel are drawn to look like close-up photographs.
Everything is a pure function of a ``numpy.random.Generator``: the same seed gives the same pixels on any machine
with the same Pillow, numpy and scikit-image versions. Only Pillow's bundled fonts are used (Aileron and the bitmap
font), never system fonts. Images are float32 arrays (32, 32, 3) in [0, 1]; drawing happens at 64x64 (128x128 for
digit bitmaps) and is downsampled for anti-aliasing.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

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
PRINT_FONTS = ("sans", "bold", "italic", "pixel")  # Pillow's bundled fonts
FONTS = (*PRINT_FONTS, "hand")  # hand: pen strokes (digits only)
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


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a float 2-D array (edges replicated); numpy only, so it is the same everywhere."""
    if sigma <= 0:
        return a
    r = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    h, w = a.shape
    a = np.pad(a, r, mode="edge")
    a = sum(k[i] * a[i : i + h, :] for i in range(len(k)))
    return sum(k[i] * a[:, i : i + w] for i in range(len(k)))


def _grey(a: np.ndarray) -> np.ndarray:
    """A float 2-D array in [0, 1] (any size) -> the (32, 32, 3) grey image."""
    a = np.clip(a, 0, 1).astype(np.float32)
    if a.shape != (SIZE, SIZE):
        a = np.asarray(Image.fromarray(a, mode="F").resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    return np.repeat(np.clip(a, 0, 1)[..., None], 3, axis=2)


def _through(a: np.ndarray, side: int) -> np.ndarray:
    """Downsample a float 2-D image to ``side`` x ``side`` (antialiased) and back up to 32x32 bilinearly, as a small
    photograph (LFW's 25x25 crops, scikit-learn's 8x8 digits) reaches the model through to_tensor."""
    small = Image.fromarray(np.clip(a, 0, 1).astype(np.float32), mode="F").resize((side, side), Image.Resampling.BOX)
    return np.asarray(small.resize((SIZE, SIZE), Image.Resampling.BILINEAR))


# -- digits and letters ------------------------------------------------------------------------------------------
def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 14) -> list[tuple[float, float]]:
    """Points on an ellipse arc in a unit box (y down, so 90 degrees is the bottom), from a0 to a1 degrees."""
    t = np.radians(np.linspace(a0, a1, n))
    return list(zip((cx + rx * np.cos(t)).tolist(), (cy + ry * np.sin(t)).tolist()))


def _digit_strokes(char: str, rng: np.random.Generator) -> list[list[tuple[float, float]]]:
    """Pen strokes of a handwritten digit in a unit box, with the common variants (flagged 1, open 4, barred 7)."""
    u = rng.uniform
    if char == "0":
        a = u(-120, -60)
        return [_arc(0.5, 0.5, u(0.28, 0.4), 0.48, a, a + u(350, 380), 24)]
    if char == "1":
        strokes = [[(0.5 + u(-0.08, 0.08), 0.0), (0.5, 1.0)]]
        if rng.random() < 0.6:
            strokes.append([(u(0.2, 0.35), u(0.15, 0.3)), strokes[0][0]])
        if rng.random() < 0.25:
            strokes.append([(0.3, 1.0), (0.7, 1.0)])
        return strokes
    if char == "2":
        top = _arc(0.5, 0.3, u(0.28, 0.36), 0.28, u(180, 200), u(370, 400))
        return [[*top, (u(0.05, 0.2), 1.0), (u(0.8, 0.95), u(0.95, 1.0))]]
    if char == "3":
        upper = _arc(0.48, 0.26, u(0.26, 0.32), 0.24, u(190, 220), 450)
        lower = _arc(0.48, 0.74, u(0.3, 0.36), 0.26, 270, u(500, 520))
        return [upper + lower]
    if char == "4":
        x = u(0.55, 0.7)
        if rng.random() < 0.5:
            return [[(x, 1.0), (x, 0.0), (0.05, 0.66), (0.95, 0.66)]]
        return [[(u(0.2, 0.35), 0.0), (u(0.05, 0.15), 0.62), (0.95, 0.62)], [(x, 0.1), (x, 1.0)]]
    if char == "5":
        head = [(u(0.75, 0.9), 0.0), (0.28, 0.0), (0.22, 0.46)]
        return [head + _arc(0.48, 0.7, u(0.3, 0.36), 0.29, 215, u(490, 510))]
    if char == "6":
        stem = _arc(0.58, 0.62, 0.44, 0.62, u(285, 305), 180, 10)
        return [stem + _arc(0.5, 0.73, u(0.28, 0.35), 0.26, 180, 540, 20)]
    if char == "7":
        strokes = [[(u(0.0, 0.15), u(0.0, 0.1)), (0.95, 0.0), (u(0.3, 0.5), 1.0)]]
        if rng.random() < 0.25:
            strokes.append([(0.35, 0.5), (0.85, 0.5)])
        return strokes
    if char == "8":
        return [_arc(0.5, 0.26, u(0.22, 0.3), 0.24, -90, 270, 18), _arc(0.5, 0.73, u(0.27, 0.35), 0.26, -90, 270, 18)]
    if char == "9":
        loop = _arc(0.48, 0.3, u(0.26, 0.34), 0.29, 0, 360, 20)
        return [loop, [loop[0], (u(0.7, 0.82), 0.65), (u(0.45, 0.75), 1.0)]]
    raise ValueError(f"no handwriting strokes for {char!r}; accepted: {', '.join(DIGITS)}")


def _handwritten_ink(rng: np.random.Generator, char: str, side: int = 128) -> np.ndarray:
    """A binary (side, side) bitmap of a digit written with a round pen: jittered strokes, a random slant, aspect
    and rotation, and a smooth wobble."""
    strokes = _digit_strokes(char, rng)
    angle, shear, aspect = math.radians(rng.uniform(-12, 12)), rng.uniform(-0.35, 0.15), rng.uniform(0.55, 1.05)
    wobble = rng.normal(0, 0.035, size=(2, 3))
    phase = rng.uniform(0, 2 * math.pi, size=(2, 3))
    ca, sa = math.cos(angle), math.sin(angle)

    def warp(x: float, y: float) -> tuple[float, float]:
        x, y = x + sum(wobble[0, k] * math.sin((k + 1) * 3.0 * y + phase[0, k]) for k in range(3)), \
            y + sum(wobble[1, k] * math.sin((k + 1) * 3.0 * x + phase[1, k]) for k in range(3))  # fmt: skip
        x, y = (x - 0.5) * aspect + shear * (y - 0.5), y - 0.5
        return side / 2 + 0.7 * side * (ca * x - sa * y), side / 2 + 0.7 * side * (sa * x + ca * y)

    img = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(img)
    width = int(rng.integers(side // 16, side // 7))
    for stroke in strokes:
        pts = [warp(x + rng.normal(0, 0.015), y + rng.normal(0, 0.015)) for x, y in stroke]
        draw.line(pts, fill=255, width=width, joint="curve")
        for x, y in (pts[0], pts[-1]):
            draw.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=255)
    return np.asarray(img) > 127


def _font_ink(rng: np.random.Generator, char: str, font: str, side: int = 128) -> np.ndarray:
    """A binary (side, side) bitmap of a character in one of Pillow's bundled fonts."""
    img = Image.new("L", (side, side), 0)
    if font == "pixel":
        small = Image.new("L", (8, 12), 0)
        ImageDraw.Draw(small).text((1, 0), char, fill=255, font=_font("pixel", 11))
        img.paste(small.resize((64, 96), Image.Resampling.NEAREST), (32, 16))
    else:
        f, stroke = _font("sans", side // 2), side // 24 if font == "bold" else 0
        ImageDraw.Draw(img).text((side / 2, side / 2), char, fill=255, font=f, anchor="mm", stroke_width=stroke,
                                 stroke_fill=255)  # fmt: skip
        if font == "italic":
            img = img.transform(img.size, Image.Transform.AFFINE, (1, 0.3, -side * 0.15, 0, 1, 0), Image.Resampling.BILINEAR)
    return np.asarray(img.rotate(float(rng.uniform(-10, 10)), resample=Image.Resampling.BILINEAR)) > 127


def digits_8x8(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """scikit-learn's digits preprocessing (the UCI optdigits set): the ink's bounding box scaled to fill a 32x32
    bitmap (its longer side, aspect kept, centred), counted in 4x4 blocks (0..16), then ``/16`` and bilinearly
    upsampled to 32x32 as cl_suite.models.tiny_clip.to_tensor does. Returns the (32, 32) grey image in [0, 1]."""
    rows, cols = np.nonzero(ink)
    if rows.size == 0:
        return np.zeros((SIZE, SIZE), np.float32)
    crop = Image.fromarray((ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] * 255).astype(np.uint8))
    fill = 32 * rng.uniform(0.85, 1.0)
    scale = fill / max(crop.size)
    w, h = max(1, round(crop.width * scale)), max(1, round(crop.height * scale))
    bitmap = Image.new("L", (32, 32), 0)
    bitmap.paste(crop.resize((w, h), Image.Resampling.BILINEAR), ((32 - w) // 2, (32 - h) // 2))
    bits = np.asarray(bitmap) > 127
    counts = bits.reshape(8, 4, 8, 4).sum(axis=(1, 3)).astype(np.float32)
    return np.asarray(Image.fromarray(counts / 16.0, mode="F").resize((SIZE, SIZE), Image.Resampling.BILINEAR))


def glyph(rng: np.random.Generator, char: str, font: str = "sans", colour: str | None = None,
          low_res: bool = False) -> np.ndarray:  # fmt: skip
    """A digit or letter, randomly rotated and placed, in one of Pillow's bundled fonts (bold = stroked, italic =
    sheared, pixel = the bitmap font scaled up) or, for digits, ``hand``: pen strokes with handwriting variation.
    ``low_res`` draws it like scikit-learn's digits instead: white ink on black, through 8x8 (:func:`digits_8x8`),
    in ``colour`` if given; ``hand`` is always drawn that way."""
    if font not in FONTS:
        raise ValueError(f"unknown font {font!r}; accepted: {', '.join(FONTS)}")
    if font == "hand" and char not in DIGITS:
        raise ValueError(f"font 'hand' draws digits only, not {char!r}")
    ink = COLOURS[colour] if colour else (255, 255, 255)
    if low_res or font == "hand":
        bitmap = _handwritten_ink(rng, char) if font == "hand" else _font_ink(rng, char, font)
        grey = digits_8x8(bitmap, rng)
        return grey[..., None] * (np.array(ink, dtype=np.float32) / 255.0)
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
    return to_array(img)


# -- textures ----------------------------------------------------------------------------------------------------
def _bricks(rng: np.random.Generator) -> np.ndarray:
    """A running-bond brick wall seen up close (2-4 bricks across), mortar lighter or darker than the bricks, laid
    horizontally or vertically and slightly tilted, with grain."""
    big = 96
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    h = int(rng.integers(12, 21))
    w = int(h * rng.uniform(1.8, 3.0))
    tone = rng.uniform(70, 150)
    mortar = float(np.clip(tone + rng.choice([-1, 1], p=[0.35, 0.65]) * rng.uniform(35, 90), 10, 245))
    gap = rng.uniform(1.5, 3.5)
    draw.rectangle([0, 0, big, big], fill=int(mortar))
    for row, y in enumerate(range(-h, big + h, h)):
        shift = ((row % 2) * w // 2 + int(rng.integers(0, 3))) - w
        for x in range(shift, big + w, w):
            draw.rectangle([x + gap / 2, y + gap / 2, x + w - gap / 2, y + h - gap / 2],
                           fill=int(np.clip(tone + rng.normal(0, 10), 0, 255)))  # fmt: skip
    angle = float(rng.choice([0, 90]) + rng.uniform(-12, 12))
    img = img.rotate(angle, resample=Image.Resampling.BILINEAR).crop((16, 16, 80, 80))
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = a + _blur(rng.normal(0, rng.uniform(0.02, 0.06), size=a.shape), 1.0)
    return _blur(a, rng.uniform(0.4, 1.0))


def _grass(rng: np.random.Generator) -> np.ndarray:
    """Dense, tangled thin blades, light and dark, over a dark ground."""
    img = Image.new("L", (CANVAS, CANVAS), int(rng.integers(30, 90)))
    draw = ImageDraw.Draw(img)
    lean = rng.uniform(-0.6, 0.6)
    for _ in range(int(rng.integers(220, 360))):
        x, y = rng.uniform(-4, CANVAS + 4, size=2)
        a = lean + rng.normal(0, 0.9)
        length = rng.uniform(5, 18)
        tone = int(rng.integers(110, 240)) if rng.random() < 0.7 else int(rng.integers(10, 90))
        draw.line([x, y, x + length * math.sin(a), y - length * math.cos(a)], fill=tone, width=int(rng.integers(1, 3)))
    a = np.asarray(img, dtype=np.float32) / 255.0
    return _blur(a, rng.uniform(0.5, 0.9))


def _gravel(rng: np.random.Generator) -> np.ndarray:
    """Packed rounded stones (6-10 across) of varied tone, lit from one side, with dark gaps."""
    spacing = rng.uniform(6.5, 10)
    img = Image.new("L", (CANVAS, CANVAS), 0)
    ids = Image.new("L", (CANVAS, CANVAS), 0)
    draw, mark = ImageDraw.Draw(img), ImageDraw.Draw(ids)
    centres = [(x + rng.uniform(-0.3, 0.3) * spacing, y + rng.uniform(-0.3, 0.3) * spacing)
               for y in np.arange(-spacing / 2, CANVAS + spacing, spacing * 0.87)
               for x in np.arange(-spacing / 2 + rng.uniform(0, spacing), CANVAS + spacing, spacing)]  # fmt: skip
    for i in rng.permutation(len(centres)):
        cx, cy = centres[i]
        n, rot = int(rng.integers(6, 10)), rng.uniform(0, 2 * math.pi)
        rx, ry = spacing * rng.uniform(0.45, 0.7), spacing * rng.uniform(0.35, 0.6)
        pts = [(cx + rx * rng.uniform(0.8, 1.1) * math.cos(rot + 2 * math.pi * k / n),
                cy + ry * rng.uniform(0.8, 1.1) * math.sin(rot + 2 * math.pi * k / n)) for k in range(n)]  # fmt: skip
        draw.polygon(pts, fill=int(rng.integers(90, 230)))
        mark.polygon(pts, fill=255)
    tone = np.asarray(img, dtype=np.float32) / 255.0
    height = _blur(np.asarray(ids, dtype=np.float32) / 255.0, spacing / 5)
    lx, ly = math.cos(rng.uniform(0, 2 * math.pi)), math.sin(rng.uniform(0, 2 * math.pi))
    gy, gx = np.gradient(height)
    shade = np.clip(0.75 + 2.5 * (gx * lx + gy * ly), 0.3, 1.4) * (0.25 + 0.75 * height)
    a = tone * shade + rng.uniform(0.02, 0.12) * (1 - height)
    a = a + rng.normal(0, rng.uniform(0.01, 0.04), size=a.shape)
    return _blur(a, rng.uniform(0.3, 0.8))


def texture(rng: np.random.Generator, kind: str) -> np.ndarray:
    """A full-frame grey-level texture, lightly tinted: brick, grass and gravel are drawn to look like close-up
    photographs (bricks at any of two orientations with light or dark mortar, dense tangled blades, packed shaded
    stones); stripes, dots, checkerboard and noise are the plain patterns."""
    if kind in ("brick", "grass", "gravel"):
        a = {"brick": _bricks, "grass": _grass, "gravel": _gravel}[kind](rng)
        lo, hi = np.percentile(a, [1, 99])
        mid, spread = rng.uniform(0.35, 0.6), rng.uniform(0.5, 0.9)
        a = mid + (a - (lo + hi) / 2) / max(hi - lo, 1e-3) * spread
        img = Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8))
    elif kind in ("stripes", "dots", "checkerboard"):
        pattern = {"stripes": "striped", "dots": "dotted", "checkerboard": "checkered"}[kind]
        img = _fill_pattern(pattern, (230, 230, 230), rng).convert("L")
    elif kind == "noise":
        img = Image.fromarray(rng.integers(0, 256, size=(CANVAS, CANVAS), dtype=np.uint8))
    else:
        raise ValueError(f"unknown texture {kind!r}; accepted: {', '.join(TEXTURES)}")
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) * rng.uniform(0.92, 1.08, size=3)
    return to_array(Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)))


# -- faces and non-face scenery (the LFW-like pair) ----------------------------------------------------------------
def _gauss(xx: np.ndarray, yy: np.ndarray, x: float, y: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((xx - x) / sx) ** 2 + ((yy - y) / sy) ** 2))


def _scene(rng: np.random.Generator) -> np.ndarray:
    """A (64, 64) patch of indoor or outdoor scenery: a few flat or graded regions split by straight edges
    (backdrops, walls, clothing, door frames), sometimes cloth-like folds, mostly dark."""
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS] / CANVAS
    a = np.full((CANVAS, CANVAS), rng.beta(1.5, 3.0))
    a += rng.uniform(-0.3, 0.3) * (xx - 0.5) + rng.uniform(-0.3, 0.3) * (yy - 0.5)
    for _ in range(int(rng.integers(0, 4))):
        t = rng.uniform(0, 2 * math.pi)
        side = (xx - rng.uniform(0.1, 0.9)) * math.cos(t) + (yy - rng.uniform(0.1, 0.9)) * math.sin(t) > 0
        region = rng.beta(1.5, 2.5) + rng.uniform(-0.3, 0.3) * (xx - 0.5) + rng.uniform(-0.3, 0.3) * (yy - 0.5)
        if rng.random() < 0.4:  # a band, not a half-plane
            side &= (xx - 0.5) * math.cos(t) + (yy - 0.5) * math.sin(t) < rng.uniform(0.05, 0.4)
        a = np.where(side, region, a)
    if rng.random() < 0.35:  # folds
        t, f = rng.uniform(0, math.pi), rng.uniform(4, 14)
        u = xx * math.cos(t) + yy * math.sin(t) + 0.05 * _blur(rng.normal(0, 1, size=a.shape), 6) * 8
        a = a + rng.uniform(0.05, 0.2) * np.sin(2 * math.pi * f * u)
    if rng.random() < 0.3:  # a blob (a hand, a lamp, a shoulder)
        x, y, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.35)
        a = a + rng.uniform(-0.4, 0.5) * (_gauss(xx, yy, x, y, s, s * rng.uniform(0.5, 2)) > 0.5)
    return _blur(a, rng.uniform(0.3, 2.5))


PHOTOS = ("coffee", "rocket", "hubble_deep_field", "moon", "page", "coins", "horse", "text", "clock", "cell", "retina")


@cache
def _photo(name: str) -> np.ndarray:
    """A grey float copy of a bundled scikit-image photograph (none shows a face or brick, grass or gravel)."""
    from skimage import data

    raw = getattr(data, name)()
    img = raw.astype(np.float32) if raw.dtype == bool else raw.astype(np.float32) / 255.0
    if img.ndim == 3:
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return img


def _photo_crop(rng: np.random.Generator) -> np.ndarray:
    """A random square crop (24-160 px) of a non-face scikit-image photograph, as (64, 64) grey."""
    img = _photo(PHOTOS[int(rng.integers(len(PHOTOS)))])
    side = int(min(rng.uniform(24, 160), *img.shape))
    top, left = int(rng.integers(0, img.shape[0] - side + 1)), int(rng.integers(0, img.shape[1] - side + 1))
    crop = img[top : top + side, left : left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop), mode="F").resize((CANVAS, CANVAS), Image.Resampling.BILINEAR))


def face(rng: np.random.Generator) -> np.ndarray:
    """A tight, shaded frontal face crop like LFW's: the face fills the frame (eyes at about 40 % of the height,
    cheeks near the edges, chin at the bottom), lit from a random side, with dark eyes in their sockets, brows,
    a shaded nose with nostrils, a mouth (often smiling, sometimes with teeth), skin detail, hair and a backdrop in
    the corners, glasses at times; contrast as in photographs, grainy, and brought through 25x25 as LFW's crops."""
    yy, xx = np.mgrid[0:CANVAS, 0:CANVAS] / CANVAS
    s = rng.uniform(0.9, 1.35)
    fx, ey = 0.5 + rng.uniform(-0.07, 0.07), rng.uniform(0.34, 0.46)
    fy, rx, ry = ey + 0.12 * s, 0.47 * s * rng.uniform(0.88, 1.1), 0.6 * s * rng.uniform(0.92, 1.08)
    cx = fx + rng.uniform(-0.12, 0.12) * rx  # the features' centre: the head turned a little
    v = (yy - fy) / ry
    u = (xx - fx) / (rx * (1 - rng.uniform(0.1, 0.3) * np.clip(v, 0, 1) ** 2))  # narrower towards the chin
    inside = u**2 + v**2 < 1
    nz = np.sqrt(np.clip(1 - u**2 - v**2, 0, 1))
    light = np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.6, 0.2), 1.0])
    light /= np.linalg.norm(light)
    lambert = np.clip(u * light[0] + v * light[1] + nz * light[2], 0, 1)
    skin, ambient = rng.uniform(0.3, 0.9), rng.uniform(0.15, 0.45)
    a = skin * (ambient + (1 - ambient) * lambert)
    back = _scene(rng) if rng.random() < 0.6 else _photo_crop(rng)
    back = back * rng.uniform(0.3, 1.0)
    hair = rng.uniform(0.02, 0.4) if rng.random() < 0.85 else skin * rng.uniform(0.7, 1.1)
    hair_tex = hair * (1 + 0.35 * _blur(rng.normal(0, 1, size=a.shape), 0.7))
    head = (u / 1.1) ** 2 + ((yy - fy + 0.06) / (ry * 1.1)) ** 2 < 1
    a = np.where(inside, a, np.where(head & (yy < fy), hair_tex, back))
    hair_line = fy - ry * rng.uniform(0.6, 0.95) + 0.15 * s * np.abs(u) ** 2
    a = np.where(inside & (yy < hair_line), hair_tex * (0.7 + 0.5 * lambert), a)
    if rng.random() < 0.6:  # collar / shoulders below the jaw
        a = np.where(~inside & (yy > fy + 0.5 * ry), rng.uniform(0.0, 0.8), a)
    dark = np.zeros_like(a)
    dx = 0.2 * s * rng.uniform(0.9, 1.1)
    for side in (-1, 1):
        x = cx + side * dx
        dark += rng.uniform(0.25, 0.6) * _gauss(xx, yy, x, ey, 0.07 * s, 0.045 * s)  # socket
        dark += rng.uniform(0.45, 0.9) * _gauss(xx, yy, x, ey + 0.005, 0.032 * s, 0.016 * s)  # eye
        tilt = rng.uniform(-0.2, 0.2) * side
        dark += rng.uniform(0.25, 0.8) * _gauss(xx, yy + tilt * (xx - x), x, ey - 0.075 * s, 0.07 * s, 0.015 * s)
        dark += rng.uniform(0.3, 0.7) * _gauss(xx, yy, cx + side * 0.035 * s, ey + 0.21 * s, 0.018 * s, 0.012 * s)
        dark += rng.uniform(0.0, 0.25) * _gauss(xx, yy, cx + side * 0.2 * s, ey + 0.3 * s, 0.03 * s, 0.1 * s)  # cheek fold
    shadow_side = -1 if light[0] > 0 else 1
    dark += rng.uniform(0.15, 0.45) * _gauss(xx, yy, cx + shadow_side * 0.04 * s, ey + 0.12 * s, 0.022 * s, 0.09 * s)
    a = a + rng.uniform(0.05, 0.2) * _gauss(xx, yy, cx - shadow_side * 0.01, ey + 0.14 * s, 0.015 * s, 0.07 * s)
    my, smile, width = ey + rng.uniform(0.32, 0.4) * s, rng.uniform(-1, 5), rng.uniform(0.09, 0.16) * s
    mouth_y = yy + smile * (xx - cx) ** 2  # corners up when smiling (y points down)
    dark += rng.uniform(0.4, 0.8) * _gauss(xx, mouth_y, cx, my, width, rng.uniform(0.012, 0.03) * s)
    if smile > 1.5 and rng.random() < 0.6:  # teeth
        a = a + rng.uniform(0.2, 0.5) * _gauss(xx, mouth_y, cx, my, width * 0.7, 0.011 * s)
    dark += rng.uniform(0.1, 0.35) * _gauss(xx, yy, cx, my + 0.1 * s, 0.1 * s, 0.03 * s)  # under the lip
    if rng.random() < 0.2:  # moustache or beard shadow
        dark += rng.uniform(0.2, 0.6) * _gauss(xx, yy, cx, my - 0.04 * s, 0.1 * s, 0.02 * s)
    a = a * (1 - np.clip(dark, 0, 0.95) * inside)
    detail = _blur(rng.normal(0, 1, size=a.shape), rng.uniform(0.6, 1.5))
    a = a * (1 + rng.uniform(0.03, 0.15) * detail)
    if rng.random() < 0.2:  # glasses
        ring = np.zeros_like(a, dtype=bool)
        for side in (-1, 1):
            d = np.sqrt(((xx - cx - side * dx) / (0.1 * s)) ** 2 + ((yy - ey) / (0.07 * s)) ** 2)
            ring |= np.abs(d - 1) < 0.1
        a = np.where(ring, rng.uniform(0.0, 0.3), a)
    img = Image.fromarray(a.astype(np.float32), mode="F").rotate(float(rng.uniform(-10, 10)), resample=Image.Resampling.BILINEAR,
                                                                 fillcolor=float(back.mean()))  # fmt: skip
    a = _blur(np.asarray(img), rng.uniform(0.3, 1.0))
    a = rng.uniform(0.35, 0.55) + (a - a.mean()) * rng.uniform(0.15, 0.25) / max(float(a.std()), 1e-3)
    a = a + _blur(rng.normal(0, rng.uniform(0.01, 0.04), size=a.shape), 0.5)
    return _grey(_through(a, 25))


def background(rng: np.random.Generator) -> np.ndarray:
    """A patch of scenery that is not a face, like LFW's non-face crops: drawn scenery (regions, edges, folds; half
    the time) or a crop of a bundled scikit-image photograph (PHOTOS), grey-level, grainy, brought through 25x25."""
    a = _scene(rng) if rng.random() < 0.5 else _photo_crop(rng)
    a = rng.uniform(0.1, 0.5) + (a - a.mean()) * min(rng.uniform(0.03, 0.25) / max(float(a.std()), 1e-3), 3.0)
    a = a + _blur(rng.normal(0, rng.uniform(0.0, 0.04), size=a.shape), 0.6)
    return _grey(_through(np.clip(a, 0, 1), 25))
