"""`depthkd teacher | supervised | acclimate | distill | cross-distill`: the training jobs on Ray
Train.

`distill` is the main job. With no arguments it runs the embedded default: bundled synthetic
shards under `$DEPTHKD_HOME`, an embedded Ray, a local MLflow store; depth training of the teacher,
the student alone (the no-KD baseline and the ghost decoder's source), teacher acclimation,
student distillation, evaluation on test and registration, then a summary with the KD gain,
latencies and a preview picture.

The console shows a progress bar per stage and one line per evaluation or event; the resolved
config and all driver, worker, Ray and MLflow output go to `$DEPTHKD_HOME/runs/<name>/job.log`
(`depthkd.console`). `--verbose` shows that output on the console too, `--quiet` drops the bars.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from depthkd.cli.config import add_config_arguments
from depthkd.config.loader import dump_config, load_config, save_config
from depthkd.models.kinds import ModelKind
from depthkd.train.stages import STAGES

if TYPE_CHECKING:
    from depthkd.console import JobConsole
    from depthkd.train.job_context import JobContext


def add_parser(commands: argparse._SubParsersAction) -> None:
    for job in STAGES.names():
        spec = STAGES.get(job)
        help_text = spec.title
        if spec.needs_teacher:
            help_text += (
                " (without distill.teacher: trains and acclimates a teacher first), evaluate, "
                "register"
            )
        parser = commands.add_parser(job.replace("_", "-"), help=help_text, description=__doc__)
        add_config_arguments(parser)
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
        parser.add_argument(
            "--verbose",
            action="store_true",
            help="also show the resolved config and all worker, Ray and MLflow output on the "
            "console, no bars (it always goes to the job's job.log)",
        )
        parser.set_defaults(run=run, job=job)


def run(args: argparse.Namespace) -> int:
    from depthkd.console import LOG_NAME, JobConsole
    from depthkd.train.jobs import prepare_job

    started = time.perf_counter()
    cfg = load_config(args.config, args.overrides)
    print(f"depthkd {args.command} — job {cfg.name!r}")
    ctx = prepare_job(cfg, args.job, progress=not args.quiet)
    save_config(cfg, ctx.out_dir / "config.yaml")
    verbose = getattr(args, "verbose", False)
    with JobConsole(ctx.out_dir / LOG_NAME, bars=not args.quiet, verbose=verbose) as console:
        console.detail("resolved config:\n  " + dump_config(cfg).rstrip().replace("\n", "\n  "))
        console.line(f"config: {ctx.out_dir / 'config.yaml'}")
        _run(ctx, console, started)
    return 0


def _run(ctx: JobContext, console: JobConsole, started: float) -> None:
    from depthkd.metric_names import HEADLINE_METRICS
    from depthkd.tracking.links import run_page_lines
    from depthkd.train.jobs import run_job
    from depthkd.train.reports import split_metrics

    cfg, say = ctx.cfg, console.line  # every line to the console and the log
    say(
        f"data: {ctx.shards} ({ctx.profile.family}, protocol {ctx.profile.protocol}; "
        f"evaluates on {cfg.data.eval_split}, reports on {cfg.data.test_split})"
    )
    run_job(ctx, log=console.line, progress=console)
    say(f"\nsummary of job {cfg.name!r} ({time.perf_counter() - started:.0f} s):")
    val, test = cfg.data.eval_split, cfg.data.test_split
    shown_stages = [s for s in ctx.test_metrics if s not in ctx.results] + list(ctx.results)
    for stage in shown_stages:
        result = ctx.results.get(stage)
        chosen = split_metrics(result.metrics, val).get("abs_rel") if result else None
        reported = ctx.test_metrics.get(stage, {})
        stage = stage if result else f"{stage}*"
        shown = ", ".join(f"{k} {reported[k]:.4f}" for k in HEADLINE_METRICS if k in reported)
        say(
            f"  {stage:11} {val} abs_rel {chosen:.4f} | {test} ({ctx.profile.protocol}): "
            f"{shown or 'no test split'}"
            if chosen is not None
            else f"  {stage:11} {test} ({ctx.profile.protocol}): {shown or 'no test split'}"
        )
    if any(s not in ctx.results for s in ctx.test_metrics):
        say("  (* given by the config, not trained by this job)")
    if ctx.kd_gain is not None:
        base, kd = ctx.test_metrics["supervised"]["abs_rel"], ctx.test_metrics["distill"]["abs_rel"]
        say(
            f"  KD gain on {test}: abs_rel {base:.4f} without KD → {kd:.4f} distilled "
            f"(abs_rel {-100 * ctx.kd_gain:+.1f} %)"
        )
        teacher = ctx.teacher_metrics  # not None where gap_closed is not
        if ctx.gap_closed is not None and teacher is not None:
            say(
                f"  gap to the teacher ({teacher['abs_rel']:.4f}) closed: "
                f"{100 * ctx.gap_closed:.0f} % (no-KD − distilled) / (no-KD − teacher), {test}"
            )
    elif {"supervised", "distill"} <= set(ctx.test_metrics):
        say("  KD gain: not comparable (supervised and distill differ in steps, optim or loss)")
    models = _final_models(ctx)
    if models:
        say("  " + _latency_line(models, ctx))
        say(f"  preview: {_preview(models, ctx)}")
    for kind, version in ctx.registered.items():
        say(f"  registered {kind}: {version}")
    assert ctx.run is not None  # run_job opened the job's run
    say(f"  mlflow run {ctx.run.run_id}; see it in the UI:")
    for text in run_page_lines(ctx.run):
        say(f"    {text}")


def _final_models(ctx: JobContext) -> dict[str, Path]:
    """The job's last teacher (given or trained) and its final student (model files)."""
    given = ctx.inputs.get(ModelKind.ACCLIMATED_TEACHER) or ctx.inputs.get(ModelKind.TEACHER)
    found: dict[str, Path] = {"teacher": given} if given else {}
    for stage in ctx.stages:
        found |= ctx.results[stage].exports if stage in ctx.results else {}
    return {role: found[role] for role in ("teacher", "student") if role in found}


def _latency_line(models: dict[str, Path], ctx: JobContext) -> str:
    """Median CPU latency at batch 1 and the eval frame size, the models taking turns."""
    from depthkd.eval.cost import median_latencies_ms
    from depthkd.eval.preview import first_frames
    from depthkd.eval.runner import depth_network
    from depthkd.models.serialization import load_model

    frame = first_frames(ctx.shards, _shown_split(ctx), ctx.cfg.data, 1)["image"]
    networks = {role: depth_network(load_model(path)) for role, path in models.items()}
    runs = {role: (lambda f=f: f(frame)) for role, f in networks.items()}
    latency = median_latencies_ms(runs, repeats=10, warmup=2)
    height, width = frame.shape[-2:]
    shown = ", ".join(f"{role} {ms:.1f} ms" for role, ms in latency.items())
    return f"latency (CPU, batch 1, {_shown_split(ctx)} frame {height}×{width}): {shown}"


def _preview(models: dict[str, Path], ctx: JobContext) -> Path:
    from depthkd.eval.preview import first_frames, write_job_preview
    from depthkd.eval.runner import depth_network
    from depthkd.models.serialization import load_model

    cfg, split = ctx.cfg, _shown_split(ctx)
    return write_job_preview(
        ctx.out_dir / "preview.png",
        first_frames(ctx.shards, split, cfg.data, 3),
        {role: depth_network(load_model(path)) for role, path in models.items()},
        max_depth=ctx.profile.max_depth,
        title=f"job {cfg.name}: {split} frames ({ctx.profile.family}, {ctx.profile.protocol})",
    )


def _shown_split(ctx: JobContext) -> str:
    """The split the summary's pictures and timings use: test, else val (no test split)."""
    return ctx.cfg.data.test_split if ctx.has_test_split else ctx.cfg.data.eval_split
