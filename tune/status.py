"""How a sweep trial ended, in one place: the status its record, table, CSV and plots show and
the end status of its MLflow run, both decided from what Tune saw of the trial."""

from __future__ import annotations

from depthkd.tracking.runs import RunEndStatus

COMPLETED = "TERMINATED"  # Tune's status of a trial that ran to its end (full budget here)
STOPPED = "STOPPED"  # ended by the scheduler before the full budget
ERROR = "ERROR"

RUN_END: dict[str, RunEndStatus] = {COMPLETED: "FINISHED", STOPPED: "KILLED", ERROR: "FAILED"}


def trial_status(rounds: int, max_rounds: int, *, failed: bool) -> str:
    """A trial's status from the last evaluation round Tune received from it.

    A trial whose process reached its last step but whose last evaluation Tune never received
    (the scheduler stopped it one round earlier) counts as stopped: selection and its run's end
    status follow the scheduler's view, so the two always agree.
    """
    if failed:
        return ERROR
    return COMPLETED if rounds >= max_rounds else STOPPED
