"""Fixtures of the tracking tests: a real SQLite MLflow store under tmp_path, nothing global."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import seed_store


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_db: Path) -> Iterator[Path]:
    """`DEPTHKD_HOME` in tmp_path with a fresh store (its schema copied from the session's
    `migrated_db`), no `$MLFLOW_TRACKING_URI`, and a cwd that must stay empty (MLflow falls back
    to ./mlruns or ./mlflow.db when a call misses our URI)."""
    root = tmp_path / "home"
    seed_store(root, migrated_db)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DEPTHKD_HOME", str(root))
    monkeypatch.chdir(cwd)
    yield root
    assert not list(cwd.iterdir()), "MLflow wrote to the working directory"
