"""What a file is, told by its first bytes (magic numbers), not by its name or a server's Content-Type.

A download or a hand-placed file is refused when its content is a web page (a login, consent or error page
saved under the release's name), or when its name says one format and its bytes are another, before anything
is extracted or converted. Formats with no magic number (CSV, text) are only checked for being text and not a
web page; a name with no known suffix (a pickle among them: protocols 0 and 1 have no magic number), only for
not being a web page.
"""
from __future__ import annotations

from pathlib import Path

from benchmark.errors import SegbenchError

HEAD = 1024  # bytes read: enough for tar's magic at 257 and NIfTI-1's at 344

# kind -> (offset, magic) alternatives
MAGIC: dict[str, tuple[tuple[int, bytes], ...]] = {
    "zip": ((0, b"PK\x03\x04"), (0, b"PK\x05\x06"), (0, b"PK\x07\x08")),
    "gzip": ((0, b"\x1f\x8b"),),
    "bzip2": ((0, b"BZh"),),
    "xz": ((0, b"\xfd7zXZ\x00"),),
    "7z": ((0, b"7z\xbc\xaf\x27\x1c"),),
    "tar": ((257, b"ustar"),),
    "PNG": ((0, b"\x89PNG\r\n\x1a\n"),),
    "JPEG": ((0, b"\xff\xd8\xff"),),
    "BMP": ((0, b"BM"),),
    "TIFF": ((0, b"II*\x00"), (0, b"MM\x00*"), (0, b"II+\x00"), (0, b"MM\x00+")),
    "NIfTI": ((344, b"n+1\x00"), (344, b"ni1\x00"), (4, b"n+2\x00")),
    "pickle": ((0, b"\x80"),),  # protocol 2 and later; older pickles have no magic number
}

# name ending -> the kinds its content may be (the longest matching ending wins)
BY_NAME: dict[str, tuple[str, ...]] = {
    ".zip": ("zip",), ".tar": ("tar",), ".tar.gz": ("gzip",), ".tgz": ("gzip",), ".gz": ("gzip",),
    ".tar.bz2": ("bzip2",), ".tar.xz": ("xz",), ".7z": ("7z",),
    ".png": ("PNG",), ".jpg": ("JPEG",), ".jpeg": ("JPEG",), ".bmp": ("BMP",), ".tif": ("TIFF",),
    ".tiff": ("TIFF",), ".nii": ("NIfTI",), ".nii.gz": ("gzip",),
    ".csv": ("text",), ".txt": ("text",), ".mhd": ("text",), ".xml": ("text",),
}


class ContentError(SegbenchError, ValueError):
    """A file's bytes are not what its name says (a web page saved as an archive, an image that is not one)."""


def is_web_page(head: bytes) -> bool:
    h = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return h.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or (h.startswith(b"<") and b"<html" in h)


def kind_of(head: bytes) -> str | None:
    """The format of a file starting with ``head``: "empty", "web page", one of :data:`MAGIC`, or "text" (no NUL
    byte, after every binary format); None if unknown."""
    if not head:
        return "empty"
    if is_web_page(head):
        return "web page"
    for kind, marks in MAGIC.items():
        if any(head[at:at + len(mark)] == mark for at, mark in marks):
            return kind
    return "text" if b"\x00" not in head else None


def expected_kinds(name: str) -> tuple[str, ...] | None:
    """The kinds a file of this name may hold; None for a name with no known ending."""
    lower = name.lower()
    endings = [e for e in BY_NAME if lower.endswith(e)]
    return BY_NAME[max(endings, key=len)] if endings else None


def check_content(path: Path, name: str | None = None) -> str | None:
    """Refuse ``path`` if its content is a web page, or not of a kind its name (``name``, else its own) allows.

    Returns:
        The kind found (None: not recognised, for a name that declares no kind).
    Raises:
        ContentError: naming the file, what its name says and what its bytes are.
    """
    path = Path(path)
    name = name or path.name
    with open(path, "rb") as f:
        head = f.read(HEAD)
    found = kind_of(head)
    wanted = expected_kinds(name)
    if found == "web page" and not name.lower().endswith((".html", ".htm")):
        raise ContentError(f"{path}: is a web page (HTML), not {name} (a login, consent or error page saved in "
                           f"its place?)")
    if wanted is not None and found not in wanted:
        raise ContentError(f"{path}: its name says {'/'.join(wanted)}, but its content is "
                           f"{'of no known format' if found is None else found}")
    return found
