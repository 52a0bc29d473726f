"""Readers for the definitions under infra/: YAML documents, the Kubernetes objects of the plain
manifests and of every kustomization (built by tests/infra/kustomize.py), Dockerfile
instructions, `.dockerignore` matching, job entrypoints, `mlflow server` command lines and the
lock file."""

from __future__ import annotations

import functools
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement

from tests.infra import kustomize

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
KUBERAY = INFRA / "kuberay"
OVERLAYS = KUBERAY / "overlays"
TRACKING = KUBERAY / "tracking"
DOCKERFILES = sorted((INFRA / "docker").glob("Dockerfile.*"))
LAUNCHER = INFRA / "launcher" / "cluster.yaml"
COMPOSE = INFRA / "compose" / "compose.yaml"
ALL_DOCKERFILES = [*DOCKERFILES, INFRA / "compose" / "Dockerfile.mlflow"]
CONSTRAINTS = ROOT / "constraints.txt"
GPU_RESOURCE = "nvidia.com/gpu"

# The one Secret of a deployment (infra/kuberay/secret.example.yaml) and its keys: the S3 store
# (Ray pods, the MLflow server) and PostgreSQL (the tracking stack); the endpoints are optional.
SECRET_NAME = "depthkd-secrets"
SECRET_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
)
# names whose values must never be written out in a definition
SECRETISH = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|TRACKING_URI", re.IGNORECASE)


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def dependency(name: str) -> Requirement:
    """The project's requirement on `name` (pyproject.toml's dependencies)."""
    for line in pyproject()["project"]["dependencies"]:
        req = Requirement(line)
        if req.name == name:
            return req
    raise AssertionError(f"pyproject.toml has no dependency on {name}")


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# --- Kubernetes objects -----------------------------------------------------------------------


def kustomizations() -> list[Path]:
    """Every folder under infra/kuberay that `kubectl apply -k` takes (Components are not)."""
    return sorted(
        path.parent
        for path in KUBERAY.rglob(kustomize.KUSTOMIZATION)
        if yaml.safe_load(path.read_text()).get("kind") == "Kustomization"
    )


def overlays() -> list[Path]:
    return sorted(p for p in kustomizations() if p.parent == OVERLAYS)


def where(path: Path) -> str:
    """How a test names a manifest file or a kustomization: its path under infra/kuberay."""
    return path.relative_to(KUBERAY).as_posix()


@functools.cache
def _built(directory: Path, keep_local: bool) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize.build(directory, keep_local=keep_local))


def built(directory: Path, *, keep_local: bool = False) -> list[dict[str, Any]]:
    """`kubectl kustomize directory`, as fresh copies (tests may change them)."""
    return json.loads(json.dumps(_built(directory, keep_local)))


@functools.cache
def _manifest(path: Path) -> str:
    return json.dumps([(where(path), doc) for doc in yaml_docs(path)])


def run_values(overlay: Path) -> dict[str, Any]:
    """The `spec` of an overlay's RunValues (values.yaml): its name, workers and GPUs per worker."""
    (values,) = [o for o in built(overlay, keep_local=True) if o["kind"] == "RunValues"]
    return values["spec"]


def kuberay_docs() -> list[tuple[str, dict[str, Any]]]:
    """Every Kubernetes object of infra/kuberay, with where it comes from: each plain manifest
    (infra/kuberay/*.yaml) and the output of each kustomization (bases, overlays, tracking)."""
    docs = [
        tuple(pair)
        for path in sorted(KUBERAY.glob("*.yaml"))
        for pair in json.loads(_manifest(path))
    ]
    docs += [(where(path), doc) for path in kustomizations() for doc in built(path)]
    return docs


def by_kind(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [(name, doc) for name, doc in kuberay_docs() if doc.get("kind") == kind]


def cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """Each RayCluster spec: standalone clusters and the embedded rayClusterSpec of each RayJob."""
    specs = [(f"{p}:RayCluster", d["spec"]) for p, d in by_kind("RayCluster")]
    specs += [(f"{p}:RayJob", d["spec"]["rayClusterSpec"]) for p, d in by_kind("RayJob")]
    return specs


def pod_specs(cluster: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("head" | "worker:<group>", pod spec) of one RayCluster spec."""
    yield "head", cluster["headGroupSpec"]["template"]["spec"]
    for group in cluster.get("workerGroupSpecs", []):
        yield f"worker:{group['groupName']}", group["template"]["spec"]


def ray_containers() -> list[tuple[str, dict[str, Any]]]:
    """(where, container) of every head and worker container of every cluster spec."""
    return [
        (f"{name}:{role}:{c['name']}", c)
        for name, spec in cluster_specs()
        for role, pod in pod_specs(spec)
        for c in pod["containers"]
    ]


def gpus(container: dict[str, Any]) -> int:
    return int(container.get("resources", {}).get("limits", {}).get(GPU_RESOURCE, 0))


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


def entrypoints() -> list[tuple[str, dict[str, Any], Invocation]]:
    """(where, RayJob, parsed entrypoint) for every RayJob."""
    return [(name, doc, invocation(doc["spec"]["entrypoint"])) for name, doc in by_kind("RayJob")]


# --- mlflow server ----------------------------------------------------------------------------


def mlflow_server_command(script: str) -> tuple[dict[str, str], list[str]]:
    """(variables the script exports, the `mlflow server` arguments) of a container's
    `sh -c` script `export A=... && exec mlflow server ARGS`. A `${VAR}` (compose's `$${VAR}`)
    that the container's shell expands reads `<VAR>`."""
    words = [re.sub(r"\$?\$\{(\w+)\}", r"<\1>", w) for w in shlex.split(script)]
    exported = {}
    while words[0] == "export":
        name, _, value = words[1].partition("=")
        exported[name] = value
        if words[2] != "&&":
            raise AssertionError(f"expected && after the export, got {words[:3]}")
        words = words[3:]
    if words[:3] != ["exec", "mlflow", "server"]:
        raise AssertionError(f"expected `exec mlflow server`, got {words[:3]}")
    return exported, words[3:]


# --- the lock ---------------------------------------------------------------------------------


def constraints() -> dict[str, str]:
    """{canonical distribution name: pinned version} of constraints.txt.

    Raises:
        AssertionError: a line is not `name==version` (or a comment), or a name is pinned twice.
    """
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for number, line in enumerate(CONSTRAINTS.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line.strip())
        if match is None:
            raise AssertionError(f"constraints.txt:{number}: not an exact pin: {line!r}")
        name = canonicalize_name(match.group(1))
        if name in pins:
            raise AssertionError(f"constraints.txt:{number}: {name} is pinned twice")
        pins[name] = match.group(2)
    return pins


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
