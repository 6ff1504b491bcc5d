"""Building blocks shared by the phantom generators (numpy and scipy only).

Geometry lives on a normalised grid, ``y`` and ``x`` in ``[-1, 1]`` across the
field of view, so a phantom looks the same at any ``size``; only pixel-level
noise and texture are tied to the pixel grid. Every random draw goes through a
``numpy.random.Generator`` passed in by the caller.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage
from scipy.special import expit as sigmoid

from benchmark.data.case import Case


def subject_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for one subject: depends on (seed, index) only, not on how many subjects."""
    return np.random.default_rng([seed, index])


def generate(subject: Callable, seed: int, n_subjects: int, size: int) -> list[Case]:
    """Call ``subject(rng, subject_id, size) -> list[Case]`` for each subject and concatenate."""
    return [case for i in range(n_subjects)
            for case in subject(subject_rng(seed, i), f"subj{i:04d}", size)]


def make_case(subject_id: str, image: np.ndarray, label: np.ndarray, spacing,
              suffix: str = "", **extra) -> Case:
    """Pack arrays into a :class:`Case`.

    ``image`` is ``(Z, C, H, W)``; ``label`` is ``(R, Z, H, W)`` or ``(Z, H, W)`` for one rater.
    """
    label = np.asarray(label, dtype=np.uint8)
    if label.ndim == 3:
        label = label[None]
    return Case(case_id=f"{subject_id}_{suffix}" if suffix else subject_id, subject_id=subject_id,
                image=np.ascontiguousarray(image, dtype=np.float32), label=np.ascontiguousarray(label),
                spacing=tuple(float(s) for s in spacing), extra=extra)


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(yy, xx)``, each ``(size, size)`` in ``[-1, 1]``."""
    c = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(c, c, indexing="ij")


def smooth_field(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ~``sigma`` pixels.

    ``sigma`` is a scalar or one value per axis. White noise on a lattice of knots
    ``sigma`` apart (extending ``2 sigma`` past the edges) is smoothed by a separable
    Gaussian kernel applied as one small matrix product per axis, which stays cheap
    however long the correlation length.
    """
    shape = tuple(shape)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=float), (len(shape),))
    mats = []
    for n, s in zip(shape, sigma):
        knots = np.arange(-2.0 * s, n + 2.0 * s, max(s, 0.5))
        mats.append(np.exp(-0.5 * ((np.arange(n)[:, None] + 0.5 - knots) / s) ** 2))
    f = rng.standard_normal([m.shape[1] for m in mats])
    for axis, m in enumerate(mats):
        # einsum rather than tensordot: multithreaded BLAS is slower for these small products
        f = np.moveaxis(np.einsum("...i,ai->...a", np.moveaxis(f, axis, -1), m), -1, axis)
    f -= f.mean()
    return f / (f.std() + 1e-8)


def bias_field(rng: np.random.Generator, shape, strength: float, sigma) -> np.ndarray:
    """Multiplicative smooth gain ``exp(strength * field)``; strength 0.2 is about +-20 %."""
    return np.exp(strength * smooth_field(rng, shape, sigma))


def wobble(rng: np.random.Generator, amp: float, n: int = 5) -> Callable[[np.ndarray], np.ndarray]:
    """Random smooth radius factor ``r(theta) = 1 + sum_k a_k cos(k theta + phi_k)``, k = 2..n+1.

    ``a_k ~ N(0, amp / k)``, so ``amp`` is roughly the relative radial irregularity.
    The returned function looks ``theta`` up in a 1024-entry table (far cheaper than
    ``cos`` per pixel; the table step of 0.35 deg is invisible at these sizes).
    """
    k = np.arange(2, n + 2)
    a = amp * rng.standard_normal(n) / k
    phase = rng.uniform(0.0, 2.0 * np.pi, n)
    steps = 1024
    t = np.arange(steps) * (2.0 * np.pi / steps)
    table = 1.0 + np.cos(np.multiply.outer(t, k) + phase) @ a
    return lambda theta: table[np.round(theta * (steps / (2.0 * np.pi))).astype(np.intp) % steps]


def blob(yy, xx, centre, radii, angle: float = 0.0, shape_fn=None) -> np.ndarray:
    """Approximate signed distance (grid units, negative inside) to a perturbed ellipse.

    ``radii = (ry, rx)`` are the semi-axes before rotation by ``angle`` (radians);
    ``shape_fn`` (e.g. from :func:`wobble`) scales the radius as a function of angle.
    """
    dy, dx = yy - centre[0], xx - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    u, v = (c * dy - s * dx) / radii[0], (s * dy + c * dx) / radii[1]
    rho = np.hypot(u, v)
    scale = 1.0 if shape_fn is None else shape_fn(np.arctan2(u, v))
    return (rho / scale - 1.0) * min(radii)


def warp(rng: np.random.Generator, yy, xx, amp: float, sigma: float):
    """Smoothly displaced coordinates: ``amp`` grid units of displacement, correlation ``sigma`` px."""
    return (yy + amp * smooth_field(rng, yy.shape, sigma),
            xx + amp * smooth_field(rng, xx.shape, sigma))


def rician(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude-MRI noise: ``|img + n_re + i n_im|`` with ``n ~ N(0, sigma^2)``."""
    return np.hypot(img + sigma * rng.standard_normal(img.shape), sigma * rng.standard_normal(img.shape))


def speckle(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """Fully developed speckle: Rayleigh amplitude with mean-square 1, grain size ``sigma`` px.

    The magnitude of low-pass filtered complex white noise; ``sigma`` per axis gives
    the elongated grain of an ultrasound point-spread function.
    """
    re = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    im = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    amp = np.hypot(re, im)
    return amp / np.sqrt(np.mean(amp ** 2))


def smooth_mask(sdf: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume occupancy in [0, 1] of the inside of a signed distance, edge ``width`` grid units."""
    return sigmoid(-sdf / width)


def paint(img: np.ndarray, sdf: np.ndarray, value, width: float) -> None:
    """Composite ``value`` over ``img`` in place where ``sdf < 0`` (painter's algorithm, soft edge)."""
    img += smooth_mask(sdf, width) * (value - img)
