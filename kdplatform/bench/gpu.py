"""GPU throughput of the distillation step: plain, channels_last, torch.compile and both.

Every variant runs `depthkd.bench.train.timed_steps`: the `distill` stage (the config's
student, a frozen acclimated teacher saved and loaded as in a job), its optimizer and schedule,
gradient clipping, one in-memory random batch, bf16 autocast around the forward and losses as the
loop's `train.amp: bf16`. The variants change only how the student and the images are held:

* `plain`: as a job trains it;
* `channels_last`: student weights and the batch's images in `torch.channels_last`;
* `compile`: the student wrapped by `torch.compile` (default mode);
* `channels_last+compile`: both.

The frozen teacher is left as the stage builds it (moved to the GPU on the first step). Warm-up
steps (compilation included) are not timed; peak memory is `torch.cuda.max_memory_allocated`
over the timed steps. Variants take turns within each round, in reversed order in odd rounds;
figures are medians over rounds.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthkd.bench.train import BENCH_PROFILE, StepTiming, TrainBenchSettings, timed_steps
from depthkd.config.schema import ExperimentConfig
from depthkd.console import Log

# name -> (channels_last, torch.compile)
VARIANTS: dict[str, tuple[bool, bool]] = {
    "plain": (False, False),
    "channels_last": (True, False),
    "compile": (False, True),
    "channels_last+compile": (True, True),
}


@dataclass
class GpuVariant:
    """One variant's figures (medians over rounds)."""

    name: str
    channels_last: bool
    compiled: bool
    images_per_s: float
    peak_memory_gib: float
    final_loss: float
    rounds: list[float]


@dataclass
class GpuBenchResult:
    device: str
    student: str
    teacher: str
    amp: str
    settings: dict[str, Any]
    variants: list[GpuVariant]

    def variant(self, name: str) -> GpuVariant:
        return next(v for v in self.variants if v.name == name)

    @property
    def best(self) -> GpuVariant:
        return max(self.variants, key=lambda v: v.images_per_s)

    @property
    def ratio(self) -> float:
        """images/s of the fastest variant over plain."""
        return self.best.images_per_s / self.variant("plain").images_per_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "best": self.best.name, "ratio": self.ratio}


def run_gpu_benchmark(
    cfg: ExperimentConfig,
    settings: TrainBenchSettings,
    *,
    device: str = "cuda",
    variants: Sequence[str] = tuple(VARIANTS),
    rounds: int = 2,
    amp: torch.dtype = torch.bfloat16,
    log: Log | None = print,
) -> GpuBenchResult:
    """Times the distill step under each of `variants` (names of `VARIANTS`), alternating."""
    from depthkd.models.serialization import save_model
    from depthkd.models.zoo import build_acclimated_teacher

    if "plain" not in variants:
        raise ValueError("the GPU benchmark compares against the plain variant: include it")
    work = Path(tempfile.mkdtemp(prefix="depthkd-bench-gpu-"))
    timings: dict[str, list[StepTiming]] = {name: [] for name in variants}
    try:
        torch.manual_seed(settings.seed)
        teacher = save_model(
            build_acclimated_teacher(
                cfg.model.teacher, cfg.model.student, max_depth=BENCH_PROFILE.max_depth
            ),
            work / "teacher.pt",
        )
        for r in range(rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                channels_last, compiled = VARIANTS[name]
                torch._dynamo.reset()  # every compiled pass compiles afresh, in its warm-up
                timing = timed_steps(
                    cfg,
                    teacher,
                    settings,
                    _compiled if compiled else _bare,
                    device=device,
                    amp=amp,
                    channels_last=channels_last,
                )
                timings[name].append(timing)
                if log is not None:
                    log(
                        f"  round {r + 1}/{rounds} {name:22s} {timing.samples_per_s:8.1f} images/s"
                        f", peak {timing.peak_memory_bytes / 2**30:.2f} GiB"
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return GpuBenchResult(
        device=torch.cuda.get_device_name(device) if device.startswith("cuda") else device,
        student=cfg.model.student.name,
        teacher=cfg.model.teacher.name,
        amp=str(amp).removeprefix("torch."),
        settings=asdict(settings),
        variants=[
            GpuVariant(
                name=name,
                channels_last=VARIANTS[name][0],
                compiled=VARIANTS[name][1],
                images_per_s=statistics.median(t.samples_per_s for t in runs),
                peak_memory_gib=max(t.peak_memory_bytes for t in runs) / 2**30,
                final_loss=runs[-1].final_loss,
                rounds=[t.samples_per_s for t in runs],
            )
            for name, runs in timings.items()
        ],
    )


def _bare(model: nn.Module) -> nn.Module:
    return model


def _compiled(model: nn.Module) -> nn.Module:
    return torch.compile(model)
