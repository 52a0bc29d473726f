"""`depthkd promote` (the gate in front of `@champion`, or a rollback) and
`depthkd registry history` (every decision about the champion, oldest first)."""

from __future__ import annotations

import argparse

from depthkd.cli.config import add_config_arguments


def add_parser(commands: argparse._SubParsersAction) -> None:
    promote = commands.add_parser(
        "promote",
        help="gate a challenger into <student model>@champion, or roll the champion back",
        description="Evaluates the candidate and the current champion now, on the config's shard "
        "set, split (promotion.split, default data.test_split) and protocol, and moves "
        "@champion only if the candidate wins on promotion.metric by promotion.margin with no "
        "guard metric regressing past its tolerance (and within promotion.budget when set). With "
        "no champion, a first candidate must pass promotion.floor. Every decision is recorded: "
        "tags on the version and a run in the depthkd-promotions experiment. "
        "--version N --reason TEXT rolls the champion back to an earlier version instead.",
    )
    promote.add_argument(
        "--candidate",
        default="challenger",
        help="alias or version number to gate (default: challenger)",
    )
    promote.add_argument("--dry-run", action="store_true", help="print the decision only")
    promote.add_argument("--version", type=int, help="roll the champion back to this version")
    promote.add_argument("--reason", help="why (required with --version)")
    add_config_arguments(promote)
    promote.set_defaults(run=run_promote)

    registry = commands.add_parser("registry", help="the model registry's decisions")
    sub = registry.add_subparsers(dest="registry_command", required=True, metavar="COMMAND")
    history = sub.add_parser("history", help="the champion alias timeline with reasons")
    history.add_argument("--model", help="registered model (default: tracking.student_model)")
    add_config_arguments(history)
    history.set_defaults(run=run_history)


def run_promote(args: argparse.Namespace) -> int:
    from depthkd.config.loader import load_config
    from depthkd.errors import ConfigError
    from depthkd.promotion.gate import rollback, run_gate

    cfg = load_config(args.config, args.overrides)
    if args.version is not None:
        if args.dry_run:
            raise ConfigError("--dry-run applies to the gate, not to a rollback (--version)")
        rollback(cfg, args.version, args.reason or "")
        return 0
    if args.reason:
        raise ConfigError("--reason goes with --version N (a rollback); the gate states its own")
    outcome = run_gate(cfg, candidate=args.candidate, dry_run=args.dry_run)
    print(outcome.decision.table())
    print(f"gate done in {outcome.seconds:.1f} s")
    return 0


def run_history(args: argparse.Namespace) -> int:
    from depthkd.config.loader import load_config
    from depthkd.tracking.promotion import decision_history

    name = args.model or load_config(args.config, args.overrides).tracking.student_model
    rows = decision_history(name)
    if not rows:
        print(f"{name}: no promotion decisions recorded")
        return 0
    print(f"{name}: {len(rows)} decision(s), oldest first")
    print(f"{'time':20} {'decision':12} {'version':>7} {'champion':>16}  reason")
    for row in rows:
        move = f"{row.get('previous_champion', '?')} -> v{row.get('champion', '?')}"
        if row.get("champion") == "none":
            move = "none"
        print(
            f"{row.get('time', '?'):20} {row.get('decision', '?'):12} "
            f"{'v' + row.get('challenger', '?'):>7} {move:>16}  {row.get('reason', '')}"
        )
    return 0
