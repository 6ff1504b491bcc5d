"""Resumable, checksum-verified HTTP downloads.

A download writes ``NAME.part`` beside its destination and renames it to ``NAME``
only once every byte has arrived, the checksum matched and the content is what the
name says (:mod:`benchmark.data.filetype`: a web page is refused whatever the
``Content-Type`` header claimed), so ``NAME`` is always whole. A cut connection
leaves ``NAME.part``; the next call asks the server for the remaining bytes (an
HTTP ``Range`` request) and carries on. A checksum or content mismatch deletes the
part file and raises: the bytes are wrong, so resuming them would only reproduce it.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from benchmark.data.filetype import ContentError, check_content
from benchmark.data.store import disk_full_named
from benchmark.errors import SegbenchError

USER_AGENT = "segbench (MedFlowSeg benchmark suite)"


class DownloadError(SegbenchError, RuntimeError):
    """A download failed; the message names the URL, the file and what to do."""


class ChecksumError(DownloadError):
    """The bytes arrived but their SHA-256 is not the recorded one."""


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def download(url: str, dest: Path, *, checksum: str | None = None, timeout: float = 60.0,
             chunk: int = 1 << 20, progress: Callable[[int, int | None], None] | None = None) -> str:
    """Download ``url`` into ``dest`` (resuming ``dest.part``), verify, rename; return the SHA-256.

    ``checksum``: ``"sha256:HEX"`` or ``"md5:HEX"``, or None when none is recorded. An existing ``dest`` is
    verified (checksum and content) and kept, right or wrong. ``progress(done, total)`` is called after every chunk.

    Raises:
        DownloadError: the server could not be reached, refused, or closed the connection early (the part file
            is kept; calling again resumes it); or sent a web page (by its header or its content) or a file
            whose content is not what ``dest``'s name says (the part file is deleted).
        ChecksumError: the whole file arrived with another checksum (the part file is deleted).
        ContentError: an existing ``dest`` is not what its name says.
    """
    dest = Path(dest)
    if dest.is_file():
        check_content(dest)
        return verify(dest, checksum, url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:     # nothing left to send, if the part file holds exactly the whole file
            total = _total_of(e.headers.get("Content-Range", ""))
            if total == offset:
                return _finish(part, dest, checksum, url)
            part.unlink(missing_ok=True)
            raise DownloadError(f"{url}: {part} ({offset} bytes) does not match the file on the server "
                                f"({total if total is not None else 'unknown'} bytes); it was deleted, "
                                f"run again to download from the start") from e
        raise DownloadError(f"{url}: the server answered HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: cannot connect ({reason})") from e
    with response:
        if response.headers.get_content_type() == "text/html" and not dest.name.lower().endswith((".html", ".htm")):
            raise DownloadError(f"{url}: the server sent a web page, not {dest.name} (a login, consent or "
                                f"confirmation page?); download it in a browser and place it by hand")
        if offset and (response.status != 206 or _start_of(response.headers.get("Content-Range", "")) != offset):
            offset = 0                   # the server ignores (or misanswers) the range: start again from byte 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        done = offset
        try:
            with disk_full_named(part), open(part, "ab" if offset else "wb") as f:   # a full disk is no cut
                while block := response.read(chunk):
                    f.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
        except (http.client.IncompleteRead, socket.timeout, ConnectionError, OSError) as e:
            raise _cut(url, part, total, e) from e
    if total is not None and part.stat().st_size != total:
        raise _cut(url, part, total, "the connection closed early")
    return _finish(part, dest, checksum, url)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (any :mod:`hashlib` algorithm), read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, checksum: str | None, origin: str) -> str:
    """SHA-256 of ``path``; :class:`ChecksumError` if it does not match ``checksum`` (``"algo:HEX"``, when given).
    The message says what is wrong, not what to do: that depends on whose file it is (the caller adds it)."""
    sha = file_digest(path, "sha256")
    if checksum:
        algo, _, want = checksum.partition(":")
        got = sha if algo == "sha256" else file_digest(path, algo)
        if got != want.lower():
            raise ChecksumError(f"{path} (from {origin}): {algo} is {got}, expected {want}; the file is "
                                f"corrupt or not the release this suite was written for")
    return sha


def _finish(part: Path, dest: Path, checksum: str | None, url: str) -> str:
    """Check the whole ``part`` (content, then checksum) and rename it to ``dest``; delete it if either fails."""
    try:
        check_content(part, dest.name)
        digest = verify(part, checksum, url)
    except ChecksumError as e:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{e}; the download was deleted") from e
    except ContentError as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: the server did not send {dest.name} ({e}); the download was deleted. If the "
                            f"address needs a login or a confirmation, download it in a browser and place it by "
                            f"hand") from e
    os.replace(part, dest)
    return digest


def _start_of(content_range: str) -> int | None:
    """First byte of ``"bytes START-END/TOTAL"``."""
    m = re.match(r"bytes (\d+)-\d+/", content_range.strip())
    return int(m[1]) if m else None


def _total_of(content_range: str) -> int | None:
    """TOTAL of ``"bytes */TOTAL"`` or ``"bytes START-END/TOTAL"``."""
    m = re.search(r"/(\d+)$", content_range.strip())
    return int(m[1]) if m else None


def _cut(url: str, part: Path, total: int | None, why) -> DownloadError:
    have = part.stat().st_size if part.is_file() else 0
    of = f" of {total}" if total is not None else ""
    return DownloadError(f"{url}: download interrupted after {have}{of} bytes ({why}); {part} is kept, "
                         f"run the same command again to resume")


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether ``url`` looks downloadable: the host answers, and not with "no such file" (404/410).

    Any other answer counts (e.g. 403 or 405 to a HEAD request a GET would pass); no body is read.
    """
    try:
        req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
        urllib.request.urlopen(req, timeout=timeout).close()
    except urllib.error.HTTPError as e:
        return e.code not in (404, 410)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True
