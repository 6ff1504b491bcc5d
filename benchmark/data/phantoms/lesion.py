"""CT lung-nodule phantom with four raters, standing in for LIDC-IDRI.

One case per subject: a single axial slice, a 64 mm crop around a candidate nodule.
Image ``(1, 1, size, size)`` float32 in Hounsfield units; label ``(4, 1, size, size)``
uint8, one binary mask per rater (0 background, 1 lesion).

Content: lung parenchyma (-870..-800 HU with texture), vessels cut at random angles
(discs and short ellipses, 1-3.5 mm radius, -60..+40 HU), chest wall with a fat
layer in ~40 % of crops (juxta-pleural look-alikes), and a nodule (radius 2.5-10 mm,
~15 % Fourier irregularity) whose contrast over the lung is 150-900 HU, so many are
faint ground-glass; its edge is soft (10-35 % of the radius). ~10 % of subjects have
no nodule and all raters are empty.

Raters: all four masks come from one latent soft lesion ``p`` (the nodule's own
occupancy). Rater k marks ``p + 0.12 * n_k * 4p(1-p) > t_k`` with a rater-specific threshold
``t_k ~ U(0.3, 0.7)`` and a smooth boundary perturbation ``n_k`` (unit std, correlation
~ half the radius, acting only in the boundary band); each rater misses the nodule outright with probability 5 % (clear
nodule) to 25 % (contrast < 350 HU), ~12 % overall.

Nuisances: correlated CT noise (sigma 25-70 HU, ~1 px grain), partial-volume blur,
soft low-contrast nodules next to vessels of similar size.

Spacing: ``(z, s, s)`` with slice thickness ``z`` in 1.25-2.5 mm and ``s = 64 mm / size``.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from benchmark.data.case import DatasetInfo
from benchmark.data.phantoms import PhantomSource, common as C

INFO = DatasetInfo(
    name="phantom-lesion", modality="CT", channels=1, class_names=("background", "lesion"),
    n_annotators=4, stands_for="LIDC-IDRI", phantom=True,
    note="Synthetic CT lung-nodule crops with four simulated raters standing in for LIDC-IDRI.",
)
FOV_MM = 64.0
N_RATERS = 4


def _subject(rng: np.random.Generator, sid: str, size: int):
    mm = 2.0 / FOV_MM
    yy, xx = C.grid(size)
    lung = rng.uniform(-870, -800)
    img = lung + 25.0 * C.smooth_field(rng, (size, size), 0.05 * size)
    pv = 1.0 / size
    if rng.random() < 0.4:  # chest wall entering from one side: fat then muscle
        a = rng.uniform(0, 2 * np.pi)
        dist = rng.uniform(0.45, 0.9) - (yy * np.sin(a) + xx * np.cos(a))  # < 0 beyond the pleura
        dist = dist + 2 * mm * C.smooth_field(rng, (size, size), 0.2 * size)
        C.paint(img, dist, rng.uniform(-120, -80), pv)
        C.paint(img, dist + rng.uniform(3, 8) * mm, rng.uniform(20, 60), pv)
    for _ in range(int(rng.integers(4, 12))):
        r = rng.uniform(1.0, 3.5) * mm
        vessel = C.blob(yy, xx, rng.uniform(-1, 1, 2), (r * rng.uniform(1, 4), r), rng.uniform(0, np.pi))
        C.paint(img, vessel, rng.uniform(-60, 40), pv)

    has_lesion = rng.random() >= 0.1
    labels = np.zeros((N_RATERS, 1, size, size), np.uint8)
    contrast = 0.0
    if has_lesion:
        radius = rng.uniform(2.5, 10.0) * mm
        soft = radius * rng.uniform(0.1, 0.35)
        sdf = C.blob(yy, xx, rng.normal(0, 0.12, 2), (radius * rng.uniform(1, 1.3), radius),
                     rng.uniform(0, np.pi), C.wobble(rng, 0.15))
        p = C.sigmoid(-sdf / soft)  # the latent soft lesion
        contrast = rng.uniform(150, 900)
        texture = 1.0 + 0.15 * C.smooth_field(rng, (size, size), 0.03 * size)
        img = img + contrast * p * texture
        miss = 0.25 if contrast < 350 else 0.05
        for k in range(N_RATERS):
            if rng.random() < miss:
                continue
            wobble = C.smooth_field(rng, (size, size), max(0.5, 0.5 * radius * size / 2))
            # the perturbation is confined to the boundary band (4p(1-p) peaks where p = 0.5)
            labels[k, 0] = p + 0.12 * wobble * 4 * p * (1 - p) > rng.uniform(0.3, 0.7)

    img = ndimage.gaussian_filter(img, 0.5)
    img = img + rng.uniform(25, 70) * C.smooth_field(rng, (size, size), 0.8)
    return [C.make_case(sid, img[None, None], labels, (rng.uniform(1.25, 2.5), FOV_MM / size, FOV_MM / size),
                        has_lesion=has_lesion, contrast_hu=float(contrast))]


def generate(seed: int, n_subjects: int, size: int = 64):
    """``n_subjects`` cases, each image ``(1, 1, size, size)`` and label ``(4, 1, size, size)``."""
    return C.generate(_subject, seed, n_subjects, size)


def source() -> PhantomSource:
    """This phantom as a dataset (the ``segbench.datasets`` entry point names this function)."""
    return PhantomSource(INFO, generate)
