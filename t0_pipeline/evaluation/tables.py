"""Accuracy results read back and compared: one model's table, every model's combined report
(report.md, report.csv) and the accuracy-by-size plot."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import polars as pl

from t0_pipeline.artifacts import atomic_path
from t0_pipeline.checks import students_below_base
from t0_pipeline.config import (
    DataPaths,
    EvaluationConfig,
)
from t0_pipeline.domain import article, plural
from t0_pipeline.task.figures import fmt, labels

log = logging.getLogger(__name__)


def model_table(summary: dict[str, Any]) -> str:
    """One model's Tables 2-3 rows, confusion matrices and error shares, as Markdown."""
    topic, answer = labels(summary)
    lines = [
        f"# {summary['model']} ({summary['model_id']}, {summary['backend']})",
        "",
        f"{summary['queries']} queries (hash {summary['queries_hash']}), {summary['runs']} run(s), "
        f"seeds {summary['seeds']}, prompt {summary['prompt_hash']}"
        + (f", weights {summary['weights']}" if summary.get("weights") else "")
        + f", scoring {summary.get('scoring', 'tolerant')}",
        "",
        f"| k | {topic} | {answer} | gold retrieved | under-estimates | over-estimates |",
        "|---|---|---|---|---|---|",
    ]
    for k, s in summary["by_k"].items():
        retrieved = f"{s['gold_retrieved_rate']:.2f}" if "gold_retrieved_rate" in s else "—"
        lines.append(
            f"| {k} | {fmt(s.get('condition_accuracy'))} | {fmt(s.get('disposition_accuracy'))} | "
            f"{retrieved} | {s.get('under_estimate_share', 0):.0%} | "
            f"{s.get('over_estimate_share', 0):.0%} |"
        )
    for k, s in summary["by_k"].items():
        if not s.get("by_query_type"):
            continue
        lines += [
            "",
            f"## By query type, k={k}",
            "",
            f"| query type | {topic} | {answer} |",
            "|---|---|---|",
        ]
        lines += [
            f"| {t} | {fmt(v['condition'])} | {fmt(v['disposition'])} |"
            for t, v in s["by_query_type"].items()
        ]
        lines += [
            "",
            f"## Severity confusion, k={k} (rows: gold, columns: predicted; all runs)",
            "",
            "| gold \\ predicted | " + " | ".join(_predicted_columns(s)) + " |",
            "|---" * (1 + len(_predicted_columns(s))) + "|",
        ]
        lines += [
            f"| {gold} | " + " | ".join(str(n) for n in row.values()) + " |"
            for gold, row in s["confusion"].items()
        ]
    lines += ["", "Notes: " + ("; ".join(summary["notes"]) or "none")]
    return "\n".join(lines) + "\n"


# --- the stage ----------------------------------------------------------------------------


def read_summaries(paths: DataPaths, config: EvaluationConfig) -> dict[str, dict[str, Any]]:
    out = {}
    for name in config.models:
        f = paths.accuracy_dir(name) / "summary.json"
        if f.exists():
            out[name] = json.loads(f.read_text(encoding="utf-8"))
    return out


def _size_key(size: str | None) -> float:
    try:
        return float((size or "").rstrip("Bb"))
    except ValueError:
        return float("inf")


@dataclass
class CombinedReport:
    table: pl.DataFrame
    markdown: str
    csv: Path
    png: Path | None
    models: list[str]
    missing: list[str]
    below_base: list[dict[str, Any]]
    # one sentence per student (learned_lines)
    learned: list[str] = dataclass_field(default_factory=list)


def parsable_share(stats: dict[str, Any]) -> float | None:
    """Share of a k's replies that parsed to a condition and a severity (right or wrong); None when
    not run."""
    counts = stats.get("status_counts") or {}
    total = sum(counts.values())
    if not total:
        return None
    unusable = ("empty", "unparsable", "failed")
    parsed = sum(n for status, n in counts.items() if status not in unusable)
    return parsed / total


def fmt_share(share: float | None) -> str:
    return "—" if share is None else f"{share:.0%}"


SCORING_WORDS = {
    "reference": 'reference (as the report: the first "(…, …)" answer pair, the categories '
    "written exactly, exactly one submit call)",
    "tolerant": "tolerant (the last pair, other spellings of the categories, the text when the "
    "tool was not called; not comparable with the report's tables)",
}


def scoring_line(summaries: dict[str, dict[str, Any]]) -> str:
    """Which reading of the answers the figures above used (summaries from before the setting
    existed were read tolerantly)."""
    used = sorted({s.get("scoring", "tolerant") for s in summaries.values()}) or ["reference"]
    if len(used) > 1:
        return "Scoring: mixed (" + ", ".join(used) + "): re-evaluate so the rows compare."
    return f"Scoring: {SCORING_WORDS[used[0]]}."


def combine(paths: DataPaths, config: EvaluationConfig) -> CombinedReport:
    """The cross-model table (report's Table 2/4 layout), query-type table and Figure 5 style
    plot."""
    summaries = read_summaries(paths, config)
    missing = [m for m in config.models if m not in summaries]
    ks = sorted({int(k) for s in summaries.values() for k in s["by_k"]}) or list(config.ks)
    rows = [_table_row(name, s, ks) for name, s in summaries.items()]
    table = pl.DataFrame(rows) if rows else pl.DataFrame({"model": []}, schema={"model": pl.String})
    names = labels(next(iter(summaries.values()), {}))
    lines = _accuracy_lines(rows, ks, names)
    if any(s["by_k"].get(str(k), {}).get("by_query_type") for s in summaries.values() for k in ks):
        lines += _query_type_lines(summaries, max(ks), names)
    lines += _format_lines(summaries, ks, names)
    below = students_below_base(summaries)
    if below:
        lines += [
            "",
            "Students below their base model: "
            + "; ".join(
                f"{b['student']} < {b['base']} at k={b['k']} ({b['student_accuracy']:.2f} vs "
                f"{b['base_accuracy']:.2f})"
                for b in below
            ),
        ]
    if missing:
        lines += ["", f"Not evaluated yet: {', '.join(missing)}."]
    learned = learned_lines(summaries)
    lines += ["", *learned] if learned else []
    lines += ["", scoring_line(summaries)]
    markdown = "\n".join(lines) + "\n"
    out = paths.accuracy_dir()
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "report.csv"
    with atomic_path(csv) as tmp:
        table.write_csv(tmp)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    png = plot_by_size(summaries, ks, out / "accuracy_by_size.png") if summaries else None
    return CombinedReport(table, markdown, csv, png, list(summaries), missing, below, learned)


def learned_lines(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """What each fine-tuned student learned, in one sentence: its share of answers in the format and
    its condition accuracy against its base's, on the same queries at the largest k both ran."""
    lines = []
    for name, s in summaries.items():
        base = summaries.get(s.get("base") or "")
        if s["kind"] != "fine-tuned" or base is None or base["queries_hash"] != s["queries_hash"]:
            continue
        ks = [k for k in s["by_k"] if k in base["by_k"] and int(k) > 0]
        if not ks:
            continue
        k = max(ks, key=int)
        ours, theirs = s["by_k"][k], base["by_k"][k]
        acc = [(x.get("condition_accuracy") or [0.0])[0] for x in (theirs, ours)]
        lines.append(
            f"{name} against its base {s['base']} (k={k}): answers in the format "
            f"{fmt_share(parsable_share(theirs))} → {fmt_share(parsable_share(ours))}, "
            f"{labels(s)[0]} accuracy {acc[0]:.2f} → {acc[1]:.2f} ({acc[1] - acc[0]:+.2f})."
        )
    return lines


def _table_row(name: str, s: dict[str, Any], ks: list[int]) -> dict[str, Any]:
    """One model's row of ``report.csv``: accuracy mean and std per k, severity error shares."""
    row: dict[str, Any] = {
        "model": name,
        "kind": s["kind"],
        "size": s["size"] or "",
        "runs": s["runs"],
        "queries": s["queries"],
    }
    for k in ks:
        stats = s["by_k"].get(str(k), {})
        for field in ("condition", "disposition"):
            value = stats.get(f"{field}_accuracy")
            mean_std = (value[0], value[1]) if value else (None, None)
            row[f"{field}_k{k}"], row[f"{field}_k{k}_std"] = mean_std
        row[f"under_share_k{k}"] = stats.get("under_estimate_share")
        row[f"over_share_k{k}"] = stats.get("over_estimate_share")
    row["notes"] = "; ".join(s["notes"])
    return row


def _predicted_columns(stats: dict[str, Any]) -> list[str]:
    """The confusion matrix's columns: the domain's categories, then "none"."""
    return list(next(iter(stats["confusion"].values()), {"none": 0}))


def _accuracy_lines(
    rows: list[dict[str, Any]], ks: list[int], names: tuple[str, str] = ("condition", "disposition")
) -> list[str]:
    topic, answer = names
    head = (
        "| model | kind | size | "
        + " | ".join(f"{topic} k={k} | {answer} k={k}" for k in ks)
        + " | notes |"
    )
    lines = [
        f"# {topic.capitalize()} and {answer} accuracy (mean ± std over runs)",
        "",
        head,
        "|---" * (4 + 2 * len(ks)) + "|",
    ]
    for r in rows:
        cells = [
            fmt((r[f"{f}_k{k}"], r[f"{f}_k{k}_std"]) if r[f"{f}_k{k}"] is not None else None)
            for k in ks
            for f in ("condition", "disposition")
        ]
        lines.append(
            f"| {r['model']} | {r['kind']} | {r['size'] or '—'} | "
            + " | ".join(cells)
            + f" | {r['notes'] or ''} |"
        )
    return lines


def _query_type_lines(
    summaries: dict[str, dict[str, Any]], qk: int, names: tuple[str, str]
) -> list[str]:
    """Accuracy by query type and the severity error shares, at k = ``qk``."""
    types = sorted(
        {t for s in summaries.values() for t in s["by_k"].get(str(qk), {}).get("by_query_type", {})}
    )
    lines = [
        "",
        f"## By query type (k={qk}; {names[0]} / {names[1]})",
        "",
        "| model | " + " | ".join(types) + " |",
        "|---" * (1 + len(types)) + "|",
    ]
    for name, s in summaries.items():
        by = s["by_k"].get(str(qk), {}).get("by_query_type", {})
        cells = [
            f"{by[t]['condition'][0]:.2f} / {by[t]['disposition'][0]:.2f}" if t in by else "—"
            for t in types
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## Severity errors (k={qk}): share of wrong {plural(names[1])} that under- / "
        "over-estimate urgency",
        "",
        "| model | under | over |",
        "|---|---|---|",
    ]
    lines += [
        f"| {n} | {s['by_k'][str(qk)]['under_estimate_share']:.0%} | "
        f"{s['by_k'][str(qk)]['over_estimate_share']:.0%} |"
        for n, s in summaries.items()
        if "under_estimate_share" in s["by_k"].get(str(qk), {})
    ]
    return lines


def _format_lines(
    summaries: dict[str, dict[str, Any]], ks: list[int], names: tuple[str, str]
) -> list[str]:
    lines = [
        "",
        f"## Answers in the format: share of replies that parse to {article(names[0])} and "
        f"{article(names[1])}",
        "",
        "| model | " + " | ".join(f"k={k}" for k in ks) + " |",
        "|---" * (1 + len(ks)) + "|",
    ]
    for name, s in summaries.items():
        shares = [fmt_share(parsable_share(s["by_k"].get(str(k), {}))) for k in ks]
        lines.append(f"| {name} | " + " | ".join(shares) + " |")
    return lines


def plot_by_size(summaries: dict[str, dict[str, Any]], ks: list[int], path: Path) -> Path:
    """Condition accuracy by model size: base alone (k=0), base + retrieval and fine-tuned (largest
    k); others as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kmax = max(ks)
    series = {
        "base alone (k=0)": ("base", 0),
        f"base + retrieval (k={kmax})": ("base", kmax),
        f"fine-tuned (k={kmax})": ("fine-tuned", kmax),
    }
    sizes = sorted({s["size"] for s in summaries.values() if s["size"]}, key=_size_key)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, (kind, k) in series.items():
        points = [
            (sizes.index(s["size"]), s["by_k"][str(k)]["condition_accuracy"])
            for s in summaries.values()
            if s["kind"] == kind
            and s["size"] in sizes
            and s["by_k"].get(str(k), {}).get("condition_accuracy")
        ]
        if points:
            points.sort()
            ax.errorbar(
                [p[0] for p in points],
                [p[1][0] for p in points],
                yerr=[p[1][1] for p in points],
                marker="o",
                capsize=3,
                label=label,
            )
    for name, s in summaries.items():
        acc = s["by_k"].get(str(kmax), {}).get("condition_accuracy")
        if s["kind"] in ("api", "baseline") and acc:
            ax.axhline(
                acc[0], linestyle="--" if s["kind"] == "api" else ":", linewidth=1, color="grey"
            )
            ax.annotate(
                f"{name} (k={kmax})",
                (0, acc[0]),
                textcoords="offset points",
                xytext=(2, 3),
                fontsize=8,
                color="dimgrey",
            )
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_xlabel("model size (parameters)")
    ax.set_ylabel("condition accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Condition accuracy by model size")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path
