"""Real local Ray nodes (DESIGN.md §5): a head with the job server and extra nodes joined with
`ray start --address`, each on free loopback ports with its own `--temp-dir` and environment.

Every node runs as `ray start --block` in its own process group; stopping one stops exactly that
group (never `ray stop`, which would kill every Ray process on the machine, including other
people's clusters). Ray 2.60 turns token authentication on when `~/.ray/auth_token` exists and
`RAY_AUTH_MODE` is unset; nodes, `ray job` clients and job drivers must agree, so `RAY_AUTH_MODE`
is set explicitly (to `disabled`: the nodes listen on 127.0.0.1 only and live for one session).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from depthkd.devcluster.services import ServiceError, ServiceUnavailable

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")
HOST = "127.0.0.1"
AUTH_MODE = "disabled"
START_TIMEOUT_S = 90.0
STOP_GRACE_S = 5.0
# Variables that must not leak from the caller into the cluster or the `ray` client.
_SCRUBBED = ("RAY_ADDRESS", "RAY_AUTH_MODE", "MLFLOW_TRACKING_URI", "DEPTHKD_HOME")


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that are free right now (all held open until all chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def ray_env(**extra: str) -> dict[str, str]:
    """Env of the head and of `ray` CLI clients: this venv first on PATH, auth mode explicit."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env["RAY_AUTH_MODE"] = AUTH_MODE
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class LocalRayCluster:
    """Addresses of a running local head node.

    Attributes:
        gcs_address: `127.0.0.1:<port>`, for `RAY_ADDRESS` / `ray.init(address=...)`.
        dashboard_url: `http://127.0.0.1:<port>`, for `ray job ... --address`.
        temp_dir: the head's `--temp-dir` (sessions, logs, sockets).
        env: environment for `ray` CLI clients talking to this cluster.
    """

    gcs_address: str
    dashboard_url: str
    temp_dir: Path
    head_log: Path
    process: subprocess.Popen = field(repr=False)
    env: dict[str, str] = field(repr=False)

    def ray_cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Runs `ray <args>` against this cluster (output captured, never raises on exit status)."""
        return subprocess.run(
            [RAY, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the head's output and of the main Ray logs, for failure messages."""
        logs = [self.head_log]
        session_logs = self.temp_dir / "session_latest" / "logs"
        logs += [session_logs / name for name in ("gcs_server.out", "raylet.out", "dashboard.log")]
        parts = []
        for path in logs:
            if path.is_file():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(parts) or "(no logs)"


def _stop_group(process: subprocess.Popen, temp_dir: Path) -> None:
    """SIGTERM to the head's process group, SIGKILL after a grace period; then strays."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        process.poll()  # reap the head: a zombie still counts as a group member
        if not _group_alive(process.pid):
            break
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    # Processes of this cluster that left the group (setsid): they name our temp dir.
    for pid in _pids_mentioning(str(temp_dir)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids_mentioning(needle: str) -> list[int]:
    pids = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def ray_head(
    *,
    num_cpus: int = 2,
    resources: dict[str, float] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[LocalRayCluster]:
    """A head node on free 127.0.0.1 ports with the job server; stopped (its group only) after.

    Args:
        resources: custom resources of the head (`--resources`).
        env: environment of the head's processes (workers inherit it); default `ray_env()`.
    """
    if shutil.which("ray", path=str(VENV_BIN)) is None:
        raise ServiceUnavailable(f"no `ray` executable next to {sys.executable}")
    # Short path: Ray's unix sockets live under it (sun_path is limited to 107 bytes).
    temp_dir = Path(tempfile.mkdtemp(prefix="dkd-ray-", dir="/tmp"))
    gcs, dashboard, agent_http, agent_grpc, client, runtime_env, metrics = free_ports(7)
    command = [
        RAY, "start", "--head", "--block",
        "--node-ip-address", HOST,
        "--port", str(gcs),
        "--include-dashboard", "true",
        "--dashboard-host", HOST,
        "--dashboard-port", str(dashboard),
        "--dashboard-agent-listen-port", str(agent_http),
        "--dashboard-agent-grpc-port", str(agent_grpc),
        "--ray-client-server-port", str(client),
        "--runtime-env-agent-port", str(runtime_env),
        "--metrics-export-port", str(metrics),
        "--num-cpus", str(num_cpus),
        "--num-gpus", "0",
        "--object-store-memory", str(256 * 1024**2),
        "--temp-dir", str(temp_dir),
        "--disable-usage-stats",
    ]  # fmt: skip
    if resources:
        command += ["--resources", json.dumps(resources)]
    env = env or ray_env()
    process = _start(command, env, temp_dir)
    cluster = LocalRayCluster(
        gcs_address=f"{HOST}:{gcs}",
        dashboard_url=f"http://{HOST}:{dashboard}",
        temp_dir=temp_dir,
        head_log=temp_dir / "node.out",
        process=process,
        env=env,
    )
    try:
        _wait_for_job_server(cluster)
        yield cluster
    finally:
        _stop_group(process, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@contextlib.contextmanager
def ray_worker_node(
    head: LocalRayCluster,
    *,
    num_cpus: int = 2,
    resources: dict[str, float] | None = None,
    env: dict[str, str],
) -> Iterator[Path]:
    """A second node joined with `ray start --address`, with its own `--temp-dir` and its own
    environment (workers inherit it); yields its temp dir. Returns once the head counts it."""
    temp_dir = Path(tempfile.mkdtemp(prefix="dkd-rayw-", dir="/tmp"))
    agent_http, agent_grpc, runtime_env, metrics = free_ports(4)
    command = [
        RAY, "start", "--block",
        "--address", head.gcs_address,
        "--node-ip-address", HOST,
        "--dashboard-agent-listen-port", str(agent_http),
        "--dashboard-agent-grpc-port", str(agent_grpc),
        "--runtime-env-agent-port", str(runtime_env),
        "--metrics-export-port", str(metrics),
        "--num-cpus", str(num_cpus),
        "--num-gpus", "0",
        "--object-store-memory", str(256 * 1024**2),
        "--temp-dir", str(temp_dir),
        "--disable-usage-stats",
    ]  # fmt: skip
    if resources:
        command += ["--resources", json.dumps(resources)]
    process = _start(command, env, temp_dir)
    try:
        _wait_for_nodes(head, 2, process, temp_dir)
        yield temp_dir
    finally:
        _stop_group(process, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _start(command: list[str], env: dict[str, str], temp_dir: Path) -> subprocess.Popen:
    with (temp_dir / "node.out").open("wb") as out:
        return subprocess.Popen(
            command,
            env=env,
            cwd=temp_dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: teardown stops exactly this node
        )


def _wait_for_nodes(
    head: LocalRayCluster, count: int, process: subprocess.Popen, temp_dir: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        probe = head.ray_cli(
            "list", "nodes", "--address", head.dashboard_url, "--format", "json", timeout=30
        )
        if probe.returncode == 0:
            alive = [n for n in json.loads(probe.stdout) if n.get("state") == "ALIVE"]
            if len(alive) >= count:
                return
        time.sleep(1.0)
    log = (temp_dir / "node.out").read_text(errors="replace")[-3000:]
    raise ServiceError(f"the worker node did not join within {START_TIMEOUT_S:.0f} s:\n{log}")


def _wait_for_job_server(cluster: LocalRayCluster) -> None:
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < START_TIMEOUT_S:
        if cluster.process.poll() is not None:
            raise ServiceError(
                f"`ray start --head` exited with {cluster.process.returncode} before the job "
                f"server came up\n{cluster.log_tail()}"
            )
        try:
            probe = cluster.ray_cli("job", "list", "--address", cluster.dashboard_url, timeout=30)
        except subprocess.TimeoutExpired:
            last = "`ray job list` timed out"
            continue
        if probe.returncode == 0:
            return
        last = (probe.stdout + probe.stderr).strip()[-2000:]
        time.sleep(2.0)
    raise ServiceError(
        f"the job server at {cluster.dashboard_url} did not answer `ray job list` within "
        f"{START_TIMEOUT_S:.0f} s; last answer:\n{last}\n{cluster.log_tail()}"
    )
