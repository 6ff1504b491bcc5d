"""Typed configuration loaded from ``params.yaml``.

``params.yaml`` holds one profile (the default, CPU-scale profile unless a user
switched it). Each section maps onto a dataclass below; an unknown key is an
error naming the file and the key, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmark.metrics.fusion import FUSIONS


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class DataConfig:
    size: int = 64                    # H = W of every processed slice, pixels
    seed: int = 0                     # phantom generation and subject splits
    n_subjects: int = 40              # per phantom dataset
    split: dict = field(default_factory=lambda: {"train": 0.6, "val": 0.1, "test": 0.3})
    splits: str = "standard"          # real datasets: "standard" (the published split where one exists, val
                                      # drawn from its training part) or "seeded" (by-subject `split` fractions)

    def __post_init__(self):
        if self.splits not in ("standard", "seeded"):
            raise ConfigError(f"data.splits: {self.splits!r} is not 'standard' or 'seeded'")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 20            # linear warm-up, then constant (the paper names no schedule)
    ema_decay: float = 0.99           # paper: 0.9999 over a long run; a short CPU run needs a shorter memory
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    seed: int = 0
    threads: int = 2                  # torch intra-op threads per process
    mixed_precision: str = "no"       # "no", "bf16" or "fp16" (passed to Accelerate)


@dataclass(frozen=True)
class PredictConfig:
    n_samples: int = 1                # samples per case (deterministic methods always give 1)
    batch_size: int = 32              # slices per forward pass
    seed: int = 0


@dataclass(frozen=True)
class EvalConfig:
    hd95_convention: str = "pooled"   # "pooled" (medpy) or "max" (MONAI)
    per_slice: bool = False           # False: a volume is one case (per-volume metrics)
    both_empty: str = "nan"           # "nan": excluded from means and counted; "perfect": Dice 1, HD95 0
    one_empty_hd95: str = "diagonal"  # "diagonal": the image diagonal in mm; "nan": excluded
    fusion: str = "majority"          # how K samples become one prediction for Dice/IoU/HD95:
                                      # "majority" (= the mean of hard samples) or "staple"
    reference: str = "majority"       # how several raters become one reference (same names)
    ged_samples: tuple[int, ...] = () # GED also on the first n samples for each n here (GED_16, GED_100);
                                      # GED on all K samples is always reported, as ged_K
    workers: int = 2                  # processes scoring cases in parallel (1: in this process)

    def __post_init__(self):
        for key in ("fusion", "reference"):
            if getattr(self, key) not in FUSIONS:
                raise ConfigError(f"evaluation.{key}: {getattr(self, key)!r} is not one of {sorted(FUSIONS)}")
        object.__setattr__(self, "ged_samples", tuple(self.ged_samples))
        if any(not isinstance(n, int) or n < 1 for n in self.ged_samples):
            raise ConfigError(f"evaluation.ged_samples: sample counts must be positive integers, got {self.ged_samples}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"evaluation.workers: must be an integer >= 1, got {self.workers!r}")


@dataclass(frozen=True)
class MethodConfig:
    """One method's section: its constructor arguments and its overrides of train/predict."""
    model: dict = field(default_factory=dict)
    train: TrainConfig = TrainConfig()
    predict: PredictConfig = PredictConfig()


@dataclass(frozen=True)
class MatrixConfig:
    """A matrix of ``datasets`` x ``methods`` run by train/predict/evaluate stages of its own, beside the
    main matrix: MedFlowSeg's ablation variants (paper Tables 3 and 4; the full model comes from the main
    ``methods``) and the baselines, each on the datasets that bound its time at the profile."""
    datasets: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class SweepConfig:
    """The Dice-vs-NFE sweep of one flow-matching method (``segbench nfe-sweep``)."""
    datasets: tuple[str, ...] = ()
    method: str = "medflowseg"


@dataclass(frozen=True)
class Table4Config:
    """The complexity-and-uncertainty table (the shape of the paper's Table 4): parameters, MACs, CI,
    GED and Dice of each method on each dataset here. Every pair must be evaluated by the main
    matrix (``datasets`` x ``methods``) or the ablation matrix."""
    datasets: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()


def _default_tolerance() -> dict:
    # Our choice (the papers state none): one point of Dice/IoU %, 1 mm of HD95, 2 points of CI/GED x100,
    # 10% of the paper's parameter and GFLOP counts at its values (11 M of 111 M, 79 of 789 GFLOPs).
    return {"%": 1.0, "mm": 1.0, "x100": 2.0, "M params": 11.0, "GFLOPs": 79.0}


@dataclass(frozen=True)
class ClaimsConfig:
    """How the claims report (benchmark/reproduction.py) judges a result against the paper's number."""
    tolerance: dict = field(default_factory=_default_tolerance)   # claim unit -> largest |ours - paper|

    def __post_init__(self):
        bad = {u: t for u, t in self.tolerance.items() if isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0}
        if bad:
            raise ConfigError(f"claims.tolerance: tolerances must be numbers >= 0, got {bad}")


@dataclass(frozen=True)
class Config:
    profile: str
    datasets: tuple[str, ...]
    methods: tuple[str, ...]
    data: DataConfig
    evaluation: EvalConfig
    method: dict[str, MethodConfig]
    baselines: MatrixConfig = MatrixConfig()
    ablations: MatrixConfig = MatrixConfig()
    nfe_sweep: SweepConfig = SweepConfig()
    table4: Table4Config = Table4Config()
    claims: ClaimsConfig = ClaimsConfig()
    # How the train stages start `segbench`: "segbench" (one process), or an Accelerate launch for several GPUs
    # or nodes, e.g. "accelerate launch --multi_gpu --num_processes 4 -m benchmark.cli" (README "Training").
    launcher: str = "segbench"
    source: str = "params.yaml"

    def pairs(self) -> list[tuple[str, str]]:
        """Every (dataset, method) some evaluate stage scores: the main matrix, the baselines', the ablations'."""
        out = [(d, m) for d in self.datasets for m in self.methods]
        out += [(d, m) for d in self.baselines.datasets for m in self.baselines.methods]
        out += [(d, m) for d in self.ablations.datasets for m in self.ablations.methods]
        return list(dict.fromkeys(out))

    def evaluated(self, dataset: str, method: str) -> bool:
        """Whether some evaluate stage scores ``method`` on ``dataset``."""
        return (dataset, method) in self.pairs()

    @property
    def compared_methods(self) -> tuple[str, ...]:
        """The rows of the comparison tables (paper Tables 1 and 2): the main methods, then the baselines."""
        return tuple(dict.fromkeys(self.methods + self.baselines.methods))

    def method_config(self, name: str) -> MethodConfig:
        if name not in self.method:
            raise ConfigError(f"{self.source}: no section method.{name} (known: {sorted(self.method)})")
        return self.method[name]


def _build(cls, d: dict | None, where: str, source: str):
    d = dict(d or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} in {where} (allowed: {sorted(names)})")
    return cls(**d)


def _merge(base: Any, override: dict | None, where: str, source: str):
    return _build(type(base), {**dataclasses.asdict(base), **(override or {})}, where, source)


def load_config(path: Path | str = "params.yaml") -> Config:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameters file is missing") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    src = str(path)
    allowed = {"profile", "datasets", "methods", "data", "train", "predict", "evaluation", "method", "baselines",
               "ablations", "nfe_sweep", "table4", "claims", "launcher"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{src}: unknown top-level key(s) {unknown} (allowed: {sorted(allowed)})")
    train = _build(TrainConfig, raw.get("train"), "train", src)
    predict = _build(PredictConfig, raw.get("predict"), "predict", src)
    methods = {}
    for name, m in (raw.get("method") or {}).items():
        m = dict(m or {})
        extra = sorted(set(m) - {"model", "train", "predict"})
        if extra:
            raise ConfigError(f"{src}: unknown key(s) {extra} in method.{name} (allowed: model, train, predict)")
        methods[name] = MethodConfig(
            model=dict(m.get("model") or {}),
            train=_merge(train, m.get("train"), f"method.{name}.train", src),
            predict=_merge(predict, m.get("predict"), f"method.{name}.predict", src))
    cfg = Config(profile=str(raw.get("profile", "default")),
                 datasets=tuple(raw.get("datasets") or ()), methods=tuple(raw.get("methods") or ()),
                 data=_build(DataConfig, raw.get("data"), "data", src),
                 evaluation=_build(EvalConfig, raw.get("evaluation"), "evaluation", src),
                 method=methods, source=src,
                 baselines=_build(MatrixConfig, _tuples(raw.get("baselines")), "baselines", src),
                 ablations=_build(MatrixConfig, _tuples(raw.get("ablations")), "ablations", src),
                 nfe_sweep=_build(SweepConfig, _tuples(raw.get("nfe_sweep")), "nfe_sweep", src),
                 table4=_build(Table4Config, _tuples(raw.get("table4")), "table4", src),
                 claims=_build(ClaimsConfig, raw.get("claims"), "claims", src),
                 launcher=str(raw.get("launcher", "segbench")))
    for name in cfg.methods + cfg.baselines.methods + cfg.ablations.methods + ((cfg.nfe_sweep.method,) if cfg.nfe_sweep.datasets else ()):
        cfg.method_config(name)
    for section in ("baselines", "ablations"):
        outside = [d for d in getattr(cfg, section).datasets if d not in cfg.datasets]
        if outside:
            raise ConfigError(f"{src}: {section}.datasets {outside} are not in datasets, so no stage prepares them")
    missing = [f"{d}/{m}" for d in cfg.table4.datasets for m in cfg.table4.methods if not cfg.evaluated(d, m)]
    if missing:
        raise ConfigError(f"{src}: table4 asks for {missing}, which no evaluate stage produces "
                          f"(add them to datasets x methods, baselines or ablations)")
    return cfg


def _tuples(d: dict | None) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in (d or {}).items()}
