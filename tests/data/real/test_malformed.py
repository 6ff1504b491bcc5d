"""Every external format a converter reads, truncated, replaced by garbage or emptied: one SegbenchError naming
the file, never a traceback from a library's internals (issue 19)."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.config import DataConfig
from benchmark.data.archive import extract
from benchmark.data.filetype import ContentError
from benchmark.data.interface import ReleaseFileMissing
from benchmark.data.real import acdc, camus, glas, isic, lidc, monuseg, refuge
from benchmark.errors import USER_ERROR, SegbenchError
from tests.conftest import write_params
from tests.data.real import test_isic, test_monuseg
from tests.data.real.test_acdc import make_acdc_tree
from tests.data.real.test_camus import make_mhd_tree, make_nifti_tree
from tests.data.real.test_glas import make_glas_zip
from tests.data.real.test_lidc import make_crop_archives, make_pickle
from tests.data.real.test_refuge import make_refuge_zip


def _glas(root: Path) -> None:
    make_glas_zip(root / "g.zip")
    extract(root / "g.zip", root / "glas")


def _isic(root: Path) -> None:
    files = test_isic.make_ima_files(root)
    for name in ("segs.zip", isic.IMAGES_ZIP):
        extract(root / name, root / "isic")
    for name, path in files.items():
        if name.endswith(".csv"):
            (root / "isic" / name).write_bytes(path.read_bytes())


def _lidc(root: Path) -> None:
    make_crop_archives(root)
    for part in lidc.PARTS:
        extract(root / f"{part}.tar.gz", root / "lidc" / part)


def _pickle(root: Path) -> None:
    (root / "lidc").mkdir()
    make_pickle(root / "lidc" / lidc.PICKLE_NAME)


def _monuseg(root: Path) -> None:
    for path in test_monuseg.make_zips(root).values():
        extract(path, root / "monuseg" / path.stem)


def _refuge(root: Path) -> None:
    make_refuge_zip(root / "r.zip")
    extract(root / "r.zip", root / "refuge")


# format, dataset module, the folder it loads (under tmp_path), how to build it, a glob for the victim file
FORMATS: list[tuple[str, object, str, Callable[[Path], None], str]] = [
    ("NIfTI", acdc, ".", make_acdc_tree, "database/training/patient001/patient001_frame01.nii.gz"),
    ("NIfTI (label)", camus, ".", make_nifti_tree, "CAMUS_public/database_nifti/patient0001/*_4CH_ES_gt.nii.gz"),
    ("MetaImage header", camus, ".", make_mhd_tree, "training/patient0001/patient0001_4CH_ES.mhd"),
    ("MetaImage data", camus, ".", make_mhd_tree, "training/patient0001/patient0001_4CH_ES.raw"),
    ("BMP image", glas, "glas", _glas, "**/train_1.bmp"),
    ("BMP annotation", glas, "glas", _glas, "**/train_1_anno.bmp"),
    ("CSV (GlaS grades)", glas, "glas", _glas, "**/Grade.csv"),
    ("JPEG image", isic, "isic", _isic, "images/ISIC_0000013.jpg"),
    ("PNG mask", isic, "isic", _isic, "segs/ISIC_0000013_*.png"),
    ("CSV (ISIC raters)", isic, "isic", _isic, "IMAplusplus_seg_metadata.csv"),
    ("CSV (ISIC subjects)", isic, "isic", _isic, "IMAplusplus_img_metadata.csv"),
    ("PNG crop", lidc, "lidc", _lidc, "train/train/images/*/*.png"),
    ("PNG rater mask", lidc, "lidc", _lidc, "train/train/gt/*/*_l0.png"),
    ("pickle", lidc, "lidc", _pickle, lidc.PICKLE_NAME),
    ("TIFF", monuseg, "monuseg", _monuseg, "**/TCGA-*.tif"),
    ("XML polygons", monuseg, "monuseg", _monuseg, "**/TCGA-*.xml"),
    ("JPEG fundus", refuge, "refuge", _refuge, "**/Training-400/*/*.jpg"),
    ("PNG rater mask", refuge, "refuge", _refuge, "**/Training-400/*/*_seg_cup_1.png"),
]
CORRUPTIONS = {
    "truncated": lambda data: data[: len(data) // 2],
    "garbage": lambda data: bytes(range(256)) * 3 + bytes(range(7)),  # no image of the fixtures has this size
    "empty": lambda data: b"",
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
@pytest.mark.parametrize("fmt, module, folder, build, victim", FORMATS, ids=[f[0] for f in FORMATS])
def test_a_malformed_file_is_one_error_naming_it(tmp_path, fmt, module, folder, build, victim, corruption):
    build(tmp_path)
    root = tmp_path / folder
    hits = sorted(p for p in root.glob(victim) if "__MACOSX" not in p.parts)
    assert hits, f"the fixture has no {victim}"
    path = hits[0]
    path.write_bytes(CORRUPTIONS[corruption](path.read_bytes()))
    with pytest.raises(SegbenchError) as err:
        list(module.load(root, DataConfig(size=8)))
    assert str(path) in str(err.value), f"{fmt}, {corruption}: {err.value}"


def test_cli_preprocess_of_a_malformed_release_file_exits_with_one_line(tmp_path, monkeypatch, capsys):
    """Through ``segbench preprocess``: the user-error code and one line naming the file, no traceback."""
    (tmp_path / "build").mkdir()
    _glas(tmp_path / "build")
    fetched = tmp_path / "data" / "fetched" / "glas"
    fetched.parent.mkdir(parents=True)
    (tmp_path / "build" / "glas").rename(fetched)
    (fetched / "status.json").write_text('{"dataset": "glas", "available": true, "provenance": {}}')
    victim = next(fetched.rglob("train_1.bmp"))
    victim.write_bytes(victim.read_bytes()[:100])
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path / "params.yaml", datasets=["glas"])
    assert main(["preprocess", "glas"]) == USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segbench preprocess: error: ")
    assert str(victim.relative_to(tmp_path)) in err[0]
    assert not (tmp_path / "data" / "processed" / "glas").exists()


def test_a_missing_release_file_is_a_user_error_naming_it(tmp_path):
    """What a converter needs and does not find: a SegbenchError (one line from ``segbench``), still a
    FileNotFoundError for callers that catch that."""
    _glas(tmp_path)
    anno = next((tmp_path / "glas").rglob("train_1_anno.bmp"))
    anno.unlink()
    with pytest.raises(ReleaseFileMissing, match=re.escape(f"train_1.bmp: its annotation {anno.name} is missing")):
        list(glas.load(tmp_path / "glas", DataConfig(size=8)))
    assert issubclass(ReleaseFileMissing, SegbenchError) and issubclass(ReleaseFileMissing, FileNotFoundError)
    assert issubclass(ContentError, SegbenchError) and issubclass(ContentError, ValueError)
