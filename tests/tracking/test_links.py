"""The link a job prints lands on its run page (checked in headless Chromium: a fresh browser
opens the run itself there, while the experiment page and the UI root open on GenAI views)."""

from __future__ import annotations

from depthkd.tracking.links import run_page_lines
from depthkd.tracking.runs import JobRun


def test_local_store_prints_the_ui_command_and_the_run_page() -> None:
    run = JobRun(tracking_uri="sqlite:////h/mlflow.db", experiment_id="3", run_id="abc")
    command, page = run_page_lines(run, port=5123)
    assert command == (
        "mlflow ui --backend-store-uri sqlite:////h/mlflow.db --host 127.0.0.1 --port 5123"
    )
    assert page == "then open http://127.0.0.1:5123/#/experiments/3/runs/abc"


def test_tracking_server_prints_the_run_page_on_that_server() -> None:
    run = JobRun(tracking_uri="http://mlflow:5000/", experiment_id="7", run_id="r1")
    assert run_page_lines(run) == ["http://mlflow:5000/#/experiments/7/runs/r1"]
