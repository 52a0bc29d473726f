"""An exclusive inter-process lock on a file, for work that two jobs may start at once (bundled
data, `data prepare` into one folder, two runs of one job id).

Two pipelines launched together on a fresh `$DEPTHKD_HOME` both find the bundled data missing and
both start generating it; two `depthkd data prepare` runs into one shard dir clear each other's
temporary folders and overwrite each other's manifest entry. Holding this lock around such work
makes the second process wait, then find the first one's result complete and reuse it.

The lock is `fcntl.flock`, which belongs to the open file: the kernel releases it when the holder
exits or is killed, so a crashed job never leaves a stale lock behind. The lock file itself stays
on disk and is never deleted: deleting it would let a third process lock a fresh file while a
second one still waits on the old, and both would run at once. On NFS, Linux maps flock onto POSIX
byte-range locks, which NFSv4 servers honour across clients.
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from depthkd.console import Log
from depthkd.errors import DepthKDError


@contextmanager
def exclusive_lock(
    path: Path, *, message: str | None = None, announce: Log | None = None
) -> Iterator[None]:
    """Holds an exclusive lock on `path` (created if missing) for the duration of the block.

    Args:
        path: the lock file; its parent folder is created if missing.
        message: printed as one line on stderr when another process holds the lock, so a user
            whose job seems stuck sees what it waits for; nothing is printed without contention.
        announce: prints `message` instead (a job's console); default: a line on stderr.

    Raises:
        DepthKDError: the lock file cannot be created or the filesystem does not support locks.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DepthKDError(f"cannot create lock file {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if message and announce:
                announce(message)
            elif message:
                print(message, file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise DepthKDError(
                f"cannot lock {path}: {exc.strerror}",
                hint="the filesystem does not support file locks; put the data on a local disk",
            ) from None
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock
