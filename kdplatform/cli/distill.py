"""`depthkd distill`: the main job. In this version it runs the data stage of the embedded default.

With no arguments it generates the bundled synthetic dataset under `$DEPTHKD_HOME`, prepares and
verifies its shards, records the resolved config, and streams one training epoch and one evaluation
pass through the DDP-safe loader, printing throughput. Teacher acclimation and distillation on Ray
Train join this command in a later version.
"""

from __future__ import annotations

import argparse
import time

from kdplatform.cli.config import add_config_arguments
from kdplatform.config.loader import dump_config, load_config, save_config
from kdplatform.config.schema import depthkd_home
from kdplatform.data.bundled import ensure_shards
from kdplatform.data.loader import eval_loader, train_loader
from kdplatform.data.shards import split_entry


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "distill",
        help="run the main job (data stage: synth → prepare → verify → stream)",
        description=__doc__,
    )
    add_config_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    cfg = load_config(args.config, args.overrides)
    home = depthkd_home()
    run_dir = home / "runs" / cfg.name
    print(f"depthkd distill — run {cfg.name!r}, home {home}\nresolved config:")
    print("  " + dump_config(cfg).rstrip().replace("\n", "\n  "))
    save_config(cfg, run_dir / "config.yaml")

    print("[1/3] data: generate (if needed), prepare and verify shards")
    shards = ensure_shards(cfg.data, home, progress=not args.quiet)
    counts = {
        s: split_entry(shards, s)["num_samples"]
        for s in (cfg.data.train_split, cfg.data.eval_split)
    }
    print(f"  shards: {shards} ({', '.join(f'{k}: {v}' for k, v in counts.items())} samples)")

    print(f"[2/3] train stream: {cfg.data.steps_per_epoch} batches of {cfg.data.batch_size}")
    tick = time.perf_counter()
    batches = sum(1 for _ in train_loader(shards, cfg.data.train_split, cfg.data, seed=cfg.seed))
    rate = batches * cfg.data.batch_size / (time.perf_counter() - tick)
    print(f"  {batches} batches, {rate:.0f} samples/s")

    print("[3/3] eval stream: every sample once")
    seen = sum(len(b["key"]) for b in eval_loader(shards, cfg.data.eval_split, cfg.data))
    print(f"  {seen} eval samples")
    print(
        f"done in {time.perf_counter() - started:.1f} s; config recorded in "
        f"{run_dir / 'config.yaml'}\n(training: teacher acclimation and distillation arrive "
        "with the Ray Train pipeline)"
    )
    return 0
