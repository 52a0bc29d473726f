"""`depthkd eval-pngs`: evaluate a directory of 16-bit PNG depth predictions under a named
protocol, printing a table (or one JSON object) that names the protocol."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kdplatform.eval.pngs import evaluate_pngs
from kdplatform.eval.protocols import PROTOCOLS, format_table

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
