"""Scored results as people read them: a figure over runs as mean ± std, and what the two
accuracies are called in the results' domain. Evaluation tables and model cards both write them."""

from __future__ import annotations

from typing import Any


def fmt(value: tuple[float, float] | list[float] | None) -> str:
    return "—" if not value else f"{value[0]:.2f} ± {value[1]:.2f}"


def labels(summary: dict[str, Any]) -> tuple[str, str]:
    """What the two accuracies are called in the summary's domain (the NHS domain's: condition,
    disposition); summaries from before domains carry none."""
    first, second = summary.get("labels") or ("condition", "disposition")
    return first, second
