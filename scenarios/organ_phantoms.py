"""Generated CT-like abdominal phantoms: volumes in Hounsfield units with an organ label map, nothing downloaded.

Each case is a stack of axial slices (z from the lower abdomen up to the liver dome) showing a body outline (a fat
ring around soft tissue, air outside) and organs as textured, irregular ellipsoids placed as on an axial CT in
radiological convention (the patient's right on the image's left): liver on the right, spleen and stomach on the
left, kidneys either side of the spine, aorta just left-anterior of the vertebral body, the IVC to its right, the
pancreas across them, the gallbladder under the liver. Intensities are typical portal-venous HU values (fat −100,
liver 60, kidney cortex 160, aorta 190, bone 250–800, stomach gas −900). Each case jitters positions, sizes, shapes
(a few angular harmonics of the radius) and intensities, adds smooth per-organ texture, blurs a little (partial
volume) and adds noise; ``window`` maps HU to [0, 1] as a CT loader would.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter


@dataclass(frozen=True)
class OrganSpec:
    """One organ: in-plane centre (u right→left of the image, v anterior→posterior, both in [-1, 1]), radii,
    rotation (degrees), z extent in [0, 1] and mean HU."""

    name: str
    center: tuple[float, float]
    radii: tuple[float, float]
    z: tuple[float, float]
    hu: float
    angle: float = 0.0
    texture: float = 12.0


# Painted in this order: a later organ overrides an earlier one where they overlap (the gallbladder sits in the liver).
ORGANS: tuple[OrganSpec, ...] = (
    OrganSpec("liver", (-0.36, -0.08), (0.40, 0.36), (0.35, 1.25), 60, angle=-10),
    OrganSpec("spleen", (0.52, 0.18), (0.14, 0.22), (0.45, 1.0), 48, angle=25),
    OrganSpec("kidney_right", (-0.30, 0.32), (0.11, 0.16), (0.0, 0.6), 160, angle=-20, texture=20),
    OrganSpec("kidney_left", (0.31, 0.31), (0.11, 0.16), (0.05, 0.65), 160, angle=20, texture=20),
    OrganSpec("vertebra", (0.0, 0.45), (0.12, 0.11), (-1.0, 2.0), 450, texture=60),
    OrganSpec("aorta", (0.07, 0.24), (0.055, 0.055), (-1.0, 2.0), 190, texture=6),
    OrganSpec("ivc", (-0.11, 0.22), (0.06, 0.045), (-1.0, 0.85), 130, texture=6),
    OrganSpec("stomach", (0.28, -0.25), (0.22, 0.15), (0.55, 1.3), 35, angle=-30),
    OrganSpec("pancreas", (0.06, 0.05), (0.26, 0.055), (0.35, 0.65), 45, angle=-12),
    OrganSpec("gallbladder", (-0.30, -0.30), (0.07, 0.09), (0.3, 0.6), 10, texture=4),
)
ORGAN_NAMES = tuple(o.name for o in ORGANS)


def window(hu: np.ndarray, low: float = -200.0, high: float = 300.0) -> np.ndarray:
    """Clip to a soft-tissue CT window and scale to [0, 1] (the same transform the NIfTI loader applies)."""
    return (np.clip(hu, low, high) - low) / (high - low)


def _shape_mask(u, v, spec: OrganSpec, rng: np.random.Generator, z_frac: np.ndarray) -> np.ndarray:
    """Boolean (D, H, W) mask of an irregular ellipsoid: radius modulated by angular harmonics, tapered in z."""
    cu, cv = np.array(spec.center) + rng.normal(0, 0.03, 2)
    ru, rv = np.array(spec.radii) * rng.uniform(0.85, 1.15, 2)
    theta = np.deg2rad(spec.angle + rng.normal(0, 6))
    du, dv = u - cu, v - cv
    a = du * np.cos(theta) + dv * np.sin(theta)
    b = -du * np.sin(theta) + dv * np.cos(theta)
    phi = np.arctan2(b / rv, a / ru)
    wobble = 1 + sum(rng.uniform(0, 0.07) * np.cos(k * phi + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4))
    rho = np.sqrt((a / ru) ** 2 + (b / rv) ** 2) / wobble
    z0, z1 = spec.z
    zc, hz = (z0 + z1) / 2, (z1 - z0) / 2
    taper = np.sqrt(np.clip(1 - ((z_frac - zc) / hz) ** 2, 0, 1))  # (D,)
    return rho[None] <= taper[:, None, None]


def make_case(seed: int, size: int = 48, slices: int = 10, noise: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: (HU volume float32 (D, H, W), label map int64 (D, H, W)); label k = ORGANS[k-1], 0 = none."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(-1, 1, size)
    v, u = np.meshgrid(grid, grid, indexing="ij")  # rows: anterior (top) -> posterior; columns: right -> left
    z_frac = np.linspace(0.0, 1.0, slices)
    hu = np.full((slices, size, size), -1000.0)
    labels = np.zeros((slices, size, size), dtype=np.int64)

    body_ru, body_rv = 0.88 * rng.uniform(0.93, 1.05), 0.66 * rng.uniform(0.93, 1.05)
    body = ((u / body_ru) ** 2 + ((v - 0.05) / body_rv) ** 2)[None].repeat(slices, 0)
    hu[body <= 1] = -100.0  # subcutaneous fat
    inner = body <= (1 - 0.12) ** 2
    hu[inner] = 15.0 + 8 * gaussian_filter(rng.normal(size=hu.shape), (0, 3, 3))[inner]  # muscle / soft tissue

    for k, spec in enumerate(ORGANS, start=1):
        mask = _shape_mask(u, v, spec, rng, z_frac) & inner
        texture = spec.texture * gaussian_filter(rng.normal(size=hu.shape), (0.5, 1.5, 1.5)) * 3
        hu[mask] = (spec.hu + rng.normal(0, 8) + texture)[mask]
        labels[mask] = k
        if spec.name == "vertebra":  # cortical rim brighter than the cancellous core
            core = _shape_mask(u, v, OrganSpec("core", spec.center, (0.07, 0.065), spec.z, 0), rng, z_frac)
            hu[mask & ~core] += 350
        if spec.name == "stomach":  # a gas bubble at the anterior wall, still labelled stomach
            gas = mask & (v[None] < spec.center[1] - 0.05) & (rng.uniform() < 0.8)
            hu[gas] = -900.0
    hu = gaussian_filter(hu, (0, 0.6, 0.6)) + rng.normal(0, noise, hu.shape)
    return hu.astype(np.float32), labels
