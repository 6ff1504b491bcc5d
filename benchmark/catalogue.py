"""The catalogue as data: ``paper/catalogue.yaml`` (papers, methods, paper datasets) and its loader.

:func:`load_catalogue` reads and checks the file; the file's header says what each entry means and what adding
a baseline takes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmark import paths
from benchmark.errors import SegbenchError

__all__ = ["CATALOGUE", "Catalogue", "CatalogueError", "MethodEntry", "PaperDataset", "load_catalogue"]

CATALOGUE = paths.PAPER / "catalogue.yaml"


class CatalogueError(SegbenchError, ValueError):
    """The catalogue file is unreadable or malformed; the message names the file and the key."""


@dataclass(frozen=True)
class MethodEntry:
    """A registered method's place in the tables: ``label`` on a row of its own; ``stand_in``: what stands on a
    paper's row where it is not the authors' code; ``paper_rows``: the papers' rows it implements; ``size_of``:
    rows whose parameter and compute claims it is compared with as well (another reading of their architecture);
    ``nfe``: paper id -> the network evaluations per sample that paper's rows of this method were sampled with
    (where the papers differ: MedFlowSeg ran FlowSDF at 100 steps, FlowSDF's own Table 1 at 4)."""
    label: str
    stand_in: str | None = None
    paper_rows: tuple[str, ...] = ()
    size_of: tuple[str, ...] = ()
    nfe: dict[str, float] | None = None


@dataclass(frozen=True)
class PaperDataset:
    """A paper's dataset: ``stand_ins``, our datasets standing for it (most faithful first); what its claims
    score: ``cls``, one class, or ``regions``, evaluation regions of the stand-ins (the mean over them where
    there are several), or neither: the mean over foreground classes; ``reading``: why that reading, where
    the paper does not say, printed on every claims line that uses it."""
    stand_ins: tuple[str, ...]
    cls: str | None = None
    regions: tuple[str, ...] = ()
    reading: str | None = None


@dataclass(frozen=True)
class Catalogue:
    papers: dict[str, str]                  # paper id -> title, in report order
    methods: dict[str, MethodEntry]         # registry name -> entry
    datasets: dict[str, PaperDataset]       # paper dataset -> ours

    def label(self, method: str) -> str:
        """``method``'s name on a row of its own: its label, or its registry name."""
        entry = self.methods.get(method)
        return entry.label if entry else method

    def stand_in(self, method: str) -> str | None:
        entry = self.methods.get(method)
        return entry.stand_in if entry else None

    def row_method(self, row: str) -> str | None:
        """The registered method implementing a paper's row; None: not implemented."""
        return next((m for m, e in self.methods.items() if row in e.paper_rows), None)

    def size_readings(self, row: str) -> list[str]:
        """The methods whose size is compared with ``row``'s besides the row's own (``size_of``)."""
        return [m for m, e in self.methods.items() if row in e.size_of]

    def stand_ins(self, paper_dataset: str | None) -> PaperDataset:
        """Our datasets standing for ``paper_dataset`` (none for a dataset the catalogue does not list)."""
        return self.datasets.get(paper_dataset, PaperDataset(()))


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _texts(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{where} must be a list of strings, got {value!r}")
    return tuple(_text(v, f"{where}[{i}]") for i, v in enumerate(value))


def _mapping(value: object, where: str, keys: set[str] | None = None) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping, got {value!r}")
    if keys is not None and (unknown := sorted(set(value) - keys)):
        raise ValueError(f"{where}: unknown keys {unknown} (known: {', '.join(sorted(keys))})")
    return value


def _method(name: str, raw: object) -> MethodEntry:
    where = f"methods.{name}"
    raw = _mapping(raw, where, {"label", "stand_in", "paper_rows", "size_of", "nfe"})
    nfe = _mapping(raw.get("nfe", {}), f"{where}.nfe")
    bad = {k: v for k, v in nfe.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0}
    if bad:
        raise ValueError(f"{where}.nfe: each value must be a number > 0 (paper id -> NFE per sample), got {bad}")
    return MethodEntry(label=_text(raw["label"], f"{where}.label") if "label" in raw else name,
                       stand_in=_text(raw["stand_in"], f"{where}.stand_in") if "stand_in" in raw else None,
                       paper_rows=_texts(raw.get("paper_rows", []), f"{where}.paper_rows"),
                       size_of=_texts(raw.get("size_of", []), f"{where}.size_of"),
                       nfe={str(k): float(v) for k, v in nfe.items()} or None)


def _dataset(name: str, raw: object) -> PaperDataset:
    where = f"datasets.{name}"
    raw = _mapping(raw, where, {"stand_ins", "class", "regions", "reading"})
    if "stand_ins" not in raw:
        raise ValueError(f"{where}: missing key 'stand_ins'")
    if "class" in raw and "regions" in raw:
        raise ValueError(f"{where}: give 'class' or 'regions', not both")
    regions = _texts(raw.get("regions", []), f"{where}.regions")
    if "regions" in raw and not regions:
        raise ValueError(f"{where}.regions must name at least one region")
    return PaperDataset(_texts(raw["stand_ins"], f"{where}.stand_ins"),
                        _text(raw["class"], f"{where}.class") if "class" in raw else None, regions,
                        _text(raw["reading"], f"{where}.reading") if "reading" in raw else None)


def parse_catalogue(raw: object) -> Catalogue:
    """The catalogue of a parsed YAML document; ``ValueError`` naming the key on bad input."""
    raw = _mapping(raw, "the catalogue", {"papers", "methods", "datasets"})
    if missing := sorted({"papers", "methods", "datasets"} - set(raw)):
        raise ValueError(f"missing keys {missing}")
    papers = {_text(k, "papers"): _text(v, f"papers.{k}") for k, v in _mapping(raw["papers"], "papers").items()}
    methods = {_text(k, "methods"): _method(k, v) for k, v in _mapping(raw["methods"], "methods").items()}
    datasets = {_text(k, "datasets"): _dataset(k, v) for k, v in _mapping(raw["datasets"], "datasets").items()}
    owner: dict[str, str] = {}
    for m, entry in methods.items():
        for row in entry.paper_rows:
            if row in owner:
                raise ValueError(f"methods.{m}.paper_rows: row {row!r} is already listed by methods.{owner[row]}")
            owner[row] = m
    return Catalogue(papers, methods, datasets)


def load_catalogue(path: Path = CATALOGUE) -> Catalogue:
    """The catalogue in ``path``; :class:`CatalogueError` naming the file and the key on bad input."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise CatalogueError(f"{path}: cannot read the catalogue ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise CatalogueError(f"{path}: not valid YAML ({e})") from None
    try:
        return parse_catalogue(raw)
    except ValueError as e:
        raise CatalogueError(f"{path}: {e}") from None
