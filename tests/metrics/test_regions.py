"""Evaluation regions (benchmark/metrics/regions.py): a region is the union of its classes."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark.metrics import case_metrics
from benchmark.metrics.multirater import set_metrics
from benchmark.metrics.regions import region_key, region_map


def test_a_region_map_is_the_union_of_its_classes():
    labels = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)
    np.testing.assert_array_equal(region_map(labels, (1, 3)), [[0, 1, 0, 1], [1, 0, 1, 0]])
    assert region_map(labels, (2,)).dtype == np.uint8 and region_key("disc") == "region:disc"


def test_the_dice_of_a_union_by_hand():
    # rim 1, cup 2 on a 1x3x4 image; the whole disc is {1, 2}
    pred = np.array([[[0, 1, 1, 0],
                      [1, 2, 2, 0],
                      [0, 0, 0, 0]]], np.uint8)
    ref = np.array([[[0, 1, 1, 1],
                     [0, 2, 1, 0],
                     [0, 1, 0, 0]]], np.uint8)
    # disc: pred 5 pixels, ref 6, overlap (0,1) (0,2) (1,1) (1,2) = 4 -> Dice 8/11, IoU 4/7
    disc = case_metrics(region_map(pred, (1, 2)), region_map(ref, (1, 2)), (1.0, 1.0, 1.0), 2)
    assert disc["dice"] == [pytest.approx(8 / 11)] and disc["iou"] == [pytest.approx(4 / 7)]
    # the classes alone say otherwise: rim Dice 2*2/(3+5) = 0.5, cup 2*1/(2+1) = 2/3
    classes = case_metrics(pred, ref, (1.0, 1.0, 1.0), 3)
    assert classes["dice"] == [pytest.approx(0.5), pytest.approx(2 / 3)]


def test_set_metrics_of_a_region_are_those_of_its_binary_maps():
    rng = np.random.default_rng(0)
    samples, raters = rng.integers(0, 3, (4, 1, 8, 8)), rng.integers(0, 3, (3, 1, 8, 8))
    ours = set_metrics(region_map(samples, (1, 2)), region_map(raters, (1, 2)), 2)
    by_hand = set_metrics((samples > 0).astype(np.uint8), (raters > 0).astype(np.uint8), 2)
    assert ours == by_hand
