"""Readers for the definitions under infra/: YAML documents, Dockerfile instructions,
`.dockerignore` matching, job entrypoints and the Kubernetes objects inside the manifests."""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
KUBERAY = INFRA / "kuberay"
DOCKERFILES = sorted((INFRA / "docker").glob("Dockerfile.*"))
LAUNCHER = INFRA / "launcher" / "cluster.yaml"
COMPOSE = INFRA / "compose" / "compose.yaml"
ALL_DOCKERFILES = [*DOCKERFILES, INFRA / "compose" / "Dockerfile.mlflow"]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kuberay_docs() -> list[tuple[Path, dict[str, Any]]]:
    """Every Kubernetes object in infra/kuberay, with its file."""
    return [(path, doc) for path in sorted(KUBERAY.glob("*.yaml")) for doc in yaml_docs(path)]


def by_kind(kind: str) -> list[tuple[Path, dict[str, Any]]]:
    return [(path, doc) for path, doc in kuberay_docs() if doc.get("kind") == kind]


def cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """Each RayCluster spec: standalone clusters and the embedded rayClusterSpec of each RayJob."""
    specs = [(f"{p.name}:RayCluster", d["spec"]) for p, d in by_kind("RayCluster")]
    specs += [(f"{p.name}:RayJob", d["spec"]["rayClusterSpec"]) for p, d in by_kind("RayJob")]
    return specs


def pod_specs(cluster: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("head" | "worker:<group>", pod spec) of one RayCluster spec."""
    yield "head", cluster["headGroupSpec"]["template"]["spec"]
    for group in cluster.get("workerGroupSpecs", []):
        yield f"worker:{group['groupName']}", group["template"]["spec"]


# --- Dockerfiles ------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    args: str  # continuation lines joined, comments dropped


def dockerfile(path: Path) -> list[Instruction]:
    """The instructions of a Dockerfile, `\\` continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):  # comments may sit inside continuations
            continue
        pending = f"{pending} {stripped}" if pending else stripped
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, args = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return instructions


def copy_sources(path: Path) -> list[str]:
    """The build-context sources of every COPY/ADD (not `--from=` stages), as written."""
    sources = []
    for ins in dockerfile(path):
        if ins.keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(ins.args)
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        sources += paths[:-1]
    return sources


def run_commands(path: Path) -> list[str]:
    return [ins.args for ins in dockerfile(path) if ins.keyword == "RUN"]


@dataclass
class DockerIgnore:
    """`.dockerignore` matching as Docker does it: patterns are relative to the context root,
    `*` and `?` stay within one path element, `**` spans any number, a match on a directory
    excludes everything below it, and the last matching pattern (`!` re-includes) wins."""

    rules: list[tuple[bool, re.Pattern[str]]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> DockerIgnore:
        rules = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = line.lstrip("!").strip().strip("/")
            rules.append((negate, re.compile(_glob_regex(pattern))))
        return cls(rules)

    def excludes(self, relpath: str) -> bool:
        parts = relpath.strip("/").split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for negate, regex in self.rules:
            if any(regex.fullmatch(p) for p in prefixes):
                excluded = not negate
        return excluded


def _glob_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


# --- commands ---------------------------------------------------------------------------------


@dataclass
class Invocation:
    """One depthkd command line: which CLI subcommand runs, via which script, with which args."""

    command: str  # the `depthkd` subcommand, e.g. "distill"
    script: str | None  # "pipelines/distill.py", or None for `depthkd <cmd>`
    args: list[str]

    @property
    def config(self) -> str | None:
        return _option(self.args, "--config")

    @property
    def overrides(self) -> list[str]:
        return [a for a in self.args if "=" in a and not a.startswith("-")]

    def override(self, key: str) -> str | None:
        values = [o.split("=", 1)[1] for o in self.overrides if o.split("=", 1)[0] == key]
        return values[-1] if values else None


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


SCRIPT_COMMAND = re.compile(r"""main\(\s*\[\s*["']([a-z][a-z-]*)["']""")


def script_command(script: str) -> str:
    """The CLI subcommand a script under pipelines/ or tune/ runs (`main(["distill", ...])`)."""
    text = (ROOT / script).read_text()
    match = SCRIPT_COMMAND.search(text)
    if match is None:
        raise AssertionError(f'{script}: no `main(["<command>", ...])` call found')
    return match.group(1)


def invocation(command_line: str) -> Invocation:
    """Parses `python <script>.py ARGS` or `depthkd <cmd> ARGS`."""
    words = shlex.split(command_line)
    if words[:1] == ["depthkd"]:
        return Invocation(words[1], None, words[2:])
    if words[:1] in (["python"], ["python3"]) and len(words) > 1 and words[1].endswith(".py"):
        script = words[1]
        command = script_command(script) if (ROOT / script).is_file() else "?"
        return Invocation(command, script, words[2:])
    raise AssertionError(f"not a depthkd command line: {command_line!r}")


def entrypoints() -> list[tuple[Path, dict[str, Any], Invocation]]:
    """(file, RayJob, parsed entrypoint) for every RayJob."""
    return [(path, doc, invocation(doc["spec"]["entrypoint"])) for path, doc in by_kind("RayJob")]


# --- walking ----------------------------------------------------------------------------------


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every node of a YAML tree."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")
