"""Apical echocardiography phantom standing in for CAMUS (LV, myocardium, LA).

Two cases per subject, the apical two- and four-chamber views (``case_id =
<subject>_2CH / _4CH``), each at end-diastole or end-systole (drawn per view).
Image ``(1, 1, size, size)`` float32 log-compressed B-mode in [0, 1] inside a fan,
0 outside; label ``(1, 1, size, size)`` uint8 in CAMUS order: 0 background, 1 LV
cavity, 2 LV myocardium, 3 left atrium.

Geometry: a 70-85 deg sector from a probe at the top centre, 140-170 mm deep. The
LV is a bullet (length 65-90 mm, base half-width 20-27 mm; ES 15 % shorter and 25 %
narrower) below the apex, tilted +-9 deg, with an 8-12 mm myocardial wall that ends
at the mitral plane; the LA is an ellipse below that plane. The 4-chamber view adds
an unlabelled RV and RA to the left. Contours carry ~5 % Fourier perturbations.

Nuisances: fully developed speckle (Rayleigh amplitude, grain ~1 x 2 px at size
64, scaled with size), log compression (dynamic-range gain 20-80); depth
attenuation (far field 45-75 % of near field), lateral gain loss at the fan edges;
echo dropout where the wall runs along the beam and in random patches (signal down
to 20 %); near-field clutter haze over the apex; bright pericardium; tissue
texture (+-30 %); electronic noise floor.

Spacing: ``(1, d, d)`` with ``d = depth / size`` (about 2.2-2.7 mm at size 64).
"""
from __future__ import annotations

import numpy as np

from benchmark.data.case import DatasetInfo
from benchmark.data.phantoms import PhantomSource, common as C

INFO = DatasetInfo(
    name="phantom-echo", modality="ultrasound", channels=1,
    class_names=("background", "LV", "Myo", "LA"), n_annotators=1, stands_for="CAMUS",
    phantom=True, note="Synthetic apical 2- and 4-chamber B-mode views standing in for CAMUS.",
)


def _view(rng: np.random.Generator, size: int, depth: float, lv: dict, four_chamber: bool):
    mm = 2.0 / depth
    yy, xx = C.grid(size)
    apex = np.array([-1.0, 0.0])  # the probe, at the top centre
    r, theta = np.hypot(yy - apex[0], xx - apex[1]), np.arctan2(xx - apex[1], yy - apex[0])
    half = np.deg2rad(rng.uniform(35, 42.5))
    systole = rng.random() < 0.5
    length = lv["length"] * (0.85 if systole else 1.0) * rng.uniform(0.95, 1.05) * mm
    width = lv["width"] * (0.75 if systole else 1.0) * rng.uniform(0.9, 1.1) * mm
    wall = lv["wall"] * (1.3 if systole else 1.0) * mm
    tilt = rng.normal(0.0, 0.08) + (0.12 if four_chamber else 0.0)  # the 4CH view shows the LV right of centre
    axis = np.array([np.cos(tilt), np.sin(tilt)])  # LV long axis, pointing away from the probe
    endo_apex = apex + (lv["apex_depth"] + wall) * mm * axis
    centre = endo_apex + length * axis  # mitral-plane centre
    below = (yy - centre[0]) * axis[0] + (xx - centre[1]) * axis[1]  # > 0 past the mitral plane
    endo = np.maximum(C.blob(yy, xx, centre, (length, width), -tilt, lv["endo"]), below)
    epi = np.maximum(C.blob(yy, xx, centre, (length + wall, width + wall), -tilt, lv["epi"]), below)
    la_len, la_w = lv["la"][0] * mm, lv["la"][1] * mm
    la = np.maximum(C.blob(yy, xx, centre + 0.9 * la_len * axis, (la_len, la_w), -tilt, lv["la_shape"]),
                    -below)

    tissue = 0.22 * np.exp(0.3 * C.smooth_field(rng, (size, size), 0.08 * size))
    amp = tissue.copy()
    pv = 1.0 / size
    if four_chamber:  # unlabelled right heart, left of the LV
        side = np.array([-axis[1], axis[0]]) * -(width + wall + 16 * mm)
        rv = C.blob(yy, xx, centre + side - 0.4 * length * axis, (0.8 * length, 0.8 * width), -tilt - 0.15)
        ra = C.blob(yy, xx, centre + side + 0.8 * la_len * axis, (0.9 * la_len, 0.9 * la_w), -tilt)
        C.paint(amp, np.minimum(rv, ra) - wall * 0.6, 0.5, pv)
        C.paint(amp, np.maximum(np.minimum(rv, ra), -epi), 0.03, pv)
    C.paint(amp, epi - 3 * mm, 0.9, pv)  # pericardium
    C.paint(amp, la - 2 * mm, 0.45, pv)
    C.paint(amp, epi, 0.6 * tissue / 0.22, pv)
    C.paint(amp, np.minimum(endo, la), 0.03, pv)
    # walls reflect weakly where they run along the beam: scale by |cos| between beam and wall normal
    gy, gx = np.gradient(epi)
    cosine = np.abs(gy * np.cos(theta) + gx * np.sin(theta)) / (np.hypot(gy, gx) + 1e-9)
    walls = (np.minimum(epi - 3 * mm, la - 2 * mm) < 0) & (endo > 0) & (la > 0)
    amp = np.where(walls, amp * (0.25 + 0.75 * cosine), amp)
    amp *= np.where(C.smooth_field(rng, (size, size), 0.08 * size) > 1.0, 0.2, 1.0)
    clutter = C.smooth_mask(r - rng.uniform(25, 40) * mm, 6 * mm)  # near-field haze over the apex
    amp += 0.25 * clutter * np.exp(0.5 * C.smooth_field(rng, (size, size), 2))

    amp *= np.exp(-rng.uniform(0.3, 0.8) * r / 2.0) * (1.0 - 0.4 * (theta / half) ** 4)
    grain = size / 64.0
    amp *= C.speckle(rng, (size, size), (0.6 * grain, 1.2 * grain))
    amp = np.abs(amp + 0.01 * (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape)))
    gain = rng.uniform(20, 80)
    img = np.log1p(gain * amp) / np.log1p(gain * 1.5)
    # a one-pixel linear ramp at the fan edge, exactly zero outside it
    sector = np.clip(0.5 - np.maximum(np.abs(theta) * r - half * r, r - 1.9) * size / 2, 0, 1) * (r > 0.04)
    img = np.clip(img, 0, 1) * sector

    label = np.zeros((size, size), np.uint8)
    label[(epi < 0) & (endo >= 0)] = 2
    label[endo < 0] = 1
    label[la < 0] = 3
    label[sector < 0.5] = 0
    return img, label, systole


def _subject(rng: np.random.Generator, sid: str, size: int):
    depth = rng.uniform(140.0, 170.0)
    lv = dict(length=rng.uniform(65, 90), width=rng.uniform(20, 27), wall=rng.uniform(8, 12),
              apex_depth=rng.uniform(8, 20), la=(rng.uniform(20, 28), rng.uniform(16, 22)),
              endo=C.wobble(rng, 0.05), epi=C.wobble(rng, 0.05), la_shape=C.wobble(rng, 0.05))
    cases = []
    for view, four in (("2CH", False), ("4CH", True)):
        img, label, systole = _view(rng, size, depth, lv, four)
        cases.append(C.make_case(sid, img[None, None], label[None], (1.0, depth / size, depth / size),
                                 suffix=view, view=view, phase="ES" if systole else "ED"))
    return cases


def generate(seed: int, n_subjects: int, size: int = 64):
    """``2 * n_subjects`` cases (2CH, 4CH), each image ``(1, 1, size, size)``, label ``(1, 1, size, size)``."""
    return C.generate(_subject, seed, n_subjects, size)


def source() -> PhantomSource:
    """This phantom as a dataset (the ``segbench.datasets`` entry point names this function)."""
    return PhantomSource(INFO, generate)
