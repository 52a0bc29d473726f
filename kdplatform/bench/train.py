"""Platform overhead: the distillation step in a plain PyTorch loop vs through Ray Train.

Both sides run the same math on the same inputs: the `distill` stage (a frozen acclimated teacher,
random init, saved with `save_model` and loaded by the stage as in a real job; the student of the
config), the same AdamW param groups and poly schedule as the worker loop, gradient clipping, the
same in-memory random batch (a seeded generator, so no data loading is timed) and the same number
of torch threads. One function (`timed_steps`) runs the steps on both sides:

* plain: `timed_steps` in the driver process, on the bare model;
* ray: a `TorchTrainer` with one worker holding all the cores (`ScalingConfig(num_workers=1,
  resources_per_worker={"CPU": threads})`); the worker builds the stage, wraps the model with
  `ray.train.torch.prepare_model`, calls `timed_steps` and sends its rate back with
  `ray.train.report`.

Warm-up steps are excluded from the clock; the sides alternate (plain first in even rounds, ray
first in odd ones) so load from other work on the machine hits both alike. Figures are medians of
samples/s over rounds and the ratio ray / plain. The final loss of each side is kept as a check
that they trained identically. Start-up of the Ray worker group (seconds per `fit`) is reported
apart: it is paid once per stage, not per step.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthkd import atomic
from depthkd.config.loader import with_values
from depthkd.config.schema import LOSS_TERMS, ExperimentConfig
from depthkd.console import Log
from depthkd.data.constants import NYU_MAX_DEPTH
from depthkd.errors import ConfigError, DepthKDError
from depthkd.train.profile import DataProfile
from depthkd.train.schedule import build_optimizer, poly_scheduler
from depthkd.train.stages import STAGES, Batch, Stage

# The bundled synthetic data is NYU-like: 10 m cap, 0.1 m SILog threshold.
BENCH_PROFILE = DataProfile(
    family="nyu", max_depth=NYU_MAX_DEPTH, loss_min_depth=0.1, protocol="nyu-eigen"
)


@dataclass(frozen=True)
class TrainBenchSettings:
    """What both sides run: `warmup` untimed then `steps` timed optimizer steps."""

    steps: int
    warmup: int
    batch_size: int
    height: int
    width: int
    threads: int
    seed: int = 0


@dataclass(frozen=True)
class StepTiming:
    seconds: float
    samples_per_s: float
    final_loss: float
    threads: int
    niceness: int  # of the process that ran the steps (Ray starts workers at 15 by default)
    peak_memory_bytes: int = 0  # CUDA only: max_memory_allocated over the timed steps


@dataclass
class TrainBenchResult:
    """Figures of one benchmark run (samples/s are medians over rounds)."""

    settings: dict[str, Any]
    student: str
    teacher: str
    rounds: int
    plain_samples_per_s: float
    ray_samples_per_s: float
    plain_rounds: list[float]
    ray_rounds: list[float]
    plain_final_loss: float
    ray_final_loss: float
    ray_worker_threads: int
    plain_niceness: int
    ray_worker_niceness: int
    ray_fit_seconds: list[float]

    @property
    def ratio(self) -> float:
        return self.ray_samples_per_s / self.plain_samples_per_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def make_batch(settings: TrainBenchSettings, *, max_depth: float = NYU_MAX_DEPTH) -> Batch:
    """The in-memory batch both sides train on (the same tensors for the same settings)."""
    generator = torch.Generator().manual_seed(settings.seed)
    shape = (settings.batch_size, 1, settings.height, settings.width)
    image = torch.rand(
        (settings.batch_size, 3, settings.height, settings.width), generator=generator
    )
    depth = 0.2 + (max_depth - 0.5) * torch.rand(shape, generator=generator)
    return {"image": image, "depth": depth, "valid": depth > 0}


def build_distill_stage(cfg: ExperimentConfig, teacher: Path, seed: int) -> Stage:
    """The `distill` stage with a fixed seed, so both sides start from identical weights.

    The step timed is the one with the teacher online: a config whose objective reads cached
    pseudo-labels only (the demo's) is timed with the standard attentive + response objective.
    """
    if not cfg.distill.needs_teacher_online:
        online = {term: w for term, w in LOSS_TERMS["distill"].items() if w > 0}
        cfg = with_values(cfg, {"distill.losses": online, "distill.unlabeled_ratio": 0.0})
    torch.manual_seed(seed)
    return STAGES.get("distill").build(cfg, BENCH_PROFILE, {"teacher": teacher})


def timed_steps(
    cfg: ExperimentConfig,
    teacher: Path,
    settings: TrainBenchSettings,
    prepare: Callable[[nn.Module], nn.Module],
    *,
    device: str = "cpu",
    amp: torch.dtype | None = None,
    channels_last: bool = False,
) -> StepTiming:
    """Builds the stage, wraps its model with `prepare` and runs `warmup + steps` steps.

    Each step is what the worker loop does for one micro-batch without accumulation: stage hook,
    forward + losses (under `amp` autocast when given, as the loop's `train.amp`), backward,
    per-term floats (the loop's logging window), gradient clipping, optimizer and scheduler step.
    On `device` "cuda" the clock waits for the GPU and the peak memory of the timed steps is kept;
    `channels_last` puts the student and the batch's images in that memory format (the stage moves
    the frozen teacher to the batch's device itself, as in a job).
    """
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    cuda = torch.device(device).type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    try:
        stage = build_distill_stage(cfg, teacher, settings.seed)
        model = stage.model.to(device, memory_format=memory_format)
        wrapped = prepare(model)
        optimizer = build_optimizer(stage)
        scheduler = poly_scheduler(
            optimizer, total=settings.warmup + settings.steps, cfg=stage.cfg.optim
        )
        batch = {k: v.to(device) for k, v in make_batch(settings).items()}
        batch["image"] = batch["image"].contiguous(memory_format=memory_format)
        grad_clip = cfg.train.grad_clip
        autocast = (
            functools.partial(torch.autocast, device_type=torch.device(device).type, dtype=amp)
            if amp is not None
            else contextlib.nullcontext
        )
        wrapped.train()
        window: dict[str, float] = {}
        start = time.perf_counter()
        for index in range(settings.warmup + settings.steps):
            if index == settings.warmup:
                if cuda:
                    torch.cuda.synchronize(device)
                    torch.cuda.reset_peak_memory_stats(device)
                start = time.perf_counter()
            stage.on_step(wrapped, index)
            with autocast():
                terms = stage.step(wrapped, batch, index)
            terms["loss"].backward()
            for name, value in terms.items():
                window[name] = float(value.detach())
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        return StepTiming(
            seconds=seconds,
            samples_per_s=settings.steps * settings.batch_size / seconds,
            final_loss=window["loss"],
            threads=torch.get_num_threads(),
            niceness=os.nice(0),
            peak_memory_bytes=torch.cuda.max_memory_allocated(device) if cuda else 0,
        )
    finally:
        torch.set_num_threads(previous_threads)


def ray_worker(config: dict[str, Any]) -> None:
    """`train_loop_per_worker` of the Ray side: the same steps behind `prepare_model`."""
    import ray.train
    import ray.train.torch

    cfg = ExperimentConfig.model_validate(config["experiment"])
    settings = TrainBenchSettings(**config["settings"])

    def prepare(model: nn.Module) -> nn.Module:
        return ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": False}
        )

    timing = timed_steps(cfg, Path(config["teacher"]), settings, prepare)
    # Ray Train v2 hands the driver only the metrics of reports that carry a checkpoint
    with tempfile.TemporaryDirectory(prefix="depthkd-bench-") as directory:
        atomic.write_json(Path(directory) / "timing.json", asdict(timing))
        ray.train.report(asdict(timing), checkpoint=ray.train.Checkpoint.from_directory(directory))


def _ray_side(
    cfg: ExperimentConfig, teacher: Path, settings: TrainBenchSettings, storage: Path, name: str
) -> tuple[StepTiming, float]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = time.perf_counter()
    trainer = TorchTrainer(
        ray_worker,
        train_loop_config={
            "experiment": cfg.model_dump(mode="json"),
            "settings": asdict(settings),
            "teacher": str(teacher),
        },
        scaling_config=ScalingConfig(
            num_workers=1, use_gpu=False, resources_per_worker={"CPU": settings.threads}
        ),
        run_config=RunConfig(name=name, storage_path=str(storage)),
    )
    result = trainer.fit()
    if getattr(result, "error", None) or not result.metrics:
        raise DepthKDError(f"the Ray side of the benchmark failed: {result.error or 'no report'}")
    fields = StepTiming.__dataclass_fields__
    timing = StepTiming(**{k: v for k, v in result.metrics.items() if k in fields})
    return timing, time.perf_counter() - started


def _ensure_ray(threads: int) -> str:
    import ray

    from depthkd.raycluster import ensure_ray

    label = ensure_ray()
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus < threads:
        raise ConfigError(
            f"the Ray cluster has {cpus:g} CPUs; the benchmark worker asks for {threads}",
            hint="pass --threads at most the cluster's CPUs",
        )
    return label


def run_train_benchmark(
    cfg: ExperimentConfig,
    settings: TrainBenchSettings,
    *,
    rounds: int = 3,
    log: Log = print,
) -> TrainBenchResult:
    """Times the distill step plain and through Ray Train, alternating, `rounds` times each."""
    log(f"ray: {_ensure_ray(settings.threads)}")
    work = Path(tempfile.mkdtemp(prefix="depthkd-bench-train-"))
    try:
        from depthkd.models.serialization import save_model
        from depthkd.models.zoo import build_acclimated_teacher

        torch.manual_seed(settings.seed)
        teacher = save_model(
            build_acclimated_teacher(
                cfg.model.teacher, cfg.model.student, max_depth=BENCH_PROFILE.max_depth
            ),
            work / "teacher.pt",
        )
        plain: list[StepTiming] = []
        ray_side: list[StepTiming] = []
        fit_seconds: list[float] = []
        for r in range(rounds):
            order = ("plain", "ray") if r % 2 == 0 else ("ray", "plain")
            for which in order:
                if which == "plain":
                    plain.append(timed_steps(cfg, teacher, settings, lambda m: m))
                    latest = plain[-1]
                else:
                    timing, seconds = _ray_side(
                        cfg, teacher, settings, work / "ray_results", f"bench-train-{r}"
                    )
                    ray_side.append(timing)
                    fit_seconds.append(seconds)
                    latest = timing
                log(
                    f"  round {r + 1}/{rounds} {which:5s} {latest.samples_per_s:7.2f} samples/s "
                    f"({settings.steps} steps in {latest.seconds:.1f} s, loss "
                    f"{latest.final_loss:.4f}, {latest.threads} threads, nice {latest.niceness})"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return TrainBenchResult(
        settings=asdict(settings),
        student=cfg.model.student.name,
        teacher=cfg.model.teacher.name,
        rounds=rounds,
        plain_samples_per_s=statistics.median(t.samples_per_s for t in plain),
        ray_samples_per_s=statistics.median(t.samples_per_s for t in ray_side),
        plain_rounds=[t.samples_per_s for t in plain],
        ray_rounds=[t.samples_per_s for t in ray_side],
        plain_final_loss=plain[-1].final_loss,
        ray_final_loss=ray_side[-1].final_loss,
        ray_worker_threads=ray_side[-1].threads,
        plain_niceness=plain[-1].niceness,
        ray_worker_niceness=ray_side[-1].niceness,
        ray_fit_seconds=fit_seconds,
    )
