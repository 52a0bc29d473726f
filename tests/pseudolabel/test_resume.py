"""A pass killed with SIGKILL mid-way, then rerun: every shard is written exactly once; and a
frame that fails in an actor fails the pass with the DataError naming it.

The killed pass runs in a subprocess connected to this test's Ray (so killing its driver kills
nothing else): once its first shard is in place it says so through a file and waits; it is then
killed while its actors still hold the other shards' frames. A half-written shard of the kind a
kill leaves behind is added by hand. The rerun must keep the finished shard as it is (same inode
and mtime), write only the others, and clean up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from depthkd.data.shards import MANIFEST, read_tar, shard_paths, verify_shards
from depthkd.errors import DataError
from depthkd.pseudolabel import label_shards
from depthkd.pseudolabel.format import PROGRESS_FILE
from tests.local_cluster import REPO_ROOT
from tests.pseudolabel.conftest import SPLIT, save_teacher, write_rgb_shards

pytestmark = [pytest.mark.ray, pytest.mark.multiproc]

KILLED_PASS = """
import sys, time
from pathlib import Path
import ray
from depthkd.pseudolabel import label_shards

teacher, source, out, marker, address = sys.argv[1:6]

def wait_to_be_killed(name, written):
    Path(marker).write_text(name)
    time.sleep(600)

ray.init(address=address, log_to_driver=False)
label_shards(teacher, source, "unlabeled", Path(out), batch_size=2, progress=False,
             on_shard=wait_to_be_killed)
"""


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        if proc.poll() is not None:
            raise AssertionError(f"the pass ended first:\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.2)
    raise AssertionError("the pass wrote no shard in time")


def test_a_killed_pass_resumes_writing_each_shard_once(embedded_ray, tmp_path: Path) -> None:
    source = write_rgb_shards(tmp_path / "source", shards=4, per_shard=2, sizes=[(16, 24)])
    teacher = save_teacher(tmp_path / "teacher.pt")
    out, marker = tmp_path / "out", tmp_path / "first-shard"
    address = ray.get_runtime_context().gcs_address
    args = [str(teacher), str(source), str(out), str(marker), address]
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_PASS, *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "RAY_USAGE_STATS_ENABLED": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = _wait_for(marker, proc)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stderr.close()

    assert not (out / MANIFEST).exists()
    recorded = json.loads((out / PROGRESS_FILE).read_text())["shards"]
    assert list(recorded) == [first]
    kept = os.stat(out / first)
    (out / f".{SPLIT}-000003.tar.0badc0de.tmp").write_bytes(b"half a tar")  # a kill's leftover

    again: list[str] = []
    report = label_shards(
        teacher,
        source,
        SPLIT,
        out,
        batch_size=2,
        progress=False,
        on_shard=lambda name, written: again.append(name),
    )

    names = [p.name for p in shard_paths(source, SPLIT)]
    assert sorted([first, *again]) == sorted(names)  # each shard written exactly once
    assert (report.shards_written, report.shards_skipped, report.frames) == (3, 1, 6)
    now = os.stat(out / first)
    assert (now.st_ino, now.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert not list(out.glob(".*.tmp")) and not (out / PROGRESS_FILE).exists()
    assert verify_shards(out, progress=False).ok


def test_an_unreadable_frame_fails_the_pass_naming_it(embedded_ray, tmp_path: Path) -> None:
    source = write_rgb_shards(tmp_path / "source", shards=2, per_shard=2, sizes=[(16, 24)])
    shard = shard_paths(source, SPLIT)[1]
    key = sorted(read_tar(shard))[0]
    data = shard.read_bytes()
    start = data.index(b"\x89PNG")
    shard.write_bytes(data[:start] + b"\x00" * 8 + data[start + 8 :])  # first frame of shard 1
    with pytest.raises(DataError, match=rf"{SPLIT}-000001\.tar:{key}\.rgb: unreadable"):
        label_shards(
            save_teacher(tmp_path / "teacher.pt"), source, SPLIT, tmp_path / "out", size=(16, 24)
        )
    assert not (tmp_path / "out" / MANIFEST).exists()
