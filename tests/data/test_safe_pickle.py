"""The restricted unpickler: plain data and numpy arrays load; code, classes and broken files are refused."""
from __future__ import annotations

import builtins
import collections
import os
import pickle
from dataclasses import dataclass

import numpy as np
import pytest

from benchmark.data.safe_pickle import PickleFileError, UnsafePickleError, load_plain_pickle


def _write(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_dict_of_arrays_lists_and_str_round_trips(tmp_path, protocol):
    rng = np.random.default_rng(0)
    data = {"LIDC-IDRI-0001_slice3": {"image": rng.random((8, 6)).astype(np.float32),
                                      "masks": [rng.integers(0, 2, (8, 6), dtype=np.uint8) for _ in range(4)],
                                      "series_uid": "1.3.6.1.4.1.14519"},
            "f64": rng.random((2, 3, 4)), "fortran": np.asfortranarray(rng.random((3, 5))),
            "bool": np.array([True, False]), "scalar": np.float32(2.5), "int64": np.int64(-7),
            "nested": [1, 2.0, (3, "four"), {"five": None}], "bytes": b"\x00\xff", "flag": True}
    out = load_plain_pickle(_write(tmp_path / "d.pickle", data, protocol))
    assert out.keys() == data.keys()
    entry = out["LIDC-IDRI-0001_slice3"]
    assert entry["image"].dtype == np.float32 and np.array_equal(entry["image"], data["LIDC-IDRI-0001_slice3"]["image"])
    assert all(np.array_equal(a, b) for a, b in zip(entry["masks"], data["LIDC-IDRI-0001_slice3"]["masks"]))
    assert entry["series_uid"] == "1.3.6.1.4.1.14519"
    assert np.array_equal(out["f64"], data["f64"]) and out["fortran"].flags.f_contiguous
    assert out["bool"].dtype == bool and out["scalar"] == np.float32(2.5) and type(out["scalar"]) is np.float32
    assert out["int64"] == -7 and out["nested"] == data["nested"] and out["bytes"] == b"\x00\xff"


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Evals:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return builtins.eval, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.mark.parametrize("evil, refused", [(_RunsShell, r"(posix|os|nt)\.system"), (_Evals, r"builtins\.eval")])
def test_code_in_a_pickle_is_refused_and_never_runs(tmp_path, evil, refused):
    marker = tmp_path / "marker"
    path = _write(tmp_path / "evil.pickle", {"image": np.zeros(3), "payload": [evil(marker)]})
    with pytest.raises(UnsafePickleError, match=rf"evil\.pickle: refused to load global {refused}"):
        load_plain_pickle(path)
    assert not marker.exists()
    # the plain unpickler would have run it: the fixture is a real attack, not a dud
    pickle.loads(path.read_bytes())
    assert marker.exists()


@dataclass
class Crop:
    image: np.ndarray


def test_an_object_of_any_class_is_refused(tmp_path):
    path = _write(tmp_path / "obj.pickle", {"a": Crop(np.zeros(2))})
    with pytest.raises(UnsafePickleError, match=rf"obj\.pickle: refused to load global {__name__}\.Crop"):
        load_plain_pickle(path)


def test_other_standard_library_globals_are_refused(tmp_path):
    path = _write(tmp_path / "od.pickle", collections.OrderedDict(a=1))
    with pytest.raises(UnsafePickleError, match=r"collections\.OrderedDict"):
        load_plain_pickle(path)


def test_codecs_encode_is_admitted_only_for_latin1(tmp_path):
    # what protocol 2 writes for bytes, with a different codec swapped in
    raw = pickle.dumps(b"abc", protocol=2).replace(b"X\x06\x00\x00\x00latin1", b"X\x06\x00\x00\x00base64")
    assert b"base64" in raw
    (tmp_path / "codec.pickle").write_bytes(raw)
    with pytest.raises(PickleFileError, match=r"codec\.pickle: .*latin1"):
        load_plain_pickle(tmp_path / "codec.pickle")


def test_truncated_or_foreign_file_gives_a_clear_error(tmp_path):
    whole = pickle.dumps({"image": np.arange(1000.0), "masks": [np.zeros((4, 4))] * 4})
    cut = tmp_path / "cut.pickle"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PickleFileError, match=r"cut\.pickle: the pickle ends early"):
        load_plain_pickle(cut)
    empty = tmp_path / "empty.pickle"
    empty.write_bytes(b"")
    with pytest.raises(PickleFileError, match=r"empty\.pickle: the pickle ends early"):
        load_plain_pickle(empty)
    html = tmp_path / "quota.pickle"       # what a Google Drive download gives when it refuses
    html.write_bytes(b"<!DOCTYPE html><html><body>Quota exceeded</body></html>")
    with pytest.raises(PickleFileError, match=r"quota\.pickle: not a readable pickle"):
        load_plain_pickle(html)
