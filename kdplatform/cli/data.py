"""`depthkd data synth|split|prepare|upload|verify`: raw data to verified WebDataset shards."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from depthkd.config.loader import validate_options
from depthkd.config.schema import PrepareConfig, SynthConfig, default_workers
from depthkd.data.constants import KITTI_FOCAL
from depthkd.data.shards import prepare_shards, upload_shards, verify_shards
from depthkd.data.sources import DATASETS, build_source
from depthkd.data.sources.synthetic import write_synthetic
from depthkd.data.splitting import GROUP_BY, shared_groups, split_by_group, write_split
from depthkd.errors import DataError
from depthkd.storage import Location, is_remote, parse_location


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("data", help="generate, prepare and verify datasets")
    sub = parser.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    synth = sub.add_parser(
        "synth",
        help="write a procedural RGB-D dataset in the KITTI or NYU raw layout",
        description="Procedural scenes with real depth cues (ground plane, objects at known "
        "distances, occlusion, texture scale), written like the real dataset: images, uint16 "
        "depth PNGs and split files at OUT/splits/{train,val,test}.txt. Deterministic for a seed.",
    )
    synth.add_argument("--layout", choices=["kitti", "nyu"], required=True)
    synth.add_argument("--out", type=Path, required=True, help="output directory")
    synth.add_argument(
        "--n", type=int, default=200, help="frames, train + val + test (default 200)"
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--height", type=int, help="frame height (default: native size)")
    synth.add_argument("--width", type=int, help="frame width (default: native size)")
    synth.add_argument("--test-fraction", type=float, default=0.2)
    synth.add_argument("--val-fraction", type=float, default=0.1)
    synth.add_argument(
        "--unlabeled-n",
        type=int,
        default=0,
        help="extra RGB-only frames listed in OUT/splits/unlabeled.txt (GT None; their depth "
        "is never written), in drives/rooms of their own (default 0)",
    )
    synth.add_argument("--workers", type=int, default=default_workers())
    synth.set_defaults(run=run_synth)

    split = sub.add_parser(
        "split",
        help="carve a val list out of a train list by whole NYU scenes or KITTI drives",
        description="Frames of one KITTI drive or NYU scene are near-duplicates, so a frame-level "
        "split leaks. This moves whole groups (seeded shuffle, closest to the requested share "
        "of frames) into OUT/val.txt and the rest into OUT/train.txt, lines copied verbatim.",
    )
    split.add_argument("--split-file", type=Path, required=True, help="train list to carve")
    split.add_argument(
        "--val-fraction", type=float, default=0.1, help="share of frames in val (default 0.1)"
    )
    split.add_argument(
        "--group-by", choices=GROUP_BY, required=True, help="scene (NYU) or drive (KITTI)"
    )
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--out", type=Path, required=True, help="folder of train.txt and val.txt")
    split.set_defaults(run=run_split)

    prepare = sub.add_parser(
        "prepare",
        help="write a raw split into WebDataset shards + manifest.json",
        description="Reads a raw split, checks every sample (readable images, uint16 depth, "
        "matching sizes) and writes OUT/SPLIT-%%06d.tar plus OUT/manifest.json, last and "
        "atomically. Re-running over a complete output is a no-op. The datasets images, video "
        "and kitti-raw are RGB only: their samples have no depth.png (meta has_gt false), for "
        "distillation from a teacher's predictions.",
    )
    prepare.add_argument("--dataset", required=True, choices=DATASETS.names())
    prepare.add_argument(
        "--root",
        type=Path,
        required=True,
        help="raw root (.mat for nyu-mat); images/video: a folder (recursive), one file or a "
        "quoted glob such as 'photos/**/*.jpg'; kitti-raw: the folder of the date folders",
    )
    prepare.add_argument(
        "--split-file",
        type=Path,
        help="split list (splits.mat for nyu-mat); kitti-raw: optional list whose first column "
        "is the rgb path, or a monodepth2 list (<date>/<drive>_sync <frame> l|r)",
    )
    prepare.add_argument("--split", required=True, help="shard split name, e.g. train")
    prepare.add_argument("--out", type=Path, required=True, help="shard directory")
    prepare.add_argument("--gt-root", type=Path, help="KITTI annotated depth root")
    prepare.add_argument("--shard-size", type=int, help="samples per shard (default 1000)")
    prepare.add_argument("--workers", type=int, help="encoding processes (default: cores)")
    prepare.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        help="raise (default) stops at the first bad sample; skip records it in the manifest",
    )
    prepare.add_argument("--force", action="store_true", default=None, help="rebuild the split")
    prepare.add_argument("--depth-scale", type=float, help="folder: metres = value / scale")
    prepare.add_argument("--invalid-value", type=int, help="folder: extra invalid depth value")
    prepare.add_argument(
        "--focal",
        type=float,
        help="folder, images, video, kitti-raw: focal length in pixels (kitti-raw default: "
        f"the date's calib_cam_to_cam.txt, else {KITTI_FOCAL})",
    )
    prepare.add_argument(
        "--every",
        type=int,
        metavar="N",
        help="video: keep frames 0, N, 2N, ... of each video (default 10); frames are stored "
        "as JPEG q95 4:4:4",
    )
    prepare.add_argument(
        "--right-camera",
        action="store_true",
        default=None,
        help="kitti-raw: also the right colour camera (image_03) when scanning --root",
    )
    prepare.add_argument("--subset", choices=["train", "test"], help="nyu-mat: index list")
    prepare.add_argument("--depth-field", choices=["rawDepths", "depths"], help="nyu-mat depth")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(run=run_prepare)

    upload = sub.add_parser(
        "upload",
        help="copy a prepared shard dir to s3:// (what a cluster's nodes can all read)",
        description="Copies every shard listed in manifest.json, then the manifest itself, so a "
        "reader never sees an incomplete set. Endpoint and credentials come from the AWS "
        "environment (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ... or a profile). Check the copy "
        "with `depthkd data verify s3://...`.",
    )
    upload.add_argument("dir", type=Path, help="prepared shard directory")
    upload.add_argument("url", type=_s3_url, help="target prefix, s3://bucket/prefix")
    upload.add_argument("--quiet", action="store_true", help="no progress bar")
    upload.set_defaults(run=run_upload)

    verify = sub.add_parser(
        "verify",
        help="check every shard against manifest.json (sha256, counts, decoding)",
        description="Exits non-zero when any shard is missing, changed or undecodable. Takes a "
        "local directory or an s3:// prefix (its shards are downloaded one at a time).",
    )
    verify.add_argument("dir", type=_location, help="shard directory or s3://bucket/prefix")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.set_defaults(run=run_verify)


def run_synth(args: argparse.Namespace) -> int:
    cfg = validate_options(
        SynthConfig,
        {
            "layout": args.layout,
            "n": args.n,
            "seed": args.seed,
            "height": args.height,
            "width": args.width,
            "test_fraction": args.test_fraction,
            "val_fraction": args.val_fraction,
            "unlabeled_n": args.unlabeled_n,
        },
    )
    summary = write_synthetic(
        cfg.layout,
        args.out,
        cfg.n,
        cfg.seed,
        test_fraction=cfg.test_fraction,
        val_fraction=cfg.val_fraction,
        height=cfg.height,
        width=cfg.width,
        unlabeled_n=cfg.unlabeled_n,
        workers=args.workers,
    )
    print(
        f"wrote {summary.n_train} train + {summary.n_val} val + {summary.n_test} test "
        f"{summary.layout}-like frames to {summary.out}\n"
        f"  splits: {summary.train_split}, {summary.val_split}, {summary.test_split}\n"
        f"  prepare with: depthkd data prepare --dataset {summary.layout} --root {summary.root}"
        + (f" --gt-root {summary.gt_root}" if summary.gt_root else "")
        + f" --split-file {summary.train_split} --split train --out SHARD_DIR"
        + (
            f"\n  unlabeled: {summary.n_unlabeled} RGB-only frames in {summary.unlabeled_split}"
            if summary.unlabeled_split
            else ""
        )
    )
    return 0


def run_split(args: argparse.Namespace) -> int:
    result = split_by_group(
        args.split_file, val_fraction=args.val_fraction, group_by=args.group_by, seed=args.seed
    )
    train_file, val_file = write_split(result, args.out)
    total = len(result.train) + len(result.val)
    unit = f"{args.group_by}s"
    for name, lines, groups, path in (
        ("train", result.train, result.train_groups, train_file),
        ("val", result.val, result.val_groups, val_file),
    ):
        print(
            f"{name}: {len(lines)} frames ({len(lines) / total:.1%}) in {len(groups)} {unit} "
            f"→ {path}"
        )
    # Read back from the written files: the check covers what a later prepare will read.
    shared = shared_groups(train_file, val_file, args.group_by)
    print(f"overlap: {len(shared)} {unit} in both train and val")
    if shared:
        raise DataError(f"{train_file} and {val_file} share {unit}: {', '.join(sorted(shared))}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    options = {k: v for k, v in vars(args).items() if k in PrepareConfig.model_fields}
    cfg = validate_options(PrepareConfig, options)
    report = prepare_shards(cfg, build_source(cfg), progress=not args.quiet)
    if report.up_to_date:
        print(f"split {cfg.split!r} in {report.out} is up to date ({report.num_samples} samples)")
        return 0
    rate = report.num_samples / report.seconds if report.seconds else 0.0
    print(
        f"prepared split {cfg.split!r}: {report.num_samples} samples in {report.num_shards} "
        f"shard(s) → {report.out} ({report.seconds:.1f} s, {rate:.0f} samples/s)"
    )
    if report.skipped:
        print(f"skipped {len(report.skipped)} sample(s) (reasons in manifest.json):")
        for item in report.skipped[:10]:
            print(f"  {item['where']}: {item['reason']}")
    return 0


def _location(value: str) -> Location:
    """argparse type: a local path or an s3:// URL, with parse_location's message on errors."""
    try:
        return parse_location(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _s3_url(value: str) -> str:
    location = _location(value)
    if not is_remote(location):
        raise argparse.ArgumentTypeError(f"{value!r} is not an s3://bucket/prefix URL")
    return str(location)  # a URL is kept as the string it is


def run_upload(args: argparse.Namespace) -> int:
    copied = upload_shards(args.dir, args.url, progress=not args.quiet)
    print(f"uploaded {copied} file(s) from {args.dir.resolve()} → {args.url}")
    print(f"check it with: depthkd data verify {args.url}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    report = verify_shards(args.dir, progress=not args.quiet)
    if args.json:
        print(
            json.dumps(
                {
                    "dir": str(report.out),
                    "checked": report.checked,
                    "problems": report.problems,
                    "ok": report.ok,
                },
                indent=2,
            )
        )
    else:
        for split, n in sorted(report.checked.items()):
            print(f"{split}: {n} samples decoded")
        for problem in report.problems:
            print(f"PROBLEM {problem}")
        print("OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)")
    return 0 if report.ok else 1
