"""The lock, constraints.txt: exact pins of every distribution the project needs with its dev
extras, consistent with pyproject.toml's ranges and with each other, and used by every install
of the images and the `ray up` nodes, whose own torch, torchvision and ray pins are the lock's."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.infra.parsing import (
    CONSTRAINTS,
    DOCKERFILES,
    LAUNCHER,
    ROOT,
    cluster_specs,
    constraints,
    dockerfile,
    pyproject,
    run_commands,
)

LOCK = CONSTRAINTS.name
USES_LOCK = re.compile(rf"\bpip install -c {re.escape(LOCK)}\s")
PINNED = ("torch", "torchvision", "ray")  # pinned in the images and the launcher too


def _top_level() -> list[Requirement]:
    project = pyproject()["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["dev"]
    return [Requirement(line) for line in lines]


def _applies(req: Requirement, extras: frozenset[str]) -> bool:
    """Whether a requirement holds here, for a distribution installed with `extras`."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in extras | {""})


def _closure() -> tuple[set[str], list[tuple[str, Requirement]]]:
    """(every distribution `pip install -e ".[dev]"` brings, each requirement edge as (from,
    requirement)), read from the installed distributions' metadata."""
    todo = [
        ("pyproject.toml", req, frozenset()) for req in _top_level() if _applies(req, frozenset())
    ]
    names: set[str] = set()
    edges: list[tuple[str, Requirement]] = []
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        parent, req, _ = todo.pop()
        name, extras = canonicalize_name(req.name), frozenset(req.extras)
        edges.append((parent, req))
        names.add(name)
        if (name, extras) in done:
            continue
        done.add((name, extras))
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            pytest.fail(f"{name} (required by {parent}) is not installed here: reinstall the venv")
        for line in requires:
            sub = Requirement(line)
            if _applies(sub, extras):
                todo.append((name, sub, frozenset(sub.extras)))
    return names, edges


def test_the_lock_is_exact_pins_without_the_project() -> None:
    pins = constraints()  # raises on a line that is no `name==version`, or a name twice
    assert len(pins) > 50, "constraints.txt looks empty"
    assert "depthkd" not in pins, "the project itself is not pinned (pip freeze --exclude-editable)"
    for name, version in pins.items():
        assert not Version(version).local, f"{name}=={version}: the index picks the variant"


def test_the_lock_pins_everything_the_project_installs() -> None:
    names, _ = _closure()
    missing = sorted(names - set(constraints()))
    assert not missing, f"not pinned in {LOCK}: {missing}"


def test_the_lock_meets_every_requirement() -> None:
    # what `pip install -c constraints.txt -e ".[dev]"` checks: each pin within the range of
    # pyproject.toml and of every locked distribution that asks for it
    pins = constraints()
    _, edges = _closure()
    for parent, req in edges:
        name = canonicalize_name(req.name)
        if parent != "pyproject.toml":
            installed = distribution(parent).version
            if installed != pins.get(parent):  # other metadata than the locked release's
                continue
        pin = Version(pins[name])
        assert req.specifier.contains(pin, prereleases=True), f"{parent}: {req} vs {name}=={pin}"


def _installs() -> list[tuple[str, str]]:
    """(where, command) of every `pip install` of the images and the launcher."""
    commands = [(p.name, c) for p in DOCKERFILES for c in run_commands(p)]
    setup = yaml.safe_load(LAUNCHER.read_text())["setup_commands"]
    commands += [(LAUNCHER.name, c) for c in setup]
    return [
        (where, part.strip())
        for where, command in commands
        for part in command.split("&&")
        if "pip install" in part
    ]


def test_images_and_launcher_install_through_the_lock() -> None:
    installs = _installs()
    assert len(installs) >= 6
    for where, command in installs:  # pip's own upgrade included
        assert USES_LOCK.search(command), f"{where}: {command!r} does not use -c {LOCK}"


def test_dockerfiles_copy_the_lock_where_pip_reads_it() -> None:
    for path in DOCKERFILES:
        workdir, copied = None, None
        for ins in dockerfile(path):
            if ins.keyword == "WORKDIR":
                workdir = ins.args
            elif ins.keyword == "COPY" and ins.args.split()[0] == LOCK:
                copied = workdir if ins.args.split()[1] in ("./", ".") else ins.args.split()[1]
            elif ins.keyword == "RUN" and USES_LOCK.search(ins.args):
                assert copied is not None and copied == workdir, (
                    f"{path.name}: {LOCK} is not in {workdir} when `{ins.args[:40]}...` runs"
                )


def test_launcher_installs_from_the_synced_checkout() -> None:
    config = yaml.safe_load(LAUNCHER.read_text())
    (checkout,) = [remote for remote, local in config["file_mounts"].items() if local == "."]
    for command in config["setup_commands"]:
        if USES_LOCK.search(command):
            assert command.startswith(f"cd {checkout} && "), command
    assert LOCK not in config["rsync_exclude"]
    ignored = (ROOT / ".gitignore").read_text().split()  # the launcher syncs with rsync_filter
    assert LOCK not in ignored


def _pins(text: str) -> dict[str, set[str]]:
    return {name: set(re.findall(rf"(?<![\w-]){name}==([\w.+]+)", text)) for name in PINNED}


@pytest.mark.parametrize("path", [*DOCKERFILES, LAUNCHER], ids=lambda p: Path(p).name)
def test_pins_of_images_and_launcher_are_the_locks(path: Path) -> None:
    # the local label (+cpu, +cu130) names a variant; the release is the lock's
    lock = constraints()
    commands = (
        run_commands(path)
        if path in DOCKERFILES
        else yaml.safe_load(path.read_text())["setup_commands"]
    )
    pins = _pins(" ".join(commands))
    for name in PINNED:
        assert pins[name], f"{path.name}: {name} is not pinned"
        public = {Version(v).public for v in pins[name]}
        assert public == {lock[name]}, f"{path.name}: {name} {public} vs {LOCK} {lock[name]}"


def test_clusters_run_the_locked_ray() -> None:
    lock = constraints()
    for name, spec in cluster_specs():
        assert spec["rayVersion"] == lock["ray"], name
