"""The tables stage: paper-shaped tables (Markdown, LaTeX, CSV), the qualitative figure, MLflow.

Table 1 has the shape of the MedFlowSeg paper's Table 1 (multi-class cardiac: average
Dice/IoU/HD95, then Dice/IoU per structure); Table 2 the shape of its Table 2 (methods x
modalities). Dice and IoU are percentages, HD95 is in mm. A dataset that could not be
obtained shows "not run"; a paper row with no implementation yet shows "not implemented".
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd

from benchmark import paths
from benchmark.claims import Claim, load_claims
from benchmark.config import Config
from benchmark.data.manifest import load_manifest
from benchmark.data.store import atomic_write
from benchmark.reproduction import PAPER_DATASETS, PAPER_METHODS, Evidence, Measured, measure

# What stands on a paper's row where it is not the authors' code: shown beside the method's name.
STAND_INS = {"flowsdf": "suite reimplementation", "atfm": "suite reimplementation",
             "medsegdiff": "MedSegDiff-V1, suite reimplementation", "nnunet": "nnunetv2, 2d configuration",
             "unetr": "MONAI UNETR in 2D", "swin-unetr": "MONAI Swin UNETR in 2D"}
# A method's name on a row of its own (a table without its paper row).
METHOD_LABELS = {"unet": "UNet (MONAI)", "flowseg-plain": "flowseg-plain (flow-matching scaffold, not MedFlowSeg)",
                 "medflowseg": "MedFlowSeg", "flowsdf": "FlowSDF (suite reimplementation)",
                 "atfm": "ATFM (suite reimplementation)", "medsegdiff": "MedSegDiff-V1 (suite reimplementation)",
                 "nnunet": "nnU-Net (nnunetv2, 2d)", "unetr": "UNETR (MONAI, 2D)", "swin-unetr": "Swin UNETR (MONAI, 2D)"}
NOT_RUN, NOT_IMPLEMENTED = "not run", "not implemented"
CELL_NOTE = ("Each cell: ours (paper's value, Δ = ours - paper). Δ is given where our dataset stands for the "
             "paper's; \"paper X on D\": measured on other data than the paper's D. `paper/claims_report.md` gives "
             "the verdict on every cell.")


def load_results(cfg: Config) -> dict[tuple[str, str], dict]:
    return {(ds, m): _read(paths.results(ds, m) / "evaluation.json") for ds, m in cfg.pairs()}


def load_complexity(cfg: Config) -> dict[tuple[str, str], dict]:
    return {(ds, m): _read(paths.results(ds, m) / "complexity.json")
            for ds in cfg.table4.datasets for m in cfg.table4.methods}


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"status": "missing"}


def _row_label(method: str, cfg: Config) -> str:
    """The method's display name, plus any velocity loss other than the paper's L1."""
    label = METHOD_LABELS.get(method, method)
    loss = cfg.method_config(method).model.get("velocity_loss", "l1") if method in cfg.method else "l1"
    return label if loss == "l1" else f"{label} [{loss.upper()} velocity loss]"


_DECIMALS = {"%": 2, "mm": 2, "x100": 1, "M params": 3, "GFLOPs": 2}


def _number(value: float, unit: str) -> str:
    return f"{value:.{_DECIMALS.get(unit, 2)}f}"


def claim_cell(claim: Claim, m: Measured, with_paper: bool = True) -> str:
    """One table cell: ours, and the paper's value with the difference (see ``CELL_NOTE``)."""
    paper = f"{claim.value:g}"
    if m.value is None:
        status = NOT_IMPLEMENTED if m.missing.endswith("not implemented") else NOT_RUN
        return f"{status} (paper {paper})" if with_paper else status
    ours = _number(m.value, claim.unit)
    if not with_paper:
        return ours
    if not m.same_data:
        return f"{ours} (paper {paper} on {claim.dataset})"
    return f"{ours} (paper {paper}, Δ {m.value - claim.value:+.{_DECIMALS.get(claim.unit, 2)}f})"


def _unique(items) -> list:
    return list(dict.fromkeys(items))


def claims_table(ev: Evidence, claims: list[Claim], table: str, methods: tuple[str, ...],
                 extra_datasets: tuple[str, ...] = (), dataset: str | None = None) -> pd.DataFrame:
    """A table of the MedFlowSeg paper in its own shape: its rows and columns, each cell ours beside the paper's.

    ``methods`` are the registered methods this table covers in the profile: a paper row whose method is
    not among them shows "not implemented" or "not run", and a method of ours with no paper row gets a row
    of its own, without paper values. ``extra_datasets`` (datasets of ours standing for none of the
    table's) add columns of our values; ``dataset`` measures every row on that dataset.
    """
    cells = [c for c in claims if c.paper == "medflowseg" and c.table == table]
    columns = _unique(c.column for c in cells)
    template = {c.column: c for c in reversed(cells)}     # one claim per column: its dataset, metric, unit
    by_cell = {(c.row, c.column): c for c in cells}
    mapped = {PAPER_METHODS.get(r) for r in _unique(c.row for c in cells)}
    extra_cols = [(f"{ds} {name}", ds, metric) for ds in extra_datasets
                  for metric, name in _EXTRA_METRICS.get(table, ())]
    index, rows, row_methods, live_rows = [], [], [], []

    def measured(col: str, method: str) -> Measured:
        return measure(template[col], ev, method=method, dataset=dataset)

    for row in _unique(c.row for c in cells):
        method = PAPER_METHODS.get(row)
        live = method in methods
        index.append(row + (f" [ours: {', '.join(filter(None, (method, STAND_INS.get(method))))}]" if live else ""))
        row_methods.append(method)
        live_rows.append(live)
        absent = Measured(None, missing=f"{row} is not implemented" if method is None else f"{method} not run")
        cells_row = []
        for col in columns:
            claim = by_cell.get((row, col))
            m = measured(col, method) if live else absent
            cells_row.append(claim_cell(claim, m) if claim else claim_cell(template[col], m, with_paper=False))
        cells_row += [_extra_cell(ev, ds, method, metric) if live else (NOT_RUN if method else NOT_IMPLEMENTED)
                      for _, ds, metric in extra_cols]
        rows.append(cells_row)
    for method in methods:
        if method in mapped:
            continue
        index.append(_row_label(method, ev.cfg))
        row_methods.append(method)
        live_rows.append(True)
        rows.append([claim_cell(template[col], measured(col, method), with_paper=False) for col in columns]
                    + [_extra_cell(ev, ds, method, metric) for _, ds, metric in extra_cols])
    df = pd.DataFrame(rows, index=pd.Index(index, name="Method"), columns=columns + [c for c, _, _ in extra_cols])
    df.attrs["methods"] = row_methods     # the registered method of each row (None: not implemented)
    df.attrs["live"] = live_rows          # whether the row's method runs in this table
    return df


# Columns added for a dataset of ours that stands for none of a table's: (metric key, column name).
_EXTRA_METRICS = {"Table 2": (("dice", "Dice"), ("iou", "IoU"), ("hd95", "HD95")), "Table 3": (("dice", "Dice"),)}


def _extra_cell(ev: Evidence, dataset: str, method: str, metric: str) -> str:
    r = ev.results.get((dataset, method), {})
    if r.get("status") != "ok" or r["average"].get(metric) is None:
        return NOT_RUN
    v = r["average"][metric]
    return f"{v:.2f}" if metric == "hd95" else f"{100 * v:.2f}"


def _unclaimed(datasets: tuple[str, ...], table_datasets: set[str]) -> tuple[str, ...]:
    """Datasets of ours standing for none of a table's paper datasets."""
    standing = {d for name in table_datasets for d in PAPER_DATASETS.get(name, ((), None))[0]}
    return tuple(d for d in datasets if d not in standing)


def _table_datasets(claims: list[Claim], table: str) -> set[str]:
    return {c.dataset for c in claims if c.paper == "medflowseg" and c.table == table and c.dataset}


def table1(ev: Evidence, claims: list[Claim]) -> pd.DataFrame:
    """Paper Table 1: multi-class cardiac segmentation (ACDC), average and per-structure Dice/IoU, HD95."""
    return claims_table(ev, claims, "Table 1", ev.cfg.compared_methods)


def table2(ev: Evidence, claims: list[Claim]) -> pd.DataFrame:
    """Paper Table 2: methods across modalities; datasets of ours with no paper column are added."""
    extra = _unclaimed(ev.cfg.datasets, _table_datasets(claims, "Table 2"))
    return claims_table(ev, claims, "Table 2", ev.cfg.compared_methods, extra_datasets=extra)


def table3(ev: Evidence, claims: list[Claim]) -> pd.DataFrame:
    """Paper Table 3: MedFlowSeg's ablation, Dice; our ablation datasets without a paper column are added."""
    methods = ev.cfg.ablations.methods + tuple(m for m in ("medflowseg",) if m in ev.cfg.methods)
    extra = _unclaimed(ev.cfg.ablations.datasets, _table_datasets(claims, "Table 3"))
    return claims_table(ev, claims, "Table 3", methods, extra_datasets=extra)


TABLE4_EXTRA = ["GMACs per evaluation", "Samples x NFE", "CI (harmonic)", "HM-IoU"]


def table4(ev: Evidence, claims: list[Claim]) -> pd.DataFrame:
    """Paper Table 4: complexity and uncertainty, one block of rows per dataset of ``table4``.

    The paper's columns (Params in M, GFLOPs, CI and GED x100, Dice %), then ours alone: GMACs per network
    evaluation, the protocol (samples x NFE), CI as a harmonic mean, and HM-IoU x100.
    """
    blocks = []
    for ds in ev.cfg.table4.datasets:
        df = claims_table(ev, claims, "Table 4", ev.cfg.table4.methods, dataset=ds)
        rows = list(zip(df.attrs["methods"], df.attrs["live"]))
        getters = (_gmacs_eval, _protocol, lambda ev, ds, m: _set_metric(ev, ds, m, "ci_harmonic"),
                   lambda ev, ds, m: _set_metric(ev, ds, m, "hm_iou"))
        for col, get in zip(TABLE4_EXTRA, getters):
            df[col] = [get(ev, ds, m) if live else NOT_RUN if m else NOT_IMPLEMENTED for m, live in rows]
        df.index = pd.MultiIndex.from_tuples([(ds, i) for i in df.index], names=["Dataset", "Method"])
        blocks.append(df)
    return pd.concat(blocks) if blocks else pd.DataFrame()


def _complexity(ev: Evidence, ds: str, m: str) -> dict | None:
    c = ev.complexity.get((ds, m), {})
    return c if c.get("status") == "ok" else None


def _set_metric(ev: Evidence, ds: str, m: str, key: str) -> str:
    r = ev.results.get((ds, m), {})
    return f"{100 * r['set_metrics']['mean'][key]:.1f}" if r.get("status") == "ok" else NOT_RUN


def _gmacs_eval(ev, ds, m):
    c = _complexity(ev, ds, m)
    return f"{c['macs_per_evaluation'] / 1e9:.3f}" if c else NOT_RUN


def _protocol(ev, ds, m):
    c = _complexity(ev, ds, m)
    return f"{c['samples']} x {c['evaluations_per_sample']}" if c else NOT_RUN


def table4_caption(cfg: Config, results: dict, complexity: dict) -> str:
    pairs = [(d, m) for d in cfg.table4.datasets for m in cfg.table4.methods]
    ok = [(d, m) for d, m in pairs if results.get((d, m), {}).get("status") == "ok"]
    samples = {m: results[(d, m)]["set_metrics"]["n_samples"] for d, m in ok}
    raters = {d: results[(d, m)]["set_metrics"]["n_raters"] for d, m in ok}
    counted = next((c for c in complexity.values() if c.get("status") == "ok"), {})
    size = "x".join(str(v) for v in counted.get("image", [])[1:]) or "?"
    return (f"Profile `{cfg.profile}`: parameters and MACs are those of this profile's configuration at {size} "
            f"pixels (not the paper's 256x256 models; `benchmarks/NOTES.md` counts those). Our \"Gflops\" are "
            f"fvcore multiply-adds (1 multiply-add = 1; FFT and fused attention included) of the whole protocol: "
            f"once-per-image cost + samples x NFE x per evaluation; the paper counts until its samples converge. "
            f"Samples per case K (GED_K and CI use all K, unfused): {samples}; raters per case: "
            f"{raters}. CI (the paper's column) is combined as the CIMD paper prints it (3SDA/(S+D+A)), CI (harmonic) "
            f"as 3/(1/S+1/D+1/A); GED x100 with d = 1 - IoU and the diagonal included; Dice of the samples fused by "
            f"{next((results[p]['conventions']['fusion'] for p in ok), '?')} against the raters' "
            f"{next((results[p]['conventions']['reference'] for p in ok), '?')}. With several foreground classes each "
            f"pairwise score is the mean over classes. Each figure is the mean over the test cases of one training run "
            f"(one seed). The paper's values are on REFUGE2-Cup. " + CELL_NOTE)


def caption(cfg: Config, results: dict, datasets: list[str], methods: list[str] | None = None) -> str:
    conv = next((r["conventions"] for r in results.values() if r.get("status") == "ok"), {})
    methods = list(cfg.compared_methods) if methods is None else methods
    ok = [(d, m) for d in datasets for m in methods if results.get((d, m), {}).get("status") == "ok"]
    samples = {m: results[(d, m)]["n_samples"] for d, m in ok}
    nfe = {m: results[(d, m)]["nfe_per_sample"] for d, m in ok}
    notes = []
    for ds in datasets:
        try:
            info = load_manifest(paths.processed(ds)).dataset
        except ValueError:
            continue
        kind = "phantom" if info.phantom else "real"
        notes.append(f"{ds}: {kind}, stands for {info.stands_for}" + (f". {info.note}" if info.note else ""))
    scale = "paper-scale" if cfg.profile == "paper" else "CPU-scale: not comparable with the paper's numbers"
    return (f"Profile `{cfg.profile}` ({scale}). "
            f"Dice and IoU in %, HD95 in mm ({conv.get('hd95_convention', '?')} convention, "
            f"{conv.get('case', '?')} as the case). Samples per case: {samples}; network evaluations "
            f"per sample (NFE): {nfe}; fused by "
            f"{conv.get('fusion', '?')}; multi-rater reference: {conv.get('reference', '?')}. "
            f"Empty masks: both empty -> {conv.get('both_empty', '?')}, one empty HD95 -> "
            f"{conv.get('one_empty_hd95', '?')}. {CELL_NOTE}\n\n" + "\n".join(f"- {n}" for n in notes))


def nfe_sweep_outputs(cfg: Config, tables: Path, figures: Path) -> list[Path]:
    """Gather the sweep stage's per-dataset tables into one Markdown file, and one figure."""
    from benchmark.nfe_sweep import STEM, plot_datasets

    method = cfg.nfe_sweep.method
    found = {ds: paths.results(ds, method) / STEM for ds in cfg.nfe_sweep.datasets
             if (paths.results(ds, method) / STEM / f"{STEM}.csv").is_file()}
    if not found:
        return []
    text = "\n".join((d / f"{STEM}.md").read_text() for d in found.values())
    md = tables / f"{STEM}.md"
    atomic_write(md, lambda t: t.write_text(text))
    sweeps = {ds: pd.read_csv(d / f"{STEM}.csv") for ds, d in found.items()}
    sweeps = {ds: df for ds, df in sweeps.items() if not df.empty}
    return [md] + ([plot_datasets(sweeps, method, figures / f"{STEM}.png")] if sweeps else [])


def write_table(df: pd.DataFrame, stem: Path, title: str, caption_text: str) -> list[Path]:
    flat = df.copy()
    flat.columns = [" ".join(c) if isinstance(c, tuple) else c for c in df.columns]
    flat = flat.reset_index()  # row labels (one level or several) become ordinary columns
    md = f"## {title}\n\n{flat.to_markdown(index=False)}\n\n{caption_text}\n"
    tex = df.to_latex(caption=title, multicolumn=True, escape=True).replace("Δ", r"$\Delta$")  # pdflatex-safe
    out = []
    for suffix, text in ((".md", md), (".tex", tex)):
        p = stem.with_suffix(suffix)
        atomic_write(p, lambda t, text=text: t.write_text(text))
        out.append(p)
    p = stem.with_suffix(".csv")
    atomic_write(p, lambda t: flat.to_csv(t, index=False))
    out.append(p)
    return out


def render_all(cfg: Config, log_mlflow: bool = True) -> list[Path]:
    from benchmark.figures import qualitative_figure, training_curves_figure, uncertainty_figure
    from benchmark.report import write_report
    from benchmark.reproduction import judge_all

    results = load_results(cfg)
    ev = Evidence(cfg, results, load_complexity(cfg))
    claims = load_claims(paths.PAPER / "claims.yaml")
    tables = paths.PAPER / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    written = write_table(table1(ev, claims), tables / "table1_cardiac",
                          "Table 1: multi-class cardiac segmentation (ACDC in the paper)",
                          caption(cfg, results, [d for d in PAPER_DATASETS["ACDC"][0] if d in cfg.datasets]))
    written += write_table(table2(ev, claims), tables / "table2_modalities",
                           "Table 2: methods across modalities", caption(cfg, results, list(cfg.datasets)))
    written += write_table(table3(ev, claims), tables / "table3_ablation", "Table 3: MedFlowSeg ablation (Dice %)",
                           caption(cfg, results, list(cfg.ablations.datasets),
                                   list(cfg.ablations.methods) + ["medflowseg"]))
    written += write_table(table4(ev, claims), tables / "table4_complexity_uncertainty",
                           "Table 4: model complexity and sample uncertainty",
                           table4_caption(cfg, results, ev.complexity))
    written += nfe_sweep_outputs(cfg, tables, paths.PAPER / "figures")
    figures = paths.PAPER / "figures"
    written.append(qualitative_figure(cfg, figures / "qualitative.png"))
    written.append(uncertainty_figure(cfg, figures / "uncertainty.png"))
    written.append(training_curves_figure(cfg, figures / "training_curves.png"))
    lines = judge_all(claims, ev)
    written += write_report(ev, lines, paths.PAPER)
    headline = flat_metrics(headline_metrics(cfg, results, lines))
    metrics_file = paths.PAPER / "metrics.json"
    atomic_write(metrics_file, lambda t: t.write_text(json.dumps(headline, indent=1, sort_keys=True)))
    if log_mlflow:
        from benchmark.tracking import log_all
        log_all(cfg, results, written, summary_metrics=headline)
    return written + [metrics_file]


def headline_metrics(cfg: Config, results: dict, lines: list) -> dict[str, dict[str, float]]:
    """What ``dvc metrics show`` lists for the tables stage: each main method's Dice (%) averaged over the
    main matrix's datasets (the ablation variants have Table 3); each compared method's Dice averaged over
    the baselines' datasets, where it has all of them, so the baselines compare on equal data; and how many
    claims got each verdict."""
    def dice(ds: str, m: str) -> float | None:
        r = results.get((ds, m), {})
        return 100 * r["average"]["dice"] if r.get("status") == "ok" and r["average"]["dice"] is not None else None

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
