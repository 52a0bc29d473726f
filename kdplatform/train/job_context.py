"""What a job knows as it runs: its config, data, stages, the models it was given and made, its
MLflow run, and the test report's figures (KD gain, gap closed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from depthkd.config.schema import ExperimentConfig
from depthkd.data.shards import read_manifest
from depthkd.models.kinds import ModelKind
from depthkd.storage import Location
from depthkd.tracking.runs import JobRun
from depthkd.train.launcher import StageResult
from depthkd.train.profile import DataProfile


@dataclass
class JobContext:
    cfg: ExperimentConfig
    job: str
    shards: Location
    profile: DataProfile
    out_dir: Path
    stages: list[str] = field(default_factory=list)
    inputs: dict[ModelKind, Path] = field(
        default_factory=dict
    )  # model kind → file, given by config
    run: JobRun | None = None
    results: dict[str, StageResult] = field(default_factory=dict)
    test_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # stage → metrics
    registered: dict[ModelKind, str] = field(default_factory=dict)  # model kind → "name vN @alias"

    @property
    def has_test_split(self) -> bool:
        """Whether the shard set holds the held-out split of the final report."""
        return self.cfg.data.test_split in read_manifest(self.shards)["splits"]

    @property
    def kd_gain(self) -> float | None:
        """Relative test abs_rel reduction of the distilled student over the job's own no-KD
        baseline (> 0: KD helps); None unless the job ran and tested both."""
        kd, base = self.test_metrics.get("distill"), self.test_metrics.get("supervised")
        if not (kd and base and self.baseline_comparable):
            return None
        return 1 - kd["abs_rel"] / base["abs_rel"]

    @property
    def teacher_metrics(self) -> dict[str, float] | None:
        """Test metrics of the teacher the student learned from: the acclimated one where the
        job has one, else the depth teacher (trained here or given)."""
        return self.test_metrics.get("acclimate") or self.test_metrics.get("teacher")

    @property
    def gap_closed(self) -> float | None:
        """Share of the test abs_rel gap between the no-KD student and the teacher that
        distillation closed: (no-KD − distilled) / (no-KD − teacher); None unless all three
        were tested and the teacher is better than the no-KD student."""
        teacher = self.teacher_metrics
        if self.kd_gain is None or teacher is None:
            return None
        base = self.test_metrics["supervised"]["abs_rel"]
        if base <= teacher["abs_rel"]:
            return None
        return (base - self.test_metrics["distill"]["abs_rel"]) / (base - teacher["abs_rel"])

    @property
    def baseline_comparable(self) -> bool:
        """The no-KD student trained like the distilled one: same steps, optimizer, loss."""
        supervised, distill = self.cfg.supervised, self.cfg.distill
        return (supervised.steps, supervised.optim, supervised.loss) == (
            distill.steps,
            distill.optim,
            distill.loss,
        )
