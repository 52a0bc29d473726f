"""What a model costs to run: size, compute and CPU latency of a student, a teacher and its ghost
decoder, measured in one run; shared by `depthkd models describe`, the promotion gate's latency
budget, export's timing, sweeps and the benchmarks.

* params: all parameters of the module (buffers excluded).
* GFLOPs: `torch.utils.flop_counter.FlopCounterMode` at batch 1 — matmuls and convolutions,
  counted as 2 FLOPs per multiply-add; elementwise ops and resizes are not counted.
* latency: median of `repeats` timed forward passes at batch 1 under `torch.inference_mode`,
  after `warmup` untimed ones, on the threads torch is set to use.
* LG share: FLOPs inside the student's LG blocks over the student's total FLOPs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from depthkd.config.schema import StudentConfig, TeacherConfig
from depthkd.models.layers import pad_to_multiple
from depthkd.models.lg import LGBlock
from depthkd.models.zoo import build_ghost_decoder, build_student, build_teacher


@dataclass(frozen=True)
class ModuleCost:
    params: int
    gflops: float
    latency_ms: float


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(run: Callable[[], object]) -> dict[str, int]:
    """FLOPs of `run()` per module path (`"Global"` is the total)."""
    # depth only limits the printed table, and display=False prints none
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        run()
    return {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}


def median_latencies_ms(
    runs: Mapping[str, Callable[[], object]], *, repeats: int, warmup: int
) -> dict[str, float]:
    """Median latency of each run; the runs take turns within every repeat, so load changes on a
    noisy machine hit all of them alike and their ratios stay fair."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for _ in range(warmup):
            for run in runs.values():
                run()
        for _ in range(repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def lg_flops_share(student: nn.Module, flops: dict[str, int]) -> float:
    """Share of the student's FLOPs spent in its LG blocks."""
    root = type(student).__name__
    lg = sum(
        flops.get(f"{root}.{name}", 0)
        for name, module in student.named_modules()
        if isinstance(module, LGBlock)
    )
    return lg / flops["Global"]


def describe_models(
    student_cfg: StudentConfig,
    teacher_cfg: TeacherConfig,
    *,
    height: int,
    width: int,
    max_depth: float = 80.0,
    repeats: int = 5,
    warmup: int = 2,
) -> dict:
    """Params, GFLOPs and latency of student, teacher and ghost decoder at `height × width`.

    Returns the `depthkd models describe --json` object: `{"student": {...}, "teacher": {...},
    "ghost_decoder": {...}, "lg_flops_share": float}` plus the settings it was measured with.
    """
    student = build_student(student_cfg, max_depth=max_depth).eval()
    teacher = build_teacher(teacher_cfg, max_depth=max_depth).eval()
    ghost = build_ghost_decoder(
        teacher, student_cfg, student_channels=student.backbone.feature_info.channels
    ).eval()
    image = torch.rand(1, 3, height, width)
    with torch.inference_mode():
        teacher_feats = teacher.encode(pad_to_multiple(image, teacher.backbone.input_multiple))

    def run_student() -> object:
        return student(image)

    def run_teacher() -> object:
        return teacher(image)

    def run_ghost() -> object:
        return ghost(teacher_feats, (height, width))

    modules = {"student": student, "teacher": teacher, "ghost_decoder": ghost}
    runs = {"student": run_student, "teacher": run_teacher, "ghost_decoder": run_ghost}
    flops = {name: count_flops(run) for name, run in runs.items()}
    latency = median_latencies_ms(runs, repeats=repeats, warmup=warmup)
    result: dict = {
        name: asdict(
            ModuleCost(count_params(modules[name]), flops[name]["Global"] / 1e9, latency[name])
        )
        for name in runs
    }
    result["lg_flops_share"] = lg_flops_share(student, flops["student"])
    result["settings"] = {
        "student": student_cfg.name,
        "teacher": teacher_cfg.name,
        "height": height,
        "width": width,
        "batch": 1,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "warmup": warmup,
    }
    return result
