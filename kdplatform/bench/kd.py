"""Does distillation make the student better, and which part of it? (`depthkd bench kd`)

Every row trains the same student for the same steps on the same data stream, through the real
job path (`prepare_job` → `run_job`: Ray Train, MLflow, exports); only what the student learns
from differs. The teacher is trained for depth once, before any row (a teacher is given to a
user's job the same way, `model.teacher.checkpoint`), and each seed then runs:

* `supervised` → the no-KD row; its decoder and head are also the fixed ghost of acclimation;
* `acclimate` with the copied, fixed ghost (DisDepth) and with a fresh trainable ghost;
* "acclimation off": the depth-trained teacher behind fresh, untrained adapters (no stage);
* `distill` once per row: the KD terms named by the row, from the teacher the row names;
* the same for a student whose LG blocks lack the global path (its own baseline and ghost).

Loss weights are fixed in the config before the run (nothing is chosen here). Every figure is
the held-out **test** split under the config's protocol, mean ± std over the seeds (a seed sets
the model init and the data order; the data set itself is fixed); val figures are listed beside
them. The teacher rows give its val and test accuracy before and after acclimation.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdplatform import atomic
from kdplatform.config.loader import with_values
from kdplatform.config.schema import ExperimentConfig
from kdplatform.data.shards import read_manifest, split_entry
from kdplatform.errors import ConfigError
from kdplatform.train.jobs import JobContext, prepare_job, resolve_shards, run_job, split_metrics
from models.serialization import load_model, save_model
from models.zoo import build_acclimated_teacher

REPORTED = ("abs_rel", "rmse", "d1")  # per row, mean ± std over seeds


@dataclass(frozen=True)
class KDRow:
    """One student of the benchmark.

    Attributes:
        key: short name (JSON, chart).
        label: what the student learns from.
        teacher: None (no KD) or which acclimated teacher: "copy" (fixed copied ghost), "fresh"
            (trainable ghost) or "off" (fresh adapters, no acclimation).
        losses: the distill objective (term → weight) when not the config's own.
        loss: `distill.loss` settings of the row.
        lg_global: the student's LG global path.
    """

    key: str
    label: str
    teacher: str | None = None
    losses: tuple[str, ...] | None = None  # terms kept from the config's objective
    loss: dict[str, Any] = field(default_factory=dict)
    lg_global: bool = True


ROWS = (
    KDRow("no_kd", "no KD (supervised)"),
    KDRow("response", "response KD only", "copy", ("silog", "response_kd")),
    KDRow(
        "feature_mse",
        "plain feature-MSE KD",
        "copy",
        ("silog", "attentive_kd"),
        {"attentive": False},
    ),
    KDRow("attentive", "attentive KD", "copy", ("silog", "attentive_kd")),
    KDRow("attentive_response", "attentive + response KD (fixed copied ghost)", "copy"),
    KDRow("fresh_ghost", "attentive + response KD, fresh trainable ghost", "fresh"),
    KDRow("no_acclimation", "attentive + response KD, acclimation off", "off"),
    KDRow("no_kd_local", "no KD, LG global path off", lg_global=False),
    KDRow("kd_local", "attentive + response KD, LG global path off", "copy", lg_global=False),
)
BASELINE = {True: "no_kd", False: "no_kd_local"}  # the no-KD row of each student
HEADLINE = "attentive_response"  # the platform's default distillation


@dataclass
class KDBenchResult:
    """Per-seed figures of every row and of the teacher, with what they were measured on."""

    config: str
    protocol: str
    selection_split: str
    report_split: str
    seeds: list[int]
    steps: dict[str, int]
    test_images: int
    rows: dict[str, dict[str, Any]]  # key → {label, test: {metric: [per seed]}, val: {...}}
    teacher: dict[str, Any]  # {before: {val, test}, after: {val: [..], test: [..]}}
    seconds: dict[str, float]
    machine: str = field(default_factory=lambda: f"{platform.node()} ({platform.machine()})")

    def summary(
        self, key: str, metric: str = "abs_rel", split: str = "test"
    ) -> tuple[float, float]:
        values = self.rows[key][split][metric]
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    def versus_baseline(self, key: str) -> tuple[float, float]:
        """(row / its no-KD row, gap in standard deviations) of the test abs_rel means; the gap
        divides by the larger of the two rows' standard deviations."""
        mean, std = self.summary(key)
        base_mean, base_std = self.summary(self.baseline_of(key))
        spread = max(std, base_std)
        return mean / base_mean, (base_mean - mean) / spread if spread else float("inf")

    def paired_gain(self, key: str) -> tuple[float, float]:
        """Mean and std over seeds of the per-seed test abs_rel reduction against the no-KD row
        (a seed fixes both rows' init and data order, so they pair up)."""
        base = self.rows[self.baseline_of(key)]["test"]["abs_rel"]
        gains = [b - r for b, r in zip(base, self.rows[key]["test"]["abs_rel"], strict=True)]
        return statistics.fmean(gains), statistics.stdev(gains) if len(gains) > 1 else 0.0

    def row_keys(self) -> list[str]:
        """The rows in `ROWS` order (a JSON round trip sorts them)."""
        return [row.key for row in ROWS if row.key in self.rows]

    def baseline_of(self, key: str) -> str:
        return BASELINE[self.rows[key]["lg_global"]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metrics(ctx: JobContext, stage: str) -> dict[str, dict[str, float]]:
    cfg = ctx.cfg
    return {
        "val": split_metrics(ctx.results[stage].metrics, cfg.data.eval_split),
        "test": ctx.test_metrics[stage],
    }


class _Runner:
    """Runs the benchmark's jobs, each under its own job id, and remembers their models."""

    def __init__(self, cfg: ExperimentConfig, tag: str, log: Callable[[str], None]) -> None:
        self.cfg, self.tag, self.log = cfg, tag, log
        self.seconds: dict[str, float] = {}

    def job(self, label: str, job: str, values: dict[str, Any]) -> JobContext:
        name = f"{self.cfg.name}-{self.tag}-{label}"
        cfg = with_values(self.cfg, {"name": name, **values})
        started = time.perf_counter()
        ctx = run_job(prepare_job(cfg, job, progress=False), log=lambda _: None)
        self.seconds[label] = time.perf_counter() - started
        stage, data = ctx.stages[-1], cfg.data
        val = split_metrics(ctx.results[stage].metrics, data.eval_split)["abs_rel"]
        self.log(
            f"  {label:28s} {data.test_split} abs_rel {ctx.test_metrics[stage]['abs_rel']:.4f}, "
            f"{data.eval_split} {val:.4f} ({self.seconds[label]:.0f} s)"
        )
        return ctx


def _unacclimated(
    cfg: ExperimentConfig, teacher: Path, out: Path, *, max_depth: float, seed: int
) -> Path:
    """The depth-trained teacher behind fresh adapters and ghost (drawn from `seed`), without
    acclimation."""
    torch.manual_seed(seed)
    model = build_acclimated_teacher(cfg.model.teacher, cfg.model.student, max_depth=max_depth)
    model.teacher.load_state_dict(load_model(teacher, expect="teacher").state_dict())
    return save_model(model, out)


def _distill_values(cfg: ExperimentConfig, row: KDRow) -> dict[str, Any]:
    losses = dict(cfg.distill.losses)
    if row.losses is not None:
        losses = {term: losses[term] for term in row.losses}
    return {"distill.losses": losses, **{f"distill.loss.{k}": v for k, v in row.loss.items()}}


def check_benchmark_config(cfg: ExperimentConfig) -> None:
    """Refuses, before any training, a config whose rows would not compare like with like or
    that has no held-out split to report on."""
    supervised, distill = cfg.supervised, cfg.distill
    differ = [
        key
        for key in ("steps", "optim", "loss")
        if getattr(supervised, key) != getattr(distill, key)
    ]
    if differ:
        raise ConfigError(
            f"bench kd: supervised.{{{', '.join(differ)}}} differ from distill's, so the no-KD "
            "rows would not train like the KD rows",
            hint="give supervised the same steps, optim and loss as distill",
        )
    shards = resolve_shards(cfg, progress=False)
    splits = read_manifest(shards)["splits"]
    missing = [s for s in (cfg.data.eval_split, cfg.data.test_split) if s not in splits]
    if missing:
        raise ConfigError(
            f"bench kd reports on {cfg.data.test_split} and lists {cfg.data.eval_split}, but "
            f"the shards at {shards} have no {', '.join(missing)} split"
        )


def run_kd_benchmark(
    cfg: ExperimentConfig,
    *,
    seeds: list[int],
    tag: str,
    log: Callable[[str], None] = print,
) -> KDBenchResult:
    """Trains the teacher once, then every row of `ROWS` for each seed; see the module doc."""
    check_benchmark_config(cfg)
    runner = _Runner(cfg, tag, log)
    base = {"tracking.register_models": False}
    log(f"teacher: depth training, {cfg.teacher.steps} steps (seed {cfg.seed})")
    teacher_ctx = runner.job("teacher", "teacher", base)
    teacher = teacher_ctx.results["teacher"].exports["teacher"]
    max_depth = teacher_ctx.profile.max_depth
    rows: dict[str, dict[str, Any]] = {
        row.key: {"label": row.label, "lg_global": row.lg_global, "val": {}, "test": {}}
        for row in ROWS
    }
    after: dict[str, dict[str, list[float]]] = {"val": {}, "test": {}}

    def add(target: dict[str, dict[str, list[float]]], metrics: dict[str, dict[str, float]]):
        for split, values in metrics.items():
            for metric, value in values.items():
                target[split].setdefault(metric, []).append(value)

    for seed in seeds:
        log(f"seed {seed}:")
        for lg_global in (True, False):
            variant = "" if lg_global else "-local"
            student = {"seed": seed, "model.student.lg_global": lg_global, **base}
            nokd = runner.job(f"s{seed}-no-kd{variant}", "supervised", student)
            add(rows[BASELINE[lg_global]], _metrics(nokd, "supervised"))
            ghost = nokd.results["supervised"].exports["student"]
            teachers: dict[str, Path] = {}
            for ghost_kind in ("copy", "fresh") if lg_global else ("copy",):
                accl = {
                    **student,
                    "model.teacher.checkpoint": str(teacher),
                    "acclimate.ghost": ghost_kind,
                    "acclimate.ghost_from": str(ghost) if ghost_kind == "copy" else None,
                }
                ctx = runner.job(f"s{seed}-acclimate-{ghost_kind}{variant}", "acclimate", accl)
                teachers[ghost_kind] = ctx.results["acclimate"].exports["teacher"]
                if ghost_kind == "copy" and lg_global:
                    add(after, _metrics(ctx, "acclimate"))
            if lg_global:
                out = teacher_ctx.out_dir / f"unacclimated-s{seed}.pt"
                teachers["off"] = _unacclimated(cfg, teacher, out, max_depth=max_depth, seed=seed)
            for row in ROWS:
                if row.teacher is None or row.lg_global != lg_global:
                    continue
                values = {
                    **student,
                    **_distill_values(cfg, row),
                    "distill.teacher": str(teachers[row.teacher]),
                }
                ctx = runner.job(f"s{seed}-{row.key}", "distill", values)
                add(rows[row.key], _metrics(ctx, "distill"))
    test_split = cfg.data.test_split
    return KDBenchResult(
        config=cfg.name,
        protocol=teacher_ctx.profile.protocol,
        selection_split=cfg.data.eval_split,
        report_split=test_split,
        seeds=list(seeds),
        steps={s: getattr(cfg, s).steps for s in ("teacher", "supervised", "acclimate", "distill")},
        test_images=_split_size(teacher_ctx, test_split),
        rows=rows,
        teacher={"before": _metrics(teacher_ctx, "teacher"), "after": after},
        seconds=runner.seconds,
    )


def _split_size(ctx: JobContext, split: str) -> int:
    return int(split_entry(ctx.shards, split)["num_samples"])


def markdown(result: KDBenchResult) -> str:
    """The result as a Markdown table (test, mean ± std over seeds; val beside it)."""
    test, val = result.report_split, result.selection_split
    steps = ", ".join(f"{stage} {n}" for stage, n in result.steps.items())
    lines = [
        f"# depthkd bench kd — {result.config}",
        "",
        f"Student rows: **{test} split** ({result.test_images} images, protocol "
        f"{result.protocol}), mean ± std over seeds {result.seeds}; {val} abs_rel beside it. "
        f"Steps: {steps}. Weights fixed in the config before the run. Ratio and gap: "
        "against the no-KD row of the same student: gap = difference of the means in standard "
        "deviations (the larger of the two rows'); paired = the per-seed reduction (same init "
        f"and data order), mean ± std. Machine: {result.machine}.",
        "",
        f"| student | {test} abs_rel | × no KD | gap (σ) | paired reduction | {test} rmse "
        f"| {test} d1 | {val} abs_rel |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in result.row_keys():
        row, cells = result.rows[key], []
        for metric in REPORTED:
            mean, std = result.summary(key, metric)
            cells.append(f"{mean:.4f} ± {std:.4f}")
        val_mean, val_std = result.summary(key, "abs_rel", "val")
        versus = ["—", "—", "—"]
        if key not in BASELINE.values():
            (ratio, gap), (gain, spread) = result.versus_baseline(key), result.paired_gain(key)
            versus = [f"{ratio:.3f}", f"{gap:.1f}", f"{gain:.4f} ± {spread:.4f}"]
        lines.append(
            f"| {row['label']} | {cells[0]} | {' | '.join(versus)} | {cells[1]} | {cells[2]} | "
            f"{val_mean:.4f} ± {val_std:.4f} |"
        )
    before, after = result.teacher["before"], result.teacher["after"]
    lines += [
        "",
        f"Teacher ({val} / {test} abs_rel): depth-trained {before['val']['abs_rel']:.4f} / "
        f"{before['test']['abs_rel']:.4f}; after acclimation with the fixed copied ghost "
        f"{statistics.fmean(after['val']['abs_rel']):.4f} / "
        f"{statistics.fmean(after['test']['abs_rel']):.4f} (mean over seeds; {val} after / "
        f"before: {statistics.fmean(after['val']['abs_rel']) / before['val']['abs_rel']:.3f}).",
    ]
    return "\n".join(lines) + "\n"


def bar_chart(result: KDBenchResult, path: Path) -> Path:
    """Test abs_rel per row (mean, ± std as error bars) with the no-KD mean as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = result.row_keys()
    means = [result.summary(k)[0] for k in keys]
    stds = [result.summary(k)[1] for k in keys]
    figure = Figure(figsize=(8, 0.45 * len(keys) + 1.4), layout="constrained")
    axes = figure.add_subplot()
    colours = ["#888888" if k in BASELINE.values() else "#3b75af" for k in keys]
    axes.barh(range(len(keys)), means, xerr=stds, color=colours, capsize=3)
    axes.set_yticks(range(len(keys)), [result.rows[k]["label"] for k in keys], fontsize=8)
    axes.invert_yaxis()
    for key, style in zip(BASELINE.values(), ("--", ":"), strict=True):  # each student's no KD
        axes.axvline(result.summary(key)[0], color="#444444", linestyle=style, linewidth=1)
    axes.set_xlabel(
        f"{result.report_split} abs_rel ({result.protocol}), mean ± std over "
        f"{len(result.seeds)} seeds — lower is better"
    )
    axes.set_title(f"depthkd bench kd: {result.config}", fontsize=10)
    FigureCanvasAgg(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    figure.savefig(tmp, dpi=120)
    tmp.replace(path)
    return path


def write_result(result: KDBenchResult, out: Path, stem: str) -> dict[str, Path]:
    """`<stem>.json`, `.md` and `.png` under `out`."""
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md"}
    atomic.write_json(paths["json"], result.to_dict())
    atomic.write_text(paths["md"], markdown(result))
    return {**paths, "png": bar_chart(result, out / f"{stem}.png")}
