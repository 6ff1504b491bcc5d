"""The tables stage: load the evidence once, then render it.

Everything written is a function of one :class:`benchmark.evidence.Evidence`: the tables
(``benchmark/tables.py``, laid out by ``benchmark/layouts.py``), the figures (``benchmark/figures.py``), the
claims report (``benchmark/report.py``), ``paper/metrics.json`` (:func:`headline_metrics`) and the MLflow
runs (``benchmark/tracking.py``).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from benchmark import paths
from benchmark.config import Config
from benchmark.data.store import atomic_write, json_text
from benchmark.evidence import Evidence, Selection, load_evidence
from benchmark.reproduction import Line, judge_all


def render_all(cfg: Config, log_mlflow: bool = True) -> list[Path]:
    """Write everything under ``paper/`` (and log it to MLflow); returns the files written."""
    from benchmark.figures import qualitative_figure, training_curves_figure, uncertainty_figure
    from benchmark.report import write_report
    from benchmark.tables import write_nfe_sweeps, write_tables

    ev = load_evidence(cfg)
    tables, figures = paths.PAPER / "tables", paths.PAPER / "figures"
    written = write_tables(ev, tables)
    written += write_nfe_sweeps(ev, tables, figures)
    written.append(qualitative_figure(ev, figures / "qualitative.png"))
    written.append(uncertainty_figure(ev, figures / "uncertainty.png"))
    written.append(training_curves_figure(ev, figures / "training_curves.png"))
    lines = judge_all(ev)
    written += write_report(ev, lines, paths.PAPER)     # after the figures: the report links those present
    headline = flat_metrics(headline_metrics(ev, lines))
    metrics_file = paths.PAPER / "metrics.json"
    atomic_write(metrics_file, lambda t: t.write_text(json_text(headline, sort_keys=True)))
    if log_mlflow:
        from benchmark.tracking import log_all
        log_all(ev, written, summary_metrics=headline)
    return written + [metrics_file]


def headline_metrics(ev: Evidence, lines: list[Line]) -> dict[str, dict[str, float]]:
    """What ``dvc metrics show`` lists for the tables stage: each main method's Dice (%) averaged over the
    main matrix's datasets (the ablation variants have Table 3); each compared method's Dice averaged over
    the baselines' datasets, where it has all of them, so the baselines compare on equal data; and how many
    claims got each verdict. A pair trained with several seeds counts with its mean over them."""
    cfg = ev.cfg

    def dice(ds: str, m: str) -> float | None:
        """The pair's Dice, over its training seeds where it has several."""
        r = ev.results.get((ds, m))
        if r is None or not r.ok or r.average["dice"] is None:
            return None
        seeds = ev.interval((ds, m), Selection("dice", None))
        return seeds.point if seeds is not None and seeds.n_seeds > 1 else 100 * r.average["dice"]

    def mean_over(datasets: tuple[str, ...], methods: tuple[str, ...], complete: bool) -> dict[str, float]:
        out = {}
        for m in methods:
            values = [v for ds in datasets if (v := dice(ds, m)) is not None]
            if values and (not complete or len(values) == len(datasets)):
                out[m] = sum(values) / len(values)
        return out

    verdicts = Counter(ln.verdict.replace(" ", "_") for ln in lines)
    out = {"dice_mean": mean_over(cfg.datasets, cfg.methods, complete=False)}
    if cfg.baselines.datasets:
        out["dice_mean_baseline_datasets"] = mean_over(cfg.baselines.datasets, cfg.compared_methods, complete=True)
    out["claims"] = dict(verdicts)
    return out


def flat_metrics(nested: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"{group}.{key}": value for group, d in nested.items() for key, value in d.items()}
