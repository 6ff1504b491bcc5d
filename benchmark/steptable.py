"""The measured GPU step-time table, ``benchmarks/step_times.yaml``: GPUs (memory, peak TFLOP/s), training steps,
network evaluations and the batches that did not fit, each entry with the line of ``benchmarks/NOTES.md`` that
reports it. ``segbench plan`` estimates from it; ``benchmarks/gpu_efficiency.py`` reads its GPU peaks.

An entry is read as measured at its own (method, GPU, precision, size, batch). Between and beyond the measured
batches of one (method, GPU, precision, size) the time and the memory follow the least-squares line through
them (one measured batch: proportional to the batch).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.config import (NAME, Checked, ConfigError, Rule, build_section, checked, integer, number, one_of,
                              or_absent, read_params)

TABLE = Path(__file__).resolve().parents[1] / "benchmarks" / "step_times.yaml"
PRECISIONS = ("bf16", "fp16", "fp32")
PEAKS = Rule("a mapping of tensor-core dtypes (bf16, tf32) to TFLOP/s > 0", lambda v: isinstance(v, dict) and all(
    k in ("bf16", "tf32") and isinstance(x, (int, float)) and x > 0 for k, x in v.items()))


@dataclass(frozen=True)
class GPU(Checked):
    name: str = checked(r=NAME)
    memory_gib: float = checked(r=number(0, low_open=True))
    peak_tflops: dict = checked(r=PEAKS)          # dense tensor-core peak per dtype
    source: str = checked(r=NAME)


@dataclass(frozen=True)
class Entry(Checked):
    """One measurement: a training step (``step_s``, ``peak_gib``), a network evaluation while sampling
    (``eval_s``), or a batch that ran out of memory (neither)."""
    method: str = checked(r=NAME)
    gpu: str = checked(r=NAME)
    precision: str = checked(r=one_of(*PRECISIONS))
    size: int = checked(r=integer(1))
    batch: int = checked(r=integer(1))
    source: str = checked(r=NAME)
    step_s: float | None = checked(None, or_absent(number(0, low_open=True)))
    peak_gib: float | None = checked(None, or_absent(number(0, low_open=True)))
    eval_s: float | None = checked(None, or_absent(number(0, low_open=True)))

    def key(self) -> tuple:
        return self.method, self.gpu, self.precision, self.size


@dataclass(frozen=True)
class Fit:
    """Seconds (and peak GiB) against the batch, from the measured entries of one key."""
    batches: tuple[int, ...]
    seconds: tuple[float, ...]
    memory: tuple[float, ...] | None
    sources: tuple[str, ...]

    def at(self, batch: float) -> tuple[float, float | None]:
        """(seconds, peak GiB or None) at ``batch``."""
        return _line(self.batches, self.seconds, batch), (_line(self.batches, self.memory, batch)
                                                          if self.memory else None)

    @property
    def source(self) -> str:
        lines = sorted(set(self.sources))
        return ", ".join(lines)

    def describe(self, batch: float) -> str:
        b = ", ".join(str(x) for x in self.batches)
        return "measured" if batch in self.batches else f"fit to measured batches {b}"


def _line(xs, ys, x: float) -> float:
    if x in xs:
        return ys[xs.index(x)]
    if len(xs) == 1:
        return ys[0] * x / xs[0]
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(intercept + slope * x)


@dataclass(frozen=True)
class StepTable:
    gpus: dict[str, GPU]
    training: tuple[Entry, ...]
    evaluation: tuple[Entry, ...]
    out_of_memory: tuple[Entry, ...]

    def training_fit(self, method: str, gpu: str, precision: str, size: int) -> Fit | None:
        rows = sorted((e for e in self.training if e.key() == (method, gpu, precision, size)), key=lambda e: e.batch)
        if not rows:
            return None
        return Fit(tuple(e.batch for e in rows), tuple(e.step_s for e in rows), tuple(e.peak_gib for e in rows),
                   tuple(e.source for e in rows))

    def evaluation_fit(self, method: str, gpu: str, precision: str, size: int) -> Fit | None:
        rows = sorted((e for e in self.evaluation if e.key() == (method, gpu, precision, size)), key=lambda e: e.batch)
        if not rows:
            return None
        return Fit(tuple(e.batch for e in rows), tuple(e.eval_s for e in rows), None, tuple(e.source for e in rows))

    def measured_methods(self, gpu: str, precision: str, size: int) -> list[str]:
        """Methods with training entries at (gpu, precision, size), in the table's order."""
        return list(dict.fromkeys(e.method for e in self.training if e.key()[1:] == (gpu, precision, size)))

    def out_of_memory_at(self, method: str, gpu: str, precision: str, size: int, batch: float) -> Entry | None:
        """The smallest batch measured not to fit that is at most ``batch``, or None."""
        rows = [e for e in self.out_of_memory if e.key() == (method, gpu, precision, size) and e.batch <= batch]
        return min(rows, key=lambda e: e.batch) if rows else None


def load_step_table(path: Path | str = TABLE) -> StepTable:
    """The table at ``path``; an unknown key, a bad value or an entry naming an undeclared GPU is a ConfigError
    naming the file and the entry."""
    raw, src = read_params(path), str(path)
    unknown = sorted(set(raw) - {"gpus", "training", "evaluation", "out_of_memory"})
    if unknown:
        raise ConfigError(f"{src}: unknown key(s) {unknown} (allowed: evaluation, gpus, out_of_memory, training)")
    gpus = {name: build_section(GPU, d, f"gpus.{name}", src) for name, d in (raw.get("gpus") or {}).items()}
    needs = {"training": ("step_s", "peak_gib"), "evaluation": ("eval_s",), "out_of_memory": ()}
    parts = {}
    for part, fields in needs.items():
        entries = []
        for i, d in enumerate(raw.get(part) or []):
            where = f"{part}[{i}]"
            e = build_section(Entry, d, where, src)
            missing = [f for f in fields if getattr(e, f) is None]
            extra = [f for f in ("step_s", "peak_gib", "eval_s") if f not in fields and getattr(e, f) is not None]
            if missing or extra:
                problems = ([f"lacks {missing}"] if missing else []) + ([f"must not have {extra}"] if extra else [])
                raise ConfigError(f"{src}: {where}: a {part} entry needs {list(fields) or 'no timing'}, "
                                  + ", ".join(problems))
            if e.gpu not in gpus:
                raise ConfigError(f"{src}: {where}.gpu: {e.gpu!r} is not under gpus ({sorted(gpus)})")
            entries.append(e)
        parts[part] = tuple(entries)
    return StepTable(gpus, **parts)
