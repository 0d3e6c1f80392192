"""The tiny CLIP's pretraining renderers: shapes of the images, value ranges, determinism, the 8x8 digit pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from cl_suite import synth_images as S
from cl_suite.models import tiny_clip_data as D


def _check(image: np.ndarray) -> None:
    assert image.shape == (S.SIZE, S.SIZE, 3) and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.01


@pytest.mark.parametrize("kind", [k for k, _ in D.MIX])
def test_every_kind_of_example_is_a_deterministic_image_with_a_caption(kind):
    first, again = (D.sample(np.random.default_rng(7), kind) for _ in range(2))
    _check(first[0])
    np.testing.assert_array_equal(first[0], again[0])
    assert first[1] == again[1] and first[1].strip()


@pytest.mark.parametrize("kind", S.TEXTURES)
def test_textures(kind):
    _check(S.texture(np.random.default_rng(0), kind))


@pytest.mark.parametrize("digit", S.DIGITS)
def test_handwritten_digits_look_like_scikit_learns(digit):
    """White ink on black through 8x8 with 17 grey levels: the 8x8 samples of the upsampled image are on the grid."""
    image = S.glyph(np.random.default_rng(int(digit)), digit, "hand")
    _check(image)
    grey = image[..., 0]
    assert np.allclose(image, grey[..., None]) and grey.min() == 0
    from PIL import Image

    counts = np.asarray(Image.fromarray(grey, mode="F").resize((8, 8), Image.Resampling.BOX)) * 16
    assert counts.max() > 8  # strokes fill whole 4x4 blocks somewhere


def test_digits_8x8_block_counts():
    ink = np.zeros((128, 128), bool)
    ink[20:108, 60:68] = True  # a bar: fitted to the 32x32 height, so it spans the 8 block rows
    grey = S.digits_8x8(ink, np.random.default_rng(0))
    assert grey.shape == (S.SIZE, S.SIZE) and grey.max() <= 1 and grey[:, :5].max() == 0


def test_hand_font_is_for_digits_only():
    with pytest.raises(ValueError, match="digits only"):
        S.glyph(np.random.default_rng(0), "a", "hand")


def test_background_photos_are_bundled_and_not_test_domains():
    assert not {"brick", "grass", "gravel", "lfw_subset", "astronaut", "camera", "chelsea"} & set(S.PHOTOS)
    for name in S.PHOTOS:
        photo = S._photo(name)
        assert photo.ndim == 2 and photo.min() >= 0 and photo.max() <= 1
