"""The cluster and service definitions under infra/, validated without Docker or Kubernetes.

KubeRay manifests against the v1 CRD schemas (strict: unknown fields are errors; skipped without
the CRD files), the `ray up` config against the schema in the ray wheel, entrypoints against the
real CLI and config loader, and the version pins, secrets, ports and build contexts against each
other and against pyproject.toml.
"""

from __future__ import annotations

import argparse
import copy
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.infra import kube_schema
from tests.infra.parsing import (
    ALL_DOCKERFILES,
    COMPOSE,
    DOCKERFILES,
    INFRA,
    KUBERAY,
    LAUNCHER,
    ROOT,
    DockerIgnore,
    by_kind,
    cluster_specs,
    copy_sources,
    dockerfile,
    entrypoints,
    invocation,
    kuberay_docs,
    pod_specs,
    pyproject,
    run_commands,
    walk,
    yaml_docs,
)

SECRET_NAME = "depthkd-secrets"
SECRET_VARS = (
    "MLFLOW_TRACKING_URI",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
)
REQUIRED_SECRET_VARS = SECRET_VARS[:3]  # the endpoints are optional (S3-compatible stores only)
SECRETISH = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|TRACKING_URI", re.IGNORECASE)
AWS_KEY = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
GPU_RESOURCE = "nvidia.com/gpu"
SHARED_CLAIM = "depthkd-shared"
GPU_DOCKERFILE = INFRA / "docker" / "Dockerfile.gpu"
CPU_DOCKERFILE = INFRA / "docker" / "Dockerfile.cpu"
MLFLOW_DOCKERFILE = INFRA / "compose" / "Dockerfile.mlflow"
RAY_DOCS = [(p, d) for p, d in kuberay_docs() if d.get("kind") in kube_schema.CRD_FILES]


def _requirement(name: str) -> Requirement:
    for line in pyproject()["project"]["dependencies"]:
        req = Requirement(line)
        if req.name == name:
            return req
    raise AssertionError(f"pyproject.toml has no dependency on {name}")


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod["containers"]


def _ray_containers() -> list[tuple[str, dict[str, Any]]]:
    """(where, container) of every head and worker container of every cluster spec."""
    return [
        (f"{name}:{role}:{c['name']}", c)
        for name, spec in cluster_specs()
        for role, pod in pod_specs(spec)
        for c in _containers(pod)
    ]


def _gpus(container: dict[str, Any]) -> int:
    return int(container.get("resources", {}).get("limits", {}).get(GPU_RESOURCE, 0))


# --- KubeRay: the CRD schemas -----------------------------------------------------------------


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, Any]:
    directory = kube_schema.crd_dir()
    if directory is None:
        pytest.skip(
            f"KubeRay CRDs not found: set ${kube_schema.CRD_ENV} to a directory holding "
            f"{' and '.join(kube_schema.CRD_FILES.values())} (helm-chart/kuberay-operator/crds/ "
            f"of ray-project/kuberay), or put them in {kube_schema.SHARED_CRDS}"
        )
    return kube_schema.load_validators(directory)


@pytest.mark.parametrize(("path", "doc"), RAY_DOCS, ids=[p.name for p, _ in RAY_DOCS])
def test_kuberay_manifest_matches_the_crd_schema(crd_validators, path: Path, doc: dict) -> None:
    assert doc["apiVersion"] == kube_schema.API_VERSION, path.name
    errors = kube_schema.schema_errors(crd_validators[doc["kind"]], doc)
    assert not errors, f"{path.name} ({doc['kind']}):\n" + "\n".join(errors)


def test_crd_validation_rejects_an_unknown_field(crd_validators) -> None:
    _, job = by_kind("RayJob")[0]
    bad = copy.deepcopy(job)
    bad["spec"]["rayClusterSpec"]["headGroupSpec"]["bogus"] = True
    errors = kube_schema.schema_errors(crd_validators["RayJob"], bad)
    assert any("spec.rayClusterSpec.headGroupSpec" in e and "'bogus'" in e for e in errors), errors


def test_crd_validation_rejects_a_misspelled_field(crd_validators) -> None:
    _, cluster = by_kind("RayCluster")[0]
    bad = copy.deepcopy(cluster)
    group = bad["spec"]["workerGroupSpecs"][0]
    group["minReplica"] = group.pop("minReplicas")
    errors = kube_schema.schema_errors(crd_validators["RayCluster"], bad)
    assert any("spec.workerGroupSpecs.0" in e and "'minReplica'" in e for e in errors), errors


def test_crd_validation_checks_types(crd_validators) -> None:
    _, cluster = by_kind("RayCluster")[0]
    bad = copy.deepcopy(cluster)
    bad["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "four"
    bad["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # must be a string
    errors = kube_schema.schema_errors(crd_validators["RayCluster"], bad)
    assert any(e.startswith("spec.workerGroupSpecs.0.maxReplicas") for e in errors), errors
    assert any(e.startswith("spec.headGroupSpec.rayStartParams.num-cpus") for e in errors), errors


# --- KubeRay: what the operator and our jobs need ---------------------------------------------


def test_kuberay_folder_holds_the_expected_objects() -> None:
    kinds = sorted((d["apiVersion"], d["kind"]) for _, d in kuberay_docs())
    allowed = {
        ("ray.io/v1", "RayCluster"),
        ("ray.io/v1", "RayJob"),
        ("v1", "Secret"),
        ("v1", "PersistentVolumeClaim"),
    }
    assert set(kinds) <= allowed, kinds
    assert kinds.count(("ray.io/v1", "RayJob")) >= 2 and ("ray.io/v1", "RayCluster") in kinds


def test_ray_version_is_the_one_the_images_pin_and_pyproject_allows() -> None:
    pins = {
        m for path in DOCKERFILES for m in re.findall(r"\bray==([\w.]+)", path.read_text())
    } | set(re.findall(r"\bray==([\w.]+)", LAUNCHER.read_text()))
    assert len(pins) == 1, f"images and launcher pin different rays: {pins}"
    (pin,) = pins
    assert Version(pin) in _requirement("ray").specifier, (pin, str(_requirement("ray")))
    for name, spec in cluster_specs():
        assert spec["rayVersion"] == pin, name


def test_raycluster_autoscales_a_gpu_worker_group() -> None:
    (_, cluster), *_ = by_kind("RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = spec["workerGroupSpecs"]
    assert any(
        g["maxReplicas"] > g["minReplicas"]
        and all(_gpus(c) >= 1 for c in _containers(g["template"]["spec"]))
        for g in groups
    ), "no GPU worker group with room to autoscale"


def test_worker_groups_have_consistent_bounds_and_gpus() -> None:
    for name, spec in cluster_specs():
        assert all(_gpus(c) == 0 for c in _containers(spec["headGroupSpec"]["template"]["spec"]))
        for group in spec["workerGroupSpecs"]:
            where = f"{name}:{group['groupName']}"
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], where
            for container in _containers(group["template"]["spec"]):
                limits = container["resources"]["limits"]
                requests = container["resources"].get("requests", {})
                assert _gpus(container) >= 1, f"{where}: no {GPU_RESOURCE} limit"
                # extended resources: a request, when given, must equal the limit
                assert requests.get(GPU_RESOURCE, limits[GPU_RESOURCE]) == limits[GPU_RESOURCE]


def test_one_image_everywhere_matching_the_gpu_dockerfile() -> None:
    images = {c["image"] for _, c in _ray_containers()}
    assert len(images) == 1, images
    (image,) = images
    assert image.endswith("-gpu"), image  # the tag of infra/docker/Dockerfile.gpu's build
    assert image.split("/")[-1].split(":")[0] == "depthkd"


def test_containers_run_where_the_image_keeps_the_entrypoints() -> None:
    workdirs = [i.args for i in dockerfile(GPU_DOCKERFILE) if i.keyword == "WORKDIR"]
    uid = re.search(r"useradd\b[^&]*--uid (\d+)", GPU_DOCKERFILE.read_text())
    assert workdirs and uid
    for where, container in _ray_containers():
        assert container.get("workingDir") == workdirs[-1], where
    for name, spec in cluster_specs():
        for role, pod in pod_specs(spec):
            assert pod["securityContext"]["runAsUser"] == int(uid.group(1)), f"{name}:{role}"


def test_rayjob_name_is_the_run_name() -> None:
    # A retry (backoffLimit) runs on a new RayCluster: it resumes only under the same run name.
    for path, job, inv in entrypoints():
        name = job["metadata"]["name"]
        assert inv.override("name") == name, f"{path.name}: name= must be {name!r}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 40, name


def test_rayjobs_retry_and_clean_up() -> None:
    for path, job in by_kind("RayJob"):
        spec = job["spec"]
        assert spec.get("backoffLimit", 0) >= 1, path.name
        # ttlSecondsAfterFinished acts only together with shutdownAfterJobFinishes
        assert spec["shutdownAfterJobFinishes"] is True, path.name
        assert spec["ttlSecondsAfterFinished"] > 0, path.name
        assert "runtimeEnvYAML" not in spec or _runtime_env_ok(spec["runtimeEnvYAML"]), path.name


def _runtime_env_ok(text: str) -> bool:
    env_vars = (yaml.safe_load(text) or {}).get("env_vars", {})
    return not any(SECRETISH.search(k) or k in SECRET_VARS for k in env_vars)


def test_distill_job_checkpoints_outside_the_cluster() -> None:
    jobs = [(p, inv) for p, _, inv in entrypoints() if inv.command != "sweep"]
    assert jobs
    for path, inv in jobs:
        assert (inv.override("train.storage") or "").startswith("s3://"), path.name


def test_local_paths_of_jobs_are_on_the_shared_volume() -> None:
    (_, pvc), *_ = by_kind("PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == SHARED_CLAIM
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    jobs = {p.name: inv for p, _, inv in entrypoints()}
    for name, spec in cluster_specs():
        job = jobs.get(name.split(":")[0])
        mounts = set()
        for role, pod in pod_specs(spec):
            claims = {
                v["name"]
                for v in pod.get("volumes", [])
                if v.get("persistentVolumeClaim", {}).get("claimName") == SHARED_CLAIM
            }
            for container in _containers(pod):
                where = f"{name}:{role}:{container['name']}"
                paths = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in claims}
                assert len(paths) == 1, f"{where}: mounts {SHARED_CLAIM} {len(paths)} times"
                mounts |= paths
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                assert _under(env.get("DEPTHKD_HOME"), paths), f"{where}: DEPTHKD_HOME"
        assert len(mounts) == 1, f"{name}: head and workers mount the shared volume differently"
        shards = job.override("data.shards") if job is not None else None
        if shards is not None and not shards.startswith("s3://"):
            assert _under(shards, mounts), f"{name}: data.shards is neither on S3 nor shared"


def _under(path: str | None, roots: set[str]) -> bool:
    return path is not None and any(Path(path).is_relative_to(root) for root in roots)


def test_clusters_fit_their_jobs() -> None:
    from depthkd.tune.sweep import load_sweep

    for path, job, inv in entrypoints():
        groups = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        per_pod = [max(_gpus(c) for c in _containers(g["template"]["spec"])) for g in groups]
        if inv.command == "sweep":
            # the sweep sizes its concurrency from the GPUs present when it starts
            spec = load_sweep(ROOT / inv.config, inv.overrides)
            have = sum(g["minReplicas"] * n for g, n in zip(groups, per_pod, strict=True))
            assert spec.resources.gpus >= 1 and have >= spec.resources.gpus, path.name
            assert all(g["minReplicas"] == g["replicas"] for g in groups), path.name
        else:
            workers = int(inv.override("train.workers") or 1)
            assert inv.override("train.use_gpu") == "true", path.name
            most = sum(g["maxReplicas"] * n for g, n in zip(groups, per_pod, strict=True))
            assert most >= workers, f"{path.name}: {workers} GPU workers, at most {most} GPUs"


# --- secrets ----------------------------------------------------------------------------------


def test_secret_template_holds_placeholders_only() -> None:
    (path, secret), *_ = by_kind("Secret")
    assert path.name.endswith(".example.yaml") and secret["metadata"]["name"] == SECRET_NAME
    values = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert set(SECRET_VARS) <= set(values), sorted(values)
    for key, value in values.items():
        assert re.search(r"<[^<>]+>", str(value)), f"{key}: not a <placeholder>"
    assert "secret.yaml" in (KUBERAY / ".gitignore").read_text().split()


def test_head_and_workers_get_credentials_from_the_secret() -> None:
    (_, secret), *_ = by_kind("Secret")
    keys = set(secret["stringData"])
    for where, container in _ray_containers():
        from_secret = set()
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["name"] == SECRET_NAME:
                assert ref["key"] in keys, f"{where}: {ref['key']} is not in the Secret"
                from_secret.add(entry["name"])
        for source in container.get("envFrom", []):
            if source.get("secretRef", {}).get("name") == SECRET_NAME:
                from_secret |= keys
        missing = set(REQUIRED_SECRET_VARS) - from_secret
        assert not missing, f"{where}: {sorted(missing)} not from {SECRET_NAME}"


def test_no_manifest_carries_a_secret_value() -> None:
    for path, doc in kuberay_docs():
        if doc["kind"] == "Secret":
            continue
        for where, node in walk(doc):
            if isinstance(node, dict) and isinstance(node.get("name"), str) and "value" in node:
                secretish = node["name"] in SECRET_VARS or SECRETISH.search(node["name"])
                assert not secretish, f"{path.name}:{where}: {node['name']} has a literal value"
        spec = doc.get("spec", {})
        if "runtimeEnvYAML" in spec:
            assert _runtime_env_ok(spec["runtimeEnvYAML"]), f"{path.name}: secret in runtime_env"


def test_no_definition_contains_a_key() -> None:
    files = [p for p in INFRA.rglob("*") if p.is_file()] + [ROOT / ".dockerignore"]
    for path in files:
        text = path.read_text()
        assert not AWS_KEY.search(text), f"{path}: looks like an AWS access key id"
        assert not re.search(r"(?i)secret_access_key\s*[=:]\s*[A-Za-z0-9/+]{40}", text), path


# --- entrypoints against the CLI and the config loader ----------------------------------------


@pytest.fixture(scope="module")
def cli() -> argparse.ArgumentParser:
    from depthkd.cli.main import build_parser

    return build_parser()


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(action.choices)


def _infra_texts() -> list[tuple[Path, str]]:
    paths = [p for p in INFRA.rglob("*") if p.is_file()] + [ROOT / ".dockerignore"]
    return [(p, p.read_text()) for p in sorted(paths)]


def test_entrypoints_parse_with_the_real_cli(cli) -> None:
    for path, _, inv in entrypoints():
        assert inv.script is None or (ROOT / inv.script).is_file(), f"{path.name}: {inv.script}"
        args = cli.parse_args([inv.command, *inv.args])
        assert args.config is not None and (ROOT / args.config).is_file(), path.name
        assert args.overrides == inv.overrides, path.name


def test_entrypoint_overrides_load(monkeypatch, tmp_path) -> None:
    from depthkd.config.loader import load_config
    from depthkd.tune.sweep import base_experiment, load_sweep

    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path))
    for path, job, inv in entrypoints():
        if inv.command == "sweep":
            spec = load_sweep(ROOT / inv.config, inv.overrides)
            base = base_experiment(spec)  # the base experiment and every searched key
            assert spec.name == job["metadata"]["name"], path.name
            assert base.train.use_gpu == (spec.resources.gpus > 0), path.name
        else:
            cfg = load_config(ROOT / inv.config, inv.overrides)
            assert cfg.name == job["metadata"]["name"], path.name
            assert cfg.train.workers == int(inv.override("train.workers") or 1), path.name


def test_entrypoint_urls_reach_the_config_unchanged() -> None:
    # `train.storage=s3://...` and `data.shards=s3://...` must stay URLs (not become local paths)
    from depthkd.config.loader import load_config

    urls = 0
    for path, _, inv in entrypoints():
        if inv.command == "sweep":
            continue
        cfg = load_config(ROOT / inv.config, inv.overrides)
        for override in inv.overrides:
            key, value = override.split("=", 1)
            if value.startswith("s3://"):
                node: Any = cfg
                for part in key.split("."):
                    node = getattr(node, part)
                assert str(node) == value, f"{path.name}: {key} became {node!r}"
                urls += 1
    assert urls >= 2  # the distill job's checkpoints and shards


def test_referenced_scripts_configs_and_commands_exist(cli) -> None:
    known = _subcommands(cli)
    command = re.compile(r"(?:^[ \t]*|`|\(|--[ \t]|#[ \t]{2,}|\$[ \t])depthkd ([a-z][a-z-]*)", re.M)
    for path, text in _infra_texts():
        for script in re.findall(r"\b((?:pipelines|tune)/[\w/]+\.py)\b", text):
            assert (ROOT / script).is_file(), f"{path}: {script}"
        for config in re.findall(r"\b(configs/[\w.-]+\.yaml)\b", text):
            assert (ROOT / config).is_file(), f"{path}: {config}"
        for name in command.findall(text):
            assert name in known, f"{path}: `depthkd {name}` is not a command"
        for ref in re.findall(r"\b(infra/[\w./-]*[\w])", text):
            target = ROOT / ref
            ignored = target.parent / ".gitignore"  # a filled-in copy of an *.example file
            assert target.exists() or (
                ignored.is_file() and target.name in ignored.read_text().split()
            ), f"{path}: {ref}"


def _command_lines(path: Path, text: str) -> str:
    """Where example commands sit: the comments of a definition, all of a Markdown file; shell
    continuation lines joined."""
    if path.suffix != ".md":
        text = "\n".join(
            line.split("#", 1)[1] for line in text.splitlines() if line.lstrip().startswith("#")
        )
    return re.sub(r"\\\n\s*", " ", text)


def test_example_commands_parse_and_load(cli) -> None:
    """`python pipelines/...py ...` in the comments and the README (after `ray job submit --`,
    `docker run IMAGE`, ...) parse with the CLI, and their configs load with their overrides."""
    from depthkd.config.loader import load_config

    found = 0
    pattern = r"\bpython ((?:pipelines|tune)/[\w/]+\.py(?:[ \t]+[^\s#;|&`()]+)*)"
    for path, text in _infra_texts():
        for line in re.findall(pattern, _command_lines(path, text)):
            inv = invocation(f"python {line}")
            shown = [a for a in inv.args if a != "..."]  # `...`: arguments left out in prose
            args = cli.parse_args([inv.command, *shown])
            if inv.command != "sweep" and args.config is not None:
                load_config(ROOT / args.config, args.overrides)
            found += 1
    assert found >= 3


# --- Docker images ----------------------------------------------------------------------------


def _python_versions(text: str) -> set[str]:
    return set(re.findall(r"(?i)python(?:3\.|[: ]|-?-python )?(3\.\d+)\b", text)) | set(
        re.findall(r"(?i)python(3\.\d+)", text)
    )


def test_python_version_agrees_with_requires_python() -> None:
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    target = pyproject()["tool"]["ruff"]["target-version"]  # "py311"
    for path in [*ALL_DOCKERFILES, LAUNCHER]:
        versions = _python_versions(path.read_text())
        assert len(versions) == 1, f"{path.name}: {versions}"
        (version,) = versions
        assert Version(version) in requires, f"{path.name}: {version} vs {requires}"
        assert f"py{version.replace('.', '')}" == target, f"{path.name}: {version} vs {target}"


def _torch_commands() -> dict[str, list[str]]:
    commands = {p.name: run_commands(p) for p in DOCKERFILES}
    commands[LAUNCHER.name] = yaml.safe_load(LAUNCHER.read_text())["setup_commands"]
    return commands


def test_torch_and_torchvision_are_one_pair_everywhere() -> None:
    pairs = {}
    for name, commands in _torch_commands().items():
        torch_lines = [c for c in commands if re.search(r"\btorch==", c)]
        assert len(torch_lines) == 1, f"{name}: torch is pinned in {len(torch_lines)} commands"
        (line,) = torch_lines
        torch = re.search(r"\btorch==([\w.]+)", line)
        vision = re.search(r"\btorchvision==([\w.]+)", line)
        assert torch and vision, f"{name}: torch and torchvision in one command, both pinned"
        pairs[name] = (Version(torch.group(1)), Version(vision.group(1)))
        # install torch first: `pip install .` would otherwise fetch torch from the default index
        install_project = [i for i, c in enumerate(commands) if re.search(r"pip install \.", c)]
        assert install_project and commands.index(line) < install_project[0], name
    assert len(set(pairs.values())) == 1, pairs
    torch, vision = next(iter(pairs.values()))
    assert torch in _requirement("torch").specifier
    assert (vision.major, vision.minor, vision.micro) == (0, torch.minor + 15, torch.micro), (
        f"torchvision {vision} is not the release built with torch {torch}"
    )


def test_pip_extras_exist() -> None:
    extras = set(pyproject()["project"].get("optional-dependencies", {}))
    texts = [p.read_text() for p in DOCKERFILES] + [LAUNCHER.read_text()]
    used = {
        e.strip() for t in texts for m in re.findall(r"\.\[([^\]]+)\]", t) for e in m.split(",")
    }
    assert used <= extras, used - extras


def test_torch_index_matches_each_base_image() -> None:
    gpu, cpu = GPU_DOCKERFILE.read_text(), CPU_DOCKERFILE.read_text()
    base = re.search(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-(?:cudnn-)?runtime-ubuntu", gpu, re.M)
    index = re.search(r"download\.pytorch\.org/whl/(cu\d+)\s", gpu)
    assert base and index, "GPU image: an nvidia/cuda runtime base and a cuXYZ torch index"
    assert index.group(1) == f"cu{base.group(1)}{base.group(2)}", (base.group(0), index.group(1))
    assert re.search(r"^FROM python:3\.\d+-slim", cpu, re.M)
    assert "--index-url https://download.pytorch.org/whl/cpu " in cpu


def test_images_copy_the_whole_project_from_the_context() -> None:
    ignore = DockerIgnore.read(ROOT / ".dockerignore")
    project = pyproject()
    folders = set(project["tool"]["setuptools"]["package-dir"].values())  # configs/ among them
    needed = {"pyproject.toml", project["project"]["readme"], *folders}
    for path in DOCKERFILES:
        sources = copy_sources(path)
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such path"
            assert not ignore.excludes(source), f"{path.name}: COPY {source} is in .dockerignore"
        assert needed <= {s.rstrip("/") for s in sources}, needed - set(sources)
        assert any(re.search(r"pip install \.(\s|$)", c) for c in run_commands(path)), path.name


@pytest.mark.parametrize(
    "relpath",
    [
        ".venv/bin/python",
        ".depthkd/shards/nyu/train-000000.tar",
        "mlruns/0/meta.yaml",
        "mlflow.db",
        "shards/train-000001.tar",
        "data/nyu/raw.mat",
        "checkpoints/step-10/state.pt",
        "ray_results/demo/result.json",
        "benchmarks/results/loader.json",
        ".git/HEAD",
        "kdplatform/__pycache__/x.pyc",
        "infra/compose/.env",
    ],
)
def test_dockerignore_keeps_local_state_out(relpath: str) -> None:
    assert DockerIgnore.read(ROOT / ".dockerignore").excludes(relpath)


def test_dockerignore_keeps_sources_in() -> None:
    ignore = DockerIgnore.read(ROOT / ".dockerignore")
    for relpath in ("kdplatform/data/loader.py", "configs/tiny.yaml", "README.md"):
        assert not ignore.excludes(relpath), relpath


def test_images_run_as_a_non_root_user_with_a_writable_home() -> None:
    for path in ALL_DOCKERFILES:
        users = [i.args for i in dockerfile(path) if i.keyword == "USER"]
        assert users and users[-1] not in ("root", "0"), f"{path.name}: runs as root"
    for path in DOCKERFILES:
        text = path.read_text()
        user = [i.args for i in dockerfile(path) if i.keyword == "USER"][-1]
        assert re.search(r"^ENV DEPTHKD_HOME=/\S+", text, re.M), path.name
        assert re.search(rf'chown {user}:\S+ "?\$DEPTHKD_HOME', text), path.name


# --- the ray up config ------------------------------------------------------------------------


def _launcher() -> dict[str, Any]:
    return yaml.safe_load(LAUNCHER.read_text())


def test_launcher_matches_rays_cluster_schema() -> None:
    import json
    import os

    import jsonschema
    import ray

    schema_path = os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")
    with open(schema_path) as f:
        schema = json.load(f)
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(_launcher())]
    assert not errors, errors


def test_launcher_config_survives_rays_own_preparation() -> None:
    # what `ray up` does before it launches anything: defaults filled in, then validated
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(_launcher())
    validate_config(prepared)
    head = prepared["head_node_type"]
    assert prepared["available_node_types"][head]["max_workers"] == 0


def test_launcher_has_a_cpu_head_and_gpu_workers() -> None:
    config = _launcher()
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and not head["resources"].get("GPU")
    assert not re.match(r"[gp]\d", head["node_config"]["InstanceType"])
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    gpu = [t for t in workers if re.match(r"[gp]\d", t["node_config"]["InstanceType"])]
    assert gpu, "no GPU worker node type"
    for node_type in gpu:
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= config["max_workers"]


def test_launcher_installs_the_synced_checkout() -> None:
    config = _launcher()
    mounts = config["file_mounts"]
    (checkout,) = [remote for remote, local in mounts.items() if local == "."]
    for local in mounts.values():
        target = ROOT / local
        ignored = target.parent / ".gitignore"
        if not target.exists():  # a filled-in copy of an *.example file, kept out of git
            assert (target.parent / f"{target.name}.example").is_file(), local
            assert target.name in ignored.read_text().split(), local
    setup = config["setup_commands"]
    assert any(f"cd {checkout} && " in c and re.search(r"pip install \.", c) for c in setup)
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert f"cd {checkout} && " in command  # job entrypoints run in Ray's cwd
    assert {".venv", ".depthkd", ".git"} <= set(config["rsync_exclude"])


def test_launcher_credentials_file_is_placeholders_only() -> None:
    example = INFRA / "launcher" / "depthkd.env.example"
    for line in example.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            assert re.search(r"<[^<>]+>", value), f"{key}: not a <placeholder>"


# --- the tracking stack (compose) -------------------------------------------------------------


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
    script = command[2] if command[:2] == ["sh", "-c"] else shlex.join(command)
    # compose turns $$ into $ and the container's shell expands ${VAR}
    words = [re.sub(r"\$\$\{(\w+)\}", r"<\1>", w) for w in shlex.split(script)]
    exported = {}
    while words[0] == "export":
        name, _, value = words[1].partition("=")
        exported[name] = value
        assert words[2] == "&&", words[:3]
        words = words[3:]
    assert words[:3] == ["exec", "mlflow", "server"], words[:3]
    return exported, words[3:]


@pytest.mark.filterwarnings("ignore:.*noload.*:DeprecationWarning")  # mlflow's own SQLAlchemy use
def test_mlflow_server_command_parses_and_is_locked_down() -> None:
    from mlflow.cli import server
    from mlflow.server.security_utils import is_allowed_host_header

    exported, args = _mlflow_args()
    assert not any(a.startswith("--backend-store-uri") for a in args)  # `ps` would show it
    backend = exported["MLFLOW_BACKEND_STORE_URI"]  # read by mlflow server (envvar)
    assert backend.startswith("postgresql+psycopg://")
    assert "@postgres:" in backend  # the compose service
    params = server.make_context("server", args).params
    assert params["artifacts_destination"].startswith("s3://")
    assert params["host"] == "0.0.0.0"  # inside the container; published on 127.0.0.1 only
    allowed = params["allowed_hosts"].split(",")
    services = _compose()["services"]
    hosts = [f"mlflow:{params['port']}"]  # other containers of the compose network
    for port in services["mlflow"]["ports"]:
        _, published, _ = _published(port)
        hosts += [f"localhost:{published}", f"127.0.0.1:{published}"]
    for host in hosts:
        assert is_allowed_host_header(allowed, host), f"--allowed-hosts refuses {host}"
    assert not is_allowed_host_header(allowed, "evil.example.com:5000")


def test_mlflow_image_matches_the_client_and_the_backend() -> None:
    text = MLFLOW_DOCKERFILE.read_text()
    declared = {Requirement(d).name for d in pyproject()["project"]["dependencies"]}
    # mlflow as the client allows it, psycopg for postgresql+psycopg://, boto3 for s3:// artifacts
    for name, pattern in (
        ("mlflow", "mlflow"),
        ("psycopg", r"psycopg\[binary\]"),
        ("boto3", "boto3"),
    ):
        pinned = re.search(rf'"{pattern}==([\w.]+)"', text)
        assert pinned, f"{MLFLOW_DOCKERFILE.name}: {name} is not pinned"
        if name in declared:  # the same range as the project's own dependency
            assert Version(pinned.group(1)) in _requirement(name).specifier, name
    pin = re.search(r'"mlflow==([\w.]+)"', text)
    compose = _compose()
    assert compose["x-mlflow-image"]["image"].endswith(f":{pin.group(1)}")
    assert (COMPOSE.parent / compose["x-mlflow-image"]["build"]["dockerfile"]) == MLFLOW_DOCKERFILE


def test_compose_services_start_in_order_with_healthchecks() -> None:
    services = _compose()["services"]
    assert services["postgres"]["image"].startswith("postgres:15")
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


def test_every_definition_starts_with_a_header_comment() -> None:
    files = [p for p in INFRA.rglob("*") if p.is_file() and p.suffix != ".md"]
    for path in [*files, ROOT / ".dockerignore"]:
        first = path.read_text().lstrip().splitlines()[0]
        assert first.startswith("#"), f"{path}: no header comment"


def test_yaml_files_load_safely() -> None:
    for path in INFRA.rglob("*.yaml"):
        assert yaml_docs(path), path
