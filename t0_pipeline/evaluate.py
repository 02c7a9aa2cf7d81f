"""Condition and disposition accuracy over models, k and repeated runs (report, Tables 2-4, Figure
5).

Input: evaluation queries (the synthetic evaluation split, or any .jsonl/.json/.parquet whose
records have ``query``, ``slug`` or ``condition``, ``disposition`` and optionally ``id``,
``query_type`` and the demographic fields), the conditions dataset, the summaries index (for
k > 0) and one entry of ``evaluation.models``.

Output, under ``<data>/eval/accuracy/<model>/``: ``predictions.parquet`` (one row per query ×
k × run: what was retrieved, what the model said, its thinking, the parsed answer, the
status and the scores; for error analysis), ``summary.json`` and ``table.md``. :func:`combine`
writes the cross-model ``report.md``, ``report.csv`` and ``accuracy_by_size.png``.

Predictors share one interface, ``async predict(case, seed) -> Answer``:
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

Run it: ``t0 evaluate --model NAME`` then ``t0 accuracy-report``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from t0_pipeline import triage_prompt
from t0_pipeline.artifacts import T0Error, atomic_path, read_parquet, read_records, write_json
from t0_pipeline.baseline import disposition_from_page
from t0_pipeline.budget import complete_with_budget, generate_with_budget
from t0_pipeline.config import (
    BudgetConfig,
    DataPaths,
    EvalModelConfig,
    EvaluationConfig,
    PipelineConfig,
)
from t0_pipeline.demographics import demographics_text
from t0_pipeline.llm import EndpointError, LLMCache, LLMClient, LLMReply, cache_key, function_tool
from t0_pipeline.scoring import (
    Prediction,
    judge,
    normalise_severity,
    parse_answer_text,
    score,
    summarise_runs,
)
from t0_pipeline.validate import students_below_base

log = logging.getLogger(__name__)

TOOL_NAME = "submit_condition_recommendation"
TOOL = function_tool(
    TOOL_NAME,
    "Submit the condition that best explains the patient's message and how urgently they need "
    "care.",
    {
        "condition": {
            "type": "string",
            "description": "One of the allowed condition names, exactly as listed, or "
            "'inconclusive' when that is allowed.",
        },
        "severity": {"type": "string", "enum": ["Self-care", "Urgent Primary Care", "A&E"]},
    },
)
NOTE_LABELS = {
    "empty": "empty replies",
    "unparsable": "unparsable answers",
    "unknown_condition": "conditions not in the allowed list",
    "bad_severity": "severities outside the three",
    "wrong_tool": "calls to another tool",
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


# --- queries and cases --------------------------------------------------------------------
def load_eval_queries(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(queries, records skipped) from a query file; a record without text, condition or a valid
    disposition is skipped."""
    queries, skipped = [], 0
    for i, rec in enumerate(read_records(path), start=1):
        slug = rec.get("slug") or rec.get("condition")
        slug = slug[0] if isinstance(slug, list) and slug else slug
        severity = normalise_severity(rec.get("disposition"))
        text = rec.get("query")
        if not (isinstance(text, str) and text.strip() and isinstance(slug, str) and severity):
            skipped += 1
            continue
        queries.append(
            {
                "id": str(rec.get("id") or f"q{i:05d}"),
                "query": text.strip(),
                "slug": slug,
                "disposition": severity,
                "query_type": rec.get("query_type") or "unspecified",
                "demographics": demographics_text(rec),
            }
        )
    return queries, skipped


def queries_hash(queries: list[dict[str, Any]]) -> str:
    payload = json.dumps(
        [[q["id"], q["query"], q["slug"], q["disposition"]] for q in queries], ensure_ascii=False
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class Case:
    query: dict[str, Any]
    k: int
    retrieved: list[str] | None  # None at k = 0
    allowed: dict[str, str]  # slug → title
    messages: list[dict[str, str]]


@dataclass
class Answer:
    prediction: Prediction
    thinking: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None


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
            allowed = {slug: titles.get(slug, docs[slug]["title"]) for slug in retrieved}  # type: ignore[index]
            context = triage_prompt.with_documents(
                sections,
                [allowed[s] for s in retrieved],
                [float(x) for _, x in hits],
                [docs[s]["text"] for s in retrieved],
            )  # type: ignore[index]
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


# --- predictors ---------------------------------------------------------------------------
def failed_answer(error: str) -> Answer:
    status = "timeout" if "timeout" in error.lower() else "failed"
    return Answer(Prediction(None, None, status), error=error)


def from_tool_calls(reply: LLMReply, allowed: dict[str, str]) -> Prediction:
    """The submitted (condition, severity); a reply without the tool call falls back to its text."""
    calls = [c for c in reply.tool_calls if c.get("name") == TOOL_NAME]
    if not calls:
        if reply.tool_calls:
            return Prediction(None, None, "wrong_tool", json.dumps(reply.tool_calls))
        return parse_answer_text(reply.content, allowed)
    raw = calls[-1].get("arguments") or ""
    try:
        args = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return Prediction(None, None, "unparsable", raw)
    if not isinstance(args, dict):
        return Prediction(None, None, "unparsable", raw)
    condition, severity = args.get("condition"), args.get("severity")
    return judge(
        None if condition is None else str(condition),
        None if severity is None else str(severity),
        allowed,
        raw,
    )


class ChatPredictor:
    """A litellm chat model; text answers or the submit tool."""

    def __init__(self, client: LLMClient, answer: str):
        self.client, self.answer = client, answer
        self.answer_format = "answer_tool" if answer == "tool" else "answer_text"

    async def predict(self, case: Case, seed: int) -> Answer:
        reply = await self.client.complete(
            case.messages, tools=[TOOL] if self.answer == "tool" else None, seed=seed
        )
        if not reply.ok:
            return failed_answer(reply.error or "error")
        if self.answer == "tool":
            prediction = from_tool_calls(reply, case.allowed)
        else:
            prediction = parse_answer_text(reply.content, case.allowed)
        return Answer(
            prediction, reply.thinking, reply.prompt_tokens, reply.completion_tokens, reply.cached
        )


class BudgetPredictor:
    """A reasoning student with budget forcing: a vLLM completions endpoint, or a local transformers
    checkpoint."""

    answer_format = "answer_text"

    def __init__(self, client: LLMClient, settings: EvalModelConfig):
        from t0_pipeline.chat import load_tokenizer

        self.client, self.settings = client, settings
        self.budget = (settings.budget or BudgetConfig()).with_format()
        self._lock = threading.Lock()  # one local generation at a time
        self._model = None
        self.tokenizer = None  # generates (transformers)
        self.template = None  # renders the prompt; None = ChatML by hand (Qwen's format)
        if settings.backend == "transformers":
            from transformers import AutoTokenizer

            source = settings.tokenizer or settings.model
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(source)
            except OSError as exc:
                raise T0Error(
                    f"cannot load a tokenizer from {source!r} ({exc.__class__.__name__}); set the "
                    "model "
                    "entry's `tokenizer` (or `model`) to a local checkpoint folder."
                ) from None
            self.template = (
                self.tokenizer if getattr(self.tokenizer, "chat_template", None) else None
            )
        elif settings.tokenizer:
            self.template = load_tokenizer(settings.tokenizer)

    def _local(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM

            try:
                self._model = AutoModelForCausalLM.from_pretrained(self.settings.model)
            except OSError as exc:
                raise T0Error(
                    f"cannot load the checkpoint {self.settings.model!r} "
                    f"({exc.__class__.__name__}); "
                    "set the model entry's `model` to a local Hugging Face checkpoint folder."
                ) from None
            self._model.eval()
        return self._model

    def _generate(self, prompt: str, seed: int) -> LLMReply:
        s = self.settings
        try:
            if s.backend == "transformers":
                with self._lock:
                    gen = generate_with_budget(
                        self._local(),
                        self.tokenizer,
                        prompt,
                        self.budget,
                        sample=bool(s.temperature),
                        seed=seed,
                        temperature=s.temperature or 1.0,
                    )
            else:
                retry = self.client.config  # retried like every other model call
                gen = complete_with_budget(
                    s.api_base or "",
                    s.served_name,
                    prompt,
                    self.budget,
                    timeout_s=s.timeout_s,
                    api_key=s.api_key(),
                    temperature=s.temperature,
                    seed=seed,
                    max_attempts=retry.max_attempts,
                    backoff_s=retry.backoff_s,
                    max_backoff_s=retry.max_backoff_s,
                    on_failure=self.client.check_endpoint,
                )
                self.client.endpoint_ok()
        except EndpointError:
            raise
        except T0Error as exc:
            return LLMReply(error=f"{'Timeout' if 'Timeout' in str(exc) else 'BudgetError'}: {exc}")
        return LLMReply(
            content=gen.answer,
            thinking=gen.thinking,
            completion_tokens=gen.thinking_tokens,
            finish_reason="budget" if gen.budget_exhausted else "stop",
        )

    async def predict(self, case: Case, seed: int) -> Answer:
        from t0_pipeline.chat import generation_prompt

        prompt = generation_prompt(case.messages, self.template, self.budget.think_start)
        key = cache_key(
            self.settings.model,
            [{"role": "prompt", "content": prompt}],
            {
                "budget": self.budget.model_dump(),
                "seed": seed,
                "temperature": self.settings.temperature,
                "backend": self.settings.backend,
            },
        )
        reply = await self.client.cached(
            key, lambda: asyncio.to_thread(self._generate, prompt, seed)
        )
        if not reply.ok:
            return failed_answer(reply.error or "error")
        return Answer(
            parse_answer_text(reply.content, case.allowed),
            reply.thinking,
            0,
            reply.completion_tokens,
            reply.cached,
        )


class RetrievalBaseline:
    """Top-1 retrieved condition; disposition from the urgency wording of its page."""

    answer_format = "answer_text"

    def __init__(self, pages: dict[str, str]):
        self.pages = pages

    async def predict(self, case: Case, seed: int) -> Answer:
        if not case.retrieved:
            return Answer(Prediction(None, None, "empty"))
        top = case.retrieved[0]
        severity = disposition_from_page(case.query["query"], self.pages.get(top, ""))
        return Answer(Prediction(top, severity, "ok", f"({top}, {severity})"))


def make_predictor(settings: EvalModelConfig, client: LLMClient, pages: dict[str, str]):
    if settings.backend == "retrieval":
        return RetrievalBaseline(pages)
    if settings.backend in ("completions", "transformers"):
        return BudgetPredictor(client, settings)
    return ChatPredictor(client, settings.answer)


# --- one model --------------------------------------------------------------------------
def status_notes(status_counts: dict[str, int], skipped: int = 0, n_queries: int = 1) -> list[str]:
    notes = [
        f"{status_counts[s]} {label}" for s, label in NOTE_LABELS.items() if status_counts.get(s)
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
    predictor = make_predictor(settings, client, pages)
    deterministic = settings.backend == "retrieval"
    # our own decoding at temperature 0 is greedy: every run would compute the same thing, so one
    # run is made
    greedy = settings.backend in ("transformers", "completions") and not settings.temperature
    ks = [k for k in config.ks if k > 0] if deterministic else list(config.ks)
    runs = 1 if deterministic or greedy else config.runs
    seeds = [config.seed + r for r in range(runs)]
    rows: list[dict[str, Any]] = []
    with client.stage(
        f"evaluate {name}", len(ks) * len(seeds) * len(queries)
    ):  # one bar and count for every k
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
        stats = summarise_runs(list(sub.iter_rows(named=True)))
        if k > 0 and sub.height:
            stats["gold_retrieved_rate"] = float(sub["gold_retrieved"].mean())
        stats["notes"] = status_notes(stats.get("status_counts", {}), 0, len(queries))
        by_k[str(k)] = stats
    status_counts = dict(df.group_by("status").len().iter_rows()) if df.height else {}
    summary = {
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
        "runs": runs,
        "seeds": seeds,
        "ks": ks,
        "by_k": by_k,
        "status_counts": status_counts,
        "notes": status_notes(status_counts, 0, len(queries))
        + (
            ["greedy decoding (temperature 0): one run, not repeated"]
            if greedy and config.runs > 1
            else []
        ),
        "usage": client.usage.as_dict(),
    }
    return df, summary


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
    rows = []
    for (run, seed, case), answer in zip(items, answers):
        q, pred = case.query, answer.prediction
        scored = score(pred, q["slug"], q["disposition"], case.retrieved)
        rows.append(
            {
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
        )
    return rows


def fmt(value: tuple[float, float] | list[float] | None) -> str:
    return "—" if not value else f"{value[0]:.2f} ± {value[1]:.2f}"


def model_table(summary: dict[str, Any]) -> str:
    """One model's Tables 2-3 rows, confusion matrices and error shares, as Markdown."""
    from t0_pipeline.scoring import SEVERITIES

    lines = [
        f"# {summary['model']} ({summary['model_id']}, {summary['backend']})",
        "",
        f"{summary['queries']} queries (hash {summary['queries_hash']}), {summary['runs']} run(s), "
        "seeds "
        f"{summary['seeds']}, prompt {summary['prompt_hash']}",
        "",
        "| k | condition | disposition | gold retrieved | under-estimates | over-estimates |",
        "|---|---|---|---|---|---|",
    ]
    for k, s in summary["by_k"].items():
        retrieved = f"{s['gold_retrieved_rate']:.2f}" if "gold_retrieved_rate" in s else "—"
        lines.append(
            f"| {k} | {fmt(s.get('condition_accuracy'))} | {fmt(s.get('disposition_accuracy'))} | "
            f"{retrieved} | "
            f"{s.get('under_estimate_share', 0):.0%} | {s.get('over_estimate_share', 0):.0%} |"
        )
    for k, s in summary["by_k"].items():
        if not s.get("by_query_type"):
            continue
        lines += [
            "",
            f"## By query type, k={k}",
            "",
            "| query type | condition | disposition |",
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
            "| gold \\ predicted | " + " | ".join([*SEVERITIES, "none"]) + " |",
            "|---" * 5 + "|",
        ]
        lines += [
            f"| {gold} | " + " | ".join(str(n) for n in row.values()) + " |"
            for gold, row in s["confusion"].items()
        ]
    lines += ["", "Notes: " + ("; ".join(summary["notes"]) or "none")]
    return "\n".join(lines) + "\n"


# --- the stage ----------------------------------------------------------------------------
def eval_queries_path(paths: DataPaths, config: EvaluationConfig) -> Path:
    return Path(config.queries) if config.queries is not None else paths.synthetic_queries("eval")


def load_queries_for(
    paths: DataPaths, config: EvaluationConfig
) -> tuple[list[dict[str, Any]], int]:
    source = eval_queries_path(paths, config)
    if not source.exists():
        raise T0Error(
            f"no evaluation queries at {source}; run `t0 synth-queries` (or materialise "
            "synthetic_queries), "
            "or set evaluation.queries / --queries to a .jsonl with query, slug and disposition."
        )
    queries, skipped = load_eval_queries(source)
    if config.max_queries is not None:
        queries = queries[: config.max_queries]
    return queries, skipped


def model_settings(config: EvaluationConfig, name: str) -> EvalModelConfig:
    if name not in config.models:
        raise T0Error(
            f"no model {name!r} in evaluation.models; configured: {', '.join(config.models)}."
        )
    return config.models[name]


def run_evaluation(
    paths: DataPaths,
    cfg: PipelineConfig,
    name: str,
    retriever=None,
    progress=None,
    served_checkpoint: str | None = None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Evaluate one configured model and write its predictions, summary and table
    (``served_checkpoint``: what the pipeline's server for it loaded, recorded in the summary)."""
    config, llm = cfg.evaluation, cfg.llm
    settings = model_settings(config, name)
    queries, skipped = load_queries_for(paths, config)
    conditions = read_parquet(paths.conditions, "conditions dataset", "t0 clean")
    titles = dict(zip(conditions["slug"].to_list(), conditions["title"].to_list()))
    pages = dict(zip(conditions["slug"].to_list(), conditions["text"].to_list()))
    needs_index = any(k > 0 for k in config.ks) and queries
    if retriever is None and needs_index:
        from t0_pipeline.retrieve import Retriever

        retriever = Retriever(config.index, paths, cfg.embedding, cfg.chroma, cfg.retrieval)
    role_llm = llm.model_copy(update={"roles": {name: settings}})
    if settings.backend == "transformers":
        role_llm.concurrency = 1
    client = LLMClient(
        name, role_llm, LLMCache(paths.llm_cache(llm)), setting=f"evaluation.models.{name}"
    )
    df, summary = evaluate_model(
        name, settings, queries, config, client, titles, pages, retriever, llm.prompts_dir, progress
    )
    if skipped:
        summary["notes"].append(
            f"{skipped} query records skipped (no text, condition or valid disposition)"
        )
    summary["skipped_queries"] = skipped
    summary["served_checkpoint"] = served_checkpoint
    out = paths.accuracy_dir(name)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        df.write_parquet(tmp / "predictions.parquet")
        (tmp / "table.md").write_text(model_table(summary), encoding="utf-8")
        write_json(summary, tmp / "summary.json")
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
    paths: DataPaths, cfg: PipelineConfig, name: str, make_server, retriever=None, progress=None
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """:func:`run_evaluation` with the model's server started first when its entry has a ``serve``
    section (``make_server``: see :mod:`t0_pipeline.model_server`) and stopped after; the inputs are
    checked before anything is started, so a missing query set never costs a model load."""
    from t0_pipeline.model_server import endpoint_for

    load_queries_for(paths, cfg.evaluation)
    read_parquet(paths.conditions, "conditions dataset", "t0 clean")
    cfg = cfg.model_copy(deep=True)
    with endpoint_for(name, model_settings(cfg.evaluation, name), paths, make_server) as (
        served,
        checkpoint,
    ):
        cfg.evaluation.models[name] = served
        return run_evaluation(paths, cfg, name, retriever, progress, served_checkpoint=checkpoint)


# --- across models ------------------------------------------------------------------------
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


def parsable_share(stats: dict[str, Any]) -> float | None:
    """Share of a k's replies that parsed to a condition and a severity (right or wrong); None when
    not run."""
    counts = stats.get("status_counts") or {}
    total = sum(counts.values())
    return (
        sum(n for status, n in counts.items() if status not in ("empty", "unparsable", "failed"))
        / total
        if total
        else None
    )


def fmt_share(share: float | None) -> str:
    return "—" if share is None else f"{share:.0%}"


def combine(paths: DataPaths, config: EvaluationConfig) -> CombinedReport:
    """The cross-model table (report's Table 2/4 layout), query-type table and Figure 5 style
    plot."""
    summaries = read_summaries(paths, config)
    missing = [m for m in config.models if m not in summaries]
    ks = sorted({int(k) for s in summaries.values() for k in s["by_k"]}) or list(config.ks)
    rows = []
    for name, s in summaries.items():
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
                row[f"{field}_k{k}"], row[f"{field}_k{k}_std"] = (
                    (value[0], value[1]) if value else (None, None)
                )
            row[f"under_share_k{k}"] = stats.get("under_estimate_share")
            row[f"over_share_k{k}"] = stats.get("over_estimate_share")
        row["notes"] = "; ".join(s["notes"])
        rows.append(row)
    table = pl.DataFrame(rows) if rows else pl.DataFrame({"model": []}, schema={"model": pl.String})
    head = (
        "| model | kind | size | "
        + " | ".join(f"condition k={k} | disposition k={k}" for k in ks)
        + " | notes |"
    )
    lines = [
        "# Condition and disposition accuracy (mean ± std over runs)",
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
    if any(s["by_k"].get(str(k), {}).get("by_query_type") for s in summaries.values() for k in ks):
        qk = max(ks)
        types = sorted(
            {
                t
                for s in summaries.values()
                for t in s["by_k"].get(str(qk), {}).get("by_query_type", {})
            }
        )
        lines += [
            "",
            f"## By query type (k={qk}; condition / disposition)",
            "",
            "| model | " + " | ".join(types) + " |",
            "|---" * (1 + len(types)) + "|",
        ]
        for name, s in summaries.items():
            by = s["by_k"].get(str(qk), {}).get("by_query_type", {})
            lines.append(
                f"| {name} | "
                + " | ".join(
                    f"{by[t]['condition'][0]:.2f} / {by[t]['disposition'][0]:.2f}"
                    if t in by
                    else "—"
                    for t in types
                )
                + " |"
            )
        lines += [
            "",
            f"## Severity errors (k={qk}): share of wrong dispositions that under- / over-estimate "
            "urgency",
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
    lines += [
        "",
        "## Answers in the format: share of replies that parse to a condition and a level of care",
        "",
        "| model | " + " | ".join(f"k={k}" for k in ks) + " |",
        "|---" * (1 + len(ks)) + "|",
    ]
    lines += [
        f"| {name} | "
        + " | ".join(fmt_share(parsable_share(s["by_k"].get(str(k), {}))) for k in ks)
        + " |"
        for name, s in summaries.items()
    ]
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
    markdown = "\n".join(lines) + "\n"
    out = paths.accuracy_dir()
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "report.csv"
    with atomic_path(csv) as tmp:
        table.write_csv(tmp)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown, encoding="utf-8")
    png = plot_by_size(summaries, ks, out / "accuracy_by_size.png") if summaries else None
    return CombinedReport(table, markdown, csv, png, list(summaries), missing, below)


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
