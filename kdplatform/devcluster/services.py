"""Throwaway services of a laptop-sized cluster, for tests, benchmarks and `make multinode`.

Each starts on a free 127.0.0.1 port with a throwaway data dir, in its own process group, and is
stopped (that group only) when its block ends: an S3-compatible server (moto's, from
`moto[server]`), a PostgreSQL cluster (Debian's `postgresql` binaries), and `depthkd
tracking-server` on PostgreSQL with S3 artifacts. A service whose software is not installed
raises `ServiceUnavailable` (tests skip or, in CI, fail on it); one that does not come up raises
`ServiceError` with the tail of its log.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from depthkd.errors import DepthKDError
from depthkd.ports import HOST, free_port
from depthkd.processes import stop_group

START_TIMEOUT_S = 90.0
# moto accepts any credentials; these name nothing real and never leave the machine.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "depthkd-test",
    "AWS_SECRET_ACCESS_KEY": "depthkd-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class ServiceUnavailable(DepthKDError):
    """The software of a service is not installed here."""


class ServiceError(DepthKDError):
    """A service did not start."""


def spawn(command: list[str], log: Path, **options) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stop exactly what was started
            **options,
        )


def wait_until(ready, process: subprocess.Popen, what: str, log: Path) -> None:
    """Polls `ready()` until true; fails the test (with the log) when `process` dies first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            stop_group(process)
            raise ServiceError(f"{what} did not start (log {log}):\n{tail}")
        time.sleep(0.3)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, OSError):
        return False


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    env: dict[str, str]  # the AWS environment that reaches it

    def create_bucket(self, name: str) -> str:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_ENV["AWS_DEFAULT_REGION"],
        )
        client.create_bucket(Bucket=name)
        return f"s3://{name}"


@contextlib.contextmanager
def s3_server(workdir: Path) -> Iterator[S3Server]:
    """moto's S3 server (from `moto[server]`), in memory, on a free loopback port."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise ServiceUnavailable(
            "moto[server] is not installed (the S3-compatible server)",
            hint="pip install moto[server]",
        ) from None
    port = free_port()
    log = workdir / "moto.log"
    process = spawn([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)], log)
    endpoint = f"http://{HOST}:{port}"
    wait_until(lambda: http_ok(f"{endpoint}/moto-api/"), process, "moto S3 server", log)
    env = {**S3_ENV, "AWS_ENDPOINT_URL_S3": endpoint, "AWS_ENDPOINT_URL": endpoint}
    try:
        yield S3Server(endpoint=endpoint, env=env)
    finally:
        stop_group(process)


def _postgres_bin() -> Path | None:
    """The newest PostgreSQL server binaries of Debian's layout, or on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


@dataclass(frozen=True)
class Postgres:
    port: int
    database: str

    @property
    def sqlalchemy_uri(self) -> str:
        return f"postgresql+psycopg://depthkd@{HOST}:{self.port}/{self.database}"


@contextlib.contextmanager
def postgres(workdir: Path) -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster (initdb, trust auth on loopback) on a free port.

    PostgreSQL refuses to run as root: as root the server runs as the `postgres` user that
    Debian's package creates, in a data dir that user owns.
    """
    bindir = _postgres_bin()
    if bindir is None:
        raise ServiceUnavailable(
            "no PostgreSQL server binaries",
            hint="install Debian's `postgresql` (.ci/install-services)",
        )
    run_as: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="dkd-pg-", dir="/tmp"))  # short: socket paths
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceUnavailable(
                "running as root, and there is no `postgres` user to run PostgreSQL"
            ) from None
        os.chown(data, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    log = workdir / "postgres.log"
    init = subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(data / "db"), "-U", "depthkd", "--auth=trust"],
        capture_output=True,
        text=True,
        check=False,
    )
    if init.returncode:
        shutil.rmtree(data, ignore_errors=True)
        raise ServiceError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    port = free_port()
    command = [*run_as, str(bindir / "postgres"), "-D", str(data / "db"), "-p", str(port)]
    command += ["-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={data}"]
    process = spawn(command, log)
    database = "mlflow"

    def ready() -> bool:
        import psycopg

        try:
            with psycopg.connect(
                host=HOST, port=port, user="depthkd", dbname="postgres", autocommit=True
            ) as conn:
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
                ).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{database}"')
            return True
        except psycopg.OperationalError:
            return False

    wait_until(ready, process, "PostgreSQL", log)
    try:
        yield Postgres(port=port, database=database)
    finally:
        stop_group(process)
        shutil.rmtree(data, ignore_errors=True)


@dataclass(frozen=True)
class TrackingServer:
    uri: str  # http://127.0.0.1:<port>
    backend: str  # the PostgreSQL URI behind it


@contextlib.contextmanager
def tracking_server(
    workdir: Path, pg: Postgres, s3: S3Server, bucket: str
) -> Iterator[TrackingServer]:
    """`depthkd tracking-server` on PostgreSQL with artifacts in `bucket/mlflow`."""
    port = free_port()
    log = workdir / "mlflow-server.log"
    command = [sys.executable, "-m", "depthkd.cli.main", "tracking-server"]
    command += ["--backend-store-uri", pg.sqlalchemy_uri]
    command += ["--artifacts-destination", f"{bucket}/mlflow", "--port", str(port)]
    env = {**os.environ, **s3.env}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = spawn(command, log, env=env)
    uri = f"http://{HOST}:{port}"
    wait_until(lambda: http_ok(f"{uri}/health"), process, "mlflow server", log)
    try:
        yield TrackingServer(uri=uri, backend=pg.sqlalchemy_uri)
    finally:
        stop_group(process)
