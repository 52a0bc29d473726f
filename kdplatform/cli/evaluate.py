"""`depthkd eval-pngs` (saved 16-bit PNG predictions) and `depthkd evaluate` (a checkpoint or
registered model on a shard set), both under a named protocol that every result names."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from depthkd.eval.pngs import evaluate_pngs
from depthkd.eval.protocols import PROTOCOLS, format_table

MAX_SKIPPED_LISTED = 10


def add_parser(commands: argparse._SubParsersAction) -> None:
    protocols = "\n".join(
        f"  {name}: {PROTOCOLS.get(name).description}" for name in PROTOCOLS.names()
    )
    parser = commands.add_parser(
        "eval-pngs",
        help="evaluate uint16 PNG depth predictions against ground truth under a protocol",
        description="Matches every PNG under --pred with the file at the same relative path\n"
        "under --gt. Predictions without a ground-truth file, or whose ground truth has no\n"
        "valid pixel in the crop, are skipped and counted. KITTI predictions may be full\n"
        "size or the 352x1216 KB crop.\n\nprotocols:\n" + protocols,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--protocol", required=True, help=f"one of: {', '.join(PROTOCOLS.names())}")
    parser.add_argument("--pred", type=Path, required=True, help="prediction PNG directory")
    parser.add_argument("--gt", type=Path, required=True, help="ground-truth PNG directory")
    parser.add_argument(
        "--pred-scale", type=float, help="metres = value / scale (default: KITTI 256, NYU 1000)"
    )
    parser.add_argument("--gt-scale", type=float, help="likewise for the ground truth")
    parser.add_argument(
        "--allow-missing",
        action="store_true",
        help="skip and count ground truth without a prediction (default: an error)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object to stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_eval_pngs)
    add_evaluate_parser(commands)


def add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
    from depthkd.cli.config import add_config_arguments

    parser = commands.add_parser(
        "evaluate",
        help="evaluate a checkpoint or registered model on a shard set; write a JSON report",
        description="MODEL is a model file (exported by training), a registered model "
        "(depthkd-student@challenger, models:/...), or an MLflow run id. The shard set and split "
        "come from the config (data.shards, data.test_split; bundled synthetic data if unset).",
    )
    parser.add_argument("--model", required=True, help="model file, name@alias, models:/ or run id")
    parser.add_argument(
        "--protocol",
        help="default: the dataset's (nyu-eigen, kitti-garg-kbcrop); kitti-garg-full and "
        "kitti-eigen predict on the KB crop of full frames and paste it back (BTS)",
    )
    parser.add_argument("--tta", choices=("none", "mean", "edge-blend"), default=None)
    parser.add_argument("--out", type=Path, help="JSON report (default: print only)")
    parser.add_argument("--split", help="shard split to evaluate (default: data.test_split)")
    add_config_arguments(parser)
    parser.set_defaults(run=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from depthkd import atomic
    from depthkd.config.loader import load_config
    from depthkd.eval.protocols import get_protocol
    from depthkd.eval.runner import evaluate_split
    from depthkd.tracking.references import load_model_reference
    from depthkd.train.jobs import resolve_shards
    from depthkd.train.profile import data_profile

    cfg = load_config(args.config, args.overrides)
    shards = resolve_shards(cfg, progress=False)
    protocol = get_protocol(args.protocol or data_profile(cfg, shards).protocol)
    tta = args.tta or cfg.eval.tta
    model = load_model_reference(args.model)
    split = args.split or cfg.data.test_split
    sums = evaluate_split(model, shards, split, cfg.data, protocol, tta=tta)
    report = {
        "model": args.model,
        "shards": str(shards),
        "split": split,
        "protocol": protocol.name,
        "tta": tta,
        "n_images": sums.n_images,
        "n_skipped": sums.n_skipped,
        "metrics": sums.means(),
    }
    print(f"split: {split}")
    print(format_table(protocol.name, report["metrics"], sums.n_images, sums.n_skipped))
    if args.out:
        atomic.write_json(args.out, report)
        print(f"report written to {args.out}")
    return 0


def run_eval_pngs(args: argparse.Namespace) -> int:
    report = evaluate_pngs(
        args.pred,
        args.gt,
        args.protocol,
        pred_scale=args.pred_scale,
        gt_scale=args.gt_scale,
        progress=not args.quiet,  # the bar goes to stderr: --json stdout stays clean
        allow_missing=args.allow_missing,
    )
    if args.json:
        print(json.dumps(report.to_json_dict()))
        return 0
    print(format_table(report.protocol, report.metrics, report.n_images, report.n_skipped))
    for rel, reason in report.skipped[:MAX_SKIPPED_LISTED]:
        print(f"  skipped {rel}: {reason}")
    if len(report.skipped) > MAX_SKIPPED_LISTED:
        print(f"  ... and {len(report.skipped) - MAX_SKIPPED_LISTED} more skipped")
    return 0
