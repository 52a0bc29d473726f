"""`kustomize build` in pure Python, for exactly the subset infra/kuberay uses, so the overlays
can be tested where no kustomize (or kubectl) runs.

Supported, with kustomize v5's semantics (api/internal/target/kusttarget.go and
api/filters/replacement in kubernetes-sigs/kustomize):

* `resources`: YAML files (inside the kustomization's folder: kustomize's default load
  restrictor) and folders holding a Kustomization, built first on their own;
* `components`: folders holding a Component, applied in order to what the resources gave, each
  with its own resources, patches and replacements;
* `patches`: JSON 6902 operation lists (`add`, `remove`, `replace`, `test`), inline or from a
  file, on the objects their `target` selects (kind, name as anchored regular expressions);
* `replacements`: a source field (one object, `options.delimiter`/`index` to take a part of a
  string) copied to target fields (`select` by kind/name, `options.delimiter`/`index` to replace
  a part of a string); a scalar target keeps its type, as kustomize v5 does;
* the `config.kubernetes.io/local-config` annotation: such objects (values for replacements) are
  dropped from the final output only.

A kustomization's order: its resources, its components, then its own patches, then its own
replacements. Any other field of a kustomization, a strategic-merge patch, a replacement option
or a field path this module does not know is an error, so a feature it would ignore cannot pass
the tests unnoticed. Field paths: dot-separated, `\\.` for a dot inside a key, `[key=value]` for
the list item whose `key` is `value`, a number for a list index.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION = "kustomization.yaml"
LOCAL_CONFIG = "config.kubernetes.io/local-config"
KINDS = {
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
    "Component": "kustomize.config.k8s.io/v1alpha1",
}
FIELDS = {"apiVersion", "kind", "resources", "components", "patches", "replacements"}
PATCH_FIELDS = {"target", "patch", "path"}
SELECTOR_FIELDS = {"kind", "name"}
OPTION_FIELDS = {"delimiter", "index"}

Obj = dict[str, Any]


class KustomizeError(ValueError):
    """A kustomization this renderer refuses, as kustomize would, or does not support."""


def build(directory: Path, *, keep_local: bool = False) -> list[Obj]:
    """The objects `kustomize build directory` prints, in order (local-config ones only with
    `keep_local`, for tests that read the values)."""
    objects = _kustomization(directory.resolve(), expect="Kustomization", objects=[])
    if keep_local:
        return objects
    return [o for o in objects if _annotations(o).get(LOCAL_CONFIG) != "true"]


def _kustomization(directory: Path, *, expect: str, objects: list[Obj]) -> list[Obj]:
    path = directory / KUSTOMIZATION
    if not path.is_file():
        raise KustomizeError(f"{directory}: no {KUSTOMIZATION}")
    spec = yaml.safe_load(path.read_text()) or {}
    if spec.get("kind") != expect or spec.get("apiVersion") != KINDS[expect]:
        raise KustomizeError(
            f"{path}: expected kind {expect} ({KINDS[expect]}), "
            f"got {spec.get('kind')} ({spec.get('apiVersion')})"
        )
    if unknown := sorted(set(spec) - FIELDS):
        raise KustomizeError(f"{path}: not supported here: {', '.join(unknown)}")
    for entry in spec.get("resources", []):
        target = (directory / entry).resolve()
        if target.is_dir():
            objects += _kustomization(target, expect="Kustomization", objects=[])
        else:
            objects += _load(_inside(directory, entry, path))
        _check_unique(objects, path)
    for entry in spec.get("components", []):
        objects = _kustomization((directory / entry).resolve(), expect="Component", objects=objects)
    for patch in spec.get("patches", []):
        _patch(objects, patch, directory, path)
    for replacement in spec.get("replacements", []):
        _replace(objects, replacement, path)
    return objects


def _inside(directory: Path, entry: str, where: Path) -> Path:
    target = (directory / entry).resolve()
    if not target.is_relative_to(directory):
        raise KustomizeError(f"{where}: {entry} is outside {directory} (load restrictor)")
    if not target.is_file():
        raise KustomizeError(f"{where}: {entry}: no such file or kustomization folder")
    return target


def _load(path: Path) -> list[Obj]:
    # through JSON: YAML aliases become copies (kustomize expands anchors on reading), so a patch
    # of one container cannot reach another that shares its anchored lists
    docs = [json.loads(json.dumps(d)) for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if not (doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name")):
            raise KustomizeError(f"{path}: an object without apiVersion, kind or metadata.name")
    return docs


def _annotations(obj: Obj) -> dict[str, str]:
    return obj.get("metadata", {}).get("annotations") or {}


def _check_unique(objects: list[Obj], where: Path) -> None:
    seen = set()
    for obj in objects:
        key = (obj["apiVersion"].split("/")[0], obj["kind"], obj["metadata"]["name"])
        if key in seen:
            raise KustomizeError(f"{where}: {key[1]} {key[2]!r} defined twice")
        seen.add(key)


def _selected(obj: Obj, selector: dict[str, Any], *, regex: bool) -> bool:
    if unknown := sorted(set(selector) - SELECTOR_FIELDS):
        raise KustomizeError(f"selector fields not supported here: {', '.join(unknown)}")
    for field, wanted in selector.items():
        have = obj["kind"] if field == "kind" else obj["metadata"]["name"]
        if not (re.fullmatch(wanted, have) if regex else wanted == have):
            return False
    return True


# --- patches (JSON 6902) ----------------------------------------------------------------------


def _patch(objects: list[Obj], entry: dict[str, Any], directory: Path, where: Path) -> None:
    if unknown := sorted(set(entry) - PATCH_FIELDS):
        raise KustomizeError(f"{where}: patch fields not supported here: {', '.join(unknown)}")
    if "target" not in entry:
        raise KustomizeError(f"{where}: a patch without a target (strategic merge: unsupported)")
    text = (
        entry["patch"] if "patch" in entry else _inside(directory, entry["path"], where).read_text()
    )
    ops = yaml.safe_load(text)
    if not isinstance(ops, list):
        raise KustomizeError(
            f"{where}: only JSON 6902 patches (a list of operations) are supported"
        )
    for obj in objects:
        if _selected(obj, entry["target"], regex=True):
            for op in ops:
                _apply_op(obj, op, where)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise KustomizeError(f"JSON pointer {path!r} does not start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _child(node: Any, key: str, where: str) -> Any:
    if isinstance(node, list):
        if not key.isdigit() or int(key) >= len(node):
            raise KustomizeError(f"{where}: no list item {key}")
        return node[int(key)]
    if not isinstance(node, dict) or key not in node:
        raise KustomizeError(f"{where}: no field {key!r}")
    return node[key]


def _apply_op(obj: Obj, op: dict[str, Any], where: Path) -> None:
    kind, path = op.get("op"), op.get("path", "")
    here = f"{where}: {kind} {path} in {obj['kind']} {obj['metadata']['name']!r}"
    *parents, last = _pointer(path)
    node: Any = obj
    for key in parents:
        node = _child(node, key, here)
    if kind == "test":
        if _child(node, last, here) != op["value"]:
            raise KustomizeError(f"{here}: test failed, found {_child(node, last, here)!r}")
    elif kind == "replace":
        _child(node, last, here)  # must exist
        node[int(last) if isinstance(node, list) else last] = json.loads(json.dumps(op["value"]))
    elif kind == "remove":
        _child(node, last, here)
        del node[int(last) if isinstance(node, list) else last]
    elif kind == "add":
        value = json.loads(json.dumps(op["value"]))
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), value)
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise KustomizeError(f"{here}: the parent is not a list or a mapping")
    else:
        raise KustomizeError(f"{here}: operation {kind!r} not supported here")


# --- replacements -----------------------------------------------------------------------------


def _segments(field_path: str) -> list[str]:
    """`a.b\\.c.[k=v].0` → ["a", "b.c", "[k=v]", "0"]: split at dots outside brackets that no
    backslash escapes."""
    parts, current, depth, i = [], "", 0, 0
    while i < len(field_path):
        char = field_path[i]
        if char == "\\" and field_path[i + 1 : i + 2] == ".":
            current, i = current + ".", i + 2
            continue
        if char == "." and depth == 0:
            parts.append(current)
            current = ""
        else:
            depth += {"[": 1, "]": -1}.get(char, 0)
            current += char
        i += 1
    return [*parts, current]


def _locate(obj: Obj, field_path: str, where: str) -> tuple[Any, Any]:
    """(container, key) of the field at `field_path`; every step must exist."""
    node: Any = obj
    *parents, last = _segments(field_path)
    for segment in [*parents, last]:
        if segment.startswith("[") and segment.endswith("]"):
            key, _, value = segment[1:-1].partition("=")
            if not isinstance(node, list):
                raise KustomizeError(f"{where}: {field_path}: {segment} on a non-list")
            matches = [i for i, item in enumerate(node) if str(item.get(key)) == value]
            if len(matches) != 1:
                raise KustomizeError(f"{where}: {field_path}: {len(matches)} items match {segment}")
            container, step = node, matches[0]
        elif isinstance(node, list):
            if not segment.isdigit() or int(segment) >= len(node):
                raise KustomizeError(f"{where}: {field_path}: no list item {segment}")
            container, step = node, int(segment)
        elif isinstance(node, dict) and segment in node:
            container, step = node, segment
        else:
            raise KustomizeError(f"{where}: {field_path}: no field {segment!r}")
        node = container[step]
    return container, step


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise KustomizeError(f"not a scalar: {value!r}")


def _options(entry: dict[str, Any], where: str) -> dict[str, Any]:
    options = entry.get("options") or {}
    if unknown := sorted(set(options) - OPTION_FIELDS):
        raise KustomizeError(f"{where}: replacement options not supported here: {unknown}")
    return options


def _replace(objects: list[Obj], replacement: dict[str, Any], where: Path) -> None:
    source = dict(replacement["source"])
    field_path = source.pop("fieldPath")
    options = _options(source, str(where))
    source.pop("options", None)
    matches = [o for o in objects if _selected(o, source, regex=False)]
    if len(matches) != 1:
        raise KustomizeError(f"{where}: replacement source {source} matches {len(matches)} objects")
    container, key = _locate(matches[0], field_path, str(where))
    value: Any = container[key]
    if options.get("delimiter"):
        pieces = _text(value).split(options["delimiter"])
        index = options.get("index", 0)
        if not 0 <= index < len(pieces):
            raise KustomizeError(f"{where}: options.index {index} out of bounds for {value!r}")
        value = pieces[index]
    for target in replacement["targets"]:
        if unknown := sorted(set(target) - {"select", "fieldPaths", "options"}):
            raise KustomizeError(f"{where}: replacement target fields not supported: {unknown}")
        target_options = _options(target, str(where))
        for obj in objects:
            if not _selected(obj, target["select"], regex=False):
                continue
            for path in target["fieldPaths"]:
                here = f"{where}: {obj['kind']} {obj['metadata']['name']!r}"
                tcontainer, tkey = _locate(obj, path, here)
                tcontainer[tkey] = _set(tcontainer[tkey], value, target_options, here)


def _set(old: Any, value: Any, options: dict[str, Any], where: str) -> Any:
    """The target's new value: a part of the old string replaced (delimiter/index: an index past
    the end appends, a negative one prepends, as kustomize does), or the value, in the old
    scalar's type (kustomize v5 copies the text and keeps the target's YAML tag)."""
    if options.get("delimiter"):
        delimiter, index = options["delimiter"], options.get("index", 0)
        pieces = _text(old).split(delimiter)
        if index < 0:
            pieces.insert(0, _text(value))
        elif index >= len(pieces):
            pieces.append(_text(value))
        else:
            pieces[index] = _text(value)
        return delimiter.join(pieces)
    if isinstance(old, dict | list) or isinstance(value, dict | list):
        return json.loads(json.dumps(value))
    text = _text(value)
    if isinstance(old, bool):
        if text not in ("true", "false"):
            raise KustomizeError(f"{where}: {text!r} into a boolean field")
        return text == "true"
    if isinstance(old, int):
        if not re.fullmatch(r"-?\d+", text):
            raise KustomizeError(f"{where}: {text!r} into an integer field")
        return int(text)
    if isinstance(old, float):
        return float(text)
    return text
