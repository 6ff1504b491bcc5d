"""Reading a downloaded pickle without letting it run code.

A pickle is a program: unpickling may import any module and call any function it names
(``os.system``, ``builtins.eval``, ...). Some dataset releases ship only as pickles (the
Probabilistic U-Net LIDC crops, ``data_lidc.pickle``), so :func:`load_plain_pickle` reads them
with an unpickler whose only importable globals are the handful numpy needs to rebuild arrays,
dtypes and scalars. Plain containers and literals (dict, list, tuple, set, str, bytes, int,
float, bool, None) need no import and load as usual. Anything else the file asks for is
refused before it is imported or called, with one error naming the file and the global.

Never call the plain ``pickle.load`` on a file that came from elsewhere; use this.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from benchmark.errors import SegbenchError

try:                                    # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:                     # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

# (module, name) -> the object it stands for. A pickle written by numpy 1 names ``numpy.core.*``,
# one written by numpy 2 ``numpy._core.*``; both resolve to the objects of the numpy installed here,
# taken from the imports above, so nothing the file names is ever imported.
_ALLOWED: dict[tuple[str, str], object] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_mod, "_reconstruct")] = _multiarray._reconstruct   # ndarray, protocols 0-4
    _ALLOWED[(_mod, "scalar")] = _multiarray.scalar               # numpy scalars (np.float32(1.0))
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_mod, "_frombuffer")] = _numeric._frombuffer        # ndarray, protocol 5
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What protocols 0-2 write for a ``bytes`` object (an array's raw data): ``_codecs.encode(text, "latin1")``.

    Admitted only with that encoding, so no other codec can be reached through it.
    """
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode is admitted only as encode(str, 'latin1'), got "
                                     f"encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


_ALLOWED[("_codecs", "encode")] = _latin1_bytes


class PickleFileError(SegbenchError, ValueError):
    """A pickle file could not be read (truncated, corrupt, not a pickle)."""


class UnsafePickleError(PickleFileError):
    """A pickle file asks for a global outside the numpy-array allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str):
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise UnsafePickleError(
                f"{self._path}: refused to load global {module}.{name}; this reader admits only plain "
                f"containers and numpy arrays/dtypes/scalars, so the file is not the plain data it should be "
                f"(or it is a malicious pickle). Nothing from it was imported or run.")
        return obj

    def persistent_load(self, pid):
        raise UnsafePickleError(f"{self._path}: refused persistent id {pid!r}; only plain data is admitted")


def load_plain_pickle(path: str | Path):
    """Read ``path``, a pickle of plain containers and numpy arrays, without running code from it.

    Raises:
        UnsafePickleError: the file names a global outside the allow-list (e.g. ``os.system``,
            ``builtins.eval``, ``collections.OrderedDict``, any class); nothing it names is imported.
        PickleFileError: the file is truncated, corrupt or not a pickle.
        FileNotFoundError: there is no such file.
    """
    path = Path(path)
    with open(path, "rb", buffering=1 << 20) as f:
        try:
            return _RestrictedUnpickler(f, path).load()
        except UnsafePickleError:
            raise
        except EOFError as e:
            raise PickleFileError(f"{path}: the pickle ends early (truncated file?): {e or 'no data'}") from e
        except pickle.UnpicklingError as e:
            if "truncated" in str(e):
                raise PickleFileError(f"{path}: the pickle ends early (truncated file?): {e}") from e
            raise PickleFileError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e
        except (ValueError, TypeError, AttributeError, IndexError, KeyError,
                UnicodeDecodeError, OverflowError, MemoryError) as e:
            raise PickleFileError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e
