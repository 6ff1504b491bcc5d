"""The tables of the tables stage: paper-shaped tables (Markdown, LaTeX, CSV) rendered from the evidence.

Each table has the shape of one of the MedFlowSeg paper's tables (its layout: ``benchmark/layouts.py``):
Table 1 multi-class cardiac (average Dice/IoU/HD95, then Dice/IoU per structure), Table 2 methods x
modalities, Table 3 the ablation, Table 4 complexity and uncertainty. Dice and IoU are percentages, HD95 is
in mm. Every mean over cases carries its bootstrap interval (``benchmark/statistics.py``), and a Dice cell of a
method whose per-case Dice differs from MedFlowSeg's a dagger (``benchmark/significance.py``). A dataset that
could not be obtained shows "not run"; a paper row with no implementation yet shows "not implemented".
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.claims import Claim
from benchmark.data.store import atomic_write
from benchmark.evidence import Evidence, Selection
from benchmark.layouts import DATASET_GROUPS, TABLES, TableLayout
from benchmark.metrics.regions import region_key
from benchmark.reproduction import Measured, measure
from benchmark.statistics import Interval

NOT_RUN, NOT_IMPLEMENTED = "not run", "not implemented"
DAGGER = "†"
CELL_NOTE = ("Each cell: ours [interval] (paper's value, Δ = ours - paper); where a pair was trained with several "
             "seeds, ours is the mean over the seeds ± their standard deviation (ddof 1). Δ is given where our "
             "dataset stands for the paper's; \"paper X on D\": measured on other data than the paper's D. "
             "`paper/claims_report.md` gives the verdict on every cell.")
Marks = frozenset[tuple[str, str, str]]   # (dataset, column, method) of the Dice cells that get the dagger


def _loss_note(method: str, ev: Evidence) -> str | None:
    """"MSE velocity loss" where ``method`` trained with another velocity loss than the paper's L1, else None."""
    loss = ev.velocity_loss(method)
    return None if loss == "l1" else f"{loss.upper()} velocity loss"


def _row_label(method: str, ev: Evidence) -> str:
    """The method's display name, plus any velocity loss other than the paper's L1."""
    label, note = ev.catalogue.label(method), _loss_note(method, ev)
    return f"{label} [{note}]" if note else label


_DECIMALS = {"%": 2, "mm": 2, "x100": 1, "M params": 3, "GFLOPs": 2}


def with_interval(value: float, interval: Interval | None, decimals: int) -> str:
    """``value [low, high]``; over several training seeds ``mean ± spread [low, high]``, the mean over the seeds
    (``interval.point``) in place of ``value``; ``value`` alone where there is no interval."""
    if interval is None:
        return f"{value:.{decimals}f}"
    ours = f"{value:.{decimals}f}" if interval.seed_spread is None else \
        f"{interval.point:.{decimals}f} ± {interval.seed_spread:.{decimals}f}"
    return f"{ours} [{interval.low:.{decimals}f}, {interval.high:.{decimals}f}]"


def claim_cell(claim: Claim, m: Measured, with_paper: bool = True, mark: bool = False) -> str:
    """One table cell: ours with its interval (and the dagger where ``mark``), and the paper's value with the
    difference (see ``CELL_NOTE``)."""
    paper = f"{claim.value:g}"
    if m.value is None:
        status = NOT_RUN if m.implemented else NOT_IMPLEMENTED
        return f"{status} (paper {paper})" if with_paper else status
    decimals = _DECIMALS.get(claim.unit, 2)
    ours = with_interval(m.value, m.interval, decimals) + (DAGGER if mark else "")
    if not with_paper:
        return ours
    if not m.same_data:
        return f"{ours} (paper {paper} on {claim.dataset})"
    return f"{ours} (paper {paper}, Δ {m.value - claim.value:+.{decimals}f})"


def _unique(items) -> list:
    return list(dict.fromkeys(items))


def claims_table(ev: Evidence, table: str, methods: tuple[str, ...], extra_datasets: tuple[str, ...] = (),
                 extra_metrics: tuple[tuple[str, str], ...] = (), dataset: str | None = None,
                 region_datasets: tuple[str, ...] = (),
                 region_metrics: tuple[tuple[str, str], ...] = (), marks: Marks = frozenset()) -> pd.DataFrame:
    """A table of the MedFlowSeg paper in its own shape: its rows and columns, each cell ours beside the paper's.

    ``methods`` are the registered methods this table covers in the profile: a paper row whose method is
    not among them shows "not implemented" or "not run", and a method of ours with no paper row gets a row
    of its own, without paper values. ``extra_datasets`` (datasets of ours standing for none of the
    table's) add a column per ``extra_metrics`` entry of our values; ``region_datasets`` a column per
    evaluation region and ``region_metrics`` entry; ``dataset`` measures every row on it. ``marks``: the cells
    that get the dagger.
    """
    cells = [c for c in ev.claims if c.paper == "medflowseg" and c.table == table]
    columns = _unique(c.column for c in cells)
    template = {c.column: c for c in reversed(cells)}     # one claim per column: its dataset, metric, unit
    by_cell = {(c.row, c.column): c for c in cells}
    mapped = {ev.catalogue.row_method(r) for r in _unique(c.row for c in cells)}
    extra_cols = [(f"{ds} {name}", ds, metric, None) for ds in extra_datasets for metric, name in extra_metrics]
    extra_cols += [(f"{ds} {region} {name}", ds, metric, region) for ds in region_datasets
                   for region in ev.datasets[ds].regions for metric, name in region_metrics]
    index, rows, row_methods, live_rows = [], [], [], []

    def cells_of(row: str | None, method: str | None, live: bool) -> list[str]:
        """The cells of a paper ``row`` (None: a row of ours) whose ``method`` runs here (``live``) or not."""
        out = []
        for col in columns:
            claim = by_cell.get((row, col))
            if live:
                m = measure(template[col], ev, method=method, dataset=dataset)
                mark = (m.dataset, col, method) in marks
            else:
                m, mark = (Measured(None, missing=f"{row} is not implemented", implemented=False) if method is None
                           else Measured(None, missing=f"{method} not run")), False
            out.append(claim_cell(claim, m, mark=mark) if claim else
                       claim_cell(template[col], m, with_paper=False, mark=mark))
        if not live:
            return out + [NOT_RUN if method else NOT_IMPLEMENTED] * len(extra_cols)
        return out + [_extra_cell(ev, ds, method, metric, region) + (DAGGER if (ds, name, method) in marks else "")
                      for name, ds, metric, region in extra_cols]

    for row in _unique(c.row for c in cells):
        method = ev.catalogue.row_method(row)
        live = method in methods
        ours = ", ".join(filter(None, (method, ev.catalogue.stand_in(method), live and _loss_note(method, ev))))
        index.append(row + (f" [ours: {ours}]" if live else ""))
        row_methods.append(method)
        live_rows.append(live)
        rows.append(cells_of(row, method, live))
    for method in methods:
        if method in mapped:
            continue
        index.append(_row_label(method, ev))
        row_methods.append(method)
        live_rows.append(True)
        rows.append(cells_of(None, method, True))
    df = pd.DataFrame(rows, index=pd.Index(index, name="Method"), columns=columns + [c[0] for c in extra_cols])
    df.attrs["methods"] = row_methods     # the registered method of each row (None: not implemented)
    df.attrs["live"] = live_rows          # whether the row's method runs in this table
    return df


def _extra_cell(ev: Evidence, dataset: str, method: str, metric: str, region: str | None = None) -> str:
    """Our ``metric`` on ``dataset`` with its interval: its average, or its evaluation ``region``."""
    r = ev.results.get((dataset, method))
    block = None if r is None or not r.ok else r.average if region is None else \
        (r.per_region or {}).get(region_key(region))
    if block is None or block.get(metric) is None:
        return NOT_RUN
    scale = 1.0 if metric == "hd95" else 100.0
    selection = Selection(metric, None if region is None else (region_key(region),), scale)
    return with_interval(scale * block[metric], ev.interval((dataset, method), selection), 2)


def layout_datasets(layout: TableLayout, ev: Evidence) -> tuple[str, ...]:
    """The profile's datasets of ``layout``: a group of the profile, or those standing for a paper dataset."""
    if layout.datasets in DATASET_GROUPS:
        return tuple(DATASET_GROUPS[layout.datasets](ev.cfg))
    return tuple(d for d in ev.catalogue.stand_ins(layout.datasets).stand_ins if d in ev.cfg.datasets)


def unclaimed_datasets(ev: Evidence, datasets: tuple[str, ...], table: str) -> tuple[str, ...]:
    """Datasets of ours standing for none of a table's paper datasets."""
    table_datasets = {c.dataset for c in ev.claims if c.paper == "medflowseg" and c.table == table and c.dataset}
    standing = {d for name in table_datasets for d in ev.catalogue.stand_ins(name).stand_ins}
    return tuple(d for d in datasets if d not in standing)


def build_table(layout: TableLayout, ev: Evidence, marks: Marks = frozenset()) -> pd.DataFrame:
    """The table ``layout`` declares, from the evidence; ``marks``: the Dice cells that get the dagger."""
    methods = layout.row_methods(ev.cfg)
    if not layout.blocks:
        extra = unclaimed_datasets(ev, layout_datasets(layout, ev), layout.table) if layout.extra_metrics else ()
        regions = tuple(d for d in layout_datasets(layout, ev) if ev.datasets.get(d) is not None
                        and ev.datasets[d].regions) if layout.region_metrics else ()
        return claims_table(ev, layout.table, methods, extra_datasets=extra, extra_metrics=layout.extra_metrics,
                            region_datasets=regions, region_metrics=layout.region_metrics, marks=marks)
    blocks = []
    for ds in layout_datasets(layout, ev):
        df = claims_table(ev, layout.table, methods, dataset=ds, marks=marks)
        rows = list(zip(df.attrs["methods"], df.attrs["live"]))
        for col, value in layout.our_columns:
            df[col] = [_our_value(ev, ds, m, value, _paper_regions(ev, ds, layout.table)) if live
                       else NOT_RUN if m else NOT_IMPLEMENTED for m, live in rows]
        df.index = pd.MultiIndex.from_tuples([(ds, i) for i in df.index], names=["Dataset", "Method"])
        blocks.append(df)
    return pd.concat(blocks) if blocks else pd.DataFrame()


def _paper_regions(ev: Evidence, ds: str, table: str) -> tuple[str, ...]:
    """The evaluation regions the table's paper dataset is read on, where ``ds`` stands for it (Table 4: the cup)."""
    paper = {c.dataset for c in ev.claims if c.paper == "medflowseg" and c.table == table and c.dataset}
    return next((p.regions for p in map(ev.catalogue.stand_ins, sorted(paper)) if ds in p.stand_ins), ())


_COMPUTE = {   # Table 4's columns of compute, from the complexity record
    "gmacs_per_evaluation": lambda c: f"{c.macs_per_evaluation / 1e9:.3f}",
    "gflops_per_evaluation": lambda c: f"{c.flops_per_evaluation / 1e9:.3f}",
    "protocol": lambda c: f"{c.samples} x {c.evaluations_per_sample}",
}


def _our_value(ev: Evidence, ds: str, m: str, value: str, regions: tuple[str, ...] = ()) -> str:
    """A column of ours in a block of ``ds`` (see ``TableLayout.our_columns``); a set metric, with its interval,
    is read on ``regions`` (their mean) where given, as the table's paper columns are."""
    if value in _COMPUTE:
        c = ev.complexity.get((ds, m))
        return NOT_RUN if c is None or not c.ok else _COMPUTE[value](c)
    r = ev.results.get((ds, m))
    if r is None or not r.ok:
        return NOT_RUN
    if not regions:
        mean, columns = r.set_metrics["mean"][value], (value,)
    else:
        blocks = [(r.per_region or {}).get(region_key(name)) for name in regions]
        if any(b is None for b in blocks):
            return NOT_RUN
        mean = sum(b["set_metrics"][value] for b in blocks) / len(blocks)
        columns = tuple(f"{region_key(name)}_{value}" for name in regions)
    return with_interval(100 * mean, ev.interval((ds, m), Selection(None, columns)), 1)


def complexity_caption(ev: Evidence, layout: TableLayout) -> str:
    cfg, results = ev.cfg, ev.results
    pairs = [(d, m) for d in layout_datasets(layout, ev) for m in layout.row_methods(cfg)]
    ok = [(d, m) for d, m in pairs if (d, m) in results and results[(d, m)].ok]
    samples = {m: results[(d, m)].set_metrics["n_samples"] for d, m in ok}
    raters = {d: results[(d, m)].set_metrics["n_raters"] for d, m in ok}
    counted = next((c for c in ev.complexity.values() if c.ok), None)
    size = "x".join(str(v) for v in (counted.image[1:] if counted else [])) or "?"
    return (f"Profile `{cfg.profile}`: parameters and MACs are those of this profile's configuration at {size} "
            f"pixels (not the paper's 256x256 models; `benchmarks/NOTES.md` counts those). Our \"Gflops\" are "
            f"FLOPs, 2 per fvcore multiply-add (FFT and fused attention included), of the whole protocol: "
            f"once-per-image cost + samples x NFE x per evaluation; the paper counts until its samples converge. "
            f"Samples per case K (GED_K and CI use all K, unfused): {samples}; raters per case: "
            f"{raters}. CI (the paper's column) is combined as the CIMD paper prints it (3SDA/(S+D+A)), CI (harmonic) "
            f"as 3/(1/S+1/D+1/A); GED x100 with d = 1 - IoU and the diagonal included; Dice of the samples fused by "
            f"{next((results[p].conventions['fusion'] for p in ok), '?')} against the raters' "
            f"{next((results[p].conventions['reference'] for p in ok), '?')}. With several foreground classes each "
            f"pairwise score is the mean over classes; on a dataset standing for REFUGE2-Cup every column reads the "
            f"cup region alone. Each CI, GED and Dice figure is the mean over the test cases (and over the "
            f"training seeds where a pair has several). The paper's values are on REFUGE2-Cup. " + CELL_NOTE)


def results_caption(ev: Evidence, layout: TableLayout) -> str:
    cfg, results = ev.cfg, ev.results
    conv = next((r.conventions for r in results.values() if r.ok), {})
    methods = layout.caption_methods(cfg)
    datasets = layout_datasets(layout, ev)
    ok = [(d, m) for d in datasets for m in methods if (d, m) in results and results[(d, m)].ok]
    samples = {m: results[(d, m)].n_samples for d, m in ok}
    nfe = {m: results[(d, m)].nfe_per_sample for d, m in ok}
    notes = []
    for ds in datasets:
        if ds not in ev.manifests:
            continue
        info = ev.manifests[ds].dataset
        kind = "phantom" if info.phantom else "real"
        regions = "; ".join(f"{n} = {' + '.join(info.class_names[c] for c in cs)}" for n, cs in info.regions.items())
        notes.append(f"{ds}: {kind}, stands for {info.stands_for}" + (f". {info.note}" if info.note else "")
                     + (f" Regions (unions of classes): {regions}." if regions else ""))
    notes += filter(None, (ev.loss_still_falling(pair) for pair in ok))
    scale = "paper-scale" if cfg.profile == "paper" else "CPU-scale: not comparable with the paper's numbers"
    return (f"Profile `{cfg.profile}` ({scale}). "
            f"Dice and IoU in %, HD95 in mm ({conv.get('hd95_convention', '?')} convention, "
            f"{conv.get('case', '?')} as the case). Samples per case: {samples}; network evaluations "
            f"per sample (NFE): {nfe}; fused by "
            f"{conv.get('fusion', '?')}; multi-rater reference: {conv.get('reference', '?')}. "
            f"Empty masks: both empty -> {conv.get('both_empty', '?')}, one empty HD95 -> "
            f"{conv.get('one_empty_hd95', '?')}. {CELL_NOTE}\n\n" + "\n".join(f"- {n}" for n in notes))


CAPTIONS = {"results": results_caption, "complexity": complexity_caption}


def write_table(df: pd.DataFrame, stem: Path, title: str, caption_text: str) -> list[Path]:
    flat = df.copy()
    flat.columns = [" ".join(c) if isinstance(c, tuple) else c for c in df.columns]
    flat = flat.reset_index()  # row labels (one level or several) become ordinary columns
    md = f"## {title}\n\n{flat.to_markdown(index=False)}\n\n{caption_text}\n"
    tex = df.to_latex(caption=title, multicolumn=True, escape=True).replace("Δ", r"$\Delta$").replace(
        DAGGER, r"$^{\dagger}$")   # pdflatex-safe
    out = []
    for suffix, text in ((".md", md), (".tex", tex)):
        p = stem.with_suffix(suffix)
        atomic_write(p, lambda t, text=text: t.write_text(text))
        out.append(p)
    p = stem.with_suffix(".csv")
    atomic_write(p, lambda t: flat.to_csv(t, index=False))
    out.append(p)
    return out


def write_tables(ev: Evidence, folder: Path) -> list[Path]:
    """Every table of :data:`benchmark.layouts.TABLES` as ``folder/<file>.{md,tex,csv}``, and its paired tests
    against MedFlowSeg as ``folder/<file>_wilcoxon.csv`` (``benchmark/significance.py``)."""
    from benchmark.significance import legend, marks, paired_tests, write_tests

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for layout in TABLES:
        tests = paired_tests(layout, ev)
        tests_file = folder / f"{layout.file}_wilcoxon.csv"
        caption = f"{CAPTIONS[layout.caption](ev, layout)}\n\n{legend(ev, layout, tests, tests_file.name)}"
        written += write_table(build_table(layout, ev, marks(tests)), folder / layout.file, layout.title, caption)
        written.append(write_tests(tests, tests_file))
    return written


def write_nfe_sweeps(ev: Evidence, tables: Path, figures: Path) -> list[Path]:
    """Gather the sweep stage's per-dataset tables into one Markdown file, and one figure."""
    from benchmark.nfe_sweep import STEM, plot_datasets

    if not ev.sweeps:
        return []
    text = "\n".join(s.markdown for s in ev.sweeps.values())
    md = tables / f"{STEM}.md"
    atomic_write(md, lambda t: t.write_text(text))
    sweeps = {ds: s.rows for ds, s in ev.sweeps.items() if not s.rows.empty}
    return [md] + ([plot_datasets(sweeps, ev.cfg.nfe_sweep.method, figures / f"{STEM}.png")] if sweeps else [])
