"""`depthkd bench loader`: shard loader vs per-file baseline, plus `data prepare` time."""

from __future__ import annotations

import argparse
from pathlib import Path

from kdplatform import atomic
from kdplatform.config.schema import default_workers, depthkd_home


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="benchmarks whose figures go into closing notes")
    sub = parser.add_subparsers(dest="bench_command", required=True, metavar="COMMAND")
    loader = sub.add_parser(
        "loader",
        help="shard loader vs per-file PIL loader on 640x480 synthetic NYU-like data",
        description="Generates N synthetic NYU-like frames (cached under --work), times "
        "`data prepare` on them, then times both loaders alternately with the same decode, "
        "augmentation, batch size and worker count. Prints samples/s of each and the ratio.",
    )
    loader.add_argument(
        "--work",
        type=Path,
        default=None,
        help="data folder (default: $DEPTHKD_HOME/bench/loader-N)",
    )
    loader.add_argument("--n", type=int, default=1000, help="frames (default 1000)")
    loader.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="processes for both loaders and for prepare",
    )
    loader.add_argument("--batch-size", type=int, default=8)
    loader.add_argument("--batches", type=int, default=40, help="timed batches per pass")
    loader.add_argument("--rounds", type=int, default=3, help="alternating passes per loader")
    loader.add_argument(
        "--cold", action="store_true", help="drop the page cache of all files before each pass"
    )
    loader.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    loader.set_defaults(run=run_loader)


def run_loader(args: argparse.Namespace) -> int:
    from kdplatform.bench.loader import run_loader_benchmark

    work = args.work or depthkd_home() / "bench" / f"loader-{args.n}"
    result = run_loader_benchmark(
        work,
        n=args.n,
        workers=args.workers,
        batch_size=args.batch_size,
        batches=args.batches,
        rounds=args.rounds,
        cold=args.cold,
    )
    print(
        f"data prepare: {result.n_samples} samples of {result.height}x{result.width} in "
        f"{result.prepare_seconds:.1f} s ({result.prepare_samples_per_s:.0f} samples/s, "
        f"{result.workers} workers)\n"
        f"loader ({'cold' if result.cold_cache else 'warm'} cache, {result.workers} workers, "
        f"batch {result.batch_size}, median of {result.rounds}):\n"
        f"  per-file baseline {result.baseline_samples_per_s:7.1f} samples/s\n"
        f"  shard loader      {result.shards_samples_per_s:7.1f} samples/s\n"
        f"  ratio             {result.ratio:7.2f}x"
    )
    if args.json:
        atomic.write_json(args.json, result.to_dict())
    return 0
