"""The one base class of the errors a user can cause.

A :class:`SegbenchError` is something the person running the suite can fix: a parameters file, a dataset's
files, a name, a stage run before the one it needs. Its message names the file (and key) and the problem.
``segbench`` prints it without a traceback (``segbench STAGE: error: MESSAGE``) and exits with
:data:`USER_ERROR`; any other exception is a bug in the suite or in a method and shows its traceback.

Every such error class of the suite derives from it. Where callers or tests catch a builtin type, the class
keeps that type as a second base (``ConfigError``, ``CaseFileError``, ``ManifestError``, ``DataFormatError``,
``ContentError``, ``CatalogueError``, ``ClaimsError``, ``CheckpointError``: ``ValueError``; ``UnknownMethodError``,
``UnknownDatasetError``: ``KeyError``; ``DownloadError``, ``DatasetMissing``: ``RuntimeError``;
``ReleaseFileMissing``: ``FileNotFoundError``). ``DiskFullError`` (a full disk or quota, naming the file) and
``StageBusyError`` (another run of the stage holds its output) keep none: a caller that catches ``OSError``
for a network failure must not swallow a full disk. A method package does not import the suite: its constructor raises ``ValueError`` for a
bad parameter, and :func:`benchmark.methods.registry.build_method` turns that into a :class:`SegbenchError`
naming the method.
"""
from __future__ import annotations

USER_ERROR = 2
"""The exit status of ``segbench`` for a :class:`SegbenchError`."""


class SegbenchError(Exception):
    """An error the user can cause and fix (see the module docstring)."""
