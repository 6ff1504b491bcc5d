"""Typed configuration loaded from ``params.yaml``.

``params.yaml`` holds one profile (the default, CPU-scale profile unless a user
switched it). Each section maps onto a dataclass below; an unknown key is an
error naming the file and the key, so a typo never silently falls back to a default.

Each field declares the values it takes where it is defined, ``checked(default, rule)``
(e.g. ``steps: int = checked(300, integer(1))``), and every value is checked when the
file is loaded: ``params.yaml: method.unet.train.steps: must be an integer >= 1, got -5``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from benchmark.errors import SegbenchError
from benchmark.metrics.fusion import FUSIONS, STAPLE_MAX_ITERATIONS
from benchmark.metrics.multirater import DIVERSITY_READINGS


class ConfigError(SegbenchError, ValueError):
    """A parameters file, or a value in it, the suite cannot run with."""


class FieldError(ConfigError):
    """One field's value breaks its rule; :func:`build_section` adds the file and the section to the key."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key, self.problem = key, problem


# --------------------------------------------------------------------------- the rules a field's value follows

@dataclass(frozen=True)
class Rule:
    """What a field's value must be: ``test(value)`` holds, and ``text`` says it in words."""
    text: str
    test: Callable[[Any], bool]


def checked(default: Any = dataclasses.MISSING, r: Rule | None = None, *, factory: Any = dataclasses.MISSING):
    """A dataclass field whose value must follow ``r`` (``factory``: a default built per instance)."""
    return field(default=default, default_factory=factory, metadata={"rule": r})


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(low: int | None = None) -> Rule:
    return Rule("an integer" + (f" >= {low}" if low is not None else ""),
                lambda v: _int(v) and (low is None or v >= low))


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False) -> Rule:
    if high is None:
        text = f"a number {'>' if low_open else '>='} {low}"
    else:
        text = f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    return Rule(text, lambda v: _number(v) and (v > low if low_open else v >= low)
                and (high is None or (v < high if high_open else v <= high)))


def one_of(*choices: str) -> Rule:
    return Rule("one of " + ", ".join(repr(c) for c in choices), lambda v: isinstance(v, str) and v in choices)


BOOLEAN = Rule("true or false", lambda v: isinstance(v, bool))
NAMES = Rule("a list of names", lambda v: isinstance(v, tuple) and all(isinstance(x, str) for x in v))
NAME = Rule("a string", lambda v: isinstance(v, str))
COUNTS = Rule("a list of integers >= 1", lambda v: isinstance(v, tuple) and all(_int(x) and x >= 1 for x in v))


def or_absent(r: Rule) -> Rule:
    """``r``, or no value (``None``: a field whose absence another check judges, e.g. TrainConfig's length)."""
    return Rule(r.text, lambda v: v is None or r.test(v))


class Checked:
    """A config dataclass whose fields are checked against their rules on construction."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            r = f.metadata.get("rule")
            value = getattr(self, f.name)
            if r is not None and not r.test(value):
                raise FieldError(f.name, f"must be {r.text}, got {value!r}")


def _split_fractions(v) -> bool:
    return (isinstance(v, dict) and set(v) <= {"train", "val", "test"}
            and all(_number(x) and x >= 0 for x in v.values()) and v.get("train", 0) > 0)


# --------------------------------------------------------------------------- the sections

@dataclass(frozen=True)
class DataConfig(Checked):
    size: int = checked(64, integer(1))               # H = W of every processed slice, pixels
    seed: int = checked(0, integer())                 # phantom generation and subject splits
    n_subjects: int = checked(40, integer(1))         # per phantom dataset
    split: dict = checked(r=Rule("fractions of train, val and test, each >= 0, train > 0", _split_fractions),
                          factory=lambda: {"train": 0.6, "val": 0.1, "test": 0.3})
    splits: str = checked("standard", one_of("standard", "seeded"))
    # real datasets: "standard" (the published split where one exists, val drawn from its training part)
    # or "seeded" (by-subject `split` fractions)


@dataclass(frozen=True)
class TrainConfig(Checked):
    """How a method trains. Its length is ``steps`` or ``epochs``, exactly one of the two: the trainer turns
    epochs into steps with the size of the dataset's training split, ceil(epochs x slices / global batch)
    (:func:`benchmark.training.data.epoch_steps`). A section naming one of them drops the other from the
    section it overrides (:func:`train_length`)."""
    steps: int | None = checked(300, or_absent(integer(1)))
    epochs: float | None = checked(None, or_absent(number(0, low_open=True)))  # passes over the training slices
    batch_size: int = checked(16, integer(1))
    # the GLOBAL batch: slices per optimizer step, all processes together (each takes batch_size / processes)
    micro_batch_size: int | None = checked(None, or_absent(integer(1)))
    # the most slices one process passes forward and backward at once: a larger share (batch_size / processes)
    # runs as share / micro_batch_size passes whose gradients are accumulated into one step (it must divide the
    # share, checked when training starts). None: the whole share in one pass
    optimizer: str = checked("adamw", one_of("adamw", "sgd"))
    # "sgd": torch.optim.SGD with `momentum` (TransUNet's and Swin-Unet's official trainers)
    momentum: float | None = checked(None, or_absent(number(0, 1, high_open=True)))  # SGD's; given with sgd only
    lr: float = checked(1e-3, number(0, low_open=True))
    weight_decay: float = checked(0.0, number(0))     # AdamW's decoupled decay, SGD's L2 term in the gradient
    warmup_steps: int = checked(20, integer(0))       # linear warm-up over the first steps, then the schedule
    schedule: str = checked("constant", one_of("constant", "poly"))
    # after the warm-up, "constant" (MedFlowSeg: the paper names no schedule) or "poly": lr x (1 - s / S)^poly_power
    # at optimizer step s of S
    poly_power: float | None = checked(None, or_absent(number(0, low_open=True)))  # given with poly only
    ema_decay: float = checked(0.99, number(0, 1, high_open=True))
    # paper: 0.9999 over a long run; a short CPU run needs a shorter memory
    checkpoint_every: int = checked(100, integer(1))
    keep_checkpoints: int = checked(2, integer(1))
    seed: int = checked(0, integer())
    threads: int = checked(2, integer(1))             # torch intra-op threads per process
    mixed_precision: str = checked("no", one_of("no", "bf16", "fp16"))
    # passed to Accelerate: autocast of the forward passes, fp32 master weights
    fused_optimizer: bool = checked(False, BOOLEAN)   # the optimizer's fused kernel (CUDA and CPU)
    channels_last: bool = checked(False, BOOLEAN)     # model and input images in channels-last memory format
    compile: bool = checked(False, BOOLEAN)           # torch.compile of the loss forward (the trainer's LossForward)
    loader_workers: int = checked(0, integer(0))
    # processes reading the training slices ahead from the memory-mapped slice store (0: the training process
    # reads them); the batches are the same either way (benchmark/training/data.py: batches)

    def __post_init__(self):
        super().__post_init__()
        if (self.steps is None) == (self.epochs is None):
            raise FieldError("steps", "give the training length as steps or as epochs, exactly one of the two "
                                      f"(got steps={self.steps!r}, epochs={self.epochs!r})")
        for key, owner, value in (("momentum", "optimizer sgd", self.optimizer == "sgd"),
                                  ("poly_power", "schedule poly", self.schedule == "poly")):
            if (getattr(self, key) is None) == value:
                raise FieldError(key, f"give {key} with {owner}, and only then (got optimizer={self.optimizer!r}, "
                                      f"schedule={self.schedule!r}, {key}={getattr(self, key)!r})")


def train_length(section: dict | None) -> dict | None:
    """A ``train`` section as read: naming one of ``steps`` and ``epochs`` unsets the other, so a method's
    ``epochs`` replaces the profile's ``steps`` (naming both stays an error)."""
    if not isinstance(section, dict) or ("steps" in section) == ("epochs" in section):
        return section
    return {"steps": None, "epochs": None, **section}


@dataclass(frozen=True)
class PredictConfig(Checked):
    n_samples: int = checked(1, integer(1))           # samples per case (deterministic methods always give 1)
    batch_size: int = checked(32, integer(1))         # slices per forward pass
    seed: int = checked(0, integer())


@dataclass(frozen=True)
class EvalConfig(Checked):
    hd95_convention: str = checked("pooled", one_of("pooled", "max"))  # "pooled" (medpy) or "max" (MONAI)
    per_slice: bool = checked(False, BOOLEAN)         # False: a volume is one case (per-volume metrics)
    both_empty: str = checked("nan", one_of("nan", "perfect"))
    # "nan": excluded from means and counted; "perfect": Dice 1, HD95 0
    one_empty_hd95: str = checked("diagonal", one_of("diagonal", "nan"))
    # "diagonal": the image diagonal in mm; "nan": excluded
    fusion: str = checked("majority", one_of(*sorted(FUSIONS)))
    # how K samples become one prediction for Dice/IoU/HD95: "majority" (= the mean of hard samples) or "staple"
    reference: str = checked("majority", one_of(*sorted(FUSIONS)))  # how several raters become one reference
    staple_max_iterations: int = checked(STAPLE_MAX_ITERATIONS, integer(1))
    # STAPLE runs to SimpleITK's convergence; this guard stops only maps that never converge (each such case
    # is warned about and counted in evaluation.json); see benchmark/metrics/fusion.py for the figures
    ged_samples: tuple[int, ...] = checked((), COUNTS)
    # GED also on the first n samples for each n here (GED_16, GED_100); GED on all K samples is always
    # reported, as ged_K
    ci_diversity: str = checked("pairwise_dice", one_of(*DIVERSITY_READINGS))
    # CI's diversity agreement: "pairwise_dice" (spread of pairwise 1 - Dice) or "pixel_variance" (spread of the
    # pixel variance of pairwise differences); public implementations disagree (benchmark/metrics/multirater.py)
    workers: int = checked(2, integer(1))             # processes scoring cases in parallel (1: in this process)

    def __post_init__(self):
        if isinstance(self.ged_samples, list):
            object.__setattr__(self, "ged_samples", tuple(self.ged_samples))
        super().__post_init__()


@dataclass(frozen=True)
class MethodConfig:
    """One method's section: its constructor arguments and its overrides of train/predict.

    ``datasets`` holds the method's settings on particular datasets, each already merged over this section (a
    paper that states a length or a weight per dataset, e.g. ATFM's LIDC and ISIC epochs); read them through
    :meth:`Config.method_config` with the dataset."""
    model: dict = field(default_factory=dict)
    train: TrainConfig = TrainConfig()
    predict: PredictConfig = PredictConfig()
    datasets: dict[str, "MethodConfig"] = field(default_factory=dict)


@dataclass(frozen=True)
class MatrixConfig(Checked):
    """A matrix of ``datasets`` x ``methods`` run by train/predict/evaluate stages of its own, beside the
    main matrix: MedFlowSeg's ablation variants (paper Tables 3 and 4; the full model comes from the main
    ``methods``) and the baselines, each on the datasets that bound its time at the profile."""
    datasets: tuple[str, ...] = checked((), NAMES)
    methods: tuple[str, ...] = checked((), NAMES)


@dataclass(frozen=True)
class SweepConfig(Checked):
    """The Dice-vs-NFE sweep of one flow-matching method (``segbench nfe-sweep``): Euler at each of ``steps``,
    and dopri5 at ``rtol``/``atol`` where ``dopri5`` (the command line's options override these)."""
    datasets: tuple[str, ...] = checked((), NAMES)
    method: str = checked("medflowseg", NAME)
    steps: tuple[int, ...] = checked((1, 2, 4, 8, 16, 50), Rule(
        "a non-empty list of distinct integers >= 1", lambda v: isinstance(v, tuple) and len(v) > 0
        and all(_int(x) and x >= 1 for x in v) and len(set(v)) == len(v)))
    dopri5: bool = checked(True, BOOLEAN)
    rtol: float = checked(1e-3, number(0, low_open=True))
    atol: float = checked(1e-3, number(0, low_open=True))


@dataclass(frozen=True)
class ConditionHeadConfig(Checked):
    """The row ``<method>-head``: the trained ``method``'s condition network scored by its own segmentation head
    (MedFlowSeg's auxiliary head), on each dataset here, with no training of its own (``segbench predict
    --condition-head``). Each dataset must be one the method trains on."""
    datasets: tuple[str, ...] = checked((), NAMES)
    method: str = checked("medflowseg", NAME)

    @property
    def row(self) -> str:
        return f"{self.method}-head"


@dataclass(frozen=True)
class SeedsConfig(Checked):
    """Training seeds beyond the first: each pair of ``datasets`` x ``methods`` is trained, predicted and evaluated
    again once per seed of ``extra`` (``segbench train DATASET METHOD --seed S``, into ``runs/DATASET/METHOD/seed-S``
    and ``results/DATASET/METHOD/seed-S``); the first seed is the method's ``train.seed``, the pair's main run.
    The tables then show the mean over the seeds with its spread, and the interval draws the seeds as well as the
    subjects (benchmark/statistics.py). Every pair must be one the profile trains (:meth:`Config.pairs`)."""
    extra: tuple[int, ...] = checked((), Rule("a list of distinct integers >= 0", lambda v: isinstance(v, tuple)
                                              and all(_int(x) and x >= 0 for x in v) and len(set(v)) == len(v)))
    datasets: tuple[str, ...] = checked((), NAMES)
    methods: tuple[str, ...] = checked((), NAMES)

    def pairs(self) -> list[tuple[str, str]]:
        """The (dataset, method) pairs trained with every extra seed (none without an extra seed)."""
        return [(d, m) for d in self.datasets for m in self.methods] if self.extra else []


@dataclass(frozen=True)
class Table4Config(Checked):
    """The complexity-and-uncertainty table (the shape of the paper's Table 4): parameters, MACs, CI,
    GED and Dice of each method on each dataset here. Every pair must be evaluated by the main
    matrix (``datasets`` x ``methods``) or the ablation matrix."""
    datasets: tuple[str, ...] = checked((), NAMES)
    methods: tuple[str, ...] = checked((), NAMES)


def _default_tolerance() -> dict:
    # Our choice (the papers state none): one point of Dice/IoU %, 1 mm of HD95, 2 points of CI/GED x100,
    # 10% of the paper's parameter and GFLOP counts at its values (11 M of 111 M, 79 of 789 GFLOPs).
    return {"%": 1.0, "mm": 1.0, "x100": 2.0, "M params": 11.0, "GFLOPs": 79.0}


@dataclass(frozen=True)
class ClaimsConfig(Checked):
    """How the claims report (benchmark/reproduction.py) judges a result against the paper's number."""
    tolerance: dict = checked(r=Rule("a mapping of claim units to numbers >= 0", lambda v: isinstance(v, dict) and all(
        isinstance(u, str) and _number(t) and t >= 0 for u, t in v.items())), factory=_default_tolerance)
    # claim unit -> how far outside our interval (a point, for a value that is not a mean over cases) the
    # paper's value may lie
    # The interval of every mean over cases (benchmark/statistics.py): our choices, as the papers give none.
    bootstrap_resamples: int = checked(10000, integer(100))
    confidence: float = checked(0.95, number(0.0, 1.0, low_open=True, high_open=True))
    bootstrap_seed: int = checked(0, integer(0))
    # Holm-adjusted p below which a method's per-case Dice differs from MedFlowSeg's (the tables' dagger)
    significance: float = checked(0.05, number(0.0, 1.0, low_open=True, high_open=True))


@dataclass(frozen=True)
class Config(Checked):
    profile: str = checked(r=NAME)
    datasets: tuple[str, ...] = checked(r=NAMES)
    methods: tuple[str, ...] = checked(r=NAMES)
    data: DataConfig
    evaluation: EvalConfig
    method: dict[str, MethodConfig]
    baselines: MatrixConfig = MatrixConfig()
    ablations: MatrixConfig = MatrixConfig()
    nfe_sweep: SweepConfig = SweepConfig()
    condition_head: ConditionHeadConfig = ConditionHeadConfig()
    table4: Table4Config = Table4Config()
    seeds: SeedsConfig = SeedsConfig()
    claims: ClaimsConfig = ClaimsConfig()
    # How the train stages start `segbench`: "segbench" (one process), or an Accelerate launch for several GPUs
    # or nodes, e.g. "accelerate launch --multi_gpu --num_processes 4 -m benchmark.cli" (README "Training").
    launcher: str = checked("segbench", NAME)
    source: str = "params.yaml"

    def pairs(self) -> list[tuple[str, str]]:
        """Every (dataset, method) some evaluate stage scores: the main matrix, the baselines', the ablations'."""
        out = [(d, m) for d in self.datasets for m in self.methods]
        out += [(d, m) for d in self.baselines.datasets for m in self.baselines.methods]
        out += [(d, m) for d in self.ablations.datasets for m in self.ablations.methods]
        out += [(d, self.condition_head.row) for d in self.condition_head.datasets]
        return list(dict.fromkeys(out))

    def seeds_of(self, dataset: str, method: str) -> tuple[int, ...]:
        """The extra training seeds of a pair (``seeds``; none for most)."""
        return self.seeds.extra if (dataset, method) in self.seeds.pairs() else ()

    def trained_as(self, method: str) -> str:
        """The method whose training a row's scores come from: the condition-head row's is its method's."""
        return self.condition_head.method if self.condition_head.datasets and method == self.condition_head.row else method

    def evaluated(self, dataset: str, method: str) -> bool:
        """Whether some evaluate stage scores ``method`` on ``dataset``."""
        return (dataset, method) in self.pairs()

    @property
    def compared_methods(self) -> tuple[str, ...]:
        """The rows of the comparison tables (paper Tables 1 and 2): the main methods (a method's condition-head
        row right after it), then the baselines."""
        head = self.condition_head
        main = tuple(r for m in self.methods
                     for r in ((m, head.row) if head.datasets and m == head.method else (m,)))
        return tuple(dict.fromkeys(main + self.baselines.methods))

    def method_config(self, name: str, dataset: str | None = None) -> MethodConfig:
        """The section of method ``name``; on ``dataset``, its ``datasets.<dataset>`` settings where it has them."""
        if name not in self.method:
            raise ConfigError(f"{self.source}: no section method.{name} (known: {sorted(self.method)})")
        mc = self.method[name]
        return mc.datasets.get(dataset, mc) if dataset is not None else mc

    def named_methods(self) -> dict[str, str]:
        """Every method the profile names, with the key path of its first mention."""
        keys = [("methods", self.methods), ("baselines.methods", self.baselines.methods),
                ("ablations.methods", self.ablations.methods), ("table4.methods", self.table4.methods),
                ("seeds.methods", self.seeds.methods),
                ("nfe_sweep.method", (self.nfe_sweep.method,) if self.nfe_sweep.datasets else ())]
        return _first_mention(keys)

    def named_datasets(self) -> dict[str, str]:
        """Every dataset the profile names, with the key path of its first mention."""
        keys = [("datasets", self.datasets), ("baselines.datasets", self.baselines.datasets),
                ("ablations.datasets", self.ablations.datasets), ("nfe_sweep.datasets", self.nfe_sweep.datasets),
                ("condition_head.datasets", self.condition_head.datasets), ("table4.datasets", self.table4.datasets),
                ("seeds.datasets", self.seeds.datasets)]
        return _first_mention(keys)

    def check_names(self) -> None:
        """Every dataset and method the profile names is registered, and every such method's ``model:`` section
        binds to its constructor (:meth:`check_methods`): the check of ``segbench check-data``, the pipeline's
        first stage, so a typo stops ``dvc repro`` within seconds."""
        from benchmark.data.registry import available_datasets
        registered = available_datasets()
        for name, key in self.named_datasets().items():
            if name not in registered:
                raise ConfigError(f"{self.source}: {key}: unknown dataset {name!r}; registered: {registered}")
        for method, mc in self.method.items():
            for name in mc.datasets:
                if name not in registered:
                    raise ConfigError(f"{self.source}: method.{method}.datasets: unknown dataset {name!r}; "
                                      f"registered: {registered}")
        self.check_methods(tuple(self.named_methods()))

    def check_methods(self, names: tuple[str, ...]) -> None:
        """Each method of ``names`` is registered and its ``method.NAME.model`` section names only parameters its
        constructor takes (:func:`benchmark.methods.registry.check_params`). This imports the methods' code
        (about 5 s for all of the default profile's), so it runs when a stage that needs them loads the file,
        not on every load."""
        from benchmark.methods.registry import check_params
        named = self.named_methods()
        for name in names:
            mc = self.method_config(name)
            check_params(name, mc.model, self.source, named.get(name, f"method.{name}"))
            for dataset, on in mc.datasets.items():
                check_params(name, on.model, self.source, f"method.{name}.datasets.{dataset}")


def _first_mention(keys: list[tuple[str, tuple[str, ...]]]) -> dict[str, str]:
    """``{name: the first key path listing it}`` over ``(key path, names)`` pairs, in order."""
    out: dict[str, str] = {}
    for key, names in keys:
        for name in names:
            out.setdefault(name, key)
    return out


def build_section(cls, d: dict | None, where: str, source: str | None = None):
    """The dataclass ``cls`` from the mapping ``d`` found at key path ``where`` of the file ``source``; an
    unknown key, a value that is not a mapping, or a field that breaks its rule is a :class:`ConfigError`
    naming the file and the key path."""
    prefix = f"{source}: " if source else ""
    if d is not None and not isinstance(d, dict):
        raise ConfigError(f"{prefix}{where}: must be a mapping of keys to values, got {d!r}")
    d = {k: tuple(v) if isinstance(v, list) and _tuple_field(cls, k) else v for k, v in (d or {}).items()}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names, key=str)
    if unknown:
        raise ConfigError(f"{prefix}{where}: unknown key(s) {unknown} (allowed: {sorted(names)})")
    try:
        return cls(**d)
    except FieldError as e:
        raise ConfigError(f"{prefix}{where + '.' if where else ''}{e.key}: {e.problem}") from None


def _tuple_field(cls, key: str) -> bool:
    """Whether field ``key`` of ``cls`` holds a tuple (YAML gives lists)."""
    f = {f.name: f for f in dataclasses.fields(cls)}.get(key)
    return f is not None and str(f.type).startswith("tuple")


def _merge(base: Any, override: dict | None, where: str, source: str):
    if override is not None and not isinstance(override, dict):
        raise ConfigError(f"{source}: {where}: must be a mapping of keys to values, got {override!r}")
    return build_section(type(base), {**dataclasses.asdict(base), **(override or {})}, where, source)


def read_params(path: Path | str) -> dict:
    """The parameters file ``path`` as a mapping of sections; a missing file, invalid YAML or anything but a
    mapping is a :class:`ConfigError` naming the file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameters file is missing") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of sections (profile, datasets, methods, ...), got {raw!r}")
    return raw


def _method_section(m: Any, where: str, train: TrainConfig, predict: PredictConfig, src: str,
                    model: dict | None = None, nested: bool = False) -> MethodConfig:
    """A method section (or one of its ``datasets`` entries, ``nested``) read over the ``train``/``predict``
    defaults and the ``model`` it inherits; its ``model`` keys replace the inherited ones one by one."""
    if m is not None and not isinstance(m, dict):
        raise ConfigError(f"{src}: {where}: must be a mapping of keys to values, got {m!r}")
    m = dict(m or {})
    allowed = ("model", "train", "predict") if nested else ("model", "train", "predict", "datasets")
    extra = sorted(set(m) - set(allowed), key=str)
    if extra:
        raise ConfigError(f"{src}: {where}: unknown key(s) {extra} (allowed: {', '.join(allowed)})")
    if m.get("model") is not None and not isinstance(m["model"], dict):
        raise ConfigError(f"{src}: {where}.model: must be a mapping of the method's parameters, got {m['model']!r}")
    return MethodConfig(model={**(model or {}), **(m.get("model") or {})},
                        train=_merge(train, train_length(m.get("train")), f"{where}.train", src),
                        predict=_merge(predict, m.get("predict"), f"{where}.predict", src))


def load_config(path: Path | str = "params.yaml") -> Config:
    raw = read_params(path)
    src = str(path)
    allowed = {"profile", "datasets", "methods", "data", "train", "predict", "evaluation", "method", "baselines",
               "ablations", "nfe_sweep", "condition_head", "table4", "seeds", "claims", "launcher",
               "cluster"}  # validated by benchmark/cluster/resources.py (segbench cluster)
    unknown = sorted(set(raw) - allowed, key=str)
    if unknown:
        raise ConfigError(f"{src}: unknown top-level key(s) {unknown} (allowed: {sorted(allowed)})")
    train = build_section(TrainConfig, train_length(raw.get("train")), "train", src)
    predict = build_section(PredictConfig, raw.get("predict"), "predict", src)
    method_sections = raw.get("method") or {}
    if not isinstance(method_sections, dict):
        raise ConfigError(f"{src}: method: must be a mapping of method names to sections, got {method_sections!r}")
    methods = {}
    for name, m in method_sections.items():
        methods[name] = _method_section(m, f"method.{name}", train, predict, src)
        on = (m or {}).get("datasets") or {}
        if not isinstance(on, dict):
            raise ConfigError(f"{src}: method.{name}.datasets: must be a mapping of dataset names to sections, "
                              f"got {on!r}")
        base = methods[name]
        per_dataset = {ds: _method_section(d, f"method.{name}.datasets.{ds}", base.train, base.predict, src,
                                           base.model, nested=True) for ds, d in on.items()}
        methods[name] = dataclasses.replace(base, datasets=per_dataset)
    cfg = build_section(Config, {
        "profile": raw.get("profile", "default"), "datasets": raw.get("datasets") or [],
        "methods": raw.get("methods") or [], "launcher": raw.get("launcher", "segbench"), "source": src,
        "method": methods,
        "data": build_section(DataConfig, raw.get("data"), "data", src),
        "evaluation": build_section(EvalConfig, raw.get("evaluation"), "evaluation", src),
        "baselines": build_section(MatrixConfig, raw.get("baselines"), "baselines", src),
        "ablations": build_section(MatrixConfig, raw.get("ablations"), "ablations", src),
        "nfe_sweep": build_section(SweepConfig, raw.get("nfe_sweep"), "nfe_sweep", src),
        "condition_head": build_section(ConditionHeadConfig, raw.get("condition_head"), "condition_head", src),
        "table4": build_section(Table4Config, raw.get("table4"), "table4", src),
        "seeds": build_section(SeedsConfig, raw.get("seeds"), "seeds", src),
        "claims": build_section(ClaimsConfig, raw.get("claims"), "claims", src)}, "", src)
    for name, key in cfg.named_methods().items():
        if name not in cfg.method:
            raise ConfigError(f"{src}: {key}: {name!r} has no section method.{name} (sections: {sorted(cfg.method)})")
    for section in ("baselines", "ablations"):
        outside = [d for d in getattr(cfg, section).datasets if d not in cfg.datasets]
        if outside:
            raise ConfigError(f"{src}: {section}.datasets {outside} are not in datasets, so no stage prepares them")
    head = cfg.condition_head
    untrained = [d for d in head.datasets if (d, head.method) not in cfg.pairs()]
    if untrained:
        raise ConfigError(f"{src}: condition_head.datasets {untrained}: {head.method} is not trained there "
                          f"(the row reads its trained model)")
    _check_seeds(cfg)
    missing = [f"{d}/{m}" for d in cfg.table4.datasets for m in cfg.table4.methods if not cfg.evaluated(d, m)]
    if missing:
        raise ConfigError(f"{src}: table4 asks for {missing}, which no evaluate stage produces "
                          f"(add them to datasets x methods, baselines or ablations)")
    return cfg


def _check_seeds(cfg: Config) -> None:
    """Each pair of ``seeds`` is trained by the profile (not the condition-head row, which trains nothing), and no
    extra seed is the pair's first one (its method's ``train.seed``)."""
    trained = [p for p in cfg.pairs() if cfg.trained_as(p[1]) == p[1]]
    outside = [f"{d}/{m}" for d in cfg.seeds.datasets for m in cfg.seeds.methods if (d, m) not in trained]
    if outside:
        raise ConfigError(f"{cfg.source}: seeds: {outside} are pairs the profile does not train (seeds.datasets x "
                          f"seeds.methods must lie in datasets x methods, baselines or ablations)")
    for d, m in cfg.seeds.pairs():
        first = cfg.method_config(m, d).train.seed
        if first in cfg.seeds.extra:
            raise ConfigError(f"{cfg.source}: seeds.extra: {first} is already {d}/{m}'s first training seed "
                              f"(method.{m} train.seed); list only the seeds trained beyond it")
