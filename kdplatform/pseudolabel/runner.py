"""`label_shards`: a frozen teacher labels the RGB shards of one split on Ray Data.

Driver side, in this order: check the arguments → resolve the teacher to one model file and
fingerprint it → open the source split → settle the size → compare with what the output
directory holds (continue, no-op, or refuse) → record the identity → run the Ray Data pass over
the shards not yet done → write each output shard as soon as it is complete → manifest last.

The pass: `from_items(pending shards)` → `flat_map(ShardReader)` (reader actors holding no CPU:
they only stream tar members) → `map_batches(Labeler, batch_size=B)` on an
`ActorPoolStrategy(size=n)`, one model load per actor, each actor holding the CPUs its torch
threads use (or one GPU) → the driver iterates the labelled rows and writes tars. An
already-initialised Ray (a job's) is used as it is; otherwise one is started as jobs start it
(`ensure_ray`) and shut down afterwards.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import ray
from tqdm import tqdm

from depthkd import __version__, atomic
from depthkd.console import Log
from depthkd.data import shards
from depthkd.data.shards import MANIFEST, manifest_fingerprint, read_manifest
from depthkd.errors import ConfigError, DataError, DepthKDError
from depthkd.locking import exclusive_lock
from depthkd.pseudolabel import progress as state
from depthkd.pseudolabel.format import (
    FORMAT_VERSION,
    LOCK_FILE,
    PROGRESS_FILE,
    RECORD_KEY,
    depth_scale_for,
    digest,
)
from depthkd.pseudolabel.labeler import Labeler
from depthkd.pseudolabel.reader import ShardReader
from depthkd.pseudolabel.source import SourceSplit, frame_size, open_source
from depthkd.pseudolabel.teacher import TeacherFile, resolve_teacher
from depthkd.pseudolabel.writer import ShardAssembler, write_shard
from depthkd.raycluster import ensure_ray
from depthkd.storage import Location

ShardHook = Callable[[str, int], None]  # (shard name, shards written so far in this run)
ACTOR_START_TIMEOUT_S = 600  # for every labelling actor to load its model


@dataclass
class PseudoLabelReport:
    """What `label_shards` did.

    Attributes:
        out: the output shard dir.
        split: its split (the source split's name).
        frames: frames labelled by this run (0 when everything was done before).
        total_frames: frames in the output set.
        shards_written: shards written by this run.
        shards_skipped: shards an earlier run had finished.
        seconds: wall time of the labelling pass (Ray start-up excluded; actor start-up, model
            loads and shard writing included); 0 when nothing was labelled.
        frames_per_s: frames / seconds.
        startup_seconds: the part of `seconds` before the first labelled frame arrived (actor
            start-up and the first batch).
        fingerprint: `manifest_fingerprint` of the output (what MLflow logs as its digest).
        size: (height, width) of the labelled frames.
        teacher: the teacher's fingerprint; source: the source's.
        up_to_date: the output was complete already: nothing was done.
        nodes: frames labelled per Ray node id.
        actors, threads, batch_size: how the pass ran.
    """

    out: Path
    split: str
    frames: int
    total_frames: int
    shards_written: int
    shards_skipped: int
    seconds: float
    frames_per_s: float
    fingerprint: str
    size: tuple[int, int]
    teacher: dict[str, Any]
    source: dict[str, Any]
    up_to_date: bool = False
    startup_seconds: float = 0.0
    nodes: dict[str, int] = field(default_factory=dict)
    actors: int = 0
    threads: int = 0
    batch_size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "out": str(self.out), "size": list(self.size)}


@dataclass(frozen=True)
class _Plan:
    """How the actor pool is sized: actors, torch threads and Ray resources per actor."""

    actors: int
    threads: int
    num_cpus: float
    num_gpus: float


def label_shards(
    teacher: Path | str,
    source: Location,
    split: str,
    out: Path,
    *,
    size: tuple[int, int] | None = None,
    batch_size: int = 8,
    concurrency: int | None = None,
    force: bool = False,
    progress: bool = True,
    stream: TextIO | None = None,
    log: Log | None = None,
    on_shard: ShardHook | None = None,
) -> PseudoLabelReport:
    """Labels split `split` of the shard set `source` with `teacher` into the shard dir `out`.

    Resumable: rerunning after an interruption writes only the shards not yet finished; a
    complete output with the same teacher, source and size is a no-op.

    Args:
        teacher: model file (local or `s3://`), `name@alias`, `models:/...` or run id.
        source: shard dir or `s3://` prefix holding the RGB frames.
        split: the split to label; also the output's split name.
        out: local output folder (created if missing).
        size: (height, width) frames are resized to; default the teacher file's `input_size`,
            else the frames' own size when they all share it.
        batch_size: frames per teacher forward pass.
        concurrency: labelling actors; default one per GPU, else one per Ray node.
        force: delete an earlier pass in `out` that differs from this one, and start over.
        progress: a progress bar of frames.
        stream: where the bar (default stderr) and the event lines (default stdout) go.
        log: takes the event lines instead (a job's console).
        on_shard: called after each shard is in place (name, shards written so far).

    Raises:
        ConfigError: a bad size, batch size or concurrency.
        DataError: a bad source, an output holding another pass (without `force`) or other data.
        CheckpointError, RegistryError: the teacher cannot be loaded.
    """
    _check_arguments(size, batch_size, concurrency)
    out = Path(out).expanduser().resolve()

    def say(text: str) -> None:
        if log is not None:
            log(text)
        else:
            tqdm.write(text, file=stream or sys.stdout)  # above the bar

    source_split = open_source(source, split)
    if not isinstance(source_split.location, str) and source_split.location == out:
        raise DataError(f"--out {out} is the source shard set itself", hint="choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    with (
        exclusive_lock(out / LOCK_FILE, message=f"waiting for another pseudo-label pass on {out}"),
        tempfile.TemporaryDirectory(prefix="depthkd-pseudo-") as scratch,
    ):
        model = resolve_teacher(teacher, Path(scratch))
        target, resize = _settle_size(size, model, source_split)
        record = {
            "teacher": model.fingerprint,
            "source": source_split.fingerprint,
            "size": list(target),
            "depth_scale": depth_scale_for(model.max_depth),
            "has_confidence": None,  # known once the teacher has labelled a frame
            "format_version": FORMAT_VERSION,
            "tool_version": __version__,
        }
        found = _found_state(out, record, source_split, force)
        if found.complete:
            say(f"pseudo-labels in {out} are up to date ({source_split.num_samples} frames)")
            return _report(out, source_split, model, target, 0, 0, up_to_date=True)
        if found.record is not None and found.record.get("has_confidence") is not None:
            record["has_confidence"] = found.record["has_confidence"]
        state.write_progress(out, record, found.finished)
        done, stats = _label_pending(
            out,
            record,
            source_split,
            found.finished,
            teacher_file=model.path,
            resize=resize,
            batch_size=batch_size,
            concurrency=concurrency,
            progress=progress,
            stream=stream,
            say=say,
            on_shard=on_shard,
        )
        _write_manifest(out, record, source_split, done)
        frames = sum(s.samples for s in source_split.shards if s.name not in found.finished)
        written = len(done) - len(found.finished)
        return _report(out, source_split, model, target, frames, written, **stats)


def _check_arguments(
    size: tuple[int, int] | None, batch_size: int, concurrency: int | None
) -> None:
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ConfigError(f"--size must be two positive integers H W, got {size}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if concurrency is not None and concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, got {concurrency}")


def _settle_size(
    size: tuple[int, int] | None, model: TeacherFile, source: SourceSplit
) -> tuple[tuple[int, int], bool]:
    """(size, resize): the given size, the teacher's input_size, or the frames' common size
    (then frames of another size are an error, not resized)."""
    if size is not None:
        return (int(size[0]), int(size[1])), True
    if model.input_size is not None:
        return model.input_size, True
    common, _ = frame_size(source)
    return common, False


def _found_state(
    out: Path, record: dict[str, Any], source: SourceSplit, force: bool
) -> state.OutputState:
    """What `out` holds that this pass may keep (everything is cleared with `force`)."""
    found = state.read_state(out)
    if found.record is not None and force:
        state.clear(out, sorted({*found.finished, *(s.name for s in source.shards)}))
        return state.OutputState()
    if found.record is not None:
        state.check_continuable(out, found.record, record)
    state.remove_temporaries(out)
    intact = state.intact(out, found.finished)
    if found.complete and len(intact) == len(found.finished):
        return found
    if found.complete:  # shards gone or changed since: not a dataset until they are relabelled
        (out / MANIFEST).unlink()
    return state.OutputState(found.record, intact)


def _label_pending(
    out: Path,
    record: dict[str, Any],
    source: SourceSplit,
    finished: dict[str, dict[str, Any]],
    *,
    teacher_file: Path,
    resize: bool,
    batch_size: int,
    concurrency: int | None,
    progress: bool,
    stream: TextIO | None,
    say: Log,
    on_shard: ShardHook | None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Runs the Ray Data pass over the shards not in `finished`; returns all finished shards and
    the pass's figures (seconds, nodes, actors, threads, batch_size)."""
    done = dict(finished)
    pending = [s for s in source.shards if s.name not in done]
    if finished:
        say(f"resuming: {len(finished)} of {len(source.shards)} shards already labelled")
    if not pending:
        return done, {"seconds": 0.0, "batch_size": batch_size}
    with _ray_session(say):
        plan = _plan(concurrency)
        say(
            f"labelling {sum(s.samples for s in pending)} frames of {len(pending)} shards at "
            f"{record['size'][0]}x{record['size'][1]}: {plan.actors} actor(s) x {plan.threads} "
            f"thread(s){', 1 GPU each' if plan.num_gpus else ''}, batch {batch_size}"
        )
        model_ref = ray.put(teacher_file.read_bytes())  # one copy for every actor and node
        dataset = (
            ray.data.from_items(
                [{"url": s.url, "name": s.name} for s in pending], override_num_blocks=len(pending)
            )
            # a reader per labelling actor (a tar streams far faster than a teacher labels),
            # holding no CPU so that it runs beside labelling actors that hold them all
            .flat_map(
                ShardReader,
                compute=ray.data.ActorPoolStrategy(size=min(plan.actors, len(pending))),
                num_cpus=0,
            )
            .map_batches(
                Labeler,
                batch_size=batch_size,
                batch_format="numpy",
                # one batch per actor at a time: Ray Data hands a block to an actor on the
                # node that holds it while that actor has room, so with more in flight the
                # readers' node took every batch of a small pass and the other nodes idled
                compute=ray.data.ActorPoolStrategy(
                    size=plan.actors, max_tasks_in_flight_per_actor=1
                ),
                num_cpus=plan.num_cpus,
                num_gpus=plan.num_gpus,
                fn_constructor_kwargs={
                    "model": model_ref,
                    "size": tuple(record["size"]),
                    "depth_scale": record["depth_scale"],
                    "resize": resize,
                    "threads": plan.threads,
                },
            )
        )
        assembler = ShardAssembler({s.name: s.samples for s in pending})
        nodes: Counter[str] = Counter()
        total = sum(s.samples for s in pending)
        bar = tqdm(
            total=total,
            desc=f"pseudo-label {source.split}",
            unit="frame",
            file=stream,
            dynamic_ncols=True,
            disable=not progress,
        )
        start = time.perf_counter()
        first = None
        try:
            for row in _rows(dataset):
                first = first or time.perf_counter()
                bar.update()
                nodes[str(row["node_id"])] += 1
                if record["has_confidence"] is None:
                    record["has_confidence"] = bool(row["confidence_png"])
                name = assembler.add(row)
                if name is None:
                    continue
                done[name] = write_shard(out, name, assembler.take(name))
                state.write_progress(out, record, done)
                written = len(done) - len(finished)
                say(f"{name}: {done[name]['samples']} frames ({written}/{len(pending)} shards)")
                if on_shard is not None:
                    on_shard(name, written)
            assembler.check_done()
        finally:
            bar.close()
        seconds = time.perf_counter() - start
    stats = {
        "seconds": seconds,
        "startup_seconds": (first or start) - start,
        "nodes": dict(nodes),
        "actors": plan.actors,
        "threads": plan.threads,
        "batch_size": batch_size,
    }
    return done, stats


def _rows(dataset: ray.data.Dataset) -> Iterator[dict[str, Any]]:
    """The labelled rows in arrival order; an error raised in an actor comes out as itself."""
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            columns = list(batch)
            for i in range(len(batch["key"])):
                yield {name: batch[name][i] for name in columns}
    except ray.exceptions.GetTimeoutError:
        raise ConfigError(
            f"the Ray cluster did not start every labelling actor within {ACTOR_START_TIMEOUT_S} s",
            hint="lower --concurrency, or give the cluster the CPUs/GPUs the actors ask for",
        ) from None
    except Exception as exc:
        cause = _depthkd_cause(exc)
        if cause is None:
            raise
        raise cause from None


def _depthkd_cause(exc: BaseException) -> DepthKDError | None:
    """The DepthKDError behind Ray's wrapper (`RayTaskError(DataError)`, whose `cause` is the
    error the actor raised, message and hint intact), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        inner = getattr(current, "cause", None)
        if isinstance(inner, BaseException):
            current = inner
        elif isinstance(current, DepthKDError):
            return current
        else:
            current = current.__cause__
    return None


@contextlib.contextmanager
def _ray_session(say: Log) -> Iterator[None]:
    """The Ray this process is connected to, else one started for the pass and shut down after.

    Ray Data's own progress bars are off (the pass draws one of frames), and the pass starts
    only once every actor of the pool is up: otherwise the first actor ready takes all the work
    of a short pass while the others still load the model (seen on two nodes), and a pool the
    cluster cannot place fails after `ACTOR_START_TIMEOUT_S` instead of waiting forever.
    """
    started = not ray.is_initialized()
    if started:
        say(f"Ray: {ensure_ray(log_to_driver=False)}")
    context = ray.data.DataContext.get_current()
    names = ("enable_progress_bars", "wait_for_min_actors_s", "raise_original_map_exception")
    saved = {name: getattr(context, name) for name in names}
    context.enable_progress_bars = False
    context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    context.raise_original_map_exception = True  # a DataError from an actor stays one
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        if started:
            ray.shutdown()


def _plan(concurrency: int | None) -> _Plan:
    """Actors and their resources: one per GPU when the cluster has GPUs, else one per node with
    that node's CPUs as torch threads; an explicit concurrency shares the CPUs out."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return _Plan(actors=concurrency or gpus, threads=1, num_cpus=1.0, num_gpus=1.0)
    node_cpus = [
        int(n["Resources"].get("CPU", 0))
        for n in ray.nodes()
        if n.get("Alive") and n["Resources"].get("CPU", 0) >= 1
    ] or [1]
    actors = concurrency or len(node_cpus)
    total = sum(node_cpus)
    threads = max(1, min(max(node_cpus), total // actors))
    return _Plan(actors=actors, threads=threads, num_cpus=min(threads, total / actors), num_gpus=0)


def _write_manifest(
    out: Path, record: dict[str, Any], source: SourceSplit, done: dict[str, dict[str, Any]]
) -> None:
    """The manifest (atomically, last), then the progress record goes."""
    entries = [done[s.name] for s in source.shards]
    num_samples = sum(e["samples"] for e in entries)
    entry = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fingerprint": digest(state.identity(record)),
        "source": source.entry.get("source", {}),
        "num_samples": num_samples,
        "num_without_gt": num_samples,
        "shards": entries,
        "skipped": [],
        "tool_version": __version__,
    }
    manifest = {
        "format": shards.FORMAT,
        "format_version": shards.FORMAT_VERSION,
        "tool": "depthkd",
        "tool_version": __version__,
        "splits": {source.split: entry},
        RECORD_KEY: {**record, "has_confidence": bool(record["has_confidence"])},
    }
    atomic.write_json(out / MANIFEST, manifest)
    (out / PROGRESS_FILE).unlink(missing_ok=True)


def _report(
    out: Path,
    source: SourceSplit,
    model: TeacherFile,
    size: tuple[int, int],
    frames: int,
    written: int,
    *,
    seconds: float = 0.0,
    up_to_date: bool = False,
    **stats: Any,
) -> PseudoLabelReport:
    return PseudoLabelReport(
        out=out,
        split=source.split,
        frames=frames,
        total_frames=source.num_samples,
        shards_written=written,
        shards_skipped=len(source.shards) - written,
        seconds=seconds,
        frames_per_s=frames / seconds if seconds > 0 else 0.0,
        fingerprint=manifest_fingerprint(read_manifest(out)),
        size=size,
        teacher=model.fingerprint,
        source=source.fingerprint,
        up_to_date=up_to_date,
        **stats,
    )
