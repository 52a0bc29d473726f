"""`depthkd bench all|loader|train|kd|asha|trial-overhead|pseudo-label|pseudo-cache`: benchmarks
whose figures go into closing notes.

* `all`: one suite of the benchmarks below plus S3, latency, ONNX and GPU rows, written to
  `benchmarks/results/<date>-<host>.{json,md}` (`depthkd.bench.suite`).
* `loader`: shard loader vs per-file baseline, plus `data prepare` time.
* `train`: platform overhead, the distill step in a plain PyTorch loop vs through Ray Train.
* `kd`: every KD ablation row against the no-KD student, several seeds, on the test split,
  through the real jobs (table, bar chart, JSON under benchmarks/results).
* `asha`: the same sweep configurations under ASHA and at the full budget, back to back.
* `trial-overhead`: one sweep trial against the same job run alone.
* `pseudo-label`: the Ray Data pseudo-label pass against a plain single-process loop.
* `pseudo-cache`: the student's step with cached pseudo-labels against the teacher online.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from depthkd import atomic
from depthkd.config.files import BENCH_KD_CONFIG, BENCH_SWEEP_CONFIG, DEFAULT_CONFIG
from depthkd.config.schema import default_workers, depthkd_home
from depthkd.errors import ConfigError

ALL_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def _check_counts(args: argparse.Namespace, *options: str, minimum: int = 1) -> None:
    """Refuses any of `options` (argparse names) below `minimum`, naming the flag."""
    for option in options:
        if getattr(args, option) < minimum:
            flag = option.replace("_", "-")
            raise ConfigError(f"--{flag}: must be at least {minimum} (got {getattr(args, option)})")


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
    _add_all_parser(sub)
    _add_train_parser(sub)
    _add_kd_parser(sub)
    _add_sweep_parsers(sub)
    _add_pseudo_label_parser(sub)
    _add_pseudo_cache_parser(sub)


def _add_all_parser(sub: argparse._SubParsersAction) -> None:
    from depthkd.bench.suite import DEFAULT_OUT

    rows = "loader_local, loader_s3, latency, train, onnx, nodes, asha, gpu"
    suite = sub.add_parser(
        "all",
        help="every benchmark in one run: JSON + Markdown result with the machine",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Runs the benchmark rows below one after the other, each comparing a baseline
and a candidate measured side by side in alternating passes, and writes
<out>/<YYYY-MM-DD>-<hostname>.json and .md (a --quick run adds -quick) with the machine (CPU,
cores, RAM, OS, Python, library versions, GPU). One line per row is printed as it finishes
(what the benchmarks print goes to $DEPTHKD_HOME/bench/logs/<row>.log), then the table.

  loader_local  shard loader vs per-file loader on local disk (bench loader), samples/s
  loader_s3     the same two loaders reading from one S3 endpoint: --s3, else a local moto
                server; skipped without either
  latency       student vs teacher, CPU, batch 1, ms/image (models describe)
  train         distill step through Ray Train vs a plain loop (bench train)
  onnx          student ONNX Runtime vs PyTorch eager, CPU (depthkd export)
  nodes         1 worker on 1 node vs 2 workers on 2 Ray nodes of the dev cluster (moto S3,
                tracking server on PostgreSQL); skipped without PostgreSQL or moto
  asha          ASHA vs full budget: the newest <out>/asha-*.json (bench asha --json), or --asha
  gpu           distill step at 352x704, batch 8, bf16: plain, channels_last, torch.compile,
                both (--gpu, CUDA only)

Models: latency, onnx and gpu use the student and teacher of configs/kitti.yaml and nyu.yaml
(the schema defaults), train uses the demo config; --config sets both, --quick uses the demo's.
A full run takes about 8 minutes on 2 cores.""",
    )
    suite.add_argument(
        "--quick", action="store_true", help="small sizes and counts (1-2 minutes on 2 cores)"
    )
    suite.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="result folder (default: benchmarks/results)"
    )
    suite.add_argument("--only", metavar="ROW,ROW", help=f"run only these rows ({rows})")
    suite.add_argument(
        "--s3",
        metavar="URL",
        help="s3://bucket/prefix to benchmark against, with the AWS environment as it is "
        "(AWS_ENDPOINT_URL_S3, credentials); what is uploaded is deleted afterwards",
    )
    suite.add_argument("--asha", action="store_true", help="run bench asha now (~30 min)")
    suite.add_argument(
        "--asha-json", type=Path, help="a bench asha --json result to report (default: the newest)"
    )
    suite.add_argument("--gpu", action="store_true", help="run the GPU row (needs CUDA)")
    suite.add_argument("--config", type=Path, help="experiment YAML giving student and teacher")
    suite.add_argument(
        "--workers", type=int, default=default_workers(), help="loader worker processes"
    )
    suite.add_argument(
        "--threads",
        type=int,
        default=ALL_CORES,
        help="torch threads of the train and gpu rows (default: all cores)",
    )
    suite.set_defaults(run=run_all)


def _add_sweep_parsers(sub: argparse._SubParsersAction) -> None:
    for name, help_text, run in (
        (
            "asha",
            "ASHA vs full budget on the same sweep configurations (trial rounds, best val)",
            run_asha,
        ),
        (
            "trial-overhead",
            "wall time of one sweep trial vs the same job run alone",
            run_trial_overhead,
        ),
    ):
        parser = sub.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "--config",
            type=Path,
            default=BENCH_SWEEP_CONFIG,
            help="sweep YAML (default: configs/sweep_bench.yaml)",
        )
        parser.add_argument(
            "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the sweep"
        )
        parser.add_argument("--tag", help="sweep-name suffix (default: the start time)")
        parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
        parser.set_defaults(run=run)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser(
        "train",
        help="platform overhead: the distill step in plain PyTorch vs through Ray Train",
        description="Times the distillation step (frozen acclimated teacher, the config's "
        "student, its optimizer, one in-memory random batch) in a plain PyTorch loop in this "
        "process and in a one-worker Ray Train TorchTrainer (prepare_model, ray.train.report), "
        "alternating the two --rounds times with the same torch threads. Warm-up steps are not "
        "timed. Prints median samples/s of each and the ratio ray/plain.",
    )
    train.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None,
        help="experiment YAML giving student, teacher, losses and optimizer (default: the demo)",
    )
    train.add_argument("--steps", type=int, default=20, help="timed steps per pass (default 20)")
    train.add_argument("--warmup", type=int, default=3, help="untimed steps per pass (default 3)")
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--height", type=int, default=224)
    train.add_argument("--width", type=int, default=288)
    train.add_argument(
        "--threads",
        type=int,
        default=ALL_CORES,
        help="torch threads on both sides and CPUs of the Ray worker (default: all cores)",
    )
    train.add_argument("--rounds", type=int, default=3, help="alternating passes per side")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    train.set_defaults(run=run_train)


def _add_kd_parser(sub: argparse._SubParsersAction) -> None:
    from depthkd.bench.suite import DEFAULT_OUT

    kd = sub.add_parser(
        "kd",
        help="does KD pay, and which part of it: every KD ablation row against the no-KD "
        "student, several seeds, on the held-out test split",
        description="Takes the teacher model.teacher.checkpoint gives (or trains one for depth "
        "once), then for each seed the same student "
        "without KD, with response KD only, plain feature-MSE KD, attentive KD, attentive + "
        "response KD (fixed copied ghost), pseudo-labels only, attentive + response KD + "
        "pseudo-labels, a fresh trainable ghost, acclimation off, and with the LG global path "
        "off (its own baseline); --rows picks some. Every job runs through the real job path, "
        "named <name>-<tag>-..., tracked in the MLflow store of $DEPTHKD_HOME. Reports the test "
        "split (mean ± std over seeds, ratio and gap to the no-KD row) and val beside it; writes "
        "kd-<date>-<host>.{json,md,png} (table and bar chart) to --out. Job output goes to "
        "<out>/kd-<date>-<host>.log.",
    )
    kd.add_argument(
        "--config",
        type=Path,
        default=BENCH_KD_CONFIG,
        help="experiment YAML (default: configs/bench_kd.yaml)",
    )
    kd.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the config"
    )
    kd.add_argument("--seeds", type=int, default=3, help="seeds per row (seed, seed+1, ...)")
    kd.add_argument(
        "--rows",
        help="comma-separated row keys to run (default: all; each row's no-KD row is added): "
        "no_kd, response, feature_mse, attentive, attentive_response, pseudo, "
        "attentive_response_pseudo, fresh_ghost, no_acclimation, no_kd_local, kd_local",
    )
    kd.add_argument("--tag", help="job-name suffix (default: the start time, so never a resume)")
    kd.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result directory")
    kd.set_defaults(run=run_kd)


def _add_pseudo_label_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "pseudo-label",
        help="the Ray Data pseudo-label pass vs a plain single-process loop, frames/s",
        description="Labels the same synthetic source shards (cached under --work) with the same "
        "teacher file (default: a seeded swin_micro), batch size, frame size and torch threads "
        "through `label_shards` on an embedded Ray of --threads CPUs and through a plain loop "
        "(one Ray task holding all CPUs, so both run in like worker processes), alternating "
        "--rounds times. Both read, decode, resize, predict, encode "
        "and write the output tars. Prints the median frames/s of each, the ratio ray/plain, "
        "the Ray pass's start-up and steady rate, and the nodes its actors ran on.",
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="data folder (default: $DEPTHKD_HOME/bench/pl)"
    )
    parser.add_argument("--frames", type=int, default=384, help="source frames (default 384)")
    parser.add_argument("--per-shard", type=int, default=32, help="frames per shard")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    parser.add_argument("--source-size", type=int, nargs=2, default=(120, 160), metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--threads",
        type=int,
        default=ALL_CORES,
        help="torch threads of the loop, CPUs of the embedded Ray (default: all cores)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating passes per side")
    parser.add_argument("--teacher", help="teacher reference (default: a seeded swin_micro)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.set_defaults(run=run_pseudo_label)


def _add_pseudo_cache_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "pseudo-cache",
        help="the student's step with cached pseudo-labels vs the teacher labelling online",
        description="Times the config's distill step (its student, optimizer, batch size, "
        "unlabeled_ratio and frame size; objective silog + pseudo_silog) on one in-memory batch "
        "twice, alternating --rounds times: with the unlabeled rows' targets read from the "
        "batch (cached, as after `depthkd pseudo-label`) and with the config's teacher "
        "(model.teacher.checkpoint: a file, s3:// URL, registered model or run id) labelling "
        "them inside every step. Prints the median "
        "frames/s of each and the ratio cached/online.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None,
        help="experiment YAML (default: the demo, with its shipped teacher)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the config"
    )
    parser.add_argument("--steps", type=int, default=10, help="timed steps per pass (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per pass (default 2)")
    parser.add_argument(
        "--threads",
        type=int,
        default=ALL_CORES,
        help="torch threads (default: all cores)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating passes per side")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.set_defaults(run=run_pseudo_cache)


def run_pseudo_cache(args: argparse.Namespace) -> int:
    from depthkd.bench.pseudo_cache import run_pseudo_cache_benchmark
    from depthkd.config.loader import load_config

    _check_counts(args, "steps", "threads", "rounds")
    _check_counts(args, "warmup", minimum=0)
    cfg = load_config(args.config, args.overrides)
    result = run_pseudo_cache_benchmark(
        cfg, steps=args.steps, warmup=args.warmup, rounds=args.rounds, threads=args.threads
    )
    height, width = result.size
    print(
        f"distill step, student {result.student}, teacher {result.teacher}, "
        f"{result.labeled_rows} labeled + {result.unlabeled_rows} unlabeled rows at "
        f"{height}x{width}, {result.threads} threads (median of {result.rounds}):\n"
        f"  cached pseudo-labels    {result.cached_frames_per_s:8.1f} frames/s\n"
        f"  teacher online          {result.online_frames_per_s:8.1f} frames/s\n"
        f"  ratio cached/online     {result.ratio:8.2f}x\n"
        f"  final loss: cached {result.cached_final_loss:.5f}, "
        f"online {result.online_final_loss:.5f}"
    )
    if args.json:
        atomic.write_json(args.json, result.to_dict())
    return 0


def run_pseudo_label(args: argparse.Namespace) -> int:
    from depthkd.bench.pseudo_label import run_pseudo_label_benchmark

    _check_counts(args, "frames", "per_shard", "batch_size", "threads", "rounds")
    result = run_pseudo_label_benchmark(
        args.work or depthkd_home() / "bench" / "pl",
        frames=args.frames,
        per_shard=args.per_shard,
        size=tuple(args.size),
        source_size=tuple(args.source_size),
        batch_size=args.batch_size,
        threads=args.threads,
        rounds=args.rounds,
        teacher=args.teacher,
    )
    print(
        f"pseudo-label: {result.frames} frames in {result.shards} shards, "
        f"{result.source_size[0]}x{result.source_size[1]} -> {result.size[0]}x{result.size[1]}, "
        f"batch {result.batch_size}, {result.threads} torch threads, teacher {result.teacher}\n"
        f"median of {result.rounds} alternating rounds, frames/s:  end to end   after 1st shard\n"
        f"  plain loop (a Ray task, nice {result.niceness})   {result.plain_frames_per_s:8.1f}"
        f"   {result.plain_steady_frames_per_s:8.1f}\n"
        f"  Ray Data pass ({result.actors} actor)          {result.ray_frames_per_s:8.1f}"
        f"   {result.ray_steady_frames_per_s:8.1f}\n"
        f"  ratio ray/plain                    {result.ratio:8.2f}   {result.steady_ratio:8.2f}\n"
        f"  Ray pass start-up (first frame): {result.ray_startup_seconds:.1f} s; Ray: "
        f"{result.ray}; OMP_WAIT_POLICY {result.omp_wait_policy}; frames per node: {result.nodes}"
    )
    if args.json:
        atomic.write_json(args.json, result.to_dict())
    return 0


def run_loader(args: argparse.Namespace) -> int:
    from depthkd.bench.loader import run_loader_benchmark

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


def run_all(args: argparse.Namespace) -> int:
    from depthkd import storage
    from depthkd.bench.rowspec import FULL, QUICK, SuiteContext
    from depthkd.bench.suite import run_suite, selected_rows
    from depthkd.cli import EXIT_ERROR
    from depthkd.config.loader import load_config
    from depthkd.config.schema import ModelConfig

    if args.s3 is not None and not (storage.is_remote(args.s3) and storage.split_url(args.s3)[0]):
        raise ConfigError(f"--s3 {args.s3!r}: expected s3://bucket/prefix")
    _check_counts(args, "workers", "threads")
    only = [name.strip() for name in (args.only or "").split(",") if name.strip()]
    specs = selected_rows(only)
    train_cfg = load_config(args.config or DEFAULT_CONFIG, [])
    models = train_cfg.model if args.config or args.quick else ModelConfig()
    ctx = SuiteContext(
        sizes=QUICK if args.quick else FULL,
        quick=args.quick,
        work=depthkd_home() / "bench",
        out=args.out.expanduser().resolve(),
        workers=args.workers,
        threads=args.threads,
        train_cfg=train_cfg,
        models=models,
        s3=args.s3.rstrip("/") if args.s3 else None,
        asha=args.asha,
        asha_json=args.asha_json,
        gpu=args.gpu,
    )
    print(
        f"depthkd bench all: {len(specs)} rows ({'quick' if args.quick else 'full'} sizes), "
        f"logs in {ctx.work / 'logs'}",
        flush=True,
    )
    result, paths = run_suite(ctx, specs, log=lambda line: print(line, flush=True))
    from depthkd.bench.report import markdown

    print("\n" + markdown(result))
    print("written: " + ", ".join(str(p) for p in paths))
    failed = [r["name"] for r in result["rows"] if r["status"] == "failed"]
    if failed:
        print(f"failed rows: {', '.join(failed)} (see their logs)", file=sys.stderr)
        return EXIT_ERROR
    return 0


def run_train(args: argparse.Namespace) -> int:
    from depthkd.bench.train import TrainBenchSettings, run_train_benchmark
    from depthkd.config.loader import load_config

    _check_counts(args, "steps", "batch_size", "height", "width", "threads", "rounds")
    _check_counts(args, "warmup", minimum=0)
    cfg = load_config(args.config, [])
    settings = TrainBenchSettings(
        steps=args.steps,
        warmup=args.warmup,
        batch_size=args.batch_size,
        height=args.height,
        width=args.width,
        threads=args.threads,
        seed=args.seed,
    )
    print(
        f"distill step: student {cfg.model.student.name}, teacher {cfg.model.teacher.name}, "
        f"batch {args.batch_size} at {args.height}x{args.width}, {args.threads} threads, "
        f"{args.warmup} warm-up + {args.steps} timed steps, {args.rounds} rounds",
        flush=True,
    )
    result = run_train_benchmark(cfg, settings, rounds=args.rounds)
    fit = statistics.median(result.ray_fit_seconds)
    print(
        f"train step (median of {result.rounds}):\n"
        f"  plain PyTorch  {result.plain_samples_per_s:8.2f} samples/s\n"
        f"  Ray Train      {result.ray_samples_per_s:8.2f} samples/s "
        f"(1 worker, {result.ray_worker_threads} threads, nice {result.ray_worker_niceness}; "
        f"plain: nice {result.plain_niceness})\n"
        f"  ratio ray/plain {result.ratio:7.3f}\n"
        f"  final loss: plain {result.plain_final_loss:.5f}, ray {result.ray_final_loss:.5f}\n"
        f"  Ray fit wall time per pass, start-up included (median): {fit:.1f} s"
    )
    if args.json:
        atomic.write_json(args.json, result.to_dict())
    return 0


def run_kd(args: argparse.Namespace) -> int:
    from depthkd.bench.kd import markdown, run_kd_benchmark, selected_rows, write_result
    from depthkd.bench.machine import hostname
    from depthkd.config.loader import dump_config, load_config
    from depthkd.console import JobConsole

    cfg = load_config(args.config, args.overrides)
    if args.seeds < 2:
        raise ConfigError("--seeds must be at least 2 (a standard deviation needs two)")
    tag = args.tag or time.strftime("%Y%m%d-%H%M%S")
    stem = f"kd-{time.strftime('%Y-%m-%d')}-{hostname()}"
    seeds = [cfg.seed + i for i in range(args.seeds)]
    rows = selected_rows(args.rows.split(",") if args.rows else None)
    with JobConsole(args.out / f"{stem}.log", bars=False) as console:
        console.line(
            f"depthkd bench kd — config {args.config} (name {cfg.name!r}), tag {tag}, seeds "
            f"{seeds}; test abs_rel per job (val beside it)"
        )
        console.detail("  " + dump_config(cfg).rstrip().replace("\n", "\n  "))
        started = time.perf_counter()
        result = run_kd_benchmark(cfg, seeds=seeds, tag=tag, log=console.line, rows=rows)
        paths = write_result(result, args.out, stem)
        console.line("\n" + markdown(result))
        console.line(
            f"{time.perf_counter() - started:.0f} s; table {paths['md']}, chart {paths['png']}"
        )
    return 0


def _sweep_benchmark(args: argparse.Namespace, benchmark: Callable) -> Any:
    """Runs `benchmark(spec, tag=...)` on the sweep of `args`; writes `--json` if asked."""
    from depthkd.tune.sweep import load_sweep

    tag = args.tag or time.strftime("%Y%m%d-%H%M%S")
    result = benchmark(load_sweep(args.config, args.overrides), tag=tag)
    if args.json:
        atomic.write_json(args.json, result.to_dict())
    return result


def run_asha(args: argparse.Namespace) -> int:
    from depthkd.bench.sweep import run_asha_benchmark

    result = _sweep_benchmark(args, run_asha_benchmark)
    print(f"\nASHA run ({result.configurations} configurations):\n{result.asha_table}")
    print(f"\nfull-budget run (the same configurations):\n{result.full_table}")
    print(
        f"\ntrial rounds: ASHA {result.asha_rounds}, full {result.full_rounds} "
        f"(ratio {result.budget_ratio:.2f}; {result.max_rounds} rounds per full trial)\n"
        f"best {result.metric}: ASHA {result.asha_best:.4f}, full {result.full_best:.4f} "
        f"({100 * result.best_gap:+.1f} %)\n"
        f"wall time: ASHA {result.seconds['asha']:.0f} s, full {result.seconds['full']:.0f} s"
    )
    return 0


def run_trial_overhead(args: argparse.Namespace) -> int:
    from depthkd.bench.sweep import run_overhead_benchmark

    result = _sweep_benchmark(args, run_overhead_benchmark)
    stage = ", ".join(f"{s:.1f}" for s in result.alone_stage_seconds)
    alone = ", ".join(f"{s:.1f}" for s in result.alone_seconds)
    print(
        f"\ntrial {result.trial_seconds:.1f} s; the same stage alone {stage} s: overhead "
        f"{100 * result.overhead:+.1f} %\n"
        f"whole one-trial sweep {result.sweep_seconds:.1f} s; whole job alone {alone} s"
    )
    return 0
