"""Cine-MRI short-axis phantom standing in for ACDC (RV, myocardium, LV).

One case per subject: a stack of ``Z`` short-axis slices (Z drawn from 6..8), base
(z = 0) to apex. Image ``(Z, 1, size, size)`` float32 (bSSFP-like magnitude, blood
~1), label ``(1, Z, size, size)`` uint8 with 0 background, 1 RV cavity, 2 myocardium,
3 LV cavity (papillary muscles count as LV, as in ACDC).

Geometry: the LV cavity (base radius 20-27 mm at end-diastole; subjects drawn at
end-systole get 0.72x the radius and a 1.3x thicker wall) shrinks to ~20 % at the
apex inside a 6-9 mm myocardial ring; the RV cavity is a crescent 14-24 mm deep
wrapped around the septum that shrinks toward the apex and is gone in the last
slice. All contours carry random Fourier perturbations (~5 %), the whole anatomy a
smooth elastic warp (~3 mm), and each slice a small in-plane shift (+-2 mm,
breath-hold mismatch).

Nuisances: chest wall with bright subcutaneous fat, dark lungs, epicardial fat, a
bright descending aorta and a dark RV free wall that mimic the labelled classes;
papillary muscles as dark spots inside the LV; blood-flow inhomogeneity (+-8 %);
tissue texture; partial-volume blur; multiplicative bias field (+-20-35 %); Rician
noise with sigma 6-12 % of the blood signal. Per-subject contrast varies
(myocardium 25-42 % of blood).

Spacing ``(z, y, x)``: slice spacing 6.5-10 mm; in-plane the field of view is
250-320 mm, so ``y = x = FOV / size`` (about 4.4 mm at size 64, 2.2 mm at 128).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from benchmark.data.case import DatasetInfo
from benchmark.data.phantoms import PhantomSource, common as C

INFO = DatasetInfo(
    name="phantom-cardiac", modality="MRI", channels=1,
    class_names=("background", "RV", "Myo", "LV"), n_annotators=1, stands_for="ACDC",
    phantom=True, note="Synthetic cine-MRI short-axis stacks standing in for ACDC.",
)


def _subject(rng: np.random.Generator, sid: str, size: int):
    fov = rng.uniform(250.0, 320.0)
    mm = 2.0 / fov  # grid units per mm
    n_z = int(rng.integers(6, 9))
    dz = rng.uniform(6.5, 10.0)
    systole = rng.random() < 0.5
    r_lv = rng.uniform(20.0, 27.0) * (0.72 if systole else 1.0) * mm
    wall = rng.uniform(6.0, 9.0) * (1.3 if systole else 1.0) * mm
    centre = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.05, 0.15)])
    rv_dir = np.pi + rng.uniform(0.05, 0.5)  # RV lies to the image left, slightly anterior
    rv_depth = rng.uniform(14.0, 24.0) * mm  # RV cavity thickness beside the septum at the base
    body = (rng.uniform(0.62, 0.78), rng.uniform(0.85, 0.97))
    # intensities relative to blood ~ 1
    val = dict(blood=rng.uniform(0.85, 1.0), myo=rng.uniform(0.25, 0.42), fat=rng.uniform(0.65, 0.9),
               muscle=rng.uniform(0.3, 0.45), lung=rng.uniform(0.03, 0.1), liver=rng.uniform(0.35, 0.5))
    noise = rng.uniform(0.06, 0.12)
    shapes = {k: C.wobble(rng, 0.05) for k in ("endo", "epi", "rv", "lungL", "lungR", "body", "liver")}
    papillary = rng.uniform(0, 2 * np.pi, 2)

    yy, xx = C.grid(size)
    yy, xx = C.warp(rng, yy, xx, 3.0 * mm, 0.25 * size)
    vol_shape = (n_z, size, size)
    texture = 1.0 + 0.12 * C.smooth_field(rng, vol_shape, (0.5, 1.2, 1.2))
    flow = 1.0 + 0.08 * C.smooth_field(rng, vol_shape, (1.0, 0.1 * size, 0.1 * size))
    bias = C.bias_field(rng, vol_shape, rng.uniform(0.2, 0.35), (4.0, 0.3 * size, 0.3 * size))
    pv = 0.5 * 2.0 / size  # partial-volume edge width: half a pixel

    image = np.empty(vol_shape)
    label = np.zeros(vol_shape, np.uint8)
    for z in range(n_z):
        t = z / (n_z - 1)  # 0 = base, 1 = apex
        c = centre + rng.normal(0.0, 2.0 * mm, 2) + np.array([0.0, 0.04 * t])
        r_endo = r_lv * (1.0 - 0.8 * t ** 1.6)
        r_epi = r_endo + wall * (1.0 - 0.25 * t)
        rv_w = rv_depth * max(0.0, 1.0 - t ** 2.5) * (0.8 if systole else 1.0)
        endo = C.blob(yy, xx, c, (r_endo, r_endo), shape_fn=shapes["endo"])
        epi = C.blob(yy, xx, c, (r_epi, r_epi), shape_fn=shapes["epi"])
        img = np.zeros((size, size))

        def paint(sdf, value):
            C.paint(img, sdf, value, pv)

        body_sdf = C.blob(yy, xx, (0.05, 0.0), body, shape_fn=shapes["body"])
        paint(body_sdf, val["fat"])
        paint(body_sdf + rng.uniform(10, 18) * mm, val["muscle"])
        paint(C.blob(yy, xx, (0.35 + 0.2 * t, -0.35), (0.35, 0.45), 0.3, shapes["liver"]), val["liver"])
        # RV: an ellipse reaching rv_w beyond the septal epicardium; its cavity is the part
        # outside the epicardium, so it wraps the septum as a crescent
        b = 0.8 * r_epi + 0.5 * rv_w
        rv_c = c + (r_epi + rv_w - b) * np.array([np.sin(rv_dir), np.cos(rv_dir)])
        rv_ell = C.blob(yy, xx, rv_c, (1.3 * r_epi + 0.6 * rv_w, b), rv_dir, shapes["rv"])
        rv = np.maximum(rv_ell, -epi) if rv_w > 1.5 * mm else np.ones_like(epi)
        heart = np.minimum(epi, rv_ell - 3 * mm)
        for side, key in ((-1, "lungR"), (1, "lungL")):
            lung = C.blob(yy, xx, (-0.05, side * 0.48), (0.5 - 0.1 * t, 0.32), -0.2 * side, shapes[key])
            paint(np.maximum(lung, 4 * mm - heart), val["lung"])
        paint(C.blob(yy, xx, (0.5, 0.0), (0.09, 0.11)), val["muscle"] * 0.8)  # spine
        paint(C.blob(yy, xx, (0.32, 0.13), (12 * mm, 12 * mm)), val["blood"])  # descending aorta
        paint(heart - rng.uniform(2, 6) * mm, val["fat"] * 0.9)  # epicardial fat
        if rv_w > 0:
            paint(rv_ell - 3 * mm, val["myo"] * 1.1)  # RV free wall
            paint(rv, val["blood"] * 0.92)
        paint(epi, val["myo"])
        paint(endo, val["blood"])
        if 0.15 < t < 0.75:
            for a in papillary:
                pc = c + 0.7 * r_endo * np.array([np.sin(a), np.cos(a)])
                paint(C.blob(yy, xx, pc, (0.25 * r_endo, 0.25 * r_endo)), val["myo"])
        img *= texture[z] * np.where(np.minimum(endo, rv) < 0, flow[z], 1.0)
        image[z] = ndimage.gaussian_filter(img, 0.6) * bias[z]

        label[z][rv < 0] = 1
        label[z][(epi < 0) & (endo >= 0)] = 2
        label[z][endo < 0] = 3

    image = C.rician(rng, image, noise)
    return [C.make_case(sid, image[:, None], label, (dz, fov / size, fov / size),
                        phase="ES" if systole else "ED")]


def generate(seed: int, n_subjects: int, size: int = 64):
    """``n_subjects`` cases, each image ``(Z, 1, size, size)`` and label ``(1, Z, size, size)``, Z in 6..8."""
    return C.generate(_subject, seed, n_subjects, size)


def source() -> PhantomSource:
    """This phantom as a dataset (the ``segbench.datasets`` entry point names this function)."""
    return PhantomSource(INFO, generate)
