"""`depthkd sweep --config configs/sweep_demo.yaml [key=value ...]`: a Ray Tune sweep of
distillation settings that selects on val (see `tune/sweep.py` and docs/sweeps.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from depthkd.cli import EXIT_INTERRUPTED
from depthkd.config.files import SWEEP_DEMO_CONFIG


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "sweep",
        help="tune distillation settings with Ray Tune (ASHA, Optuna); resumable",
        description=__doc__,
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=SWEEP_DEMO_CONFIG if SWEEP_DEMO_CONFIG.is_file() else None,
        help="sweep YAML (default: configs/sweep_demo.yaml)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. num_samples=4"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from depthkd.tune.sweep import load_sweep, run_sweep

    if args.config is None:
        from depthkd.errors import ConfigError

        raise ConfigError(
            "no sweep YAML given", hint="depthkd sweep --config configs/sweep_demo.yaml"
        )
    outcome = run_sweep(load_sweep(args.config, args.overrides), progress=not args.quiet)
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    if outcome.registered:
        print(f"  registered: {outcome.registered}")
    if outcome.promotion:
        print(f"  promotion gate: {outcome.promotion}")
    if outcome.best_config:
        print(
            f"  best config: {outcome.best_config} (depthkd distill --config {outcome.best_config})"
        )
    print(f"  open the UI: mlflow ui --backend-store-uri {_store_hint()}")
    return 0


def _store_hint() -> str:
    from depthkd.tracking.store import tracking_uri

    return tracking_uri()
