"""The slice store on disk and the batches read from it: the same draws as the slices in memory, built once, rebuilt
for another manifest, reading ahead in worker processes without changing a batch or a generator."""
from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data.case import Case, DatasetInfo
from benchmark.data.manifest import CaseEntry, Manifest, ManifestError, file_sha256
from benchmark.data.preprocess import load_split
from benchmark.data.store import CaseFileError, save_case
from benchmark.records import Status
from benchmark.training.data import SliceSet, batch_at, batches, step_generator
from benchmark.training.slices import KEY, store_folder

INFO = DatasetInfo(name="streamed-unit", modality="CT", channels=2, class_names=("background", "a", "b"),
                   n_annotators=3)


def write_processed(folder: Path, info: DatasetInfo, cases: Iterable[Case], split=lambda case: "train",
                    provenance: dict | None = None) -> None:
    """A processed dataset in ``folder``: each case written as it comes (``cases`` may be a generator), then the
    manifest, with each case in the split ``split(case)``."""
    entries = []
    for case in cases:
        rel = f"cases/{case.case_id}.npz"
        save_case(folder / rel, case)
        entries.append(CaseEntry(case.case_id, case.subject_id, split(case), rel, info.modality, info.channels,
                                 list(case.spacing), list(info.class_names), info.n_annotators,
                                 case.image.shape[0], file_sha256(folder / rel)))
    Manifest(info, Status.OK, provenance=provenance or {}, cases=entries).save(folder)


def _cases(seed: int = 0, raters: int = 3, size: int = 16) -> list[Case]:
    """Four cases of 2-4 slices with distinct random images and labels."""
    rng = np.random.default_rng(seed)
    return [Case(f"c{i}", f"s{i}", rng.normal(size=(z, 2, size, size)).astype(np.float32),
                 rng.integers(0, 3, (raters, z, size, size), dtype=np.uint8))
            for i, z in enumerate((3, 2, 4, 3))]


@pytest.fixture
def processed(tmp_path) -> Path:
    write_processed(tmp_path / "processed", INFO, _cases())
    return tmp_path / "processed"


def _same(a, b) -> None:
    """Two lists of (images, labels, generator) are identical, the generators in the same state."""
    assert len(a) == len(b)
    for (ia, la, ga), (ib, lb, gb) in zip(a, b):
        assert ia.dtype == ib.dtype == torch.float32 and la.dtype == lb.dtype == torch.int64
        assert torch.equal(ia, ib) and torch.equal(la, lb)
        assert torch.equal(ga.get_state(), gb.get_state())


def test_the_store_holds_the_split_and_draws_what_memory_draws(processed):
    memory = SliceSet.from_cases(load_split(processed, "train")[1])
    mapped = SliceSet.from_store(processed)
    assert isinstance(mapped.images, np.memmap) and isinstance(mapped.labels, np.memmap)
    assert mapped.images.shape == (12, 2, 16, 16) and mapped.labels.shape == (12, 3, 16, 16)
    assert np.array_equal(mapped.images, memory.images) and np.array_equal(mapped.labels, memory.labels)
    images, labels = torch.from_numpy(memory.images), torch.from_numpy(memory.labels)
    for step in range(4):
        for shard in range(3):
            # 20 draws of 12 slices: rows repeat, and come back in drawn order
            got = batch_at(mapped, 20, 7, step, shard)
            _same([got], [batch_at(memory, 20, 7, step, shard)])
            # what the in-memory tensors indexed directly give (the draws as the trainer made them before the store)
            ref = step_generator(7, step, shard)
            idx = torch.randint(12, (20,), generator=ref)
            rater = torch.randint(3, (20,), generator=ref)
            assert torch.equal(got[0], images[idx]) and torch.equal(got[1], labels[idx, rater].long())
            assert len(set(idx.tolist())) < 20


def test_the_store_of_a_real_preprocessed_phantom_gives_the_same_batches(tiny_processed, tmp_path):
    memory = SliceSet.from_cases(load_split(tiny_processed, "train")[1])
    mapped = SliceSet.from_store(tiny_processed, folder=tmp_path / "slices" / "train")
    assert len(mapped) == len(memory)
    for step in range(3):
        _same([batch_at(mapped, 4, 0, step, 0)], [batch_at(memory, 4, 0, step, 0)])


def test_a_second_opener_reuses_the_store_and_another_manifest_rebuilds_it(processed):
    SliceSet.from_store(processed)
    folder = store_folder(processed, "train")
    assert folder == processed.parent / "processed.slices" / "train"
    inode = (folder / "images.npy").stat().st_ino
    SliceSet.from_store(processed)
    assert (folder / "images.npy").stat().st_ino == inode
    old = SliceSet.from_store(processed)
    before = batch_at(old, 6, 1, 0, 0)

    cases = _cases(seed=1)   # the dataset preprocessed again, with other contents
    write_processed(processed, INFO, cases, provenance={"again": True})
    new = SliceSet.from_store(processed)
    assert (folder / "images.npy").stat().st_ino != inode
    assert json.loads((folder / KEY).read_text())["manifest_sha256"] == file_sha256(processed / "manifest.json")
    assert np.array_equal(new.images, np.concatenate([c.image for c in cases]))
    _same([batch_at(old, 6, 1, 0, 0)], [before])   # a run that had opened the old store reads the old slices
    assert not torch.equal(batch_at(new, 6, 1, 0, 0)[0], before[0])
    assert sorted(p.name for p in folder.parent.iterdir()) == ["train"]   # no temporary folder, no lock left


def test_an_unreadable_store_is_rebuilt(processed):
    SliceSet.from_store(processed)
    folder = store_folder(processed, "train")
    with open(folder / "images.npy", "r+b") as f:
        f.truncate(1000)
    mapped = SliceSet.from_store(processed)
    assert np.array_equal(mapped.images, SliceSet.from_cases(load_split(processed, "train")[1]).images)


def test_a_case_with_other_raters_is_named(tmp_path):
    cases = _cases()
    cases[2] = Case("c2", "s2", cases[2].image, cases[2].label[:2])
    write_processed(tmp_path / "processed", INFO, cases)
    with pytest.raises(CaseFileError, match=r"c2\.npz: 2 raters, the dataset declares 3"):
        SliceSet.from_store(tmp_path / "processed")
    assert not store_folder(tmp_path / "processed", "train").exists()
    with pytest.raises(ValueError, match="different numbers of raters"):
        SliceSet.from_cases(cases)


def test_no_manifest_or_an_empty_split_is_named(tmp_path):
    with pytest.raises(ManifestError, match="manifest is missing"):
        SliceSet.from_store(tmp_path / "nothing")
    write_processed(tmp_path / "processed", INFO, _cases(), split=lambda case: "test")
    with pytest.raises(ManifestError, match="the train split has no cases"):
        SliceSet.from_store(tmp_path / "processed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["processed"]


def _open_and_stat(processed: Path, queue) -> None:
    data = SliceSet.from_store(processed)
    queue.put((os.stat(data.images.filename).st_ino, float(data.images.sum())))


def test_concurrent_builders_build_once(processed):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_open_and_stat, args=(processed, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    folder = store_folder(processed, "train")
    assert got[0] == got[1] and got[0][0] == (folder / "images.npy").stat().st_ino
    assert sorted(p.name for p in folder.parent.iterdir()) == ["train"]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("form", ["memory", "store"])
def test_batches_are_batch_at_with_the_generator_in_its_state(processed, workers, form):
    data = SliceSet.from_store(processed) if form == "store" else \
        SliceSet.from_cases(load_split(processed, "train")[1])
    steps, shards = range(3, 8), [0, 2, 3]
    read = list(batches(data, 5, 11, steps, shards, workers=workers))
    assert len(read) == len(steps)
    for step, got in zip(steps, read):
        want = [batch_at(data, 5, 11, step, s) for s in shards]
        _same(got, want)
        # the method's noise: the next draws of each generator are the same
        assert all(torch.equal(torch.randn(4, generator=g), torch.randn(4, generator=w[2]))
                   for (*_, g), w in zip(got, want))


def test_a_mapped_set_pickles_as_its_files(processed):
    mapped = SliceSet.from_store(processed)
    blob = pickle.dumps(mapped)
    assert len(blob) < 2000 < mapped.images.nbytes
    again = pickle.loads(blob)
    assert isinstance(again.images, np.memmap)
    _same([batch_at(again, 5, 0, 0, 0)], [batch_at(mapped, 5, 0, 0, 0)])


def _resident_kb(path: Path) -> int:
    """This process's resident memory in the mappings of ``path`` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_reading_a_batch_leaves_no_page_of_the_store_resident(tmp_path):
    write_processed(tmp_path / "processed", INFO, _cases(size=64))  # 32 KiB a slice
    mapped = SliceSet.from_store(tmp_path / "processed")
    path = Path(mapped.images.filename)
    np.asarray(mapped.images[::2]).sum()   # read without releasing: the pages count as resident
    assert _resident_kb(path) > 100
    batch_at(mapped, 8, 0, 0, 0)
    assert _resident_kb(path) == 0
