"""Download, resume, checksum, safe extraction and the no-partial-dataset rule, against a local server."""
from __future__ import annotations

import dataclasses
import errno
import io
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from benchmark.config import DataConfig
from benchmark.data.archive import ArchiveError, UnsafeArchiveError, extract
from benchmark.data import download as download_module
from benchmark.data.download import ChecksumError, DownloadError, download, file_digest, part_path
from benchmark.data.real import glas
from benchmark.data.filetype import ContentError, check_content, expected_kinds
from benchmark.data.interface import DatasetMissing
from benchmark.data.real.source import RealSource, RemoteFile
from benchmark.data.sources import fetch
from benchmark.data.store import DiskFullError
from tests.data.real.test_glas import make_glas_zip

NAME = glas.FILES[0].name


def _payload(tmp_path: Path, n: int = 300_000) -> Path:
    p = tmp_path / "payload.bin"
    p.write_bytes(bytes(range(256)) * (n // 256))
    return p


def test_download_resumes_after_a_cut_connection(tmp_path, http_server):
    src = _payload(tmp_path)
    (http_server.root / "f.bin").write_bytes(src.read_bytes())
    dest = tmp_path / "dl" / "f.bin"
    sha = file_digest(src, "sha256")
    http_server.cut_after["f.bin"] = 100_000
    with pytest.raises(DownloadError, match="interrupted after 100000 of 299776 bytes.*run the same command again"):
        download(http_server.file_url("f.bin"), dest, checksum="sha256:" + sha)
    assert not dest.exists() and part_path(dest).stat().st_size == 100_000
    assert download(http_server.file_url("f.bin"), dest, checksum="sha256:" + sha) == sha
    assert dest.read_bytes() == src.read_bytes() and not part_path(dest).exists()
    assert http_server.requests[-1] == ("f.bin", "bytes=100000-")      # only the rest was asked for


def test_download_restarts_when_the_server_ignores_ranges(tmp_path, http_server):
    src = _payload(tmp_path)
    (http_server.root / "f.bin").write_bytes(src.read_bytes())
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(b"x" * 5000)           # stale bytes that must not survive
    http_server.ranges_honoured = False
    download(http_server.file_url("f.bin"), dest, checksum="sha256:" + file_digest(src, "sha256"))
    assert dest.read_bytes() == src.read_bytes()


def test_checksum_mismatch_is_an_error_and_keeps_nothing(tmp_path, http_server):
    (http_server.root / "f.bin").write_bytes(b"not the release")
    dest = tmp_path / "f.bin"
    with pytest.raises(ChecksumError, match="sha256 is .* expected 00"):
        download(http_server.file_url("f.bin"), dest, checksum="sha256:" + "00" * 32)
    assert not dest.exists() and not part_path(dest).exists()


def test_a_part_file_longer_than_the_remote_file_is_discarded(tmp_path, http_server):
    (http_server.root / "f.bin").write_bytes(b"12345")
    dest = tmp_path / "f.bin"
    part_path(dest).write_bytes(b"1234567890")             # from an older, longer release
    with pytest.raises(DownloadError, match=r"does not match the file on the server \(5 bytes\); it was deleted"):
        download(http_server.file_url("f.bin"), dest)
    assert download(http_server.file_url("f.bin"), dest) == file_digest(http_server.root / "f.bin")
    part_path(dest).write_bytes(b"12345")                   # complete already: the server answers 416
    dest.unlink()
    download(http_server.file_url("f.bin"), dest)
    assert dest.read_bytes() == b"12345" and http_server.requests[-1] == ("f.bin", "bytes=5-")


def test_a_web_page_instead_of_the_file_is_an_error(tmp_path, http_server):
    (http_server.root / "page.html").write_text("<html>please log in</html>")
    http_server.content_type = "text/html"
    with pytest.raises(DownloadError, match="sent a web page, not data.zip"):
        download(http_server.file_url("page.html"), tmp_path / "data.zip")
    assert not (tmp_path / "data.zip").exists()


def test_unreachable_server_names_the_url(tmp_path):
    with pytest.raises(DownloadError, match=r"http://127\.0\.0\.1:9/x\.zip: cannot connect"):
        download("http://127.0.0.1:9/x.zip", tmp_path / "x.zip")


def _zip_with(member: str, tmp_path: Path) -> Path:
    p = tmp_path / "evil.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("ok.txt", "fine")
        z.writestr(member, "escaped")
    return p


@pytest.mark.parametrize("member", ["../escaped.txt", "/tmp/escaped.txt", "a/../../escaped.txt"])
def test_zip_members_escaping_the_target_are_refused(tmp_path, member):
    with pytest.raises(UnsafeArchiveError, match="outside the target folder"):
        extract(_zip_with(member, tmp_path), tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists() and not list((tmp_path / "out").rglob("*"))


def _tar_with_link(tmp_path: Path, target: str, kind=tarfile.SYMTYPE) -> Path:
    p = tmp_path / "evil.tar.gz"
    with tarfile.open(p, "w:gz") as t:
        info = tarfile.TarInfo("link")
        info.type, info.linkname = kind, target
        t.addfile(info)
    return p


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "a.txt"])
def test_tar_links_are_refused_wherever_they_point(tmp_path, target):
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        with pytest.raises(UnsafeArchiveError, match="member 'link' is a link"):
            extract(_tar_with_link(tmp_path, target, kind), tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*"))


def test_tar_device_files_are_refused(tmp_path):
    p = tmp_path / "dev.tar"
    with tarfile.open(p, "w") as t:
        info = tarfile.TarInfo("null")
        info.type = tarfile.CHRTYPE
        t.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="member 'null' is a special file"):
        extract(p, tmp_path / "out")


def test_safe_archives_extract_and_truncated_ones_are_named(tmp_path):
    p = tmp_path / "good.tar.gz"
    with tarfile.open(p, "w:gz") as t:
        data = b"hello" * 1000
        info = tarfile.TarInfo("d/a.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    assert extract(p, tmp_path / "out") == ["d/a.txt"]
    assert (tmp_path / "out" / "d" / "a.txt").read_bytes() == data
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ArchiveError, match=r"cut\.tar\.gz: unreadable or truncated archive"):
        extract(cut, tmp_path / "out2")


def _source(tmp_path, server, checksum: str | None = "right") -> RealSource:
    make_glas_zip(server.root / NAME)
    sha = "sha256:" + file_digest(server.root / NAME, "sha256") if checksum == "right" else checksum
    f = dataclasses.replace(glas.FILES[0], url=server.file_url(NAME), checksum=sha)
    return RealSource(glas, raw=tmp_path / "raw", downloads=tmp_path / "downloads", files=(f,))


def test_fetch_failures_leave_no_partial_dataset(tmp_path, http_server):
    cfg, dest = DataConfig(size=16), tmp_path / "fetched" / "glas"
    source = _source(tmp_path, http_server)
    http_server.cut_after[NAME] = 2000
    with pytest.raises(DownloadError, match="interrupted"):
        fetch("glas", dest, cfg, source=source)
    assert not dest.exists() and not list(dest.parent.iterdir())           # no dataset, no temp folder
    status = fetch("glas", dest, cfg, source=source)                       # resumes the download
    assert http_server.requests[-1] == (NAME, "bytes=2000-")
    assert status["available"] and status["provenance"]["files"][0]["checksum_recorded"]
    assert (dest / "LICENCE.txt").is_file() and list(dest.rglob("train_1.bmp"))

    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(ChecksumError):
        fetch("glas", bad / "glas", cfg,
              source=RealSource(glas, raw=bad / "raw", downloads=bad / "downloads",
                                files=(dataclasses.replace(glas.FILES[0], url=http_server.file_url(NAME),
                                                           checksum="md5:" + "0" * 32),)))
    assert not (bad / "glas").exists() and not list((bad / "downloads").glob("*"))


def test_an_unsafe_archive_leaves_no_partial_dataset_and_keeps_the_old_one(tmp_path, http_server):
    cfg, dest = DataConfig(size=16), tmp_path / "fetched" / "glas"
    fetch("glas", dest, cfg, source=_source(tmp_path, http_server))
    evil = _zip_with("../../escaped.txt", tmp_path)
    raw = tmp_path / "raw2"
    raw.mkdir()
    evil.rename(raw / NAME)                               # a hand-placed archive is checked as strictly
    source = RealSource(glas, raw=raw, downloads=tmp_path / "dl2", files=(glas.FILES[0],))
    with pytest.raises(UnsafeArchiveError):
        fetch("glas", dest, cfg, source=source)
    assert list(dest.rglob("train_1.bmp")) and not (tmp_path / "escaped.txt").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["glas"]


def test_a_gated_file_missing_stops_with_how_to_get_it(tmp_path):
    gated = RemoteFile("secret.zip", None, size_mb=2048)
    source = RealSource(glas, raw=tmp_path / "raw", downloads=tmp_path / "dl", files=(gated,))
    assert source.missing(probe=False) == [
        f"secret.zip: no automated download (registration or terms); place it in {tmp_path / 'raw'}/"]
    with pytest.raises(DatasetMissing, match=r"secret.zip: no automated download \(registration or terms\)"):
        fetch("glas", tmp_path / "fetched", DataConfig(), source=source)
    assert not (tmp_path / "fetched").exists()


def test_unreachable_downloads_count_as_missing(tmp_path, http_server):
    (http_server.root / "a.zip").write_bytes(b"x")
    here = RemoteFile("a.zip", http_server.file_url("a.zip"))
    nowhere = RemoteFile("b.zip", "http://127.0.0.1:9/b.zip")
    not_there = RemoteFile("c.zip", http_server.file_url("c.zip"))       # the host answers 404
    source = RealSource(glas, raw=tmp_path / "raw", downloads=tmp_path / "dl", files=(here, nowhere, not_there))
    assert source.missing() == [
        f"{f.name}: {f.url} cannot be reached from this machine; download it elsewhere and place it in "
        f"{tmp_path / 'raw'}/" for f in (nowhere, not_there)]


# ---------------------------------------------------------------- content, not names or headers (issue 19)
def _formats(tmp_path: Path) -> dict[str, bytes]:
    """One small real file of each format the suite reads, by a name of that format."""
    import bz2
    import gzip
    import lzma

    import numpy as np
    import SimpleITK as sitk
    from PIL import Image

    out: dict[str, bytes] = {}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "a")
    out["a.zip"] = buf.getvalue()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("a.txt")
        info.size = 1
        t.addfile(info, io.BytesIO(b"a"))
    out["a.tar"] = buf.getvalue()
    out["a.tar.gz"] = gzip.compress(out["a.tar"])
    out["a.tar.bz2"] = bz2.compress(out["a.tar"])
    out["a.tar.xz"] = lzma.compress(out["a.tar"])
    img = Image.fromarray(np.zeros((4, 4, 3), np.uint8))
    for name, fmt in (("a.png", "PNG"), ("a.jpg", "JPEG"), ("a.bmp", "BMP"), ("a.tif", "TIFF")):
        buf = io.BytesIO()
        img.save(buf, fmt)
        out[name] = buf.getvalue()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4), np.int16)), str(tmp_path / "a.nii"))
    out["a.nii"] = (tmp_path / "a.nii").read_bytes()
    out["a.nii.gz"] = gzip.compress(out["a.nii"])
    out["a.csv"] = b"image,rater\nISIC_1,a\n"
    return out


def test_every_format_is_told_by_its_content_and_a_wrong_name_is_refused(tmp_path):
    files = _formats(tmp_path)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        check_content(tmp_path / name)
        for other in ("a.zip", "a.png", "a.nii"):
            if expected_kinds(other) != expected_kinds(name):
                (tmp_path / other).write_bytes(data)
                with pytest.raises(ContentError, match=re.escape(f"{tmp_path / other}: its name says "
                                                                 f"{expected_kinds(other)[0]}, but its content is")):
                    check_content(tmp_path / other)
    (tmp_path / "x.zip").write_bytes(b"")
    with pytest.raises(ContentError, match="its name says zip, but its content is empty"):
        check_content(tmp_path / "x.zip")


PAGE = b"\xef\xbb\xbf\n  <!DOCTYPE html>\n<html><body>Please sign in to download</body></html>"


@pytest.mark.parametrize("name", ["data.zip", "IMAplusplus_seg_metadata.csv", "data_lidc.pickle", "no_suffix"])
def test_a_web_page_served_as_a_zip_is_refused_whatever_its_header(tmp_path, http_server, name):
    (http_server.root / name).write_bytes(PAGE)
    http_server.content_type = "application/zip"          # the header lies; no checksum is recorded
    dest = tmp_path / "dl" / name
    with pytest.raises(DownloadError, match=re.escape(f"{http_server.file_url(name)}: the server did not send "
                                                      f"{name} ({part_path(dest)}: is a web page (HTML)")):
        download(http_server.file_url(name), dest)
    assert not dest.exists() and not part_path(dest).exists()


def test_a_download_whose_content_is_not_its_name_is_refused(tmp_path, http_server):
    (http_server.root / "data.zip").write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(DownloadError, match="its name says zip, but its content is of no known format"):
        download(http_server.file_url("data.zip"), tmp_path / "data.zip")
    assert list(tmp_path.glob("data.zip*")) == []


def _placed(tmp_path: Path, data: bytes, checksum: str | None) -> tuple[RealSource, Path]:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / NAME).write_bytes(data)
    f = dataclasses.replace(glas.FILES[0], url=None, checksum=checksum)
    return RealSource(glas, raw=raw, downloads=tmp_path / "downloads", files=(f,)), raw / NAME


def test_a_hand_placed_file_with_a_wrong_checksum_is_refused_and_kept(tmp_path, capsys):
    make_glas_zip(tmp_path / "good.zip")
    data = (tmp_path / "good.zip").read_bytes()
    source, placed = _placed(tmp_path, data, "sha256:" + "00" * 32)
    with pytest.raises(ChecksumError) as err:
        fetch("glas", tmp_path / "fetched" / "glas", DataConfig(size=16), source=source)
    assert str(err.value).startswith(f"{placed} (from placed by hand): sha256 is ")
    assert "It was placed by hand and is kept: replace it with the release's" in str(err.value)
    assert placed.read_bytes() == data and list((tmp_path / "fetched").iterdir()) == []


def test_a_hand_placed_web_page_is_refused_and_kept(tmp_path):
    source, placed = _placed(tmp_path, PAGE, None)
    with pytest.raises(ContentError, match=re.escape(f"{placed}: is a web page (HTML), not {NAME}")):
        fetch("glas", tmp_path / "fetched" / "glas", DataConfig(size=16), source=source)
    assert placed.read_bytes() == PAGE and list((tmp_path / "fetched").iterdir()) == []


def test_an_earlier_download_gone_wrong_is_deleted_and_fetched_again(tmp_path, http_server):
    cfg, dest = DataConfig(size=16), tmp_path / "fetched" / "glas"
    source = _source(tmp_path, http_server)
    (tmp_path / "downloads").mkdir()
    cached = tmp_path / "downloads" / NAME
    cached.write_bytes(PAGE)
    with pytest.raises(ContentError, match=re.escape(f"{cached}: is a web page")) as err:
        fetch("glas", dest, cfg, source=source)
    assert "The download has been deleted: fetch again to download it anew" in str(err.value)
    assert not cached.exists() and list(dest.parent.iterdir()) == []
    assert fetch("glas", dest, cfg, source=source)["available"] and cached.is_file()


@pytest.mark.parametrize("by_hand", [True, False])
def test_a_truncated_archive_is_kept_when_placed_by_hand_and_deleted_when_downloaded(tmp_path, http_server, by_hand):
    make_glas_zip(tmp_path / "good.zip")
    cut = (tmp_path / "good.zip").read_bytes()[:3000]
    if by_hand:
        source, path = _placed(tmp_path, cut, None)
    else:
        (http_server.root / NAME).write_bytes(cut)
        f = dataclasses.replace(glas.FILES[0], url=http_server.file_url(NAME), checksum=None)
        source = RealSource(glas, raw=tmp_path / "raw", downloads=tmp_path / "downloads", files=(f,))
        path = tmp_path / "downloads" / NAME
    with pytest.raises(ArchiveError, match=re.escape(f"{path}: unreadable or truncated archive")) as err:
        fetch("glas", tmp_path / "fetched" / "glas", DataConfig(size=16), source=source)
    if by_hand:
        assert "It was placed by hand and is kept" in str(err.value) and path.read_bytes() == cut
    else:
        assert "The download has been deleted" in str(err.value) and not path.exists()
    assert list((tmp_path / "fetched").iterdir()) == []


def test_a_full_disk_while_downloading_is_named_as_such_not_as_a_cut(tmp_path, http_server, monkeypatch):
    (http_server.root / "f.bin").write_bytes(b"\x00" * 300_000)
    dest = tmp_path / "dl" / "f.bin"
    dest.parent.mkdir()

    class FullDisk:
        def __init__(self, *args):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, block):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download_module, "open", FullDisk, raising=False)
    with pytest.raises(DiskFullError) as err:
        download(http_server.file_url("f.bin"), dest)
    assert str(err.value).startswith(f"{part_path(dest)}: ") and "No space left on device" in str(err.value)
    assert "connection" not in str(err.value) and not dest.exists()
