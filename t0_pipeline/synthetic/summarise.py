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

from t0_pipeline.artifacts import (
    T0Error,
    read_parquet,
    sha256_text,
    write_config_sidecar,
    write_json,
    write_parquet,
)
from t0_pipeline.config import DataPaths, SummaryConfig

ACTION = re.compile(
    r"\b(999|111|a&e|urgent(ly)?|emergency|immediately|ambulance|right away|straight away)\b", re.I
)
SEE_IF = re.compile(
    r"\b(gp|pharmacist|doctor|nurse|dentist|midwife|health "
    r"visitor)\b[^.]*\bif\b|\bif\b[^.]*\b(see|contact|call|ask) "
    r"(a|your) (gp|pharmacist|doctor)\b",
    re.I,
)
SYMPTOM = re.compile(
    r"\b(symptoms?|signs?|pain(ful)?|aches?|aching|itch(y|ing)?|rash|swollen|swelling|lumps?|"
    r"temperature|fever|sick|vomit\w*|cough\w*|breath\w*|blisters?|bleed\w*|blood|red|sore|"
    r"tired\w*|dizz\w*|numb\w*|weak\w*|tingl\w*|feel(s|ing)?|discharge|headaches?|confus\w*|"
    r"stiff\w*|diarrhoea|constipation|pee\w*|poo\w*|skin|tummy)\b",
    re.I,
)
SYMPTOM_CUE = re.compile(
    r"\b(symptoms?|signs?|check if|how to tell|you (may|might|could|can) (also "
    r")?(notice|have|feel|get|see)|"
    r"can (cause|include|make)|feel(s|ing)? like)\b",
    re.I,
)
OFF_TOPIC = re.compile(
    r"\b(treat(ed|ing|ment|ments)?|medicines?|prescri\w+|surgery|operations?|tablets?|creams?|"
    r"antibiotics?|injections?|therapy|vaccin\w+|screening|tests?|scans?|diagnos\w+|caused? "
    r"by|causes|"
    r"triggers?|risks?|prevent\w*|things you can do|tips|how to|recover\w*|complications?)\b",
    re.I,
)
EXTRACTIVE_VERSION = 3  # bump when the selection changes, so stored summaries are redone
MIN_SCORE = 2.0  # below this a unit is filler: a shorter summary retrieves better than a padded one
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


class Summariser(Protocol):
    name: str

    def summarise(self, title: str, text: str) -> str: ...


@dataclass
class Unit:
    text: str
    position: int
    lead: str  # the heading or "…:" line the unit belongs under, "" when none
    is_item: bool
    block: int  # passage number: a new one starts at each heading or blank line
    score: float = 0.0


def _units(text: str) -> list[Unit]:
    """Sentences and list items in page order, each with the heading or lead-in line above it.

    Lists come as ``- item`` lines (our cleaner) or as bare lines after a line ending in ":" (plain
    extracts).
    """
    units: list[Unit] = []
    heading, lead, block = "", "", 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            block, lead = block + 1, ""
            continue
        if line.startswith("#"):
            heading, lead, block = line.lstrip("#").strip(), "", block + 1
            continue
        bare_item = bool(lead) and line[-1] not in ".!?"
        if line.startswith("- ") or bare_item:
            units.append(Unit(line.lstrip("- ").strip(), len(units), lead or heading, True, block))
            continue
        if line.endswith(":"):
            lead = line.rstrip(":").strip()
            units.append(Unit(line, len(units), heading, False, block))
            continue
        lead = ""
        for sentence in SENTENCE_END.split(line):
            if sentence.strip():
                units.append(Unit(sentence.strip(), len(units), heading, False, block))
    return units


def _score(unit: Unit, first: bool, symptom_blocks: set[int]) -> float:
    """What a patient would describe (symptoms, in the page's words) and when to get help score;
    treatment, causes and tests do not."""
    if first:
        return 10.0  # the opening sentence usually says what the condition is, or its main symptom
    context = unit.lead if unit.is_item else ""
    score = 0.0
    if ACTION.search(unit.text) or ACTION.search(unit.lead) or SEE_IF.search(unit.text):
        score += 3.0
    if (
        (unit.block in symptom_blocks and unit.is_item)
        or SYMPTOM_CUE.search(unit.lead)
        or SYMPTOM_CUE.search(unit.text)
    ):
        score += 3.0
    # a sentence beside a symptom list: kept when it names a symptom itself
    elif unit.block in symptom_blocks:
        score += 1.5
    score += min(2, len(SYMPTOM.findall(unit.text))) * 0.75
    if OFF_TOPIC.search(context or unit.lead):
        score -= 3.0
    elif OFF_TOPIC.search(unit.text):
        score -= 1.5
    return score


def _render(units: list[Unit]) -> str:
    """Selected units in page order; consecutive list items under one lead-in become one
    sentence."""
    parts: list[str] = []
    i = 0
    while i < len(units):
        unit = units[i]
        if not unit.is_item:
            parts.append(unit.text if unit.text[-1] in ".!?" else unit.text + ".")
            i += 1
            continue
        group = [unit.text]
        while i + 1 < len(units) and units[i + 1].is_item and units[i + 1].lead == unit.lead:
            i += 1
            group.append(units[i].text)
        lead = unit.lead.rstrip(":").strip()
        parts.append((f"{lead}: " if lead else "") + "; ".join(g.rstrip(".;") for g in group) + ".")
        i += 1
    return " ".join(parts)


class ExtractiveSummariser:
    """Model-free summary: the most symptom- and action-bearing units within a word budget."""

    def __init__(self, config: SummaryConfig):
        self.config = config
        # the name carries the method's version and budget: changing either re-summarises instead of
        # reusing
        self.name = f"extractive:{EXTRACTIVE_VERSION}:{config.max_words}:{config.max_sentences}"

    def summarise(self, title: str, text: str) -> str:
        # a repeated title
        units = [u for u in _units(text) if u.text.strip().lower() != title.strip().lower()]
        if not units:
            return ""
        # lists in the opening passage say how the condition shows; so do lists in passages that
        # name symptoms
        symptom_blocks = {units[0].block} | {
            u.block for u in units if SYMPTOM_CUE.search(u.lead) or SYMPTOM_CUE.search(u.text)
        }
        opening = next((u.position for u in units if not u.text.endswith(":")), -1)
        for unit in units:
            unit.score = _score(unit, unit.position == opening, symptom_blocks)
        budget = self.config.max_words
        chosen: list[Unit] = []
        used = 0
        leads: set[str] = set()
        # best first, earlier first on ties; lead-in lines ("…include:") are printed with their
        # items, not alone
        for best in sorted(units, key=lambda u: (-u.score, u.position)):
            if best.score < MIN_SCORE or len(chosen) >= self.config.max_sentences * 4:
                break
            if best.text.endswith(":"):
                continue
            words = len(best.text.split()) + (
                len(best.lead.split()) if best.is_item and best.lead not in leads else 0
            )
            if used + words > budget:
                continue
            chosen.append(best)
            used += words
            if best.is_item:
                leads.add(best.lead)
        if not chosen:  # even the best unit is over budget: keep its first words
            return " ".join(units[0].text.split()[:budget])
        return _render(sorted(chosen, key=lambda u: u.position))


class LLMSummariser:
    """The report's method: an LLM writes 3-4 sentences on symptoms and next steps (role
    ``summariser``)."""

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
            prompt = render(
                self.template, "summarise", title=doc[0], text=doc[1][: self.max_page_chars]
            )
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


def get_summariser(config: SummaryConfig, llm=None, cache=None, prompts=None) -> Summariser:
    """The configured backend; ``llm`` (an LLMConfig) and ``cache`` are needed for backend='llm'."""
    if config.backend == "extractive":
        return ExtractiveSummariser(config)
    if llm is None or cache is None:
        raise T0Error(
            "summary backend 'llm' needs the llm section of the config (roles.summariser); "
            "or use backend='extractive'."
        )
    from t0_pipeline.llm.client import LLMClient

    return LLMSummariser(
        LLMClient("summariser", llm, cache), prompts or llm.prompts_dir, config.max_page_chars
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


def summarise_documents(
    conditions: pl.DataFrame,
    summariser: Summariser,
    previous: pl.DataFrame | None = None,
    progress=None,
) -> tuple[pl.DataFrame, list[str]]:
    """Summarise every document; unchanged documents reuse their previous summary.

    Returns (summaries, failures). A document whose summary failed is left out and named
    in ``failures`` (its page stays in ``conditions``); a re-run retries only those.
    """
    reuse: dict[str, dict] = {}
    if previous is not None and not previous.is_empty():
        reuse = {
            r["source_hash"]: r
            for r in previous.iter_rows(named=True)
            if r["summariser"] == summariser.name
        }
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
        texts = [
            summariser.summarise(d["title"], d["text"]) or d["text"][:500]
            for d in tqdm(todo, desc="summarise", leave=False)
        ]
    failures = []
    for doc, summary in zip(todo, texts):
        if summary is None:
            failures.append(doc["slug"])
            continue
        rows.append(
            {
                "slug": doc["slug"],
                "title": doc["title"],
                "url": doc["url"],
                "text": summary,
                "content_hash": sha256_text(summary),
                "source_hash": doc["content_hash"],
                "summariser": summariser.name,
                "chars_in": len(doc["text"]),
                "chars_out": len(summary),
                "compression": 1.0 - len(summary) / max(1, len(doc["text"])),
            }
        )
    order = {slug: i for i, slug in enumerate(conditions["slug"])}
    rows.sort(key=lambda r: order[r["slug"]])
    return pl.DataFrame(rows, schema=SUMMARY_SCHEMA), failures


def run_summarise(
    paths: DataPaths,
    config: SummaryConfig,
    llm=None,
    out: Path | None = None,
    progress=None,
    prompts=None,
) -> tuple[pl.DataFrame, dict]:
    """Summaries of the conditions dataset → ``out`` (default summaries.parquet); returns
    (summaries, run info)."""
    out = out or paths.summaries
    conditions = read_parquet(paths.conditions, "conditions dataset", "t0 clean")
    previous = pl.read_parquet(out) if out.exists() else None
    cache = None
    if config.backend == "llm":
        from t0_pipeline.llm.cache import LLMCache

        cache = LLMCache(paths.llm_cache(llm)) if llm is not None else None
    summariser = get_summariser(config, llm, cache, prompts)
    summaries, failures = summarise_documents(conditions, summariser, previous, progress)
    info: dict = {"backend": summariser.name, "failures": failures}
    client = getattr(summariser, "client", None)
    if client is not None:
        from t0_pipeline.llm.calls import require_some_success

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
