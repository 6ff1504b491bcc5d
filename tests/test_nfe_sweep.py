"""The Dice-vs-NFE sweep on a tiny trained flowseg-plain: measured NFE, seeding, outputs, errors."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmark.cli import main
from benchmark.config import EvalConfig, MethodConfig, PredictConfig, TrainConfig
from benchmark.data.manifest import load_manifest
from benchmark.data.store import write_json
from benchmark.evaluation import evaluate
from benchmark.inference import load_trained, predict
from benchmark.methods import build_method
from benchmark.nfe_sweep import NotSweepableError, _sample_case, nfe_sweep
from benchmark.training.trainer import train
from medflowseg.flow import ODESolver
from tests.conftest import TINY_PARAMS, write_params

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LOOSE = ODESolver("dopri5", rtol=1e-2, atol=1e-2)
SETTINGS = [ODESolver("euler", 1), ODESolver("euler", 2), ODESolver("euler", 4), LOOSE, ODESolver("euler", 2)]


@pytest.fixture(scope="module")
def plain_model(tiny_processed, tmp_path_factory) -> Path:
    """A flowseg-plain trained for a few steps on the tiny dataset: its model folder."""
    run = tmp_path_factory.mktemp("plain")
    mcfg = MethodConfig(model=TINY_PARAMS["method"]["flowseg-plain"]["model"],
                        train=TrainConfig(steps=10, batch_size=4, warmup_steps=2, ema_decay=0.9,
                                          checkpoint_every=10, threads=1))
    train("flowseg-plain", tiny_processed, run, mcfg)
    return run / "model"


@pytest.fixture(scope="module")
def sweep(tiny_processed, plain_model, tmp_path_factory) -> tuple[pd.DataFrame, Path]:
    out = tmp_path_factory.mktemp("sweep")
    return nfe_sweep(tiny_processed, plain_model, out, SETTINGS, n_samples=2, threads=1), out


def test_euler_nfe_is_the_step_count_and_dopri5_is_measured(sweep):
    df, _ = sweep
    euler = df[df["solver"] == "euler"]
    assert euler["nfe"].tolist() == euler["steps"].astype(float).tolist()
    dopri5 = df[df["solver"] == "dopri5"].iloc[0]
    assert dopri5["nfe"] > 0 and pd.isna(dopri5["steps"])
    assert (dopri5["rtol"], dopri5["atol"]) == (LOOSE.rtol, LOOSE.atol)


def test_csv_has_one_row_per_setting_and_dice_in_range(sweep):
    _, out = sweep
    csv = pd.read_csv(out / "nfe_sweep.csv")
    assert len(csv) == len(SETTINGS)
    assert csv["solver"].tolist() == [s.method for s in SETTINGS]
    assert csv["dice"].between(0, 1).all()
    assert (csv["seconds_per_case"] > 0).all()


def test_same_setting_twice_gives_identical_dice(sweep):
    df, _ = sweep
    assert df.loc[1, "dice"] == df.loc[4, "dice"]  # euler 2 steps, run second and last


def test_markdown_caption_and_png(sweep, tiny_processed):
    _, out = sweep
    md = (out / "nfe_sweep.md").read_text()
    assert "phantom-cardiac" in md and "flowseg-plain" in md and "dopri5 rtol=0.01, atol=0.01" in md
    assert "2 sample(s) per case" in md and "| adaptive |" in md
    assert f"{len(load_manifest(tiny_processed).split('test'))} test cases" in md
    png = (out / "nfe_sweep.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 5000


def _untrained_unet(model_dir: Path) -> Path:
    """A UNet model folder as load_trained reads it: a method with no ODE solver."""
    model_dir.mkdir(parents=True)
    params = TINY_PARAMS["method"]["unet"]["model"]
    torch.save({"method": "unet", "in_channels": 1, "num_classes": 4, "model_params": params,
                "state_dict": build_method("unet", 1, 4, params).state_dict()}, model_dir / "model.pt")
    return model_dir


def test_model_without_solver_is_a_clear_error(tiny_processed, tmp_path):
    model_dir = _untrained_unet(tmp_path / "unet" / "model")
    with pytest.raises(NotSweepableError, match=re.escape(f"{model_dir}: ") + r".*does not sample with a.*ODESolver"):
        nfe_sweep(tiny_processed, model_dir, tmp_path / "out", SETTINGS)
    assert not (tmp_path / "out").exists()


def test_not_run_model_writes_a_table_saying_so(tiny_processed, tmp_path):
    model_dir = tmp_path / "model"
    write_json(model_dir / "meta.json", {"status": "not_run", "reason": "dataset unavailable (simulated)"})
    df = nfe_sweep(tiny_processed, model_dir, tmp_path / "out", SETTINGS)
    assert df.empty
    md = (tmp_path / "out" / "nfe_sweep.md").read_text()
    assert "not run" in md and "simulated" in md
    assert (tmp_path / "out" / "nfe_sweep.png").read_bytes()[:8] == PNG_MAGIC


def test_cli_writes_under_results_and_errors_exit_2(tiny_project, plain_model, monkeypatch, capsys):
    monkeypatch.chdir(tiny_project)
    shutil.copytree(plain_model, tiny_project / "runs/phantom-cardiac/flowseg-plain/model")
    assert main(["nfe-sweep", "phantom-cardiac", "flowseg-plain", "--steps", "1", "2", "--no-dopri5"]) == 0
    csv = pd.read_csv(tiny_project / "results/phantom-cardiac/flowseg-plain/nfe_sweep/nfe_sweep.csv")
    assert csv["steps"].tolist() == [1, 2] and csv["nfe"].tolist() == [1.0, 2.0]
    _untrained_unet(tiny_project / "runs/phantom-cardiac/unet/model")
    capsys.readouterr()
    assert main(["nfe-sweep", "phantom-cardiac", "unet", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("segbench nfe-sweep: error: runs/phantom-cardiac/unet/model: ")
    assert "does not sample with a medflowseg.flow.ODESolver" in err[0]


def test_the_cli_takes_its_settings_from_the_profile_unless_given(tiny_project, plain_model, monkeypatch):
    monkeypatch.chdir(tiny_project)
    shutil.copytree(plain_model, tiny_project / "runs/phantom-cardiac/flowseg-plain/model")
    write_params(tiny_project / "params.yaml", nfe_sweep={"datasets": ["phantom-cardiac"], "method": "flowseg-plain",
                                                          "steps": [3, 1], "dopri5": False})
    csv = tiny_project / "results/phantom-cardiac/flowseg-plain/nfe_sweep/nfe_sweep.csv"
    assert main(["nfe-sweep", "phantom-cardiac", "flowseg-plain"]) == 0
    assert pd.read_csv(csv)["steps"].tolist() == [3, 1]                  # the profile's, no dopri5
    assert main(["nfe-sweep", "phantom-cardiac", "flowseg-plain", "--steps", "2"]) == 0
    assert pd.read_csv(csv)["steps"].tolist() == [2]                     # the command line's


def test_sweep_at_the_trained_solver_matches_predict_then_evaluate(tiny_processed, plain_model, tmp_path):
    """Same seeds, samples and metrics as the predict and evaluate stages: the same Dice."""
    predict(tiny_processed, plain_model, tmp_path / "pred", PredictConfig(n_samples=2, batch_size=8), threads=1)
    record = evaluate(tiny_processed, tmp_path / "pred", tmp_path / "res", EvalConfig(), "flowseg-plain")
    trained = load_trained(plain_model).default_sampler
    df = nfe_sweep(tiny_processed, plain_model, tmp_path / "out", [trained], n_samples=2, batch_size=8, threads=1)
    assert df.loc[0, "dice"] == record.average["dice"]
    assert df.loc[0, "nfe"] == record.nfe_per_sample


def test_a_setting_is_passed_per_call_and_leaves_the_model_as_it_was(plain_model):
    """Each sample's NFE comes from the call; the model's own solver is the trained one throughout."""
    model = load_trained(plain_model)
    trained = model.default_sampler
    image = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(0)).numpy()
    samples, nfe = _sample_case(model, ODESolver("midpoint", 3), image, 2, torch.Generator().manual_seed(1), 2, "cpu")
    assert samples.shape == (2, 3, 32, 32) and nfe == [6, 6, 6, 6]   # 2 batches x 2 samples, 2 per midpoint step
    assert model.default_sampler is trained and trained == ODESolver("euler", 2)


@pytest.mark.parametrize("with_dopri5", [True, False])
def test_the_figure_names_dopri5_only_where_it_ran(tmp_path, monkeypatch, with_dopri5):
    import matplotlib.axes
    from benchmark.nfe_sweep import plot_datasets
    labels, legend = [], matplotlib.axes.Axes.legend

    def recording_legend(ax, *args, **kwargs):      # the labels the figure's legend is drawn with
        labels.extend(ax.get_legend_handles_labels()[1])
        return legend(ax, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "legend", recording_legend)
    rows = [{"steps": s, "nfe": s, "dice": 0.4} for s in (1, 2, 4)]
    rows += [{"steps": None, "nfe": 14.0, "dice": 0.41}] if with_dopri5 else []
    plot_datasets({"phantom-lesion": pd.DataFrame(rows)}, "medflowseg", tmp_path / "nfe.png")
    assert (tmp_path / "nfe.png").is_file()
    assert labels == ["phantom-lesion (Euler)"] + (["phantom-lesion (dopri5)"] if with_dopri5 else [])
