"""Generated image-caption pairs for pretraining the tiny CLIP, and the held-out compositions it is tested on.

Each example is drawn by cl_suite.synth_images from a known attribute set, and its caption is written from the
same attributes ("a photo of a small red striped circle on the left.", "the digit 7 in bold",
"a photo of a brick texture.", "a photo of a face."). Attributes are dropped from captions at random, so short
prompts ("a photo of a circle.") are also in distribution. Some (shape, colour) pairs never appear in training:
the zero-shot accuracy on them measures composition, not memorisation.

The mix (MIX): 45 % shapes, 25 % glyphs, 10 % textures, 10 % faces, 10 % non-face backgrounds. Three quarters of
the glyphs are digits, half of those handwritten (pen strokes through scikit-learn's 8x8 digits preprocessing); the
other glyphs are printed digits and letters in Pillow's fonts, 40 % of them through the same 8x8 preprocessing.
Faces are LFW-like tight crops and backgrounds non-face scenery, part of it crops of bundled scikit-image
photographs that show no face, brick, grass or gravel (synth_images.PHOTOS). No image of a clip-tiny test domain
(scikit-learn digits, LFW, the brick / grass / gravel photographs) is used.
"""

from __future__ import annotations

import numpy as np

from cl_suite import synth_images as S

PREFIXES = ("a photo of {}.", "{}", "an image of {}.", "a picture of {}.")
MIX = (("shape", 0.45), ("glyph", 0.25), ("texture", 0.10), ("face", 0.10), ("background", 0.10))
DIGIT_SHARE, HANDWRITTEN_SHARE = 0.75, 0.5  # of glyphs: digits (the rest letters); of digits: pen strokes
COLOUR_NAMES = tuple(S.COLOURS)


def held_out(shape: str, colour: str) -> bool:
    """(shape, colour) pairs never shown in pretraining: 12 of the 48."""
    return (S.SHAPES.index(shape) + COLOUR_NAMES.index(colour)) % 4 == 0


def shape_desc(shape: str, colour: str | None = None, fill: str | None = None, size: str | None = None,
               position: str | None = None) -> str:  # fmt: skip
    words = ["a", *(w for w in (size, colour, fill) if w), shape]
    if position:
        words.append("in the center" if position == "center" else f"on the {position}")
    return " ".join(words)


def glyph_desc(char: str, colour: str | None = None, font: str | None = None) -> str:
    kind = "digit" if char.isdigit() else "letter"
    text = f"the {kind} {char}"
    if colour:
        text = f"the {colour} {kind} {char}"
    if font in ("bold", "italic"):
        text += f" in {font}"
    return text


def texture_desc(kind: str) -> str:
    return f"a {kind} texture"


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _maybe(rng: np.random.Generator, value: str, keep: float = 0.7) -> str | None:
    return value if rng.random() < keep else None


def sample(rng: np.random.Generator, kind: str, *, allow_held_out: bool = False) -> tuple[np.ndarray, str]:
    """One (image, caption) pair of ``kind`` (shape, glyph, texture, face, background)."""
    if kind == "shape":
        while True:
            shape, colour = _pick(rng, S.SHAPES), _pick(rng, COLOUR_NAMES)
            if allow_held_out or not held_out(shape, colour):
                break
        fill, size, pos = _pick(rng, S.FILLS), _pick(rng, S.SIZES), _pick(rng, S.POSITIONS)
        if size == "large":
            pos = "center"
        image = S.shape(rng, shape, colour, fill, size, pos)
        desc = shape_desc(shape, _maybe(rng, colour, 0.8), _maybe(rng, fill, 0.5), _maybe(rng, size, 0.5),
                          _maybe(rng, pos, 0.4))  # fmt: skip
    elif kind == "glyph":
        char = _pick(rng, S.DIGITS) if rng.random() < DIGIT_SHARE else _pick(rng, S.LETTERS)
        if char in S.DIGITS and rng.random() < HANDWRITTEN_SHARE:
            font, low_res = "hand", True
        else:
            font, low_res = _pick(rng, S.PRINT_FONTS), bool(rng.random() < 0.4)
        colour = _pick(rng, COLOUR_NAMES) if rng.random() < (0.1 if low_res else 0.3) else None
        image = S.glyph(rng, char, font, colour, low_res=low_res)
        desc = glyph_desc(char, colour and _maybe(rng, colour), _maybe(rng, font, 0.3))
    elif kind == "texture":
        texture = _pick(rng, S.TEXTURES)
        image, desc = S.texture(rng, texture), texture_desc(texture)
    elif kind == "face":
        image, desc = S.face(rng), "a face"
    elif kind == "background":
        image, desc = S.background(rng), "a background"
    else:
        raise ValueError(f"unknown example kind {kind!r}; accepted: {', '.join(k for k, _ in MIX)}")
    return image, _pick(rng, PREFIXES).format(desc)


def batch(rng: np.random.Generator, size: int) -> tuple[np.ndarray, list[str]]:
    """``size`` pairs in the pretraining mix: images (size, 32, 32, 3) and their captions."""
    kinds, weights = zip(*MIX)
    picks = rng.choice(len(kinds), size=size, p=np.array(weights) / sum(weights))
    pairs = [sample(rng, kinds[k]) for k in picks]
    return np.stack([p[0] for p in pairs]), [p[1] for p in pairs]


def held_out_set(seed: int, per_pair: int = 10) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Zero-shot probe: large centred shapes of the held-out (shape, colour) pairs. Returns images, the index of
    the true caption, and the candidate captions "a photo of a {colour} {shape}." over all 48 pairs."""
    rng = np.random.default_rng(seed)
    pairs = [(s, c) for s in S.SHAPES for c in COLOUR_NAMES]
    captions = [f"a photo of {shape_desc(s, c)}." for s, c in pairs]
    images, labels = [], []
    for i, (s, c) in enumerate(pairs):
        if held_out(s, c):
            for _ in range(per_pair):
                images.append(S.shape(rng, s, c, _pick(rng, S.FILLS), "large", "center"))
                labels.append(i)
    return np.stack(images), np.array(labels), captions




EXTRA_WORDS = ("texture", "digit", "letter", "number", "in", "bold", "italic", "a", "an", "the", "of", "on", "photo",
               "picture", "image", "center", "face", "background", "wall", "brick", "grass", "gravel", ".", ",")


def caption_words() -> list[str]:
    """Every word the captions and the clip-tiny prompts use: the tiny CLIP's vocabulary is built from these."""
    words = set(EXTRA_WORDS) | set(S.COLOURS) | set(S.SHAPES) | set(S.FILLS) | set(S.SIZES) | set(S.POSITIONS)
    words |= set(S.DIGITS) | set(S.LETTERS) | set(S.TEXTURES)
    for prefix in PREFIXES:
        words |= set(prefix.replace("{}", " ").replace(".", " . ").split())
    return sorted(words)
