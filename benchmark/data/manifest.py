"""The manifest of a processed dataset, subject-level splits and the leak check.

``manifest.json`` sits beside the case files. It records the dataset description
(with its evaluation regions, written only where it declares some), how it was made,
and one row per case (case id, subject id, split, modality, channels, spacing, class
names, number of annotators, file hash and one hash per slice). Splits are made on subjects; a manifest in which a subject, or an
identical image slice, appears in two splits is a leak and is refused.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmark.data.case import DatasetInfo
from benchmark.data.download import file_digest
from benchmark.data.store import atomic_write, json_text, load_arrays
from benchmark.errors import SegbenchError
from benchmark.records import Status

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"


class ManifestError(SegbenchError, ValueError):
    """A manifest is unreadable, leaks between splits, or has an empty split."""


@dataclass
class CaseEntry:
    case_id: str
    subject_id: str
    split: str
    file: str
    modality: str
    channels: int
    spacing: list[float]
    class_names: list[str]
    n_annotators: int
    n_slices: int
    sha256: str
    slice_hashes: list[str] = field(default_factory=list)
    intensity_mean: list[float] = field(default_factory=list)  # per channel: the z-score the preprocess stage
    intensity_std: list[float] = field(default_factory=list)   # applied, so image * std + mean is the source's


@dataclass
class Manifest:
    dataset: DatasetInfo
    status: Status  # ok, or not_run with ``reason``
    reason: str = ""
    provenance: dict = field(default_factory=dict)
    cases: list[CaseEntry] = field(default_factory=list)
    path: Path | None = field(default=None, compare=False, repr=False)
    """The ``manifest.json`` this was read from (None for one built in memory); the case files are beside it."""

    def split(self, name: str) -> list[CaseEntry]:
        return [c for c in self.cases if c.split == name]

    def to_json(self) -> str:
        dataset = asdict(self.dataset)
        if not dataset["regions"]:
            del dataset["regions"]   # a dataset without regions keeps the manifest it had before they existed
        d = {"dataset": dataset, "status": self.status, "reason": self.reason,
             "provenance": self.provenance, "cases": [asdict(c) for c in self.cases]}
        return json_text(d)

    def save(self, directory: Path) -> Path:
        path = Path(directory) / MANIFEST
        atomic_write(path, lambda tmp: tmp.write_text(self.to_json()))
        return path


def load_manifest(path: Path) -> Manifest:
    """Read a manifest file (or the ``manifest.json`` in a directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise ManifestError(f"{path}: manifest is missing (run the preprocess stage first)")
    try:
        d = json.loads(path.read_text())
        regions = d["dataset"].get("regions", {})
        if not isinstance(regions, dict):
            raise ValueError(f"dataset.regions must map region names to class indices, got {regions!r}")
        info = DatasetInfo(**{**d["dataset"], "class_names": tuple(d["dataset"]["class_names"]),
                              "regions": {k: tuple(v) for k, v in regions.items()}})
        cases = [CaseEntry(**c) for c in d["cases"]]
        return Manifest(info, Status(d["status"]), d.get("reason", ""), d.get("provenance", {}), cases, path)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ManifestError(f"{path}: not a valid manifest ({type(e).__name__}: {e})") from e


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")


BLANK = "blank"  # the hash of a slice holding one value: real volumes have empty slices, and they leak nothing


def slice_hashes(image: np.ndarray) -> list[str]:
    """One short content hash per slice of a ``(Z, C, H, W)`` image (:data:`BLANK` for a constant slice)."""
    return [BLANK if s.size and s.min() == s.max() else hashlib.sha1(np.ascontiguousarray(s).tobytes()).hexdigest()[:16]
            for s in image]


def assign_splits(subject_ids: list[str], fractions: dict[str, float], seed: int) -> dict[str, str]:
    """Seeded split of subjects into train/val/test with the given fractions.

    Every split with a positive fraction gets at least one subject; raises
    :class:`ManifestError` if there are too few subjects for that.
    """
    subjects = sorted(set(subject_ids))
    wanted = [s for s in SPLITS if fractions.get(s, 0) > 0]
    if len(subjects) < len(wanted):
        raise ManifestError(f"{len(subjects)} subjects cannot fill the splits {wanted}")
    order = np.random.default_rng(seed).permutation(len(subjects))
    total = sum(fractions[s] for s in wanted)
    counts = {s: max(1, int(round(len(subjects) * fractions[s] / total))) for s in wanted}
    counts[wanted[0]] = len(subjects) - sum(counts[s] for s in wanted[1:])
    if counts[wanted[0]] < 1:
        raise ManifestError(f"{len(subjects)} subjects cannot fill the splits {wanted}")
    out, i = {}, 0
    for s in wanted:
        for j in order[i:i + counts[s]]:
            out[subjects[j]] = s
        i += counts[s]
    return out


@dataclass
class LeakReport:
    subjects_in_several_splits: dict[str, list[str]]
    slices_in_several_splits: dict[str, list[str]]  # slice hash -> case ids
    test_cases_leaked: list[str]
    n_test_cases: int
    recomputed: int = 0                                   # cases whose slice hashes were computed from their files
    hashes_differ: list[str] = field(default_factory=list)  # of those, the cases whose manifest hashes are not theirs

    @property
    def ok(self) -> bool:
        return not self.subjects_in_several_splits and not self.slices_in_several_splits

    def summary(self) -> str:
        if self.ok:
            return "no leaks: every subject and every image slice belongs to one split" + self._source()
        frac = len(self.test_cases_leaked) / max(1, self.n_test_cases)
        lines = [f"LEAK: {len(self.subjects_in_several_splits)} subjects and "
                 f"{len(self.slices_in_several_splits)} identical slices occur in several splits; "
                 f"{len(self.test_cases_leaked)}/{self.n_test_cases} test cases ({100 * frac:.0f}%) are affected"]
        lines[0] += self._source()
        for s, splits in list(self.subjects_in_several_splits.items())[:10]:
            lines.append(f"  subject {s}: {', '.join(splits)}")
        for h, ids in list(self.slices_in_several_splits.items())[:10]:
            lines.append(f"  slice {h}: cases {', '.join(ids)}")
        return "\n".join(lines)

    def _source(self) -> str:
        if not self.recomputed:
            return ""
        differ = (f"; the manifest's hashes are not those of {len(self.hashes_differ)} of them "
                  f"({', '.join(self.hashes_differ[:10])})" if self.hashes_differ else "")
        return f" (slice hashes of {self.recomputed} cases computed from their files{differ})"


def check_leaks(manifest: Manifest) -> LeakReport:
    """Find subjects, and identical image slices, that occur in more than one split.

    The slice hashes are computed from the case files beside a manifest read from disk, where they are there,
    not taken from the manifest (which could have been edited); the manifest's own are used for the others.
    """
    subject_splits: dict[str, set[str]] = defaultdict(set)
    hash_cases: dict[str, set[tuple[str, str]]] = defaultdict(set)
    recomputed, differ = 0, []
    for c in manifest.cases:
        subject_splits[c.subject_id].add(c.split)
        hashes = c.slice_hashes
        case_file = manifest.path.parent / c.file if manifest.path is not None else None
        if case_file is not None and case_file.is_file():
            hashes = slice_hashes(load_arrays(case_file, ("image",))["image"])
            recomputed += 1
            if hashes != c.slice_hashes:
                differ.append(c.case_id)
        for h in hashes:
            if h != BLANK:
                hash_cases[h].add((c.split, c.case_id))
    bad_subjects = {s: sorted(v) for s, v in subject_splits.items() if len(v) > 1}
    bad_slices = {h: sorted(cid for _, cid in v) for h, v in hash_cases.items()
                  if len({split for split, _ in v}) > 1}
    leaked_ids = {cid for ids in bad_slices.values() for cid in ids}
    test = manifest.split("test")
    leaked = sorted(c.case_id for c in test
                    if c.subject_id in bad_subjects or c.case_id in leaked_ids)
    return LeakReport(bad_subjects, bad_slices, leaked, len(test), recomputed, differ)
