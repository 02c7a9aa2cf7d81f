"""Teacher reasoning traces: training queries → retrieved summaries → the teacher's thinking +
answer.

Input: ``queries_train.parquet``, the summaries index, the ``teacher`` role. Output:
``<data>/synthetic/traces.parquet``: per query the retrieved slugs, titles and scores, the
teacher's thinking and answer, the parsed (condition, severity), whether the condition is
one of the retrieved titles (or "inconclusive"), whether it matches the gold labels,
tokens, and ``kept`` under the configured filtering policy.

Run it: ``t0 traces --data-dir DIR`` (needs the teacher endpoint).
"""

from __future__ import annotations

import logging
from typing import Any

import polars as pl

from t0_pipeline.artifacts import T0Error, read_parquet, write_config_sidecar, write_parquet
from t0_pipeline.config import DataPaths, LLMConfig, TraceConfig
from t0_pipeline.domain import Domain, default_domain
from t0_pipeline.llm.cache import LLMCache
from t0_pipeline.llm.calls import require_some_success
from t0_pipeline.llm.client import LLMClient
from t0_pipeline.prompts import domain_of
from t0_pipeline.task import prompt as triage_prompt
from t0_pipeline.task.demographics import demographics_text
from t0_pipeline.task.scoring import (
    Scale,
    last_answer_pair,
    normalise_severity,
    resolve_condition,
)
from t0_pipeline.task.teacher_schema import answer_schema, from_structured

log = logging.getLogger(__name__)


TRACE_SCHEMA = {
    "id": pl.String,
    "sample": pl.Int64,  # the teacher's sample for this query (traces.samples), from 0
    "query": pl.String,
    "demographics": pl.String,
    "gold_slug": pl.String,
    "gold_disposition": pl.String,
    "query_type": pl.String,
    "retrieved_slugs": pl.List(pl.String),
    "retrieved_titles": pl.List(pl.String),
    "retrieved_texts": pl.List(pl.String),
    "scores": pl.List(pl.Float64),
    "gold_retrieved": pl.Boolean,
    "thinking": pl.String,
    "answer": pl.String,
    "pred_condition": pl.String,
    "pred_slug": pl.String,
    "pred_severity": pl.String,
    "parsable": pl.Boolean,
    "condition_in_retrieved": pl.Boolean,
    "correct_condition": pl.Boolean,
    "correct_disposition": pl.Boolean,
    "kept": pl.Boolean,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "error": pl.String,
    "model": pl.String,
    "prompt_hash": pl.String,
}


def parse_answer(
    answer: str, allowed: dict[str, str], scale: Scale | None = None
) -> tuple[str | None, str | None, str | None]:
    """(condition text, slug or "inconclusive", severity) from the last "(condition, severity)" in
    the answer.

    ``allowed`` maps the retrieved slugs to their titles; the condition is resolved as evaluation
    and serving resolve it (:func:`t0_pipeline.task.scoring.resolve_condition`: title or slug,
    any case).
    A condition that is neither one of them nor "inconclusive" comes back with slug None. No valid
    severity: unparsable.
    """
    pair = last_answer_pair(answer or "")
    severity = normalise_severity(pair[1], scale=scale) if pair else None
    if pair is None or severity is None:
        return None, None, None
    return pair[0], resolve_condition(pair[0], allowed), severity


def keep(row: dict[str, Any], config: TraceConfig) -> bool:
    """Whether a trace trains the student. Never one that failed or has no thinking (a teacher
    whose thinking was lost would teach answering without it), whatever ``traces.keep`` says."""
    if row["error"] or not (row["thinking"] or "").strip():
        return False
    if config.keep == "all":
        return True
    if not (row["parsable"] and row["condition_in_retrieved"]):
        return False
    if config.keep == "parsable":
        return True
    return bool(
        row["correct_condition"]
        and (config.correct_on == "condition" or row["correct_disposition"])
    )


def collect_traces(
    queries: pl.DataFrame,
    retriever,
    client: LLMClient,
    config: TraceConfig,
    prompts_dir=None,
    progress=None,
) -> pl.DataFrame:
    # the very prompt the student learns and is evaluated on
    sections, prompt_hash = triage_prompt.load(prompts_dir)
    domain = domain_of(prompts_dir)
    rows = queries.to_dicts()
    ranked = retriever.rank([r["query"] for r in rows], config.k, config.mode)
    jobs = []
    for row, hits in zip(rows, ranked):
        slugs = [s for s, _ in hits]
        docs = [retriever.docs[s] for s in slugs]
        titles = [d["title"] for d in docs]
        scores = [float(x) for _, x in hits]
        context = triage_prompt.with_documents(sections, titles, scores, [d["text"] for d in docs])
        about = demographics_text(row, domain.field_names)
        prompt = triage_prompt.messages(sections, context, about, row["query"])
        jobs.append((row, slugs, titles, scores, prompt, [d["text"] for d in docs]))

    # each query's samples (rejection sampling): the first at the role's own seed (as one sample
    # always was, so its cache still answers), the others at seeds counted on from it
    samples = [(job, i) for job in jobs for i in range(config.samples)]
    first_seed = client.settings.seed or 0

    async def one(sample):
        job, i = sample
        seed = None if i == 0 else first_seed + i
        if client.settings.structured_output:
            schema = answer_schema(job[0]["query"], job[2], job[5], domain)
            reply = await client.complete(job[4], seed=seed, response_format=schema)
            return from_structured(reply, domain)
        return await client.complete(job[4], seed=seed)

    replies = client.run(samples, one, "teacher traces", progress)
    out = [
        _trace(job, i, reply, client.settings.model, prompt_hash, config, domain)
        for (job, i), reply in zip(samples, replies)
    ]
    return pl.DataFrame(out, schema=TRACE_SCHEMA)


def _trace(
    job: tuple,
    sample: int,
    reply,
    model: str,
    prompt_hash: str,
    config: TraceConfig,
    domain: Domain | None = None,
) -> dict[str, Any]:
    """One row of the traces: the query, what was retrieved, the teacher's answer read and scored,
    and whether the filter keeps it."""
    row, slugs, titles, scores, _, texts = job
    domain = domain or default_domain()
    condition, slug, severity = parse_answer(
        reply.content, dict(zip(slugs, titles)), Scale.of(domain)
    )
    trace = {
        "id": row["id"],
        "sample": sample,
        "query": row["query"],
        "demographics": demographics_text(row, domain.field_names),
        "gold_slug": row["slug"],
        "gold_disposition": row["disposition"],
        "query_type": row["query_type"],
        "retrieved_slugs": slugs,
        "retrieved_titles": titles,
        "retrieved_texts": texts,
        "scores": scores,
        "gold_retrieved": row["slug"] in slugs,
        "thinking": reply.thinking,
        "answer": reply.content,
        "pred_condition": condition,
        "pred_slug": slug,
        "pred_severity": severity,
        "parsable": condition is not None,
        "condition_in_retrieved": slug is not None,
        # as evaluation scores it (triage_scoring.score): "inconclusive" is right when the gold
        # page was not among the documents shown
        "correct_condition": slug == row["slug"]
        or (slug == "inconclusive" and row["slug"] not in slugs),
        "correct_disposition": severity == row["disposition"],
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "error": reply.error,
        "model": model,
        "prompt_hash": prompt_hash,
    }
    trace["kept"] = keep(trace, config)
    return trace


def trace_stats(traces: pl.DataFrame) -> dict[str, Any]:
    n = max(1, traces.height)
    ok = traces.filter(pl.col("error").is_null())
    return {
        "traces": traces.height,
        "queries": traces["id"].n_unique(),
        "failed": traces.height - ok.height,
        "kept": int(traces["kept"].sum()),
        # queries with at least one kept trace (rejection sampling keeps 0..samples per query)
        "queries_kept": traces.filter(pl.col("kept"))["id"].n_unique(),
        # answered but with no thinking: rejected whatever the policy
        "empty_thinking": int(
            ok.filter(pl.col("thinking").fill_null("").str.strip_chars() == "").height
        ),
        "parsable_rate": float(ok["parsable"].sum()) / n,
        "condition_in_retrieved_rate": float(ok["condition_in_retrieved"].sum()) / n,
        "condition_accuracy": float(ok["correct_condition"].sum()) / n,
        "disposition_accuracy": float(ok["correct_disposition"].sum()) / n,
        "gold_retrieved_rate": float(traces["gold_retrieved"].sum()) / n,
        "mean_completion_tokens": float(ok["completion_tokens"].mean() or 0.0),
    }


def run_traces(
    paths: DataPaths,
    config: TraceConfig,
    llm: LLMConfig,
    retriever,
    overrides: dict | None = None,
    progress=None,
    prompts=None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Traces for the training queries; ``prompts`` (a PromptSet: folder and domain) defaults to
    ``llm.prompts_dir`` with the default domain."""
    queries = read_parquet(paths.synthetic_queries("train"), "training queries", "t0 synth-queries")
    if queries.is_empty():
        raise T0Error(
            "the training query set is empty; run `t0 synth-queries` with a working query_writer "
            "first."
        )
    client = LLMClient("teacher", llm, LLMCache(paths.llm_cache(llm)), overrides)
    traces = collect_traces(
        queries, retriever, client, config, prompts or llm.prompts_dir, progress
    )
    require_some_success(client.usage, "teacher", client.settings)
    write_parquet(traces, paths.traces)
    write_config_sidecar(paths.traces, config, llm)
    stats = {**trace_stats(traces), "usage": client.usage.as_dict(), "policy": config.keep}
    log.info("traces: %s", stats)
    return traces, stats
