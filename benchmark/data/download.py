"""Resumable, checksum-verified HTTP downloads.

A download writes ``NAME.part`` beside its destination and renames it to ``NAME``
only once every byte has arrived and the checksum matched, so ``NAME`` is always
whole. A cut connection leaves ``NAME.part``; the next call asks the server for
the remaining bytes (an HTTP ``Range`` request) and carries on. A checksum
mismatch deletes the part file and raises: the bytes are wrong, so resuming them
would only reproduce the mismatch.
"""
from __future__ import annotations

import http.client
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from benchmark.data.manifest import file_sha256

USER_AGENT = "segbench (MedFlowSeg benchmark suite)"


class DownloadError(RuntimeError):
    """A download failed; the message names the URL, the file and what to do."""


class ChecksumError(DownloadError):
    """The bytes arrived but their SHA-256 is not the recorded one."""


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def download(url: str, dest: Path, *, sha256: str | None = None, timeout: float = 60.0,
             chunk: int = 1 << 20, progress: Callable[[int, int | None], None] | None = None) -> str:
    """Download ``url`` into ``dest`` (resuming ``dest.part``), verify, rename; return the SHA-256.

    An existing ``dest`` is verified and kept. ``progress(done, total)`` is called after every chunk.

    Raises:
        DownloadError: the server could not be reached, refused, or closed the connection early
            (the part file is kept; calling again resumes it).
        ChecksumError: the whole file arrived with another SHA-256 than ``sha256``
            (the part file is deleted).
    """
    dest = Path(dest)
    if dest.is_file():
        return verify(dest, sha256, url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:     # nothing left to send: the part file already holds every byte
            return _finish(part, dest, sha256, url)
        raise DownloadError(f"{url}: the server answered HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: cannot connect ({reason})") from e
    with response:
        if offset and response.status != 206:   # the server ignores ranges: start again from byte 0
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        done = offset
        try:
            with open(part, "ab" if offset else "wb") as f:
                while block := response.read(chunk):
                    f.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
        except (http.client.IncompleteRead, socket.timeout, ConnectionError, OSError) as e:
            raise _cut(url, part, total, e) from e
    if total is not None and part.stat().st_size != total:
        raise _cut(url, part, total, "the connection closed early")
    return _finish(part, dest, sha256, url)


def verify(path: Path, sha256: str | None, origin: str) -> str:
    """SHA-256 of ``path``; :class:`ChecksumError` if it is not ``sha256`` (when given)."""
    digest = file_sha256(path)
    if sha256 is not None and digest != sha256.lower():
        raise ChecksumError(f"{path} (from {origin}): SHA-256 is {digest}, expected {sha256}. "
                            f"The file is corrupt or not the release this suite was written for.")
    return digest


def _finish(part: Path, dest: Path, sha256: str | None, url: str) -> str:
    try:
        digest = verify(part, sha256, url)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return digest


def _cut(url: str, part: Path, total: int | None, why) -> DownloadError:
    have = part.stat().st_size if part.is_file() else 0
    of = f" of {total}" if total is not None else ""
    return DownloadError(f"{url}: download interrupted after {have}{of} bytes ({why}); {part} is kept, "
                         f"run the same command again to resume")


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether the host of ``url`` answers HTTP at all (any status counts; no body is read)."""
    try:
        req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
        urllib.request.urlopen(req, timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True
