"""Where each stage reads and writes, relative to the project root (the DVC layout)."""
from __future__ import annotations

from pathlib import Path

DATA = Path("data")
RUNS = Path("runs")
RESULTS = Path("results")
PAPER = Path("paper")


def raw(dataset: str) -> Path:
    """Files placed by hand (registration-gated datasets); ``data.dvc`` tracks ``data/raw``."""
    return DATA / "raw" / dataset


def downloads(dataset: str) -> Path:
    """Archives the fetch stage downloaded (kept so a second fetch needs no network)."""
    return DATA / "downloads" / dataset


def fetched(dataset: str) -> Path:
    return DATA / "fetched" / dataset


def processed(dataset: str) -> Path:
    return DATA / "processed" / dataset


def seeded(folder: Path, seed: int | None) -> Path:
    """The folder of a pair's run with extra training seed ``seed`` (``profile seeds.extra``) inside the pair's
    ``folder``: ``folder/seed-S``; ``folder`` itself for the pair's main run (``seed`` None)."""
    return folder if seed is None else folder / f"seed-{seed}"


def run(dataset: str, method: str, seed: int | None = None) -> Path:
    return seeded(RUNS / dataset / method, seed)


def model(dataset: str, method: str, seed: int | None = None) -> Path:
    return run(dataset, method, seed) / "model"


def predictions(dataset: str, method: str, seed: int | None = None) -> Path:
    return run(dataset, method, seed) / "predictions"


def results(dataset: str, method: str, seed: int | None = None) -> Path:
    return seeded(RESULTS / dataset / method, seed)
