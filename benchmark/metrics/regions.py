"""Evaluation regions: named unions of label classes, scored as binary structures.

A dataset may declare regions (``DatasetInfo.regions``) where its papers score a structure that spans
several of its disjoint classes: REFUGE's whole optic disc is rim + cup, BraTS's whole tumour is
NCR + ED + ET. A region's map is 1 where a label map holds any of its classes and 0 elsewhere, so every
metric of a two-class problem applies to it unchanged.
"""
from __future__ import annotations

import numpy as np

__all__ = ["region_key", "region_map"]


def region_key(name: str) -> str:
    """A region's name in the evaluation's outputs, distinct from any class name: ``"region:disc"``."""
    return f"region:{name}"


def region_map(labels: np.ndarray, classes: tuple[int, ...]) -> np.ndarray:
    """``labels`` (integer label maps, any shape) -> uint8 of the same shape: 1 inside the union of ``classes``."""
    return np.isin(labels, classes).astype(np.uint8)
