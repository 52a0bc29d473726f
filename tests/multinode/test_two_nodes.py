"""A 2-worker distillation across two Ray nodes that share only S3 and the tracking server, with
the worker on the second node SIGKILLed mid-run (`make multinode` runs this file)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from depthkd import storage
from depthkd.data.shards import read_manifest
from depthkd.devcluster.cluster import WORKER_RESOURCE, DevCluster, synthetic_shards
from tests.local_cluster import REPO_ROOT

pytestmark = [pytest.mark.multinode, pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(900)]

JOB = "scaleout"
DISTILL_STEPS, LOG_EVERY, CHECKPOINT_EVERY = 40, 2, 5
JOB_TIMEOUT_S = 600


def _cli(scaleout: DevCluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "depthkd.cli.main", *args],
        env=scaleout.client_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _job_config(scaleout: DevCluster, shards: str) -> dict:
    return {
        "name": JOB,
        "data": {
            "shards": shards,
            "batch_size": 2,
            "eval_batch_size": 4,
            "num_workers": 0,
            "shuffle_buffer": 8,
            "steps_per_epoch": 10,
            "augment": {"rotation_deg": 0, "crop": None},
        },
        "model": {
            "student": {"name": "mobilenetv2_050", "decoder_channels": [8, 8, 16, 16]},
            "teacher": {"name": "swin_micro"},
        },
        "train": {
            "workers": 2,
            "resources": {WORKER_RESOURCE: 1},
            "placement": "STRICT_SPREAD",
            "log_every": LOG_EVERY,
            "eval_every": 20,
            "checkpoint_every": CHECKPOINT_EVERY,
            "max_failures": 2,
            "storage": f"{scaleout.bucket}/ray_results",
        },
        # a fresh teacher and ghost: no teacher or student stage first (200 steps each by
        # default), the distill stage is what runs across the nodes
        "acclimate": {"steps": 4, "pretrain_teacher": False, "ghost": "fresh"},
        "distill": {"steps": DISTILL_STEPS},
        "tracking": {"experiment": "scaleout", "system_metrics": False},
    }


def _train_worker_on(home: Path) -> int | None:
    """The pid of the Ray Train worker whose node has `$DEPTHKD_HOME=home` (nodes are told apart
    by the environment their processes inherit)."""
    needle = f"DEPTHKD_HOME={home}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if b"RayTrainWorker" in cmdline and needle in (entry / "environ").read_bytes().split(
                b"\0"
            ):
                return int(entry.name)
        except OSError:
            continue
    return None


# Ray Train's controller records the checkpoints it would resume from here, some time after a
# checkpoint's files land in storage (a worker killed in between restarts from the step before).
RAY_CHECKPOINT_RECORD = "checkpoint_manager_snapshot.json"


def _wait_for_resumable_checkpoint(url: str, driver: subprocess.Popen, log: Path) -> None:
    """Until Ray has recorded a checkpoint of the run at `url` as its latest."""
    record = f"{url}/{RAY_CHECKPOINT_RECORD}"
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        if driver.poll() is not None:
            pytest.fail(f"the job ended before its first checkpoint:\n{log.read_text()[-4000:]}")
        if storage.exists(record):
            with contextlib.suppress(ValueError):  # a record being rewritten
                if json.loads(storage.read_bytes(record)).get("latest_checkpoint_result"):
                    return
        time.sleep(0.5)
    pytest.fail(f"no resumable distill checkpoint in {url}:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def shards(scaleout: DevCluster) -> str:
    """Shards prepared on the head's disk, uploaded and verified in S3: jobs read only S3."""
    local = synthetic_shards(scaleout.work)
    url = f"{scaleout.bucket}/shards"
    upload = _cli(scaleout, "data", "upload", str(local), url, "--quiet")
    assert upload.returncode == 0, upload.stderr
    verify = _cli(scaleout, "data", "verify", url, "--quiet")
    assert verify.returncode == 0 and "OK" in verify.stdout, verify.stdout + verify.stderr
    return url


def test_node_local_storage_fails_on_the_driver(scaleout: DevCluster, shards: str) -> None:
    config = _job_config(scaleout, shards)
    del config["train"]["storage"]  # default: the driver's $DEPTHKD_HOME/ray_results
    path = scaleout.work / "local-storage.yaml"
    path.write_text(yaml.safe_dump(config))
    result = _cli(scaleout, "distill", "--config", str(path), "--quiet")
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr
    assert "this Ray cluster has 2 nodes, but train.storage=" in result.stderr
    assert "hint: put them where every node reaches them" in result.stderr
    assert "RayTrainWorker" not in result.stdout  # no worker started


def test_distillation_across_two_nodes_survives_a_killed_worker(
    scaleout: DevCluster, shards: str
) -> None:
    val_images = read_manifest(shards)["splits"]["val"]["num_samples"]

    config = scaleout.work / "job.yaml"
    config.write_text(yaml.safe_dump(_job_config(scaleout, shards)))
    log = scaleout.work / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen(
            [sys.executable, "pipelines/distill.py", "--config", str(config), "--quiet"],
            env=scaleout.client_env(),
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_resumable_checkpoint(f"{scaleout.bucket}/ray_results/{JOB}-distill", driver, log)
        victim = _train_worker_on(scaleout.homes["worker"])
        assert victim is not None, "no Ray Train worker runs on the second node"
        os.kill(victim, signal.SIGKILL)
        rc = driver.wait(timeout=JOB_TIMEOUT_S)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    output = log.read_text()
    assert rc == 0, output[-6000:]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=scaleout.tracking.uri)
    run = client.search_runs(
        [client.get_experiment_by_name("scaleout").experiment_id],
        filter_string=f"tags.`depthkd.job_id` = '{JOB}'",
    )
    assert len(run) == 1, output[-3000:]
    run = run[0]
    assert run.info.status == "FINISHED"
    # each step logged once although the steps since the last checkpoint ran twice
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "distill/train/loss")]
    assert steps == list(range(LOG_EVERY, DISTILL_STEPS + 1, LOG_EVERY))

    # both nodes did work; evaluation saw every val image exactly once across them; the worker
    # group after the restart is a new one (the killed process is not in it)
    workers = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "workers/distill.json", str(scaleout.work))
        ).read_text()
    )["workers"]
    assert len({w["node_id"] for w in workers}) == 2
    assert all(w["train_samples"] > 0 and w["eval_images"] > 0 for w in workers)
    assert sum(w["eval_images"] for w in workers) == val_images
    assert victim not in {w["pid"] for w in workers}
    # ... which resumed from a checkpoint in S3 instead of starting over
    full_run = DISTILL_STEPS * _job_config(scaleout, shards)["data"]["batch_size"]
    assert all(w["train_samples"] < full_run for w in workers), workers

    # checkpoints and the teacher handed to the workers live in S3, not on either node's disk
    keys = [key for key, _ in storage.list_keys(f"{scaleout.bucket}/ray_results")]
    assert any(k.startswith(f"{JOB}-distill/checkpoint_") for k in keys)
    assert f"{JOB}-distill/teacher.pt" in keys
    for home in scaleout.homes.values():
        assert not (home / "ray_results").exists()

    # the run and the registered student are in the PostgreSQL-backed server
    version = client.get_model_version_by_alias("depthkd-student", "challenger")
    assert version.run_id == run.info.run_id
    import psycopg

    with psycopg.connect(
        host="127.0.0.1", port=scaleout.postgres.port, user="depthkd", dbname="mlflow"
    ) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM runs WHERE run_uuid = %s", (run.info.run_id,)
        ).fetchone()
    assert count == 1
