"""Atomic file writes: write to a temporary sibling, fsync, then rename over the target.

An interrupted job therefore never leaves a file that looks complete but is not.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically replaces `path` with `data`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    """Atomically replaces `path` with UTF-8 `text`."""
    write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    """Atomically replaces `path` with `obj` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")
