"""`depthkd tracking-server`: the MLflow server a cluster's jobs and sweeps share.

PostgreSQL behind it (many writers), artifacts in object storage served through it (clients need
no S3 credentials), bound to 127.0.0.1 unless `--host` says otherwise. Clients find it through
`MLFLOW_TRACKING_URI=http://<host>:<port>`.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess

from depthkd.config.schema import depthkd_home
from depthkd.errors import ConfigError
from depthkd.ports import HOST

BACKEND_ENV = "MLFLOW_BACKEND_STORE_URI"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "tracking-server",
        help="run the shared MLflow server (PostgreSQL store, S3 artifacts) in the foreground",
        description=__doc__ + "\nThe backend URI may hold a password: pass it in the "
        f"environment ({BACKEND_ENV}) rather than on the command line; it is never printed. "
        "The S3 endpoint and credentials come from the AWS environment "
        "(AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ... or a profile).",
    )
    parser.add_argument(
        "--backend-store-uri",
        default=os.environ.get(BACKEND_ENV),
        help=f"e.g. postgresql+psycopg://user@host:5432/mlflow (default: ${BACKEND_ENV}, else "
        "the local SQLite store of $DEPTHKD_HOME)",
    )
    parser.add_argument(
        "--artifacts-destination",
        help="where artifacts go, e.g. s3://bucket/mlflow (default: $DEPTHKD_HOME/mlartifacts)",
    )
    parser.add_argument("--host", default=HOST, help=f"bind address (default {HOST})")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument(
        "--workers",
        type=int,
        help="server processes (default 2; 1 for a SQLite store, which takes one writer)",
    )
    parser.add_argument(
        "--allowed-hosts",
        default="",
        help="extra host names clients may use, comma-separated (a Kubernetes service name); "
        "localhost and the bind address are always allowed",
    )
    parser.set_defaults(run=run)


def allowed_hosts(host: str, port: int, extra: str) -> list[str]:
    """Host headers the server accepts: loopback names, the bind address and `extra`, each with
    and without the port (MLflow compares the whole Host header)."""
    names = ["localhost", "127.0.0.1", host, *filter(None, (n.strip() for n in extra.split(",")))]
    unique = list(dict.fromkeys(names))
    return [*unique, *(f"{name}:{port}" for name in unique)]


def run(args: argparse.Namespace) -> int:
    from depthkd.tracking.server import redacted, server_command
    from depthkd.tracking.store import ARTIFACT_DIR, tracking_uri

    home = depthkd_home()
    backend = args.backend_store_uri or tracking_uri(home)
    if backend.startswith(("http://", "https://")):
        raise ConfigError(f"--backend-store-uri {redacted(backend)} is a server, not a database")
    artifacts = args.artifacts_destination or str(home / ARTIFACT_DIR)
    workers = args.workers or (1 if backend.startswith("sqlite:") else 2)
    command, env = server_command(
        backend,
        artifacts,
        host=args.host,
        port=args.port,
        workers=workers,
        allowed_hosts=allowed_hosts(args.host, args.port, args.allowed_hosts),
    )
    print(f"mlflow server: store {redacted(backend)}, artifacts {artifacts}")
    reachable = socket.gethostname() if args.host in ("0.0.0.0", "::") else args.host
    print(f"clients: export MLFLOW_TRACKING_URI=http://{reachable}:{args.port}", flush=True)
    return subprocess.call(command, env=env)
