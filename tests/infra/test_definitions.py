"""The cluster and service definitions under infra/, validated without Docker or Kubernetes.

KubeRay manifests (the plain ones and the output of every kustomization, built by
tests/infra/kustomize.py) against the v1 CRD schemas (strict: unknown fields are errors; skipped
without the CRD files), the `ray up` config against the schema in the ray wheel, entrypoints
against the real CLI and config loader, and the version pins, secrets, ports and build contexts
against each other and against pyproject.toml. The overlays, the tracking stack and the lock have
their own modules beside this one.
"""

from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from tests.infra import kube_schema
from tests.infra.parsing import (
    ALL_DOCKERFILES,
    DOCKERFILES,
    GPU_RESOURCE,
    INFRA,
    KUBERAY,
    LAUNCHER,
    ROOT,
    SECRET_NAME,
    SECRET_VARS,
    SECRETISH,
    DockerIgnore,
    by_kind,
    cluster_specs,
    copy_sources,
    dependency,
    dockerfile,
    entrypoints,
    gpus,
    invocation,
    kuberay_docs,
    pod_specs,
    pyproject,
    ray_containers,
    run_commands,
    walk,
    yaml_docs,
)

RAY_SECRET_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")  # every Ray container needs them
AWS_KEY = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
GPU_TAINT = "nvidia.com/gpu"
# `pip install [-c LOCK] ".[hf]"`: the project with its Hugging Face teachers
INSTALL_PROJECT = re.compile(r'pip install (?:-c \S+ )?"\.\[hf\]"(?:\s|$)')
SHARED_CLAIM = "depthkd-shared"
GPU_DOCKERFILE = INFRA / "docker" / "Dockerfile.gpu"
CPU_DOCKERFILE = INFRA / "docker" / "Dockerfile.cpu"
RAY_DOCS = [(p, d) for p, d in kuberay_docs() if d.get("kind") in kube_schema.CRD_FILES]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod["containers"]


def _tolerates_gpus(pod: dict[str, Any]) -> bool:
    return any(t.get("key") == GPU_TAINT for t in pod.get("tolerations", []))


# --- KubeRay: the CRD schemas -----------------------------------------------------------------


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, Any]:
    directory = kube_schema.crd_dir()
    if directory is None:
        pytest.skip(kube_schema.missing_reason())
    return kube_schema.load_validators(directory)


@pytest.mark.parametrize(("where", "doc"), RAY_DOCS, ids=[w for w, _ in RAY_DOCS])
def test_kuberay_manifest_matches_the_crd_schema(crd_validators, where: str, doc: dict) -> None:
    assert doc["apiVersion"] == kube_schema.API_VERSION, where
    errors = kube_schema.schema_errors(crd_validators[doc["kind"]], doc)
    assert not errors, f"{where} ({doc['kind']}):\n" + "\n".join(errors)


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


def test_crd_files_default_to_the_shared_folder(monkeypatch, tmp_path) -> None:
    # unset: ../shared/kuberay-crds beside the checkout; set: that folder; neither: None
    shared = tmp_path / "shared"
    shared.mkdir()
    for name in kube_schema.CRD_FILES.values():
        (shared / name).write_text("{}")
    monkeypatch.setattr(kube_schema, "SHARED_CRDS", shared)
    monkeypatch.delenv(kube_schema.CRD_ENV, raising=False)
    assert kube_schema.crd_dir() == shared
    own = tmp_path / "own"
    own.mkdir()
    for name in kube_schema.CRD_FILES.values():
        (own / name).write_text("{}")
    monkeypatch.setenv(kube_schema.CRD_ENV, str(own))
    assert kube_schema.crd_dir() == own
    monkeypatch.setenv(kube_schema.CRD_ENV, str(tmp_path / "nowhere"))
    assert kube_schema.crd_dir() == shared  # a variable naming no CRDs falls back
    monkeypatch.setattr(kube_schema, "SHARED_CRDS", tmp_path / "absent")
    assert kube_schema.crd_dir() is None
    reason = kube_schema.missing_reason()
    assert str(tmp_path / "nowhere") in reason and str(tmp_path / "absent") in reason


def test_crd_files_are_found_in_this_checkout() -> None:
    # the tests above run here and in CI (shared/ lies beside the checkout in both); where the
    # folder is missing, the fixture skips them with the reason
    if not kube_schema.SHARED_CRDS.is_dir():
        pytest.skip(kube_schema.missing_reason())
    assert kube_schema.crd_dir() is not None


# --- KubeRay: what the operator and our jobs need ---------------------------------------------


def test_kuberay_folder_holds_the_expected_objects() -> None:
    allowed = {
        # plain manifests, applied with -f: the long-running cluster, the Secret, the volume
        "raycluster.yaml": {("ray.io/v1", "RayCluster")},
        "secret.example.yaml": {("v1", "Secret")},
        "pvc-shared.yaml": {("v1", "PersistentVolumeClaim")},
        "tracking": {("v1", "Service"), ("apps/v1", "StatefulSet"), ("apps/v1", "Deployment")},
    }
    jobs = 0
    for where, doc in kuberay_docs():
        kind = (doc["apiVersion"], doc["kind"])
        if where.startswith(("base/", "overlays/")):  # each: one RayJob and nothing else
            assert kind == ("ray.io/v1", "RayJob"), (where, kind)
            jobs += 1
        else:
            assert kind in allowed[where], (where, kind)
    builds = {w for w, d in kuberay_docs() if d["kind"] == "RayJob"}
    assert jobs == len(builds) and {"overlays/dev", "overlays/gpu-8"} <= builds, builds


def test_ray_version_is_the_one_the_images_pin_and_pyproject_allows() -> None:
    pins = {
        m for path in DOCKERFILES for m in re.findall(r"\bray==([\w.]+)", path.read_text())
    } | set(re.findall(r"\bray==([\w.]+)", LAUNCHER.read_text()))
    assert len(pins) == 1, f"images and launcher pin different rays: {pins}"
    (pin,) = pins
    assert Version(pin) in dependency("ray").specifier, (pin, str(dependency("ray")))
    for name, spec in cluster_specs():
        assert spec["rayVersion"] == pin, name


def test_raycluster_autoscales_a_gpu_worker_group() -> None:
    (_, cluster), *_ = by_kind("RayCluster")
    spec = cluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    groups = spec["workerGroupSpecs"]
    assert any(
        g["maxReplicas"] > g["minReplicas"]
        and all(gpus(c) >= 1 for c in _containers(g["template"]["spec"]))
        for g in groups
    ), "no GPU worker group with room to autoscale"


def test_worker_groups_have_consistent_bounds_and_gpus() -> None:
    for name, spec in cluster_specs():
        assert all(gpus(c) == 0 for c in _containers(spec["headGroupSpec"]["template"]["spec"]))
        for group in spec["workerGroupSpecs"]:
            where = f"{name}:{group['groupName']}"
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], where
            pod = group["template"]["spec"]
            for container in _containers(pod):
                limits = container["resources"]["limits"]
                requests = container["resources"].get("requests", {})
                # extended resources: a request, when given, must equal the limit
                assert requests.get(GPU_RESOURCE, gpus(container)) == gpus(container), where
                # a GPU pod waits for (tolerates) GPU nodes; a CPU pod takes no GPU node
                assert _tolerates_gpus(pod) == (gpus(container) > 0), where
                assert "memory" in limits, f"{where}: no memory limit (KubeRay sizes /dev/shm)"


def test_each_cluster_runs_the_image_of_its_devices() -> None:
    # GPU pods run the CUDA image (infra/docker/Dockerfile.gpu), a CPU-only cluster the CPU one
    for name, spec in cluster_specs():
        pods = [pod for _, pod in pod_specs(spec)]
        images = {c["image"] for pod in pods for c in _containers(pod)}
        assert len(images) == 1, f"{name}: {images}"
        (image,) = images
        has_gpus = any(gpus(c) > 0 for pod in pods for c in _containers(pod))
        assert image.endswith("-gpu" if has_gpus else "-cpu"), (name, image)
        assert image.split("/")[-1].split(":")[0] == "depthkd"
    tags = {c["image"].rsplit("-", 1)[0] for _, c in ray_containers()}
    assert len(tags) == 1, f"one registry and version everywhere: {tags}"


def test_containers_run_where_the_image_keeps_the_entrypoints() -> None:
    workdirs = {
        path.name: [i.args for i in dockerfile(path) if i.keyword == "WORKDIR"][-1]
        for path in DOCKERFILES
    }
    uids = {re.search(r"useradd\b[^&]*--uid (\d+)", p.read_text()).group(1) for p in DOCKERFILES}
    assert len(set(workdirs.values())) == 1 and len(uids) == 1, (workdirs, uids)
    for where, container in ray_containers():
        assert container.get("workingDir") in workdirs.values(), where
    for name, spec in cluster_specs():
        for role, pod in pod_specs(spec):
            assert pod["securityContext"]["runAsUser"] == int(*uids), f"{name}:{role}"


def test_rayjob_name_is_the_run_name() -> None:
    # A retry (backoffLimit) runs on a new RayCluster: it resumes only under the same run name.
    for where, job, inv in entrypoints():
        name = job["metadata"]["name"]
        assert inv.override("name") == name, f"{where}: name= must be {name!r}"
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 40, name


def test_rayjobs_retry_clean_up_and_end() -> None:
    for where, job in by_kind("RayJob"):
        spec = job["spec"]
        assert spec.get("backoffLimit", 0) >= 1, where
        # ttlSecondsAfterFinished acts only together with shutdownAfterJobFinishes
        assert spec["shutdownAfterJobFinishes"] is True, where
        assert spec["ttlSecondsAfterFinished"] > 0, where
        # a deadline for all attempts together: a job that hangs does not hold its GPUs forever
        assert 0 < spec["activeDeadlineSeconds"] <= 7 * 86400, where
        assert "runtimeEnvYAML" not in spec or _runtime_env_ok(spec["runtimeEnvYAML"]), where


def _runtime_env_ok(text: str) -> bool:
    env_vars = (yaml.safe_load(text) or {}).get("env_vars", {})
    return not any(SECRETISH.search(k) or k in SECRET_VARS for k in env_vars)


def _env(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_distill_jobs_checkpoint_outside_the_cluster() -> None:
    # S3, or (no train.storage) $DEPTHKD_HOME/ray_results on the volume every pod mounts
    jobs = [(w, job, inv) for w, job, inv in entrypoints() if inv.command != "sweep"]
    assert jobs
    for where, job, inv in jobs:
        storage = inv.override("train.storage")
        if storage is None:
            pods = pod_specs(job["spec"]["rayClusterSpec"])
            for container in (c for _, pod in pods for c in _containers(pod)):
                assert _env(container).get("DEPTHKD_SHARED_FILESYSTEM") == "1", where
        else:
            assert storage.startswith("s3://"), where


def test_local_paths_of_jobs_are_on_the_shared_volume() -> None:
    (_, pvc), *_ = by_kind("PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == SHARED_CLAIM
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    jobs = {w: inv for w, _, inv in entrypoints()}
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
                assert _under(_env(container).get("DEPTHKD_HOME"), paths), f"{where}: DEPTHKD_HOME"
        assert len(mounts) == 1, f"{name}: head and workers mount the shared volume differently"
        shards = job.override("data.shards") if job is not None else None
        if shards is not None and not shards.startswith("s3://"):
            assert _under(shards, mounts), f"{name}: data.shards is neither on S3 nor shared"


def _under(path: str | None, roots: set[str]) -> bool:
    return path is not None and any(Path(path).is_relative_to(root) for root in roots)


def _cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_clusters_fit_their_jobs() -> None:
    from depthkd.config.loader import load_config
    from depthkd.tune.sweep import load_sweep

    for where, job, inv in entrypoints():
        (group,) = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
        (worker,) = _containers(group["template"]["spec"])
        pods, per_pod = group["maxReplicas"], gpus(worker)
        pod_cpus = _cpus(str(worker["resources"]["limits"]["cpu"]))
        if inv.command == "sweep":
            # one trial per pod: its worker and its driver fit the pod, and every trial at once
            # has its pod (the sweep sizes its concurrency from what is there when it starts)
            spec = load_sweep(ROOT / inv.config, inv.overrides)
            need = spec.resources
            assert need.workers == 1 and need.gpus_per_worker == per_pod, where
            assert need.cpus_per_worker + need.driver_cpus <= pod_cpus, where
            assert spec.max_concurrent_trials == pods == group["minReplicas"], where
        else:
            cfg = load_config(ROOT / inv.config, inv.overrides)
            # one Ray Train worker per pod, with the pod's GPUs or none
            assert cfg.train.workers == pods == group["minReplicas"], where
            assert cfg.train.use_gpu == (per_pod > 0), where
            assert not cfg.train.use_gpu or cfg.train.gpus_per_worker == per_pod, where
            assert cfg.train.cpus_per_worker <= pod_cpus, where


# --- secrets ----------------------------------------------------------------------------------


def test_secret_template_holds_placeholders_only() -> None:
    (where, secret), *_ = by_kind("Secret")
    assert where.endswith(".example.yaml") and secret["metadata"]["name"] == SECRET_NAME
    values = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert set(SECRET_VARS) == set(values), sorted(values)
    for key, value in values.items():
        assert re.search(r"<[^<>]+>", str(value)), f"{key}: not a <placeholder>"
    assert "secret.yaml" in (KUBERAY / ".gitignore").read_text().split()


def _secret_refs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, secretKeyRef) of every env entry that reads a Secret."""
    return [
        (where, node["valueFrom"]["secretKeyRef"])
        for where, node in walk(doc)
        if isinstance(node, dict) and "secretKeyRef" in node.get("valueFrom", {})
    ]


def test_every_secret_reference_reads_the_one_secret() -> None:
    (_, secret), *_ = by_kind("Secret")
    keys = set(secret["stringData"])
    for source, doc in kuberay_docs():
        for where, ref in _secret_refs(doc):
            assert ref["name"] == SECRET_NAME, f"{source}:{where}: {ref['name']}"
            assert ref["key"] in keys, f"{source}:{where}: {ref['key']} is not in the Secret"
        for where, node in walk(doc):
            if isinstance(node, dict) and "secretRef" in node:
                assert node["secretRef"]["name"] == SECRET_NAME, f"{source}:{where}"


def test_head_and_workers_get_credentials_from_the_secret() -> None:
    for where, container in ray_containers():
        from_secret = {
            entry["name"]
            for entry in container.get("env", [])
            if entry.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == SECRET_NAME
        }
        missing = set(RAY_SECRET_VARS) - from_secret
        assert not missing, f"{where}: {sorted(missing)} not from {SECRET_NAME}"
        assert not {"POSTGRES_USER", "POSTGRES_PASSWORD"} & from_secret, f"{where}: needs no DB"


def _literal_ok(name: str, value: Any) -> bool:
    """A plain env value is fine unless its name is secret-like; a tracking URI may be plain
    when it carries no credentials (user:password@)."""
    if name == "MLFLOW_TRACKING_URI":
        return "@" not in str(value)
    return not (name in SECRET_VARS or SECRETISH.search(name))


def test_no_manifest_carries_a_secret_value() -> None:
    for source, doc in kuberay_docs():
        if doc["kind"] == "Secret":
            continue
        for where, node in walk(doc):
            if isinstance(node, dict) and isinstance(node.get("name"), str) and "value" in node:
                ok = _literal_ok(node["name"], node["value"])
                assert ok, f"{source}:{where}: {node['name']} has a literal value"
            if isinstance(node, str):
                for _user, password in re.findall(r"://([^/\s:@]+):([^@\s/]+)@", node):
                    assert password.startswith("${"), f"{source}:{where}: password in a URI"
        spec = doc.get("spec", {})
        if "runtimeEnvYAML" in spec:
            assert _runtime_env_ok(spec["runtimeEnvYAML"]), f"{source}: secret in runtime_env"


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
        assert inv.script is None or (ROOT / inv.script).is_file(), f"{path}: {inv.script}"
        args = cli.parse_args([inv.command, *inv.args])
        assert args.config is not None and (ROOT / args.config).is_file(), path
        assert args.overrides == inv.overrides, path


def test_entrypoint_overrides_load(monkeypatch, tmp_path) -> None:
    from depthkd.config.loader import load_config
    from depthkd.tune.sweep import base_experiment, load_sweep

    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path))
    for path, job, inv in entrypoints():
        if inv.command == "sweep":
            spec = load_sweep(ROOT / inv.config, inv.overrides)
            base = base_experiment(spec)  # the base experiment and every searched key
            assert spec.name == job["metadata"]["name"], path
            assert base.train.use_gpu == (spec.resources.gpus > 0), path
        else:
            cfg = load_config(ROOT / inv.config, inv.overrides)
            assert cfg.name == job["metadata"]["name"], path
            assert cfg.train.workers == int(inv.override("train.workers") or 1), path


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
                assert str(node) == value, f"{path}: {key} became {node!r}"
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
        for ref in re.findall(r"(?<![\w/])(infra/[\w./-]*[\w])", text):
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
        torch = re.search(r"\btorch==([\w.+]+)", line)
        vision = re.search(r"\btorchvision==([\w.+]+)", line)
        assert torch and vision, f"{name}: torch and torchvision in one command, both pinned"
        torch_pin, vision_pin = Version(torch.group(1)), Version(vision.group(1))
        assert torch_pin.local == vision_pin.local, f"{name}: {torch_pin}, {vision_pin}"
        pairs[name] = (Version(torch_pin.public), Version(vision_pin.public))
        # install torch first: `pip install .` would otherwise fetch torch from the default index
        install_project = [i for i, c in enumerate(commands) if INSTALL_PROJECT.search(c)]
        assert install_project and commands.index(line) < install_project[0], name
    assert len(set(pairs.values())) == 1, pairs
    torch, vision = next(iter(pairs.values()))
    assert torch in dependency("torch").specifier
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
    # each image takes torch from PyTorch's index of its variant, and names the variant in the
    # pins' local label (PyPI's torch of the same version is a CUDA build)
    gpu, cpu = GPU_DOCKERFILE.read_text(), CPU_DOCKERFILE.read_text()
    base = re.search(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.\d+-(?:cudnn-)?runtime-ubuntu", gpu, re.M)
    index = re.search(r"--extra-index-url https://download\.pytorch\.org/whl/(cu\d+)\s", gpu)
    assert base and index, "GPU image: an nvidia/cuda runtime base and a cuXYZ torch index"
    assert index.group(1) == f"cu{base.group(1)}{base.group(2)}", (base.group(0), index.group(1))
    assert re.search(r"^FROM python:3\.\d+-slim", cpu, re.M)
    assert "--extra-index-url https://download.pytorch.org/whl/cpu " in cpu
    for path, variant in ((GPU_DOCKERFILE, index.group(1)), (CPU_DOCKERFILE, "cpu")):
        runs = " ".join(run_commands(path))
        labels = {Version(v).local for v in re.findall(r"\btorch(?:vision)?==([\w.+]+)", runs)}
        assert labels == {variant}, (path.name, variant, labels)


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
        assert any(INSTALL_PROJECT.search(c) for c in run_commands(path)), path.name


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
    assert any(f"cd {checkout} && " in c and INSTALL_PROJECT.search(c) for c in setup)
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


# --- every file -----------------------------------------------------------------------------


def test_every_definition_starts_with_a_header_comment() -> None:
    files = [p for p in INFRA.rglob("*") if p.is_file() and p.suffix != ".md"]
    for path in [*files, ROOT / ".dockerignore"]:
        first = path.read_text().lstrip().splitlines()[0]
        assert first.startswith("#"), f"{path}: no header comment"


def test_yaml_files_load_safely() -> None:
    for path in INFRA.rglob("*.yaml"):
        assert yaml_docs(path), path
