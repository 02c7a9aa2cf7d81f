"""Condition and disposition accuracy over models, k and repeated runs (report, Tables 2-4, Figure
5).

Input: evaluation queries (the synthetic evaluation split, or any .jsonl/.json/.parquet whose
records have ``query``, ``slug`` or ``condition``, ``disposition`` and optionally ``id``,
``query_type`` and the demographic fields), the conditions dataset, the summaries index (for
k > 0) and one entry of ``evaluation.models``.

Output, under ``<data>/eval/accuracy/<model>/``: ``predictions.parquet`` (one row per query ×
k × run: what was retrieved, what the model said, its thinking, the parsed answer, the
status and the scores; for error analysis), ``summary.json`` and ``table.md``.
:func:`t0_pipeline.evaluation.tables.combine` writes the cross-model ``report.md``, ``report.csv``
and ``accuracy_by_size.png``.

The predictors (:mod:`t0_pipeline.evaluation.predictors`) share one interface,
``async predict(case, seed) -> Answer``:
- :class:`ChatPredictor`: any litellm chat model, answering in text ("(condition, severity)",
  parsed tolerantly) or through the ``submit_condition_recommendation`` tool;
- :class:`BudgetPredictor`: a reasoning student with budget forcing, on a vLLM completions
  endpoint or a local transformers checkpoint;
- :class:`RetrievalBaseline`: the top retrieved condition and a rule-based disposition.

At k = 0 the prompt lists every condition; at k > 0 it holds the k retrieved documents with
their scores and only their titles (or "inconclusive") are allowed. Each call is cached by
(model, prompt, seed) in the shared LLM cache, so adding runs or models computes only what
is new. Empty replies, unparsable answers, conditions outside the allowed list, severities
outside the three and timeouts are counted in the notes; the run always completes.

The queries and prompts come from :mod:`t0_pipeline.evaluation.cases`.

Run it: ``t0 evaluate --model NAME`` then ``t0 accuracy-report``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from t0_pipeline.artifacts import T0Error, atomic_path, read_parquet, write_json
from t0_pipeline.config import (
    DataPaths,
    EvalModelConfig,
    EvaluationConfig,
)
from t0_pipeline.domain import default_domain, plural
from t0_pipeline.evaluation.cases import (
    EvaluationInputs,
    build_cases,
    load_queries_for,
    queries_hash,
)
from t0_pipeline.evaluation.predictors import answering_weights, make_predictor
from t0_pipeline.evaluation.tables import fmt, model_table
from t0_pipeline.llm.cache import LLMCache
from t0_pipeline.llm.client import LLMClient
from t0_pipeline.prompts import domain_of
from t0_pipeline.task import prompt as triage_prompt
from t0_pipeline.task.scoring import (
    score,
    summarise_runs,
)
from t0_pipeline.training.model_card import refresh_cards

log = logging.getLogger(__name__)

NOTE_LABELS = {
    "empty": "empty replies",
    "unparsable": "unparsable answers",
    "unknown_condition": "{topics} not in the allowed list",
    "bad_severity": "{answers} outside the {n}",
    "wrong_tool": "calls to another tool",
    "no_tool_call": "answers without the submit tool (reference scoring)",
    "several_tool_calls": "answers with several submit calls (reference scoring)",
    "timeout": "timeouts",
    "failed": "failed calls",
}

PREDICTION_SCHEMA = {
    "model": pl.String,
    "k": pl.Int32,
    "run": pl.Int32,
    "seed": pl.Int64,
    "query_id": pl.String,
    "query_type": pl.String,
    "gold_slug": pl.String,
    "gold_severity": pl.String,
    "retrieved_slugs": pl.List(pl.String),
    "gold_retrieved": pl.Boolean,
    "pred_condition": pl.String,
    "pred_severity": pl.String,
    "status": pl.String,
    "condition_correct": pl.Boolean,
    "disposition_correct": pl.Boolean,
    "severity_error": pl.String,
    "thinking": pl.String,
    "answer": pl.String,
    "error": pl.String,
    "prompt_tokens": pl.Int64,
    "completion_tokens": pl.Int64,
    "cached": pl.Boolean,
    "prompt_hash": pl.String,
}


# --- predictors ---------------------------------------------------------------------------
def status_notes(
    status_counts: dict[str, int], skipped: int = 0, n_queries: int = 1, domain=None
) -> list[str]:
    """One note per kind of failed answer, in ``domain``'s words (default: the NHS domain's)."""
    domain = domain or default_domain()
    words = {
        "topics": domain.plural("topic"),
        "answers": plural(domain.answer.replace("_", " ")),
        "n": domain.words()["n_categories"],
    }
    notes = [
        f"{status_counts[s]} {label.format(**words)}"
        for s, label in NOTE_LABELS.items()
        if status_counts.get(s)
    ]
    if skipped:
        notes.append(f"{skipped} query records skipped (no text, condition or valid disposition)")
    if not n_queries:
        notes.append("empty query set: nothing to score")
    return notes


def evaluate_model(
    name: str,
    settings: EvalModelConfig,
    queries: list[dict[str, Any]],
    config: EvaluationConfig,
    client: LLMClient,
    titles: dict[str, str],
    pages: dict[str, str],
    retriever=None,
    prompts_dir: Path | None = None,
    progress=None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Predictions for every (k, run, query) and the summary for one model."""
    sections, prompt_hash = triage_prompt.load(prompts_dir)
    domain = domain_of(prompts_dir)
    predictor = make_predictor(settings, client, pages, config.scoring, domain)
    deterministic = settings.backend == "retrieval"
    # our own decoding at temperature 0 is greedy: every run would compute the same thing, so one
    # run is made
    greedy = settings.backend in ("transformers", "completions") and not settings.temperature
    ks = [k for k in config.ks if k > 0] if deterministic else list(config.ks)
    runs = 1 if deterministic or greedy else config.runs
    seeds = [config.seed + r for r in range(runs)]
    rows: list[dict[str, Any]] = []
    # one bar and count for every k
    with client.stage(f"evaluate {name}", len(ks) * len(seeds) * len(queries)):
        for k in ks:
            rows += _predict_at_k(
                name,
                k,
                seeds,
                queries,
                config,
                client,
                predictor,
                titles,
                retriever,
                sections,
                prompt_hash,
                progress,
            )
    df = pl.DataFrame(rows, schema=PREDICTION_SCHEMA)
    by_k = {}
    for k in ks:
        sub = df.filter(pl.col("k") == k)
        stats = summarise_runs(list(sub.iter_rows(named=True)), predictor.scale)
        if k > 0 and sub.height:
            stats["gold_retrieved_rate"] = float(sub["gold_retrieved"].mean())
        stats["notes"] = status_notes(stats.get("status_counts", {}), 0, len(queries), domain)
        by_k[str(k)] = stats
    summary = _summary(name, settings, queries, prompt_hash, seeds, ks, by_k, df, domain)
    summary["scoring"] = config.scoring
    summary["domain"], summary["labels"] = domain.name, list(domain.score_labels)
    if greedy and config.runs > 1:
        summary["notes"].append("greedy decoding (temperature 0): one run, not repeated")
    summary["usage"] = client.usage.as_dict()
    return df, summary


def _summary(
    name: str,
    settings: EvalModelConfig,
    queries: list[dict[str, Any]],
    prompt_hash: str,
    seeds: list[int],
    ks: list[int],
    by_k: dict[str, Any],
    df: pl.DataFrame,
    domain=None,
) -> dict[str, Any]:
    status_counts = dict(df.group_by("status").len().iter_rows()) if df.height else {}
    return {
        "model": name,
        "model_id": settings.model,
        "backend": settings.backend,
        "answer": settings.answer,
        "kind": settings.kind,
        "size": settings.size,
        "base": settings.base,
        "queries": len(queries),
        "queries_hash": queries_hash(queries),
        "prompt_hash": prompt_hash,
        "runs": len(seeds),
        "seeds": seeds,
        "ks": ks,
        "by_k": by_k,
        "status_counts": status_counts,
        "notes": status_notes(status_counts, 0, len(queries), domain),
    }


def _prediction_row(
    name: str, k: int, run: int, seed: int, case, answer, prompt_hash: str, scale=None
):
    """One prediction's row of ``predictions.parquet`` (see :data:`PREDICTION_SCHEMA`)."""
    q, pred = case.query, answer.prediction
    scored = score(pred, q["slug"], q["disposition"], case.retrieved, scale)
    return {
        "model": name,
        "k": k,
        "run": run,
        "seed": seed,
        "query_id": q["id"],
        "query_type": q["query_type"],
        "gold_slug": q["slug"],
        "gold_severity": q["disposition"],
        "retrieved_slugs": case.retrieved,
        "gold_retrieved": None if case.retrieved is None else q["slug"] in case.retrieved,
        "pred_condition": pred.condition,
        "pred_severity": pred.severity,
        "status": pred.status,
        "condition_correct": scored["condition_correct"],
        "disposition_correct": scored["disposition_correct"],
        "severity_error": scored["severity_error"],
        "thinking": answer.thinking,
        "answer": pred.raw,
        "error": answer.error,
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "cached": answer.cached,
        "prompt_hash": prompt_hash,
    }


def _predict_at_k(
    name: str,
    k: int,
    seeds: list[int],
    queries: list[dict[str, Any]],
    config: EvaluationConfig,
    client: LLMClient,
    predictor,
    titles: dict[str, str],
    retriever,
    sections,
    prompt_hash: str,
    progress=None,
) -> list[dict[str, Any]]:
    """Prediction rows for every (run, query) at one k."""
    ranked = (
        retriever.rank([q["query"] for q in queries], k, config.mode) if k > 0 and queries else None
    )
    cases = build_cases(
        queries,
        k,
        titles,
        ranked,
        retriever.docs if k > 0 else None,
        sections,
        predictor.answer_format,
    )
    items = [(run, seed, case) for run, seed in enumerate(seeds) for case in cases]

    async def one(item):
        return await predictor.predict(item[2], item[1])

    answers = client.run(items, one, f"{name} k={k}", progress) if items else []
    return [
        _prediction_row(name, k, run, seed, case, answer, prompt_hash, predictor.scale)
        for (run, seed, case), answer in zip(items, answers)
    ]


def model_settings(config: EvaluationConfig, name: str) -> EvalModelConfig:
    if name not in config.models:
        raise T0Error(
            f"no model {name!r} in evaluation.models; configured: {', '.join(config.models)}."
        )
    return config.models[name]


def run_evaluation(
    paths: DataPaths,
    inputs: EvaluationInputs,
    name: str,
    progress=None,
    served_checkpoint: str | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Evaluate one configured model and write its predictions, summary and table
    (``served_checkpoint``: what the pipeline's server for it loaded, recorded in the summary)."""
    config, llm = inputs.config, inputs.llm
    settings = model_settings(config, name)
    queries, skipped = load_queries_for(paths, config, inputs.domain)
    conditions = read_parquet(paths.conditions, "conditions dataset", "t0 clean")
    titles = dict(zip(conditions["slug"].to_list(), conditions["title"].to_list()))
    pages = dict(zip(conditions["slug"].to_list(), conditions["text"].to_list()))
    needs_index = any(k > 0 for k in config.ks) and queries
    retriever = inputs.retriever() if needs_index else None
    role_llm = llm.model_copy(update={"roles": {name: settings}})
    if settings.backend == "transformers":
        role_llm.concurrency = 1
    client = LLMClient(
        name, role_llm, LLMCache(paths.llm_cache(llm)), setting=f"evaluation.models.{name}"
    )
    df, summary = evaluate_model(
        name, settings, queries, config, client, titles, pages, retriever, inputs.prompts, progress
    )
    if skipped:
        summary["notes"].append(
            f"{skipped} query records skipped (no text, condition or valid disposition)"
        )
    summary["skipped_queries"] = skipped
    summary["served_checkpoint"] = served_checkpoint
    # the weights the answers came from (the cache is keyed by them too)
    summary["weights"] = answering_weights(settings)
    out = paths.accuracy_dir(name)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        df.write_parquet(tmp / "predictions.parquet")
        (tmp / "table.md").write_text(model_table(summary), encoding="utf-8")
        write_json(summary, tmp / "summary.json")
    for card in refresh_cards(paths, config, name):
        log.info("%s: the evaluation is now in %s", name, card)
    log.info(
        "%s: %s",
        name,
        "; ".join(
            f"k={k}: condition {fmt(s.get('condition_accuracy'))}, disposition "
            f"{fmt(s.get('disposition_accuracy'))}"
            for k, s in summary["by_k"].items()
        ),
    )
    return df, summary


def run_served_evaluation(
    paths: DataPaths, inputs: EvaluationInputs, name: str, make_server, progress=None
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """:func:`run_evaluation` with the model's server started first when its entry has a ``serve``
    section (``make_server``: see :mod:`t0_pipeline.servers.model_server`) and stopped after; the
    inputs are checked before anything is started, so a missing query set never costs a model
    load."""
    from t0_pipeline.servers.model_server import endpoint_for

    load_queries_for(paths, inputs.config, inputs.domain)
    read_parquet(paths.conditions, "conditions dataset", "t0 clean")
    config = inputs.config.model_copy(deep=True)
    with endpoint_for(name, model_settings(config, name), paths, make_server) as (
        served,
        checkpoint,
    ):
        config.models[name] = served
        served_inputs = replace(inputs, config=config)
        return run_evaluation(paths, served_inputs, name, progress, served_checkpoint=checkpoint)


# --- across models ------------------------------------------------------------------------
