"""The teacher of a sweep, acclimated (or loaded) once on the driver and shared by every trial,
and the measured cost of each student a trial can draw.

The depth teacher does not depend on the student: it is trained once per sweep (the `teacher`
job, unless the base names `model.teacher.checkpoint` or turns `acclimate.pretrain_teacher`
off). A teacher is acclimated through the ghost decoder of one student, so a sweep that searches
`model.student.name` acclimates that depth teacher once per student it can draw; never once per
trial. The teachers of a sweep are remembered in `<sweep dir>/teachers.json`, so a resumed sweep
reuses them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from kdplatform import atomic
from kdplatform.config.loader import with_values
from kdplatform.config.schema import ExperimentConfig
from kdplatform.train.profile import DataProfile

TEACHERS_FILE = "teachers.json"
DEPTH_TEACHER = "depth teacher"  # its entry in TEACHERS_FILE (the others are student names)


@dataclass(frozen=True)
class SweepTeacher:
    path: Path
    version: str  # registered version (`depthkd-teacher v3 @acclimated`) or the reference used


def ensure_teachers(
    sweep: str,
    base: ExperimentConfig,
    students: list[str],
    directory: Path,
    *,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict[str, SweepTeacher]:
    """An acclimated teacher per student name: `distill.teacher` of the base when it names one
    (one student only), else acclimated now through the real job path, once per sweep."""
    from kdplatform.train.jobs import prepare_job, run_job

    known_file = directory / TEACHERS_FILE
    known = json.loads(known_file.read_text()) if known_file.is_file() else {}
    teachers: dict[str, SweepTeacher] = {}
    if (
        base.distill.teacher is None
        and base.model.teacher.checkpoint is None
        and base.acclimate.pretrain_teacher
    ):
        entry = known.get(DEPTH_TEACHER)
        if not (entry and Path(entry["path"]).is_file()):
            log(f"training the sweep's depth teacher ({base.teacher.steps} steps)")
            cfg = with_values(base, {"name": f"{sweep}-teacher"})
            ctx = run_job(prepare_job(cfg, "teacher", progress=progress), log=log)
            path = ctx.results["teacher"].exports["teacher"]
            entry = {"path": str(path), "version": ctx.registered.get("pretrained", str(path))}
            known[DEPTH_TEACHER] = entry
            atomic.write_json(known_file, known)
        base = with_values(base, {"model.teacher.checkpoint": entry["path"]})
    for student in students:
        entry = known.get(student)
        if entry and Path(entry["path"]).is_file():
            teachers[student] = SweepTeacher(Path(entry["path"]), entry["version"])
            log(f"teacher for {student}: {entry['version']} (reused)")
            continue
        cfg = with_values(
            base, {"model.student.name": student, "name": f"{sweep}-teacher-{student}"}
        )
        if base.distill.teacher is not None:
            ctx = prepare_job(cfg, "distill", progress=progress)
            teacher = SweepTeacher(ctx.inputs["acclimated"], base.distill.teacher)
        else:
            log(f"acclimating the sweep's teacher for {student} ({cfg.acclimate.steps} steps)")
            ctx = run_job(prepare_job(cfg, "acclimate", progress=progress), log=log)
            path = ctx.results["acclimate"].exports["teacher"]
            teacher = SweepTeacher(path, ctx.registered.get("acclimated", str(path)))
        teachers[student] = teacher
        known[student] = {k: str(v) for k, v in asdict(teacher).items()}
        atomic.write_json(known_file, known)
    return teachers


def student_costs(
    base: ExperimentConfig,
    students: list[str],
    shards: Path,
    profile: DataProfile,
    *,
    repeats: int = 5,
) -> dict[str, tuple[float, float]]:
    """`{student: (params in millions, median CPU latency in ms)}` at the eval frame size,
    measured on the driver, interleaved, so trials running side by side do not skew it. Also
    fails on the driver for a student name that does not exist."""
    import torch

    from kdplatform.bench.models import count_params, median_latencies_ms
    from models.zoo import build_student

    height, width = frame_size(base, shards)
    image = torch.rand(1, 3, height, width)
    models = {}
    for name in students:
        student_cfg = base.model.student.model_copy(update={"name": name})
        models[name] = build_student(student_cfg, max_depth=profile.max_depth).eval()
    runs = {name: (lambda m=model: m(image)) for name, model in models.items()}
    with torch.inference_mode():
        latency = median_latencies_ms(runs, repeats=repeats, warmup=1)
    return {name: (count_params(models[name]) / 1e6, latency[name]) for name in students}


def frame_size(base: ExperimentConfig, shards: Path) -> tuple[int, int]:
    """The size students are evaluated at: that of the first val frame as the loader gives it."""
    from kdplatform.data.loader import eval_loader

    batch = next(iter(eval_loader(shards, base.data.eval_split, base.data)))
    height, width = batch["image"].shape[-2:]
    return int(height), int(width)
