"""H&E histology phantom standing in for GlaS (colon gland segmentation).

Two images per subject (``case_id = <subject>_img0/_img1``), sharing the subject's
stain and grade, so splits must be made by subject. Image ``(1, 3, size, size)``
float32 RGB in [0, 1], label ``(1, 1, size, size)`` uint8 with 0 background,
1 gland (epithelium, cytoplasm and lumen together, as in GlaS).

Content: glands (radius 28-80 um, aspect up to 1.8, some cut by the border) in
pink fibrous stroma with scattered nuclei. Each gland has a dark epithelial rim
crowded with basal nuclei, paler mucinous cytoplasm and a white lumen. Half the
subjects are "benign" (3-8 regular glands per image, Fourier perturbation ~6 %),
half "malignant" (5-11 glands, ~20 % irregular outlines, 1.4x thicker epithelium,
small or absent lumens).

Nuisances: per-subject stain vectors (Beer-Lambert H&E mixing, vectors perturbed
~8 %, stain strength 0.75-1.3x); lymphocyte clusters (nuclei-dense stroma that
looks like epithelium); white tissue tears; uneven illumination (+-8 %); blur
(0-0.8 px at size 64, scaled with size); additive noise (sigma 2-3 %).

Spacing: ``(1, s, s)`` with ``s = 0.4 mm / size`` (a 400 um field of view).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from benchmark.data.case import DatasetInfo
from benchmark.data.phantoms import PhantomSource, common as C

INFO = DatasetInfo(
    name="phantom-gland", modality="histology", channels=3,
    class_names=("background", "gland"), n_annotators=1, stands_for="GlaS",
    phantom=True, note="Synthetic H&E colon histology standing in for GlaS; two images per subject.",
)
FOV_MM = 0.4
IMAGES_PER_SUBJECT = 2
# optical-density stain vectors (R, G, B) as estimated by Macenko et al.
HEMATOXYLIN = np.array([0.56, 0.72, 0.41])
EOSIN = np.array([0.22, 0.80, 0.56])


def _image(rng: np.random.Generator, size: int, malignant: bool, stains: np.ndarray):
    """One RGB image ``(3, size, size)`` and its gland mask ``(size, size)``."""
    um = 2.0 / (FOV_MM * 1000.0)  # grid units per micrometre
    yy, xx = C.grid(size)
    gland, lumen, rim = (np.full((size, size), np.inf) for _ in range(3))
    centres, radii = [], []
    target = int(rng.integers(5, 12) if malignant else rng.integers(3, 9))
    for _ in range(20 * target):
        if len(centres) == target:
            break
        c, r = rng.uniform(-1.1, 1.1, 2), rng.uniform(28, 80) * um
        if any(np.hypot(*(c - c2)) < 0.9 * (r + r2) for c2, r2 in zip(centres, radii)):
            continue
        centres.append(c)
        radii.append(r)
        aspect = rng.uniform(1.0, 1.8)
        g = C.blob(yy, xx, c, (r * np.sqrt(aspect), r / np.sqrt(aspect)), rng.uniform(0, np.pi),
                   C.wobble(rng, 0.2 if malignant else 0.06, 6))
        epi = rng.uniform(12, 22) * um * (1.4 if malignant else 1.0)
        gland = np.minimum(gland, g)
        rim = np.minimum(rim, np.maximum(g, -g - epi))
        lumen_depth = epi + r * rng.uniform(0.15, 0.3) * (2.0 if malignant else 1.0)
        lumen = np.minimum(lumen, g + lumen_depth + 0.25 * r * C.smooth_field(rng, (size, size), 0.06 * size))

    pv = 1.0 / size
    fibres = C.smooth_field(rng, (size, size), (0.01 * size, 0.06 * size))  # fibres run left-right
    hema = 0.06 + 0.02 * fibres
    eosin = 0.4 + 0.08 * fibres
    # nuclei: Poisson dots, dense in the epithelial rim and in lymphocyte clusters
    lymph = C.smooth_field(rng, (size, size), 0.08 * size) > rng.uniform(1.2, 2.0)
    density = np.where(lymph, 0.35, 0.04) + 0.5 * C.smooth_mask(rim, pv)
    scale = 64.0 / size
    dots = (rng.random((size, size)) < density * scale ** 2).astype(float)
    sigma = 0.6 / scale
    nuclei = np.clip(ndimage.gaussian_filter(dots, sigma) * 2 * np.pi * sigma ** 2, 0, 1)
    for sdf, h, e in ((gland, 0.2, 0.25), (rim, 0.4, 0.35), (lumen, 0.02, 0.04)):
        C.paint(hema, sdf, h, pv)
        C.paint(eosin, sdf, e, pv)
    tears = (np.abs(C.smooth_field(rng, (size, size), 0.1 * size)) < 0.06) & \
            (C.smooth_field(rng, (size, size), 0.2 * size) > 0.8) & (gland > 0)
    keep = np.where(tears, 0.05, 1.0)
    hema = (hema + 1.2 * nuclei * (lumen > 0)) * keep
    eosin = eosin * keep

    od = stains[0][:, None, None] * hema + stains[1][:, None, None] * eosin
    img = np.exp(-1.6 * od) * (1.0 + 0.08 * C.smooth_field(rng, (size, size), 0.4 * size))
    img = ndimage.gaussian_filter(img, (0, *(2 * [rng.uniform(0.0, 0.8) / scale])))
    img = img + rng.uniform(0.02, 0.03) * rng.standard_normal(img.shape)
    return np.clip(img, 0.0, 1.0), (gland < 0).astype(np.uint8)


def _subject(rng: np.random.Generator, sid: str, size: int):
    malignant = bool(rng.random() < 0.5)
    stains = []
    for vec in (HEMATOXYLIN, EOSIN):
        v = np.abs(vec / np.linalg.norm(vec) + rng.normal(0, 0.08, 3))
        stains.append(v / np.linalg.norm(v) * rng.uniform(0.75, 1.3))
    cases = []
    for k in range(IMAGES_PER_SUBJECT):
        img, mask = _image(rng, size, malignant, np.array(stains))
        cases.append(C.make_case(sid, img[None], mask[None], (1.0, FOV_MM / size, FOV_MM / size),
                                 suffix=f"img{k}", grade="malignant" if malignant else "benign"))
    return cases


def generate(seed: int, n_subjects: int, size: int = 64):
    """``2 * n_subjects`` cases, each image ``(1, 3, size, size)`` and label ``(1, 1, size, size)``."""
    return C.generate(_subject, seed, n_subjects, size)


def source() -> PhantomSource:
    """This phantom as a dataset (the ``segbench.datasets`` entry point names this function)."""
    return PhantomSource(INFO, generate)
