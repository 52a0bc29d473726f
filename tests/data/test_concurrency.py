"""Two real processes preparing the same data at once: both succeed and share one result.

Each child imports everything first, then waits at a file barrier, so the two reach the work
within milliseconds of each other (imports alone take seconds and vary). Without the locks the
second `data prepare` deleted the first one's temporary shard folder (a raw FileNotFoundError in
the shard writer) and two bundled-data jobs rendered into the same files.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from depthkd.data.shards import read_manifest, verify_shards
from depthkd.data.sources.synthetic import SynthSummary, write_synthetic

pytestmark = pytest.mark.multiproc

REPO = Path(__file__).resolve().parents[2]
WAITED = "waiting for another process preparing"
# argv: ready-file go-file ...; the child announces it is ready, then spins until `go` exists.
BARRIER = """
import sys, time
from pathlib import Path
Path(sys.argv[1]).touch()
while not Path(sys.argv[2]).exists():
    time.sleep(0.002)
args = sys.argv[3:]
"""
ENSURE = """
from depthkd.config.schema import DataConfig
from depthkd.data.bundled import ensure_shards
{barrier}
cfg = DataConfig.model_validate(
    {{"synthetic": {{"layout": "nyu", "n": 24, "height": 32, "width": 48}}}}
)
print(ensure_shards(cfg, Path(args[0]), progress=False))
"""
PREPARE = """
from depthkd.cli.main import main
{barrier}
sys.exit(main(args))
"""


def run_together(code: str, argvs: list[list[str]], tmp: Path) -> list[subprocess.CompletedProcess]:
    """Starts one child per argv, releases them at once and returns their results."""
    go = tmp / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp / f"ready-{i}"), str(go), *argv],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, argv in enumerate(argvs)
    ]
    try:
        deadline = time.monotonic() + 60
        while not all((tmp / f"ready-{i}").exists() for i in range(len(argvs))):
            assert all(c.poll() is None for c in children), "a child died before the barrier"
            assert time.monotonic() < deadline, "children not ready after 60 s"
            time.sleep(0.01)
        go.touch()
        results = []
        for child in children:
            out, err = child.communicate(timeout=120)
            results.append(subprocess.CompletedProcess(child.args, child.returncode, out, err))
        return results
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def test_two_jobs_share_one_bundled_dataset(tmp_path: Path) -> None:
    home = tmp_path / "home"
    results = run_together(ENSURE.format(barrier=BARRIER), [[str(home)], [str(home)]], tmp_path)
    for r in results:
        assert r.returncode == 0, r.stderr
    dirs = {r.stdout.strip() for r in results}
    assert len(dirs) == 1
    (shards,) = (Path(d) for d in dirs)
    assert [p for p in (home / "data").iterdir() if p.is_dir()] == [shards.parent]
    assert sum(WAITED in r.stderr for r in results) == 1  # the second waited, then reused
    assert verify_shards(shards, progress=False).ok
    splits = read_manifest(shards)["splits"]
    assert {name: e["num_samples"] for name, e in splits.items()} == {
        "train": 17,
        "val": 2,
        "test": 5,
    }


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    out = tmp_path_factory.mktemp("raw")
    return write_synthetic("nyu", out, 80, 0, height=32, width=48, progress=False)


def prepare_argv(synth: SynthSummary, split: str, out: Path) -> list[str]:
    split_file = {"train": synth.train_split, "val": synth.val_split}[split]
    return (
        f"data prepare --dataset nyu --root {synth.root} --split-file {split_file} "
        f"--split {split} --out {out} --shard-size 8 --workers 1 --quiet"
    ).split()


@pytest.mark.parametrize(
    "splits",
    [
        # same split: the second deleted the first's temporary folder as a crashed run's leftover
        ("train", "train"),
        # two splits: each rewrote the manifest from the copy it read, losing the other's entry
        ("train", "val"),
    ],
)
def test_two_prepares_into_one_dir(
    synth: SynthSummary, tmp_path: Path, splits: tuple[str, str]
) -> None:
    out = tmp_path / "shards"
    argvs = [prepare_argv(synth, split, out) for split in splits]
    results = run_together(PREPARE.format(barrier=BARRIER), argvs, tmp_path)
    for r in results:
        assert r.returncode == 0, r.stderr
    assert sum(WAITED in r.stderr for r in results) == 1
    if splits[0] == splits[1]:
        assert sum("is up to date" in r.stdout for r in results) == 1
    report = verify_shards(out, progress=False)
    assert report.ok, report.problems
    expected = {"train": synth.n_train, "val": synth.n_val}
    assert report.checked == {split: expected[split] for split in splits}
    assert not list(out.glob(".tmp-*"))
