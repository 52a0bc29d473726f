"""Does distillation make the student better, and which part of it? (`depthkd bench kd`)

Every row trains the same student for the same steps on the same data stream, through the real
job path (`prepare_job` → `run_job`: Ray Train, MLflow, exports); only what the student learns
from differs. The teacher is the one `model.teacher.checkpoint` gives (as a user's job gets it;
evaluated on val and test, not trained) or, without one, trained for depth once before any row;
each seed then runs:

* `supervised` → the no-KD row; its decoder and head are also the fixed ghost of acclimation;
* `acclimate` with the copied, fixed ghost (DisDepth) and with a fresh trainable ghost;
* "acclimation off": the depth teacher behind fresh, untrained adapters (no stage);
* `distill` once per row: the KD terms named by the row, from the teacher the row names;
  pseudo-label rows mix the unlabeled split into every batch (`distill.unlabeled_ratio`), labelled
  once, before any seed, by the depth teacher (`depthkd pseudo-label`'s pass);
* the same for a student whose LG blocks lack the global path (its own baseline and ghost).

"Gap closed" is (no-KD − row) / (no-KD − teacher) on test abs_rel, the teacher being the depth
teacher, given or trained (the labeler of the pseudo-labels; acclimation keeps its accuracy).
Acclimation runs only when a row distils from an acclimated teacher online.

Loss weights are fixed in the config before the run (nothing is chosen here). Every figure is
the held-out **test** split under the config's protocol, mean ± std over the seeds (a seed sets
the model init and the data order; the data set itself is fixed); val figures are listed beside
them. The teacher rows give its val and test accuracy before and after acclimation.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from depthkd import atomic
from depthkd.config.loader import with_values
from depthkd.config.schema import ExperimentConfig
from depthkd.console import Log
from depthkd.data.shards import read_manifest, split_entry
from depthkd.errors import ConfigError
from depthkd.eval.runner import evaluate_split
from depthkd.models.kinds import ModelKind
from depthkd.models.serialization import load_model, save_model
from depthkd.models.zoo import build_acclimated_teacher
from depthkd.train.job_context import JobContext
from depthkd.train.jobs import prepare_job, resolve_shards, run_job
from depthkd.train.reports import split_metrics
from depthkd.train.unlabeled import unlabeled_frames

REPORTED = ("abs_rel", "rmse", "d1")  # per row, mean ± std over seeds


@dataclass(frozen=True)
class KDRow:
    """One student of the benchmark.

    Attributes:
        key: short name (JSON, chart).
        label: what the student learns from.
        teacher: None (no KD, or cached pseudo-labels only) or which acclimated teacher: "copy"
            (fixed copied ghost), "fresh" (trainable ghost) or "off" (fresh adapters, no
            acclimation).
        losses: the terms kept from the config's objective (None: all of them but
            `pseudo_silog`, which only pseudo-label rows keep).
        pseudo: pseudo-labelled unlabeled frames mixed into every batch.
        loss: `distill.loss` settings of the row.
        lg_global: the student's LG global path.
    """

    key: str
    label: str
    teacher: str | None = None
    losses: tuple[str, ...] | None = None  # terms kept from the config's objective
    loss: dict[str, Any] = field(default_factory=dict)
    lg_global: bool = True
    pseudo: bool = False

    @property
    def distils(self) -> bool:
        """The row is a distill job (not a no-KD baseline)."""
        return self.teacher is not None or self.pseudo


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
    KDRow(
        "pseudo",
        "pseudo-labels only (no feature KD)",
        losses=("silog", "pseudo_silog"),
        pseudo=True,
    ),
    KDRow(
        "attentive_response_pseudo",
        "attentive + response KD + pseudo-labels",
        "copy",
        ("silog", "attentive_kd", "response_kd", "pseudo_silog"),
        pseudo=True,
    ),
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

    def gap_closed(self, key: str) -> float:
        """(no-KD − row) / (no-KD − teacher) of the test abs_rel means."""
        base = self.summary(self.baseline_of(key))[0]
        teacher = self.teacher["before"]["test"]["abs_rel"]
        return (base - self.summary(key)[0]) / (base - teacher)

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

    def __init__(self, cfg: ExperimentConfig, tag: str, log: Log) -> None:
        self.cfg, self.tag, self.log = cfg, tag, log
        self.seconds: dict[str, float] = {}

    def job(
        self, label: str, job: str, values: dict[str, Any], *, last_stage_only: bool = False
    ) -> JobContext:
        name = f"{self.cfg.name}-{self.tag}-{label}"
        cfg = with_values(self.cfg, {"name": name, **values})
        started = time.perf_counter()
        ctx = prepare_job(cfg, job, progress=False)
        if last_stage_only:  # the row's own stage: its baseline is a row of its own
            ctx.stages = ctx.stages[-1:]
        ctx = run_job(ctx, log=lambda _: None)
        self.seconds[label] = time.perf_counter() - started
        stage, data = ctx.stages[-1], cfg.data
        val = split_metrics(ctx.results[stage].metrics, data.eval_split)["abs_rel"]
        self.log(
            f"  {label:28s} {data.test_split} abs_rel {ctx.test_metrics[stage]['abs_rel']:.4f}, "
            f"{data.eval_split} {val:.4f} ({self.seconds[label]:.0f} s)"
        )
        return ctx

    def given_teacher(
        self, values: dict[str, Any]
    ) -> tuple[JobContext, Path, dict[str, dict[str, float]]]:
        """The teacher `model.teacher.checkpoint` gives (as a user's job gets it, not trained
        here): a prepared job's context (data, profile, folder), its file, and its val and
        test metrics through the shared evaluator."""
        cfg = with_values(self.cfg, {"name": f"{self.cfg.name}-{self.tag}-teacher", **values})
        ctx = prepare_job(cfg, "teacher", progress=False)  # resolves and checks the file
        teacher = ctx.inputs[ModelKind.TEACHER]
        model = load_model(teacher, expect=ModelKind.TEACHER)
        data = cfg.data
        metrics = {
            name: evaluate_split(
                model, ctx.shards, split, data, ctx.profile.protocol, tta=cfg.eval.tta
            ).means()
            for name, split in (("val", data.eval_split), ("test", data.test_split))
        }
        self.log(
            f"teacher: given ({cfg.model.teacher.checkpoint}), {data.test_split} abs_rel "
            f"{metrics['test']['abs_rel']:.4f}, {data.eval_split} {metrics['val']['abs_rel']:.4f}"
        )
        return ctx, teacher, metrics


def _unacclimated(
    cfg: ExperimentConfig, teacher: Path, out: Path, *, max_depth: float, seed: int
) -> Path:
    """The depth-trained teacher behind fresh adapters and ghost (drawn from `seed`), without
    acclimation."""
    torch.manual_seed(seed)
    model = build_acclimated_teacher(cfg.model.teacher, cfg.model.student, max_depth=max_depth)
    model.teacher.load_state_dict(load_model(teacher, expect=ModelKind.TEACHER).state_dict())
    return save_model(model, out)


def _distill_values(
    cfg: ExperimentConfig, row: KDRow, pseudo_labels: Path | None
) -> dict[str, Any]:
    losses = dict(cfg.distill.losses)
    kept = row.losses or [term for term in losses if term != "pseudo_silog"]
    values: dict[str, Any] = {
        "distill.losses": {term: losses[term] for term in kept},
        "distill.unlabeled_ratio": cfg.distill.unlabeled_ratio if row.pseudo else 0.0,
        **{f"distill.loss.{k}": v for k, v in row.loss.items()},
    }
    if row.pseudo:
        # the pass keeps its split's name, which the row must read (given pseudo-labels
        # alone would make it `unlabeled`)
        values["data.pseudo_labels"] = str(pseudo_labels)
        values["data.unlabeled_split"] = cfg.data.pseudo_split
    return values


def check_benchmark_config(cfg: ExperimentConfig, rows: tuple[KDRow, ...] = ROWS) -> None:
    """Refuses, before any training, a config whose rows would not compare like with like or
    that has no held-out split to report on."""
    if cfg.model.teacher.source == "hf":
        raise ConfigError(
            "bench kd takes its teacher from model.teacher.checkpoint or trains one: a Hugging "
            "Face teacher (model.teacher.source: hf) is not supported by it yet"
        )
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
    needed = [cfg.data.eval_split, cfg.data.test_split]
    if any(row.pseudo for row in rows):
        needed.append(cfg.data.pseudo_split)
        if not cfg.distill.unlabeled_ratio > 0 or not cfg.distill.losses.get("pseudo_silog"):
            raise ConfigError(
                "bench kd: the pseudo-label rows need distill.unlabeled_ratio > 0 and a "
                "pseudo_silog weight in distill.losses"
            )
    missing = [s for s in needed if s not in splits]
    if missing:
        raise ConfigError(
            f"bench kd reports on {cfg.data.test_split} and lists {cfg.data.eval_split}, but "
            f"the shards at {shards} have no {', '.join(missing)} split"
        )


def selected_rows(keys: list[str] | None) -> tuple[KDRow, ...]:
    """The rows named by `keys` (all when None) plus the no-KD row each is compared with.

    Raises:
        ConfigError: an unknown row key.
    """
    if keys is None:
        return ROWS
    known = {row.key: row for row in ROWS}
    if unknown := [k for k in keys if k not in known]:
        raise ConfigError(f"bench kd: unknown row {', '.join(unknown)}; rows: {', '.join(known)}")
    wanted = set(keys) | {BASELINE[known[k].lg_global] for k in keys}
    return tuple(row for row in ROWS if row.key in wanted)


def run_kd_benchmark(
    cfg: ExperimentConfig,
    *,
    seeds: list[int],
    tag: str,
    log: Log = print,
    rows: tuple[KDRow, ...] = ROWS,
) -> KDBenchResult:
    """Trains the teacher once, then each of `rows` for each seed; see the module doc."""
    check_benchmark_config(cfg, rows)
    runner = _Runner(cfg, tag, log)
    base = {"tracking.register_models": False}
    if cfg.model.teacher.checkpoint is None:
        log(f"teacher: depth training, {cfg.teacher.steps} steps (seed {cfg.seed})")
        teacher_ctx = runner.job("teacher", "teacher", base)
        teacher = teacher_ctx.results["teacher"].exports["teacher"]
        before = _metrics(teacher_ctx, "teacher")
    else:
        teacher_ctx, teacher, before = runner.given_teacher(base)
    max_depth = teacher_ctx.profile.max_depth
    pseudo_labels = (
        unlabeled_frames(
            cfg,
            "distill",
            teacher_ctx.shards,
            teacher=teacher,
            out_dir=teacher_ctx.out_dir,
            log=log,
        )
        if any(r.pseudo for r in rows)
        else None
    )
    figures: dict[str, dict[str, Any]] = {
        row.key: {"label": row.label, "lg_global": row.lg_global, "val": {}, "test": {}}
        for row in rows
    }
    teachers_used = {row.teacher for row in rows}
    after: dict[str, dict[str, list[float]]] = {"val": {}, "test": {}}

    def add(target: dict[str, dict[str, list[float]]], metrics: dict[str, dict[str, float]]):
        for split, values in metrics.items():
            for metric, value in values.items():
                target[split].setdefault(metric, []).append(value)

    for seed in seeds:
        log(f"seed {seed}:")
        for lg_global in (True, False):
            if BASELINE[lg_global] not in figures:
                continue
            variant = "" if lg_global else "-local"
            student = {"seed": seed, "model.student.lg_global": lg_global, **base}
            nokd = runner.job(f"s{seed}-no-kd{variant}", "supervised", student)
            add(figures[BASELINE[lg_global]], _metrics(nokd, "supervised"))
            ghost = nokd.results["supervised"].exports["student"]
            teachers: dict[str, Path] = {}
            kinds = ("copy", "fresh") if lg_global else ("copy",)
            for ghost_kind in [k for k in kinds if k in teachers_used]:
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
            if lg_global and "off" in teachers_used:
                out = teacher_ctx.out_dir / f"unacclimated-s{seed}.pt"
                teachers["off"] = _unacclimated(cfg, teacher, out, max_depth=max_depth, seed=seed)
            for row in rows:
                if not row.distils or row.lg_global != lg_global:
                    continue
                values = {**student, **_distill_values(cfg, row, pseudo_labels)}
                if row.teacher is not None:
                    values["distill.teacher"] = str(teachers[row.teacher])
                ctx = runner.job(f"s{seed}-{row.key}", "distill", values, last_stage_only=True)
                add(figures[row.key], _metrics(ctx, "distill"))
    test_split = cfg.data.test_split
    return KDBenchResult(
        config=cfg.name,
        protocol=teacher_ctx.profile.protocol,
        selection_split=cfg.data.eval_split,
        report_split=test_split,
        seeds=list(seeds),
        steps={
            s: getattr(cfg, s).steps
            for s in ("teacher", "supervised", "acclimate", "distill")
            if (s != "teacher" or cfg.model.teacher.checkpoint is None)  # given: not trained
            and (s != "acclimate" or bool(teachers_used & {"copy", "fresh"}))
        },
        test_images=_split_size(teacher_ctx, test_split),
        rows=figures,
        teacher={
            "before": before,
            "after": after,
            "source": "given" if cfg.model.teacher.checkpoint else "depth-trained",
        },
        seconds=runner.seconds,
    )


def _split_size(ctx: JobContext, split: str) -> int:
    return int(split_entry(ctx.shards, split)["num_samples"])


def _teacher_source(result: KDBenchResult) -> str:
    return result.teacher.get("source", "depth-trained")  # results written before it was kept


def markdown(result: KDBenchResult) -> str:
    """The result as a Markdown table (test, mean ± std over seeds; val beside it)."""
    test, val = result.report_split, result.selection_split
    steps = ", ".join(f"{stage} {n}" for stage, n in result.steps.items())
    lines = [
        f"# depthkd bench kd — {result.config}",
        "",
        f"Student rows: **{test} split** ({result.test_images} frames, metrics over those with "
        f"ground truth; protocol {result.protocol}), mean ± std over seeds {result.seeds}; "
        f"{val} abs_rel beside it. "
        f"Steps: {steps}. Weights fixed in the config before the run. Gap closed: (no KD − "
        f"row) / (no KD − {_teacher_source(result)} teacher), test abs_rel means. Ratio and gap: "
        "against the no-KD row of the same student: gap = difference of the means in standard "
        "deviations (the larger of the two rows'); paired = the per-seed reduction (same init "
        f"and data order), mean ± std. Machine: {result.machine}.",
        "",
        f"| student | {test} abs_rel | × no KD | gap (σ) | paired reduction | gap closed "
        f"| {test} rmse | {test} d1 | {val} abs_rel |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in result.row_keys():
        row, cells = result.rows[key], []
        for metric in REPORTED:
            mean, std = result.summary(key, metric)
            cells.append(f"{mean:.4f} ± {std:.4f}")
        val_mean, val_std = result.summary(key, "abs_rel", "val")
        versus = ["—", "—", "—", "—"]
        if key not in BASELINE.values():
            (ratio, gap), (gain, spread) = result.versus_baseline(key), result.paired_gain(key)
            closed = f"{100 * result.gap_closed(key):.0f} %"
            versus = [f"{ratio:.3f}", f"{gap:.1f}", f"{gain:.4f} ± {spread:.4f}", closed]
        lines.append(
            f"| {row['label']} | {cells[0]} | {' | '.join(versus)} | {cells[1]} | {cells[2]} | "
            f"{val_mean:.4f} ± {val_std:.4f} |"
        )
    before, after = result.teacher["before"], result.teacher["after"]
    acclimated = (
        f"after acclimation with the fixed copied ghost "
        f"{statistics.fmean(after['val']['abs_rel']):.4f} / "
        f"{statistics.fmean(after['test']['abs_rel']):.4f} (mean over seeds; {val} after / "
        f"before: {statistics.fmean(after['val']['abs_rel']) / before['val']['abs_rel']:.3f})"
        if after["val"]
        else "after acclimation: not measured in these rows"
    )
    lines += [
        "",
        f"Teacher ({val} / {test} abs_rel): {_teacher_source(result)} "
        f"{before['val']['abs_rel']:.4f} / "
        f"{before['test']['abs_rel']:.4f}; {acclimated}.",
    ]
    return "\n".join(lines) + "\n"


def bar_chart(result: KDBenchResult, path: Path) -> Path:
    """Test abs_rel per row (mean, ± std as error bars) and the teacher's, with the no-KD mean
    as a line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = result.row_keys()
    means = [result.summary(k)[0] for k in keys] + [result.teacher["before"]["test"]["abs_rel"]]
    stds = [result.summary(k)[1] for k in keys] + [0.0]
    labels = [result.rows[k]["label"] for k in keys] + [f"teacher ({_teacher_source(result)})"]
    figure = Figure(figsize=(8, 0.45 * len(labels) + 1.4), layout="constrained")
    axes = figure.add_subplot()
    colours = ["#888888" if k in BASELINE.values() else "#3b75af" for k in keys] + ["#c44e52"]
    axes.barh(range(len(labels)), means, xerr=stds, color=colours, capsize=3)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.invert_yaxis()
    for key, style in zip(BASELINE.values(), ("--", ":"), strict=True):  # each student's no KD
        if key not in result.rows:
            continue
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
