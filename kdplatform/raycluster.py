"""The driver's Ray: the cluster this job belongs to, or one started for it.

* `RAY_ADDRESS` set (as under `ray job submit`) → connect there; else a local cluster started with
  `ray start` is used when one is up; else an embedded Ray of its own, sized to this machine.

Every driver (jobs, the pseudo-label pass, sweeps, benchmarks) joins Ray through `ensure_ray`.
"""

from __future__ import annotations

import os

import ray

from depthkd.environ import patched_environ
from depthkd.ports import HOST, free_port


def ensure_ray(*, log_to_driver: bool = True) -> str:
    """Connects to the cluster this job belongs to or starts an embedded one; returns a label.

    Args:
        log_to_driver: print worker output here (a sweep keeps it in Ray's log files).
    """
    if ray.is_initialized():
        return "already connected"
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=log_to_driver)
        return f"cluster at {os.environ['RAY_ADDRESS']}"
    started = _started_cluster()
    try:
        if started is None:
            raise ConnectionError("no cluster started with `ray start` on this machine")
        ray.init(address=started, log_to_driver=log_to_driver)
        return f"running local cluster at {started}"
    except ConnectionError:
        _start_embedded(log_to_driver)
        return f"embedded Ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"


def _start_embedded(log_to_driver: bool) -> None:
    """An embedded Ray whose own processes know its address.

    Ray Train's PlacementGroupCleaner frees the CPUs of a controller that died (a Tune trial
    stopped early) after asking the State API, through the dashboard, whether it did. It looks
    for its cluster without an address: with a second Ray on the machine it finds both, gives up
    ("Found multiple active Ray instances"), the trial's CPUs leak and the sweep stalls. So the
    GCS port is chosen here and `RAY_ADDRESS` names it (on loopback, where the GCS also listens)
    in the environment that Ray's processes copy at start-up; the driver's own environment is put
    back afterwards. The dashboard gets a
    free port too: a second embedded Ray must not lose its own.
    """
    port = free_port()
    startup_env = {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"{HOST}:{port}"}
    with patched_environ(startup_env):
        ray.init(
            address="local",  # start one; RAY_ADDRESS above is for Ray's processes only
            include_dashboard=True,
            dashboard_host=HOST,
            dashboard_port=free_port(),
            log_to_driver=log_to_driver,
        )


def _started_cluster() -> str | None:
    """The address `ray start` recorded for its cluster on this machine, if any.

    Not `ray.init(address="auto")`: that also finds another job's embedded Ray by its processes,
    and that Ray goes away when its job ends, taking this job with it.
    """
    from ray._private.utils import read_ray_address

    return read_ray_address()
