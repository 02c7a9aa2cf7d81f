"""Summarise: the ``conditions`` dataset → ``summaries`` (one short text per condition).

Input: ``<data>/corpus/conditions.parquet``. Output: ``<data>/corpus/summaries.parquet``
with slug, title, url, text (the summary), content_hash, source_hash (the page it came
from), summariser, chars_in, chars_out, compression.

Backends share the :class:`Summariser` interface. The offline default,
:class:`ExtractiveSummariser`, keeps the sentences and list items about symptoms and about
when and where to get help (pharmacist, GP, urgent GP, 111, A&E, 999) within a word
budget, in page order. The LLM backend (the report's method) plugs in with the LLM layer.

Run it: ``t0 summarise --data-dir DIR``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import polars as pl
from tqdm.auto import tqdm

from t0_pipeline.artifacts import T0Error, read_parquet, sha256_text, write_config_sidecar, write_parquet
from t0_pipeline.config import DataPaths, SummaryConfig

ACTION = re.compile(
    r"\b(999|111|a&e|gp|pharmacist|pharmacy|urgent|emergency|immediately|ambulance|hospital|call|"
    r"see a|get help|go to|doctor|nurse|dentist)\b",
    re.I,
)
SYMPTOM = re.compile(
    r"\b(symptoms?|signs?|pain(ful)?|ache|itch(y|ing)?|rash|swollen|swelling|temperature|fever|sick|"
    r"vomit\w*|cough\w*|breath\w*|blister\w*|bleed\w*|red|sore|tired|dizz\w*|numb\w*|weak\w*|"
    r"feel(ing)?|lump\w*|discharge|headache|confus\w*)\b",
    re.I,
)
SYMPTOM_HEADING = re.compile(r"\b(symptoms?|check if|signs?|how to tell)\b", re.I)
CARE_HEADING = re.compile(r"\b(advice|action required|see a|call|go to|ask for|get help)\b", re.I)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


class Summariser(Protocol):
    name: str

    def summarise(self, title: str, text: str) -> str: ...


@dataclass
class Unit:
    text: str
    position: int
    heading: str  # nearest heading above, "" at the top
    is_item: bool
    score: float = 0.0


def _units(text: str) -> list[Unit]:
    units: list[Unit] = []
    heading = ""
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
            continue
        if line.startswith("- "):
            units.append(Unit(line[2:].strip(), len(units), heading, True))
            continue
        for sentence in SENTENCE_END.split(line):
            if sentence.strip():
                units.append(Unit(sentence.strip(), len(units), heading, False))
    return units


def _score(unit: Unit, first: bool) -> float:
    score = 0.0
    care = bool(CARE_HEADING.search(unit.heading)) and unit.is_item
    if ACTION.search(unit.text) or care:
        score += 2.0 + (1.0 if care else 0.0)
    if SYMPTOM_HEADING.search(unit.heading):
        score += 1.5
    if SYMPTOM.search(unit.text):
        score += 1.0
    if first:
        score += 5.0  # the opening sentence usually says what the condition is
    return score


def _render(units: list[Unit]) -> str:
    """Selected units in page order; list items under one heading become one sentence."""
    parts: list[str] = []
    i = 0
    while i < len(units):
        unit = units[i]
        if not unit.is_item:
            parts.append(unit.text if unit.text[-1] in ".!?" else unit.text + ".")
            i += 1
            continue
        group = [unit.text]
        while i + 1 < len(units) and units[i + 1].is_item and units[i + 1].heading == unit.heading:
            i += 1
            group.append(units[i].text)
        lead = unit.heading.rstrip(":").strip()
        parts.append((f"{lead}: " if lead else "") + "; ".join(group) + ".")
        i += 1
    return " ".join(parts)


class ExtractiveSummariser:
    """Model-free summary: the most symptom- and action-bearing units within a word budget."""

    name = "extractive"

    def __init__(self, config: SummaryConfig):
        self.config = config

    def summarise(self, title: str, text: str) -> str:
        units = _units(text)
        if not units:
            return ""
        for unit in units:
            unit.score = _score(unit, unit.position == 0)
        budget = self.config.max_words
        chosen: list[Unit] = []
        used = 0
        per_heading: dict[str, int] = {}
        candidates = list(units)
        while candidates and len(chosen) < self.config.max_sentences * 3:
            # diminishing returns per heading, so symptoms and each level of care all get a say
            best = max(candidates, key=lambda u: (u.score * 0.6 ** per_heading.get(u.heading, 0), -u.position))
            candidates.remove(best)
            words = len(best.text.split()) + (len(best.heading.split()) if best.is_item else 0)
            if best.score <= 0 or used + words > budget:
                continue
            chosen.append(best)
            used += words
            per_heading[best.heading] = per_heading.get(best.heading, 0) + 1
        if not chosen:  # even the best unit is over budget: keep its first words
            words = units[0].text.split()[:budget]
            return " ".join(words)
        return _render(sorted(chosen, key=lambda u: u.position))


def get_summariser(config: SummaryConfig) -> Summariser:
    if config.backend == "extractive":
        return ExtractiveSummariser(config)
    raise T0Error(
        f"summary backend {config.backend!r} needs the LLM client, which is not part of this release yet; "
        "use backend='extractive' (the default)."
    )


SUMMARY_SCHEMA = {
    "slug": pl.String,
    "title": pl.String,
    "url": pl.String,
    "text": pl.String,
    "content_hash": pl.String,
    "source_hash": pl.String,
    "summariser": pl.String,
    "chars_in": pl.Int64,
    "chars_out": pl.Int64,
    "compression": pl.Float64,
}


def summarise_documents(conditions: pl.DataFrame, summariser: Summariser,
                        previous: pl.DataFrame | None = None) -> pl.DataFrame:
    """Summarise every document; unchanged documents reuse their previous summary."""
    reuse: dict[str, dict] = {}
    if previous is not None and not previous.is_empty():
        reuse = {r["source_hash"]: r for r in previous.iter_rows(named=True) if r["summariser"] == summariser.name}
    rows = []
    for doc in tqdm(conditions.iter_rows(named=True), total=conditions.height, desc="summarise", leave=False):
        old = reuse.get(doc["content_hash"])
        if old is not None and old["slug"] == doc["slug"]:
            rows.append({**old, "title": doc["title"], "url": doc["url"]})
            continue
        summary = summariser.summarise(doc["title"], doc["text"]) or doc["text"][:500]
        rows.append({
            "slug": doc["slug"], "title": doc["title"], "url": doc["url"], "text": summary,
            "content_hash": sha256_text(summary), "source_hash": doc["content_hash"],
            "summariser": summariser.name, "chars_in": len(doc["text"]), "chars_out": len(summary),
            "compression": 1.0 - len(summary) / max(1, len(doc["text"])),
        })
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA)


def run_summarise(paths: DataPaths, config: SummaryConfig) -> pl.DataFrame:
    conditions = read_parquet(paths.conditions, "conditions dataset", "t0 clean")
    previous = pl.read_parquet(paths.summaries) if paths.summaries.exists() else None
    summaries = summarise_documents(conditions, get_summariser(config), previous)
    write_parquet(summaries, paths.summaries)
    write_config_sidecar(paths.summaries, config)
    return summaries


if __name__ == "__main__":
    from t0_pipeline.cli import run_stage

    run_stage("summarise")
