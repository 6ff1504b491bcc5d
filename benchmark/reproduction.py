"""Each claim of the papers beside what this suite measured, and a verdict.

A *result* claim (a table cell: Dice, IoU, HD95, CI, GED, parameters, GFLOPs) is matched to the
evaluation of the registered method that implements the paper's row, on the dataset of the profile
that stands for the paper's dataset (both as the catalogue, ``paper/catalogue.yaml``, says), read on what the
catalogue says the paper scores there: one class, evaluation regions (REFUGE2-Disc the whole disc, the cup for
REFUGE2-Cup and Table 4's set metrics, BraTS the mean of WT, TC and ET; the line says which), or the average. A
*setting* claim (sampling steps, samples, batch size, widths) is matched to the value the profile
configures.

Verdicts of a result: ``reproduced`` (the paper's value inside our interval widened on each side by the
tolerance of the claim's unit, ``claims.tolerance`` in ``params.yaml``), ``not reproduced``, ``not comparable``
(measured, but on other data or at another profile; the reasons say which) and ``not run`` (no implementation,
no dataset standing for the paper's, or no stage output). Our interval is the bootstrap interval of the mean
over cases (``benchmark/statistics.py``); a value that is no mean over cases (parameters, GFLOPs) is a point,
and the verdict compares it with the paper's within the tolerance. Verdicts of a setting: ``same``,
``differs`` and ``not run``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from benchmark.catalogue import PaperDataset
from benchmark.claims import Claim
from benchmark.config import Config
from benchmark.evidence import Evidence, Selection
from benchmark.metrics.regions import region_key
from benchmark.records import EvaluationRecord
from benchmark.statistics import Interval

REPRODUCED, NOT_REPRODUCED, NOT_COMPARABLE, NOT_RUN = "reproduced", "not reproduced", "not comparable", "not run"
SAME, DIFFERS = "same", "differs"
RESULT_VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_COMPARABLE, NOT_RUN)
SETTING_VERDICTS = (SAME, DIFFERS, NOT_RUN)

# Metrics not tied to a dataset's evaluation.
_COMPLEXITY_METRICS = {"params", "gflops"}
# Claim metric -> how it is read from our evaluation.json, in the claim's unit.
_EVALUATION_METRICS = {"dice", "iou", "hd95", "f1", "ci", "ged"}


@dataclass(frozen=True)
class Measured:
    """What the suite has for one claim: ``value`` in the claim's unit, or ``None`` with ``missing`` (and
    ``implemented`` False where no registered method implements the claim's row)."""
    value: float | None
    dataset: str | None = None
    method: str | None = None
    missing: str = ""
    implemented: bool = True
    caveats: tuple[str, ...] = ()     # why the value is not comparable with the paper's
    same_data: bool = True            # measured on data standing for the claim's dataset
    reading: str = ""                 # which structure the value scores, where the paper's column names one
    selection: Selection | None = None    # the per-case values ``value`` is the mean of (None: not such a mean)
    interval: Interval | None = None      # the bootstrap interval of that mean (None: no per-case results)
    # (over several training seeds, ``value`` is the mean over the seeds and ``interval`` draws seeds too)

    @property
    def bounds(self) -> tuple[float, float] | None:
        """The interval the verdict uses: the bootstrap interval, or the value itself for a point."""
        if self.value is None:
            return None
        return (self.interval.low, self.interval.high) if self.interval else (self.value, self.value)


@dataclass(frozen=True)
class Line:
    """One claim of the report: the claim, our value, the verdict and its reasons."""
    claim: Claim
    measured: Measured
    verdict: str
    setting: bool = False
    where: str = ""

    @property
    def delta(self) -> float | None:
        """ours - paper, where both exist and the data stand for the same dataset."""
        m = self.measured
        return None if m.value is None or not m.same_data else m.value - self.claim.value

    @property
    def reasons(self) -> str:
        m = self.measured
        return m.missing or "; ".join(m.caveats + ((m.reading,) if m.reading else ()))


def verdict(paper: float, measured: Measured, tolerance: float) -> str:
    """The verdict on a result claim: reproduced when ``paper`` lies in ``measured.bounds`` widened by
    ``tolerance`` (absolute, in the claim's unit) on each side."""
    if measured.value is None:
        return NOT_RUN
    if measured.caveats or not measured.same_data:
        return NOT_COMPARABLE
    low, high = measured.bounds
    return REPRODUCED if low - paper <= tolerance and paper - high <= tolerance else NOT_REPRODUCED


def measure(claim: Claim, ev: Evidence, method: str | None = None, dataset: str | None = None) -> Measured:
    """Our value for ``claim`` (a table cell), optionally for another ``method`` or on another ``dataset``."""
    method = method or ev.catalogue.row_method(claim.row)
    if method is None:
        return Measured(None, missing=f"{claim.row} is not implemented", implemented=False)
    if claim.metric in _COMPLEXITY_METRICS:
        return _measure_complexity(claim, ev, method, dataset)
    if claim.metric not in _EVALUATION_METRICS:
        return Measured(None, method=method, missing=f"the suite does not compute {claim.column}")
    paper_dataset = ev.catalogue.stand_ins(claim.dataset)
    stand_ins, cls = paper_dataset.stand_ins, paper_dataset.cls
    same_data = True
    if dataset is None:
        pool = ev.cfg.table4.datasets if claim.table == "Table 4" and claim.paper == "medflowseg" else None
        candidates = [d for d in stand_ins if ev.cfg.evaluated(d, method) and (pool is None or d in pool)]
        if not candidates and pool:       # Table 4: its uncertainty data, whatever the paper's dataset was
            candidates, same_data = [d for d in pool if ev.cfg.evaluated(d, method)], False
        if not candidates:
            return Measured(None, method=method, missing=f"no dataset of profile '{ev.cfg.profile}' stands for "
                            f"{claim.dataset}" + (f" with {method} evaluated" if stand_ins else ""))
        dataset = candidates[0]
    else:
        same_data = dataset in stand_ins
    result = ev.results.get((dataset, method))
    if result is None or not result.ok:
        return Measured(None, dataset, method, missing=f"{dataset}/{method} has no evaluation")
    caveats = list(ev.data_caveats(dataset, claim.dataset if same_data else None))
    caveats += filter(None, [ev.loss_deviation(method), ev.loss_still_falling((dataset, method))])
    if not same_data:
        caveats.insert(0, f"measured on {dataset}, the paper on {claim.dataset}")
    paper_nfe = (ev.catalogue.methods[method].nfe or {}).get(claim.paper) if method in ev.catalogue.methods else None
    if paper_nfe is not None and result.nfe_per_sample != paper_nfe:
        caveats.insert(0, f"sampled at NFE {result.nfe_per_sample:g} per sample; this paper's {claim.row} rows at "
                          f"{paper_nfe:g}")
    if paper_dataset.regions and same_data:
        return _with_interval(ev, _measure_regions(claim, result, paper_dataset, dataset, method, tuple(caveats)))
    cls = cls or ev.structure(dataset, claim.column)
    if claim.metric in ("ci", "ged"):
        sm = result.set_metrics
        key = "ci_paper" if claim.metric == "ci" else f"ged_{sm['n_samples']}"
        if cls is not None and same_data:
            caveats.append(f"our {claim.metric.upper()} averages all foreground classes, not {cls} alone")
        value = 100 * sm["mean"][key]
        selection = Selection(None, (key,))
    else:
        key = "dice" if claim.metric == "f1" else claim.metric
        block = result.per_class.get(cls) if cls is not None and same_data else result.average
        if block is None or block.get(key) is None:
            return Measured(None, dataset, method, missing=f"{dataset}/{method} has no {key} for {cls or 'the average'}")
        value = block[key] if key == "hd95" else 100 * block[key]
        selection = Selection(key, (cls,) if cls is not None and same_data else None, _scale(key))
        if claim.metric == "f1":
            caveats.append("F1 read as the Dice of the foreground pixels")
    return _with_interval(ev, Measured(value, dataset, method, caveats=tuple(caveats), same_data=same_data,
                                       selection=selection))


def _scale(metric: str) -> float:
    return 1.0 if metric == "hd95" else 100.0


def _with_interval(ev: Evidence, m: Measured) -> Measured:
    """``m`` with the interval of its selection; over several training seeds its value becomes the mean over the
    seeds (the evaluation record read so far is the main run's alone)."""
    if m.value is None or m.selection is None:
        return m
    interval = ev.interval((m.dataset, m.method), m.selection)
    value = interval.point if interval is not None and interval.n_seeds > 1 else m.value
    return dataclasses.replace(m, value=value, interval=interval)


def _measure_regions(claim: Claim, result: EvaluationRecord, paper_dataset: PaperDataset, dataset: str, method: str,
                     caveats: tuple[str, ...]) -> Measured:
    """The claim's metric on the evaluation regions the catalogue names for its paper dataset (their mean)."""
    values = []
    keys = tuple(region_key(name) for name in paper_dataset.regions)
    for name in paper_dataset.regions:
        block = (result.per_region or {}).get(region_key(name))
        if claim.metric in ("ci", "ged"):
            key = "ci_paper" if claim.metric == "ci" else f"ged_{result.set_metrics['n_samples']}"
            value = block["set_metrics"].get(key) if block else None
            selection = Selection(None, tuple(f"{k}_{key}" for k in keys))
        else:
            key = "dice" if claim.metric == "f1" else claim.metric
            value = block.get(key) if block else None
            selection = Selection(key, keys, _scale(key))
        if value is None:
            return Measured(None, dataset, method, missing=f"{dataset}/{method} has no {key} for region {name}")
        values.append(value if key == "hd95" else 100 * value)
    names = paper_dataset.regions
    reading = (f"read on region {names[0]} ({' + '.join(result.per_region[region_key(names[0])]['classes'])})"
               if len(names) == 1 else f"read as the mean of regions {', '.join(names)}")
    if paper_dataset.reading:
        reading += f": {paper_dataset.reading}"
    if claim.metric == "f1":
        caveats += ("F1 read as the Dice of the foreground pixels",)
    return Measured(sum(values) / len(values), dataset, method, caveats=caveats, reading=reading, selection=selection)


def _measure_complexity(claim: Claim, ev: Evidence, method: str, dataset: str | None) -> Measured:
    pairs = [(d, m) for (d, m), c in ev.complexity.items() if m == method and c.ok
             and (dataset is None or d == dataset)]
    if not pairs:
        return Measured(None, dataset, method, missing=f"no complexity count for {method}")
    d, _ = pairs[0]
    c = ev.complexity[pairs[0]]
    caveats = [] if ev.cfg.profile == "paper" else [f"counted at profile '{ev.cfg.profile}''s configuration "
                                                    f"and image size, not the paper's"]
    if claim.metric == "params":
        return Measured(c.params / 1e6, d, method, caveats=tuple(caveats))
    caveats.append("ours: FLOPs of the inference protocol (samples x NFE), 2 per fvcore multiply-add; the paper "
                   "counts GFLOPs until its samples converge (§4.4)")
    return Measured(c.flops_protocol / 1e9, d, method, caveats=tuple(caveats))


def _medflowseg(cfg: Config):
    from medflowseg.config import MedFlowSegConfig

    model = cfg.method_config("medflowseg").model
    names = {f.name for f in dataclasses.fields(MedFlowSegConfig)}
    return dataclasses.replace(MedFlowSegConfig(), **{k: v for k, v in model.items() if k in names})


def _mfs(attr: str, index: int | None = None):
    def get(cfg: Config):
        v = getattr(_medflowseg(cfg), attr)
        if index is None:
            return v
        return v[index] if index < len(v) else None   # a network with fewer levels
    return f"method.medflowseg.model.{attr}" + (f"[{index}]" if index is not None else ""), get


# Setting claims -> (where the profile sets it, how to read it). Other settings are "not run".
SETTINGS = {
    "medflowseg.text.aux_loss_weight": _mfs("aux_weight"),
    "medflowseg.text.ce_weight": _mfs("aux_ce_weight"),
    "medflowseg.text.dbsa_gauss_kernel_low": _mfs("dbsa_low_kernel"),
    "medflowseg.text.dbsa_gauss_kernel_high": _mfs("dbsa_high_kernel"),
    "medflowseg.text.modulator_blocks": _mfs("fa_modulator_blocks"),
    "medflowseg.text.fa_attention_depth": _mfs("fa_depth"),
    **{f"medflowseg.text.channels_level{i + 1}": _mfs("channels", i) for i in range(4)},
    "medflowseg.text.res_blocks_per_level": _mfs("num_res_blocks"),
    "medflowseg.text.time_embed_dim": _mfs("time_embed_dim"),
    "medflowseg.text.sampling_steps": _mfs("steps"),
    "medflowseg.text.input_size": ("data.size", lambda cfg: cfg.data.size),
    "medflowseg.text.batch_size": ("method.medflowseg.train.batch_size (per process)",
                                   lambda cfg: cfg.method_config("medflowseg").train.batch_size),
    "medflowseg.text.learning_rate": ("method.medflowseg.train.lr", lambda cfg: cfg.method_config("medflowseg").train.lr),
    "medflowseg.text.ema_decay": ("method.medflowseg.train.ema_decay",
                                  lambda cfg: cfg.method_config("medflowseg").train.ema_decay),
    "medflowseg.text.ensemble_size": ("method.medflowseg.predict.n_samples",
                                      lambda cfg: cfg.method_config("medflowseg").predict.n_samples),
}


def judge_setting(claim: Claim, ev: Evidence) -> Line:
    cfg = ev.cfg
    if claim.id not in SETTINGS or "medflowseg" not in cfg.method:
        implemented = not claim.method or ev.catalogue.row_method(claim.method) is not None
        why = (f"{claim.method} is not implemented" if not implemented
               else "not a setting of the suite (hardware, or how the paper counted)")
        return Line(claim, Measured(None, missing=why, implemented=implemented), NOT_RUN, setting=True)
    where, get = SETTINGS[claim.id]
    value = get(cfg)
    if value is None:
        return Line(claim, Measured(None, caveats=(f"profile '{cfg.profile}' has no {where}",)), DIFFERS,
                    setting=True, where=where)
    value = float(value)
    same = math.isclose(value, claim.value, rel_tol=1e-9)
    caveats = () if same else (f"profile '{cfg.profile}' sets {where} = {value:g}",)
    return Line(claim, Measured(value, method="medflowseg", caveats=caveats), SAME if same else DIFFERS,
                setting=True, where=where)


def judge(claim: Claim, ev: Evidence, method: str | None = None) -> Line:
    """The report line of one claim, optionally for another ``method`` than the one on the claim's row."""
    if claim.higher_is_better is None and claim.metric not in _COMPLEXITY_METRICS:
        return judge_setting(claim, ev)
    m = measure(claim, ev, method)
    tolerance = ev.cfg.claims.tolerance.get(claim.unit)
    if m.value is not None and tolerance is None:
        m = dataclasses.replace(m, caveats=m.caveats + (f"no tolerance set for unit {claim.unit!r}",))
    where = f"{m.dataset}/{m.method}" if m.dataset else (m.method or "")
    return Line(claim, m, verdict(claim.value, m, tolerance if tolerance is not None else 0.0), where=where)


def judge_all(ev: Evidence) -> list[Line]:
    """The report line of every claim of ``ev``, in file order; a size or compute claim is followed by a line for
    each other reading of its row's architecture the profile counts (the catalogue's ``size_of``)."""
    lines = []
    for c in ev.claims:
        lines.append(judge(c, ev))
        if c.metric in _COMPLEXITY_METRICS:
            lines += [judge(c, ev, m) for m in ev.catalogue.size_readings(c.row) if m in ev.cfg.table4.methods]
    return lines
