"""Store location: the embedded SQLite default, $MLFLOW_TRACKING_URI, experiments."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from depthkd.errors import ConfigError
from depthkd.tracking.store import artifact_root, ensure_experiment, tracking_uri


def test_default_store_is_absolute_sqlite_under_home(home: Path) -> None:
    assert tracking_uri() == f"sqlite:///{home.resolve()}/mlflow.db"
    assert tracking_uri(Path("../elsewhere")) == f"sqlite:///{home.parent / 'elsewhere'}/mlflow.db"
    assert artifact_root() == home.resolve() / "mlartifacts"
    assert artifact_root().is_absolute()


def test_env_tracking_uri_wins(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking_uri(home) == "http://mlflow.example:5000"
    # Ray workers run elsewhere: a relative SQLite path is resolved on the driver.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///local.db")
    assert tracking_uri() == f"sqlite:///{Path.cwd() / 'local.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////abs/x.db")
    assert tracking_uri() == "sqlite:////abs/x.db"


def test_ensure_experiment_get_or_create_and_deleted(home: Path) -> None:
    client = MlflowClient(tracking_uri(home))
    exp_id = ensure_experiment(client, "kd/nyu distill", artifact_root(home))
    assert ensure_experiment(client, "kd/nyu distill", artifact_root(home)) == exp_id
    location = client.get_experiment(exp_id).artifact_location
    assert location == (artifact_root(home) / "kd-nyu-distill").as_uri()
    client.delete_experiment(exp_id)
    with pytest.raises(ConfigError, match="kd/nyu distill") as info:
        ensure_experiment(client, "kd/nyu distill", artifact_root(home))
    assert info.value.hint is not None and exp_id in info.value.hint


def test_experiments_open_in_the_model_training_view(home: Path) -> None:
    # MLflow 3's UI picks an experiment's view by this tag; "genai_development" is the GenAI one
    client = MlflowClient(tracking_uri(home))

    def kind(experiment_id: str) -> str | None:
        return client.get_experiment(experiment_id).tags.get("mlflow.experimentKind")

    created = ensure_experiment(client, "kd/new", artifact_root(home))
    assert kind(created) == "custom_model_development"
    older = client.create_experiment("kd/older")  # made by a depthkd without the tag
    assert ensure_experiment(client, "kd/older", None) == older
    assert kind(older) == "custom_model_development"
    client.set_experiment_tag(older, "mlflow.experimentKind", "genai_development")  # a user's pick
    ensure_experiment(client, "kd/older", None)
    assert kind(older) == "genai_development"
