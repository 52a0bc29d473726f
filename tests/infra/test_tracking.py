"""The tracking stacks: MLflow 3.17 with PostgreSQL 15 behind it and artifacts proxied to S3, on
one machine (infra/compose) and in the cluster (infra/kuberay/tracking). Both `mlflow server`
command lines are parsed by MLflow's own CLI and held to the same rules; the Kubernetes objects
are held to each other (selectors, ports, the Secret) and to the Ray pods that log to them.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tests.infra.parsing import (
    COMPOSE,
    INFRA,
    SECRET_NAME,
    SECRETISH,
    TRACKING,
    built,
    constraints,
    dependency,
    entrypoints,
    mlflow_server_command,
    pyproject,
    ray_containers,
    walk,
)

MLFLOW_DOCKERFILE = INFRA / "compose" / "Dockerfile.mlflow"
POSTGRES_MAJOR = "15"
# the image's pins and the names of the distributions they pin in constraints.txt
MLFLOW_IMAGE_PINS = {"mlflow": ["mlflow"], r"psycopg\[binary\]": ["psycopg", "psycopg-binary"]}
MLFLOW_IMAGE_PINS["boto3"] = ["boto3"]


def check_server_args(exported: dict[str, str], args: list[str]) -> dict[str, Any]:
    """The rules both servers follow; returns the parsed `mlflow server` parameters.

    The backend URI reaches MLflow in its environment, assembled from variables (no password on
    a command line, `ps` shows those); artifacts are proxied to S3 (artifact serving on, no
    `--default-artifact-root` that would send clients to the bucket); the server listens on all
    interfaces of its container and answers only the host names in `--allowed-hosts`.
    """
    from mlflow.cli import server
    from mlflow.server.security_utils import is_allowed_host_header

    assert not any(a.startswith("--backend-store-uri") for a in args)  # `ps` would show it
    backend = exported["MLFLOW_BACKEND_STORE_URI"]  # read by mlflow server (envvar)
    assert backend.startswith("postgresql+psycopg://")
    user, password = re.fullmatch(r"postgresql\+psycopg://([^:]+):([^@]+)@.*", backend).groups()
    assert (user, password) == ("<POSTGRES_USER>", "<POSTGRES_PASSWORD>"), backend
    params = server.make_context("server", list(args)).params
    assert params["artifacts_destination"].startswith("s3://")
    assert params["serve_artifacts"] is True and params["artifacts_only"] is False
    assert params["default_artifact_root"] is None  # with serving: mlflow-artifacts:/, proxied
    assert params["host"] == "0.0.0.0"  # inside its container or pod only
    assert not params["disable_security_middleware"]
    allowed = (params["allowed_hosts"] or "").split(",")
    assert "*" not in allowed, "--allowed-hosts must list host names"
    assert not is_allowed_host_header(allowed, "evil.example.com:5000")
    return params


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _published(port: Any) -> tuple[str | None, str | None, str]:
    """(host ip, host port, container port) of one `ports:` entry, short or long syntax."""
    if isinstance(port, dict):
        return port.get("host_ip"), str(port.get("published")), str(port["target"])
    parts = str(port).split(":")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return None, parts[0] if len(parts) == 2 else None, parts[-1]


def test_compose_publishes_ports_on_localhost_only() -> None:
    services = _compose()["services"]
    assert services["mlflow"].get("ports")
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        for port in service.get("ports", []):
            host_ip, _, _ = _published(port)
            assert host_ip == "127.0.0.1", f"{name}: {port!r} is not bound to 127.0.0.1"


REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*)?\}")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_holds_no_literal_secret() -> None:
    compose = _compose()
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            if SECRETISH.search(key):
                # only a reference, and without a `:-default` (that would be a literal secret)
                assert REFERENCE.fullmatch(value), f"{name}: {key}={value!r}"
    for where, node in walk(compose):
        if isinstance(node, str):
            for _user, password in re.findall(r"://([^/\s:@]+):([^@\s/]+)@", node):
                assert password.startswith("$"), f"{where}: password in a URI"


def test_compose_variables_are_documented() -> None:
    text = COMPOSE.read_text()
    required = set(re.findall(r"(?<!\$)\$\{([A-Za-z_]\w*)(?::?\?[^}]*)?\}", text))
    example = (INFRA / "compose" / ".env.example").read_text()
    defined = set(re.findall(r"^([A-Za-z_]\w*)=", example, re.M))
    assert required and required <= defined, required - defined
    assert ".env" in (INFRA / "compose" / ".gitignore").read_text().split()


def _mlflow_args() -> tuple[dict[str, str], list[str]]:
    """(variables the script exports, the `mlflow server` arguments) of the mlflow service."""
    command = _compose()["services"]["mlflow"]["command"]
    assert command[:2] == ["sh", "-c"], command[:2]
    return mlflow_server_command(command[2])


@pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning")  # mlflow's own SQLAlchemy use
def test_compose_mlflow_server_parses_and_is_locked_down() -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    exported, args = _mlflow_args()
    assert "@postgres:" in exported["MLFLOW_BACKEND_STORE_URI"]  # the compose service
    params = check_server_args(exported, args)
    services = _compose()["services"]
    hosts = [f"mlflow:{params['port']}"]  # other containers of the compose network
    for port in services["mlflow"]["ports"]:
        _, published, _ = _published(port)
        hosts += [f"localhost:{published}", f"127.0.0.1:{published}"]
    allowed = params["allowed_hosts"].split(",")
    for host in hosts:
        assert is_allowed_host_header(allowed, host), f"--allowed-hosts refuses {host}"


def test_mlflow_image_matches_the_client_the_backend_and_the_lock() -> None:
    text = MLFLOW_DOCKERFILE.read_text()
    declared = {Requirement(d).name for d in pyproject()["project"]["dependencies"]}
    lock = constraints()
    # mlflow as the client allows it, psycopg for postgresql+psycopg://, boto3 for s3:// artifacts,
    # each at the version of constraints.txt (the image's context cannot hold the file)
    for pattern, locked in MLFLOW_IMAGE_PINS.items():
        pinned = re.search(rf'"{pattern}==([\w.]+)"', text)
        assert pinned, f"{MLFLOW_DOCKERFILE.name}: {pattern} is not pinned"
        for name in locked:
            assert lock.get(name) == pinned.group(1), (name, pinned.group(1), lock.get(name))
        if locked[0] in declared:  # the same range as the project's own dependency
            assert Version(pinned.group(1)) in dependency(locked[0]).specifier, locked[0]
    pin = re.search(r'"mlflow==([\w.]+)"', text)
    compose = _compose()
    assert compose["x-mlflow-image"]["image"].endswith(f":{pin.group(1)}")
    assert (COMPOSE.parent / compose["x-mlflow-image"]["build"]["dockerfile"]) == MLFLOW_DOCKERFILE
    (deployment,) = _objects("Deployment")
    (server,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert server["image"].endswith(f"/depthkd-mlflow:{pin.group(1)}"), server["image"]
    assert f"depthkd-mlflow:{pin.group(1)} infra/compose" in MLFLOW_DOCKERFILE.read_text()


def test_compose_services_start_in_order_with_healthchecks() -> None:
    services = _compose()["services"]
    assert services["postgres"]["image"] == f"postgres:{POSTGRES_MAJOR}"
    for name, service in services.items():
        if service.get("restart") != "no":  # one-shot steps have nothing to check
            assert "healthcheck" in service, name
    depends = services["mlflow"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    (bucket_step,) = [n for n, c in depends.items() if c["condition"].endswith("successfully")]
    assert services[bucket_step]["depends_on"]["s3"]["condition"] == "service_healthy"


def test_bucket_step_creates_the_bucket_once(monkeypatch) -> None:
    moto = pytest.importorskip("moto")
    import boto3

    step = _compose()["services"]["create-bucket"]
    command = step["command"]
    assert command[:2] == ["python", "-c"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.amazonaws.com")  # moto's mock
    monkeypatch.setenv("MLFLOW_BUCKET", "mlflow-artifacts")
    with moto.mock_aws():
        exec(command[2], {})  # our own compose file's snippet
        exec(command[2], {})  # a restart finds the bucket there
        buckets = [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]]
    assert buckets == ["mlflow-artifacts"]
    assert "${MLFLOW_BUCKET" in step["environment"]["MLFLOW_BUCKET"]
    assert any(a.startswith("s3://<MLFLOW_BUCKET>") for a in _mlflow_args()[1])


# --- the tracking stack in the cluster (infra/kuberay/tracking) -------------------------------


def _objects(kind: str) -> list[dict[str, Any]]:
    return [o for o in built(TRACKING) if o["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in _objects(kind) if o["metadata"]["name"] == name]
    return obj


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = _pod(workload)["containers"]
    return container


def _server() -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(the MLflow Deployment, the variables its script exports, its `mlflow server` args)."""
    deployment = _named("Deployment", "depthkd-mlflow")
    command = _container(deployment)["command"]
    assert command[:2] == ["sh", "-c"], command[:2]
    return deployment, *mlflow_server_command(command[2])


def _port(container: dict[str, Any], ref: int | str) -> int:
    """A container port by number or by name."""
    for port in container["ports"]:
        if ref in (port["containerPort"], port.get("name")):
            return port["containerPort"]
    raise AssertionError(f"{container['name']} has no port {ref!r}")


def test_tracking_stack_holds_its_objects() -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in built(TRACKING))
    assert kinds == [
        ("Deployment", "depthkd-mlflow"),
        ("Service", "depthkd-mlflow"),
        ("Service", "depthkd-postgres"),
        ("StatefulSet", "depthkd-postgres"),
    ]


def test_services_select_their_pods_and_ports_inside_the_cluster() -> None:
    for workload in [*_objects("Deployment"), *_objects("StatefulSet")]:
        name = workload["metadata"]["name"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), name
        service = _named("Service", name)
        assert service["spec"]["selector"].items() <= labels.items(), name
        # inside the cluster only: no NodePort, LoadBalancer or externalIPs
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", name
        assert "externalIPs" not in service["spec"], name
        for port in service["spec"]["ports"]:
            _port(_container(workload), port.get("targetPort", port["port"]))
    others = [o for o in built(TRACKING) if o["kind"] in ("Deployment", "StatefulSet")]
    for service in _objects("Service"):  # each selects exactly its own workload's pods
        selected = [
            w["metadata"]["name"]
            for w in others
            if service["spec"]["selector"].items()
            <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selected == [service["metadata"]["name"]], selected
    postgres = _named("StatefulSet", "depthkd-postgres")
    assert postgres["spec"]["serviceName"] == "depthkd-postgres"


def test_postgres_keeps_its_data_on_a_volume_of_its_own() -> None:
    postgres = _named("StatefulSet", "depthkd-postgres")
    container = _container(postgres)
    assert container["image"] == f"postgres:{POSTGRES_MAJOR}"  # as infra/compose/compose.yaml
    assert postgres["spec"]["replicas"] == 1
    (claim,) = postgres["spec"]["volumeClaimTemplates"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    env = {e["name"]: e for e in container["env"]}
    # PGDATA below the mount point: the volume's root may hold lost+found, which initdb refuses
    pgdata = env["PGDATA"]["value"]
    assert pgdata.startswith(mount["mountPath"] + "/"), (pgdata, mount["mountPath"])
    context = _pod(postgres)["securityContext"]
    assert context["runAsNonRoot"] is True and context["fsGroup"] == context["runAsUser"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert "pg_isready" in " ".join(container[probe]["exec"]["command"]), probe


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_tracking_credentials_come_from_the_one_secret() -> None:
    database = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    needs = {
        "depthkd-postgres": (_named("StatefulSet", "depthkd-postgres"), database),
        "depthkd-mlflow": (
            _named("Deployment", "depthkd-mlflow"),
            database | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},  # the artifact bucket
        ),
    }
    for name, (workload, keys) in needs.items():
        env = _env(_container(workload))
        for key in keys:
            ref = env[key].get("valueFrom", {}).get("secretKeyRef")
            assert ref and ref["name"] == SECRET_NAME and ref["key"] == key, (name, key)
        for key, entry in env.items():
            if SECRETISH.search(key):
                assert "value" not in entry, f"{name}: {key} has a literal value"


def test_mlflow_server_builds_its_store_uri_from_the_secret_in_its_shell() -> None:
    deployment, exported, _ = _server()
    script = _container(deployment)["command"][2]
    # Kubernetes expands $(VAR) in a command itself: the password would then be on the command
    # line; ${VAR} is left to the container's shell
    assert "$(" not in script
    backend = urlsplit(exported["MLFLOW_BACKEND_STORE_URI"])
    postgres = _named("Service", "depthkd-postgres")
    (port,) = postgres["spec"]["ports"]
    assert (backend.hostname, backend.port) == ("depthkd-postgres", port["port"]), backend
    assert backend.path == "/<POSTGRES_DB>", backend.path
    env = _env(_container(deployment))
    for variable in re.findall(r"<(\w+)>", exported["MLFLOW_BACKEND_STORE_URI"]):
        assert variable in env, f"{variable} is not in the container's environment"
    wait = _pod(deployment)["initContainers"][0]["command"][-1]
    assert f"-h depthkd-postgres -p {port['port']}" in wait  # it starts once its store is up


@pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning")  # mlflow's own SQLAlchemy use
def test_mlflow_server_in_the_cluster_parses_and_answers_its_clients() -> None:
    from mlflow.server.security_utils import HEALTH_ENDPOINTS, is_allowed_host_header

    deployment, exported, args = _server()
    params = check_server_args(exported, args)
    container = _container(deployment)
    assert params["port"] == _port(container, "http")
    service = _named("Service", "depthkd-mlflow")
    (port,) = service["spec"]["ports"]
    assert _port(container, port["targetPort"]) == params["port"]
    allowed = params["allowed_hosts"].split(",")
    # the Ray pods (same namespace), other namespaces, `kubectl port-forward ... 5000:5000`
    for host in (
        f"depthkd-mlflow:{port['port']}",
        f"depthkd-mlflow.depthkd.svc.cluster.local:{port['port']}",
        f"localhost:{port['port']}",
        f"127.0.0.1:{port['port']}",
    ):
        assert is_allowed_host_header(allowed, host), f"--allowed-hosts refuses {host}"
    assert not is_allowed_host_header(allowed, f"depthkd-mlflow.evil.example.com:{port['port']}")
    # the kubelet's probes send the pod IP as Host: only MLflow's health routes skip the check
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in HEALTH_ENDPOINTS, probe
        assert _port(container, container[probe]["httpGet"]["port"]) == params["port"]


def _tracking_uris() -> dict[str, str]:
    return {
        where: entry.get("value")
        for where, container in ray_containers()
        for entry in container.get("env", [])
        if entry["name"] == "MLFLOW_TRACKING_URI"
    }


@pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning")  # mlflow's own SQLAlchemy use
def test_ray_pods_log_to_the_tracking_service() -> None:
    # a plain value (no secret: the in-cluster service has no credentials), the same everywhere,
    # naming the Service and the port the server listens on, a host the server accepts
    from mlflow.server.security_utils import is_allowed_host_header

    uris = _tracking_uris()
    assert len(uris) == len(ray_containers()), "a Ray container without MLFLOW_TRACKING_URI"
    assert len(set(uris.values())) == 1, set(uris.values())
    (uri,) = set(uris.values())
    parts = urlsplit(uri)
    service = _named("Service", "depthkd-mlflow")
    (port,) = service["spec"]["ports"]
    assert (parts.scheme, parts.hostname, parts.port) == ("http", "depthkd-mlflow", port["port"])
    assert parts.username is None and parts.password is None
    _, exported, args = _server()
    params = check_server_args(exported, args)
    assert is_allowed_host_header(params["allowed_hosts"].split(","), parts.netloc)


@pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning")  # mlflow's own SQLAlchemy use
def test_artifacts_go_to_the_bucket_of_the_checkpoints() -> None:
    # one bucket, one set of S3 credentials in the Secret for the Ray pods and the server
    _, exported, args = _server()
    params = check_server_args(exported, args)
    bucket = urlsplit(params["artifacts_destination"]).netloc
    storages = {
        urlsplit(inv.override("train.storage")).netloc
        for _, _, inv in entrypoints()
        if (inv.override("train.storage") or "").startswith("s3://")
    }
    assert storages == {bucket}, (storages, bucket)


def test_tracking_manifests_hold_no_secret_value() -> None:
    for obj in built(TRACKING):
        for where, node in walk(obj):
            if isinstance(node, str):
                for _user, password in re.findall(r"://([^/\s:@]+):([^@\s/]+)@", node):
                    assert password.startswith("${"), f"{where}: password in a URI"
