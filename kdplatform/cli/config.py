"""`depthkd config show`: print the resolved config of a YAML file plus overrides."""

from __future__ import annotations

import argparse
from pathlib import Path

from depthkd.config.files import DEFAULT_CONFIG
from depthkd.config.loader import dump_config, load_config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` and trailing `dotted.key=value` overrides, shared by every pipeline."""
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None,
        help=f"experiment YAML (default: {DEFAULT_CONFIG.relative_to(DEFAULT_CONFIG.parents[1])})",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.batch_size=8"
    )


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("config", help="inspect experiment configs")
    sub = parser.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    show = sub.add_parser("show", help="print the resolved config (file + overrides, validated)")
    add_config_arguments(show)
    show.set_defaults(run=run_show)


def run_show(args: argparse.Namespace) -> int:
    print(dump_config(load_config(args.config, args.overrides)), end="")
    return 0
