"""FLAIR-like brain tumour phantom standing in for BraTS 2021 (NCR, ED, ET).

One case per subject: ``Z = 3`` contiguous axial slices through the tumour centre.
Image ``(3, 1, size, size)`` float32 (one FLAIR-like channel, as MedFlowSeg uses a
single MRI channel), label ``(1, 3, size, size)`` uint8 with 0 background,
1 necrotic core (NCR), 2 edema (ED), 3 enhancing tumour (ET; BraTS label 4).
Evaluation regions as BraTS's: whole tumour WT = NCR + ED + ET, tumour core
TC = NCR + ET, enhancing tumour ET.

Anatomy: scalp, dark skull and CSF rim, grey/white matter with a folded cortical
ribbon and sulci, and butterfly lateral ventricles pushed away from the tumour
(mass effect). The tumour is a 3-D nest: NCR core (absent in ~10 % of subjects),
ET ring around it, ED around both, reaching 28-50 mm from the centre with strongly
irregular borders (Fourier perturbation ~22 % plus a 4 mm elastic warp) and
clipped to the brain.

Nuisances: modest contrast drawn per subject (ED 1.45-1.8x white matter, ET a
1.2-1.4x brighter ring, NCR 0.45-0.7x ED), comparable to the bias field
(+-15-30 %); tumour texture (+-8 %); head pose (+-12 deg rotation, +-10 mm shift);
partial-volume blur; Rician noise with sigma 3.5-6 % of the white-matter signal.

Spacing: the 240 mm BraTS field of view resampled to ``size``, isotropic,
``(z, y, x) = (240 / size,) * 3`` mm (3.75 mm at size 64, 1.875 mm at 128).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from benchmark.data.case import DatasetInfo
from benchmark.data.phantoms import PhantomSource, common as C

INFO = DatasetInfo(
    name="phantom-brain", modality="MRI", channels=1,
    class_names=("background", "NCR", "ED", "ET"), n_annotators=1, stands_for="BraTS 2021",
    phantom=True, note="Synthetic single-channel FLAIR-like brain tumour slices standing in for BraTS 2021.",
    regions={"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)},   # BraTS's: whole tumour, tumour core, enhancing tumour
)
FOV = 240.0
N_SLICES = 3


def _subject(rng: np.random.Generator, sid: str, size: int):
    mm = 2.0 / FOV
    dz = FOV / size
    angle = rng.uniform(-0.2, 0.2)
    shift = rng.normal(0.0, 10.0 * mm, 2)
    head = (rng.uniform(0.72, 0.8), rng.uniform(0.58, 0.66))
    wm = 1.0
    ed = wm * rng.uniform(1.45, 1.8)
    val = dict(scalp=rng.uniform(0.6, 1.0), skull=0.08, csf=rng.uniform(0.1, 0.25), gm=wm * rng.uniform(1.05, 1.2),
               ed=ed, et=ed * rng.uniform(1.2, 1.4), ncr=ed * rng.uniform(0.45, 0.7))
    shapes = {k: C.wobble(rng, a, n) for k, a, n in (("head", 0.03, 4), ("wt", 0.22, 8), ("tc", 0.1, 5),
                                                     ("ncr", 0.12, 5), ("ventL", 0.1, 4), ("ventR", 0.1, 4))}
    # tumour centre inside one hemisphere, not touching the skull
    side = rng.choice([-1.0, 1.0])
    t_centre = np.array([rng.uniform(-0.35, 0.3), side * rng.uniform(0.1, 0.3)])
    r_wt = rng.uniform(28.0, 50.0) * mm
    r_tc = r_wt * rng.uniform(0.45, 0.7)
    r_ncr = r_tc * rng.uniform(0.4, 0.7) if rng.random() > 0.1 else 0.0
    t_z = rng.uniform(-0.5, 0.5) * dz * mm  # tumour centre offset from the middle slice
    push = -0.5 * r_wt * t_centre / np.linalg.norm(t_centre)  # ventricles pushed away from the tumour

    yy, xx = C.grid(size)
    c, s = np.cos(angle), np.sin(angle)
    yy, xx = c * yy - s * xx - shift[0], s * yy + c * xx - shift[1]
    ty, tx = C.warp(rng, yy, xx, 4.0 * mm, 0.12 * size)  # extra warp for the tumour only
    shape = (N_SLICES, size, size)
    folds = C.smooth_field(rng, shape, (1.0, 0.04 * size, 0.04 * size))
    texture = 1.0 + 0.05 * C.smooth_field(rng, shape, 1.0)
    tumour_tex = 1.0 + 0.08 * C.smooth_field(rng, shape, (1.0, 0.05 * size, 0.05 * size))
    bias = C.bias_field(rng, shape, rng.uniform(0.15, 0.3), (3.0, 0.35 * size, 0.35 * size))
    pv = 1.0 / size

    image = np.zeros(shape)
    label = np.zeros(shape, np.uint8)
    for z in range(N_SLICES):
        zc = (z - (N_SLICES - 1) / 2) * dz * mm  # slice height, grid units
        outer = C.blob(yy, xx, (0.0, 0.0), head, shape_fn=shapes["head"])
        brain = outer + 14.0 * mm  # scalp + skull + CSF take ~14 mm
        img = image[z]
        C.paint(img, outer, val["scalp"], pv)
        C.paint(img, outer + 5.0 * mm, val["skull"], pv)
        C.paint(img, outer + 11.0 * mm, val["csf"], pv)
        # cortical ribbon: grey matter within ~3-6 mm of the surface, sulci where the fold field peaks
        C.paint(img, brain, val["gm"], pv)
        C.paint(img, brain + (4.5 + 2.5 * folds[z]) * mm, wm, pv)
        C.paint(img, np.maximum(np.maximum(brain, -brain - 10.0 * mm), (1.5 - folds[z]) * 3.0 * mm), val["csf"], pv)
        for k, sx in (("ventL", -1.0), ("ventR", 1.0)):
            vc = np.array([-0.08, sx * 0.07]) + push
            C.paint(img, C.blob(yy, xx, vc, (0.15 - 0.1 * abs(zc), 0.045), sx * 0.3, shapes[k]), val["csf"], pv)

        shrink = np.sqrt(max(0.0, 1.0 - ((zc - t_z) / r_wt) ** 2))
        wt = C.blob(ty, tx, t_centre, (r_wt * shrink,) * 2, shape_fn=shapes["wt"])
        tc = C.blob(ty, tx, t_centre, (r_tc * shrink,) * 2, shape_fn=shapes["tc"])
        ncr = C.blob(ty, tx, t_centre, (max(r_ncr, 1e-3) * shrink,) * 2, shape_fn=shapes["ncr"])
        # nest the regions (NCR in TC in WT) and keep them inside the brain
        tc = np.maximum(tc, brain)
        wt = np.maximum(np.minimum(wt, tc), brain)
        ncr = np.maximum(ncr, tc + 2.0 * mm) if r_ncr > 0 else np.ones_like(tc)
        C.paint(img, wt, val["ed"] * tumour_tex[z], 2 * pv)
        C.paint(img, tc, val["et"] * tumour_tex[z], pv)
        C.paint(img, ncr, val["ncr"] * tumour_tex[z], pv)
        image[z] = ndimage.gaussian_filter(img * texture[z], 0.6) * bias[z]

        label[z][wt < 0] = 2
        label[z][tc < 0] = 3
        label[z][ncr < 0] = 1

    image = C.rician(rng, image, rng.uniform(0.035, 0.06) * wm)
    return [C.make_case(sid, image[:, None], label, (dz, dz, dz), has_ncr=bool(r_ncr > 0))]


def generate(seed: int, n_subjects: int, size: int = 64):
    """``n_subjects`` cases, each image ``(3, 1, size, size)`` and label ``(1, 3, size, size)``."""
    return C.generate(_subject, seed, n_subjects, size)


def source() -> PhantomSource:
    """This phantom as a dataset (the ``segbench.datasets`` entry point names this function)."""
    return PhantomSource(INFO, generate)
