"""The uncertainty and training-curve figures: their numeric core, and rendering with runs present or missing."""
from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from benchmark import paths
from benchmark.config import DataConfig, load_config
from benchmark.data.preprocess import load_split, preprocess
from benchmark.data.sources import fetch
from benchmark.data.store import save_arrays
from benchmark.evidence import load_evidence
from benchmark.figures import training_curves_figure, uncertainty_figure
from tests.conftest import ROOT, TINY_PARAMS, write_params
from tests.evidence_helpers import CATALOGUE, CLAIMS

LESION = "phantom-lesion"  # four raters per case
CARDIAC = "phantom-cardiac"


@pytest.fixture(scope="module")
def lesion_processed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lesion")
    cfg = DataConfig(**TINY_PARAMS["data"])
    fetch(LESION, root / "fetched", cfg)
    preprocess(LESION, root / "fetched", root / "processed", cfg)
    return root / "processed"


@pytest.fixture
def project(tmp_path, monkeypatch, lesion_processed):
    """Lesion data processed; cardiac listed but not processed; flowseg-plain and medflowseg in table4."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(lesion_processed, paths.processed(LESION))
    return load_config(write_params(
        tmp_path / "params.yaml", datasets=[LESION, CARDIAC], methods=["unet", "flowseg-plain", "medflowseg"],
        ablations={"datasets": [LESION], "methods": ["medflowseg-backbone"]},
        nfe_sweep={"datasets": [], "method": "medflowseg"},
        table4={"datasets": [LESION, CARDIAC], "methods": ["flowseg-plain", "medflowseg"]}))


def _evidence(cfg):
    return load_evidence(cfg, CATALOGUE, CLAIMS)


def _decodes(png: Path) -> np.ndarray:
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
    return image


def test_uncertainty_figure_with_and_without_predictions(project, tmp_path):
    _, cases = load_split(paths.processed(LESION), "test")
    rng = np.random.default_rng(0)
    for case in cases:  # medflowseg has samples, flowseg-plain none, cardiac no data
        samples = rng.integers(0, 2, size=(3, *case.label.shape[1:]), dtype=np.uint8)
        save_arrays(paths.predictions(LESION, "medflowseg") / f"{case.case_id}.npz", samples=samples)
    _decodes(uncertainty_figure(_evidence(project), tmp_path / "figs" / "uncertainty.png"))

    shutil.rmtree(paths.RUNS)  # nothing predicted at all: still a figure
    _decodes(uncertainty_figure(_evidence(project), tmp_path / "figs" / "none.png"))


def test_training_curves_figure_with_and_without_runs(project, tmp_path):
    steps = np.arange(1, 51)
    for m, scale in (("unet", 1.5), ("medflowseg", 0.3), ("medflowseg-backbone", 0.3)):
        paths.run(LESION, m).mkdir(parents=True)
        pd.DataFrame({"step": steps, "loss": scale * np.exp(-steps / 20), "lr": 1e-3, "seconds": 0.1}).to_csv(
            paths.run(LESION, m) / "loss.csv", index=False)
    paths.run(LESION, "flowseg-plain").mkdir(parents=True)  # a run marked not run: header only
    (paths.run(LESION, "flowseg-plain") / "loss.csv").write_text("step,loss,lr,seconds\n")
    out = training_curves_figure(_evidence(project), tmp_path / "figs" / "curves.png")  # cardiac: no runs at all
    _decodes(out)

    shutil.rmtree(paths.RUNS)
    _decodes(training_curves_figure(_evidence(project), tmp_path / "figs" / "empty.png"))


def test_uncertainty_figure_of_a_profile_without_table4_methods(tmp_path, monkeypatch, lesion_processed):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(lesion_processed, paths.processed(LESION))
    cfg = load_config(write_params(tmp_path / "params.yaml", datasets=[LESION], methods=["unet"],
                                   ablations={"datasets": [], "methods": []},
                                   nfe_sweep={"datasets": [], "method": "medflowseg"},
                                   table4={"datasets": [], "methods": []}))
    png = uncertainty_figure(_evidence(cfg), tmp_path / "figs" / "uncertainty.png")
    assert mpimg.imread(png).ndim == 3   # a figure saying there is nothing to show, not a traceback


def test_training_curves_of_more_methods_than_colours_and_a_condition_head_row(tmp_path, monkeypatch,
                                                                               lesion_processed):
    """The full CPU profile trains 21 methods on the lesions and scores MedFlowSeg's head as a row of its own."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(lesion_processed, paths.processed(LESION))
    full = load_config(ROOT / "profiles/cpu-full.yaml")
    baselines = list(full.baselines.methods)
    cfg = load_config(write_params(
        tmp_path / "params.yaml", datasets=[LESION], methods=["unet", "flowseg-plain", "medflowseg"],
        method={**{m: {} for m in baselines + list(full.ablations.methods)}, **TINY_PARAMS["method"]},
        baselines={"datasets": [LESION], "methods": baselines},
        ablations={"datasets": [LESION], "methods": list(full.ablations.methods)},
        condition_head={"datasets": [LESION], "method": "medflowseg"},
        nfe_sweep={"datasets": [], "method": "medflowseg"}, table4={"datasets": [], "methods": []}))
    trained = {m for _, m in cfg.pairs() if cfg.trained_as(m) == m}
    assert len(trained) == 20 and len({m for _, m in cfg.pairs()}) == 21      # the head: a row, not a training
    steps = np.arange(1, 51)
    for m in trained:
        paths.run(LESION, m).mkdir(parents=True)
        pd.DataFrame({"step": steps, "loss": np.exp(-steps / 20), "lr": 1e-3, "seconds": 0.1}).to_csv(
            paths.run(LESION, m) / "loss.csv", index=False)
    _decodes(training_curves_figure(_evidence(cfg), tmp_path / "figs" / "curves.png"))


def test_a_loss_that_goes_below_zero_is_named_not_drawn(project, tmp_path, monkeypatch):
    import matplotlib.figure
    steps = np.arange(1, 51)
    for m, loss in (("unet", np.exp(-steps / 20)), ("medflowseg", 0.3 - steps / 100)):   # the second: nnU-Net-like
        paths.run(LESION, m).mkdir(parents=True)
        pd.DataFrame({"step": steps, "loss": loss, "lr": 1e-3, "seconds": 0.1}).to_csv(
            paths.run(LESION, m) / "loss.csv", index=False)
    legends = []
    original = matplotlib.figure.Figure.legend
    monkeypatch.setattr(matplotlib.figure.Figure, "legend",
                        lambda self, *a, **k: legends.append((list(a[1]), k["title"])) or original(self, *a, **k))
    _decodes(training_curves_figure(_evidence(project), tmp_path / "curves.png"))
    (labels, title), = legends
    assert labels == ["unet"] and title.endswith("not drawn, a loss that reaches 0 or below: medflowseg")
