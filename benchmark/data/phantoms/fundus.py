"""Colour fundus phantom standing in for REFUGE-2 (optic disc and cup).

One case per subject, a disc-centred crop of the posterior pole as used for
disc/cup segmentation. Image ``(1, 3, size, size)`` float32 RGB in about [0, 1],
label ``(1, 1, size, size)`` uint8 with 0 background, 1 optic disc (rim),
2 optic cup; the cup always lies inside the disc and overrides it. Evaluation
regions as REFUGE-2's: ``disc`` = rim + cup (the whole disc), ``cup``.

Content: orange-red retina with choroidal texture; a vertically oval disc
(diameter 26-36 % of the crop, off-centre by up to 6 %, borders perturbed ~6 %);
a cup of cup-to-disc ratio 0.3-0.7 shifted temporally, with a soft boundary
(edge width ~6 % of the disc radius) and only 10-25 % brighter than the rim; a
vessel tree radiating from the cup (four arcade trunks and 3-6 thin vessels that
branch and thin outward) which crosses both boundaries.

Nuisances: a pale peripapillary-atrophy crescent beside the disc (unlabelled,
about as bright as the rim); radial vignetting ``exp(-k r^2)`` with k 0.1-0.3 about
a centre off by ~0.4 half-widths, times a smooth illumination field (+-12-20 %);
per-subject colour cast (per channel 0.8-1.1x retina, 0.9-1.05x rim) and gamma
(0.8-1.25); defocus blur (0-1.2 px at size 64, scaled with size); additive Gaussian
noise (sigma 2-4 % of full scale).

Spacing: ``(1, s, s)`` with ``s = 7 mm / size`` (crop width ~7 mm of retina).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from benchmark.data.case import DatasetInfo
from benchmark.data.phantoms import PhantomSource, common as C

INFO = DatasetInfo(
    name="phantom-fundus", modality="fundus", channels=3,
    class_names=("background", "optic disc", "optic cup"), n_annotators=1, stands_for="REFUGE-2",
    phantom=True, note="Synthetic disc-centred colour fundus crops standing in for REFUGE-2.",
    regions={"disc": (1, 2), "cup": (2,)},   # REFUGE's: the whole disc (rim + cup) and the cup
)
FOV_MM = 7.0


def _vessels(rng: np.random.Generator, size: int, origin: np.ndarray) -> np.ndarray:
    """Vessel occupancy in [0, 1]: curving random-walk trunks that branch and thin outward.

    Each walk is drawn at once (cumulative sums of angle noise); the vessel is
    everything within the local width of the nearest centreline pixel.
    """
    step = 1.0 / size  # grid units (half a pixel)
    n = int(2.6 / step)
    length = step * np.arange(1, n + 1)
    width = np.zeros((size, size))
    # four arcade trunks leaving the disc up and down, plus a few thin ones in any direction
    trunks = np.pi / 2 * np.array([-1, -1, 1, 1]) + np.array([-0.35, 0.35, -0.35, 0.35]) + rng.normal(0, 0.15, 4)
    walks = [(origin, a, rng.uniform(0.022, 0.03)) for a in trunks]
    walks += [(origin, a, rng.uniform(0.012, 0.018)) for a in rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7)))]
    while walks:
        p, a, w = walks.pop()
        angle = a + np.cumsum(rng.normal(0.0, 0.6) * step + rng.normal(0.0, 0.3 * np.sqrt(step), n))
        pts = p + np.cumsum(step * np.stack([np.sin(angle), np.cos(angle)], 1), 0)
        ij = np.floor((pts + 1.0) * size / 2).astype(int)
        inside = np.all((ij >= 0) & (ij < size), 1)
        end = n if inside.all() else int(np.argmin(inside))
        ws = w * np.exp(-0.25 * length[:end])
        np.maximum.at(width, (ij[:end, 0], ij[:end, 1]), ws)
        for k in np.flatnonzero(rng.random(end) < 0.8 * step):
            if ws[k] > 0.012:
                walks.append((pts[k], angle[k] + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0), 0.7 * ws[k]))
    dist, (ii, jj) = ndimage.distance_transform_edt(width == 0, return_indices=True)
    return C.sigmoid((width[ii, jj] * size / 2 - dist) / 0.5)


def _subject(rng: np.random.Generator, sid: str, size: int):
    yy, xx = C.grid(size)
    disc_c = rng.uniform(-0.12, 0.12, 2)
    r_disc = rng.uniform(0.26, 0.36)
    disc_radii = (r_disc * rng.uniform(1.0, 1.15), r_disc)  # vertically oval
    temporal = rng.choice([-1.0, 1.0])  # left or right eye
    cdr = rng.uniform(0.3, 0.7)
    cup_c = disc_c + np.array([rng.normal(0, 0.02), temporal * r_disc * (1 - cdr) * rng.uniform(0.1, 0.4)])
    disc = C.blob(yy, xx, disc_c, disc_radii, rng.normal(0, 0.15), C.wobble(rng, 0.06))
    cup = np.maximum(C.blob(yy, xx, cup_c, (cdr * disc_radii[0], cdr * disc_radii[1]), 0.0, C.wobble(rng, 0.1)),
                     disc + 0.08 * r_disc + 2.0 / size)  # keep a rim of at least a pixel around the cup

    retina = np.array([0.78, 0.33, 0.14]) * rng.uniform(0.8, 1.1, 3)
    rim = np.array([0.95, 0.62, 0.4]) * rng.uniform(0.9, 1.05, 3)
    pallor = rng.uniform(1.1, 1.25)
    img = retina[:, None, None] * (1.0 + 0.08 * C.smooth_field(rng, (3, size, size), (0.5, 0.03 * size, 0.03 * size)))
    # peripapillary atrophy: pale crescent on the temporal side, outside the disc
    ppa = np.maximum(C.blob(yy, xx, disc_c + np.array([0, temporal * 0.25 * r_disc]),
                            (1.15 * disc_radii[0], 1.2 * r_disc)), -disc)
    ppa_tone = rim * rng.uniform(0.85, 1.1)
    for ch in range(3):
        C.paint(img[ch], ppa, ppa_tone[ch], 0.04 * r_disc)
        C.paint(img[ch], disc, rim[ch], 0.03 * r_disc)
        C.paint(img[ch], cup, min(rim[ch] * pallor, 1.0), 0.06 * r_disc)
    vessel = _vessels(rng, size, cup_c)
    img = img * (1.0 - 0.55 * vessel * np.array([0.45, 1.0, 1.0])[:, None, None])  # vessels: dark red

    vignette = np.exp(-rng.uniform(0.1, 0.3) * ((yy - rng.normal(0, 0.4)) ** 2 + (xx - rng.normal(0, 0.4)) ** 2))
    img = img * vignette * C.bias_field(rng, (size, size), rng.uniform(0.12, 0.2), 0.5 * size)
    img = ndimage.gaussian_filter(img, (0, *(2 * [rng.uniform(0.0, 1.2) * size / 64])))
    img = np.clip(img, 0, None) ** rng.uniform(0.8, 1.25)
    img = img + rng.uniform(0.02, 0.04) * rng.standard_normal(img.shape)

    label = np.zeros((size, size), np.uint8)
    label[disc < 0] = 1
    label[cup < 0] = 2
    return [C.make_case(sid, img[None], label[None], (1.0, FOV_MM / size, FOV_MM / size), cdr=float(cdr))]


def generate(seed: int, n_subjects: int, size: int = 64):
    """``n_subjects`` cases, each image ``(1, 3, size, size)`` and label ``(1, 1, size, size)``."""
    return C.generate(_subject, seed, n_subjects, size)


def source() -> PhantomSource:
    """This phantom as a dataset (the ``segbench.datasets`` entry point names this function)."""
    return PhantomSource(INFO, generate)
