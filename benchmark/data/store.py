"""One file per case: atomic writes, validated reads; and the one way to build a folder, then swap it in.

Every stage that writes a folder (fetch, preprocess, predict, training checkpoints, nnU-Net's model, Colin27's
files) builds it with :func:`staged_folder`, so a failed or interrupted run leaves the previous folder (or
nothing), never half of one.

A processed case is an ``.npz`` holding ``image`` float32 ``(Z, C, H, W)``,
``label`` uint8 ``(R, Z, H, W)`` and ``spacing`` float64 ``(3,)`` in (z, y, x) mm.
Every problem with a file raises :class:`CaseFileError` naming the file; a case read with the hash its
manifest records is checked against it before it is parsed. Every JSON file is written by :func:`json_text`:
no ``NaN`` or ``Infinity`` in any of them.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import shutil
import socket
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmark.data.case import Case
from benchmark.errors import SegbenchError


class CaseFileError(SegbenchError, ValueError):
    """A case file is missing, unreadable or inconsistent with its dataset."""

    def __init__(self, path: Path | str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem

    def __reduce__(self):  # rebuilt from both arguments when raised in a worker process
        return CaseFileError, (self.path, self.problem)


_UMASK = os.umask(0)
os.umask(_UMASK)

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _host() -> str:
    """This machine and PID namespace (two containers may share a host name, not their process ids), as a name
    without ``.`` or ``-``."""
    try:
        namespace = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:  # no /proc (macOS)
        namespace = ""
    return "_".join(filter(None, (socket.gethostname(), namespace))).replace(".", "_").replace("-", "_") or "host"


_HOST = _host()


class DiskFullError(SegbenchError):
    """The disk or the user's quota filled up while writing ``path``; what was there before is left as it was."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: could not be written: {reason}; the previous output, if any, is left as it was "
                         f"and no temporary file remains")
        self.path, self.reason = Path(path), reason

    def __reduce__(self):  # rebuilt from both arguments when raised in a worker process
        return DiskFullError, (self.path, self.reason)


def _owner() -> str:
    """This process, as written into its temporary names: ``HOST-PID`` (read per call: a forked worker differs)."""
    return f"{_HOST}-{os.getpid()}"


def _remove_stale(folder: Path) -> None:
    """Delete the temporary files and folders (``.NAME.HOST-PID.XXXXXXXX.tmp`` or ``.old``) in ``folder`` left by
    a process of this host that no longer runs (killed mid-write). Another host's, or a live process's, are kept.
    Inside a private temporary folder of this process nobody else writes, so nothing is looked for there (which
    keeps writing n files into a staged folder linear in n)."""
    mine = f".{_owner()}."
    if any(mine in d.name and d.name.endswith(".tmp") for d in (folder, *folder.parents)):
        return
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith((".tmp", ".old"))):
            continue
        parts = name[:-4].rsplit(".", 2)
        host, _, pid = parts[1].rpartition("-") if len(parts) == 3 else ("", "", "")
        if host != _HOST or not pid.isdigit() or _alive(int(pid)):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def disk_full_named(path: Path, tmp: Path | None = None) -> Iterator[None]:
    """Turn a full disk or quota (``OSError`` ENOSPC/EDQUOT) into a :class:`DiskFullError` naming ``path``, or,
    for a file inside the temporary folder ``tmp`` that will become ``path``, that file's final path."""
    try:
        yield
    except DiskFullError as e:
        if tmp is None or not e.path.is_relative_to(tmp):
            raise
        raise DiskFullError(path / e.path.relative_to(tmp), e.reason) from e.__cause__
    except OSError as e:
        if e.errno not in _DISK_FULL:
            raise
        named = path
        if tmp is not None and e.filename and Path(e.filename).is_relative_to(tmp):
            named = path / Path(e.filename).relative_to(tmp)
        raise DiskFullError(named, e.strerror or os.strerror(e.errno)) from e


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``, so readers never see half a file. ``tmp_path`` has
    ``path``'s own name, in a private hidden folder beside it (a writer that records the file's name, as
    ``torch.save`` does, writes the same bytes on every run). A full disk is a :class:`DiskFullError` naming
    ``path``; ``path`` is then as it was, and the temporary file is gone."""
    path = Path(path)
    with disk_full_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path.parent)
        folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.{_owner()}.", suffix=".tmp", dir=path.parent))
        try:
            write(folder / path.name)
            os.replace(folder / path.name, path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def staged_folder(dest: Path) -> Iterator[Path]:
    """Build a folder, then swap it in: ``with staged_folder(dest) as tmp:`` yields a new, empty folder of its own
    beside ``dest`` (a unique hidden name, so two builders of one ``dest`` never share or delete each other's);
    when the block succeeds the folder replaces ``dest`` (:func:`replace_folder`), when it raises the folder is
    deleted and ``dest`` is left as it was. Temporary folders left beside ``dest`` by a killed builder are deleted
    first. A full disk is a :class:`DiskFullError` naming the file, under ``dest``, that could not be written."""
    dest = Path(dest)
    with disk_full_named(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(dest.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{_owner()}.", suffix=".tmp", dir=dest.parent))
    try:
        with disk_full_named(dest, tmp):
            os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give the folder the mode mkdir() would have
            yield tmp
            replace_folder(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(new: Path, dest: Path) -> None:
    """Put the folder ``new`` at ``dest``: the old ``dest`` moves aside first and is deleted only after the
    rename, so ``dest`` is only ever the old folder or the new one (or, for an instant, absent). When another
    builder puts its folder at ``dest`` in between, that one is moved aside in turn: the last to finish wins."""
    new, dest = Path(new), Path(dest)
    while True:
        aside = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{_owner()}.", suffix=".old", dir=dest.parent))
        try:
            dest.rename(aside)  # replaces the empty folder ``aside``
            moved = True
        except FileNotFoundError:
            moved = False
        try:
            new.rename(dest)
        except BaseException as e:
            if getattr(e, "errno", None) in (errno.ENOTEMPTY, errno.EEXIST):  # another builder's folder came first
                shutil.rmtree(aside, ignore_errors=True)
                continue
            if moved and not dest.exists():
                aside.rename(dest)  # put the old folder back
            else:
                shutil.rmtree(aside, ignore_errors=True)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        return


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Atomically write arrays to an uncompressed ``.npz``."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, write)


def load_arrays(path: Path, keys: tuple[str, ...], sha256: str | None = None) -> dict[str, np.ndarray]:
    """Read ``keys`` from an ``.npz``, turning every failure into a :class:`CaseFileError`.

    ``sha256``: the hash the manifest recorded; then the bytes are read once, hashed, and parsed only when they
    match, so what is used is what was verified.
    """
    path = Path(path)
    if not path.is_file():
        raise CaseFileError(path, "file is missing")
    try:
        source = path
        if sha256 is not None:
            data = path.read_bytes()
            if (actual := hashlib.sha256(data).hexdigest()) != sha256:
                raise CaseFileError(path, f"content changed since the manifest was written: its sha256 is "
                                          f"{actual}, the manifest records {sha256} (run the preprocess stage again)")
            source = io.BytesIO(data)
        with np.load(source, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise CaseFileError(path, f"missing arrays {missing} (has {sorted(z.files)})")
            return {k: z[k] for k in keys}
    except CaseFileError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise CaseFileError(path, f"unreadable or truncated ({type(e).__name__}: {e})") from e


def read_json(path: Path, what: str):
    """Parse a JSON file, turning a missing, unreadable or malformed file into a :class:`CaseFileError`."""
    path = Path(path)
    if not path.is_file():
        raise CaseFileError(path, f"{what} is missing")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CaseFileError(path, f"{what} is not valid JSON ({e})") from e


def finite(value):
    """``value`` with every non-finite float (NaN, infinity) replaced by None, in nested dicts and lists:
    JSON has no NaN, so every JSON file of the suite writes "no value" as ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_text(obj, indent: int = 1, sort_keys: bool = False) -> str:
    """``obj`` as indented JSON: non-finite numbers as ``null`` (:func:`finite`), other values JSON cannot hold
    as strings; never ``NaN`` or ``Infinity``."""
    return json.dumps(finite(obj), indent=indent, default=str, allow_nan=False, sort_keys=sort_keys)


def write_json(path: Path, obj) -> None:
    """Atomically write ``obj`` as :func:`json_text`."""
    text = json_text(obj)
    atomic_write(path, lambda t: t.write_text(text))


def save_case(path: Path, case: Case) -> None:
    save_arrays(path, image=case.image.astype(np.float32), label=case.label.astype(np.uint8),
                spacing=np.asarray(case.spacing, dtype=np.float64))


def load_case(path: Path, case_id: str, subject_id: str, num_classes: int | None = None,
              channels: int | None = None, sha256: str | None = None) -> Case:
    """Read and validate one case file (``sha256``: the manifest's hash of it, verified before it is parsed).

    Raises:
        CaseFileError: missing/truncated file, content not the recorded hash, wrong ranks, image/label shape
            mismatch, non-finite intensities, labels outside ``[0, num_classes)``, wrong channel count.
    """
    a = load_arrays(path, ("image", "label", "spacing"), sha256)
    case = Case(case_id, subject_id, a["image"], a["label"], tuple(float(s) for s in a["spacing"]))
    validate_case(case, path, num_classes, channels)
    return case


def validate_case(case: Case, path: Path | str, num_classes: int | None = None,
                  channels: int | None = None) -> None:
    image, label = case.image, case.label
    if image.ndim != 4:
        raise CaseFileError(path, f"image must be (Z, C, H, W), got shape {image.shape}")
    if label.ndim != 4:
        raise CaseFileError(path, f"label must be (R, Z, H, W), got shape {label.shape}")
    z, c, h, w = image.shape
    if label.shape[1:] != (z, h, w):
        raise CaseFileError(path, f"image/label shape mismatch: image (Z,H,W)={(z, h, w)}, "
                                  f"label (Z,H,W)={label.shape[1:]}")
    if channels is not None and c != channels:
        raise CaseFileError(path, f"image has {c} channels, dataset declares {channels}")
    if not np.isfinite(image).all():
        raise CaseFileError(path, f"image has {int((~np.isfinite(image)).sum())} non-finite (NaN/inf) values")
    if num_classes is not None and label.size and int(label.max()) >= num_classes:
        bad = sorted(int(v) for v in np.unique(label) if v >= num_classes)
        raise CaseFileError(path, f"label values {bad} outside the declared classes 0..{num_classes - 1}")
    if len(case.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in case.spacing):
        raise CaseFileError(path, f"spacing must be 3 positive (z, y, x) values, got {case.spacing}")
