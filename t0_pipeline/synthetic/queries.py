"""Synthetic patient queries: conditions → an evaluation set and a training set.

Input: ``conditions.parquet`` (or summaries) and the ``query_writer`` role. Output:
``<data>/synthetic/queries_eval.parquet``, ``queries_train.parquet`` and
``queries_report.json`` (requested / produced, refusals, failures, overlaps removed, top-up).

Each draw is a cell (query type × disposition × sex), balanced by cycling through every
cell in a seeded order, plus a condition picked with a seeded RNG. The writer returns
demographics and a first-person description as JSON, or a refusal when the page cannot
support that disposition: refusals are recorded and a new condition is drawn for the
same cell. The training set is drawn the same way; rows whose (condition, disposition)
pair is in the evaluation set are removed and the set is topped up with draws that avoid
those pairs. Every prompt is deterministic in the seed, so a re-run is all cache hits.

Run it: ``t0 synth-queries --data-dir DIR`` (needs the query_writer endpoint).
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Optional

import polars as pl
from pydantic import BaseModel, create_model, model_validator

from t0_pipeline.artifacts import (
    T0Error,
    read_parquet,
    write_config_sidecar,
    write_json,
    write_parquet,
)
from t0_pipeline.checks import disjoint_problems
from t0_pipeline.config import DataPaths, LLMConfig, QueryGenConfig
from t0_pipeline.domain import Domain, default_domain
from t0_pipeline.llm.cache import LLMCache
from t0_pipeline.llm.calls import require_some_success
from t0_pipeline.llm.client import LLMClient
from t0_pipeline.prompts import domain_of, load_template, render
from t0_pipeline.synthetic.query_prompt import (
    examples_block,
    load_examples,
    pick_examples,
    response_schema,
)
from t0_pipeline.task.demographics import WrittenDemographics, written_profile_model

log = logging.getLogger(__name__)


class WrittenQuery(BaseModel):
    refused: bool = False
    reason: str | None = None
    demographics: WrittenDemographics | None = None
    symptoms_description: str | None = None

    @model_validator(mode="after")
    def _complete_unless_refused(self) -> "WrittenQuery":
        if not self.refused and (
            self.demographics is None or not (self.symptoms_description or "").strip()
        ):
            raise ValueError(
                "a query that is not refused needs demographics and symptoms_description"
            )
        return self


def written_query_model(domain: Domain) -> type[WrittenQuery]:
    """:class:`WrittenQuery` with ``domain``'s profile as its demographics."""
    profile = written_profile_model(domain)
    if profile is WrittenDemographics:
        return WrittenQuery
    return create_model(
        "WrittenDomainQuery", __base__=WrittenQuery, demographics=(Optional[profile], None)
    )


def query_schema(domain: Domain | None = None) -> dict[str, Any]:
    """The query sets' columns: the draw, the sex drawn, the domain's profile fields (whole
    numbers where a field has a range), the message and how it was made."""
    domain = domain or default_domain()
    profile = {
        f.name: pl.Int32 if f.integer else pl.String for f in domain.profile if f.name != "sex"
    }
    return {
        "id": pl.String,
        "split": pl.String,
        "slug": pl.String,
        "title": pl.String,
        "disposition": pl.String,
        "query_type": pl.String,
        "sex": pl.String,
        **profile,
        "query": pl.String,
        "draws": pl.Int32,
        "refused_slugs": pl.List(pl.String),
        "model": pl.String,
        "prompt_hash": pl.String,
    }


QUERY_SCHEMA = query_schema()  # the NHS domain's


@dataclass
class Cell:
    index: int
    query_type: str
    disposition: str
    sex: str


@dataclass
class SplitReport:
    requested: int
    produced: int = 0
    refusals: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)  # cell, slug, error
    gave_up: int = 0  # cells that refused max_redraws + 1 times
    removed_overlaps: int = 0
    repeated_texts: int = 0  # a query text already written (in either set): left out
    top_up_draws: int = 0  # at most queries.max_top_up_draws (default: n_train)


def balanced_cells(
    n: int, config: QueryGenConfig, rng: random.Random, start: int = 0
) -> list[Cell]:
    """n cells cycling through every (type, disposition, sex) combination, shuffled per cycle."""
    combos = list(itertools.product(config.query_types, config.dispositions, config.sexes))
    cells: list[Cell] = []
    while len(cells) < n:
        cycle = combos[:]
        rng.shuffle(cycle)
        first = start + len(cells)  # read once: the list grows while extend consumes the generator
        cells.extend(Cell(first + i, *c) for i, c in enumerate(cycle[: n - len(cells)]))
    return cells


class QueryWriter:
    def __init__(
        self, client: LLMClient, config: QueryGenConfig, pages: pl.DataFrame, prompts_dir=None
    ):
        self.client = client
        self.config = config
        self.pages = {r["slug"]: r for r in pages.iter_rows(named=True)}
        self.slugs = sorted(self.pages)
        self.template, self.prompt_hash = load_template("query_writer", prompts_dir)
        self.prompts_dir = prompts_dir
        self.domain = domain_of(prompts_dir)
        self.written = written_query_model(self.domain)
        self.examples = load_examples(config.examples_file) if config.examples else []

    def prompt(self, slug: str, cell: Cell, rng: random.Random | None = None) -> str:
        """The writer's prompt for ``slug`` in ``cell``; examples (``queries.examples``) after the
        page, picked with ``rng``."""
        page = self.pages[slug]
        picked = pick_examples(
            self.examples,
            self.config.examples,
            cell.disposition,
            cell.query_type,
            rng or random.Random(f"{self.config.seed}:{slug}:{cell.index}"),
        )
        examples = examples_block(picked, self.prompts_dir)
        return render(
            self.template,
            "query_writer",
            condition=page["title"],
            disposition=cell.disposition,
            sex=cell.sex,
            query_type=cell.query_type,
            query_type_instructions=self.domain.personas.get(cell.query_type, cell.query_type),
            page=page["text"][: self.config.max_page_chars],
        ) + (f"\n\n{examples}" if examples else "")

    async def draw(
        self, split: str, cell: Cell, banned: set[tuple[str, str]], report: SplitReport
    ) -> dict | None:
        """One query for ``cell``: redraw the condition after a refusal, up to max_redraws times."""
        refused: list[str] = []
        for attempt in range(self.config.max_redraws + 1):
            rng = random.Random(f"{self.config.seed}:{split}:{cell.index}:{attempt}")
            allowed = [
                s for s in self.slugs if (s, cell.disposition) not in banned and s not in refused
            ]
            if not allowed:
                break
            slug = rng.choice(allowed)
            # the draw's own sampling seed: cells that share a prompt still get (and cache) their
            # own message
            written, reply = await self.client.complete_json(
                [{"role": "user", "content": self.prompt(slug, cell, rng)}],
                self.written,
                seed=rng.randrange(2**31),
                response_schema=response_schema(self.config.allow_refusal, cell.sex, self.domain),
            )
            if written is None:
                report.failures.append({"cell": cell.index, "slug": slug, "error": reply.error})
                return None
            if written.refused:
                report.refusals += 1
                refused.append(slug)
                continue
            demo = written.demographics
            assert demo is not None
            return {
                "id": f"{split}-{cell.index:05d}",
                "split": split,
                "slug": slug,
                "title": self.pages[slug]["title"],
                "disposition": cell.disposition,
                "query_type": cell.query_type,
                "sex": cell.sex,
                **{k: v for k, v in demo.model_dump().items() if k != "sex"},
                "query": (written.symptoms_description or "").strip(),
                "draws": attempt + 1,
                "refused_slugs": refused,
                "model": self.client.settings.model,
                "prompt_hash": self.prompt_hash,
            }
        report.gave_up += 1
        return None

    def draw_many(
        self,
        split: str,
        cells: list[Cell],
        banned: set[tuple[str, str]],
        report: SplitReport,
        progress=None,
    ) -> list[dict]:
        async def one(cell: Cell):
            return await self.draw(split, cell, banned, report)

        rows = self.client.run(cells, one, f"queries ({split})", progress)
        return [r for r in rows if r is not None]


def text_key(text: str) -> str:
    """A query text with case and spacing set aside: two texts with the same key are the same
    query."""
    return " ".join(text.lower().split())


def drop_repeated_texts(rows: list[dict], seen: set[str]) -> tuple[list[dict], int]:
    """Rows whose query text (by :func:`text_key`) is not in ``seen``, which learns the kept
    ones."""
    kept = []
    for row in rows:
        key = text_key(row["query"])
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def cell_counts(df: pl.DataFrame) -> dict[str, int]:
    """Queries per "type / disposition / sex" cell, every configured cell that occurs."""
    return {
        f"{t} / {d} / {s}": n
        for t, d, s, n in df.group_by("query_type", "disposition", "sex")
        .len()
        .sort("query_type", "disposition", "sex")
        .iter_rows()
    }


def remove_overlaps(train: list[dict], eval_pairs: set[tuple[str, str]]) -> tuple[list[dict], int]:
    kept = [r for r in train if (r["slug"], r["disposition"]) not in eval_pairs]
    return kept, len(train) - len(kept)


def generate_queries(
    pages: pl.DataFrame, client: LLMClient, config: QueryGenConfig, prompts_dir=None, progress=None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    # both sets and top-ups: one count
    with client.stage("synthetic queries", config.n_eval + config.n_train):
        return _generate(pages, client, config, prompts_dir, progress)


def draws_of(config: QueryGenConfig, domain: Domain) -> QueryGenConfig:
    """``config`` with its unset styles and categories the domain's."""
    return config.model_copy(
        update={
            "query_types": config.query_types or list(domain.personas),
            "dispositions": config.dispositions or list(domain.category_names),
        }
    )


def _generate(
    pages: pl.DataFrame, client: LLMClient, config: QueryGenConfig, prompts_dir=None, progress=None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    config = draws_of(config, domain_of(prompts_dir))
    writer = QueryWriter(client, config, pages, prompts_dir)
    rng = random.Random(config.seed)
    ev = SplitReport(config.n_eval)
    eval_rows = writer.draw_many(
        "eval", balanced_cells(config.n_eval, config, rng), set(), ev, progress
    )
    texts: set[str] = set()
    eval_rows, ev.repeated_texts = drop_repeated_texts(eval_rows, texts)
    ev.produced = len(eval_rows)
    eval_pairs = {(r["slug"], r["disposition"]) for r in eval_rows}

    tr = SplitReport(config.n_train)
    train_cells = balanced_cells(config.n_train, config, rng, start=0)
    train_rows = writer.draw_many("train", train_cells, set(), tr, progress)
    train_rows, tr.removed_overlaps = remove_overlaps(train_rows, eval_pairs)
    train_rows, tr.repeated_texts = drop_repeated_texts(train_rows, texts)
    next_index = config.n_train
    allowance = config.n_train if config.max_top_up_draws is None else config.max_top_up_draws
    for _ in range(config.max_top_up_rounds):
        missing = min(config.n_train - len(train_rows), allowance - tr.top_up_draws)
        if missing <= 0:
            break
        extra = balanced_cells(missing, config, rng, start=next_index)
        next_index += missing
        tr.top_up_draws += missing
        client.grow_stage(missing)
        more, repeated = drop_repeated_texts(
            writer.draw_many("train", extra, eval_pairs, tr, progress), texts
        )
        train_rows += more
        tr.repeated_texts += repeated
    tr.produced = len(train_rows)
    schema = query_schema(writer.domain)
    eval_df, train_df = (
        pl.DataFrame(eval_rows, schema=schema),
        pl.DataFrame(train_rows, schema=schema),
    )
    report = {
        "eval": {**ev.__dict__, "cells": cell_counts(eval_df)},
        "train": {**tr.__dict__, "cells": cell_counts(train_df)},
        "usage": client.usage.as_dict(),
        "model": client.settings.model,
        "prompt_hash": writer.prompt_hash,
        "seed": config.seed,
    }
    return eval_df, train_df, report


def run_generate_queries(
    paths: DataPaths,
    config: QueryGenConfig,
    llm: LLMConfig,
    overrides: dict | None = None,
    progress=None,
    prompts=None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    pages = read_parquet(
        paths.documents(config.source if config.source == "summaries" else "full"),
        f"{config.source} dataset",
        "t0 index",
    )
    if pages.is_empty():
        raise T0Error("no condition pages to write queries from; build the corpus first.")
    client = LLMClient("query_writer", llm, LLMCache(paths.llm_cache(llm)), overrides)
    eval_df, train_df, report = generate_queries(
        pages, client, config, prompts or llm.prompts_dir, progress
    )
    require_some_success(client.usage, "query_writer", client.settings)
    if eval_df.is_empty():
        first = (report["eval"]["failures"] or [{"error": "every draw was refused"}])[0]["error"]
        raise T0Error(
            f"no evaluation queries were produced ({len(report['eval']['failures'])} failed draws, "
            f"first: {first}); check the query_writer model and prompt. Nothing was written; "
            "successful calls are cached."
        )
    problems = disjoint_problems(eval_df, train_df)
    if problems:  # cannot happen by construction; refuse to write a leaky split if it ever does
        raise T0Error(
            f"evaluation and training queries share pairs: {problems[:3]}; nothing was written."
        )
    write_parquet(eval_df, paths.synthetic_queries("eval"))
    write_parquet(train_df, paths.synthetic_queries("train"))
    write_json(report, paths.synthetic_queries("report").with_suffix(".json"))
    write_config_sidecar(paths.synthetic_queries("train"), config, llm)
    for split, df in (("eval", eval_df), ("train", train_df)):
        cells = report[split]["cells"]
        log.info(
            "%s queries: %d (requested %d), in %d type / disposition / sex cells (%s)",
            split,
            df.height,
            report[split]["requested"],
            len(cells),
            ", ".join(f"{k}: {n}" for k, n in cells.items()),
        )
    return eval_df, train_df, report
