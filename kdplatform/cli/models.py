"""`depthkd models list|describe|half`: the registered students and teachers, what they cost,
and float16 copies of model files."""

from __future__ import annotations

import argparse
import json

from depthkd.config.loader import validate_options
from depthkd.config.schema import StudentConfig, TeacherConfig
from depthkd.errors import ConfigError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("models", help="list students and teachers, measure their cost")
    sub = parser.add_subparsers(dest="models_command", required=True, metavar="COMMAND")
    listing = sub.add_parser(
        "list",
        help="registered students and teachers: their timm models and pretrained weights",
        description="Prints each registered student and teacher name, the timm model (and "
        "arguments) it builds, and the Hugging Face repo that `pretrained: true` loads for it.",
    )
    listing.set_defaults(run=run_list)

    describe = sub.add_parser(
        "describe",
        help="params, GFLOPs and CPU latency of student, teacher and ghost decoder",
        description="Builds the student, the teacher and the ghost decoder (random init) and "
        "measures params, GFLOPs (torch flop counter, 2 per multiply-add) and CPU latency "
        "(median of --repeats forward passes at batch 1, the three taking turns). Names are "
        "registered names (`depthkd models list`) or timm model names.",
    )
    describe.add_argument("--student", default=StudentConfig().name, help="student name")
    describe.add_argument("--teacher", default=TeacherConfig().name, help="teacher name")
    describe.add_argument("--height", type=int, default=352)
    describe.add_argument("--width", type=int, default=1216)
    describe.add_argument("--max-depth", type=float, default=80.0, help="depth head range (m)")
    describe.add_argument("--repeats", type=int, default=5, help="timed passes per model")
    describe.add_argument("--warmup", type=int, default=2, help="untimed passes per model")
    describe.add_argument(
        "--no-lg-global", action="store_true", help="LG blocks without global path"
    )
    describe.add_argument("--json", action="store_true", help="print one JSON object")
    describe.set_defaults(run=run_describe)

    half = sub.add_parser(
        "half",
        help="copy a model file with float16 weights (half the size)",
        description="Writes a copy of a depthkd model file whose float32 weights are stored as "
        "float16: half the bytes, for a model shipped in a repository. It loads back in float32 "
        "wherever a model file is accepted; predictions change by float16 rounding only.",
    )
    half.add_argument("source", help="model file written by depthkd")
    half.add_argument("out", help="where the copy goes (written atomically)")
    half.set_defaults(run=run_half)


def run_list(args: argparse.Namespace) -> int:
    from depthkd.models.zoo import encoder_rows

    rows = [("role", "name", "timm model", "pretrained: true loads"), *encoder_rows()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[3])
    print("(any timm CNN also works as a student; any timm Swin / ViT / ConvNeXt as a teacher)")
    return 0


def run_describe(args: argparse.Namespace) -> int:
    from depthkd.eval.cost import describe_models

    student = validate_options(
        StudentConfig, {"name": args.student, "lg_global": not args.no_lg_global}
    )
    teacher = validate_options(TeacherConfig, {"name": args.teacher})
    for option in ("height", "width", "repeats"):
        if getattr(args, option) < 1:
            raise ConfigError(f"--{option}: must be at least 1 (got {getattr(args, option)})")
    result = describe_models(
        student,
        teacher,
        height=args.height,
        width=args.width,
        max_depth=args.max_depth,
        repeats=args.repeats,
        warmup=args.warmup,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    settings = result["settings"]
    print(
        f"student {settings['student']}, teacher {settings['teacher']} at "
        f"{settings['height']}x{settings['width']}, batch 1, {settings['threads']} threads, "
        f"median of {settings['repeats']}"
    )
    print(f"{'':14} {'params (M)':>11} {'GFLOPs':>9} {'latency (ms)':>13}")
    for name in ("student", "teacher", "ghost_decoder"):
        cost = result[name]
        print(
            f"{name:14} {cost['params'] / 1e6:11.2f} {cost['gflops']:9.2f} "
            f"{cost['latency_ms']:13.1f}"
        )
    s, t = result["student"], result["teacher"]
    print(
        f"teacher/student: {t['gflops'] / s['gflops']:.1f}x GFLOPs, "
        f"{t['params'] / s['params']:.1f}x params, {t['latency_ms'] / s['latency_ms']:.1f}x latency"
    )
    print(f"LG blocks: {100 * result['lg_flops_share']:.1f}% of student FLOPs")
    return 0


def run_half(args: argparse.Namespace) -> int:
    from depthkd.data.shards import sha256_file
    from depthkd.models.serialization import save_half

    out = save_half(args.source, args.out)
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB, sha256 {sha256_file(out)}")
    return 0
