"""Where MLflow keeps runs and artifacts: the local default store or a real server.

The embedded default is a SQLite database plus an artifact directory under `depthkd_home()`
(MLflow's `./mlruns` file store errors since 3.13). `$MLFLOW_TRACKING_URI` switches everything to a
real server (`mlflow server --backend-store-uri ... --artifacts-destination ...`). Every path is
absolute because Ray workers run in another directory than the driver.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow import MlflowClient
from mlflow.entities import LifecycleStage
from mlflow.exceptions import MlflowException

from depthkd.config.schema import depthkd_home
from depthkd.errors import ConfigError
from depthkd.locking import exclusive_lock

DB_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
# Tracking URIs whose server decides where artifacts go (proxied `mlflow-artifacts:` or its own
# default root); for any other store (SQLite, a database, a file path) we set a local one.
_SERVER_SCHEMES = frozenset({"http", "https", "databricks", "databricks-uc"})
# The MLflow 3 UI opens an experiment in the view its kind names: "custom_model_development" is
# the model-training view (runs, metrics, models); without the tag it may open the GenAI one.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def tracking_uri(home: Path | None = None) -> str:
    """The tracking URI: `$MLFLOW_TRACKING_URI` if set, else `sqlite:///<abs home>/mlflow.db`.

    A relative SQLite path in `$MLFLOW_TRACKING_URI` is made absolute here, on the driver.

    Args:
        home: root of the local state; default `depthkd_home()`. Created if missing.
    """
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return _absolute_sqlite(uri)
    root = (home or depthkd_home()).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / DB_FILE}"


_READY: set[str] = set()  # SQLite stores this process has opened once


def _schema_ready(uri: str) -> str:
    """`uri`, a SQLite store's schema created or migrated first while holding a file lock beside
    it. MLflow migrates a new store when a client first opens it, and processes opening a fresh
    one at once (jobs started together on a new home) raced there: alembic's "expected to match
    one row"."""
    if not uri.startswith("sqlite:///") or uri in _READY:
        return uri
    db = Path(uri.removeprefix("sqlite:///"))
    with exclusive_lock(db.with_name(db.name + ".lock"), message=f"waiting for {db} to be set up"):
        MlflowClient(tracking_uri=uri)  # opening the store creates or migrates its schema
    _READY.add(uri)
    return uri


def artifact_root(home: Path | None = None) -> Path:
    """The absolute local directory that holds the artifacts of the embedded default store."""
    return (home or depthkd_home()).expanduser().resolve() / ARTIFACT_DIR


def uses_server_artifacts(uri: str) -> bool:
    """Whether the server behind `uri` places artifacts itself (no local artifact root)."""
    return urlparse(uri).scheme in _SERVER_SCHEMES


def client_for(uri: str) -> MlflowClient:
    """An `MlflowClient` bound to `uri`; the registry follows `$MLFLOW_REGISTRY_URI` or `uri`."""
    return MlflowClient(tracking_uri=_schema_ready(uri))


def ensure_experiment(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    """The id of experiment `name`, created if missing (safe when two drivers race to create it).

    It is tagged as a model-training experiment (`EXPERIMENT_KIND_TAG`), also when an older
    depthkd created it without the tag; a kind chosen since in the UI is kept.

    Args:
        client: client bound to the tracking store.
        name: experiment name.
        artifact_root: local directory under which the experiment keeps its artifacts
            (`<root>/<slug of name>`, as an absolute `file://` URI); None lets the server decide.

    Raises:
        ConfigError: the experiment exists but was deleted (MLflow keeps deleted names reserved).
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if artifact_root is not None:
            location = (artifact_root.expanduser().resolve() / _slug(name)).as_uri()
        try:
            return client.create_experiment(
                name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        except MlflowException:
            # Another process created it between our lookup and create: use theirs.
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == LifecycleStage.DELETED:
        raise ConfigError(
            f"MLflow experiment {name!r} (id {experiment.experiment_id}) is deleted",
            hint=f"restore it (`mlflow experiments restore --experiment-id "
            f"{experiment.experiment_id}`) or choose another experiment name",
        )
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


@contextmanager
def pinned_tracking_uri(uri: str) -> Iterator[None]:
    """Points MLflow's process-global tracking URI at `uri` for the duration of the block.

    A few MLflow 3 functions (`Model.log`, LoggedModel finalisation) read only the global URI;
    everything else in this package passes the URI explicitly. `mlflow.set_tracking_uri` also
    writes `$MLFLOW_TRACKING_URI`, so that variable is restored exactly as it was.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        # None unsets both the global and the variable (mlflow annotates `str | Path` only)
        mlflow.set_tracking_uri(before)  # type: ignore[arg-type]
        if before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before


def _absolute_sqlite(uri: str) -> str:
    """`sqlite:///rel.db` → `sqlite:////abs/rel.db`; other URIs unchanged."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.startswith(prefix + "/") or uri == prefix + ":memory:":
        return uri
    return f"{prefix}{Path(uri.removeprefix(prefix)).resolve()}"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "experiment"
