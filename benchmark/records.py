"""The records the stages hand each other, and the one pair of functions that write and read them.

Four records, each a JSON file written by one stage and read by the later ones:

- :class:`RunRecord`, ``runs/<dataset>/<method>/model/meta.json``: the train stage (``benchmark/training``, or a
  method that trains itself);
- :class:`PredictionRecord`, ``runs/<dataset>/<method>/predictions/meta.json``: the predict stage;
- :class:`EvaluationRecord`, ``results/<dataset>/<method>/evaluation.json``: the evaluate stage;
- :class:`ComplexityRecord`, ``results/<dataset>/<method>/complexity.json``: the complexity stage.

Every record has one :class:`Status` and a ``reason``. A record that is ``ok`` (or ``partial``: a run stopped
by ``--max-steps``) holds every field; a ``not_run`` record (the stage's input was not available) holds only
the status, the fields that say what did not run, and the reason, and is built by :meth:`Record.not_run`
alone; ``missing`` (the file does not exist) is never written, only returned by ``read_record(...,
missing_ok=True)``.

The JSON has the keys of the fields, in field order; a ``reason`` is written only when the stage did not run.
JSON has no NaN or infinity: :func:`write_record` writes a non-finite number as ``null`` (no value), as the
evaluation already writes a mean over no cases.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import ClassVar, TypeVar

from benchmark.data.store import CaseFileError, atomic_write, json_text

__all__ = ["Status", "Record", "RunRecord", "PredictionRecord", "EvaluationRecord", "ComplexityRecord",
           "write_record", "read_record"]


class Status(str, Enum):
    """What a stage did: ``ok``; ``partial`` (a run stopped early); ``not_run`` (its input was not available,
    ``reason`` says why); ``missing`` (no record on disk)."""
    OK = "ok"
    PARTIAL = "partial"
    NOT_RUN = "not_run"
    MISSING = "missing"


def _nullable(default=None):
    """A field an ``ok`` record always writes, with ``null`` allowed (e.g. no loss when no step ran)."""
    return field(default=default, metadata={"nullable": True})


def _optional():
    """A field written only when set (a method's own details)."""
    return field(default=None, metadata={"optional": True})


R = TypeVar("R", bound="Record")


@dataclass(frozen=True)
class Record:
    """Base of the stage records: a :class:`Status`; the subclasses add their fields and end with ``reason``."""
    WHAT: ClassVar[str] = "record"      # what the file is, in error messages
    STAGE: ClassVar[str] = ""           # the stage that writes it
    status: Status

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @classmethod
    def not_run(cls: type[R], reason: str, **what: object) -> R:
        """The record of a stage whose input was not available; ``what``: the fields naming what did not run."""
        return cls(status=Status.NOT_RUN, reason=reason, **what)

    @classmethod
    def missing(cls: type[R], path: Path) -> R:
        return cls(status=Status.MISSING, reason=f"{path} does not exist")

    def __post_init__(self):
        object.__setattr__(self, "status", Status(self.status))
        if self.status in (Status.OK, Status.PARTIAL):
            absent = [f.name for f in _fields(self) if getattr(self, f.name) is None
                      and not f.metadata.get("nullable") and not f.metadata.get("optional")]
            if absent:
                raise ValueError(f"a {self.status.value} {self.WHAT} needs {', '.join(absent)}")

    def to_json(self) -> dict:
        """The JSON object of this record (see the module docstring for which fields are written)."""
        done = self.status in (Status.OK, Status.PARTIAL)
        out = {"status": self.status.value}
        for f in _fields(self):
            value = getattr(self, f.name)
            if done and not (value is None and f.metadata.get("optional")) or not done and value is not None:
                out[f.name] = value
        if not done:
            out["reason"] = self.reason
        return out


def _fields(record) -> list[dataclasses.Field]:
    """The fields after ``status``, ``reason`` excepted."""
    return [f for f in dataclasses.fields(record) if f.name not in ("status", "reason")]


@dataclass(frozen=True)
class RunRecord(Record):
    """The train stage's ``model/meta.json``: what was trained, how, on which data, and the weights' hash."""
    WHAT: ClassVar[str] = "run record (model/meta.json)"
    STAGE: ClassVar[str] = "train"
    method: str | None = None
    dataset: str | None = None
    steps: int | None = None                # optimizer steps run
    epochs: float | None = _optional()      # the length as given, where given in epochs (benchmark/config.py) ...
    slices_per_epoch: int | None = _optional()   # ... the training slices of one epoch (ceil(epochs x slices /
    # batch_size) steps)
    global_batch: int | None = _optional()  # older records of a run in epochs: the slices of one step (batch_size)
    batch_size: int | None = _optional()    # the global batch: slices per optimizer step, all processes together
    micro_batch_size: int | None = _optional()   # slices per forward pass of one process ...
    accumulation: int | None = _optional()  # ... its passes a step: batch_size = world_size x accumulation x micro
    world_size: int | None = None
    device: str | None = None
    mixed_precision: str | None = _optional()    # Accelerate's: "no", "bf16" or "fp16"
    notes: list | None = _optional()        # settings the run could not honour on its device, and why
    seconds: float | None = None
    final_loss: float | None = _nullable()
    model_params: dict | None = None
    train: dict | None = None
    predict: dict | None = None
    in_channels: int | None = None
    num_classes: int | None = None
    fingerprint: str | None = None          # hash of the resolved config and manifest; checkpoints resume on it
    manifest_sha256: str | None = None
    git_revision: str | None = None
    weights_sha256: str | None = None
    nnunet: dict | None = _optional()       # nnU-Net's own details (benchmark/methods/nnunet.py)
    timings: dict | None = _optional()      # seconds per phase, for a method that trains in phases
    reason: str = ""


@dataclass(frozen=True)
class PredictionRecord(Record):
    """The predict stage's ``predictions/meta.json``: samples per case, network evaluations, timings."""
    WHAT: ClassVar[str] = "prediction record (predictions/meta.json)"
    STAGE: ClassVar[str] = "predict"
    dataset: str | None = None
    n_cases: int | None = None
    n_samples_requested: int | None = None
    n_samples: int | None = None
    nfe_per_sample: float | None = None
    nfe_definition: str | None = _optional()   # where one evaluation is not one network call per step
    sampler: str | None = _optional()          # the method's default_sampler that made them (its repr)
    seconds_per_case: float | None = None
    seconds_total: float | None = None
    device: str | None = None
    seed: int | None = None
    uncertainty: str | None = None            # the definition of the ``uncertainty`` array
    readout: str | None = _optional()         # "condition-head": the method's condition head alone, not its samples
    nnunet: dict | None = _optional()
    reason: str = ""


@dataclass(frozen=True)
class EvaluationRecord(Record):
    """The evaluate stage's ``evaluation.json``.

    ``average``: metric -> mean over classes (None: no case scored); ``per_class``: class name -> {metric:
    mean, ``n_cases``, ``n_excluded``: {metric: count}}; ``set_metrics``: {``n_samples``, ``n_raters``,
    ``ged_counts_not_available``, ``mean``: {set metric: mean}}; ``per_region`` (only for a dataset that
    declares evaluation regions): ``region:<name>`` -> {``classes``: its class names, metric: mean,
    ``n_cases``, ``n_excluded``, ``set_metrics``: {set metric: mean}}; ``conventions``: every setting that
    produced the numbers (``fusion``, ``reference``, ...); ``staple_not_converged`` (written where STAPLE
    fuses the samples or the raters): {``count``, ``cases``: the case ids} of the cases whose STAPLE was
    stopped by its iteration guard (``evaluation.staple_max_iterations``) before converging.
    """
    WHAT: ClassVar[str] = "evaluation record (evaluation.json)"
    STAGE: ClassVar[str] = "evaluate"
    dataset: str | None = None
    method: str | None = None
    phantom: bool | None = None
    n_cases: int | None = None
    n_samples: int | None = None
    nfe_per_sample: float | None = None
    sampler: str | None = _optional()          # the prediction record's
    seconds_per_case: float | None = None
    average: dict | None = None
    per_class: dict | None = None
    set_metrics: dict | None = None
    per_region: dict | None = _optional()
    conventions: dict | None = None
    staple_not_converged: dict | None = _optional()
    reason: str = ""


@dataclass(frozen=True)
class ComplexityRecord(Record):
    """The complexity stage's ``complexity.json``: parameters and multiply-adds (MACs) of one image ``image``
    ``(C, H, W)`` through the method's protocol of ``samples`` x ``evaluations_per_sample`` evaluations, and the
    same compute in FLOPs, 2 per multiply-add (``flops_*``: the unit of the paper's Table 4)."""
    WHAT: ClassVar[str] = "complexity record (complexity.json)"
    STAGE: ClassVar[str] = "complexity"
    method: str | None = None
    image: list | None = None
    num_classes: int | None = None
    params: int | None = None
    macs_fixed: float | None = None
    macs_per_sample: float | None = None
    macs_per_evaluation: float | None = None
    macs_protocol: float | None = None
    flops_per_evaluation: float | None = None   # 2 x macs_per_evaluation
    flops_protocol: float | None = None         # 2 x macs_protocol
    samples: int | None = None
    evaluations_per_sample: int | None = None
    counted_by: str | None = None
    uncounted_operators: list | None = None
    reason: str = ""


def write_record(path: Path, record: Record) -> None:
    """Write ``record`` to ``path`` atomically as indented JSON (a value JSON cannot hold, as a string)."""
    text = json_text(record.to_json())
    atomic_write(Path(path), lambda t: t.write_text(text))


def read_record(path: Path, kind: type[R], missing_ok: bool = False) -> R:
    """The ``kind`` record in ``path``; with ``missing_ok`` an absent file is a ``missing`` record.

    Raises:
        CaseFileError: naming the file, when it is absent (unless ``missing_ok``), not JSON, or not a
            ``kind`` record (unknown key, unknown status, a field missing).
    """
    path = Path(path)
    if not path.is_file():
        if missing_ok:
            return kind.missing(path)
        raise CaseFileError(path, f"{kind.WHAT} is missing (run the {kind.STAGE} stage)")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CaseFileError(path, f"{kind.WHAT} is not valid JSON ({e})") from e
    if not isinstance(raw, dict):
        raise CaseFileError(path, f"{kind.WHAT} must be a JSON object, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(kind)}
    if unknown := sorted(set(raw) - names):
        raise CaseFileError(path, f"{kind.WHAT}: unknown keys {unknown}")
    if raw.get("status") not in [s.value for s in Status if s is not Status.MISSING]:
        raise CaseFileError(path, f"{kind.WHAT}: 'status' must be ok, partial or not_run, got {raw.get('status')!r}")
    if raw["status"] in (Status.OK, Status.PARTIAL):
        required = [f.name for f in _fields(kind) if not f.metadata.get("optional")]
        if absent := [k for k in required if k not in raw]:
            raise CaseFileError(path, f"{kind.WHAT}: status {raw['status']!r} needs the keys {absent}")
    try:
        return kind(**raw)
    except (TypeError, ValueError) as e:
        raise CaseFileError(path, f"{kind.WHAT}: {e}") from e
