"""Resizing slices to the profile's square size: images antialiased, labels nearest-neighbour.

Every real dataset is "uniformly resized to 256x256" (MedFlowSeg, section 4.2) by
these two functions, so all converters resample the same way. The in-plane
spacing is rescaled with the image, so distances in mm stay true after a
non-square image is stretched to a square.
"""
from __future__ import annotations

import numpy as np


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` linear interpolation, widened to a triangle (area-like) filter when shrinking.

    Pixel centres are aligned (half-pixel convention); same weights as PIL's
    and torch's antialiased bilinear resize.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    centre = (np.arange(n_out) + 0.5) * scale - 0.5
    w = np.clip(1.0 - np.abs(np.arange(n_in)[None, :] - centre[:, None]) / support, 0.0, None)
    return w / w.sum(axis=1, keepdims=True)


def nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output pixel for nearest-neighbour resizing (pixel centres aligned)."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """``(..., H, W)`` float -> ``(..., size, size)`` float32, antialiased bilinear."""
    h, w = image.shape[-2:]
    a_row, a_col = resize_matrix(h, size), resize_matrix(w, size)
    return (a_row @ image.astype(np.float64) @ a_col.T).astype(np.float32)


def resize_label(label: np.ndarray, size: int) -> np.ndarray:
    """``(..., H, W)`` integer labels -> ``(..., size, size)`` uint8, nearest neighbour."""
    h, w = label.shape[-2:]
    return np.ascontiguousarray(label[..., nearest_index(h, size)[:, None], nearest_index(w, size)[None, :]],
                                dtype=np.uint8)


def resized_spacing(spacing: tuple[float, float, float], shape: tuple[int, int], size: int
                    ) -> tuple[float, float, float]:
    """``(z, y, x)`` mm after resizing an ``(H, W)`` slice to ``size x size``."""
    z, y, x = spacing
    h, w = shape
    return float(z), float(y) * h / size, float(x) * w / size
