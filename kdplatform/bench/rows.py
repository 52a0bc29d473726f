"""The rows of `depthkd bench all`, in suite order; each calls an existing benchmark.

* `loader_local`: `bench loader` (shard loader vs per-file loader, local disk).
* `loader_s3`: `depthkd.bench.loader_s3` against `--s3` or a local moto server.
* `latency`: `models describe` (student vs teacher, CPU, batch 1).
* `train`: `bench train` (the distill step through Ray Train vs a plain loop).
* `onnx`: `depthkd export` (ONNX Runtime vs PyTorch eager, CPU).
* `nodes`: `depthkd.bench.nodes` (1 worker on 1 node vs 2 workers on 2 dev-cluster nodes).
* `asha`: `bench asha` (ASHA vs the full budget), read from its newest JSON unless `--asha`.
* `gpu`: `depthkd.bench.gpu` (--gpu with CUDA only).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from depthkd import atomic
from depthkd.bench.rowspec import Figure, Outcome, SuiteContext, row
from depthkd.bench.train import BENCH_PROFILE, TrainBenchSettings
from depthkd.environ import patched_environ
from depthkd.errors import ConfigError

ALTERNATING = "alternating passes, median over rounds"
ASHA_FIELDS = ("asha_rounds", "full_rounds", "asha_best", "full_best", "metric", "configurations")


def _loader_settings(ctx: SuiteContext) -> dict[str, Any]:
    s = ctx.sizes
    return {
        "n": s.loader_n,
        "workers": ctx.workers,
        "batch_size": s.loader_batch_size,
        "batches": s.loader_batches,
        "rounds": s.loader_rounds,
        "progress": False,
    }


def _loader_protocol(result: Any, where: str) -> str:
    return (
        f"{result.n_samples} synthetic NYU-like {result.width}x{result.height} frames {where}; "
        f"same decode, augmentation (crop 416x544, rotation, CutFlip), collation; "
        f"{result.workers} worker processes, batch {result.batch_size}, {result.batches} timed "
        f"batches per pass after the first; {ALTERNATING} ({result.rounds})"
    )


def _loader_figures(result: Any) -> list[Figure]:
    return [
        Figure("per-file", result.baseline_samples_per_s, "samples/s"),
        Figure("shards", result.shards_samples_per_s, "samples/s"),
    ]


@row(
    name="loader_local",
    title="Loader, local disk",
    compared="training-loader throughput",
    baseline="per-file PIL loader (BTS style, one open per rgb/depth file)",
    candidate="WebDataset shard loader (train_loader)",
    unit="samples/s",
    ratio_of="shards / per-file",
)
def loader_local(ctx: SuiteContext) -> Outcome:
    from depthkd.bench.loader import run_loader_benchmark

    work = ctx.work / f"loader-{ctx.sizes.loader_n}"
    result = run_loader_benchmark(work, **_loader_settings(ctx))
    return Outcome(
        figures=_loader_figures(result),
        ratio=result.ratio,
        protocol=_loader_protocol(result, "on local disk (warm page cache)"),
        details=result.to_dict(),
    )


@contextlib.contextmanager
def _s3_prefix(ctx: SuiteContext) -> Iterator[str]:
    """An `s3://` prefix to upload to, with the AWS environment pointing at its endpoint: under
    `--s3` (the environment as it is; what was uploaded is deleted afterwards), else a local moto
    server's bucket (its environment applied to os.environ, so loader workers inherit it)."""
    from depthkd.bench.loader_s3 import delete_prefix
    from depthkd.devcluster.services import s3_server

    if ctx.s3:
        prefix = f"{ctx.s3.rstrip('/')}/depthkd-bench-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            yield prefix
        finally:
            delete_prefix(prefix)
        return
    with s3_server(ctx.work) as server:
        ctx.secrets.update(v for k, v in server.env.items() if "KEY" in k or "TOKEN" in k)
        bucket = server.create_bucket("depthkd-bench")
        with patched_environ(server.env):
            yield f"{bucket}/loader-{ctx.sizes.loader_n}"


@row(
    name="loader_s3",
    title="Loader over S3",
    compared="training-loader throughput, both reading from the same S3 endpoint",
    baseline="per-file PIL loader, one GET per rgb/depth object",
    candidate="WebDataset shard loader streaming shards",
    unit="samples/s",
    ratio_of="shards / per-file",
    target=">= 3x",
)
def loader_s3(ctx: SuiteContext) -> Outcome:
    from depthkd.bench.loader_s3 import run_s3_loader_benchmark
    from depthkd.devcluster.services import ServiceUnavailable

    work = ctx.work / f"loader-{ctx.sizes.loader_n}"
    try:
        with _s3_prefix(ctx) as url:
            result = run_s3_loader_benchmark(work, url, **_loader_settings(ctx), log=None)
    except ServiceUnavailable as exc:
        reason = f"{exc} ({exc.hint})" if exc.hint else str(exc)
        return Outcome(status="skipped", note=f"no S3 endpoint: {reason}; or pass --s3 URL")
    server = "given by --s3" if ctx.s3 else "a local moto server"
    return Outcome(
        figures=_loader_figures(result),
        ratio=result.ratio,
        protocol=_loader_protocol(result, f"in S3 at {result.endpoint} ({server})")
        + f"; {result.raw_objects} objects ({result.raw_mb:.0f} MB) vs {result.shard_objects - 1}"
        f" shard(s) ({result.shards_mb:.0f} MB) + manifest; median GET of one raw object "
        f"{result.get_ms:.1f} ms",
        details=result.to_dict(),
    )


@row(
    name="latency",
    title="Student vs teacher latency",
    compared="CPU inference latency, batch 1, same input size",
    baseline="teacher",
    candidate="student",
    unit="ms/image",
    ratio_of="teacher / student",
)
def latency(ctx: SuiteContext) -> Outcome:
    from depthkd.eval.cost import describe_models

    height, width = ctx.sizes.latency_size
    result = describe_models(
        ctx.models.student,
        ctx.models.teacher,
        height=height,
        width=width,
        max_depth=BENCH_PROFILE.max_depth,
        repeats=ctx.sizes.latency_repeats,
        warmup=2,
    )
    student, teacher = result["student"], result["teacher"]
    return Outcome(
        figures=[
            Figure("teacher", teacher["latency_ms"], "ms"),
            Figure("student", student["latency_ms"], "ms"),
            Figure("teacher cost", teacher["gflops"], "GFLOPs"),
            Figure("student cost", student["gflops"], "GFLOPs"),
        ],
        ratio=teacher["latency_ms"] / student["latency_ms"],
        protocol=f"random {height}x{width} image, torch.inference_mode, "
        f"{result['settings']['threads']} threads; the models take turns in every repeat, median "
        f"of {ctx.sizes.latency_repeats} after 2 warm-up passes (models describe)",
        details=result,
        baseline=f"teacher {ctx.models.teacher.name} ({teacher['params'] / 1e6:.1f} M params)",
        candidate=f"student {ctx.models.student.name} ({student['params'] / 1e6:.1f} M params)",
    )


@row(
    name="train",
    title="Ray Train path vs plain loop",
    compared="distill-step throughput (platform overhead)",
    baseline="plain PyTorch loop in this process",
    candidate="one-worker Ray Train TorchTrainer (prepare_model, report)",
    unit="samples/s",
    ratio_of="ray / plain",
)
def train(ctx: SuiteContext) -> Outcome:
    import ray

    from depthkd.bench.train import run_train_benchmark
    from depthkd.raycluster import ensure_ray

    s = ctx.sizes
    settings = TrainBenchSettings(
        steps=s.train_steps,
        warmup=s.train_warmup,
        batch_size=s.train_batch_size,
        height=s.train_size[0],
        width=s.train_size[1],
        threads=ctx.threads,
    )
    if not ray.is_initialized():  # ours: quiet, and shut down when the suite ends
        ensure_ray(log_to_driver=False)
        ctx.cleanup.append(ray.shutdown)
    result = run_train_benchmark(ctx.train_cfg, settings, rounds=s.train_rounds)
    cfg = ctx.train_cfg
    return Outcome(
        figures=[
            Figure("plain", result.plain_samples_per_s, "samples/s"),
            Figure("ray", result.ray_samples_per_s, "samples/s"),
        ],
        ratio=result.ratio,
        protocol=f"config {cfg.name!r}: student {cfg.model.student.name}, frozen acclimated "
        f"teacher {cfg.model.teacher.name}, batch {s.train_batch_size} at "
        f"{s.train_size[0]}x{s.train_size[1]} in memory, {ctx.threads} threads on both sides, "
        f"{s.train_warmup} warm-up + {s.train_steps} timed steps; {ALTERNATING} "
        f"({s.train_rounds}); final loss plain {result.plain_final_loss:.5f}, ray "
        f"{result.ray_final_loss:.5f}",
        details=result.to_dict(),
    )


@row(
    name="onnx",
    title="ONNX vs eager",
    compared="student CPU inference latency, batch 1",
    baseline="PyTorch eager",
    candidate="ONNX Runtime (dynamo export, fixed size)",
    unit="ms/image",
    ratio_of="eager / onnx",
)
def onnx(ctx: SuiteContext) -> Outcome:
    import numpy as np
    import torch

    from depthkd.data.sources.render import render_scene
    from depthkd.inference.export import export_model
    from depthkd.models.serialization import save_model
    from depthkd.models.zoo import build_student

    height, width = ctx.sizes.onnx_size
    work = ctx.work / "onnx"
    torch.manual_seed(0)
    student = build_student(ctx.models.student, max_depth=BENCH_PROFILE.max_depth).eval()
    path = save_model(student, work / "student.pt")
    image, _ = render_scene("nyu", np.random.default_rng(0), height, width)
    report = export_model(
        str(path),
        work / "student.onnx",
        fmt="onnx",
        size=(height, width),
        dynamic=False,
        image=image,
        repeats=ctx.sizes.onnx_repeats,
    )
    return Outcome(
        figures=[
            Figure("eager", report.eager_ms, "ms"),
            Figure("onnx", report.exported_ms, "ms"),
            Figure("parity max |diff|", report.parity_max_abs_m, "m"),
        ],
        ratio=report.speedup,
        protocol=f"student {ctx.models.student.name} (random init) at {height}x{width}, opset "
        f"{report.opset}, {report.threads} threads; eager and ONNX take turns, median of "
        f"{ctx.sizes.onnx_repeats} after 3 warm-up passes (depthkd export); parity on a "
        "synthetic NYU-like frame",
        details=report.to_dict(),
        candidate=f"ONNX Runtime {_onnxruntime_version()} (dynamo export, fixed size)",
    )


def _onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def asha_result_path(out: Path, day: datetime.date | None = None) -> Path:
    """Where `--asha` writes its `bench asha` result, and where later runs look for it."""
    from depthkd.bench.machine import hostname

    return out / f"asha-{(day or datetime.date.today()).isoformat()}-{hostname()}.json"


def newest_asha_result(out: Path) -> Path | None:
    """The newest `asha-*.json` in `out` that holds a `bench asha` result."""
    found = []
    for path in out.glob("asha-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and all(k in data for k in ASHA_FIELDS):
            found.append((path.stat().st_mtime, path))
    return max(found)[1] if found else None


def _run_asha(ctx: SuiteContext) -> tuple[dict[str, Any], Path]:
    from depthkd.bench.sweep import run_asha_benchmark
    from depthkd.config.files import BENCH_SWEEP_CONFIG
    from depthkd.tune.sweep import load_sweep

    spec = load_sweep(BENCH_SWEEP_CONFIG, [])
    result = run_asha_benchmark(spec, tag=time.strftime("%Y%m%d-%H%M%S"), log=print)
    path = asha_result_path(ctx.out)
    atomic.write_json(path, result.to_dict())
    return result.to_dict(), path


@row(
    name="nodes",
    title="Two nodes vs one",
    compared="supervised-job training throughput, shards and checkpoints in S3",
    baseline="1 worker on 1 node",
    candidate="2 workers on 2 nodes (dev cluster: moto S3, tracking server on PostgreSQL)",
    unit="samples/s",
    ratio_of="2 nodes / 1 node",
)
def nodes(ctx: SuiteContext) -> Outcome:
    from depthkd.bench.nodes import NodesSettings, run_nodes_bench
    from depthkd.devcluster.services import ServiceUnavailable

    settings = NodesSettings(steps=ctx.sizes.nodes_steps, rounds=ctx.sizes.nodes_rounds)
    work = ctx.work / f"nodes-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True)
    try:
        result = run_nodes_bench(work, settings, log=lambda line: None)
    except ServiceUnavailable as exc:
        reason = f"{exc} ({exc.hint})" if exc.hint else str(exc)
        return Outcome(status="skipped", note=reason)
    one, two = result["samples_per_s"].values()
    height, width = settings.size
    return Outcome(
        figures=[Figure("1 node", one, "samples/s"), Figure("2 nodes", two, "samples/s")],
        ratio=result["ratio_2_nodes_vs_1"],
        protocol=f"depthkd supervised, {settings.steps} steps, batch {settings.batch_size} per "
        f"worker, {settings.frames} synthetic {width}x{height} frames streamed from S3; global "
        "samples/s, median of the logged windows after the first; the two Ray nodes share this "
        f"machine's cores; {ALTERNATING} ({settings.rounds})",
        details=result,
    )


@row(
    name="asha",
    title="ASHA saving",
    compared="evaluation rounds a sweep spends, and its best val metric",
    baseline="every configuration to the full budget",
    candidate="ASHA (same configurations, same teacher)",
    unit="rounds",
    ratio_of="asha / full rounds",
)
def asha(ctx: SuiteContext) -> Outcome:
    if ctx.asha:
        data, path = _run_asha(ctx)
        source = f"run now, written to {path}"
    else:
        path = ctx.asha_json or newest_asha_result(ctx.out)
        if path is None:
            return Outcome(
                status="not run",
                note=f"no bench asha result in {ctx.out}: depthkd bench asha --json "
                f"{asha_result_path(ctx.out)} (~30 min), or bench all --asha",
            )
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--asha-json {path}: not a readable JSON file ({exc})") from None
        missing = [k for k in ASHA_FIELDS if k not in data]
        if missing:
            raise ConfigError(f"{path}: not a `bench asha` result (no {', '.join(missing)})")
        source = f"read from {path}"  # its name carries the run's date; mtimes do not survive git
    metric, split = data["metric"], data["metric"].split("/")[0]
    return Outcome(
        figures=[
            Figure("full", data["full_rounds"], "rounds"),
            Figure("asha", data["asha_rounds"], "rounds"),
            Figure(f"full best {metric}", data["full_best"], ""),
            Figure(f"asha best {metric}", data["asha_best"], ""),
        ],
        ratio=data["asha_rounds"] / data["full_rounds"],
        protocol=f"{data['configurations']} random-search configurations (one seed) run back to "
        f"back under ASHA and to the full budget ({data.get('max_rounds', '?')} rounds each); "
        f"best {metric} on the {split} split under the sweep's protocol (configs/sweep_bench.yaml:"
        f" synthetic NYU-like, nyu-eigen); {source}",
        details={**data, "source": str(path)},
        note=f"saves {100 * (1 - data['asha_rounds'] / data['full_rounds']):.0f} % of the rounds;"
        f" best within {100 * (data['asha_best'] / data['full_best'] - 1):+.1f} %"
        + _asha_caveats(data),
    )


def _asha_caveats(data: dict[str, Any]) -> str:
    """What the rounds ratio does not show: trials that errored under ASHA (their rounds are
    missing from its count) and the wall time of both halves."""
    errored = sum(
        1 for line in data.get("asha_table", "").splitlines() if line.split()[-1:] == ["ERROR"]
    )
    text = f"; {errored} trial(s) errored under ASHA" if errored else ""
    seconds = data.get("seconds") or {}
    if {"asha", "full"} <= set(seconds):
        text += f"; wall time ASHA {seconds['asha']:.0f} s, full {seconds['full']:.0f} s"
    return text


@row(
    name="gpu",
    title="GPU distill step",
    compared="distill-step throughput and peak memory, bf16 autocast",
    baseline="plain",
    candidate="channels_last / torch.compile / both",
    unit="images/s",
    ratio_of="best / plain",
)
def gpu(ctx: SuiteContext) -> Outcome:
    import torch

    if not torch.cuda.is_available():
        return Outcome(status="skipped", note="no CUDA device")
    if not ctx.gpu:
        return Outcome(status="not run", note="pass --gpu (depthkd bench all --gpu)")
    from depthkd.bench.gpu import run_gpu_benchmark

    s = ctx.sizes
    height, width = s.gpu_size
    settings = TrainBenchSettings(
        steps=s.gpu_steps,
        warmup=s.gpu_warmup,
        batch_size=s.gpu_batch_size,
        height=height,
        width=width,
        threads=ctx.threads,
    )
    cfg = ctx.train_cfg.model_copy(update={"model": ctx.models})
    result = run_gpu_benchmark(cfg, settings, rounds=s.gpu_rounds, log=print)
    figures = []
    for variant in result.variants:
        figures.append(Figure(variant.name, variant.images_per_s, "images/s"))
        figures.append(Figure(f"{variant.name} peak", variant.peak_memory_gib, "GiB"))
    return Outcome(
        figures=figures,
        ratio=result.ratio,
        protocol=f"{result.device}: student {result.student} + frozen acclimated teacher "
        f"{result.teacher}, the distill objective, batch {s.gpu_batch_size} at {height}x{width}, "
        f"{s.gpu_warmup} warm-up (compilation) + {s.gpu_steps} timed steps; variants take "
        f"turns, median of {s.gpu_rounds}; peak = max_memory_allocated over the timed steps",
        details=result.to_dict(),
        candidate=f"fastest: {result.best.name}",
    )
