"""The phantom generators: determinism, the case contract, label content, raters; each registered through the
``segbench.datasets`` entry-point group as a :class:`PhantomSource`."""
from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
from scipy import ndimage

from benchmark.data.phantoms import PhantomSource
from benchmark.data.registry import available_datasets, dataset_source

PHANTOMS: dict[str, PhantomSource] = {n: s for n in available_datasets()
                                      if isinstance(s := dataset_source(n), PhantomSource)}
NAMES = sorted(PHANTOMS)
N_SET = 40  # subjects in the shared set used for content checks


@functools.lru_cache(maxsize=None)
def shared_set(name: str):
    """40 subjects at size 64, generated once per test session."""
    return PHANTOMS[name].generate(0, N_SET, 64)


def assert_same_cases(a, b):
    assert [c.case_id for c in a] == [c.case_id for c in b]
    for x, y in zip(a, b):
        assert x.subject_id == y.subject_id and x.spacing == y.spacing
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.label, y.label)


def test_registry():
    assert NAMES == sorted(["phantom-cardiac", "phantom-brain", "phantom-fundus", "phantom-gland",
                            "phantom-echo", "phantom-lesion"])
    for name, source in PHANTOMS.items():
        assert source.info.name == name and source.info.phantom and source.info.stands_for
        assert source.info.class_names[0] == "background"
        assert source.generate.__module__ == f"benchmark.data.phantoms.{name.removeprefix('phantom-')}"
    assert PHANTOMS["phantom-lesion"].info.n_annotators == 4


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_per_seed(name):
    gen = PHANTOMS[name].generate
    assert_same_cases(gen(3, 2, 64), gen(3, 2, 64))
    other = gen(4, 2, 64)
    assert not np.array_equal(gen(3, 2, 64)[0].image, other[0].image)


@pytest.mark.parametrize("name", NAMES)
def test_subject_independent_of_count(name):
    gen = PHANTOMS[name].generate
    few, many = gen(5, 3, 64), gen(5, 5, 64)
    assert len(many) == len(few) * 5 // 3
    assert_same_cases(few, many[:len(few)])


@pytest.mark.parametrize("name,size", list(itertools.product(NAMES, [64, 96, 128])))
def test_case_contract(name, size):
    info = PHANTOMS[name].info
    cases = shared_set(name)[:6] if size == 64 else PHANTOMS[name].generate(1, 2, size)
    assert len({c.case_id for c in cases}) == len(cases)
    for c in cases:
        z = c.image.shape[0]
        assert c.image.dtype == np.float32 and c.image.shape == (z, info.channels, size, size)
        assert np.isfinite(c.image).all() and c.image.std() > 0
        assert c.label.dtype == np.uint8 and c.label.shape == (info.n_annotators, z, size, size)
        assert c.label.max() < info.num_classes
        assert len(c.spacing) == 3 and all(isinstance(s, float) and s > 0 for s in c.spacing)
        assert c.case_id.startswith(c.subject_id)


@pytest.mark.parametrize("name", NAMES)
def test_class_presence(name):
    cases = shared_set(name)
    info = PHANTOMS[name].info
    present = np.array([[np.any(c.label == k) for k in range(1, info.num_classes)] for c in cases])
    assert present.mean(0).min() > 0.5, dict(zip(info.class_names[1:], present.mean(0)))
    assert len({c.subject_id for c in cases}) == N_SET


def test_cardiac_shrinks_toward_apex():
    for c in shared_set("phantom-cardiac"):
        assert 6 <= c.image.shape[0] <= 8
        area = (c.label[0] > 0).sum(axis=(1, 2))
        assert area[0] > area[-1]
        assert not (c.label[0, -1] == 1).any()  # no RV in the apical slice
        assert c.spacing[0] >= 5.0 and 250.0 <= c.spacing[1] * 64 <= 320.0  # thick slices, chest-wide view


def test_fundus_cup_inside_disc():
    for c in shared_set("phantom-fundus"):
        cup, disc = c.label[0, 0] == 2, c.label[0, 0] == 1
        assert cup.any() and disc.any()
        assert not (ndimage.binary_dilation(cup) & (c.label[0, 0] == 0)).any()
        assert cup.sum() < (cup | disc).sum()


def test_gland_images_per_subject():
    cases = shared_set("phantom-gland")
    assert all(c.case_id != c.subject_id for c in cases)
    per_subject = {}
    for c in cases:
        per_subject.setdefault(c.subject_id, []).append(c)
    assert min(len(v) for v in per_subject.values()) >= 2
    first = per_subject["subj0000"]
    assert not np.array_equal(first[0].image, first[1].image)


def test_echo_outside_sector_is_black():
    for c in shared_set("phantom-echo"):
        img = c.image[0, 0]
        assert img[0, 0] == 0 and img[0, -1] == 0 and img[img.shape[0] // 2, img.shape[1] // 2] > 0


def test_lesion_raters():
    cases = shared_set("phantom-lesion")
    masks = [c.label[:, 0].astype(bool) for c in cases]  # (4, H, W) each
    empty = np.array([[not m.any() for m in r] for r in masks])
    assert 0 < empty.all(1).sum() < 0.3 * len(cases)  # some subjects without a lesion
    partly = empty.any(1) & ~empty.all(1)
    assert partly.any()  # some rater misses a lesion the others mark
    ious = [(a & b).sum() / (a | b).sum() for r in masks for a, b in itertools.combinations(r, 2)
            if a.any() and b.any()]
    assert 0.5 < np.mean(ious) < 0.95
    assert any(not np.array_equal(a, b) for r in masks for a, b in itertools.combinations(r, 2))
