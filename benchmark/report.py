"""The claims report: every claim of the papers with our value and a verdict, and the protocol audit.

Written by the tables stage as ``paper/claims_report.md`` and, from the same Markdown,
``paper/claims_report.html`` (one self-contained page; figures linked relative to it).
"""
from __future__ import annotations

import html
from collections import Counter
from pathlib import Path

import markdown
import pandas as pd

from benchmark import paths
from benchmark.data.manifest import check_leaks
from benchmark.data.store import atomic_write
from benchmark.evidence import Evidence
from benchmark.metrics.multirater import DIVERSITY_READINGS
from benchmark.reproduction import NOT_RUN, RESULT_VERDICTS, SETTING_VERDICTS, Line, Measured

STEM = "claims_report"
FIGURES = ("qualitative.png", "uncertainty.png", "nfe_sweep.png", "training_curves.png")


def _md_table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False) if not df.empty else "(none)"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def headline(ev: Evidence, lines: list[Line]) -> str:
    phantom = [d for d, info in ev.datasets.items() if info is None or info.phantom]
    measured = Counter(ln.verdict for ln in lines if not ln.setting and ln.measured.value is not None)
    counts = ", ".join(f"{n} {v}" for v, n in measured.items()) or "none"
    if ev.cfg.profile == "paper" and not phantom:
        return f"Profile `{ev.cfg.profile}` on real data. Claims with a measured counterpart: {counts}."
    why = []
    if ev.cfg.profile != "paper":
        why.append(f"profile `{ev.cfg.profile}` trains at CPU scale (image size {ev.cfg.data.size} px, "
                   f"small networks, a few hundred steps)")
    if phantom:
        why.append(f"its datasets include synthetic phantoms ({', '.join(phantom)}) standing in for the papers' data")
    why_text = "; ".join(why)
    return (f"**Nothing in this report reproduces a claim of the papers.** {why_text[0].upper() + why_text[1:]}. "
            f"Its numbers show that the pipeline runs end to end and how the methods compare on these data. "
            f"Claims with a measured counterpart: {counts}.")


def verdict_counts(ev: Evidence, lines: list[Line]) -> pd.DataFrame:
    counts = Counter((ln.claim.paper, ln.verdict) for ln in lines)
    verdicts = list(RESULT_VERDICTS) + [v for v in SETTING_VERDICTS if v != NOT_RUN]
    rows = [{"paper": title, **{v: counts.get((p, v), 0) for v in verdicts},
             "claims": sum(n for (q, _), n in counts.items() if q == p)} for p, title in ev.catalogue.papers.items()]
    return pd.DataFrame(rows)


def _interval(ln: Line) -> dict[str, str]:
    """The interval the verdict used, and the cases and seeds behind it."""
    m = ln.measured
    if ln.setting or m.value is None:
        return {"interval": "", "cases (subjects)": "", "seeds": ""}
    if m.interval is None:
        why = "no per-case results" if m.selection is not None else "not a mean over cases"
        return {"interval": f"point ({why})", "cases (subjects)": "", "seeds": ""}
    i = m.interval
    return {"interval": f"[{_fmt(i.low)}, {_fmt(i.high)}]", "cases (subjects)": f"{i.n_cases} ({i.n_subjects})",
            "seeds": str(i.n_seeds)}


def _ours(m: Measured) -> str:
    """Our value; over several training seeds their mean ± their standard deviation."""
    spread = m.interval.seed_spread if m.interval is not None else None
    return _fmt(m.value) + ("" if spread is None else f" ± {_fmt(spread)}")


def claim_rows(lines: list[Line]) -> pd.DataFrame:
    return pd.DataFrame([{
        "claim": ln.claim.id, "source": f"{ln.claim.table} / {ln.claim.row} / {ln.claim.column}",
        "paper": f"{_fmt(ln.claim.value)} {ln.claim.unit}", "ours": _ours(ln.measured), **_interval(ln),
        "Δ": "" if ln.delta is None else f"{ln.delta:+.3g}", "verdict": f"**{ln.verdict}**",
        "measured on": ln.where, "why": ln.reasons} for ln in lines])


def leak_audit(ev: Evidence) -> pd.DataFrame:
    rows = []
    for ds in ev.datasets:
        if ds not in ev.manifests:
            rows.append({"dataset": ds, "split leaks": f"manifest unreadable: {ev.manifest_errors[ds]}"})
            continue
        report = check_leaks(ev.manifests[ds])
        rows.append({"dataset": ds, "split leaks": "none (subjects and image slices)" if report.ok
                     else report.summary().splitlines()[0]})
    return pd.DataFrame(rows)


def protocol_audit(ev: Evidence) -> pd.DataFrame:
    """Samples and network evaluations of every evaluated method, one row per distinct protocol."""
    rows: dict[tuple, list[str]] = {}
    for (ds, m), r in sorted(ev.results.items()):
        if r.ok:
            k, nfe = r.n_samples, r.nfe_per_sample
            key = (m, k, nfe, k * nfe, r.conventions["fusion"])
        else:
            key = (m, NOT_RUN, "", "", "")
        rows.setdefault(key, []).append(ds)
    cols = ["method", "samples K", "NFE per sample", "network evaluations per image", "fusion"]
    return pd.DataFrame([dict(zip(cols, key), datasets=", ".join(ds)) for key, ds in rows.items()])


def dataset_audit(ev: Evidence) -> pd.DataFrame:
    rows = []
    for ds in ev.datasets:
        if ds not in ev.manifests:
            rows.append({"dataset": ds, "kind": NOT_RUN})
            continue
        man = ev.manifests[ds]
        prov = man.provenance
        version = prov.get("version") or prov.get("generator", "")
        splits = ", ".join(f"{s} {len(man.split(s))}" for s in ("train", "val", "test"))
        rows.append({"dataset": ds, "kind": "phantom" if man.dataset.phantom else "real",
                     "stands for": man.dataset.stands_for, "version / source": f"{prov.get('package', '')} {version}".strip(),
                     "cases": splits, "raters": man.dataset.n_annotators,
                     "manifest sha256": ev.manifest_sha256[ds][:16]})
    return pd.DataFrame(rows)


def conventions(ev: Evidence) -> str:
    ok = [r.conventions for r in ev.results.values() if r.ok]
    if not ok:
        return "(no evaluation ran)"
    # an evaluation.json older than the setting used the one reading there was then
    readings = sorted({c.get("ci_diversity", "pairwise_dice") for c in ok})
    other = sorted(set(DIVERSITY_READINGS) - set(readings))
    ci = (f"- CI claims are compared with a CI whose diversity agreement reads `{'`, `'.join(readings)}` ("
          + "; ".join(DIVERSITY_READINGS[r] for r in readings) + ")"
          + (f"; public implementations also read it as `{'`, `'.join(other)}`" if other else "")
          + " (`evaluation.ci_diversity`)")
    flat = {k: v for k, v in ok[0].items() if not isinstance(v, dict)}
    flat.update({f"set_metrics.{k}": v for k, v in ok[0].get("set_metrics", {}).items()})
    return "\n".join([ci] + [f"- `{k}`: {v}" for k, v in flat.items()])


def render_markdown(ev: Evidence, lines: list[Line]) -> str:
    tol = ", ".join(f"{u}: {t:g}" for u, t in ev.cfg.claims.tolerance.items())
    parts = [
        f"# Claims report: profile `{ev.cfg.profile}`", headline(ev, lines),
        "Verdicts on a result: **reproduced** (the paper's value inside our interval widened on each side by the "
        "tolerance of its unit), **not reproduced**, "
        "**not comparable** (measured, but on other data or at another profile: *why* says which) and **not run** "
        "(no implementation, no dataset standing for the paper's, or no output). Verdicts on a setting of the "
        f"paper: **same**, **differs** (this profile's value in *ours*), **not run**. Tolerances (`claims.tolerance` "
        f"in `params.yaml`): {tol}. {_interval_rule(ev)} Claims: `paper/claims.yaml`; verdict logic: "
        f"`benchmark/reproduction.py`.",
        "## Verdicts", _md_table(verdict_counts(ev, lines)),
        "## Protocol audit", "### Split leaks", _md_table(leak_audit(ev)),
        "### Samples and network evaluations (NFE)", _md_table(protocol_audit(ev)),
        "### Metric conventions", conventions(ev),
        "### Datasets", _md_table(dataset_audit(ev)),
        "## Figures", "\n\n".join(f"![{f}](figures/{f})" for f in FIGURES if (paths.PAPER / "figures" / f).is_file()),
    ]
    for paper, title in ev.catalogue.papers.items():
        mine = [ln for ln in lines if ln.claim.paper == paper]
        parts += [f"## {title}: {len(mine)} claims", _md_table(claim_rows(mine))]
    return "\n\n".join(parts) + "\n"


def _interval_rule(ev: Evidence) -> str:
    c = ev.cfg.claims
    return (f"Our interval: the {100 * c.confidence:g}% percentile bootstrap interval of the mean over cases "
            f"({c.bootstrap_resamples} resamples, seed {c.bootstrap_seed}; subjects drawn with all their cases, and "
            f"training seeds where there are several), with the cases (subjects) and seeds it rests on. A value that "
            f"is no mean over cases (parameters, GFLOPs) is compared as a point: |ours - paper| within the tolerance.")


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 6px;
vertical-align:top}th{background:#f0f0f0;position:sticky;top:0}tr:nth-child(even){background:#fafafa}
img{max-width:100%;border:1px solid #ddd;margin:0.5em 0}code{background:#f4f4f4;padding:0 3px}"""


def render_html(md_text: str, title: str) -> str:
    body = markdown.markdown(md_text, extensions=["tables"])
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def write_report(ev: Evidence, lines: list[Line], out_dir: Path) -> list[Path]:
    """Write the judged claims as ``claims_report.md`` and ``claims_report.html`` into ``out_dir``."""
    text = render_markdown(ev, lines)
    md, page = out_dir / f"{STEM}.md", out_dir / f"{STEM}.html"
    atomic_write(md, lambda t: t.write_text(text, encoding="utf-8"))
    atomic_write(page, lambda t: t.write_text(render_html(text, f"Claims report ({ev.cfg.profile})"), encoding="utf-8"))
    return [md, page]
