"""Safe extraction of downloaded zip and tar archives.

Every member is checked before anything is written: absolute paths, ``..``
components, links pointing outside the target, and device files are refused with
one error naming the archive and the member. Callers extract into a temporary
folder and rename it into place, so a refused archive leaves nothing behind.
"""
from __future__ import annotations

import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the target folder, or is not a plain file or folder."""


class ArchiveError(ValueError):
    """An archive is unreadable or of an unknown kind."""


def is_archive(path: Path) -> bool:
    return Path(path).name.lower().endswith(ARCHIVE_SUFFIXES)


def extract(archive: Path, dest: Path) -> list[str]:
    """Extract ``archive`` (zip or tar, any compression) into ``dest``; return the member names.

    Raises:
        UnsafeArchiveError: a member escapes ``dest`` or is a link out of it or a special file.
        ArchiveError: the file is not a readable zip or tar archive.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            return _extract_zip(archive, dest)
        if tarfile.is_tarfile(archive):
            return _extract_tar(archive, dest)
    except (zipfile.BadZipFile, tarfile.ReadError, EOFError) as e:
        raise ArchiveError(f"{archive}: unreadable archive ({type(e).__name__}: {e})") from e
    raise ArchiveError(f"{archive}: neither a zip nor a tar archive")


def _check_name(archive: Path, name: str) -> None:
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise UnsafeArchiveError(f"{archive}: member {name!r} would be written outside the target folder")


def _extract_zip(archive: Path, dest: Path) -> list[str]:
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        for info in infos:
            _check_name(archive, info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link")
        z.extractall(dest)
        return [i.filename for i in infos]


def _extract_tar(archive: Path, dest: Path) -> list[str]:
    with tarfile.open(archive) as t:
        members = t.getmembers()
        for m in members:
            _check_name(archive, m.name)
            try:
                tarfile.data_filter(m, str(dest))   # links out of dest, special files, unsafe modes
            except tarfile.FilterError as e:
                raise UnsafeArchiveError(f"{archive}: member {m.name!r} refused ({e})") from e
        t.extractall(dest, filter="data")
        return [m.name for m in members]
