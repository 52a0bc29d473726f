"""`depthkd tracking-server` on a real PostgreSQL: host checks, no password in sight."""

from __future__ import annotations

import contextlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests import services
from tests.local_cluster import REPO_ROOT

pytestmark = pytest.mark.multiproc

SERVICE_NAME = "mlflow.depthkd.svc"
PASSWORD = "not-a-real-password"


def _status(url: str, host: str) -> int:
    """Status of an API call (/health is exempt from MLflow's host check) with `Host: host`."""
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    request = urllib.request.Request(api, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _process_tree(root: int) -> list[int]:
    pids, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                children = [int(c) for c in (task / "children").read_text().split()]
                pids += children
                frontier += children
    return pids


def test_server_allows_named_hosts_and_hides_the_password(tmp_path: Path) -> None:
    with services.postgres(tmp_path) as pg:
        # trust authentication ignores the password: it only has to stay out of sight
        backend = pg.sqlalchemy_uri.replace("depthkd@", f"depthkd:{PASSWORD}@")
        port = services.free_port()
        log = tmp_path / "server.log"
        command = [sys.executable, "-m", "depthkd.cli.main", "tracking-server"]
        command += ["--port", str(port), "--artifacts-destination", str(tmp_path / "artifacts")]
        process = services.spawn(
            [*command, "--allowed-hosts", SERVICE_NAME],
            log,
            cwd=REPO_ROOT,
            env={**os.environ, "MLFLOW_BACKEND_STORE_URI": backend},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            services.wait_until(lambda: services.http_ok(f"{url}/health"), process, "server", log)
            assert _status(url, f"{SERVICE_NAME}:{port}") == 200
            assert _status(url, f"127.0.0.1:{port}") == 200
            assert _status(url, "intruder.example") == 403
            command_lines = [
                Path(f"/proc/{pid}/cmdline").read_bytes() for pid in _process_tree(process.pid)
            ]
            assert len(command_lines) > 1  # mlflow and its server workers
            assert not any(PASSWORD.encode() in line for line in command_lines)
        finally:
            services.stop_group(process)
        text = log.read_text()
        assert "depthkd:***@127.0.0.1" in text
        assert PASSWORD not in text
