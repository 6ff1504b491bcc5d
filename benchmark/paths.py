"""Where each stage reads and writes, relative to the project root (the DVC layout)."""
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


def run(dataset: str, method: str) -> Path:
    return RUNS / dataset / method


def model(dataset: str, method: str) -> Path:
    return run(dataset, method) / "model"


def predictions(dataset: str, method: str) -> Path:
    return run(dataset, method) / "predictions"


def results(dataset: str, method: str) -> Path:
    return RESULTS / dataset / method
