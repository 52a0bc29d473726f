"""`mlflow server` for many writers: the sweep's local one, and `depthkd tracking-server`.

SQLite waits for a lock and still fails with "database is locked" when several processes write at
once or race through their first schema migration (MLflow #6490). Parallel sweep trials are such
writers, so a sweep on the embedded default puts one server process (one worker: every write goes
through one connection pool) on 127.0.0.1 in front of the store for its duration; clients then
talk HTTP. With `$MLFLOW_TRACKING_URI` already set, the user's server is used as it is.

A cluster runs one long-lived server (`depthkd tracking-server`): PostgreSQL behind it, artifacts
in object storage (`--artifacts-destination s3://...`, served through the server, so clients
need no S3 credentials), on 127.0.0.1 unless told otherwise, and with `--allowed-hosts` so that
clients using a service name are not refused with 403 "Invalid Host header".
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from depthkd import storage
from depthkd.environ import patched_environ
from depthkd.errors import DepthKDError
from depthkd.ports import HOST, free_port
from depthkd.processes import stop_group
from depthkd.tracking.store import ARTIFACT_DIR, tracking_uri, uses_server_artifacts

START_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def local_tracking_server(home: Path, *, log_file: Path) -> Iterator[str]:
    """Serves the default store of `home` on a free loopback port; yields the `http://` URI.

    While the block runs, `$MLFLOW_TRACKING_URI` points at the server (restored afterwards), so
    everything in this process and in processes started from it logs through it. When the
    tracking URI already names a server (http/https), yields it unchanged and starts nothing; a
    database URI (`sqlite:///...`) gets the local server in front of it.

    Raises:
        DepthKDError: the server did not answer /health in time (its log file is named).
    """
    store = tracking_uri(home)
    if uses_server_artifacts(store):  # the user's server: many writers are its job
        yield store
        return
    port = free_port()
    url = f"http://{HOST}:{port}"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command, env = server_command(
        store, str(home.resolve() / ARTIFACT_DIR), host=HOST, port=port, workers=1
    )
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise DepthKDError(
                    f"the local MLflow server for {store} did not start (see {log_file})"
                )
            time.sleep(0.5)
        # the URI for this process and its children; MLflow's "View run at <url>" lines off
        changed = {
            "MLFLOW_TRACKING_URI": url,
            "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
            "NO_PROXY": ",".join(filter(None, [os.environ.get("NO_PROXY"), HOST])),
        }
        with patched_environ(changed):
            yield url
    finally:
        stop_group(process, STOP_GRACE_S)


def server_command(
    backend: str,
    artifacts: str,
    *,
    host: str = HOST,
    port: int = 5000,
    workers: int = 1,
    allowed_hosts: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """The `mlflow server` command line and environment for a store and an artifact location.

    The backend URI (it may hold a database password) travels in the environment, not on the
    command line, where any user of the machine could read it.
    """
    command = [sys.executable, "-m", "mlflow", "server", "--artifacts-destination", artifacts]
    command += ["--host", host, "--port", str(port), "--workers", str(workers)]
    if allowed_hosts:
        command += ["--allowed-hosts", ",".join(allowed_hosts)]
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": backend,
        # no background job runner (MLflow 3 starts a pool of huey consumers for it by default)
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    endpoint = storage.endpoint_url()
    if endpoint and storage.is_remote(artifacts):
        env.setdefault("MLFLOW_S3_ENDPOINT_URL", endpoint)  # MLflow's own S3 artifact client
    return command, env


def redacted(uri: str) -> str:
    """`uri` with any password replaced by `***`, for printing."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
