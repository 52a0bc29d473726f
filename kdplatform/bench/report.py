"""The Markdown form of a `depthkd bench all` result: the machine, then one table row per
benchmark row (figures, ratio, protocol), then the GPU variants when they were measured."""

from __future__ import annotations

from typing import Any

COLUMNS = ("Row", "Compared", "Baseline", "Candidate", "Figures", "Ratio", "Protocol / notes")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _number(value: float) -> str:
    if value == 0 or 0.01 <= abs(value) < 1e5:
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{value:.2e}"


def _figures(row: dict[str, Any]) -> str:
    return "; ".join(
        f"{f['label']} {_number(f['value'])}{' ' + f['unit'] if f['unit'] else ''}"
        for f in row["figures"]
    )


def _ratio(row: dict[str, Any]) -> str:
    if row["ratio"] is None:
        return "—"
    target = f" (target {row['target']})" if row.get("target") else ""
    return f"{row['ratio']:.2f}x {row['ratio_of']}{target}"


def _notes(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"**{row['status']}**: {row['note']}" if row["note"] else f"**{row['status']}**"
    return "; ".join(part for part in (row["protocol"], row["note"]) if part)


def _machine(machine: dict[str, Any]) -> list[str]:
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    gpu = machine["gpu"]
    gpu_text = gpu["name"] if gpu["name"] == "none" else f"{gpu['name']} x{gpu['count']}"
    load = machine.get("load_1min") or {}
    return [
        f"- host: `{machine['hostname']}`; CPU: {machine['cpu']}, {machine['cores']} cores "
        f"({machine['usable_cores']} usable, torch {machine['torch_threads']} threads); "
        f"RAM {machine['memory_gib']} GiB; GPU: {gpu_text}",
        f"- OS: {machine['os']}; Python {machine['python']}; {versions}",
        f"- 1-min load average: {_load(load.get('start'))} at the start, "
        f"{_load(load.get('end'))} at the end",
    ]


def _load(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"


def _gpu_table(row: dict[str, Any]) -> list[str]:
    variants = row["details"].get("variants") or []
    if row["name"] != "gpu" or not variants:
        return []
    lines = [
        "",
        "GPU variants:",
        "",
        "| variant | images/s | peak GiB | rounds |",
        "|---|---|---|---|",
    ]
    for v in variants:
        rounds = ", ".join(f"{r:.1f}" for r in v["rounds"])
        lines.append(
            f"| {v['name']} | {v['images_per_s']:.1f} | {v['peak_memory_gib']:.2f} | {rounds} |"
        )
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The result as Markdown: a heading, the machine, the table of rows."""
    git = result.get("git") or {}
    commit = f", commit {git['commit'][:10]}{' (dirty)' if git.get('dirty') else ''}" if git else ""
    kind = "quick run (small sizes: not for comparison)" if result["quick"] else "full run"
    lines = [
        f"# depthkd bench all — {result['started']}",
        "",
        f"{kind}, depthkd {result['depthkd']}{commit}, {result['seconds']:.0f} s",
        "",
        *_machine(result["machine"]),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in result["rows"]:
        cells = (
            f"{row['title']} (`{row['name']}`)",
            row["compared"],
            row["baseline"],
            row["candidate"],
            _figures(row) or "—",
            _ratio(row),
            _notes(row),
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    for row in result["rows"]:
        lines += _gpu_table(row)
    return "\n".join(lines) + "\n"
