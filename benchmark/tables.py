"""The tables stage: paper-shaped tables (Markdown, LaTeX, CSV), the qualitative figure, MLflow.

Table 1 has the shape of the MedFlowSeg paper's Table 1 (multi-class cardiac: average
Dice/IoU/HD95, then Dice/IoU per structure); Table 2 the shape of its Table 2 (methods x
modalities). Dice and IoU are percentages, HD95 is in mm. A dataset that could not be
obtained shows "not run"; a paper row with no implementation yet shows "not implemented".
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from benchmark import paths
from benchmark.config import Config
from benchmark.data.manifest import load_manifest
from benchmark.data.store import atomic_write

# Paper rows (MedFlowSeg Table 1) -> our registered method name, or None while not implemented.
TABLE1_PAPER_ROWS = {"UNet": "unet", "nnUNet": None, "TransUNet": None, "SwinUNet": None, "MT-UNet": None,
                     "EnsemDiff": None, "SegDiff": None, "MedSegDiff": None, "MedSegDiff-V2": None,
                     "FlowSDF": None, "MedFlowSeg": "medflowseg"}
METHOD_LABELS = {"unet": "UNet (MONAI)", "flowseg-plain": "flowseg-plain (flow-matching scaffold, not MedFlowSeg)",
                 "medflowseg": "MedFlowSeg"}
# Paper Table 3 rows in order (+ Table 4's "bone + FA-A."): method -> (SA, DB-SA, FA-A. w/o Mod., Neural Mod.)
ABLATION_ROWS = {"medflowseg-backbone": ("", "", "", ""), "medflowseg-sa": ("x", "", "", ""),
                 "medflowseg-dbsa": ("", "x", "", ""), "medflowseg-nomod": ("", "x", "x", ""),
                 "medflowseg": ("", "x", "x", "x"), "medflowseg-fa": ("", "", "x", "x")}
# Paper Table 4 rows -> our method, or None while not implemented. The paper's "bone + DB-SA" and
# "bone + FA-A." are the backbone with one conditioning module (Table 3's DB-SA row and our -fa).
TABLE4_PAPER_ROWS = {"EnsemDiff": None, "SegDiff": None, "MedSegDiff": None, "MedSegDiff-V2": None, "FlowSDF": None,
                     "bone + DB-SA": "medflowseg-dbsa", "bone + FA-A.": "medflowseg-fa", "MedFlowSeg": "medflowseg"}
NOT_RUN, NOT_IMPLEMENTED = "not run", "not implemented"


def load_results(cfg: Config) -> dict[tuple[str, str], dict]:
    pairs = [(ds, m) for ds in cfg.datasets for m in cfg.methods]
    pairs += [(ds, m) for ds in cfg.ablations.datasets for m in cfg.ablations.methods]
    return {(ds, m): _read(paths.results(ds, m) / "evaluation.json") for ds, m in pairs}


def load_complexity(cfg: Config) -> dict[tuple[str, str], dict]:
    return {(ds, m): _read(paths.results(ds, m) / "complexity.json")
            for ds in cfg.table4.datasets for m in cfg.table4.methods}


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"status": "missing"}


def _cell(metrics: dict, key: str, cls: str | None) -> str:
    if metrics.get("status") != "ok":
        return NOT_RUN
    block = metrics["average"] if cls is None else metrics["per_class"][cls]
    v = block[key]
    if v is None:
        return "n/a"
    return f"{v:.2f}" if key == "hd95" else f"{100 * v:.2f}"


def _row_label(method: str, cfg: Config) -> str:
    """The method's display name, plus any velocity loss other than the paper's L1."""
    label = METHOD_LABELS.get(method, method)
    loss = cfg.method_config(method).model.get("velocity_loss", "l1")
    return label if loss == "l1" else f"{label} [{loss.upper()} velocity loss]"


def table1(cfg: Config, results: dict, dataset: str = "phantom-cardiac") -> pd.DataFrame:
    """Methods x (Average Dice/IoU/HD95, Dice/IoU per structure) on the cardiac data."""
    classes = list(load_manifest(paths.processed(dataset)).dataset.class_names[1:])
    cols = [("Average", "Dice"), ("Average", "IoU"), ("Average", "HD95 (mm)")]
    cols += [(c, k) for c in classes for k in ("Dice", "IoU")]
    rows, index = [], []
    implemented = set(cfg.methods)
    for paper_name, ours in TABLE1_PAPER_ROWS.items():
        if ours in implemented:
            continue
        index.append(paper_name)
        rows.append([NOT_IMPLEMENTED] * len(cols))
    for m in cfg.methods:
        r = results[(dataset, m)]
        cells = [_cell(r, "dice", None), _cell(r, "iou", None), _cell(r, "hd95", None)]
        cells += [_cell(r, k, c) for c in classes for k in ("dice", "iou")]
        index.append(_row_label(m, cfg))
        rows.append(cells)
    return pd.DataFrame(rows, index=pd.Index(index, name="Method"), columns=pd.MultiIndex.from_tuples(cols))


def table2(cfg: Config, results: dict) -> pd.DataFrame:
    """Methods x datasets: Dice/IoU (average over structures) and HD95, every dataset of the profile."""
    cols, getters = [], []
    for ds in cfg.datasets:
        for key, name in (("dice", "Dice"), ("iou", "IoU"), ("hd95", "HD95 (mm)")):
            cols.append((ds, name))
            getters.append((ds, key))
    rows = [[_cell(results[(ds, m)], key, None) for ds, key in getters] for m in cfg.methods]
    return pd.DataFrame(rows, index=pd.Index([_row_label(m, cfg) for m in cfg.methods], name="Method"),
                        columns=pd.MultiIndex.from_tuples(cols))


def table3(cfg: Config, results: dict) -> pd.DataFrame:
    """MedFlowSeg's ablation (paper Table 3, plus Table 4's "bone + FA-A." as the last row):
    which conditioning modules are on, and Dice per ablation dataset."""
    run = set(cfg.ablations.methods) | ({"medflowseg"} & set(cfg.methods))
    methods = [m for m in ABLATION_ROWS if m in run]
    cols = [("Str. Cond.", "SA"), ("Str. Cond.", "DB-SA"), ("Sem. Cond.", "FA-A. (w/o Mod.)"),
            ("Sem. Cond.", "Neural Mod.")] + [("Dice", ds) for ds in cfg.ablations.datasets]
    rows = [list(ABLATION_ROWS[m]) + [_cell(results.get((ds, m), {}), "dice", None) for ds in cfg.ablations.datasets]
            for m in methods]
    return pd.DataFrame(rows, index=pd.Index(methods, name="Method"), columns=pd.MultiIndex.from_tuples(cols))


TABLE4_COLUMNS = ["Params (M)", "GMACs per evaluation", "Samples x NFE", "GMACs per protocol", "CI (paper formula)",
                  "CI (harmonic)", "GED_K (x100)", "HM-IoU", "Dice"]


def _table4_label(method: str, cfg: Config) -> str:
    paper = {ours: name for name, ours in TABLE4_PAPER_ROWS.items() if ours}
    label = _row_label(method, cfg)
    return f"{label} (paper: {paper[method]})" if method in paper and paper[method] != label else label


def table4(cfg: Config, results: dict, complexity: dict) -> pd.DataFrame:
    """Complexity and uncertainty (paper Table 4's shape): one row per (dataset, method) of ``table4``.

    Params in millions and GMACs at this profile's configuration and image size; the protocol is the
    method's samples x network evaluations per sample plus its once-per-image cost. CI, GED_K (K the
    method's sample count, x100 as the paper prints it), HM-IoU and Dice (of the fused samples) in %.
    Paper rows without an implementation are listed as "not implemented".
    """
    rows, index = [], []
    implemented = set(cfg.table4.methods)
    for paper_name, ours in TABLE4_PAPER_ROWS.items():
        if ours not in implemented:
            index.append(("", paper_name))
            rows.append([NOT_IMPLEMENTED] * len(TABLE4_COLUMNS))
    for ds in cfg.table4.datasets:
        for m in cfg.table4.methods:
            index.append((ds, _table4_label(m, cfg)))
            rows.append(_complexity_cells(complexity.get((ds, m), {})) + _set_metric_cells(results.get((ds, m), {})))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["Dataset", "Method"]),
                        columns=TABLE4_COLUMNS)


def _complexity_cells(c: dict) -> list[str]:
    if c.get("status") != "ok":
        return [NOT_RUN] * 4
    return [f"{c['params'] / 1e6:.3f}", f"{c['macs_per_evaluation'] / 1e9:.3f}",
            f"{c['samples']} x {c['evaluations_per_sample']}", f"{c['macs_protocol'] / 1e9:.2f}"]


def _set_metric_cells(r: dict) -> list[str]:
    if r.get("status") != "ok":
        return [NOT_RUN] * 5
    u, k = r["set_metrics"]["mean"], r["set_metrics"]["n_samples"]
    return [f"{100 * u['ci_paper']:.1f}", f"{100 * u['ci_harmonic']:.1f}", f"{100 * u[f'ged_{k}']:.1f} (K = {k})",
            f"{100 * u['hm_iou']:.1f}", _cell(r, "dice", None)]


def table4_caption(cfg: Config, results: dict, complexity: dict) -> str:
    pairs = [(d, m) for d in cfg.table4.datasets for m in cfg.table4.methods]
    ok = [(d, m) for d, m in pairs if results.get((d, m), {}).get("status") == "ok"]
    samples = {m: results[(d, m)]["set_metrics"]["n_samples"] for d, m in ok}
    raters = {d: results[(d, m)]["set_metrics"]["n_raters"] for d, m in ok}
    counted = next((c for c in complexity.values() if c.get("status") == "ok"), {})
    size = "x".join(str(v) for v in counted.get("image", [])[1:]) or "?"
    return (f"Profile `{cfg.profile}`: parameters and MACs are those of this profile's configuration at {size} "
            f"pixels (not the paper's 256x256 models; `benchmarks/NOTES.md` counts those). MACs by fvcore "
            f"(1 multiply-add = 1), FFT and fused attention included; per protocol = once-per-image cost + samples x "
            f"NFE x per evaluation. Samples per case K (GED_K and CI use all K, unfused): {samples}; raters per case: "
            f"{raters}. CI's parts are combined as the CIMD paper prints it (3SDA/(S+D+A)) and as a harmonic mean; "
            f"GED x100 with d = 1 - IoU and the diagonal included; Dice of the samples fused by "
            f"{next((results[p]['conventions']['fusion'] for p in ok), '?')} against the raters' "
            f"{next((results[p]['conventions']['reference'] for p in ok), '?')}. With several foreground classes each "
            f"pairwise score is the mean over classes. Each figure is the mean over the test cases of one training run "
            f"(one seed).")


def caption(cfg: Config, results: dict, datasets: list[str], methods: list[str] | None = None) -> str:
    conv = next((r["conventions"] for r in results.values() if r.get("status") == "ok"), {})
    methods = list(cfg.methods) if methods is None else methods
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
    return (f"Profile `{cfg.profile}` (CPU-scale: not comparable with the paper's numbers). "
            f"Dice and IoU in %, HD95 in mm ({conv.get('hd95_convention', '?')} convention, "
            f"{conv.get('case', '?')} as the case). Samples per case: {samples}; network evaluations "
            f"per sample (NFE): {nfe}; fused by "
            f"{conv.get('fusion', '?')}; multi-rater reference: {conv.get('reference', '?')}. "
            f"Empty masks: both empty -> {conv.get('both_empty', '?')}, one empty HD95 -> "
            f"{conv.get('one_empty_hd95', '?')}.\n\n" + "\n".join(f"- {n}" for n in notes))


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
    tex = df.to_latex(caption=title, multicolumn=True, escape=True)
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
    from benchmark.figures import qualitative_figure

    results = load_results(cfg)
    tables = paths.PAPER / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    written = []
    if "phantom-cardiac" in cfg.datasets:
        written += write_table(table1(cfg, results), tables / "table1_cardiac",
                               "Table 1 shape: multi-class cardiac segmentation (phantom-cardiac)",
                               caption(cfg, results, ["phantom-cardiac"]))
    written += write_table(table2(cfg, results), tables / "table2_modalities",
                           "Table 2 shape: methods across modalities", caption(cfg, results, list(cfg.datasets)))
    if cfg.ablations.datasets:
        t3 = table3(cfg, results)
        written += write_table(t3, tables / "table3_ablation",
                               "Table 3 shape: MedFlowSeg ablation (last row: Table 4's bone + FA-A.)",
                               caption(cfg, results, list(cfg.ablations.datasets), list(t3.index)))
    if cfg.table4.datasets and cfg.table4.methods:
        complexity = load_complexity(cfg)
        written += write_table(table4(cfg, results, complexity), tables / "table4_complexity_uncertainty",
                               "Table 4 shape: model complexity and sample uncertainty",
                               table4_caption(cfg, results, complexity))
    written += nfe_sweep_outputs(cfg, tables, paths.PAPER / "figures")
    written.append(qualitative_figure(cfg, paths.PAPER / "figures" / "qualitative.png"))
    if log_mlflow:
        from benchmark.tracking import log_all
        log_all(cfg, results, written)
    return written

