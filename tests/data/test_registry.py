"""The dataset registry: the suite's own datasets and an external package's, all through the
``segbench.datasets`` entry-point group; unknown names; objects that do not implement the contract."""
from __future__ import annotations

import json
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.config import DataConfig
from benchmark.data.colin27 import Colin27Source
from benchmark.data.interface import DatasetSource, FilesToObtain
from benchmark.data.manifest import load_manifest
from benchmark.data.phantoms import PhantomSource
from benchmark.data.real.source import RealSource
from benchmark.data.registry import ENTRY_POINT_GROUP, UnknownDatasetError, available_datasets, dataset_source
from tests.conftest import ROOT

PHANTOMS = ["phantom-brain", "phantom-cardiac", "phantom-echo", "phantom-fundus", "phantom-gland", "phantom-lesion"]
REAL = ["acdc", "brats2021", "camus", "glas", "isic", "lidc", "monuseg", "refuge2"]

# An external package: a dataset whose native files (PGM images and masks, two scans per subject) sit on
# disk beside it; fetch copies them, load converts them at the profile's size, split is by subject.
EXTERNAL_PACKAGE = '''
import shutil
from pathlib import Path

import numpy as np

from benchmark.data.case import Case, DatasetInfo
from benchmark.data.manifest import assign_splits

NATIVE = Path(__file__).with_name("native")


def read_pgm(path):
    """A plain (P2) greyscale PGM as a (H, W) int array."""
    tokens = path.read_text().split()
    assert tokens[0] == "P2", path
    w, h = int(tokens[1]), int(tokens[2])
    return np.array(tokens[4:4 + w * h], dtype=np.int64).reshape(h, w)


class ToyDataset:
    info = DatasetInfo(name="toy-ext", modality="MRI", channels=1, class_names=("background", "blob"),
                       n_annotators=1, stands_for="nothing (a test)", phantom=False, note="an external dataset")

    def fetch(self, dest, cfg):
        files = sorted(p.name for p in NATIVE.glob("*.pgm"))
        for name in files:
            shutil.copyfile(NATIVE / name, dest / name)
        return {"source": "extds_toy/native", "files": files}

    def load(self, src, cfg):
        for path in sorted(Path(src).glob("*_img.pgm")):
            subject, scan = path.name.split("_")[:2]
            image, mask = read_pgm(path), read_pgm(path.with_name(f"{subject}_{scan}_mask.pgm"))
            rows = np.arange(cfg.size) * image.shape[0] // cfg.size
            cols = np.arange(cfg.size) * image.shape[1] // cfg.size
            image, mask = image[rows][:, cols], mask[rows][:, cols]
            yield Case(f"{subject}_{scan}", subject, image[None, None].astype(np.float32),
                       (mask[None, None] > 0).astype(np.uint8), (3.0, 1.5, 1.5), extra={"source": str(path)})

    def split(self, cases, cfg):
        return assign_splits([c.subject_id for c in cases], cfg.split, cfg.seed)


class NotADataset:
    info = ToyDataset.info

    def fetch(self, dest, cfg):
        return {}


def misnamed():
    return ToyDataset()
'''
PACKAGE = "extds_toy"
N_SUBJECTS, NATIVE_SIZE, SIZE = 8, 24, 16


@pytest.fixture(autouse=True)
def forget_external_package():
    """Drop the external test package from ``sys.modules`` so no test sees another's import."""
    sys.modules.pop(PACKAGE, None)
    yield
    sys.modules.pop(PACKAGE, None)


def write_pgm(path: Path, a: np.ndarray) -> None:
    rows = "\n".join(" ".join(str(int(v)) for v in row) for row in a)
    path.write_text(f"P2\n{a.shape[1]} {a.shape[0]}\n255\n{rows}\n")


def install_external(root: Path, entry_points_: dict[str, str]) -> Path:
    """The package (module, native files) plus a ``.dist-info`` with entry points, under ``root``."""
    pkg = root / PACKAGE
    (pkg / "native").mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(EXTERNAL_PACKAGE))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:NATIVE_SIZE, :NATIVE_SIZE]
    for s in range(N_SUBJECTS):
        for scan in ("a", "b"):
            cy, cx, r = rng.integers(8, 16), rng.integers(8, 16), rng.integers(3, 7)
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.int64)
            image = np.clip(60 + 120 * mask + rng.normal(0, 20, mask.shape), 0, 255).astype(np.int64)
            write_pgm(pkg / "native" / f"subj{s:02d}_{scan}_img.pgm", image)
            write_pgm(pkg / "native" / f"subj{s:02d}_{scan}_mask.pgm", 255 * mask)
    dist = root / f"{PACKAGE}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {PACKAGE.replace('_', '-')}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points_.items())
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}")
    return pkg


def test_every_builtin_dataset_is_registered_through_the_entry_point_group():
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert sorted(eps) == sorted(PHANTOMS + ["colin27"] + REAL) == available_datasets()
    for name in PHANTOMS:
        source = dataset_source(name)
        assert type(source) is PhantomSource and source.info.phantom
        assert eps[name].value == f"benchmark.data.phantoms.{name.removeprefix('phantom-')}:source"
    colin27 = dataset_source("colin27")
    assert type(colin27) is Colin27Source and not colin27.info.phantom and eps["colin27"].module == "benchmark.data.colin27"
    for name in REAL:
        source = dataset_source(name)
        assert type(source) is RealSource and not source.info.phantom and isinstance(source, FilesToObtain)
        assert eps[name].module == source.module.__name__ and eps[name].attr == "source"
    for name in available_datasets():
        source = dataset_source(name)
        assert isinstance(source, DatasetSource) and source.info.name == name
        assert isinstance(source, FilesToObtain) == (name in REAL)
        assert dataset_source(name) is not source          # a fresh instance each time


def test_unknown_dataset_lists_the_registered_ones(capsys):
    with pytest.raises(UnknownDatasetError) as exc:
        dataset_source("no-such-dataset")
    msg = str(exc.value)
    assert "'no-such-dataset'" in msg and "phantom-cardiac" in msg and "acdc" in msg and ENTRY_POINT_GROUP in msg
    assert main(["--params", str(ROOT / "params.yaml"), "fetch", "no-such-dataset", "--out", "unused"]) == 2
    assert "unknown dataset 'no-such-dataset'" in capsys.readouterr().err


def test_registered_object_without_the_contract_is_refused(tmp_path, monkeypatch):
    install_external(tmp_path, {"not-a-dataset": f"{PACKAGE}:NotADataset", "misnamed": f"{PACKAGE}:misnamed"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match=r"'not-a-dataset' .*missing \['load', 'split'\]"):
        dataset_source("not-a-dataset")
    with pytest.raises(TypeError, match=r"'misnamed' .*calls itself 'toy-ext'"):
        dataset_source("misnamed")


def test_external_package_adds_a_dataset_with_no_edit_to_the_suite(tmp_path, monkeypatch, capsys):
    """Fetch, preprocess and the leak check through the CLI, as `dvc repro` runs them."""
    install_external(tmp_path / "site", {"toy-ext": f"{PACKAGE}:ToyDataset"})
    assert "toy-ext" not in available_datasets()
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(f"profile: toy\ndatasets: [toy-ext]\n"
                      f"data: {{size: {SIZE}, seed: 1, split: {{train: 0.5, val: 0.25, test: 0.25}}}}\n")

    assert main(["list"]) == 0
    assert "toy-ext" in capsys.readouterr().out
    assert main(["--params", str(params), "check-data", "--no-probe"]) == 0      # nothing to download
    assert main(["--params", str(params), "fetch", "toy-ext"]) == 0
    fetched = tmp_path / "data/fetched/toy-ext"
    assert len(list(fetched.glob("*.pgm"))) == 4 * N_SUBJECTS
    status = json.loads((fetched / "status.json").read_text())
    assert status["available"] and status["provenance"]["source"] == "extds_toy/native"

    assert main(["--params", str(params), "preprocess", "toy-ext"]) == 0
    processed = tmp_path / "data/processed/toy-ext"
    manifest = load_manifest(processed)
    assert manifest.status == "ok" and manifest.dataset == dataset_source("toy-ext").info
    assert not manifest.dataset.phantom
    assert len(manifest.cases) == 2 * N_SUBJECTS and all(manifest.split(s) for s in ("train", "val", "test"))
    split_of = {}
    for c in manifest.cases:
        assert split_of.setdefault(c.subject_id, c.split) == c.split    # both scans of a subject together
        case = np.load(processed / c.file)
        assert case["image"].shape == (1, 1, SIZE, SIZE) and case["label"].shape == (1, 1, SIZE, SIZE)
    assert sorted(split_of.values()).count("test") == N_SUBJECTS // 4

    capsys.readouterr()
    assert main(["check-leaks", str(processed)]) == 0
    assert "no leaks" in capsys.readouterr().out
    leaky = json.loads((processed / "manifest.json").read_text())   # one scan of a test subject into train
    scan = next(c for c in leaky["cases"] if c["split"] == "test")
    scan["split"] = "train"
    (tmp_path / "leaky.json").write_text(json.dumps(leaky))
    assert main(["check-leaks", str(tmp_path / "leaky.json")]) == 1
    assert f"subject {scan['subject_id']}" in capsys.readouterr().out


def test_colin27_unobtainable_is_recorded_not_raised(tmp_path, monkeypatch, capsys):
    from benchmark.data import colin27
    from benchmark.data.sources import fetch

    def refuse(dest):
        raise colin27.FetchError("apt-get download mricron-data failed (simulated)")

    monkeypatch.setattr(colin27, "fetch", refuse)
    status = fetch("colin27", tmp_path / "colin27", DataConfig())
    assert status == {"dataset": "colin27", "available": False,
                      "reason": "apt-get download mricron-data failed (simulated)"}
    assert json.loads((tmp_path / "colin27/status.json").read_text()) == status
    assert "DATASET colin27 IS NOT AVAILABLE" in capsys.readouterr().err
