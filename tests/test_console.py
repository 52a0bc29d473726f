"""The job console without Ray: what reaches the console and what only the log, and how a stage's
events are drawn (bar on a terminal, progress lines elsewhere, one line per event)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from depthkd import console as console_module
from depthkd.console import JobConsole, ProgressReporter


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Channels of this process (as when no Ray runs), whatever another test left running."""
    monkeypatch.setattr(console_module.ray, "is_initialized", lambda: False)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]


def test_only_the_console_lines_reach_the_console_and_everything_the_log(tmp_path: Path) -> None:
    shown = io.StringIO()
    log = tmp_path / "job" / "job.log"
    with JobConsole(log, stream=shown) as console:
        console.line("visible line")
        console.detail("detail for the log")
        print("a library's print")
        print("a warning on stderr", file=sys.stderr)
        # a child process writes to the inherited descriptors (Ray's processes, C++ logging)
        subprocess.run(["echo", "child process output"], check=True)
    assert _lines(shown.getvalue()) == [f"log: {log}", "visible line", f"full log: {log}"]
    text = log.read_text()
    for expected in ("visible line", "detail", "library's print", "warning", "child process"):
        assert expected in text
    print("after the job")  # the streams are back
    assert "after the job" not in log.read_text()


def test_verbose_shows_the_raw_output_too_and_no_stage_display(tmp_path: Path) -> None:
    shown = io.StringIO()
    with JobConsole(tmp_path / "job.log", verbose=True, stream=shown) as console:
        console.detail("resolved config")
        print("a library's print")
        with console.stage("distill") as channel:
            assert channel is None  # workers' own lines are on the console
    assert {"resolved config"} <= set(_lines(shown.getvalue()))
    assert "a library's print" in (tmp_path / "job.log").read_text()


def _run_stage(console: JobConsole) -> None:
    with console.stage("supervised") as channel:
        worker = ProgressReporter(channel, stage="supervised")
        worker.line("node", "[supervised] rank 0/1 on node abc (pid 1)")
        worker.start(0, 4)
        worker.step(1, 4)
        text = "[supervised] step 2/4 loss 4.5000 30.0 samples/s"
        worker.step(2, 4, text=text, loss=4.5, samples_per_s=30.0)
        worker.line("eval", "[supervised] eval step 2 (val, nyu-eigen, 4 images): abs_rel 0.5")
        worker.step(3, 4)
        text = "[supervised] step 4/4 loss 4.0000 31.0 samples/s"
        worker.step(4, 4, text=text, loss=4.0, samples_per_s=31.0)
        worker.line("eval", "[supervised] eval step 4 (val, nyu-eigen, 4 images): abs_rel 0.4")
        worker.close()


def test_a_stage_off_a_terminal_shows_progress_lines_and_each_event_once(
    tmp_path: Path, no_ray: None
) -> None:
    shown = io.StringIO()
    with JobConsole(tmp_path / "job.log", stream=shown) as console:
        _run_stage(console)
    lines = _lines(shown.getvalue())[1:-1]  # without the log lines
    assert lines[0] == "[supervised] rank 0/1 on node abc (pid 1)"
    assert re.fullmatch(
        r"\[supervised\] step 2/4 loss 4\.5000 30\.0 samples/s, ETA \d+:\d\d", lines[1]
    )
    # at most one progress line per quarter, none for the last step (its evaluation follows)
    assert lines[2:] == [
        "[supervised] eval step 2 (val, nyu-eigen, 4 images): abs_rel 0.5",
        "[supervised] eval step 4 (val, nyu-eigen, 4 images): abs_rel 0.4",
    ]
    # the workers' prints are what the log keeps (on Ray they arrive through its forwarding)
    assert (tmp_path / "job.log").read_text().count("eval step 4") == 1


def test_a_stage_on_a_terminal_draws_a_bar_with_loss_and_the_events_above_it(
    tmp_path: Path, no_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(JobConsole, "isatty", lambda self: True)
    shown = io.StringIO()
    with JobConsole(tmp_path / "job.log", stream=shown) as console:
        _run_stage(console)
    lines = _lines(shown.getvalue())
    assert any(re.match(r"supervised: 100%.*4/4 .*loss 4\.0000, 31\.0 samples/s", s) for s in lines)
    for step in (2, 4):
        assert sum(f"eval step {step} (val" in s for s in lines) == 1
    assert not any("step 2/4 loss" in s for s in lines)  # the bar shows progress, not lines


def test_quiet_shows_events_without_progress(tmp_path: Path, no_ray: None) -> None:
    shown = io.StringIO()
    with JobConsole(tmp_path / "job.log", bars=False, stream=shown) as console:
        _run_stage(console)
    lines = _lines(shown.getvalue())[1:-1]
    assert [s.split(" ")[1] for s in lines] == ["rank", "eval", "eval"]


def test_a_worker_without_channel_only_prints(capsys: pytest.CaptureFixture[str]) -> None:
    worker = ProgressReporter(None, stage="distill")
    worker.start(0, 2)
    worker.step(2, 2, text="[distill] step 2/2 loss 1.0000 9.0 samples/s", loss=1.0)
    worker.line("eval", "[distill] eval step 2")
    worker.close()
    assert capsys.readouterr().out.splitlines() == [
        "[distill] step 2/2 loss 1.0000 9.0 samples/s",
        "[distill] eval step 2",
    ]
