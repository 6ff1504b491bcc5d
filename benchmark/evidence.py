"""Everything the tables stage renders, loaded once: :class:`Evidence` and :func:`load_evidence`.

The tables, figures, the claims report, ``paper/metrics.json`` and the MLflow logging are functions of one
``Evidence``: the profile, the catalogue and the claims, the stage records of every (dataset, method) pair,
the datasets' manifests, the per-case results, the training losses and the NFE sweeps. Only the figures read
arrays besides (test images and predicted samples).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import paths
from benchmark.catalogue import CATALOGUE, Catalogue, load_catalogue
from benchmark.claims import Claim, load_claims
from benchmark.config import Config
from benchmark.convergence import fall_over_last_quarter, still_falling
from benchmark.data.manifest import MANIFEST, Manifest, file_sha256, load_manifest
from benchmark.records import ComplexityRecord, EvaluationRecord, RunRecord, read_record
from benchmark.statistics import CaseValues, Interval, bootstrap_interval

Pair = tuple[str, str]   # (dataset, method)


@dataclass(frozen=True)
class CaseTables:
    """One training run's per-case results of a pair, as the evaluate stage writes them: ``classes``
    (``per_case.csv``: a row per case and class or ``region:<name>``) and ``sets`` (``per_case_sets.csv``: a row
    per case, a column per set metric, ``region:<name>_<metric>`` for a region's)."""
    classes: pd.DataFrame
    sets: pd.DataFrame


@dataclass(frozen=True)
class Selection:
    """The per-case values a cell averages, times ``scale`` (100 for a percentage): ``metric`` (dice, iou, hd95)
    of the rows ``columns`` (classes or ``region:<name>``; None: every class, the evaluation's average) of
    ``per_case.csv``; or, with ``metric`` None, the ``columns`` of ``per_case_sets.csv``."""
    metric: str | None
    columns: tuple[str, ...] | None
    scale: float = 100.0

    def values(self, run: CaseTables) -> pd.DataFrame:
        """``(cases, columns)`` of one run, indexed by case id, with a ``subject_id`` column first."""
        if self.metric is None:
            return run.sets.set_index("case_id")[["subject_id", *self.columns]]
        rows = run.classes
        columns = self.columns or tuple(c for c in dict.fromkeys(rows["class"]) if not c.startswith("region:"))
        wide = rows[rows["class"].isin(columns)].pivot(index="case_id", columns="class", values=self.metric)
        subjects = rows.drop_duplicates("case_id").set_index("case_id")["subject_id"]
        return pd.concat([subjects.rename("subject_id"), wide.reindex(columns=list(columns))], axis=1,
                         join="inner")


@dataclass(frozen=True)
class Sweep:
    """One dataset's NFE sweep: its Markdown table and its rows (``benchmark.nfe_sweep.COLUMNS``)."""
    markdown: str
    rows: pd.DataFrame


@dataclass
class Evidence:
    """What the tables stage renders. ``results``: evaluation records of ``cfg.pairs()``; ``complexity``: of
    ``table4``'s pairs; ``runs``: run records of ``cfg.pairs()``; ``manifests``: manifest of each dataset
    named anywhere (``manifest_errors`` says why one is absent); ``per_case``: the per-case results of each
    evaluated pair, one entry per training seed: the main run's, then each extra seed's of ``seeds`` that was
    evaluated (:func:`_seed_runs`); ``losses``:
    ``loss.csv`` per pair (empty where absent); ``sweeps``: the NFE sweep per dataset of ``nfe_sweep`` that has one."""
    cfg: Config
    catalogue: Catalogue
    claims: list[Claim] = field(default_factory=list)
    results: dict[Pair, EvaluationRecord] = field(default_factory=dict)
    complexity: dict[Pair, ComplexityRecord] = field(default_factory=dict)
    runs: dict[Pair, RunRecord] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    manifest_errors: dict[str, str] = field(default_factory=dict)
    manifest_sha256: dict[str, str] = field(default_factory=dict)
    per_case: dict[Pair, list[CaseTables]] = field(default_factory=dict)
    losses: dict[Pair, pd.DataFrame] = field(default_factory=dict)
    sweeps: dict[str, Sweep] = field(default_factory=dict)
    _intervals: dict = field(default_factory=dict, repr=False)

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

    def case_values(self, pair: Pair, selection: Selection) -> CaseValues | None:
        """The per-case values of ``selection`` for ``pair`` over its seeds, or None without per-case results."""
        runs = self.per_case.get(pair)
        if not runs:
            return None
        tables = [selection.values(run) for run in runs]
        first = tables[0]
        for other in tables[1:]:
            if list(other.index) != list(first.index):
                raise ValueError(f"{pair[0]}/{pair[1]}: the seeds' per-case results name different test cases")
        values = np.stack([t.drop(columns="subject_id").to_numpy(dtype=float) for t in tables]) * selection.scale
        return CaseValues(values, tuple(map(str, first.index)), tuple(map(str, first["subject_id"])))

    def interval(self, pair: Pair, selection: Selection) -> Interval | None:
        """The bootstrap interval (``claims.bootstrap_*``, ``claims.confidence``) of ``selection`` for ``pair``;
        None without per-case results. Computed once per pair and selection."""
        key = (pair, selection)
        if key not in self._intervals:
            cv = self.case_values(pair, selection)
            c = self.cfg.claims
            self._intervals[key] = None if cv is None else bootstrap_interval(
                cv, c.bootstrap_resamples, c.confidence, c.bootstrap_seed)
        return self._intervals[key]

    def loss_still_falling(self, pair: Pair) -> str | None:
        """A caveat where the training loss of ``pair`` was still falling when its training ended
        (:func:`benchmark.convergence.still_falling`), else None. A falling training loss need not mean a rising
        test Dice (a network fitting its training set further); whether twice the steps change the Dice is
        ``benchmarks/plateau.py --double``'s check."""
        loss = self.losses.get(pair)
        if loss is None or "loss" not in loss or not still_falling(loss["loss"]):
            return None
        return (f"{pair[0]}/{pair[1]}: training loss still falling at the end "
                f"({100 * fall_over_last_quarter(loss['loss']):.0f}% over the last quarter of its steps), maybe "
                f"short of its plateau")

    def velocity_loss(self, method: str) -> str:
        """The velocity loss that trained ``method`` (a condition-head row: its method's): the model's
        ``velocity_loss`` where it has one, else the papers' ``l1``."""
        trained = self.cfg.trained_as(method)
        return self.cfg.method_config(trained).model.get("velocity_loss", "l1") if trained in self.cfg.method else "l1"

    def loss_deviation(self, method: str) -> str | None:
        """A caveat where ``method`` trained with another velocity loss than its paper's L1, else None."""
        loss = self.velocity_loss(method)
        return None if loss == "l1" else f"{method} trained with the {loss.upper()} velocity loss, not the paper's L1"

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
                  per_case={p: _seed_runs(cfg, p) for p, r in results.items()
                            if r is not None and r.ok and (paths.results(*p) / "per_case.csv").is_file()},
                  losses={(d, m): _loss(paths.run(d, cfg.trained_as(m)) / "loss.csv") for d, m in pairs},
                  sweeps=_sweeps(cfg))
    for ds in dataset_names(cfg, results):
        try:
            ev.manifests[ds] = load_manifest(paths.processed(ds))
            ev.manifest_sha256[ds] = file_sha256(paths.processed(ds) / MANIFEST)
        except (ValueError, OSError) as err:
            ev.manifest_errors[ds] = str(err)
    return ev


def _seed_runs(cfg: Config, pair: Pair) -> list[CaseTables]:
    """The per-case results of ``pair``'s main run, then of each of its extra seeds (``seeds.extra``) whose
    evaluation is there and ok."""
    extra = [paths.results(*pair, seed) for seed in cfg.seeds_of(*pair)]
    return [_case_tables(f) for f in [paths.results(*pair)] + [f for f in extra if _evaluated(f)]]


def _evaluated(folder: Path) -> bool:
    r = read_record(folder / "evaluation.json", EvaluationRecord, missing_ok=True)
    return r is not None and r.ok and (folder / "per_case.csv").is_file()


def _case_tables(folder: Path) -> CaseTables:
    ids = {"case_id": str, "subject_id": str}
    return CaseTables(pd.read_csv(folder / "per_case.csv", dtype=ids),
                      pd.read_csv(folder / "per_case_sets.csv", dtype=ids))


def _loss(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


def _sweeps(cfg: Config) -> dict[str, Sweep]:
    from benchmark.nfe_sweep import STEM

    folders = {ds: paths.results(ds, cfg.nfe_sweep.method) / STEM for ds in cfg.nfe_sweep.datasets}
    return {ds: Sweep((d / f"{STEM}.md").read_text(), pd.read_csv(d / f"{STEM}.csv"))
            for ds, d in folders.items() if (d / f"{STEM}.csv").is_file()}
