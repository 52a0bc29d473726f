"""Depth models in MLflow: log them with their run, register versions under aliases, load them back.

A logged depth model is two things: the weights file `<name>/state_dict.pt` among the run's
artifacts (what a person browsing the run finds), and an MLflow 3 *LoggedModel* named `<name>`
holding a pyfunc "from code" (`pyfunc_model.py`, no pickled object) with its own copy of the
weights, so that registry versions point at exactly the weights they were registered with.
Stages are deprecated; promotion moves aliases (`depthkd-student@challenger`, `@champion`).

Accepted references (`resolve_model_reference`): `name@alias`, `models:/name@alias`,
`models:/name/<version>`, `models:/<model_id>`, `runs:/<run_id>/<name>`, or a bare run id.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import Schema, TensorSpec
from torch import nn

import depthkd
import depthkd.models
from depthkd.errors import CheckpointError, RegistryError
from depthkd.models.kinds import ModelKind
from depthkd.models.serialization import load_model, model_arch, save_model
from depthkd.tracking.runs import JobRun
from depthkd.tracking.store import client_for, pinned_tracking_uri, tracking_uri

STATE_DICT_FILE = "state_dict.pt"
WEIGHTS_ARTIFACT = "weights"  # key of the weights file in the pyfunc's `artifacts`
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")  # the pyfunc, logged from code
# uint8 RGB (H, W, 3) in, float32 metres (H, W) out, H and W free
SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, 3))]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]),
)

# Distributions the pyfunc imports when it loads; pinned so MLflow need not infer them (which
# loads the model in a subprocess) and so a serving image gets the versions we trained with.
_REQUIREMENTS = (
    "mlflow",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "pydantic",
    "PyYAML",
    "Pillow",
    "matplotlib",
)
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_FORMS = "name@alias, models:/name@alias, models:/name/<version>, runs:/<run_id>/<name> or a run id"


def log_depth_model(run: JobRun, model: nn.Module, *, name: str = "student", step: int = 0) -> str:
    """Logs `model`'s weights and a pyfunc model named `name` to `run`.

    Args:
        run: the job's run (call on rank 0 only).
        model: a `DepthModel` from `depthkd.models.zoo`, maybe wrapped (DDP, DeepSpeed, compile).
        name: artifact directory of the weights and name of the logged model.
        step: training step the weights belong to (MLflow links the model to the run's metrics
            at that step).

    Returns:
        The logged model's URI (`models:/<model_id>`), to pass to `register_model`.
    """
    client = client_for(run.tracking_uri)
    with (
        tempfile.TemporaryDirectory(prefix="depthkd-model-") as tmp,
        pinned_tracking_uri(run.tracking_uri),
    ):
        weights = save_model(model, Path(tmp) / STATE_DICT_FILE)
        client.log_artifact(run.run_id, str(weights), name)
        # Created here in the run's experiment: `Model.log` without a model id would create it in
        # the fluent default experiment ("0", artifacts under ./mlruns), not the run's.
        logged = client.create_logged_model(
            experiment_id=run.experiment_id,
            name=name,
            source_run_id=run.run_id,
            tags={"depthkd.kind": model_arch(model)["kind"]},
        )
        info = Model.log(
            artifact_path=None,
            name=name,
            flavor=mlflow.pyfunc,
            run_id=run.run_id,
            model_id=logged.model_id,
            step=step,
            python_model=str(PYFUNC_CODE),
            artifacts={WEIGHTS_ARTIFACT: str(weights)},
            signature=SIGNATURE,
            input_example=_input_example(),
            code_paths=[str(_package_tree(Path(tmp) / "code"))],
            pip_requirements=_pip_requirements(),
        )
    return info.model_uri


def _package_tree(folder: Path) -> Path:
    """`folder/depthkd`: the package as it imports, for the pyfunc's code. An installed wheel
    holds `depthkd.models` inside `depthkd/` already; an editable install maps it from the
    repository's `models/`, which is copied in beside the rest here."""
    tree = folder / "depthkd"
    skip = shutil.ignore_patterns("__pycache__", "*.pt")  # not the shipped demo teacher's weights
    shutil.copytree(Path(depthkd.__file__).parent, tree, ignore=skip)
    if not (tree / "models").is_dir():
        shutil.copytree(Path(depthkd.models.__file__).parent, tree / "models", ignore=skip)
    return tree


def register_model(
    model_uri: str,
    registered_name: str,
    *,
    alias: str,
    tags: dict[str, Any] | None = None,
    description: str | None = None,
    home: Path | None = None,
) -> int:
    """Registers `model_uri` as a new version of `registered_name` and points `alias` at it.

    Args:
        model_uri: `models:/<model_id>` from `log_depth_model`, or any reference that
            `resolve_model_reference` accepts.
        registered_name: registered model, created if missing (e.g. `depthkd-student`).
        alias: alias moved to the new version (e.g. `challenger`).
        tags: version tags (values as `str()`), e.g. the dataset and eval protocol.
        description: the version's description (its model card, Markdown).
        home: local state root for the default store.

    Returns:
        The new version number.
    """
    uri = tracking_uri(home)
    client = client_for(uri)
    # MLflow 3.17 resolves `models:/` sources and model artifacts through the *global* tracking
    # URI in places (the SQL registry's create_model_version, runs:/ artifact listing).
    with pinned_tracking_uri(uri):
        model_id = _logged_model_id(client, resolve_model_reference(model_uri, home=home))
        logged = client.get_logged_model(model_id)
        try:
            client.create_registered_model(registered_name)
        except MlflowException as exc:
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        version = client.create_model_version(
            registered_name,
            source=f"models:/{model_id}",
            run_id=logged.source_run_id,
            tags={str(k): str(v) for k, v in (tags or {}).items()},
            description=description,
            model_id=model_id,
        )
        client.set_registered_model_alias(registered_name, alias, version.version)
    return int(version.version)


def load_registered_model(
    uri: str,
    *,
    home: Path | None = None,
    expect: ModelKind | Collection[ModelKind] | None = None,
) -> nn.Module:
    """The `DepthModel` behind a reference, rebuilt from its weights (eval mode, on the CPU).

    Args:
        uri: `models:/<name>@<alias>`, `runs:/<run_id>/<name>` or any other accepted reference.
        home: local state root for the default store.
        expect: the kind (or kinds) the model must be (`load_model`).

    Raises:
        RegistryError: the reference names no model.
        CheckpointError: its weights cannot be downloaded, do not rebuild a model or are of
            another kind.
    """
    with tempfile.TemporaryDirectory(prefix="depthkd-load-") as tmp:
        path = download_model_file(uri, Path(tmp), home=home).path
        return load_model(path, expect=expect, source=uri)


@dataclass(frozen=True)
class ModelFile:
    """The weights file of a model reference, downloaded, and where it came from.

    Attributes:
        path: the local model file (a `save_model` file).
        uri: the resolved reference (`models:/...` or `runs:/...`).
        registered_name: the registered model, for `name@alias` and `models:/name/<n>`.
        version: its version number, likewise.
        run_id: the run that logged the weights, when known.
    """

    path: Path
    uri: str
    registered_name: str | None = None
    version: int | None = None
    run_id: str | None = None


def download_model_file(uri: str, dst: Path, *, home: Path | None = None) -> ModelFile:
    """Downloads the weights file behind a reference into the folder `dst`.

    Raises:
        RegistryError: the reference names no model.
        CheckpointError: its weights cannot be downloaded.
    """
    store_uri = tracking_uri(home)
    client = client_for(store_uri)
    with pinned_tracking_uri(store_uri):
        resolved = resolve_model_reference(uri, home=home)
        name = version = run_id = None
        if resolved.startswith("runs:/"):
            weights_uri = f"{resolved}/{STATE_DICT_FILE}"
            run_id = resolved.removeprefix("runs:/").split("/", 1)[0]
        else:
            model_id = _logged_model_id(client, resolved)
            logged = client.get_logged_model(model_id)
            weights_uri = f"{logged.artifact_location.rstrip('/')}/artifacts/{STATE_DICT_FILE}"
            run_id = logged.source_run_id
            name, version = _registered_version(client, resolved)
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=weights_uri, dst_path=str(dst), tracking_uri=store_uri
            )
        except MlflowException as exc:
            raise CheckpointError(
                f"cannot download the weights of {uri} ({weights_uri}): {exc}"
            ) from exc
    return ModelFile(Path(path), resolved, name, version, run_id)


def registered_tags(ref: str, *, home: Path | None = None) -> dict[str, str]:
    """The tags of the registered version `ref` names (`name@alias`, `models:/...`); {} for a
    reference to anything else (a run, a file).

    Raises:
        RegistryError: the reference names no model.
    """
    uri = tracking_uri(home)
    client = client_for(uri)
    with pinned_tracking_uri(uri):
        name, version = _registered_version(client, resolve_model_reference(ref, home=home))
        if name is None or version is None:
            return {}
        return dict(client.get_model_version(name, str(version)).tags)


def _registered_version(client: MlflowClient, uri: str) -> tuple[str | None, int | None]:
    """(registered name, version) of a `models:/name@alias` or `models:/name/<n>` URI."""
    name, _, version = uri.removeprefix("models:/").strip("/").partition("/")
    if version.isdigit():
        return name, int(version)
    if "@" in name:
        name, _, alias = name.rpartition("@")
        return name, int(client.get_model_version_by_alias(name, alias).version)
    return None, None


def resolve_model_reference(ref: str, *, home: Path | None = None) -> str:
    """A loadable URI for `ref`, after checking that what it names exists.

    `name@alias` becomes `models:/name@alias`; a bare run id becomes `runs:/<id>/<name>` when the
    run logged exactly one depth model; `models:/` and `runs:/` URIs are returned as they are.

    Raises:
        RegistryError: unknown registered model, alias, version, run or model name; the hint lists
            what exists.
    """
    uri = tracking_uri(home)
    with pinned_tracking_uri(uri):
        return _resolve(client_for(uri), ref.strip())


def _resolve(client: MlflowClient, ref: str) -> str:
    if ref.startswith("models:/"):
        _check_models_uri(client, ref)
        return ref
    if ref.startswith("runs:/"):
        run_id, _, name = ref.removeprefix("runs:/").strip("/").partition("/")
        if name not in _logged_weights(client, run_id):
            raise RegistryError(
                f"run {run_id} has no depth model {name!r}",
                hint=_run_models_hint(client, run_id),
            )
        return f"runs:/{run_id}/{name}"
    if "@" in ref and "/" not in ref:
        uri = f"models:/{ref}"
        _check_models_uri(client, uri)
        return uri
    if _RUN_ID.match(ref):
        names = _logged_weights(client, ref)
        if len(names) == 1:
            return f"runs:/{ref}/{names[0]}"
        raise RegistryError(
            f"run {ref} logged {'no' if not names else 'several'} depth models",
            hint=_run_models_hint(client, ref),
        )
    registered = _registered_names(client)
    hint = f"use one of: {_FORMS}"
    if ref in registered:
        hint = f"{ref} has aliases {_aliases_text(client, ref)}: use {ref}@<alias>"
    elif registered:
        hint += f"; registered models: {', '.join(registered)}"
    raise RegistryError(f"{ref!r} is not a model reference", hint=hint)


# -- helpers -----------------------------------------------------------------------------------


def _check_models_uri(client: MlflowClient, uri: str) -> None:
    """Raises RegistryError unless the `models:/` URI names an existing model."""
    _logged_model_id(client, uri)


def _logged_model_id(client: MlflowClient, uri: str) -> str:
    """The LoggedModel id behind a `models:/` or `runs:/<run_id>/<name>` URI."""
    if uri.startswith("runs:/"):
        run_id, _, name = uri.removeprefix("runs:/").strip("/").partition("/")
        return _latest_logged_model(client, run_id, name)
    path = uri.removeprefix("models:/").strip("/")
    name, _, version = path.partition("/")
    alias = None
    if not version and "@" in name:
        name, _, alias = name.rpartition("@")
    if not version and alias is None:  # models:/<model_id>
        try:
            return client.get_logged_model(name).model_id
        except MlflowException as exc:
            raise RegistryError(
                f"no logged model {name!r} ({uri})", hint=f"use one of: {_FORMS}"
            ) from exc
    if not _registered(client, name):
        registered = _registered_names(client)
        raise RegistryError(
            f"no registered model {name!r} ({uri})",
            hint=f"registered models: {', '.join(registered)}" if registered else None,
        )
    try:
        if alias is not None:
            mv = client.get_model_version_by_alias(name, alias)
        elif version.isdigit():
            mv = client.get_model_version(name, version)
        else:
            raise RegistryError(
                f"{uri}: stages like {version!r} are deprecated in MLflow; use an alias",
                hint=f"{name} has aliases {_aliases_text(client, name)}",
            )
    except MlflowException as exc:
        what = f"alias {alias!r}" if alias is not None else f"version {version}"
        raise RegistryError(
            f"registered model {name!r} has no {what}",
            hint=f"{name} has aliases {_aliases_text(client, name)}",
        ) from exc
    # The SQL registry does not store `model_id` (always None there); the source holds it.
    model_id = mv.model_id or _model_id_of_source(mv.source or "")
    if model_id is None:
        raise CheckpointError(
            f"{uri} (version {mv.version}, source {mv.source}) was not logged by depthkd"
        )
    return model_id


def _model_id_of_source(source: str) -> str | None:
    path = source.removeprefix("models:/").strip("/")
    if source.startswith("models:/") and "/" not in path and "@" not in path:
        return path
    return None


def _latest_logged_model(client: MlflowClient, run_id: str, name: str) -> str:
    """The most recent LoggedModel named `name` that run `run_id` produced."""
    run = _get_run(client, run_id)
    found = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"name = '{name}' AND source_run_id = '{run_id}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        max_results=1,
    )
    if not found:
        raise RegistryError(f"run {run_id} logged no model {name!r}")
    return found[0].model_id


def _logged_weights(client: MlflowClient, run_id: str) -> list[str]:
    """Names under which run `run_id` logged depth model weights (`<name>/state_dict.pt`)."""
    _get_run(client, run_id)
    names = []
    for entry in client.list_artifacts(run_id):
        if entry.is_dir:
            files = {Path(f.path).name for f in client.list_artifacts(run_id, entry.path)}
            if STATE_DICT_FILE in files:
                names.append(entry.path)
    return sorted(names)


def _get_run(client: MlflowClient, run_id: str) -> Any:
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise RegistryError(f"no MLflow run {run_id!r} in {client.tracking_uri}") from exc


def _run_models_hint(client: MlflowClient, run_id: str) -> str:
    names = _logged_weights(client, run_id)
    if not names:
        return f"run {run_id} has no <name>/{STATE_DICT_FILE} artifact"
    return "use " + " or ".join(f"runs:/{run_id}/{n}" for n in names)


def _registered(client: MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
    except MlflowException:
        return False
    return True


def _registered_names(client: MlflowClient) -> list[str]:
    return sorted(m.name for m in client.search_registered_models(max_results=100))


def _aliases_text(client: MlflowClient, name: str) -> str:
    aliases = client.get_registered_model(name).aliases  # {alias: version}
    if not aliases:
        return "none"
    return ", ".join(f"{a} (v{v})" for a, v in sorted(aliases.items()))


def _input_example() -> np.ndarray:
    """A small uint8 RGB image: what MLflow shows with the model and checks it against."""
    return np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)


def _pip_requirements() -> list[str]:
    reqs = []
    for dist in _REQUIREMENTS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        reqs.append(f"{dist}=={version.split('+')[0]}")  # drop local labels like +cu132
    return reqs


def attach_export(ref: str, files: list[Path], tags: dict[str, Any]) -> str | None:
    """Logs exported model `files` (ONNX and its data, TorchScript) to the run of the registered
    version `ref` names (`name@alias`, `models:/name@alias`, `models:/name/<n>`) under `export/`
    and sets `tags` on that version. Returns "name vN" or None when `ref` names no version."""
    text = ref.removeprefix("models:/")
    if Path(ref).expanduser().exists() or ref.startswith("runs:/") or _RUN_ID.match(ref):
        return None
    name, sep, rest = text.partition("@") if "@" in text else text.partition("/")
    if not sep:
        return None
    uri = tracking_uri()
    client = client_for(uri)
    try:
        mv = (
            client.get_model_version_by_alias(name, rest)
            if "@" in text
            else client.get_model_version(name, rest)
        )
    except MlflowException as exc:
        raise RegistryError(f"{ref}: no such registered version") from exc
    if mv.run_id:
        for path in files:
            client.log_artifact(mv.run_id, str(path), "export")
    for key, value in tags.items():
        client.set_model_version_tag(name, mv.version, key, str(value))
    return f"{name} v{mv.version}"
