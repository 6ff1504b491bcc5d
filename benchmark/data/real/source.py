"""A real dataset's source: where its files come from, how they are verified, extracted and converted.

Each dataset is one module of this package declaring:

- ``INFO``: its :class:`~benchmark.data.case.DatasetInfo` (``phantom=False``);
- ``FILES``: the :class:`RemoteFile` s it needs (``url=None`` for registration-gated files); optionally
  ``ALTERNATIVE_FILES``, other releases (tuples of files) the converter reads as well, used when all of
  one such set is on this machine and ``FILES`` is not;
- ``LICENCE``, ``CITATION``, ``HOMEPAGE``: printed at fetch and kept beside the data in ``LICENCE.txt``;
- ``HOW_TO_GET``: the steps for files nobody may download automatically;
- optionally ``PUBLISHED_SPLIT``: the :class:`PublishedSplit` sizes, with their source, from which
  ``segbench plan`` counts training steps and test slices before the data are on the machine;
- ``load(root, cfg)``: iterate the :class:`~benchmark.data.case.Case` s of the extracted files, at the
  profile's size (each archive ``NAME.zip`` / ``NAME.tar.gz`` is extracted into ``root/NAME/``; other
  files are linked into ``root``);
- ``split(cases, cfg)``: ``subject_id -> "train" | "val" | "test"``;
- ``source()``: ``RealSource(sys.modules[__name__])``, the callable ``pyproject.toml`` registers in the
  ``segbench.datasets`` entry-point group (an external package's dataset can declare the same and register
  its own module; see :mod:`benchmark.data.interface`).

Where files are looked for, in order: ``data/raw/DATASET/NAME`` (placed by hand; ``data.dvc`` tracks
``data/raw``), then ``data/downloads/DATASET/NAME`` (what earlier fetches downloaded), then the URL,
downloaded resumably into ``data/downloads``. Every file, hand-placed ones included, is checked against its
recorded checksum and for content of the kind its name says (:mod:`benchmark.data.filetype`; never a web page).
A wrong file (checksum, content, or an archive that cannot be read) is an error naming it: one placed by hand is
the user's and is kept (they replace it); one the suite downloaded is deleted, so the next fetch downloads it
again.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

from benchmark import paths
from benchmark.config import DataConfig
from benchmark.data import download as dl
from benchmark.data.archive import ARCHIVE_SUFFIXES, ArchiveError, extract, is_archive
from benchmark.data.case import Case, DatasetInfo
from benchmark.data.filetype import ContentError, check_content
from benchmark.data.interface import DatasetMissing

LICENCE_FILE = "LICENCE.txt"


@dataclass(frozen=True)
class RemoteFile:
    """One file a dataset needs.

    Attributes:
        name: file name under ``data/raw/DATASET/`` or ``data/downloads/DATASET/``.
        url: where to download it; None when registration or terms forbid automated download.
        checksum: ``"sha256:HEX"`` or ``"md5:HEX"`` as published or as the first real download recorded;
            None while nobody has recorded it (the fetch then prints the SHA-256 to pin).
        size_mb: approximate size, for the missing-data message and time estimates.
    """
    name: str
    url: str | None
    checksum: str | None = None
    size_mb: float | None = None

    @property
    def gated(self) -> bool:
        return self.url is None


@dataclass(frozen=True)
class PublishedSplit:
    """The sizes of a release's published split, for planning (``segbench plan``) before its files are here.

    Attributes:
        train_slices: 2D slices of the published training part.
        test_cases, test_slices: the test part, in cases (a volume is one case) and in 2D slices.
        val_from_train: validation subjects are drawn from the training part (a share val / (train + val) of
            ``data.split``, :func:`benchmark.data.real.splits.standard`); False when the release's own
            validation part is used and ``train_slices`` is what trains.
        slice_subjects: every slice is its own subject, so the share drawn is exact in slices; otherwise
            subjects hold several slices and the training slices left are an estimate.
        source: where the numbers are stated.
    """
    train_slices: int
    test_cases: int
    test_slices: int
    val_from_train: bool
    slice_subjects: bool
    source: str


class RealSource:
    """One real dataset module as a :class:`~benchmark.data.interface.DatasetSource` whose files are
    downloaded or placed by hand (:class:`~benchmark.data.interface.FilesToObtain`).

    ``raw`` and ``downloads`` default to ``data/raw/DATASET`` and ``data/downloads/DATASET``; ``files``
    replaces the module's ``FILES`` (tests serve fixtures from a local server this way).
    """

    def __init__(self, module: ModuleType, raw: Path | None = None, downloads: Path | None = None,
                 files: tuple[RemoteFile, ...] | None = None):
        self.module = module
        self.info: DatasetInfo = module.INFO
        self.raw = Path(raw) if raw is not None else paths.raw(self.info.name)
        self.downloads = Path(downloads) if downloads is not None else paths.downloads(self.info.name)
        self._files = tuple(files) if files is not None else None

    @property
    def files(self) -> tuple[RemoteFile, ...]:
        """``FILES``, or the first of ``ALTERNATIVE_FILES`` wholly on this machine when ``FILES`` is not."""
        if self._files is not None:
            return self._files
        main = tuple(self.module.FILES)
        if all(self.local(f) for f in main):
            return main
        for alt in getattr(self.module, "ALTERNATIVE_FILES", ()):
            if all(self.local(f) for f in alt):
                return tuple(alt)
        return main

    # ------------------------------------------------------------------ where the files are
    def local(self, f: RemoteFile) -> Path | None:
        for folder in (self.raw, self.downloads):
            if (folder / f.name).is_file():
                return folder / f.name
        return None

    def missing(self, probe: bool = True) -> list[str]:
        """One line per file that is neither here nor downloadable from here (empty: fetch can proceed).

        ``probe``: ask each download host whether it answers (seconds; nothing is downloaded).
        """
        return [line for f in self.files if (line := self._gap(f, probe))]

    def _gap(self, f: RemoteFile, probe: bool) -> str | None:
        if self.local(f) is not None:
            return None
        if f.gated:
            return f"{f.name}: no automated download (registration or terms); place it in {self.raw}/"
        if probe and not dl.reachable(f.url):
            return (f"{f.name}: {f.url} cannot be reached from this machine; download it elsewhere "
                    f"and place it in {self.raw}/")
        return None

    def on_this_machine(self) -> bool:
        return all(self.local(f) for f in self.files)

    def how_to_get(self) -> str:
        size = sum(f.size_mb or 0 for f in self.files)
        lines = [f"{self.info.name} ({self.info.stands_for}; {self.module.HOMEPAGE}; about {size / 1024:.1f} GB):"]
        lines += ["  " + ln for ln in self.module.HOW_TO_GET.strip().splitlines()]
        remote = [f.name for f in self.files if not f.gated]
        if remote:
            lines.append(f"  where the source can be reached, `segbench fetch {self.info.name}` downloads "
                         f"{', '.join(remote)}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ the protocol
    def fetch(self, dest: Path, cfg: DataConfig) -> dict:
        """Obtain, verify and extract every file into ``dest`` (a fresh folder the caller renames into place)."""
        gaps = [line for f in self.files if f.gated and (line := self._gap(f, probe=False))]
        if gaps:   # before any long download: the hand-placed files must all be there
            raise DatasetMissing(f"{self.info.name}: missing files\n  " + "\n  ".join(gaps) + "\n" + self.how_to_get())
        records = []
        for f in self.files:
            path = self.local(f)
            origin = "placed by hand" if path is not None and path.parent == self.raw else "downloaded"
            if path is None:
                print(f"fetch {self.info.name}: downloading {f.url} -> {self.downloads / f.name}", flush=True)
                path = self.downloads / f.name
                sha = dl.download(f.url, path, checksum=f.checksum)
            else:
                sha = self._check_local(f, path, by_hand=origin == "placed by hand")
            if f.checksum is None:
                print(f"fetch {self.info.name}: no checksum recorded for {f.name}; its SHA-256 is {sha}. Record "
                      f"it in {self.module.__name__} so later fetches are verified.", flush=True)
            records.append({"name": f.name, "url": f.url, "origin": origin, "sha256": sha,
                            "checksum_recorded": f.checksum is not None})
            if is_archive(path):   # each archive in a folder of its own: two archives may share top-level names
                try:
                    extract(path, dest / archive_stem(path.name))
                except ArchiveError as e:
                    raise self._refused(f, path, origin == "placed by hand", e) from e
            else:
                _copy(path, dest / f.name)
        licence = licence_text(self.module)
        (dest / LICENCE_FILE).write_text(licence)
        print(licence, flush=True)
        return {"source": self.module.HOMEPAGE, "files": records, "licence": self.module.LICENCE,
                "citation": self.module.CITATION, "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def _check_local(self, f: RemoteFile, path: Path, by_hand: bool) -> str:
        """The SHA-256 of a file already here, after checking its content and checksum."""
        try:
            check_content(path)
            return dl.verify(path, f.checksum, "placed by hand" if by_hand else f.url)
        except (dl.ChecksumError, ContentError) as e:
            raise self._refused(f, path, by_hand, e) from e

    def _refused(self, f: RemoteFile, path: Path, by_hand: bool, e: Exception) -> Exception:
        """``e`` with what became of the wrong file ``path``: one placed by hand is the user's and is kept; one
        downloaded is deleted, so that the next fetch downloads it again (see the module docstring)."""
        if by_hand:
            instead = "" if f.gated else " (or remove it: the fetch then downloads it)"
            return type(e)(f"{e}. It was placed by hand and is kept: replace it with the release's "
                           f"{f.name}{instead}")
        path.unlink(missing_ok=True)
        return type(e)(f"{e}. The download has been deleted: fetch again to download it anew")

    def load(self, src: Path, cfg: DataConfig):
        return self.module.load(Path(src), cfg)

    def split(self, cases: list[Case], cfg: DataConfig) -> dict[str, str]:
        return self.module.split(cases, cfg)


def archive_stem(name: str) -> str:
    """``"train.tar.gz"`` -> ``"train"``: the folder an archive is extracted into."""
    lower = name.lower()
    return next(name[: -len(s)] for s in ARCHIVE_SUFFIXES if lower.endswith(s))


def licence_text(module: ModuleType) -> str:
    info = module.INFO
    return (f"{info.name}: {info.stands_for}\nHomepage: {module.HOMEPAGE}\n\nLicence / terms of use:\n"
            f"{module.LICENCE.strip()}\n\nCite:\n{module.CITATION.strip()}\n")


def _copy(src: Path, dst: Path) -> None:
    """A copy, not a link: DVC may make its outputs read-only, and the hand-placed original must not change."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
