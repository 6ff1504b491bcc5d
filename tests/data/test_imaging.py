"""The resampling every converter shares: antialiased images, nearest-neighbour labels, rescaled spacing."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark.data.imaging import resize_image, resize_label, resized_spacing


def test_labels_keep_their_values_and_take_the_nearest_pixel():
    label = np.arange(6 * 4, dtype=np.uint8).reshape(1, 1, 6, 4)
    out = resize_label(label, 2)
    assert out.dtype == np.uint8 and out.shape == (1, 1, 2, 2)
    # rows 6 -> 2 take source rows 1 and 4 (centres 1.5 and 4.5); columns 4 -> 2 take 1 and 3
    assert out[0, 0].tolist() == [[label[0, 0, 1, 1], label[0, 0, 1, 3]], [label[0, 0, 4, 1], label[0, 0, 4, 3]]]
    assert set(np.unique(resize_label(np.array([[0, 3], [2, 1]]), 5))) == {0, 1, 2, 3}


def test_images_are_averaged_when_shrunk_and_keep_constants():
    assert np.allclose(resize_image(np.full((2, 3, 17, 9), 7.5), 8), 7.5)
    stripes = np.tile([0.0, 1.0], (4, 32))            # 4 x 64, alternating columns
    out = resize_image(stripes, 8)
    assert out.shape == (8, 8) and np.allclose(out, 0.5, atol=0.07)   # no aliasing into black or white columns


def test_spacing_follows_the_resize():
    assert resized_spacing((10.0, 1.5, 1.25), (256, 216), 256) == pytest.approx((10.0, 1.5, 1.25 * 216 / 256))
