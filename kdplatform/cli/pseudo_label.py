"""`depthkd pseudo-label`: a frozen teacher labels unlabeled RGB shards on Ray Data
(`depthkd.pseudolabel`), and the pass is tracked as an MLflow run with its output as a dataset.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from depthkd.errors import ConfigError

if TYPE_CHECKING:
    from depthkd.console import JobConsole
    from depthkd.pseudolabel import PseudoLabelReport


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "pseudo-label",
        help="label unlabeled RGB shards with a frozen teacher (Ray Data), resumable",
        description="Runs the teacher REF over every frame of split --split of the shard set "
        "--shards (local or s3://) in a Ray Data actor pool and writes a shard set to --out: "
        "per frame the resized rgb.png, pseudo.png (uint16 metres x depth_scale, 0 = invalid), "
        "confidence.png for teachers with a confidence map, and meta.json; manifest.json (last) "
        "records the teacher (sha256), the source (manifest sha256) and the size. One output "
        "shard per source shard: rerunning after an interruption writes only the missing "
        "shards; a complete output is a no-op; another teacher, source or size is refused "
        "unless --force. Uses the Ray this process is connected to (RAY_ADDRESS, a `ray start` "
        "cluster) or starts one. The pass is logged as an MLflow run (MLFLOW_TRACKING_URI or "
        "the local store) with the output as its dataset input.",
    )
    parser.add_argument(
        "--teacher",
        required=True,
        metavar="REF",
        help="model file (local or s3://), name@alias, models:/... or run id; an acclimated "
        "teacher labels with its own head",
    )
    parser.add_argument(
        "--shards", required=True, metavar="LOCATION", help="source shard dir or s3:// prefix"
    )
    parser.add_argument("--split", required=True, help="source split; also the output's split")
    parser.add_argument("--out", required=True, help="output shard dir (local)")
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="resize frames to H x W before labelling (default: the teacher file's input_size, "
        "else the frames' own size when they all share it)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="frames per forward pass")
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="labelling actors (default: one per GPU, else one per Ray node)",
    )
    parser.add_argument(
        "--force", action="store_true", help="delete a different earlier pass in --out first"
    )
    parser.add_argument(
        "--experiment",
        default=None,
        help="MLflow experiment of the pass's run (default: depthkd-pseudo-labels)",
    )
    parser.add_argument("--no-tracking", action="store_true", help="log no MLflow run")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", type=Path, help="also write the report to this JSON file")
    parser.set_defaults(run=run_pseudo_label)


def run_pseudo_label(args: argparse.Namespace) -> int:
    from depthkd import atomic
    from depthkd.console import JobConsole
    from depthkd.pseudolabel import label_shards
    from depthkd.storage import parse_location

    if "://" in args.out:
        raise ConfigError(
            f"--out {args.out}: pseudo-labels are written locally",
            hint="write them to a folder, then `depthkd data upload DIR s3://...`",
        )
    try:
        source = parse_location(args.shards)
    except ValueError as exc:
        raise ConfigError(f"--shards {args.shards!r}: {exc}") from None
    out = Path(args.out).expanduser().resolve()
    with JobConsole(out.parent / f"{out.name}.pseudo-label.log", bars=not args.quiet) as console:
        report = label_shards(
            args.teacher,
            source,
            args.split,
            out,
            size=tuple(args.size) if args.size else None,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            force=args.force,
            progress=not args.quiet,
            stream=console.stream,
            log=lambda text: _event(console, text),
        )
        if not report.up_to_date:
            console.line(
                f"{report.frames} frames labelled in {report.seconds:.1f} s "
                f"({report.frames_per_s:.1f} frames/s); shards: {report.shards_written} "
                f"written, {report.shards_skipped} kept; {out} (fingerprint {report.fingerprint})"
            )
        if not args.no_tracking and not report.up_to_date:
            run_id = _track(report, args.experiment)
            console.line(f"MLflow run {run_id}")
    if args.json:
        atomic.write_json(args.json, report.to_dict())
    return 0


def _event(console: JobConsole, text: str) -> None:
    """An event line on the console, above the pass's bar, and in the log."""
    from tqdm import tqdm

    tqdm.write(text, file=console.stream)
    console.detail(text)


def _track(report: PseudoLabelReport, experiment: str | None) -> str:
    from depthkd.tracking.datasets import PSEUDO_LABEL_EXPERIMENT, log_pseudo_label_run

    return log_pseudo_label_run(
        report.out,
        params={
            "split": report.split,
            "size": f"{report.size[0]}x{report.size[1]}",
            "batch_size": report.batch_size,
            "actors": report.actors,
            "threads": report.threads,
            "source": report.source["location"],
            "source_sha256": report.source["sha256"],
            "fingerprint": report.fingerprint,
        },
        metrics={
            "frames": report.frames,
            "total_frames": report.total_frames,
            "frames_per_s": report.frames_per_s,
            "seconds": report.seconds,
            "shards_written": report.shards_written,
            "shards_skipped": report.shards_skipped,
            "nodes": len(report.nodes),
        },
        teacher=report.teacher,
        experiment=experiment or PSEUDO_LABEL_EXPERIMENT,
    )
