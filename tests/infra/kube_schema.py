"""KubeRay's CRD OpenAPI schemas as strict JSON Schemas, for validating our manifests offline.

Kubernetes validates a custom resource against the CRD's structural schema and prunes fields the
schema does not declare. `kubectl apply --validate=strict` (the default) turns such a field into
an error; here `additionalProperties: false` does the same wherever the schema declares
`properties` and neither `additionalProperties` nor `x-kubernetes-preserve-unknown-fields`.
`x-kubernetes-int-or-string` becomes "integer or string", `nullable` adds null. CEL rules
(`x-kubernetes-validations`) are not evaluated.

The CRDs are not part of this repository (nothing from fetched repositories is committed): they
are read from `$DEPTHKD_KUBERAY_CRDS` when it names a folder holding both files, else from
`../shared/kuberay-crds/` beside the checkout (where the dev machines and CI have them); the
schema tests skip, saying why, only where neither holds them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_ENV = "DEPTHKD_KUBERAY_CRDS"
SHARED_CRDS = ROOT.parent / "shared" / "kuberay-crds"
CRD_FILES = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}
API_VERSION = "ray.io/v1"


def _candidates() -> list[Path]:
    value = os.environ.get(CRD_ENV)
    return [*([Path(value)] if value else []), SHARED_CRDS]


def crd_dir() -> Path | None:
    """The first of `$DEPTHKD_KUBERAY_CRDS` and ../shared/kuberay-crds that holds both CRD files,
    else None."""
    for directory in _candidates():
        if all((directory / name).is_file() for name in CRD_FILES.values()):
            return directory
    return None


def missing_reason() -> str:
    """Why the CRD-schema tests skip: the folders looked in."""
    folders = [str(d) for d in _candidates()]
    looked = f"neither {' nor '.join(folders)} holds" if len(folders) > 1 else f"{folders[0]} lacks"
    return (
        f"KubeRay CRDs not found: {looked} {' and '.join(CRD_FILES.values())} "
        f"(helm-chart/kuberay-operator/crds/ of ray-project/kuberay); set ${CRD_ENV} to a folder "
        "that does"
    )


def strict_schema(node: Any) -> Any:
    """A Kubernetes structural schema (sub)tree as a JSON Schema that rejects unknown fields."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in ("items", "not", "additionalProperties") and isinstance(value, dict):
            out[key] = strict_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [strict_schema(sub) for sub in value]
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    if (
        "properties" in out
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_validators(directory: Path) -> dict[str, jsonschema.protocols.Validator]:
    """One strict validator per kind, from the v1 schema of each CRD file in `directory`.

    Raises:
        FileNotFoundError: a CRD file is missing.
        LookupError: a CRD has no served v1 version.
    """
    validators = {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the safe loader, C-accelerated
    for kind, name in CRD_FILES.items():
        path = directory / name
        crd = yaml.load(path.read_text(), Loader=loader)
        versions = {v["name"]: v for v in crd["spec"]["versions"]}
        if "v1" not in versions:
            raise LookupError(f"{path}: no v1 version, only {sorted(versions)}")
        schema = strict_schema(versions["v1"]["schema"]["openAPIV3Schema"])
        validators[kind] = jsonschema.Draft7Validator(schema)
    return validators


def schema_errors(validator: jsonschema.protocols.Validator, doc: dict) -> list[str]:
    """Every violation as `path: message`, sorted by path; empty when the document is valid."""
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]
