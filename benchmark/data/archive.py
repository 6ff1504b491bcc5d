"""Safe extraction of downloaded zip and tar archives.

Every member is checked before anything is written: absolute paths, ``..``
components, links of any kind and device files are refused with one error naming
the archive and the member. No release the suite reads ships links, and refusing
them all closes the tricks that chain links past a path check. Callers extract into a temporary
folder and rename it into place, so a refused archive leaves nothing behind.
"""
from __future__ import annotations

import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from benchmark.errors import SegbenchError

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


class UnsafeArchiveError(SegbenchError, ValueError):
    """An archive member would land outside the target folder, or is not a plain file or folder."""


class ArchiveError(SegbenchError, ValueError):
    """An archive is unreadable or of an unknown kind."""


def is_archive(path: Path) -> bool:
    return Path(path).name.lower().endswith(ARCHIVE_SUFFIXES)


def extract(archive: Path, dest: Path) -> list[str]:
    """Extract ``archive`` (``.zip`` or a tar, any compression, told by its name) into ``dest``; return the
    member names.

    Raises:
        UnsafeArchiveError: a member escapes ``dest``, or is a link or a special file.
        ArchiveError: the file is not a readable archive of the kind its name says, or cannot be written out.
    """
    archive, dest = Path(archive), Path(dest)
    if not is_archive(archive):
        raise ArchiveError(f"{archive}: not a .zip or .tar[.gz|.bz2|.xz] file name")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            return _extract_zip(archive, dest)
        return _extract_tar(archive, dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        if isinstance(e, getattr(tarfile, "FilterError", ())):
            raise UnsafeArchiveError(f"{archive}: refused ({e})") from e
        raise ArchiveError(f"{archive}: unreadable or truncated archive ({type(e).__name__}: {e})") from e


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
            if not (m.isfile() or m.isdir()):
                kind = "link" if (m.issym() or m.islnk()) else "special file"
                raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a {kind}")
        # the "data" filter as a second line (Python >= 3.11.4 / 3.10.12): no setuid bits, no absolute paths
        t.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        return [m.name for m in members]
