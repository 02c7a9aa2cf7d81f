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
from pathlib import Path
from typing import Protocol

import polars as pl
from tqdm.auto import tqdm

from t0_pipeline.artifacts import T0Error, read_parquet, sha256_text, write_config_sidecar, write_json, write_parquet
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


class LLMSummariser:
    """The report's method: an LLM writes 3-4 sentences on symptoms and next steps (role ``summariser``)."""

    def __init__(self, client, prompts_dir=None, max_page_chars: int = 12000):
        from t0_pipeline.prompts import load_template

        self.client, self.max_page_chars = client, max_page_chars
        self.template, digest = load_template("summarise", prompts_dir)
        # the name carries model, prompt and cut, so changing any re-summarises instead of reusing
        self.name = f"llm:{client.settings.model}:{digest}:{max_page_chars}"
        self.failures: list[str] = []

    def summarise(self, title: str, text: str) -> str:
        return self.summarise_many([(title, text)])[0] or ""

    def summarise_many(self, docs: list[tuple[str, str]], progress=None) -> list[str | None]:
        from t0_pipeline.prompts import render

        async def one(doc: tuple[str, str]):
            prompt = render(self.template, "summarise", title=doc[0], text=doc[1][: self.max_page_chars])
            return await self.client.complete([{"role": "user", "content": prompt}])

        replies = self.client.run(docs, one, "summarise (llm)", progress)
        out: list[str | None] = []
        for (title, _), reply in zip(docs, replies):
            if reply.ok and reply.content.strip():
                out.append(reply.content.strip())
            else:
                self.failures.append(f"{title}: {reply.error or 'empty reply'}")
                out.append(None)
        return out


def get_summariser(config: SummaryConfig, llm=None, cache=None) -> Summariser:
    """The configured backend; ``llm`` (an LLMConfig) and ``cache`` are needed for backend='llm'."""
    if config.backend == "extractive":
        return ExtractiveSummariser(config)
    if llm is None or cache is None:
        raise T0Error("summary backend 'llm' needs the llm section of the config (roles.summariser); "
                      "or use backend='extractive'.")
    from t0_pipeline.llm import LLMClient

    return LLMSummariser(LLMClient("summariser", llm, cache), llm.prompts_dir, config.max_page_chars)


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


def summarise_documents(conditions: pl.DataFrame, summariser: Summariser, previous: pl.DataFrame | None = None,
                        progress=None) -> tuple[pl.DataFrame, list[str]]:
    """Summarise every document; unchanged documents reuse their previous summary.

    Returns (summaries, failures). A document whose summary failed is left out and named
    in ``failures`` (its page stays in ``conditions``); a re-run retries only those.
    """
    reuse: dict[str, dict] = {}
    if previous is not None and not previous.is_empty():
        reuse = {r["source_hash"]: r for r in previous.iter_rows(named=True) if r["summariser"] == summariser.name}
    rows, todo = [], []
    for doc in conditions.iter_rows(named=True):
        old = reuse.get(doc["content_hash"])
        if old is not None and old["slug"] == doc["slug"]:
            rows.append({**old, "title": doc["title"], "url": doc["url"]})
        else:
            todo.append(doc)
    if hasattr(summariser, "summarise_many"):
        texts = summariser.summarise_many([(d["title"], d["text"]) for d in todo], progress)
    else:
        texts = [summariser.summarise(d["title"], d["text"]) or d["text"][:500]
                 for d in tqdm(todo, desc="summarise", leave=False)]
    failures = []
    for doc, summary in zip(todo, texts):
        if summary is None:
            failures.append(doc["slug"])
            continue
        rows.append({
            "slug": doc["slug"], "title": doc["title"], "url": doc["url"], "text": summary,
            "content_hash": sha256_text(summary), "source_hash": doc["content_hash"],
            "summariser": summariser.name, "chars_in": len(doc["text"]), "chars_out": len(summary),
            "compression": 1.0 - len(summary) / max(1, len(doc["text"])),
        })
    order = {slug: i for i, slug in enumerate(conditions["slug"])}
    rows.sort(key=lambda r: order[r["slug"]])
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA), failures


def run_summarise(paths: DataPaths, config: SummaryConfig, llm=None, out: Path | None = None,
                  progress=None) -> tuple[pl.DataFrame, dict]:
    """Summaries of the conditions dataset → ``out`` (default summaries.parquet); returns (summaries, run info)."""
    out = out or paths.summaries
    conditions = read_parquet(paths.conditions, "conditions dataset", "t0 clean")
    previous = pl.read_parquet(out) if out.exists() else None
    cache = None
    if config.backend == "llm":
        from t0_pipeline.llm import LLMCache

        cache = LLMCache(paths.llm_cache(llm)) if llm is not None else None
    summariser = get_summariser(config, llm, cache)
    summaries, failures = summarise_documents(conditions, summariser, previous, progress)
    info: dict = {"backend": summariser.name, "failures": failures}
    client = getattr(summariser, "client", None)
    if client is not None:
        from t0_pipeline.llm import require_some_success

        info["usage"] = client.usage.as_dict()
        require_some_success(client.usage, "summariser", client.settings)
    if summaries.is_empty():
        raise T0Error("no summaries were produced; the previous summaries are kept.")
    write_parquet(summaries, out)
    write_config_sidecar(out, config, *([llm] if llm is not None else []))
    if failures:
        write_json(failures, out.with_name(out.stem + ".failed.json"))
    elif out.with_name(out.stem + ".failed.json").exists():
        out.with_name(out.stem + ".failed.json").unlink()
    return summaries, info
