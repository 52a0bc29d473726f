"""`depthkd` entry point: builds the argument parser from the subcommand modules and is the one
place that turns a `DepthKDError` into `error: ...` (plus a hint) and a non-zero exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from depthkd import __version__
from depthkd.cli import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    bench,
    config,
    data,
    deploy,
    evaluate,
    models,
    promote,
    pseudo_label,
    sweep,
    tracking,
    train,
)
from depthkd.errors import DepthKDError


def build_parser() -> argparse.ArgumentParser:
    """The full `depthkd` parser; each subcommand module adds its own parser."""
    parser = argparse.ArgumentParser(
        prog="depthkd",
        description="Distil transformer depth estimators into fast CNN students.",
    )
    parser.add_argument("--version", action="version", version=f"depthkd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (
        data,
        train,
        sweep,
        promote,
        deploy,
        config,
        bench,
        evaluate,
        models,
        tracking,
        pseudo_label,
    ):
        module.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one `depthkd` command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except DepthKDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
