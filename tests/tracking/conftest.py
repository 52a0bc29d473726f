"""Fixtures of the tracking tests: a real SQLite MLflow store under tmp_path, nothing global."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from kdplatform.tracking.store import DB_FILE, tracking_uri


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow database with its schema created once (migrations take ~1 s per store)."""
    home = tmp_path_factory.mktemp("template")
    MlflowClient(tracking_uri(home)).search_experiments()
    return home / DB_FILE


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_db: Path) -> Iterator[Path]:
    """`DEPTHKD_HOME` in tmp_path with a fresh store, no `$MLFLOW_TRACKING_URI`, and a cwd that
    must stay empty (MLflow falls back to ./mlruns or ./mlflow.db when a call misses our URI)."""
    root = tmp_path / "home"
    root.mkdir()
    shutil.copyfile(migrated_db, root / DB_FILE)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DEPTHKD_HOME", str(root))
    monkeypatch.chdir(cwd)
    yield root
    assert not list(cwd.iterdir()), "MLflow wrote to the working directory"
