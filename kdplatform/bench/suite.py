"""`depthkd bench all`: one run of every benchmark, written as one JSON result and one Markdown
table, `<out>/<YYYY-MM-DD>-<hostname>[-quick].{json,md}`, together with the machine it ran on.

Each row compares a baseline and a candidate measured side by side in the same run, alternating
passes (the rows themselves are in `depthkd.bench.rows`). A row that cannot run here is
recorded as skipped or not run, with the reason; a row that fails is recorded as failed with its
error and the others still run. The console stays quiet: what a row's benchmark prints goes to
`<work>/logs/<row>.log`, and one line per row is printed as it finishes.

Results never hold credentials: the values of the AWS credential variables (those of the
environment and those of a local S3 server) are replaced in the written text, and the S3 row
records only the endpoint URL.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from depthkd import __version__, atomic
from depthkd.bench.machine import hostname, machine_info
from depthkd.bench.rowspec import ROW_ORDER, ROWS, Figure, Outcome, RowSpec, SuiteContext
from depthkd.console import Log

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "benchmarks" / "results"
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
REDACTED = "[redacted]"


@dataclass
class Row:
    """One line of the result: the spec's description plus what was measured."""

    name: str
    title: str
    compared: str
    baseline: str
    candidate: str
    unit: str
    ratio_of: str
    target: str | None
    status: str
    note: str
    figures: list[Figure]
    ratio: float | None
    protocol: str
    seconds: float
    log: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, spec: RowSpec, outcome: Outcome, seconds: float, log: Path | None) -> Row:
        return cls(
            name=spec.name,
            title=spec.title,
            compared=spec.compared,
            baseline=outcome.baseline or spec.baseline,
            candidate=outcome.candidate or spec.candidate,
            unit=spec.unit,
            ratio_of=spec.ratio_of,
            target=spec.target,
            status=outcome.status,
            note=outcome.note,
            figures=outcome.figures,
            ratio=outcome.ratio,
            protocol=outcome.protocol,
            seconds=seconds,
            log=str(log) if log else None,
            details=outcome.details,
        )

    def summary(self) -> str:
        """One console line: the figures and the ratio, or the reason it has none."""
        if self.status != "ok":
            return f"{self.status}: {self.note}" if self.note else self.status
        shown = ", ".join(f"{f.label} {f.value:.4g} {f.unit}".rstrip() for f in self.figures[:4])
        ratio = f"; {self.ratio_of} {self.ratio:.3g}x" if self.ratio is not None else ""
        return shown + ratio


def selected_rows(only: Sequence[str] | None) -> list[RowSpec]:
    """The rows named in `only` (all when empty), in suite order; unknown names are an error."""
    from depthkd.bench import rows  # noqa: F401  (registers the rows)

    names = list(ROW_ORDER) if not only else [ROWS.get(name).name for name in only]
    return [ROWS.get(name) for name in ROW_ORDER if name in names]


@contextlib.contextmanager
def quiet(log: Path) -> Iterator[None]:
    """Sends everything written to stdout and stderr in this block to `log`: Python's streams
    and file descriptors 1 and 2 (output of libraries, Ray and worker processes started here)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with log.open("a", buffering=1) as stream:
        try:
            os.dup2(stream.fileno(), 1)
            os.dup2(stream.fileno(), 2)
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield
        finally:
            stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def run_row(spec: RowSpec, ctx: SuiteContext) -> Row:
    """Runs one row quietly; an error becomes a failed row with the message and the log."""
    from depthkd.errors import DepthKDError

    log = ctx.work / "logs" / f"{spec.name}.log"
    log.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        with quiet(log):
            outcome = spec.run(ctx)
    except DepthKDError as exc:
        outcome = Outcome(status="failed", note=f"{exc}" + (f" ({exc.hint})" if exc.hint else ""))
    except Exception as exc:  # a benchmark's own bug must not lose the other rows
        outcome = Outcome(status="failed", note=f"{type(exc).__name__}: {exc}")
    return Row.of(spec, outcome, time.perf_counter() - started, log if log.exists() else None)


def result_stem(quick: bool, day: datetime.date | None = None) -> str:
    """`<YYYY-MM-DD>-<hostname>`, plus `-quick` for a quick run (not to replace a real one)."""
    day = day or datetime.date.today()
    return f"{day.isoformat()}-{hostname()}" + ("-quick" if quick else "")


def _git_commit() -> dict[str, Any] | None:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True, timeout=10
        )
        return done.stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None


def redact(text: str, secrets: set[str]) -> str:
    """`text` with every credential value in it replaced."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return text


def run_suite(
    ctx: SuiteContext, specs: Sequence[RowSpec], *, log: Log = print
) -> tuple[dict[str, Any], list[Path]]:
    """Runs `specs` in order, then writes the JSON result and the Markdown table (atomically).

    Returns the result object and the paths written.
    """
    from depthkd.bench.report import markdown

    ctx.secrets.update(os.environ[v] for v in SECRET_VARIABLES if os.environ.get(v))
    started_at = datetime.datetime.now().astimezone()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    started = time.perf_counter()
    rows: list[Row] = []
    try:
        for index, spec in enumerate(specs, 1):
            result = run_row(spec, ctx)
            rows.append(result)
            log(
                f"[{index}/{len(specs)}] {spec.name:13s} {result.summary()}  "
                f"({result.seconds:.0f} s)"
            )
    finally:
        for undo in reversed(ctx.cleanup):
            with contextlib.suppress(Exception):
                undo()
    machine = machine_info()
    machine["load_1min"] = {
        "start": load_start,
        "end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    result = {
        "suite": "depthkd bench all",
        "depthkd": __version__,
        "git": _git_commit(),
        "started": started_at.isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - started,
        "quick": ctx.quick,
        "sizes": asdict(ctx.sizes),
        "options": {
            "only": [s.name for s in specs],
            "s3": ctx.s3,
            "asha": ctx.asha,
            "asha_json": str(ctx.asha_json) if ctx.asha_json else None,
            "gpu": ctx.gpu,
            "workers": ctx.workers,
            "threads": ctx.threads,
        },
        "machine": machine,
        "rows": [asdict(r) for r in rows],
    }
    stem = result_stem(ctx.quick, started_at.date())
    json_path, md_path = ctx.out / f"{stem}.json", ctx.out / f"{stem}.md"
    text = redact(json.dumps(result, indent=2, sort_keys=True) + "\n", ctx.secrets)
    atomic.write_text(json_path, text)
    atomic.write_text(md_path, redact(markdown(json.loads(text)), ctx.secrets))
    return json.loads(text), [json_path, md_path]
