"""Content checks on the synthetic data (measures: :mod:`t0_pipeline.synthetic.readable`): do the
queries read as patients' messages, does the kept teacher thinking talk about its query, and is
anything a student trains on offensive? Each returns its figures and a list of problems (empty =
passed), with examples a person can look at."""

from __future__ import annotations

from typing import Any

import polars as pl

from t0_pipeline.config import DataPaths
from t0_pipeline.synthetic.readable import (
    Vocabulary,
    first_person,
    grounded,
    offensive_words,
    tokens,
)


def _examples(texts: list[str], n: int = 5, width: int = 160) -> list[str]:
    return [t[:width] for t in texts[:n]]


def corpus_vocabulary(paths: DataPaths) -> Vocabulary:
    """English words and every word of the corpus's pages (missing corpus: English words only)."""
    path = paths.documents("full")
    texts = pl.read_parquet(path, columns=["text"])["text"].to_list() if path.exists() else []
    return Vocabulary(texts)


def _trigrams(text: str) -> set[tuple[str, ...]]:
    words = tokens(text)
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def copies_an_example(text: str, examples: list[str]) -> bool:
    """Half or more of the text's word trigrams come from one example message."""
    own = _trigrams(text)
    return bool(own) and any(len(own & _trigrams(e)) >= 0.5 * len(own) for e in examples)


def query_content(
    queries: pl.DataFrame, vocabulary: Vocabulary, min_share: float, examples: list[str] = ()
) -> tuple[dict[str, Any], list[str]]:
    """The share of ``queries`` that are readable first-person text of their own (not a copy of
    one of the writer's ``examples``), ≥ ``min_share`` to pass, and any offensive word in them."""
    texts = [q or "" for q in queries["query"].to_list()] if queries.height else []
    copied = [copies_an_example(t, list(examples)) for t in texts]
    good = [vocabulary.readable(t) and first_person(t) and not c for t, c in zip(texts, copied)]
    share = sum(good) / len(texts) if texts else 0.0
    offensive = sorted({w for t in texts for w in offensive_words(t)})
    figures = {
        "queries": len(texts),
        "readable_first_person_share": round(share, 3),
        "mean_word_share": round(sum(map(vocabulary.word_share, texts)) / max(1, len(texts)), 3),
        "copies_of_examples": sum(copied),
        "not_readable_examples": _examples([t for t, ok in zip(texts, good) if not ok]),
        "offensive_words": offensive,
    }
    problems = []
    if share < min_share:
        problems.append(
            f"{share:.0%} of the queries read as a patient's own first-person message (at least "
            f"{min_share:.0%} needed: queries.min_readable_share); e.g. "
            f"{figures['not_readable_examples'][:2]}"
        )
    if offensive:
        problems.append(f"offensive words in the queries: {offensive}")
    return figures, problems


def trace_content(
    traces: pl.DataFrame, vocabulary: Vocabulary, min_share: float
) -> tuple[dict[str, Any], list[str]]:
    """The share of kept traces whose thinking is readable and grounded in its query (shares a
    complaint word with it, or names a retrieved title); any offensive word in what is kept."""
    kept = traces.filter(pl.col("kept")) if traces.height else traces
    rows = kept.to_dicts()
    good = [
        vocabulary.readable(r["thinking"] or "", min_share=0.7)
        and grounded(r["thinking"] or "", r["query"], r["retrieved_titles"] or [])
        for r in rows
    ]
    share = sum(good) / len(rows) if rows else 0.0
    offensive = sorted(
        {w for r in rows for w in offensive_words(f"{r['thinking']} {r['answer']} {r['query']}")}
    )
    figures = {
        "kept": len(rows),
        "readable_grounded_share": round(share, 3),
        "not_grounded_examples": _examples(
            [r["thinking"] or "" for r, ok in zip(rows, good) if not ok]
        ),
        "offensive_words": offensive,
    }
    problems = []
    if rows and share < min_share:
        problems.append(
            f"{share:.0%} of the kept traces think in readable text about their query (at least "
            f"{min_share:.0%} needed: traces.min_grounded_share); e.g. "
            f"{figures['not_grounded_examples'][:2]}"
        )
    if not rows:
        problems.append("no trace was kept: the student would train on nothing")
    if offensive:
        problems.append(f"offensive words in the kept traces: {offensive}")
    return figures, problems


def query_set_problems(df: pl.DataFrame, split: dict[str, Any], config: Any) -> list[str]:
    """What is wrong with one query set: repeated ids or texts, or cells further apart than its
    losses explain.

    A full cycle draws every type × disposition × sex cell once, so cell counts differ by at most
    one; each query lost afterwards (failed, refused to the end, overlapping, repeated) may widen
    that by one more.
    """
    from t0_pipeline.domain import default_domain
    from t0_pipeline.synthetic.queries import cell_counts, draws_of, text_key

    if config.query_types is None or config.dispositions is None:  # a section read on its own
        config = draws_of(config, default_domain())
    problems = []
    if df["id"].n_unique() != df.height:
        problems.append(f"{df.height - df['id'].n_unique()} repeated ids")
    distinct = len({text_key(text) for text in df["query"]})
    if distinct != df.height:
        problems.append(f"{df.height - distinct} repeated query texts")
    if df.height:
        combos = len(config.query_types) * len(config.dispositions) * len(config.sexes)
        counts = list(cell_counts(df).values())
        counts += [0] * (combos - len(counts))  # cells that got no query at all
        lost = (
            len(split["failures"])
            + split["gave_up"]
            + split["removed_overlaps"]
            + split["repeated_texts"]
        )
        if max(counts) - min(counts) > 1 + lost:
            problems.append(
                f"cells range from {min(counts)} to {max(counts)} queries, more than the "
                f"{lost} lost draws explain"
            )
    return problems
