"""Paired tests of each table: every method against MedFlowSeg, on each dataset of the table, on the table's Dice.

The table's Dice on a dataset is the Dice column that reads the dataset as a whole: the paper's column for the
paper dataset ours stands for, as the catalogue reads it (the average, one class, or regions), or our own
"<dataset> Dice" column; not the per-structure columns (Table 1's RV, Myo, LV) nor our region columns. Each
method's per-case Dice (a case's mean over the classes or regions the column averages, then over seeds) is
compared with MedFlowSeg's on the cases both have, matched by case id, with a two-sided Wilcoxon signed-rank
test (``benchmark.statistics.paired_wilcoxon``); Holm's adjustment runs over all tests of one table, and a test
whose adjusted p is below ``claims.significance`` marks the method's cell with a dagger.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.data.store import atomic_write
from benchmark.evidence import Evidence, Selection
from benchmark.layouts import TableLayout
from benchmark.reproduction import measure
from benchmark.statistics import ZERO_METHOD, holm, paired_wilcoxon
from benchmark.tables import DAGGER, Marks, layout_datasets, unclaimed_datasets

REFERENCE = "medflowseg"
COLUMNS = ["dataset", "column", "method", "reference", "n_pairs", "statistic", "p", "p_holm", "significant",
           "direction", "mean_difference"]


def dice_cells(layout: TableLayout, ev: Evidence) -> list[tuple[str, str, str, Selection]]:
    """``(dataset, column, method, per-case selection)`` of each Dice cell of the table a test compares: a
    measured method of the table other than MedFlowSeg, on a dataset MedFlowSeg runs on in the table."""
    methods = layout.row_methods(ev.cfg)
    if REFERENCE not in methods:
        return []
    claims = [c for c in ev.claims if c.paper == "medflowseg" and c.table == layout.table and c.metric == "dice"]
    template = {c.column: c for c in reversed(claims)}
    out = []
    for ds in layout_datasets(layout, ev) if layout.blocks else (None,):
        for column, claim in template.items():
            for m in methods:
                measured = measure(claim, ev, method=m, dataset=ds)
                if measured.value is not None and ev.structure(measured.dataset, column) is None:
                    out.append((measured.dataset, column, m, measured.selection))
    name = next((n for metric, n in layout.extra_metrics if metric == "dice"), None)
    if name and not layout.blocks:
        for ds in unclaimed_datasets(ev, layout_datasets(layout, ev), layout.table):
            out += [(ds, f"{ds} {name}", m, Selection("dice", None)) for m in methods
                    if (r := ev.results.get((ds, m))) is not None and r.ok]
    return [c for c in out if c[2] != REFERENCE]


def paired_tests(layout: TableLayout, ev: Evidence) -> pd.DataFrame:
    """One row per test (:data:`COLUMNS`); ``direction``: whether the method's per-case Dice is on average
    higher or lower than MedFlowSeg's."""
    rows = []
    for ds, column, m, selection in dice_cells(layout, ev):
        ours, ref = ev.case_values((ds, m), selection), ev.case_values((ds, REFERENCE), selection)
        if ours is None or ref is None:
            continue
        t = paired_wilcoxon(ours.per_case(), ref.per_case())
        if t.p is None:
            continue
        rows.append({"dataset": ds, "column": column, "method": m, "reference": REFERENCE, "n_pairs": t.n_pairs,
                     "statistic": t.statistic, "p": t.p, "mean_difference": t.mean_difference,
                     "direction": "higher" if t.mean_difference > 0 else "lower" if t.mean_difference < 0 else "equal"})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["p_holm"] = holm(df["p"].tolist())
    df["significant"] = df["p_holm"] < ev.cfg.claims.significance
    return df


def marks(tests: pd.DataFrame) -> Marks:
    return frozenset(zip(*(tests.loc[tests["significant"], c] for c in ("dataset", "column", "method"))))


def legend(ev: Evidence, layout: TableLayout, tests: pd.DataFrame, tests_file: str) -> str:
    """The line under a table: what the intervals are, the cases and seeds behind them, and the dagger."""
    c = ev.cfg.claims
    pairs = [(ds, m) for ds in layout_datasets(layout, ev) for m in layout.row_methods(ev.cfg)]
    runs = {p: ev.per_case[p] for p in pairs if p in ev.per_case}
    cases = {ds: (run[0].classes["case_id"].nunique(), run[0].classes["subject_id"].nunique())
             for (ds, _), run in runs.items()}
    several = "; ".join(f"{ds}/{m} {len(run)}" for (ds, m), run in runs.items() if len(run) > 1)
    seeds = "none" if not runs else "1" + (f", except {several}" if several else "")
    counts = "; ".join(f"{ds} {n} ({s})" for ds, (n, s) in sorted(cases.items())) or "none"
    return (f"Intervals: [low, high] is the {100 * c.confidence:g}% percentile bootstrap interval of the mean over "
            f"cases ({c.bootstrap_resamples} resamples with seed {c.bootstrap_seed}, drawing subjects with all "
            f"their cases, and training seeds where there are several); a value without one has no per-case "
            f"results; ± is the standard deviation over a cell's training seeds (ddof 1). Cases (subjects) per "
            f"dataset: {counts}; training seeds per cell: {seeds}. {DAGGER}: per-case Dice differs from MedFlowSeg's "
            f"at Holm-adjusted p < {c.significance:g} (two-sided Wilcoxon signed-rank over the cases matched by id, "
            f"zero_method '{ZERO_METHOD}'; Holm over the {len(tests)} test{'' if len(tests) == 1 else 's'} of this "
            f"table, `{tests_file}`).")


def write_tests(tests: pd.DataFrame, path: Path) -> Path:
    atomic_write(path, lambda t: tests.to_csv(t, index=False))
    return path
