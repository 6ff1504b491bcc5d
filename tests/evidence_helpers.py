"""Hand-made stage records and evidence for the tests of the tables stage (tables, claims, report)."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from benchmark.catalogue import load_catalogue
from benchmark.claims import load_claims
from benchmark.evidence import CaseTables, Evidence
from benchmark.records import ComplexityRecord, EvaluationRecord, Status
from tests.conftest import ROOT

CATALOGUE = ROOT / "paper" / "catalogue.yaml"
CLAIMS = ROOT / "paper" / "claims.yaml"
CLASSES = ("background", "RV", "Myo", "LV")


def evaluation(dice: float, n_samples: int = 4, lv: float = 0.9, hd95: float = 3.0, lv_hd95: float = 1.0,
               set_means: dict | None = None) -> EvaluationRecord:
    """An ok evaluation with average Dice ``dice`` (IoU half of it) and an LV class."""
    means = set_means or {f"ged_{n_samples}": 0.25, "hm_iou": 0.5, "mdm": 0.6, "ci_sensitivity": 0.9,
                          "ci_diversity_agreement": 0.8, "ci_paper": 0.7, "ci_harmonic": 0.75}
    return EvaluationRecord(
        Status.OK, dataset="d", method="m", phantom=True, n_cases=3, n_samples=n_samples, nfe_per_sample=10,
        seconds_per_case=0.1, average={"dice": dice, "iou": dice / 2, "hd95": hd95},
        per_class={"LV": {"dice": lv, "iou": lv / 2, "hd95": lv_hd95}},
        set_metrics={"n_samples": n_samples, "n_raters": 4, "mean": means},
        conventions={"fusion": "staple", "reference": "majority"})


def complexity(params: int = 840_000) -> ComplexityRecord:
    return ComplexityRecord(Status.OK, method="m", image=[1, 64, 64], num_classes=4, params=params, macs_fixed=0.0,
                            macs_per_sample=0.0, macs_per_evaluation=2.5e7, macs_protocol=1.1e9,
                            flops_per_evaluation=5e7, flops_protocol=2.2e9, samples=4,
                            evaluations_per_sample=10, counted_by="test", uncounted_operators=[])


def case_tables(dice: dict[str, list[float]], subjects: list[str] | None = None,
                sets: dict[str, list[float]] | None = None) -> CaseTables:
    """One run's per-case results as the evaluate stage writes them: ``dice`` of each class (or ``region:<name>``)
    per case (IoU half of it, HD95 2 mm), cases ``c00``, ``c01``, ... of ``subjects`` (default: one subject per
    case), and the set metrics ``sets`` per case."""
    n = len(next(iter(dice.values())))
    ids = [f"c{i:02d}" for i in range(n)]
    subjects = subjects or [f"s{i:02d}" for i in range(n)]
    classes = pd.DataFrame([{"case_id": c, "subject_id": s, "class": k, "dice": v[i], "iou": v[i] / 2, "hd95": 2.0}
                            for k, v in dice.items() for i, (c, s) in enumerate(zip(ids, subjects))])
    return CaseTables(classes, pd.DataFrame({"case_id": ids, "subject_id": subjects, **(sets or {})}))


def evidence(cfg, results: dict, complexity_records: dict | None = None, phantom: bool = True,
             catalogue=None, per_case: dict | None = None) -> Evidence:
    """Evidence of ``results`` for ``cfg``: the project's catalogue and claims, and every dataset a manifest
    with the classes :data:`CLASSES` (``phantom`` or real); ``per_case``: pair -> its :class:`CaseTables`, one
    per seed."""
    catalogue = catalogue or load_catalogue(CATALOGUE)
    info = SimpleNamespace(phantom=phantom, class_names=CLASSES, regions={})
    datasets = {d for d, _ in results} | set(cfg.datasets)
    return Evidence(cfg, catalogue, load_claims(CLAIMS, catalogue.papers), results, complexity_records or {},
                    manifests={d: SimpleNamespace(dataset=info) for d in datasets}, per_case=per_case or {})
