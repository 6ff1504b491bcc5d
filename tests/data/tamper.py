"""Hostile edits to a processed dataset, for the tests that check the suite notices them."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from benchmark.data.manifest import MANIFEST
from benchmark.data.store import save_arrays


def copy_processed(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def rewrite_label(processed: Path, split: str = "test") -> Path:
    """Give the first ``split`` case a different, valid label (every rater's foreground cleared); its file
    stays well-formed, only its hash changes. Returns the case file."""
    entry = next(c for c in json.loads((processed / MANIFEST).read_text())["cases"] if c["split"] == split)
    path = processed / entry["file"]
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    assert arrays["label"].any(), "the edit must change the label"
    arrays["label"] = np.zeros_like(arrays["label"])
    save_arrays(path, **arrays)
    return path


def empty_split(processed: Path, split: str = "test", into: str = "val") -> Path:
    """Move every case of ``split`` into ``into`` in the manifest; returns the manifest."""
    path = processed / MANIFEST
    d = json.loads(path.read_text())
    for c in d["cases"]:
        if c["split"] == split:
            c["split"] = into
    path.write_text(json.dumps(d, indent=1))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def hidden(folder: Path) -> list[str]:
    """Temporary files and folders (``.NAME.*.tmp``, ``.NAME.*.old``) left beside or under ``folder``."""
    return sorted(p.name for p in Path(folder).rglob(".*"))
