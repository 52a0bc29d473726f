"""Pseudo-label benchmark: the Ray Data pass (`label_shards`) vs a plain single-process loop.

Both label the same source shards with the same teacher file, batch size, frame size and torch
threads, and both do the whole job: read the shard tars, decode, resize, predict, quantise, encode
the PNGs (the same `label_batch`) and write the output tars (the same `write_shard`). They take
turns for `rounds` rounds (order reversed every other round) on one Ray of `threads` CPUs,
started before the first round and not timed.

Two rates per side:

* **end to end**: frames / wall time of the pass. For Ray that includes the actor's start-up
  (a fresh process importing torch and timm, then loading the model) and the driver writing the
  tars; for the loop the model load (its imports happened before the clock).
* **steady**: frames after the first finished shard / time after it, which leaves start-up out
  on both sides (what a pass over a large set sees).

Same conditions: the loop runs as one Ray task holding all `threads` CPUs, i.e. in a worker
process like the pass's actor (same niceness, same environment). Its clock starts inside the
task, after the worker imported torch; the actor's imports are inside the pass's end-to-end
clock (they are part of its cost), not inside the steady rate. Both run with
`OMP_WAIT_POLICY=PASSIVE` unless the environment sets it: with OpenMP's default active waiting,
2 torch threads on 2 busy cores measured 3 frames/s in a process's main thread (where the loop
runs) and 60 frames/s in a second thread (where Ray Data calls the actor, and where GNU OpenMP
throttles its spinning because the process then has more OpenMP threads than cores); passive
waiting gave 55-68 frames/s in both.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from depthkd.config.schema import PrepareConfig, TeacherConfig
from depthkd.console import Log
from depthkd.data.shards import prepare_shards
from depthkd.data.sources import build_source
from depthkd.data.sources.synthetic import write_synthetic
from depthkd.models.serialization import save_model
from depthkd.models.zoo import build_teacher
from depthkd.pseudolabel import label_shards
from depthkd.pseudolabel.format import depth_scale_for
from depthkd.pseudolabel.labeler import label_batch
from depthkd.pseudolabel.reader import shard_rows
from depthkd.pseudolabel.source import open_source
from depthkd.pseudolabel.teacher import load_teacher, resolve_teacher
from depthkd.pseudolabel.writer import write_shard

SPLIT = "train"


@dataclass
class PseudoLabelBenchResult:
    frames: int
    shards: int
    size: list[int]
    source_size: list[int]
    batch_size: int
    threads: int
    actors: int
    rounds: int
    teacher: str
    plain_frames_per_s: float  # end to end, median over rounds
    ray_frames_per_s: float
    ratio: float  # ray / plain, end to end
    plain_steady_frames_per_s: float  # after the first finished shard, median over rounds
    ray_steady_frames_per_s: float
    steady_ratio: float
    ray_startup_seconds: float  # median time to the Ray pass's first labelled frame
    niceness: int  # of the Ray workers and of the loop's process
    omp_wait_policy: str
    plain_rounds: list[float] = field(default_factory=list)
    ray_rounds: list[float] = field(default_factory=list)
    nodes: dict[str, int] = field(default_factory=dict)
    ray: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_source(
    work: Path, *, frames: int, per_shard: int, height: int, width: int, seed: int = 0
) -> Path:
    """Synthetic NYU-like frames of `height`x`width` as shards of `per_shard` frames (cached)."""
    raw, shards = work / f"raw-{frames}-{height}x{width}", work / f"shards-{frames}-{per_shard}"
    if not (raw / "splits" / "test.txt").is_file():
        write_synthetic(
            "nyu",
            raw,
            frames,
            seed,
            test_fraction=0.0,
            val_fraction=0.0,
            height=height,
            width=width,
            workers=1,
            progress=False,
        )
    cfg = PrepareConfig(
        dataset="nyu",
        root=raw / "sync",
        split_file=raw / "splits" / "train.txt",
        split=SPLIT,
        out=shards,
        shard_size=per_shard,
        workers=1,
    )
    prepare_shards(cfg, build_source(cfg), progress=False)
    return shards


def plain_pass(
    teacher: Path,
    source: Path,
    out: Path,
    *,
    size: tuple[int, int],
    batch_size: int,
    threads: int,
) -> dict[str, float]:
    """The baseline: one process, shard after shard, batch after batch.

    Returns:
        frames, seconds, and first_shard_seconds / first_shard_frames (where steady state starts).
    """
    start = time.perf_counter()
    torch.set_num_threads(threads)
    model = load_teacher(teacher.read_bytes())
    scale = depth_scale_for(model.max_depth)
    frames, first = 0, {}
    for shard in open_source(source, SPLIT).shards:
        rows = list(shard_rows({"url": shard.url, "name": shard.name}))
        labelled: list[dict[str, Any]] = []
        for begin in range(0, len(rows), batch_size):
            chunk = rows[begin : begin + batch_size]
            batch = {k: np.array([r[k] for r in chunk], dtype=object) for k in chunk[0]}
            out_rows = label_batch(model, batch, size=size, depth_scale=scale)
            labelled += [
                {k: column[i] for k, column in out_rows.items()} for i in range(len(chunk))
            ]
        write_shard(out, shard.name, labelled)
        frames += len(labelled)
        first = first or {
            "first_shard_seconds": time.perf_counter() - start,
            "first_shard_frames": frames,
        }
    return {"frames": frames, "seconds": time.perf_counter() - start, **first}


def run_pseudo_label_benchmark(
    work: Path,
    *,
    frames: int = 384,
    per_shard: int = 32,
    size: tuple[int, int] = (96, 128),
    source_size: tuple[int, int] = (120, 160),
    batch_size: int = 8,
    threads: int = 2,
    rounds: int = 3,
    teacher: str | None = None,
    log: Log = print,
) -> PseudoLabelBenchResult:
    """Builds the source (cached) and a swin_micro teacher file (unless `teacher`), then times
    both passes alternately on an embedded Ray of `threads` CPUs (or the connected Ray)."""
    work.mkdir(parents=True, exist_ok=True)
    source = bench_source(
        work, frames=frames, per_shard=per_shard, height=source_size[0], width=source_size[1]
    )
    if teacher is None:
        torch.manual_seed(0)
        model = build_teacher(TeacherConfig(name="swin_micro"), max_depth=10.0)
        teacher = str(save_model(model, work / "teacher-swin_micro.pt", meta={"input_size": size}))
    with tempfile.TemporaryDirectory(prefix="depthkd-bench-pl-") as scratch:
        teacher_path = resolve_teacher(teacher, Path(scratch)).path
        started = not ray.is_initialized()
        if started:  # Ray's processes copy this environment
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False)
        try:
            result = _alternate(
                teacher_path,
                source,
                work,
                size=size,
                batch_size=batch_size,
                threads=threads,
                rounds=rounds,
                log=log,
            )
        finally:
            if started:
                ray.shutdown()
    result.teacher, result.source_size = teacher, list(source_size)
    return result


def _alternate(
    teacher: Path,
    source: Path,
    work: Path,
    *,
    size: tuple[int, int],
    batch_size: int,
    threads: int,
    rounds: int,
    log: Log,
) -> PseudoLabelBenchResult:
    rates: dict[str, list[float]] = {"plain": [], "ray": []}
    steady: dict[str, list[float]] = {"plain": [], "ray": []}
    startups: list[float] = []
    niceness = ray.get(ray.remote(num_cpus=0)(_niceness).remote())  # of Ray's workers
    report = None
    for r in range(rounds):
        for side in ("plain", "ray") if r % 2 == 0 else ("ray", "plain"):
            out = work / f"out-{side}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            if side == "plain":
                task = ray.remote(num_cpus=threads)(plain_pass)
                timing = ray.get(
                    task.remote(
                        teacher, source, out, size=size, batch_size=batch_size, threads=threads
                    )
                )
            else:
                report, timing = _ray_pass(teacher, source, out, size=size, batch_size=batch_size)
                startups.append(report.startup_seconds)
            rates[side].append(timing["frames"] / timing["seconds"])
            rest = timing["seconds"] - timing["first_shard_seconds"]
            steady[side].append((timing["frames"] - timing["first_shard_frames"]) / rest)
            log(
                f"round {r + 1} {side:5s}: {rates[side][-1]:6.1f} frames/s end to end, "
                f"{steady[side][-1]:6.1f} after the first shard"
            )
    assert report is not None
    plain, ray_rate = statistics.median(rates["plain"]), statistics.median(rates["ray"])
    plain_steady, ray_steady = statistics.median(steady["plain"]), statistics.median(steady["ray"])
    return PseudoLabelBenchResult(
        frames=report.frames,
        shards=len(open_source(source, SPLIT).shards),
        size=list(size),
        source_size=[],
        batch_size=batch_size,
        threads=threads,
        actors=report.actors,
        rounds=rounds,
        teacher="",
        plain_frames_per_s=plain,
        ray_frames_per_s=ray_rate,
        ratio=ray_rate / plain,
        plain_steady_frames_per_s=plain_steady,
        ray_steady_frames_per_s=ray_steady,
        steady_ratio=ray_steady / plain_steady,
        ray_startup_seconds=statistics.median(startups),
        niceness=niceness,
        omp_wait_policy=ray.get(ray.remote(num_cpus=0)(_omp_wait_policy).remote()),
        plain_rounds=rates["plain"],
        ray_rounds=rates["ray"],
        nodes=report.nodes,
        ray=f"{int(ray.cluster_resources().get('CPU', 0))} CPUs on "
        f"{sum(1 for n in ray.nodes() if n.get('Alive'))} node(s)",
    )


def _ray_pass(
    teacher: Path, source: Path, out: Path, *, size: tuple[int, int], batch_size: int
) -> tuple[Any, dict[str, float]]:
    """`label_shards` timed like `plain_pass` (first finished shard through its hook)."""
    first: dict[str, float] = {}
    start = time.perf_counter()

    def on_shard(name: str, written: int) -> None:
        if not first:
            first["first_shard_seconds"] = time.perf_counter() - start
            first["first_shard_frames"] = sum(
                s.samples for s in open_source(source, SPLIT).shards if s.name == name
            )

    report = label_shards(
        teacher,
        source,
        SPLIT,
        out,
        size=size,
        batch_size=batch_size,
        progress=False,
        stream=_Null(),
        on_shard=on_shard,
    )
    # the pass's own clock (`report.seconds`) starts with the dataset, after Ray and the checks
    offset = time.perf_counter() - start - report.seconds
    first["first_shard_seconds"] -= offset
    return report, {"frames": report.frames, "seconds": report.seconds, **first}


def _niceness() -> int:
    return os.nice(0)


def _omp_wait_policy() -> str:
    return os.environ.get("OMP_WAIT_POLICY", "unset")


class _Null:
    """A text stream that drops everything (the pass's event lines during timing)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
