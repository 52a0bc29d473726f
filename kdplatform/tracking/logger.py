"""`RunLogger`: what a training worker logs to its job's run, on rank 0 only.

Metrics are exactly-once across worker crashes. They are buffered and written only by `flush()`,
which the training loop calls when it saves a checkpoint (and at the end): after a crash the
unflushed steps are lost together with the work since the checkpoint, and the resumed job logs them
again. To close the remaining window (flushed, then crashed before the checkpoint was durable), a
logger skips steps at or below the last step the run already held for that metric when the logger
started: those are replays of steps that are already there. So flushing right *before* reporting
a checkpoint is safe in both crash windows, and the history has no duplicated and no missing step.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from PIL import Image

from depthkd.errors import ConfigError
from depthkd.eval.grids import depth_grid
from depthkd.tracking.params import MAX_TAG_VALUE, flatten_params
from depthkd.tracking.runs import JobRun
from depthkd.tracking.store import client_for

_log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100


class RunLogger:
    """Logs metrics, params, tags, artifacts and system metrics of one job to its MLflow run.

    Every method is a no-op unless `rank == 0`, so all ranks can call it unconditionally; other
    ranks never contact MLflow.

    Args:
        run: the job's run from `open_job_run` (in a worker: `JobRun.from_dict(...)`).
        rank: this worker's global rank.
        system_metrics_interval: seconds between samples of MLflow's system-metrics monitor (CPU,
            memory, disk, network, GPU when NVML is there); None turns it off. The monitor is
            skipped with a log message when its dependencies (psutil) are missing.
    """

    def __init__(
        self, run: JobRun, *, rank: int = 0, system_metrics_interval: float | None = 10.0
    ) -> None:
        self.run = run
        self.rank = rank
        self._buffer: dict[tuple[str, int], Metric] = {}
        self._logged_up_to: dict[str, int] = {}
        self._monitor: Any = None
        self._client = client_for(run.tracking_uri) if self.active else None
        if self._client is not None:
            data = self._client.get_run(run.run_id).data
            # The run keeps, per metric, the entry with the largest step (public via to_proto).
            self._logged_up_to = {m.key: m.step for m in data.to_proto().metrics}
            if system_metrics_interval is not None:
                self._monitor = _start_system_metrics(run, system_metrics_interval)

    @property
    def active(self) -> bool:
        """Whether this logger writes anything (rank 0)."""
        return self.rank == 0

    # -- metrics -------------------------------------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Buffers `metrics` at `step`; nothing is written before `flush()`.

        Logging a key twice at one step keeps the later value.
        """
        if not self.active:
            return
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            self._buffer[(key, int(step))] = Metric(key, float(value), now, int(step))

    def flush(self) -> int:
        """Writes the buffered metrics; call it right before reporting a checkpoint, and at the end.

        A failed write keeps the buffer; writing it again is harmless (MLflow drops rows that are
        identical, timestamp included).

        Returns:
            The number of metric values written (replayed steps are skipped, see module doc).
        """
        if self._client is None or not self._buffer:
            return 0
        pending = [m for m in self._buffer.values() if not self._is_replay(m)]
        pending.sort(key=lambda m: (m.step, m.key))
        for start in range(0, len(pending), MAX_METRICS_PER_BATCH):
            chunk = pending[start : start + MAX_METRICS_PER_BATCH]
            self._client.log_batch(self.run.run_id, metrics=chunk)
        self._buffer.clear()
        return len(pending)

    def _is_replay(self, metric: Metric) -> bool:
        last = self._logged_up_to.get(metric.key)
        return last is not None and metric.step <= last

    # -- params and tags -----------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Logs a (nested) config as params with dotted keys.

        On a resumed run, params already logged with the same value are skipped.

        Raises:
            ConfigError: a param already holds a different value (MLflow params are immutable, and
                a resumed job must run the config it started with).
        """
        if self._client is None:
            return
        flat = flatten_params(params)
        existing = self._client.get_run(self.run.run_id).data.params
        changed = {k: v for k, v in flat.items() if k in existing and existing[k] != v}
        if changed:
            details = "; ".join(
                f"{key!r} was {existing[key]!r}, now {value!r}"
                for key, value in sorted(changed.items())[:5]
            )
            raise ConfigError(
                f"MLflow run {self.run.run_id} already has different params: {details}",
                hint="a resumed job must use the config it started with; "
                "use a new job id to run a changed config",
            )
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        for start in range(0, len(new), MAX_PARAMS_PER_BATCH):
            self._client.log_batch(
                self.run.run_id, params=new[start : start + MAX_PARAMS_PER_BATCH]
            )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Sets (or overwrites) run tags; values as `str()`, cut to MLflow's 8000 characters."""
        if self._client is None:
            return
        items = [RunTag(str(k), str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()]
        for start in range(0, len(items), MAX_TAGS_PER_BATCH):
            self._client.log_batch(self.run.run_id, tags=items[start : start + MAX_TAGS_PER_BATCH])

    # -- artifacts -----------------------------------------------------------------------------

    def log_text(self, text: str, artifact_file: str) -> None:
        """Writes `text` to the run's artifact `artifact_file` (e.g. `config/resolved.yaml`)."""
        if self._client is not None:
            self._client.log_text(self.run.run_id, text, artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Writes `data` as JSON or YAML (by the file's extension) to the run's artifacts."""
        if self._client is not None:
            self._client.log_dict(self.run.run_id, dict(data), artifact_file)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Uploads a local file or directory into the run's artifacts under `artifact_path`."""
        if self._client is not None:
            self._client.log_artifact(self.run.run_id, str(path), artifact_path)

    def log_image_grid(
        self,
        step: int,
        rgb: Any,
        gt: Any,
        pred: Any,
        *,
        max_depth: float,
        max_images: int = 4,
    ) -> None:
        """Logs the first `max_images` samples as `images/eval_step_{step:07d}.png`.

        Args:
            step: training step, part of the file name.
            rgb: images `(N, 3, H, W)` in [0, 1].
            gt: ground truth `(N, 1, H, W)` in metres, 0 = invalid.
            pred: predicted depth `(N, 1, H, W)` in metres.
            max_depth: far end of the depth colour map.
            max_images: samples (rows) at most.
        """
        if self._client is None:
            return
        grid = depth_grid(rgb[:max_images], gt[:max_images], pred[:max_images], max_depth=max_depth)
        with tempfile.TemporaryDirectory(prefix="depthkd-grid-") as tmp:
            path = Path(tmp) / f"eval_step_{int(step):07d}.png"
            Image.fromarray(grid).save(path)
            self._client.log_artifact(self.run.run_id, str(path), "images")

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Flushes the buffer and stops the system-metrics monitor; safe to call twice."""
        self.flush()
        if self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            try:
                monitor.finish()
            except Exception as exc:  # never let monitoring break the end of training
                _log.warning("stopping MLflow system metrics failed: %s", exc)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            # A crash: drop unflushed metrics (the resumed job re-logs them), stop sampling.
            self._buffer.clear()
        self.close()


def _start_system_metrics(run: JobRun, interval: float) -> Any:
    """MLflow's system-metrics monitor for `run`, started; None when it cannot run here."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            run.run_id,
            sampling_interval=interval,
            resume_logging=True,  # continue the system/* step count of a resumed run
            tracking_uri=run.tracking_uri,
        )
        monitor.start()
    except Exception as exc:  # psutil missing (ImportError), NVML errors, ...
        _log.info("MLflow system metrics are off: %s", exc)
        return None
    return monitor
