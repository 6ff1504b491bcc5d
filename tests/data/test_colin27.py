"""Tests for the Colin27 + AAL source: class mapping, load on a synthetic pair, split, fetch."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from benchmark.data import colin27
from benchmark.data.case import Case

# Real lines of aal.nii.txt (format "<id> <Name> <code>", CRLF, trailing blank line).
AAL_TXT = ("1 Precentral_L 2001\r\n2 Precentral_R 2002\r\n3 Frontal_Sup_L 2101\r\n"
           "21 Olfactory_L 2501\r\n29 Insula_L 3001\r\n33 Cingulum_Mid_L 4011\r\n"
           "35 Cingulum_Post_L 4021\r\n43 Calcarine_L 5001\r\n55 Fusiform_L 5401\r\n"
           "77 Thalamus_L 7101\r\n97 Cerebelum_4_5_L 9031\r\n110 Vermis_3 9110\r\n\r\n")
FRONTAL, PARIETAL, TEMPORAL, OCCIPITAL, SUBCORTICAL, CEREBELLUM = range(1, 7)


def test_class_names():
    assert colin27.INFO.class_names == ("background", "frontal", "parietal_central", "temporal",
                                        "occipital", "subcortical", "cerebellum")
    assert not colin27.INFO.phantom and "ONE subject" in colin27.INFO.note


def test_mapping_from_names():
    assert colin27.coarse_mapping(AAL_TXT) == {
        1: PARIETAL, 2: PARIETAL, 3: FRONTAL, 21: FRONTAL, 29: TEMPORAL, 33: FRONTAL,
        35: PARIETAL, 43: OCCIPITAL, 55: TEMPORAL, 77: SUBCORTICAL, 97: CEREBELLUM, 110: CEREBELLUM}


def test_unmatched_name_raises():
    with pytest.raises(ValueError, match="Brainstem_L"):
        colin27.coarse_mapping(AAL_TXT + "117 Brainstem_L 9999\r\n")
    with pytest.raises(ValueError, match="line 2"):
        colin27.parse_region_names("1 Precentral_L 2001\nPrecentral_R 2002\n")


# ------------------------------------------------------------------ synthetic NIfTI pair
LABELLED = [k for k in range(1, 15) if k != 6]  # axial slices 0, 6, 15 carry no label
SPACING_XYZ = (0.9, 1.1, 2.0)


def _write_pair(d: Path, lab_spacing=SPACING_XYZ) -> None:
    """20 x 24 x 16 (x, y, z) pair with the real files' direction (voxel axes toward R, A, S)."""
    ids = np.zeros((16, 24, 20), np.uint8)          # numpy (z, y, x) = (k, j, i)
    for k in LABELLED:
        ids[k, 2:12, 3:17] = 43                      # posterior half (small j): Calcarine_L
        ids[k, 12:22, 3:10] = 3                      # anterior, patient left (small i): Frontal_Sup_L
        ids[k, 12:22, 10:17] = 2                     # anterior, patient right: Precentral_R
    ids[1:4, 10:14, 8:12] = 77                       # inferior slices only: Thalamus_L
    ids[11:14, 10:14, 8:12] = 110                    # superior slices only: Vermis_3
    img = np.random.default_rng(0).uniform(50, 150, ids.shape).astype(np.float32)
    for arr, name, sp in ((img, "ch2.nii.gz", SPACING_XYZ), (ids, "aal.nii.gz", lab_spacing)):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing(sp)
        im.SetOrigin((10.0, 12.0, -5.0))
        im.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
        sitk.WriteImage(im, str(d / name))
    (d / "aal.nii.txt").write_text(AAL_TXT, newline="")


def test_load_synthetic(tmp_path):
    _write_pair(tmp_path)
    size = 12
    cases = colin27.load(tmp_path, size, block=3, gap=1)
    # slice 6 is unlabelled, so the second block starts at 7, not 5
    assert [c.extra["slices"] for c in cases] == [(1, 2, 3), (7, 8, 9), (11, 12, 13)]
    seen: set[int] = set()
    for k, c in enumerate(cases):
        assert c.case_id == c.subject_id == f"colin27-block{k:02d}"
        assert c.image.shape == (3, 1, size, size) and c.image.dtype == np.float32
        assert c.label.shape == (1, 3, size, size) and c.label.dtype == np.uint8
        assert 50 <= c.image.min() and c.image.max() <= 150 and 90 < c.image.mean() < 110  # raw values
        side = c.extra["crop"][2]
        assert c.spacing == pytest.approx((2.0, 1.1 * side / size, 0.9 * side / size))  # (z, y, x)
        assert set(np.unique(c.label)) <= {0, FRONTAL, PARIETAL, OCCIPITAL, SUBCORTICAL, CEREBELLUM}
        assert c.label.max() < colin27.INFO.num_classes
        assert not seen & set(c.extra["slices"])
        seen |= set(c.extra["slices"])
    for a, b in zip(cases, cases[1:]):
        assert b.extra["slices"][0] - a.extra["slices"][-1] - 1 >= 1   # >= gap slices between blocks
    # orientation: block00 is inferior, anterior is up, patient left on the image right
    assert SUBCORTICAL in cases[0].label and CEREBELLUM not in cases[0].label
    assert CEREBELLUM in cases[-1].label
    lab = cases[1].label[0]
    rows = {k: np.nonzero(lab == k)[1].mean() for k in (FRONTAL, OCCIPITAL)}
    cols = {k: np.nonzero(lab == k)[2].mean() for k in (FRONTAL, PARIETAL)}
    assert rows[FRONTAL] < rows[OCCIPITAL]
    assert cols[FRONTAL] > cols[PARIETAL]


def test_load_rejects_different_grids(tmp_path):
    _write_pair(tmp_path, lab_spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="same grid"):
        colin27.load(tmp_path, 12, block=3, gap=1)


# ------------------------------------------------------------------ split
def _fake_cases(n: int) -> list[Case]:
    z = np.zeros((1, 1, 2, 2), np.float32)
    return [Case(f"colin27-block{k:02d}", f"colin27-block{k:02d}", z, z.astype(np.uint8)[:, :1],
                 extra={"slices": tuple(range(12 * k, 12 * k + 8))}) for k in range(n)][::-1]


def test_split():
    cases = _fake_cases(12)
    for seed in range(5):
        s = colin27.split(cases, seed)
        assert s == colin27.split(cases, seed)
        assert set(s) == {c.subject_id for c in cases}
        assert Counter(s.values()) == {"train": 7, "val": 2, "test": 3}
        test_idx = sorted(int(k[-2:]) for k, v in s.items() if v == "test")
        assert [i // 4 for i in test_idx] == [0, 1, 2]  # one test block in each third of the brain
    assert len({tuple(sorted(colin27.split(cases, seed).items())) for seed in range(5)}) > 1
    small = colin27.split(_fake_cases(3), 0)
    assert sorted(small.values()) == ["test", "train", "val"]
    with pytest.raises(ValueError):
        colin27.split(_fake_cases(2), 0)


# ------------------------------------------------------------------ fetch
def test_fetch_real_and_load(tmp_path):
    """Needs the Debian registry (or mricron-data installed); runs in about 2 s."""
    dest = tmp_path / "colin27"
    prov = colin27.fetch(dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(colin27.FILES + ("provenance.json",))
    assert json.loads((dest / "provenance.json").read_text()) == prov
    assert prov["method"] in ("copy", "apt-get download") and prov["package"] == "mricron-data"
    if prov["method"] == "apt-get download":
        assert prov["version"]
    for f in colin27.FILES:
        assert prov["sha256"][f] == hashlib.sha256((dest / f).read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["colin27"]          # no temp folder left
    assert colin27.fetch(dest) == prov                                   # complete: reused

    mapping = colin27.coarse_mapping((dest / "aal.nii.txt").read_text())
    assert len(mapping) == 116 and set(mapping.values()) == set(range(1, 7))
    cases = colin27.load(dest, 64)
    assert len(cases) >= 10
    assert cases[0].spacing[0] == pytest.approx(1.0)
    assert CEREBELLUM in cases[0].label and CEREBELLUM not in cases[-1].label   # inferior first
    lab = np.concatenate([c.label[0] for c in cases])
    assert set(np.unique(lab)) == set(range(7))
    rows = {k: np.nonzero(lab == k)[1].mean() for k in (FRONTAL, OCCIPITAL)}
    assert rows[FRONTAL] < rows[OCCIPITAL]                                # anterior is up
    assert set(colin27.split(cases, 0).values()) == {"train", "val", "test"}


def test_fetch_without_apt_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(colin27, "SYSTEM_DIR", tmp_path / "no-such-dir")
    (tmp_path / "empty-bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    dest = tmp_path / "out" / "colin27"
    with pytest.raises(colin27.FetchError) as err:
        colin27.fetch(dest)
    msg = str(err.value)
    for needle in ("no-such-dir", "apt-get not found", "apt-get install mricron-data",
                   "apt-get download mricron-data && dpkg -x mricron-data_*.deb"):
        assert needle in msg
    assert not dest.exists() and list((tmp_path / "out").iterdir()) == []  # temp folder removed


def test_fetch_runs_apt_update_once_when_lists_missing(tmp_path, monkeypatch):
    """Fake apt-get that never finds the package: download, update -qq, download, then FetchError."""
    bin_dir, log = tmp_path / "bin", tmp_path / "apt.log"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(
        f'#!/bin/sh\necho "$@" >> {log}\n[ "$1" = update ] && exit 0\n'
        'echo "E: Unable to locate package mricron-data" >&2\nexit 100\n')
    (bin_dir / "dpkg-deb").write_text("#!/bin/sh\nexit 1\n")
    for f in ("apt-get", "dpkg-deb"):
        (bin_dir / f).chmod(0o755)
    monkeypatch.setattr(colin27, "SYSTEM_DIR", tmp_path / "no-such-dir")
    monkeypatch.setattr(colin27.os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(colin27.FetchError, match="Unable to locate package"):
        colin27.fetch(tmp_path / "colin27")
    assert log.read_text().split("\n")[:-1] == ["download mricron-data", "update -qq", "download mricron-data"]
