"""One run of a stage per output at a time, for the stages whose output is more than one swapped-in folder.

fetch, preprocess and predict build their folder privately and swap it in
(:func:`benchmark.data.store.staged_folder`): two runs at once both finish and the last complete one wins.
train (its checkpoints are read and pruned while it runs), evaluate, nfe-sweep and tables write several files
that belong together, so a second run of one of them on the same output stops at once with a
:class:`StageBusyError` naming the run that holds it (``with exclusive(folder, "train"):``). fetch resumes a
real dataset's downloads from their ``.part`` files, which two runs must not append to at once: a second fetch
of a dataset waits for the first, then finds its downloads complete (``exclusive(..., wait=True)``).

The lock is an exclusive ``flock`` on ``FOLDER/.STAGE.lock``, released by the kernel when its holder dies, so a
killed run never blocks the next one; the holder deletes the file when it ends.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from benchmark.errors import SegbenchError


class StageBusyError(SegbenchError):
    """Another run of the same stage is writing the same output."""


@contextlib.contextmanager
def exclusive(folder: Path, stage: str, wait: bool = False) -> Iterator[None]:
    """Hold the lock of ``stage`` on ``folder`` (created if needed) for the block. When another process holds it:
    :class:`StageBusyError` naming the holder's host and pid, or with ``wait``, a line saying so on stderr and a
    wait until it ends. Folders made for the lock and left empty by the block are removed after it."""
    folder = Path(folder)
    made = [d for d in (folder, *folder.parents) if not d.exists()]  # innermost first
    path = folder / f".{stage}.lock"
    while True:
        folder.mkdir(parents=True, exist_ok=True)  # again after a wait: the holder may have removed it
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "a process that has just started"
            if not wait:
                os.close(fd)
                raise StageBusyError(f"{folder}: another `segbench {stage}` ({holder}) is writing it; wait for it "
                                     f"to end (or stop it), then run again") from None
            print(f"{folder}: waiting for another `segbench {stage}` ({holder}) to end", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # the holder deleted this file as it ended: lock the one there now
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    try:
        yield
    finally:
        os.unlink(path)  # while still holding it: a process waiting on this file sees it gone and retries
        os.close(fd)
        with contextlib.suppress(OSError):  # stops at the first one the stage wrote into
            for d in made:
                d.rmdir()
