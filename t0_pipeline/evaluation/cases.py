"""The accuracy evaluation's inputs: the query set (any .jsonl/.json/.parquet with ``query``,
``slug`` or ``condition``, ``disposition``; records without them skipped and counted), its hash (so
that only results on the same queries are compared), and the triage prompt of every query at one
k (every condition listed at k = 0, the k retrieved documents otherwise)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from t0_pipeline.artifacts import T0Error, read_records
from t0_pipeline.config import DataPaths, EvaluationConfig, LLMConfig
from t0_pipeline.domain import Domain, default_domain
from t0_pipeline.evaluation.predictors import Case
from t0_pipeline.prompts import PromptSet
from t0_pipeline.task import prompt as triage_prompt
from t0_pipeline.task.demographics import demographics_text
from t0_pipeline.task.scoring import Scale, normalise_severity

if TYPE_CHECKING:
    from t0_pipeline.config import PipelineConfig


@dataclass
class EvaluationInputs:
    """What an evaluation needs, resolved once where it starts (``t0 evaluate`` or the
    ``accuracy_report`` asset) and handed down: the evaluation section, the model settings, the
    prompts with their domain, and how to get the retriever (asked only when some k > 0)."""

    config: EvaluationConfig
    llm: LLMConfig
    prompts: PromptSet
    retriever: Callable[[], Any]

    @property
    def domain(self) -> Domain:
        return self.prompts.domain

    @classmethod
    def resolve(
        cls, cfg: "PipelineConfig", paths: DataPaths, retriever: Any = None
    ) -> "EvaluationInputs":
        """The one place an evaluation reads the pipeline config (``retriever``: one already
        open, else the evaluation's index is opened when first needed)."""

        def get_retriever():
            if retriever is not None:
                return retriever
            from t0_pipeline.retrieval.retrieve import Retriever

            return Retriever(cfg.evaluation.index, paths, cfg.embedding, cfg.chroma, cfg.retrieval)

        return cls(cfg.evaluation, cfg.llm, cfg.prompts, get_retriever)


def load_eval_queries(path: Path, domain: Domain | None = None) -> tuple[list[dict[str, Any]], int]:
    """(queries, records skipped) from a query file; a record without text, condition or a valid
    disposition (one of ``domain``'s categories; default the NHS levels of care) is skipped."""
    domain = domain or default_domain()
    scale = Scale.of(domain)
    queries, skipped, first = [], 0, ""
    records = read_records(path)
    for i, rec in enumerate(records, start=1):
        slug = rec.get("slug") or rec.get("condition")
        slug = slug[0] if isinstance(slug, list) and slug else slug
        severity = normalise_severity(rec.get("disposition"), scale=scale)
        text = rec.get("query")
        if not (isinstance(text, str) and text.strip() and isinstance(slug, str) and severity):
            skipped += 1
            first = first or _why_skipped(i, text, slug, rec.get("disposition"), scale)
            continue
        queries.append(
            {
                "id": str(rec.get("id") or f"q{i:05d}"),
                "query": text.strip(),
                "slug": slug,
                "disposition": severity,
                "query_type": rec.get("query_type") or "unspecified",
                "demographics": demographics_text(rec, domain.field_names),
            }
        )
    if not queries:
        raise T0Error(
            f"{path} holds no usable evaluation query"
            + (f" ({len(records)} records; {first})" if records else " (it is empty)")
            + "; each needs query text, a slug or condition, and a disposition."
        )
    return queries, skipped


def _why_skipped(i: int, text: Any, slug: Any, disposition: Any, scale: Scale) -> str:
    if not (isinstance(text, str) and text.strip()):
        return f"record {i} has no query text"
    if not isinstance(slug, str):
        return f"record {i} has no slug or condition"
    return f"record {i}'s disposition {disposition!r} is not one of {', '.join(scale.names)}"


def queries_hash(queries: list[dict[str, Any]]) -> str:
    payload = json.dumps(
        [[q["id"], q["query"], q["slug"], q["disposition"]] for q in queries], ensure_ascii=False
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def build_cases(
    queries: list[dict[str, Any]],
    k: int,
    titles: dict[str, str],
    ranked: list[list[tuple[str, float]]] | None,
    docs: dict[str, dict] | None,
    sections: dict[str, str],
    answer_format: str,
) -> list[Case]:
    """The prompt for every query at one k (``ranked``/``docs`` from the retriever when k > 0)."""
    cases = []
    every_condition = (
        triage_prompt.with_condition_list(sections, list(titles.values())) if k == 0 else ""
    )
    for i, q in enumerate(queries):
        if k == 0:
            retrieved, allowed, context = None, titles, every_condition
        else:
            hits = ranked[i]  # type: ignore[index]
            retrieved = [slug for slug, _ in hits]
            allowed = {slug: titles.get(slug, docs[slug]["title"]) for slug in retrieved}
            context = triage_prompt.with_documents(
                sections,
                [allowed[s] for s in retrieved],
                [float(x) for _, x in hits],
                [docs[s]["text"] for s in retrieved],  # type: ignore[index]
            )
        cases.append(
            Case(
                q,
                k,
                retrieved,
                allowed,
                triage_prompt.messages(
                    sections, context, q["demographics"], q["query"], answer_format
                ),
            )
        )
    return cases


def eval_queries_path(paths: DataPaths, config: EvaluationConfig) -> Path:
    return Path(config.queries) if config.queries is not None else paths.synthetic_queries("eval")


def load_queries_for(
    paths: DataPaths, config: EvaluationConfig, domain: Domain | None = None
) -> tuple[list[dict[str, Any]], int]:
    source = eval_queries_path(paths, config)
    if not source.exists():
        raise T0Error(
            f"no evaluation queries at {source}; run `t0 synth-queries` (or materialise "
            "synthetic_queries), or set evaluation.queries / --queries to a .jsonl with query, "
            "slug and disposition."
        )
    queries, skipped = load_eval_queries(source, domain)
    if config.max_queries is not None:
        queries = queries[: config.max_queries]
    return queries, skipped
