"""What every dataset provides, built in or from another package.

A dataset is an object with ``info``, ``fetch``, ``load`` and ``split`` (:class:`DatasetSource`),
registered by name in the ``segbench.datasets`` entry-point group
(:mod:`benchmark.data.registry`). The entry point names a callable that takes no arguments and
returns the dataset, so a class whose constructor takes none qualifies::

    [project.entry-points."segbench.datasets"]
    my-dataset = "my_package.data:MyDataset"

The suite's own datasets register the same way in ``pyproject.toml``: each module of
:mod:`benchmark.data.phantoms` and :mod:`benchmark.data.real` ends with a ``source()`` factory, and
:mod:`benchmark.data.colin27` with the class ``Colin27Source``. A registered name must be the
dataset's ``info.name``. A new dataset whose files are downloaded or placed by hand
can reuse :class:`~benchmark.data.real.source.RealSource`, which verifies checksums and extracts
archives, by declaring what that module's docstring lists.

The stages and what they ask of a dataset (``cfg`` is the profile's
:class:`~benchmark.config.DataConfig`: ``size``, ``seed``, ``n_subjects``, ``split``, ``splits``):

1. ``segbench fetch NAME`` calls ``fetch(dest, cfg)`` with ``dest`` an empty folder; the suite
   writes ``status.json`` beside what ``fetch`` wrote and renames the folder to
   ``data/fetched/NAME`` only if ``fetch`` returned, so a failure leaves no partial dataset.
2. ``segbench preprocess NAME`` calls ``load(fetched, cfg)`` once, validates every case
   (shapes, label values, raters, NaN), z-scores its intensities and writes it, then calls
   ``split`` with the cases' headers, checks the split for leaks (a subject or an identical
   non-constant slice in two splits) and for an empty train or test split, and writes
   ``manifest.json``.
3. Every later stage reads only the processed folder; ``info`` is recorded in the manifest, so the
   tables and the claims report call the dataset "phantom" or "real" from ``info.phantom``.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

from benchmark.config import DataConfig
from benchmark.data.case import Case, DatasetInfo
from benchmark.errors import SegbenchError


class DataUnavailable(SegbenchError, RuntimeError):
    """Raised by ``fetch``: the dataset cannot be obtained on this machine, and that is no error.

    The fetch stage prints a banner, records the reason in ``status.json``, and every later stage
    marks the dataset "not run" (Colin27 when its Debian package cannot be had)."""


class DatasetMissing(SegbenchError, RuntimeError):
    """Raised by ``fetch``: a dataset whose results must come from its own files lacks them here.

    The fetch stops with this message; the tables are never filled from other data. The message
    says which files are missing and how to get them (a paper dataset behind a registration)."""


class DataFormatError(SegbenchError, ValueError):
    """Raised by ``fetch`` or ``load``: a dataset's own files are not what its converter expects (unreadable,
    malformed, inconsistent). The message starts with the file (or the dataset) and says what is wrong; the
    stage stops with it as one line, so a user can fix or replace that file."""


class ReleaseFileMissing(SegbenchError, FileNotFoundError):
    """Raised by ``load``: a file the converter needs is not among the dataset's files (an annotation without
    its image, a split list, the release's index). The message starts with the file (or the folder searched)."""


@runtime_checkable
class DatasetSource(Protocol):
    info: DatasetInfo
    """Name (the registered name), modality, channels, class names (0 is background), raters,
    the paper dataset it stands for, ``phantom`` (True when the images are synthetic: set it to
    False for real images) and the note printed under every table that uses it."""

    def fetch(self, dest: Path, cfg: DataConfig) -> dict:
        """Put the dataset's native files (or generated ones) into ``dest``, an empty folder.

        Returns:
            Provenance, JSON-serialisable: where the files came from, versions, checksums. It is
            recorded in ``status.json`` and in the manifest.
        Raises:
            DataUnavailable: not obtainable here; the dataset is marked "not run" downstream.
            DatasetMissing: files that must be placed by hand are not there; the fetch stops.
        """
        ...

    def load(self, src: Path, cfg: DataConfig) -> Iterable[Case]:
        """Convert the files ``fetch`` wrote into ``src`` into cases, one at a time (a generator
        keeps a large dataset out of memory).

        Each :class:`Case`: ``image`` float32 ``(Z, C, H, W)`` with ``C = info.channels`` and
        ``H = W = cfg.size`` (resize here; intensities as stored, the suite normalises);
        ``label`` uint8 ``(R, Z, H, W)`` with ``R = info.n_annotators`` and values in
        ``[0, info.num_classes)``; ``case_id`` unique in the dataset; ``subject_id`` the
        patient (splits are made on it); ``spacing`` ``(z, y, x)`` mm; ``extra["source"]``, the
        native file, names it in the error for a bad case. The same files and ``cfg`` must give
        the same cases in the same order.
        """
        ...

    def split(self, cases: list[Case], cfg: DataConfig) -> dict[str, str]:
        """``subject_id -> "train" | "val" | "test"`` for every subject of ``cases``.

        ``cases`` are headers (:meth:`Case.header`: ids, spacing and ``extra``, no slices).
        Deterministic in ``cfg.seed``; the published split where ``cfg.splits == "standard"`` and
        the dataset has one, else the ``cfg.split`` fractions
        (:func:`benchmark.data.manifest.assign_splits` does that).
        """
        ...


@runtime_checkable
class FilesToObtain(Protocol):
    """Optional: a dataset whose files are downloaded or placed by hand.

    ``segbench check-data`` (the first stage of ``dvc repro``) asks each such dataset of the
    profile, before any fetch, whether its files can be had, so a missing one stops the run in
    seconds with the steps to get it. :class:`~benchmark.data.real.source.RealSource` implements it.
    """

    def missing(self, probe: bool = True) -> list[str]:
        """One line per file neither on this machine nor downloadable from it (empty: fetch can
        proceed). ``probe``: ask each download host whether it answers."""
        ...

    def on_this_machine(self) -> bool:
        """Whether every file is already here (else some will be downloaded)."""
        ...

    def how_to_get(self) -> str:
        """The steps to obtain the files, for the message that lists what is missing."""
        ...
