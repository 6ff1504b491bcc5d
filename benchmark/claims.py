"""The papers' numeric claims as data: ``paper/claims.yaml`` and its loader.

The file is a YAML list, one mapping per claim: a number a paper of the catalogue
(``paper/catalogue.yaml``: MedFlowSeg, FlowSDF, ATFM) prints (a table cell or a setting in the
text), where it is printed (``source``: table, row, column), its unit and whether higher is
better. :func:`load_claims` reads and validates it so that a benchmark result can be set beside
the claim it reproduces.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmark.errors import SegbenchError

__all__ = ["Claim", "ClaimsError", "load_claims"]


class ClaimsError(SegbenchError, ValueError):
    """The claims file is malformed; the message names the file and the claim."""

_REQUIRED = {"id", "paper", "source", "value", "unit", "higher_is_better"}
_OPTIONAL = {"dataset", "method", "metric", "note"}
_SOURCE = {"table", "row", "column"}


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    table: str
    row: str
    column: str
    value: float
    unit: str
    higher_is_better: bool | None
    dataset: str | None = None
    method: str | None = None
    metric: str | None = None
    note: str | None = None


def _text(raw: dict, key: str, optional: bool = False) -> str | None:
    value = raw.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key!r} must be a non-empty string, got {value!r}")
    return value


def _claim(raw: object, papers: Collection[str]) -> Claim:
    if not isinstance(raw, dict):
        raise ValueError(f"a claim must be a mapping, got {raw!r}")
    if unknown := set(raw) - _REQUIRED - _OPTIONAL:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    if missing := _REQUIRED - set(raw):
        raise ValueError(f"missing keys {sorted(missing)}")
    source = raw["source"]
    if not isinstance(source, dict) or set(source) != _SOURCE:
        raise ValueError(f"'source' must have exactly the keys {sorted(_SOURCE)}, got {source!r}")
    if raw["paper"] not in papers:
        raise ValueError(f"unknown paper {raw['paper']!r} (known: {', '.join(papers)})")
    value = raw["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"'value' must be a number, got {value!r}")
    if raw["higher_is_better"] not in (True, False, None):
        raise ValueError(f"'higher_is_better' must be true, false or null, got {raw['higher_is_better']!r}")
    return Claim(id=_text(raw, "id"), paper=raw["paper"], table=_text(source, "table"), row=_text(source, "row"),
                 column=_text(source, "column"), value=value, unit=_text(raw, "unit"),
                 higher_is_better=raw["higher_is_better"],
                 **{key: _text(raw, key, optional=True) for key in sorted(_OPTIONAL)})


def load_claims(path: Path, papers: Collection[str]) -> list[Claim]:
    """Every claim of ``path``, in file order; :class:`ClaimsError` naming the file and the claim on bad input.

    ``papers``: the paper ids a claim may name (the catalogue's ``papers``).
    """
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, list):
        raise ClaimsError(f"{path}: expected a list of claims, got {type(raw).__name__}")
    claims: list[Claim] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        name = item.get("id") if isinstance(item, dict) else None
        where = f"{path}: claim {name!r}" if name is not None else f"{path}: claim #{i + 1}"
        try:
            claim = _claim(item, papers)
        except ValueError as err:
            raise ClaimsError(f"{where}: {err}") from None
        if claim.id in seen:
            raise ClaimsError(f"{where}: duplicate id")
        seen.add(claim.id)
        claims.append(claim)
    return claims
