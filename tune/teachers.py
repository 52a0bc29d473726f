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
from dataclasses import asdict, dataclass
from pathlib import Path

from depthkd import atomic
from depthkd.config.loader import with_values
from depthkd.config.schema import TEACHER_ONLINE_TERMS, ExperimentConfig
from depthkd.console import Log
from depthkd.models.kinds import ModelKind
from depthkd.train.profile import DataProfile
from depthkd.tune.spec import SweepConfig

TEACHERS_FILE = "teachers.json"
DEPTH_TEACHER = "depth teacher"  # its entry in TEACHERS_FILE (the others are student names)


@dataclass(frozen=True)
class SweepTeacher:
    path: Path
    version: (
        str  # registered version (`depthkd-acclimated-teacher v3 @newest`) or the reference used
    )


def needs_acclimated_teacher(spec: SweepConfig, base: ExperimentConfig) -> bool:
    """Whether a distill sweep's trials can run the teacher online (attentive or response KD
    weighted in the base or searched): only then is a teacher acclimated per student."""
    searched = {key.removeprefix("distill.losses.") for key in spec.space}
    return base.distill.needs_teacher_online or bool(searched & TEACHER_ONLINE_TERMS)


def _known(directory: Path) -> dict[str, dict[str, str]]:
    known_file = directory / TEACHERS_FILE
    return json.loads(known_file.read_text()) if known_file.is_file() else {}


def _depth_teacher(
    sweep: str,
    base: ExperimentConfig,
    directory: Path,
    *,
    log: Log,
    progress: bool,
    required: bool = False,
) -> str | None:
    """The sweep's depth teacher: `model.teacher.checkpoint`, else one trained now (once per
    sweep); none when the base acclimates an untrained teacher, unless one is `required`."""
    if base.model.teacher.checkpoint is not None:
        return base.model.teacher.checkpoint
    if not (base.acclimate.pretrain_teacher or required):
        return None
    from depthkd.train.jobs import prepare_job, run_job

    known = _known(directory)
    entry = known.get(DEPTH_TEACHER)
    if not (entry and Path(entry["path"]).is_file()):
        log(f"training the sweep's depth teacher ({base.teacher.steps} steps)")
        cfg = with_values(base, {"name": f"{sweep}-teacher"})
        ctx = run_job(prepare_job(cfg, "teacher", progress=progress), log=log)
        path = ctx.results["teacher"].exports["teacher"]
        entry = {"path": str(path), "version": ctx.registered.get(ModelKind.TEACHER, str(path))}
        atomic.write_json(directory / TEACHERS_FILE, {**known, DEPTH_TEACHER: entry})
    return entry["path"]


def labelling_teacher(
    sweep: str,
    base: ExperimentConfig,
    directory: Path,
    teachers: dict[str, SweepTeacher],
    *,
    log: Log = print,
    progress: bool = True,
) -> str:
    """The teacher that pseudo-labels a sweep's unlabeled frames once for every trial, chosen as
    a job chooses it: the teacher acclimated for the base's student (its own head) or named by
    `distill.teacher`, else the depth teacher (given, or trained now as a job would)."""
    acclimated = teachers.get(base.model.student.name)
    if acclimated is not None:
        return str(acclimated.path)
    if base.distill.teacher is not None:
        return base.distill.teacher
    depth = _depth_teacher(sweep, base, directory, log=log, progress=progress, required=True)
    assert depth is not None  # required: trained when not given
    return depth


def ensure_teachers(
    sweep: str,
    base: ExperimentConfig,
    students: list[str],
    directory: Path,
    *,
    log: Log = print,
    progress: bool = True,
) -> dict[str, SweepTeacher]:
    """An acclimated teacher per student name: `distill.teacher` of the base when it names one
    (one student only), else acclimated now through the real job path, once per sweep."""
    from depthkd.train.jobs import prepare_job, run_job

    teachers: dict[str, SweepTeacher] = {}
    if base.distill.teacher is None:
        depth = _depth_teacher(sweep, base, directory, log=log, progress=progress)
        if depth is not None:
            base = with_values(base, {"model.teacher.checkpoint": depth})
    known = _known(directory)
    known_file = directory / TEACHERS_FILE
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
            teacher = SweepTeacher(ctx.inputs[ModelKind.ACCLIMATED_TEACHER], base.distill.teacher)
        else:
            log(f"acclimating the sweep's teacher for {student} ({cfg.acclimate.steps} steps)")
            ctx = run_job(prepare_job(cfg, "acclimate", progress=progress), log=log)
            path = ctx.results["acclimate"].exports["teacher"]
            teacher = SweepTeacher(
                path, ctx.registered.get(ModelKind.ACCLIMATED_TEACHER, str(path))
            )
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

    from depthkd.eval.cost import count_params, median_latencies_ms
    from depthkd.models.zoo import build_student

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
    from depthkd.data.loader import eval_loader

    batch = next(iter(eval_loader(shards, base.data.eval_split, base.data)))
    height, width = batch["image"].shape[-2:]
    return int(height), int(width)
