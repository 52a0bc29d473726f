"""Every `depthkd` command the README shows exists as shown: its subcommand answers `--help`,
every `--option` it shows is one of that subcommand's, and every `dotted.key=value` it shows on a
job command is a valid override of the config it names (or of the default one)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from depthkd.cli.main import build_parser
from depthkd.config.files import DEFAULT_CONFIG
from depthkd.config.loader import load_config

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
JOB_COMMANDS = {"teacher", "supervised", "acclimate", "distill", "cross-distill"}
PIPELINES = {"distill.py": "distill", "pseudo_label.py": "pseudo-label", "sweep.py": "sweep"}
OVERRIDE = re.compile(r"^([a-z_]+(?:\.[a-z_0-9]+)+)=(.*)$")


def code_snippets(markdown: str) -> list[str]:
    """The text of fenced code blocks (continuation lines joined) and of inline code spans."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", markdown, flags=re.S)
    outside = re.sub(r"```[a-z]*\n.*?```", "", markdown, flags=re.S)
    inline = [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", outside)]
    return [block.replace("\\\n", " ") for block in fenced] + inline


def shown_commands(markdown: str) -> list[list[str]]:
    """Each `depthkd ...` or `python pipelines/<x>.py ...` command line, as depthkd arguments."""
    commands = []
    for snippet in code_snippets(markdown):
        for line in snippet.splitlines():
            line = line.split("  #")[0].replace("...", "")
            for match in re.finditer(r"(?:^|[\s(=])(depthkd|python pipelines/(\w+\.py))\s", line):
                try:
                    words = shlex.split(line[match.end() :], comments=True)
                except ValueError:
                    words = line[match.end() :].split()
                if match.group(2):
                    words = [PIPELINES[match.group(2)], *words]
                words = [w.strip("[]") for w in words if not set(w) & set("<>|")]
                commands.append(words)
    return commands


def subcommand(parser: argparse.ArgumentParser, words: list[str]) -> tuple[list[str], object]:
    """The subcommand path at the start of `words` and its parser."""
    path = []
    for word in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser = subs[0].choices[word]
        path.append(word)
    return path, parser


def _commands() -> list[list[str]]:
    return [words for words in shown_commands(README.read_text()) if words]


def test_the_readme_shows_the_commands_users_start_with() -> None:
    paths = {" ".join(subcommand(build_parser(), words)[0]) for words in _commands()}
    assert {"distill", "sweep", "data prepare", "promote", "export", "bench kd"} <= paths


@pytest.mark.parametrize("words", _commands(), ids=lambda words: " ".join(words)[:60])
def test_a_shown_command_exists_with_its_options(words: list[str]) -> None:
    path, parser = subcommand(build_parser(), words)
    assert path or words == ["--help"], f"`depthkd {' '.join(words)}`: no such command"
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*path, "--help"])
    assert exit_info.value.code == 0
    known = {s for action in parser._actions for s in action.option_strings}
    shown = {w.split("=")[0] for w in words[len(path) :] if w.startswith("--")}
    assert shown <= known, f"`depthkd {' '.join(words)}`: unknown options {shown - known}"
    if not path or path[0] not in JOB_COMMANDS:
        return
    overrides = [w for w in words[len(path) :] if OVERRIDE.match(w)]
    config = words[words.index("--config") + 1] if "--config" in words else None
    if config and not config.startswith("configs/"):
        return  # a user's own file (`.../best.yaml`): only its overrides' form was checked
    load_config(REPO / config if config else DEFAULT_CONFIG, overrides)


def test_the_collector_finds_commands_in_code_only() -> None:
    text = (
        "installs depthkd with dev extras\n"
        "Run `depthkd distill data.batch_size=4` or `depthkd bench kd [--seeds 3]`\n"
        "```bash\nray job submit -- python pipelines/sweep.py --config \\\n  c.yaml\n```\n"
    )
    assert shown_commands(text) == [
        ["sweep", "--config", "c.yaml"],
        ["distill", "data.batch_size=4"],
        ["bench", "kd", "--seeds", "3"],
    ]
