"""Dice against NFE: one trained flow-matching model sampled with several ODE solver settings.

A method is sweepable when its ``default_sampler`` is a ``medflowseg.flow.ODESolver``: each
setting is passed to ``sample`` as its sampler, and the NFE is what ``sample`` returns. Every
setting samples every test case from the same per-case seeds as the predict stage, so settings
differ only by the solver. Dice follows the evaluate stage: the same sample fusion,
multi-rater reference, empty-mask policy and "Average" (mean over foreground classes of the
mean over cases). Writes ``nfe_sweep.csv``, ``nfe_sweep.md`` and ``nfe_sweep.png``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmark.config import EvalConfig
from benchmark.data.case import Case, DatasetInfo
from benchmark.data.manifest import load_manifest
from benchmark.data.preprocess import load_split
from benchmark.data.store import atomic_write
from benchmark.errors import SegbenchError
from benchmark.inference import case_generator, load_trained
from benchmark.metrics import EmptyPolicy, case_metrics
from benchmark.metrics.fusion import fuse
from benchmark.records import RunRecord, Status, read_record
from medflowseg.flow import ODESolver

STEM = "nfe_sweep"
COLUMNS = ["solver", "steps", "rtol", "atol", "nfe", "dice", "seconds_per_case"]


class NotSweepableError(SegbenchError, ValueError):
    """The trained method has no ODE solver to vary."""


def sweep_settings(steps: list[int], dopri5: bool = True, rtol: float = 1e-3, atol: float = 1e-3) -> list[ODESolver]:
    """Euler at each step count, then (if ``dopri5``) dopri5 with the given tolerances."""
    settings = [ODESolver("euler", s) for s in steps]
    return settings + ([ODESolver("dopri5", rtol=rtol, atol=atol)] if dopri5 else [])


def nfe_sweep(processed: Path, model_dir: Path, out: Path, settings: list[ODESolver], n_samples: int = 1,
              seed: int = 0, batch_size: int = 32, threads: int = 2,
              evaluation: EvalConfig = EvalConfig()) -> pd.DataFrame:
    """Sample the test split once per solver setting and score Dice; one row per setting.

    Args:
        processed: the processed dataset folder; model_dir: the trained model folder.
        out: where ``nfe_sweep.{csv,md,png}`` are written.
        settings: the solvers to try, in order (a repeated setting gives a repeated row).
        n_samples: samples per case, fused as ``evaluation.fusion`` says.
        seed, batch_size, threads: as the predict stage uses them.
        evaluation: the evaluate stage's conventions.
    Returns:
        ``COLUMNS``: solver, steps (None when adaptive), rtol/atol (adaptive only), mean
        measured NFE per sample, Dice average, seconds of sampling per case. Empty when
        the trained model's status is ``not_run``.
    Raises:
        NotSweepableError: the model's ``default_sampler`` is not an ``ODESolver``.
    """
    if not settings:
        raise ValueError("no solver settings to sweep")
    torch.set_num_threads(threads)
    processed, model_dir, out = Path(processed), Path(model_dir), Path(out)
    meta = read_record(model_dir / "meta.json", RunRecord, missing_ok=True)
    method = meta.method or model_dir.parent.name
    if meta.status is Status.NOT_RUN:
        return _write_not_run(out, load_manifest(processed).dataset.name, method, meta.reason)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_trained(model_dir, device)
    if not isinstance(model.default_sampler, ODESolver):
        raise NotSweepableError(f"{model_dir}: method {method!r} ({type(model).__name__}) does not sample with a "
                                f"medflowseg.flow.ODESolver (its default_sampler is {model.default_sampler!r}), so "
                                f"it has no NFE to sweep (only flow-matching methods are sweepable)")
    manifest, cases = load_split(processed, "test")
    info = manifest.dataset
    refs = [fuse(c.label, info.num_classes, evaluation.reference, evaluation.staple_max_iterations) for c in cases]
    rows = []
    for solver in settings:
        rows.append(_score_setting(model, solver, cases, refs, info, n_samples, seed, batch_size, evaluation,
                                   device))
    df = pd.DataFrame(rows, columns=COLUMNS).astype({"steps": "Int64"})
    _write(out, df, f"Dice against NFE: {info.name} / {method}",
           _caption(info, method, len(cases), n_samples, settings, evaluation))
    return df


def _score_setting(model: torch.nn.Module, solver: ODESolver, cases: list[Case], refs: list[np.ndarray],
                   info: DatasetInfo, n_samples: int, seed: int, batch_size: int, evaluation: EvalConfig,
                   device: str) -> dict:
    """One row: sample and score every case with ``solver``."""
    policy = EmptyPolicy(evaluation.both_empty, evaluation.one_empty_hd95)
    nfe, seconds, dice = [], [], []
    for i, (case, ref) in enumerate(zip(cases, refs)):
        g = case_generator(seed, i)
        t0 = time.perf_counter()
        samples, case_nfe = _sample_case(model, solver, case.image, n_samples, g, batch_size, device)
        seconds.append(time.perf_counter() - t0)
        nfe += case_nfe
        pred = fuse(samples, info.num_classes, evaluation.fusion, evaluation.staple_max_iterations)
        dice.append(case_metrics(pred, ref, case.spacing, info.num_classes, policy,
                                 evaluation.hd95_convention, evaluation.per_slice)["dice"])
    adaptive = solver.adaptive
    return {"solver": solver.method, "steps": None if adaptive else solver.steps,
            "rtol": solver.rtol if adaptive else None, "atol": solver.atol if adaptive else None,
            "nfe": float(np.mean(nfe)), "dice": _average(np.array(dice, dtype=np.float64)),
            "seconds_per_case": float(np.mean(seconds))}


def _sample_case(model: torch.nn.Module, solver: ODESolver, image: np.ndarray, n: int, g: torch.Generator,
                 batch_size: int, device: str) -> tuple[np.ndarray, list[int]]:
    """``(n, Z, H, W)`` samples of one case and the NFE of each sample of each batch of slices, drawn
    in the order of predict's ``sample(images, n, g)``."""
    parts, nfe = [], []
    for s in range(0, image.shape[0], batch_size):
        out = model.sample(torch.from_numpy(image[s:s + batch_size]).to(device), n, g, solver)
        parts.append(out.labels.cpu().numpy().astype(np.uint8))
        nfe += out.nfe
    return np.concatenate(parts, axis=1), nfe


def _average(per_case: np.ndarray) -> float:
    """``(cases, classes)`` -> mean over classes of the mean over cases, NaN excluded (as evaluate)."""
    return float(pd.DataFrame(per_case).mean().mean())


def _caption(info: DatasetInfo, method: str, n_cases: int, n_samples: int, settings: list[ODESolver],
             evaluation: EvalConfig) -> str:
    adaptive = sorted({(s.method, s.rtol, s.atol) for s in settings if s.adaptive})
    tolerances = "; ".join(f"{m} rtol={r:g}, atol={a:g}" for m, r, a in adaptive) or "no adaptive solver"
    return (f"{info.name}, method {method}: {n_cases} test cases, {n_samples} sample(s) per case and setting "
            f"({evaluation.fusion} fusion), the same seeds for every setting; {tolerances}. NFE: measured "
            f"network evaluations per sample; Dice in %, mean over foreground classes of the mean over cases; "
            f"seconds of sampling per case.")


def _markdown(df: pd.DataFrame, title: str, caption: str) -> str:
    if df.empty:
        table = pd.DataFrame({"status": ["not run"]}).to_markdown(index=False)
    else:
        table = pd.DataFrame({
            "solver": df["solver"],
            "steps": ["adaptive" if pd.isna(s) else str(s) for s in df["steps"]],
            "NFE per sample": df["nfe"],
            "Dice (%)": (100 * df["dice"]).astype(object).where(df["dice"].notna(), None),  # None prints as n/a
            "s per case": df["seconds_per_case"],
        }).to_markdown(index=False, floatfmt=("", "", ".1f", ".2f", ".3f"), missingval="n/a")
    return f"## {title}\n\n{table}\n\n{caption}\n"


def _plot(df: pd.DataFrame, title: str, path: Path) -> None:
    """Dice against measured NFE, log2 x axis: fixed-step solvers as lines, adaptive ones as stars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    fixed = df["steps"].notna()
    for name, d in df[fixed].groupby("solver"):
        d = d.sort_values("nfe")
        ax.plot(d["nfe"], d["dice"], "o-", label=name)
    for name, d in df[~fixed].groupby("solver"):
        ax.plot(d["nfe"], d["dice"], "*", markersize=13, linestyle="none", label=f"{name} (adaptive)")
    if df.empty:
        ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes, color="red")
    else:
        ax.set_xscale("log", base=2)
        ax.legend()
    ax.set_xlabel("measured NFE per sample (log2 scale)")
    ax.set_ylabel("Dice (mean over classes)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    atomic_write(path, lambda t: fig.savefig(t, format="png", dpi=150, bbox_inches="tight"))
    plt.close(fig)


def plot_datasets(sweeps: dict[str, pd.DataFrame], method: str, path: Path) -> Path:
    """Dice against NFE of one method on several datasets, one colour per dataset: Euler as a line,
    dopri5 as a star of the same colour."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, df), colour in zip(sweeps.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        fixed = df[df["steps"].notna()].sort_values("nfe")
        ax.plot(fixed["nfe"], fixed["dice"], "o-", color=colour, label=f"{name} (Euler)")
        adaptive = df[df["steps"].isna()]
        if len(adaptive):          # a sweep without dopri5 gets no legend entry for it
            ax.plot(adaptive["nfe"], adaptive["dice"], "*", color=colour, markersize=13, linestyle="none",
                    label=f"{name} (dopri5)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("measured NFE per sample (log2 scale)")
    ax.set_ylabel("Dice (mean over classes)")
    ax.set_title(f"{method}: Dice against network evaluations", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    atomic_write(path, lambda t: fig.savefig(t, format="png", dpi=150, bbox_inches="tight"))
    plt.close(fig)
    return path


def _write_not_run(out: Path, dataset: str, method: str, reason: str) -> pd.DataFrame:
    """The outputs of a model the train stage did not run: a table, caption and figure saying so."""
    df = pd.DataFrame(columns=COLUMNS)
    _write(out, df, f"Dice against NFE: {dataset} / {method}",
           f"Not run: {reason.strip() or 'the train stage did not run'}")
    return df


def _write(out: Path, df: pd.DataFrame, title: str, caption: str) -> None:
    atomic_write(out / f"{STEM}.csv", lambda t: df.to_csv(t, index=False))
    atomic_write(out / f"{STEM}.md", lambda t: t.write_text(_markdown(df, title, caption)))
    _plot(df, title, out / f"{STEM}.png")
