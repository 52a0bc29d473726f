"""`depthkd acclimate | distill | cross-distill | supervised`: the training jobs on Ray Train.

`distill` is the main job. With no arguments it runs the embedded default: bundled synthetic
shards under `$DEPTHKD_HOME`, an embedded Ray, a local MLflow store, teacher acclimation, student
distillation, evaluation and registration, then prints a summary.
"""

from __future__ import annotations

import argparse
import time

from kdplatform.cli.config import add_config_arguments
from kdplatform.config.loader import dump_config, load_config, save_config
from kdplatform.train.stages import STAGES


def add_parser(commands: argparse._SubParsersAction) -> None:
    for job in STAGES.names():
        spec = STAGES.get(job)
        help_text = spec.title
        if spec.needs_teacher:
            help_text += " (acclimates a teacher first when none is given), evaluate, register"
        parser = commands.add_parser(job.replace("_", "-"), help=help_text, description=__doc__)
        add_config_arguments(parser)
        parser.add_argument("--quiet", action="store_true", help="no progress bars")
        parser.set_defaults(run=run, job=job)


def run(args: argparse.Namespace) -> int:
    from kdplatform.eval.metrics import HEADLINE_METRICS
    from kdplatform.train.jobs import prepare_job, run_job, split_metrics

    started = time.perf_counter()
    cfg = load_config(args.config, args.overrides)
    print(f"depthkd {args.command} — job {cfg.name!r}\nresolved config:")
    print("  " + dump_config(cfg).rstrip().replace("\n", "\n  "))
    ctx = prepare_job(cfg, args.job, progress=not args.quiet)
    save_config(cfg, ctx.out_dir / "config.yaml")
    print(
        f"data: {ctx.shards} ({ctx.profile.family}, protocol {ctx.profile.protocol}; "
        f"evaluates on {cfg.data.eval_split}, reports on {cfg.data.test_split})"
    )
    run_job(ctx)
    print(f"\nsummary of job {cfg.name!r} ({time.perf_counter() - started:.0f} s):")
    for stage, result in ctx.results.items():
        reports = {cfg.data.eval_split: split_metrics(result.metrics, cfg.data.eval_split)}
        reports[cfg.data.test_split] = ctx.test_metrics.get(stage, {})
        for split, metrics in reports.items():
            if metrics:
                shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in HEADLINE_METRICS)
                print(f"  {stage:14} {split:5} {ctx.profile.protocol}: {shown}")
    for role, version in ctx.registered.items():
        print(f"  registered {role}: {version}")
    print(f"  mlflow run: {ctx.run.run_id}")
    print(f"  open the UI: mlflow ui --backend-store-uri {ctx.run.tracking_uri}")
    return 0
