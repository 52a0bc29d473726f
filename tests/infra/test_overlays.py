"""The Kustomize overlays of infra/kuberay (built by tests/infra/kustomize.py, since no kustomize
runs here): each sets its run's name, worker count and GPUs per worker in one place, its
values.yaml, and every field that must agree with them does, also after values.yaml alone
changed; /dev/shm is left to KubeRay; the sweep RayJob runs the real-data sweep.

The CRD schemas of every built RayJob are checked with the other manifests (test_definitions).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra import kustomize
from tests.infra.parsing import (
    GPU_RESOURCE,
    KUBERAY,
    ROOT,
    Invocation,
    built,
    by_kind,
    cluster_specs,
    entrypoints,
    invocation,
    overlays,
    pod_specs,
    run_values,
    where,
)

OVERLAYS = overlays()
IDS = [p.name for p in OVERLAYS]
SHM = "/dev/shm"
WORKER_GROUP = "workers"


def _job(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], Invocation]:
    (job,) = [o for o in objects if o["kind"] == "RayJob"]
    return job, invocation(job["spec"]["entrypoint"])


def _fields(job: dict[str, Any], inv: Invocation) -> dict[str, dict[str, Any]]:
    """Every field of a built RayJob that must agree with one of the run values."""
    spec = job["spec"]["rayClusterSpec"]
    (group,) = [g for g in spec["workerGroupSpecs"] if g["groupName"] == WORKER_GROUP]
    (worker,) = group["template"]["spec"]["containers"]
    resources = worker["resources"]
    sweep = inv.command == "sweep"
    gpus = {
        "limits": resources["limits"].get(GPU_RESOURCE),
        "requests": resources["requests"].get(GPU_RESOURCE),
    }
    if "num-gpus" in group["rayStartParams"]:  # KubeRay derives it from the limit when unset
        gpus["num-gpus"] = int(group["rayStartParams"]["num-gpus"])
    if sweep:
        gpus["resources.gpus_per_worker"] = float(inv.override("resources.gpus_per_worker"))
    return {
        "name": {"metadata.name": job["metadata"]["name"], "name=": inv.override("name")},
        "workers": {
            "replicas": group["replicas"],
            "minReplicas": group["minReplicas"],
            "maxReplicas": group["maxReplicas"],
            # one Ray Train worker per pod; a sweep: one trial per pod
            ("max_concurrent_trials=" if sweep else "train.workers="): int(
                inv.override("max_concurrent_trials" if sweep else "train.workers")
            ),
        },
        "gpusPerWorker": gpus,
    }


def _assert_agree(job: dict[str, Any], inv: Invocation, values: dict[str, Any], name: str) -> None:
    for key, fields in _fields(job, inv).items():
        wrong = {field: value for field, value in fields.items() if value != values[key]}
        assert not wrong, f"{name}: values.yaml has {key}={values[key]!r}, but {wrong}"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=IDS)
def test_overlay_fields_agree_with_its_values(overlay: Path) -> None:
    values = run_values(overlay)
    assert set(values) == {"name", "workers", "gpusPerWorker"}, values
    job, inv = _job(built(overlay))
    _assert_agree(job, inv, values, where(overlay))


@pytest.mark.parametrize("overlay", OVERLAYS, ids=IDS)
def test_each_value_is_set_in_one_place(overlay: Path, tmp_path: Path) -> None:
    # values.yaml alone changed (in a copy of infra/kuberay): every field that must agree
    # follows, so no patch of the overlay or of its components pins one of them elsewhere
    copy = tmp_path / "kuberay"
    shutil.copytree(KUBERAY, copy)
    path = copy / "overlays" / overlay.name / "values.yaml"
    doc = yaml.safe_load(path.read_text())
    had_gpus = doc["spec"]["gpusPerWorker"] > 0
    doc["spec"] = {"name": "depthkd-new-run", "workers": 3, "gpusPerWorker": 2 if had_gpus else 0}
    path.write_text(yaml.safe_dump(doc))
    job, inv = _job(kustomize.build(copy / "overlays" / overlay.name))
    _assert_agree(job, inv, doc["spec"], f"{overlay.name} with new values")


def test_the_overlays_are_the_documented_sizes() -> None:
    # dev: one CPU worker, no GPU; gpu-8: 8 GPU workers of one GPU; the sweep: 8 trials at once
    sizes = {p.name: (run_values(p)["workers"], run_values(p)["gpusPerWorker"]) for p in OVERLAYS}
    assert sizes == {"dev": (1, 0), "gpu-8": (8, 1), "sweep-gpu-8": (8, 1)}, sizes
    names = [run_values(p)["name"] for p in OVERLAYS]
    assert len(set(names)) == len(names), f"two overlays would share one run: {names}"


@pytest.mark.parametrize("overlay", OVERLAYS, ids=IDS)
def test_values_never_reach_the_cluster(overlay: Path) -> None:
    kept = [o for o in built(overlay, keep_local=True) if o["kind"] == "RunValues"]
    assert len(kept) == 1
    annotations = kept[0]["metadata"]["annotations"]
    assert annotations[kustomize.LOCAL_CONFIG] == "true"
    assert not [o for o in built(overlay) if o["kind"] == "RunValues"]


def test_a_cpu_cluster_runs_the_tiny_job_on_the_shared_volume() -> None:
    job, inv = _job(built(KUBERAY / "overlays" / "dev"))
    assert inv.config == "configs/tiny.yaml" and inv.override("train.use_gpu") == "false"
    assert inv.override("data.shards") is None  # the bundled set, generated on the volume
    for _, pod in pod_specs(job["spec"]["rayClusterSpec"]):
        assert "tolerations" not in pod
        for container in pod["containers"]:
            assert container["image"].endswith("-cpu"), container["image"]


# --- /dev/shm ---------------------------------------------------------------------------------


def _all_pods() -> list[tuple[str, dict[str, Any]]]:
    pods = [
        (f"{name}:{role}", pod) for name, spec in cluster_specs() for role, pod in pod_specs(spec)
    ]
    for kind in ("Deployment", "StatefulSet"):
        pods += [
            (f"{w}:{o['metadata']['name']}", o["spec"]["template"]["spec"])
            for w, o in by_kind(kind)
        ]
    return pods


def test_dev_shm_is_left_to_kuberay() -> None:
    # KubeRay mounts its own /dev/shm in every Ray container, a memory-backed emptyDir sized to
    # the container's memory limit, unless the pod mounts one itself: an own, smaller one (8 GiB
    # here before) made Ray put its object store (30 % of the memory by default) on disk instead.
    # So: no pod mounts /dev/shm, no pod sizes the object store, every Ray container has the
    # memory limit KubeRay sizes it from (a Memory emptyDir counts against that limit anyway).
    for name, pod in _all_pods():
        for volume in pod.get("volumes", []):
            assert volume.get("emptyDir", {}).get("medium") != "Memory", f"{name}: {volume}"
        for container in pod["containers"]:
            mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
            assert SHM not in mounts, f"{name}:{container['name']} mounts its own {SHM}"
    for name, spec in cluster_specs():
        groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
        for group in groups:
            assert "object-store-memory" not in group.get("rayStartParams", {}), name
            for container in group["template"]["spec"]["containers"]:
                assert container["resources"]["limits"].get("memory"), name


# --- the sweep --------------------------------------------------------------------------------


def _sweeps() -> list[tuple[str, dict[str, Any], Invocation]]:
    jobs = [(w, job, inv) for w, job, inv in entrypoints() if inv.command == "sweep"]
    assert jobs, "no sweep RayJob"
    return jobs


def test_sweep_job_runs_the_real_data_sweep(monkeypatch, tmp_path) -> None:
    from depthkd.tune.space import rounds_per_trial
    from depthkd.tune.sweep import base_experiment, load_sweep

    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path))
    distill_shards = {
        inv.override("data.shards") for _, _, inv in entrypoints() if inv.override("data.shards")
    }
    for name, job, inv in _sweeps():
        assert inv.config == "configs/sweep_nyu.yaml", name
        spec = load_sweep(ROOT / inv.config, inv.overrides)
        base = base_experiment(spec)  # the base experiment and every searched key, checked
        # real shards, the same the distill jobs read, and a registered teacher
        assert str(base.data.shards).startswith("s3://"), name
        assert {str(base.data.shards)} == distill_shards, (base.data.shards, distill_shards)
        assert base.model.teacher.checkpoint and "@" in base.model.teacher.checkpoint
        # ASHA over distillation weights, selecting on val, with room for more than one rung
        assert spec.scheduler.type == "asha" and spec.metric.split == base.data.eval_split
        weights = [k for k in spec.space if k.startswith("distill.losses.")]
        assert len(weights) >= 2 and all(k.startswith("distill.") for k in spec.space), weights
        rounds = rounds_per_trial(spec, base)
        assert rounds >= spec.scheduler.grace_period * spec.scheduler.reduction_factor, rounds
        assert base.distill.steps >= 10_000 and base.train.checkpoint_every <= base.train.eval_every
        # the trials' budget fits the RayJob's deadline, with room for the teacher before them
        assert spec.time_budget_s < job["spec"]["activeDeadlineSeconds"], name
        assert spec.resources.gpus > 0 and base.train.use_gpu, name
