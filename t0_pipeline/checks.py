"""Pure validators behind the asset checks (and usable from tests and notebooks).

Each returns a list of problems, one sentence each; an empty list means the check passed (a
few rates come with them, for the checks' metadata). Every asset check in ``defs/`` reads its
asset's files, calls one of these and reports.
"""

from __future__ import annotations

from typing import Any

import polars as pl


def document_problems(docs: pl.DataFrame, min_chars: int = 1) -> list[str]:
    """Empty documents, duplicate slugs, and distinct slugs with identical text."""
    problems: list[str] = []
    if docs.is_empty():
        return ["the dataset has no documents"]
    short = docs.filter(pl.col("text").str.strip_chars().str.len_chars() < min_chars)[
        "slug"
    ].to_list()
    if short:
        problems.append(f"{len(short)} empty or too-short documents: {', '.join(short[:5])}")
    dup_slugs = docs.group_by("slug").len().filter(pl.col("len") > 1)["slug"].to_list()
    if dup_slugs:
        problems.append(f"duplicate slugs: {', '.join(sorted(dup_slugs)[:5])}")
    dup_text = (
        docs.group_by("content_hash")
        .agg(pl.col("slug"))
        .filter(pl.col("slug").list.len() > 1)["slug"]
        .to_list()
    )
    if dup_text:
        problems.append(
            "documents with identical text: " + "; ".join(", ".join(g) for g in dup_text[:3])
        )
    return problems


def unindexed_documents(docs: pl.DataFrame, manifest: dict[str, Any] | None) -> list[str]:
    """Slugs whose current text is not what the index manifest lists (missing or stale)."""
    if manifest is None:
        return docs["slug"].to_list()
    live = manifest.get("docs", {})
    return [s for s, h in zip(docs["slug"], docs["content_hash"]) if live.get(s) != h]


def summary_problems(conditions: pl.DataFrame, summaries: pl.DataFrame) -> list[str]:
    problems = []
    missing = sorted(set(conditions["slug"]) - set(summaries["slug"]))
    if missing:
        problems.append(f"{len(missing)} conditions without a summary: {', '.join(missing[:5])}")
    current = conditions.select("slug", pl.col("content_hash").alias("page_hash"))
    stale = (
        summaries.join(current, on="slug")
        .filter(pl.col("source_hash") != pl.col("page_hash"))["slug"]
        .to_list()
    )
    if stale:
        problems.append(f"{len(stale)} summaries made from an older page: {', '.join(stale[:5])}")
    empty = summaries.filter(pl.col("text").str.strip_chars() == "")["slug"].to_list()
    if empty:
        problems.append(f"{len(empty)} empty summaries: {', '.join(empty[:5])}")
    return problems


def pk_problems(table: pl.DataFrame, indexes: list[str], modes: list[str]) -> list[str]:
    """What is wrong with a p@k table: a configured (index, mode) pair missing, a value outside [0,
    1], or p@k falling as k grows (a share of queries with a hit in the top k can only rise)."""
    problems = []
    seen = {(r["index"], r["mode"]) for r in table.iter_rows(named=True)}
    problems += [f"{i} · {m} was not scored" for i in indexes for m in modes if (i, m) not in seen]
    ks = sorted((c for c in table.columns if c.startswith("p@")), key=lambda c: int(c[2:]))
    for row in table.iter_rows(named=True):
        values = [row[k] for k in ks]
        if any(not 0.0 <= v <= 1.0 for v in values):
            problems.append(f"{row['index']} · {row['mode']}: a p@k outside [0, 1]")
        if any(b < a for a, b in zip(values, values[1:])):
            problems.append(f"{row['index']} · {row['mode']}: p@k falls as k grows")
    return problems


def sft_problems(df: pl.DataFrame, block_size: int, think_end: str) -> list[str]:
    """What is wrong with SFT examples: none at all, one over the block size, or one whose assistant
    turn does not carry the chat format's end-of-thinking marker (budget forcing would never see the
    format)."""
    import json

    if df.is_empty():
        return ["no examples"]
    problems = [
        f"{r['id']}: {r['n_tokens']} tokens > block size {block_size}"
        for r in df.iter_rows(named=True)
        if r["n_tokens"] > block_size
    ]
    for row in df.iter_rows(named=True):
        turns = json.loads(row["messages"])
        if not turns or turns[-1]["role"] != "assistant" or think_end not in turns[-1]["content"]:
            problems.append(f"{row['id']}: the assistant turn lacks {think_end!r}")
    return problems[:20]


def checkpoint_problems(final_dir) -> list[str]:
    """What a loadable Hugging Face checkpoint folder lacks (config, weights, tokenizer)."""
    from pathlib import Path

    final = Path(final_dir)
    if not final.is_dir():
        return [f"{final} does not exist"]
    problems = [] if (final / "config.json").is_file() else ["no config.json"]
    if (
        not any(final.glob("*.safetensors"))
        and not any(final.glob("*.bin"))
        and not (final / "adapter_config.json").is_file()
    ):
        problems.append("no weights (*.safetensors, *.bin or a LoRA adapter)")
    if not any((final / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        problems.append("no tokenizer")
    return [f"{final}: {p}" for p in problems]


def prediction_problems(predictions: pl.DataFrame, summary: dict) -> list[str]:
    """What is wrong with one model's evaluation: a (k, run, query) missing or repeated."""
    expected = (
        len(summary.get("ks", [])) * len(summary.get("seeds", [])) * int(summary.get("queries", 0))
    )
    problems = []
    if predictions.height != expected:
        problems.append(
            f"{predictions.height} predictions, expected {expected} (ks × runs × queries)"
        )
    if (
        predictions.height
        and predictions.select("k", "run", "query_id").n_unique() != predictions.height
    ):
        problems.append("a (k, run, query) is predicted twice")
    return problems


# --- corpus ------------------------------------------------------------------------------------
def crawl_failures(report: dict[str, Any]) -> list[str]:
    """Condition pages the crawl could not fetch, from its report."""
    return [f"{f['slug']} ({f['url']}): {f['error']}" for f in report.get("failed", [])]


# --- retrieval ---------------------------------------------------------------------------------
def unresolvable_queries(queries: list[Any], corpus: set[str]) -> list[str]:
    """Evaluation queries none of whose targets is a document of the corpus (their first 60
    characters)."""
    return [q.query[:60] for q in queries if not any(t in corpus for t in q.targets)]


def embedder_choice_problems(last_run: dict[str, Any], tuned_in_use: bool) -> list[str]:
    """The tuned embedder is in use exactly when its last run measured a gain."""
    if tuned_in_use and not last_run["used"]:
        return ["the tuned embedder is in use, but its last run did not measure it better"]
    if last_run["used"] and not tuned_in_use:
        return ["the tuned embedder measured better, but the indexes do not use it"]
    if last_run["used"] and not last_run["gain"] > 0:
        return [f"the tuned embedder is in use with a gain of {last_run['gain']}"]
    return []


# --- synthetic queries and traces -------------------------------------------------------------
def disjoint_problems(eval_df: pl.DataFrame, train_df: pl.DataFrame) -> list[str]:
    """(condition, disposition) pairs found in both the evaluation and the training queries."""
    pairs = set(zip(eval_df["slug"], eval_df["disposition"])) & set(
        zip(train_df["slug"], train_df["disposition"])
    )
    return [f"({s}, {d}) is in both sets" for s, d in sorted(pairs)]


def json_validity_rate(usage: dict[str, Any]) -> float:
    """Share of the query writer's replies that were valid JSON (after one repair)."""
    replies = usage["completed"] + usage["cache_hits"] - usage["repairs"]
    return 1.0 - usage["invalid_json"] / max(1, replies)


def json_validity_problems(usage: dict[str, Any], min_rate: float = 0.95) -> list[str]:
    rate = json_validity_rate(usage)
    return (
        []
        if rate >= min_rate
        else [f"{rate:.1%} of replies were valid JSON (at least {min_rate:.0%} expected)"]
    )


def query_rates(report: dict[str, Any]) -> dict[str, float]:
    """Failure and refusal rates of a query-writing run, over everything it asked for."""
    requested = (
        report["eval"]["requested"] + report["train"]["requested"] + report["train"]["top_up_draws"]
    )
    failed = len(report["eval"]["failures"]) + len(report["train"]["failures"])
    refusals = report["eval"]["refusals"] + report["train"]["refusals"]
    return {
        "failure_rate": failed / max(1, requested),
        "refusal_rate": refusals / max(1, requested + refusals),
    }


def query_rate_problems(
    report: dict[str, Any], max_failure_rate: float, max_refusal_rate: float
) -> list[str]:
    rates = query_rates(report)
    problems = []
    if rates["failure_rate"] > max_failure_rate:
        problems.append(f"failure rate {rates['failure_rate']:.1%} is over {max_failure_rate:.1%}")
    if rates["refusal_rate"] > max_refusal_rate:
        problems.append(f"refusal rate {rates['refusal_rate']:.1%} is over {max_refusal_rate:.1%}")
    return problems


def traces_outside_retrieved(traces: pl.DataFrame) -> list[str]:
    """Kept traces whose answer names none of the documents they were shown (nor 'inconclusive')."""
    return traces.filter(pl.col("kept") & ~pl.col("condition_in_retrieved"))["id"].to_list()


def traces_without_thinking(traces: pl.DataFrame) -> tuple[list[str], float]:
    """(kept traces whose thinking is empty, the share of answered traces with no thinking). The
    first must be empty; a high share means the teacher's thinking is not being read (its server
    puts it in a field or tags the client does not know)."""
    empty = pl.col("thinking").fill_null("").str.strip_chars() == ""
    kept = traces.filter(pl.col("kept") & empty)["id"].to_list()
    answered = traces.filter(pl.col("error").is_null())
    share = float(answered.select(empty.mean()).item() or 0.0) if answered.height else 0.0
    return kept, share


def parsable_in_retrieved_share(traces: pl.DataFrame) -> float:
    parsable = traces.filter(pl.col("parsable"))
    return float(parsable["condition_in_retrieved"].mean()) if parsable.height else 1.0


# --- evaluation --------------------------------------------------------------------------------
def students_below_base(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Fine-tuned models whose mean condition accuracy is below their base's at the same k on the
    same queries."""
    found = []
    for name, s in summaries.items():
        base = summaries.get(s.get("base") or "")
        if s["kind"] != "fine-tuned" or base is None or base["queries_hash"] != s["queries_hash"]:
            continue
        for k, stats in s["by_k"].items():
            theirs = base["by_k"].get(k, {}).get("condition_accuracy")
            ours = stats.get("condition_accuracy")
            if theirs and ours and ours[0] < theirs[0]:
                found.append(
                    {
                        "student": name,
                        "base": s["base"],
                        "k": int(k),
                        "student_accuracy": round(ours[0], 4),
                        "base_accuracy": round(theirs[0], 4),
                    }
                )
    return found
