"""Everything the tables stage renders, loaded once: :class:`Evidence` and :func:`load_evidence`.

The tables, figures, the claims report, ``paper/metrics.json`` and the MLflow logging are functions of one
``Evidence``: the profile, the catalogue and the claims, the stage records of every (dataset, method) pair,
the datasets' manifests, the training losses and the NFE sweeps. Only the figures read arrays besides
(test images and predicted samples).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd

from benchmark import paths
from benchmark.catalogue import CATALOGUE, Catalogue, load_catalogue
from benchmark.claims import Claim, load_claims
from benchmark.config import Config
from benchmark.data.manifest import MANIFEST, Manifest, file_sha256, load_manifest
from benchmark.records import ComplexityRecord, EvaluationRecord, RunRecord, read_record

Pair = tuple[str, str]   # (dataset, method)


@dataclass(frozen=True)
class Sweep:
    """One dataset's NFE sweep: its Markdown table and its rows (``benchmark.nfe_sweep.COLUMNS``)."""
    markdown: str
    rows: pd.DataFrame


@dataclass
class Evidence:
    """What the tables stage renders. ``results``: evaluation records of ``cfg.pairs()``; ``complexity``: of
    ``table4``'s pairs; ``runs``: run records of ``cfg.pairs()``; ``manifests``: manifest of each dataset
    named anywhere (``manifest_errors`` says why one is absent); ``losses``: ``loss.csv`` per pair (empty
    where absent); ``sweeps``: the NFE sweep per dataset of ``nfe_sweep`` that has one."""
    cfg: Config
    catalogue: Catalogue
    claims: list[Claim] = field(default_factory=list)
    results: dict[Pair, EvaluationRecord] = field(default_factory=dict)
    complexity: dict[Pair, ComplexityRecord] = field(default_factory=dict)
    runs: dict[Pair, RunRecord] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    manifest_errors: dict[str, str] = field(default_factory=dict)
    manifest_sha256: dict[str, str] = field(default_factory=dict)
    losses: dict[Pair, pd.DataFrame] = field(default_factory=dict)
    sweeps: dict[str, Sweep] = field(default_factory=dict)

    @cached_property
    def datasets(self) -> dict[str, object]:
        """Every dataset named by the results or the profile, sorted -> its manifest's ``DatasetInfo`` (None
        where not preprocessed)."""
        return {ds: self.manifests[ds].dataset if ds in self.manifests else None
                for ds in dataset_names(self.cfg, self.results)}

    def structure(self, dataset: str, column: str) -> str | None:
        """The class a per-structure column scores ("LV Dice" -> "LV"), or None for an average."""
        info = self.datasets.get(dataset)
        names = info.class_names[1:] if info is not None else ()
        return next((c for c in names if column.startswith(f"{c} ")), None)

    def data_caveats(self, dataset: str, paper_dataset: str | None) -> tuple[str, ...]:
        info = self.datasets.get(dataset)
        caveats = []
        if info is None or getattr(info, "phantom", True):
            caveats.append(f"{dataset} is a synthetic phantom" + (f" standing in for {paper_dataset}"
                                                                   if paper_dataset else ""))
        if self.cfg.profile != "paper":
            caveats.append(f"profile '{self.cfg.profile}' is CPU-scale, not the paper's training")
        return tuple(caveats)


def dataset_names(cfg: Config, results: dict[Pair, object]) -> list[str]:
    return sorted({d for d, _ in results} | {d for d, _ in cfg.pairs()} | set(cfg.table4.datasets))


def load_evidence(cfg: Config, catalogue_path: Path = CATALOGUE,
                  claims_path: Path = paths.PAPER / "claims.yaml") -> Evidence:
    """Read every input of the tables stage (paths relative to the project root, as ``benchmark.paths``)."""
    catalogue = load_catalogue(catalogue_path)
    pairs = cfg.pairs()
    results = {p: read_record(paths.results(*p) / "evaluation.json", EvaluationRecord, missing_ok=True)
               for p in pairs}
    ev = Evidence(cfg, catalogue, load_claims(claims_path, catalogue.papers), results,
                  complexity={(ds, m): read_record(paths.results(ds, m) / "complexity.json", ComplexityRecord,
                                                   missing_ok=True)
                              for ds in cfg.table4.datasets for m in cfg.table4.methods},
                  runs={(d, m): read_record(paths.model(d, cfg.trained_as(m)) / "meta.json", RunRecord,
                                            missing_ok=True) for d, m in pairs},
                  losses={(d, m): _loss(paths.run(d, cfg.trained_as(m)) / "loss.csv") for d, m in pairs},
                  sweeps=_sweeps(cfg))
    for ds in dataset_names(cfg, results):
        try:
            ev.manifests[ds] = load_manifest(paths.processed(ds))
            ev.manifest_sha256[ds] = file_sha256(paths.processed(ds) / MANIFEST)
        except (ValueError, OSError) as err:
            ev.manifest_errors[ds] = str(err)
    return ev


def _loss(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def _sweeps(cfg: Config) -> dict[str, Sweep]:
    from benchmark.nfe_sweep import STEM

    folders = {ds: paths.results(ds, cfg.nfe_sweep.method) / STEM for ds in cfg.nfe_sweep.datasets}
    return {ds: Sweep((d / f"{STEM}.md").read_text(), pd.read_csv(d / f"{STEM}.csv"))
            for ds, d in folders.items() if (d / f"{STEM}.csv").is_file()}
