"""What a training job shows: on the driver's console a progress bar per stage and one line per
evaluation or event; everything else (driver, workers, Ray, MLflow) in `<job folder>/job.log`.

* **The log.** While a `JobConsole` is open, the process's stdout and stderr go to the log file:
  file descriptors 1 and 2, not only `sys.stdout`, so that Ray's C++ core, the processes Ray
  starts from here and logging handlers bound to the old streams end there too. That takes in the
  workers' output as well, which Ray forwards to the driver (`log_to_driver`), and the noise that
  comes with it: controller status lines, raylet and autoscaler warnings, Ray's tips, MLflow's
  INFO lines and download bars. `verbose` writes Python-level output to the console too (no bars).
* **The channel.** Workers send structured events (stage start, steps with loss and samples/s,
  evaluations, node lines) to an inbox the driver owns: a Ray actor whose name reaches the workers
  in `WorkerJob.progress`, or an in-process queue when Ray is not running. A driver thread drains
  it while `trainer.fit()` runs and draws a tqdm bar (step/total, loss, samples/s, ETA) on a
  terminal, or one line per logged step elsewhere (a pipe, a CI log), with event lines above it.
  The worker prints each line too, so the log keeps it. Nothing here is allowed to fail a job: a
  broken channel only costs the display.
* **Duplicated worker lines** (Ray 2.60): Train V2 replaces `print` in its workers by one that
  logs to the root logger (whose console handler writes stderr) and calls the real `print` as
  well whenever `sys.stdout is not sys.__stdout__`, which holds in every Ray worker because Ray
  wraps its stdout. Each worker print reached the driver twice. `WORKER_ENV` turns that patch off.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import ray

if TYPE_CHECKING:
    from tqdm import tqdm

from depthkd.environ import patched_environ

LOG_NAME = "job.log"
# Where drivers, passes, sweeps and benchmarks write their one-line events (print, or a console's).
Log = Callable[[str], None]
# the environment of Ray Train workers: plain `print` (see the module docstring)
WORKER_ENV = {"RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
RAY_PLAIN_LOG = {"RAY_COLOR_PREFIX": "0"}  # the driver writes forwarded lines without colours
POLL_S = 0.25  # how often the driver drains the inbox
STEP_EVENT_MIN_S = 0.5  # a worker sends step events without metrics at most this often
_LOCAL = "local:"
_ACTOR = "ray:"
_local_inboxes: dict[str, queue.SimpleQueue] = {}  # in-process channels (no Ray)
_ids = itertools.count()


class StageProgress(Protocol):
    """What a job needs from a console: a channel address per stage (None: no display)."""

    def stage(self, name: str) -> contextlib.AbstractContextManager[str | None]: ...


class _Inbox:
    """The Ray actor behind a channel: workers `put`, the driver `take`s."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []

    def put(self, event: dict[str, Any]) -> None:
        self._events.append(event)

    def take(self) -> list[dict[str, Any]]:
        events, self._events = self._events, []
        return events

    def ping(self) -> None:
        """A worker waits on this so that its earlier `put`s are in before it ends."""


class _Channel:
    """The driver's end of a channel: an `_Inbox` actor, or a queue when Ray is not running."""

    def __init__(self) -> None:
        self._actor: Any = None  # an _Inbox actor handle (Ray types its methods loosely)
        if ray.is_initialized():
            name = f"depthkd-progress-{uuid.uuid4().hex[:12]}"
            namespace = ray.get_runtime_context().namespace
            inbox = ray.remote(num_cpus=0)(_Inbox).options(name=name, namespace=namespace)
            self._actor = inbox.remote()
            self.address = f"{_ACTOR}{namespace}/{name}"
        else:
            self.address = f"{_LOCAL}{os.getpid()}-{next(_ids)}"
            self._queue = _local_inboxes[self.address] = queue.SimpleQueue()

    def take(self) -> list[dict[str, Any]]:
        if self._actor is not None:
            return ray.get(self._actor.take.remote(), timeout=30)
        events = []
        while not self._queue.empty():
            events.append(self._queue.get_nowait())
        return events

    def close(self) -> None:
        if self._actor is not None:
            with contextlib.suppress(Exception):
                ray.kill(self._actor)
        _local_inboxes.pop(self.address, None)


class ProgressReporter:
    """A worker's end of the channel. Every method is a no-op without a channel, never raises,
    and sends without waiting (the order of one worker's events is kept)."""

    def __init__(self, address: str | None, *, stage: str) -> None:
        self.stage, self._last_step_event = stage, 0.0
        self._target: Any = None  # a local queue or an _Inbox actor handle
        try:
            if address and address.startswith(_LOCAL):
                self._target = _local_inboxes.get(address)
            elif address and address.startswith(_ACTOR):
                namespace, name = address.removeprefix(_ACTOR).split("/", 1)
                self._target = ray.get_actor(name, namespace=namespace)
        except Exception as exc:  # no display is no reason to fail training
            print(f"progress channel {address} unavailable: {exc}", flush=True)

    def _send(self, kind: str, **fields: Any) -> None:
        event = {"kind": kind, "stage": self.stage, "time": time.time(), **fields}
        try:
            if isinstance(self._target, queue.SimpleQueue):
                self._target.put(event)
            elif self._target is not None:
                self._target.put.remote(event)
        except Exception:
            self._target = None

    def line(self, kind: str, text: str, **fields: Any) -> None:
        """Prints `text` (for the log) and sends it as one console line with its `fields`."""
        print(text, flush=True)
        self._send(kind, text=text, **fields)

    def start(self, step: int, total: int) -> None:
        """The stage starts (or resumes) at `step` of `total`."""
        self._send("start", step=step, total=total)

    def step(self, step: int, total: int, *, text: str | None = None, **metrics: float) -> None:
        """Step `step` is done; `text` and `metrics` (loss, samples_per_s) on logged steps only.
        Without them the event is sent at most every `STEP_EVENT_MIN_S`."""
        if text is not None:
            print(text, flush=True)
        now = time.monotonic()
        if text is None and step < total and now - self._last_step_event < STEP_EVENT_MIN_S:
            return
        self._last_step_event = now
        self._send("step", step=step, total=total, text=text, **metrics)

    def close(self) -> None:
        """Waits until the driver's inbox holds everything this worker sent."""
        with contextlib.suppress(Exception):
            if self._target is not None and not isinstance(self._target, queue.SimpleQueue):
                ray.get(self._target.ping.remote(), timeout=30)


class _Tee:
    """A text stream writing to several (`verbose`: console and log)."""

    def __init__(self, *streams: TextIO) -> None:
        self._streams = streams

    def write(self, text: str) -> int:
        for stream in self._streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self._streams:
            stream.flush()

    def isatty(self) -> bool:
        return self._streams[0].isatty()

    def fileno(self) -> int:
        return self._streams[0].fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._streams[0], "encoding", "utf-8")


class _StageView:
    """Draws the events of one stage: a bar (on a terminal) or progress lines, and event lines."""

    def __init__(self, name: str, console: JobConsole) -> None:
        self.name, self.console = name, console
        self.bar: tqdm[Any] | None = None
        self.origin: tuple[float, int] = (time.time(), 0)  # worker time and step of the start
        self.quarter = 0  # without a terminal: a progress line per quarter of the stage only

    def show(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "start":
            self._start(event)
        elif kind == "step":
            self._step(event)
        elif event.get("text"):
            self.console.line(event["text"], log=False)

    def _start(self, event: dict[str, Any]) -> None:
        step, total = event["step"], event["total"]
        if self.bar is not None:  # a new worker group after a failure
            self.close()
        if step:
            self.console.line(f"[{self.name}] resuming at step {step}/{total}", log=False)
        self.origin = (event["time"], step)
        if self.console.bars and self.console.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=step,
                desc=self.name,
                unit="step",
                file=self.console.stream,
                dynamic_ncols=True,
                leave=True,
            )

    def _step(self, event: dict[str, Any]) -> None:
        step, total = event["step"], event["total"]
        if self.bar is not None:
            with self.console.lock:
                if "loss" in event:
                    self.bar.set_postfix_str(
                        f"loss {event['loss']:.4f}, {event.get('samples_per_s', 0):.1f} samples/s",
                        refresh=False,
                    )
                self.bar.update(step - self.bar.n)
        elif self.console.bars and event.get("text"):
            # the stage's last step is followed by its evaluation line: no progress line for it
            quarter = 4 * step // max(total, 1)
            if quarter <= self.quarter or step >= total:
                return
            self.quarter = quarter
            started, first = self.origin
            done = step - first
            eta = (event["time"] - started) / done * (total - step) if done > 0 else None
            shown = f", ETA {_duration(eta)}" if eta is not None and step < total else ""
            self.console.line(f"{event['text']}{shown}", log=False)

    def close(self) -> None:
        if self.bar is not None:
            with self.console.lock:
                self.bar.close()
            self.bar = None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class JobConsole:
    """The console of one job (a context manager): output goes to `log_path` while it is open.

    Args:
        log_path: the full log, appended to (a resumed job continues its log).
        bars: progress bars or lines (False: `--quiet`, event lines only).
        verbose: Python-level output (Ray's forwarded worker output, Ray's and MLflow's logging)
            goes to the console as well; the stage display is off, since the workers' own lines
            are shown then.
        stream: the console; default the process's stdout as it is on entry.
    """

    def __init__(
        self,
        log_path: Path,
        *,
        bars: bool = True,
        verbose: bool = False,
        stream: TextIO | None = None,
    ) -> None:
        self.log_path, self.bars, self.verbose = Path(log_path), bars and not verbose, verbose
        self.stream: TextIO = stream or sys.stdout
        self.lock = threading.RLock()
        self._own_stream = False
        self._log: TextIO | None = None
        self._saved_streams: tuple[TextIO, TextIO] = (sys.stdout, sys.stderr)  # set on entry
        self._saved_fds: list[int] = []
        self._channel: _Channel | None = None
        self._view: _StageView | None = None
        self._plain = patched_environ(RAY_PLAIN_LOG)

    def isatty(self) -> bool:
        """Whether the console is a terminal a bar can be drawn on (one with a width)."""
        try:
            return self.stream.isatty() and os.get_terminal_size(self.stream.fileno()).columns > 0
        except (AttributeError, ValueError, OSError):
            return False

    def line(self, text: str, *, log: bool = True) -> None:
        """One line on the console (above a bar) and, unless `log=False`, in the log."""
        with self.lock:
            if self._view is not None and self._view.bar is not None:
                self._view.bar.clear()
                print(text, file=self.stream, flush=True)
                self._view.bar.refresh()
            else:
                print(text, file=self.stream, flush=True)
            if log and self._log is not None:
                print(text, file=self._log, flush=True)

    def detail(self, text: str) -> None:
        """A line for the log (the console too when verbose)."""
        if self.verbose:
            self.line(text)
        elif self._log is not None:
            print(text, file=self._log, flush=True)

    def __enter__(self) -> JobConsole:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        self._log = self.log_path.open("a", buffering=1, encoding="utf-8", errors="replace")
        stamp = datetime.now().isoformat(timespec="seconds")
        print(f"===== {stamp} pid {os.getpid()}: {' '.join(sys.argv)}", file=self._log)
        self._saved_streams = (sys.stdout, sys.stderr)
        if self.verbose:
            sys.stdout = _Tee(self._saved_streams[0], self._log)
            sys.stderr = _Tee(self._saved_streams[1], self._log)
        else:
            if self.stream in self._saved_streams and (fd := _fd_of(self.stream)) in (1, 2):
                # the console is fd 1 or 2 itself: keep a copy of it before they go to the log
                self.stream = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8")
                self._own_stream = True
            self._saved_fds = [os.dup(1), os.dup(2)]
            os.dup2(self._log.fileno(), 1)
            os.dup2(self._log.fileno(), 2)
            sys.stdout = sys.stderr = self._log
            self._plain.__enter__()
        self.line(f"log: {self.log_path}")
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: Any) -> None:
        if error is not None and self._log is not None:
            print("".join(traceback.format_exception(kind, error, tb)), file=self._log)
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        sys.stdout, sys.stderr = self._saved_streams
        if self._saved_fds:
            self._plain.__exit__(None, None, None)
        for fd, saved in zip((1, 2), self._saved_fds, strict=False):
            os.dup2(saved, fd)
            os.close(saved)
        self._saved_fds = []
        # no close: a Ray thread may still hold the stream for a batch of lines
        self._log = None
        self.line(f"full log: {self.log_path}")
        if self._own_stream:
            self.stream.close()
            self.stream, self._own_stream = self._saved_streams[0], False

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[str | None]:
        """Shows stage `name` while the block runs; yields the channel address for its workers
        (None when verbose: the workers' own output is on the console then)."""
        if self.verbose:
            yield None
            return
        try:
            if self._channel is None:  # one inbox per job: each stage drains it completely
                self._channel = _Channel()
        except Exception as exc:
            self.detail(f"no progress display: {exc}")
            yield None
            return
        self._view = _StageView(name, self)
        stop = threading.Event()
        pump = threading.Thread(target=self._pump, args=(stop,), name="depthkd-progress")
        pump.daemon = True
        pump.start()
        try:
            yield self._channel.address
        finally:
            stop.set()
            pump.join(timeout=60)
            self._view.close()
            self._view = None

    def _pump(self, stop: threading.Event) -> None:
        """Draws the channel's events until `stop`, then what is left."""
        while True:
            last = stop.is_set()
            try:
                # both are set before this thread starts and cleared after it is joined
                assert self._channel is not None and self._view is not None
                for event in self._channel.take():
                    self._view.show(event)
            except Exception as exc:
                self.detail(f"progress display stopped: {exc!r}")
                return
            if last:
                return
            stop.wait(POLL_S)


def _fd_of(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, ValueError, OSError):
        return None
