"""Process environment changes that are undone: the one place depthkd sets variables for a while
(the AWS endpoint of a dev cluster, an embedded Ray's address for its own processes, the URI of
a sweep's tracking server)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def patched_environ(changes: Mapping[str, str]) -> Iterator[None]:
    """Sets `changes` in `os.environ` for the block; afterwards each variable is as before
    (restored, or removed if it was unset). Child processes started inside inherit them."""
    before = {key: os.environ.get(key) for key in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
