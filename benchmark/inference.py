"""The predict stage: ``n`` samples per test case from a trained method's EMA weights.

Writes ``<out>/<case_id>.npz`` with ``samples`` uint8 ``(n, Z, H, W)`` and ``uncertainty``
float16 ``(Z, H, W)`` (the samples' per-pixel disagreement, :data:`UNCERTAINTY`), and
``<out>/meta.json`` with the sample count, NFE per sample, the sampler, timings and that definition.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from benchmark.config import ConfigError, PredictConfig
from benchmark.data.preprocess import load_split
from benchmark.data.store import CaseFileError, save_arrays, staged_folder
from benchmark.methods import build_method
from benchmark.methods.interface import HasConditionHead
from benchmark.metrics.fusion import sample_spread
from benchmark.records import PredictionRecord, RunRecord, Status, read_record, write_record
from benchmark.training.checkpoint import load_torch_file
from medflowseg.sampling import Samples

UNCERTAINTY = "1 - (count of the modal label) / n per pixel over the n samples; 0 where all agree (always for n = 1)"


def case_generator(seed: int, index: int) -> torch.Generator:
    """The generator for the ``index``-th test case: every consumer of a trained model (predict,
    the NFE sweep) draws the same noise for the same case."""
    return torch.Generator().manual_seed(seed * 100_003 + index)


def load_trained(model_dir: Path, device: str = "cpu") -> torch.nn.Module:
    path = Path(model_dir) / "model.pt"
    if not path.is_file():
        raise CaseFileError(path, "trained model is missing (run the train stage)")
    payload = load_torch_file(path)
    model = build_method(payload["method"], payload["in_channels"], payload["num_classes"], payload["model_params"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval()


def predict(processed: Path, model_dir: Path, out: Path, cfg: PredictConfig, threads: int = 2,
            condition_head: bool = False) -> PredictionRecord:
    """Samples of the trained method for every test case; with ``condition_head``, the labels of its condition
    network's own head instead (a :class:`~benchmark.methods.interface.HasConditionHead`; one per case)."""
    torch.set_num_threads(threads)
    return write_predictions(model_dir, out, lambda tmp: _predict_cases(processed, model_dir, tmp, cfg, condition_head))


def write_predictions(model_dir: Path, out: Path,
                      predict_cases: Callable[[Path], PredictionRecord]) -> PredictionRecord:
    """The predict stage's folder, for any method: ``predict_cases(folder)`` writes the cases' files into a
    temporary folder and returns the meta; the folder replaces ``out`` only when complete. A model whose
    training was not run gives a not-run folder."""
    model_dir, out = Path(model_dir), Path(out)
    train_meta = read_record(model_dir / "meta.json", RunRecord, missing_ok=True)
    with staged_folder(out) as tmp:
        if train_meta.status is Status.NOT_RUN:
            meta = PredictionRecord.not_run(train_meta.reason)
        else:
            meta = predict_cases(tmp)
        write_record(tmp / "meta.json", meta)
    return meta


def _predict_cases(processed: Path, model_dir: Path, out: Path, cfg: PredictConfig,
                   condition_head: bool = False) -> PredictionRecord:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_trained(model_dir, device)
    draw = _condition_head(model, model_dir) if condition_head else model.sample
    manifest, cases = load_split(processed, "test")
    seconds, nfe, n_out = [], [], 0
    for i, case in enumerate(cases):
        g = case_generator(cfg.seed, i)
        t0 = time.perf_counter()
        parts = []
        for s in range(0, case.image.shape[0], cfg.batch_size):
            images = torch.from_numpy(case.image[s:s + cfg.batch_size]).to(device)
            out_batch = draw(images, cfg.n_samples, g)
            parts.append(out_batch.labels.cpu().numpy().astype(np.uint8))
            nfe += out_batch.nfe
        samples = np.concatenate(parts, axis=1)  # (n, Z, H, W)
        seconds.append(time.perf_counter() - t0)
        n_out = samples.shape[0]
        uncertainty = sample_spread(samples, manifest.dataset.num_classes).astype(np.float16)
        save_arrays(out / f"{case.case_id}.npz", samples=samples, uncertainty=uncertainty)
    return PredictionRecord(Status.OK, dataset=manifest.dataset.name, n_cases=len(cases),
                            n_samples_requested=cfg.n_samples, n_samples=n_out, nfe_per_sample=_nfe_per_sample(nfe),
                            sampler=sampler_label(model),
                            seconds_per_case=float(np.mean(seconds)), seconds_total=float(np.sum(seconds)),
                            device=device, seed=cfg.seed, uncertainty=UNCERTAINTY,
                            readout="condition-head" if condition_head else None)


def _condition_head(model: torch.nn.Module, model_dir: Path) -> Callable[..., Samples]:
    """``sample``'s signature over the condition head: one deterministic answer per image, one evaluation."""
    if not isinstance(model, HasConditionHead):
        raise ConfigError(f"{model_dir}: {type(model).__name__} has no condition head of its own "
                          f"(benchmark/methods/interface.py: HasConditionHead)")
    return lambda images, n, g: Samples(model.condition_labels(images)[None], (1,))


def sampler_label(model) -> str | None:
    """The step rule ``sample`` used, as recorded with the predictions: the repr of the method's
    ``default_sampler`` (e.g. ``DDPMSampler(steps=1000)``), None for a deterministic network."""
    sampler = model.default_sampler
    return None if sampler is None else repr(sampler)


def _nfe_per_sample(nfe: list[int]) -> float:
    """The NFE of every returned sample -> their count when all are equal (fixed-step samplers), else the mean."""
    if not nfe:
        return 0
    return nfe[0] if len(set(nfe)) == 1 else float(np.mean(nfe))
