"""Generated shape-and-colour images for fscil-tiny (nothing downloaded, nothing bundled but this code).

Each class is one (shape, colour) pair: 5 shapes x 4 colours = 20 classes. Every sample jitters position, size,
hue and background noise. The base session holds the 10 pairs with an even ``shape + colour`` (so it shows every
shape and every colour); the novel classes are the other 10 pairs, new combinations of seen parts. That is why a
backbone trained on the base session can separate novel classes from five shots: the FSCIL premise in miniature.
"""

from __future__ import annotations

import numpy as np

SHAPES = ("disk", "square", "ring", "cross", "triangle")
COLOURS = {"red": (0.9, 0.15, 0.15), "green": (0.15, 0.8, 0.2), "blue": (0.2, 0.3, 0.95), "yellow": (0.9, 0.85, 0.1)}
BASE = [(s, c) for s in range(len(SHAPES)) for c in range(len(COLOURS)) if (s + c) % 2 == 0]
NOVEL = [(s, c) for s in range(len(SHAPES)) for c in range(len(COLOURS)) if (s + c) % 2 == 1]
CLASSES = BASE + NOVEL
"""Global label i is the pair CLASSES[i]: labels 0..9 are the base classes, 10..19 the novel ones in session order."""


def class_names() -> list[str]:
    colours = list(COLOURS)
    return [f"{colours[c]} {SHAPES[s]}" for s, c in CLASSES]


def _mask(shape: str, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = y - cy, x - cx
    if shape == "disk":
        return dy**2 + dx**2 <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
    if shape == "ring":
        d = np.sqrt(dy**2 + dx**2)
        return (d <= r) & (d >= r * 0.55)
    if shape == "cross":
        return ((np.abs(dy) <= r * 0.3) & (np.abs(dx) <= r)) | ((np.abs(dx) <= r * 0.3) & (np.abs(dy) <= r))
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def generate(per_class: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of every class, class-major: returns uint8 images (N, size, size, 3) and labels (N,).
    Deterministic in ``seed``: image ``label * per_class + k`` is the k-th sample of class ``label``."""
    rng = np.random.default_rng(seed)
    colours = list(COLOURS.values())
    images = np.empty((len(CLASSES) * per_class, size, size, 3), dtype=np.float32)
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    for i, label in enumerate(labels):
        s, c = CLASSES[label]
        r = rng.uniform(0.25, 0.36) * size
        cy, cx = rng.uniform(r, size - r, size=2)
        colour = np.clip(np.array(colours[c]) + rng.normal(0, 0.06, 3), 0, 1)
        background = rng.uniform(0.0, 0.35) + rng.normal(0, 0.08, (size, size, 1))
        img = np.broadcast_to(background, (size, size, 3)).copy()
        img[_mask(SHAPES[s], size, cy, cx, r)] = colour
        images[i] = img + rng.normal(0, 0.05, img.shape)
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8), labels


def tiny_session_lists(per_class: int = 60, shots: int = 5, ways: int = 2, seed: int = 0) -> list[list[int]]:
    """The few-shot lists bundled in ``fscil_index/fscil_tiny`` (sessions 1..5): ``shots`` training-set indices of
    each novel class, drawn once with ``seed``. Kept so the committed files can be checked and regenerated."""
    rng = np.random.default_rng(seed)
    novel = range(len(BASE), len(CLASSES))
    picks = {c: sorted(int(c * per_class + k) for k in rng.choice(per_class, shots, replace=False)) for c in novel}
    groups = [list(novel)[i : i + ways] for i in range(0, len(NOVEL), ways)]
    return [[i for c in group for i in picks[c]] for group in groups]
