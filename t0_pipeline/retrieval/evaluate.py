"""Retrieval evaluation: p@k for each index × retriever mode on a labelled query file.

p@k is the share of queries whose correct document (any of the acceptable slugs, when
the target is a list) is among the k retrieved documents (report, Table 1).

Input: a query file (.jsonl/.json/.parquet) with configurable query and target fields,
and a built data directory. Output under ``<data>/eval/retrieval/``: ``pk.csv``,
``pk.md`` (the table), ``pk.png`` (p@k curves) and ``ranks.parquet`` (per query, index and
mode: the rank of the first correct document, or null).

Run it: ``t0 eval-retrieval --data-dir DIR --queries Q.jsonl --target-field condition``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from t0_pipeline.artifacts import (
    T0Error,
    atomic_path,
    read_records,
    write_config_sidecar,
    write_parquet,
)
from t0_pipeline.config import DataPaths, RetrievalEvalConfig

log = logging.getLogger(__name__)


def sample_queries_path() -> Path:
    return Path(str(resources.files("t0_pipeline") / "sample" / "queries.jsonl"))


@dataclass
class EvalQuery:
    query: str
    targets: list[str]
    record: dict[str, Any]


def load_queries(
    path: Path, config: RetrievalEvalConfig, corpus: set[str] | None = None
) -> list[EvalQuery]:
    """Validated queries: every record has query text and a target (slug or list of slugs) in the
    corpus."""
    queries: list[EvalQuery] = []
    unknown: list[str] = []
    for i, rec in enumerate(read_records(path), start=1):
        text = rec.get(config.query_field)
        if not isinstance(text, str) or not text.strip():
            raise T0Error(
                f"{path} record {i}: field {config.query_field!r} is missing or empty; set "
                "--query-field to the field holding the query text."
            )
        field = next(
            (f for f in target_fields(config) if rec.get(f) is not None), target_fields(config)[0]
        )
        target = rec.get(field)
        targets = (
            [target]
            if isinstance(target, str)
            else list(target)
            if isinstance(target, (list, tuple))
            else []
        )
        targets = [t for t in targets if isinstance(t, str) and t]
        if not targets:
            raise T0Error(
                f"{path} record {i}: field {' or '.join(map(repr, target_fields(config)))} must be "
                "a slug or a list of slugs; set --target-field to the field holding the correct "
                "document."
            )
        if corpus is not None and not any(t in corpus for t in targets):
            unknown.append(f"record {i} ({', '.join(targets)})")
        queries.append(EvalQuery(text, targets, rec))
    if not queries:
        raise T0Error(f"{path} holds no queries.")
    if unknown:
        raise T0Error(
            f"{path}: {len(unknown)} queries name targets that are not in the corpus, e.g. "
            f"{'; '.join(unknown[:3])}; fix the labels or rebuild the corpus."
        )
    return queries


def target_fields(config: RetrievalEvalConfig) -> list[str]:
    """Where a query record names its correct document: the configured field, else ``condition``
    (the bundled sample, most labelled sets) or ``slug`` (the synthetic query sets)."""
    return [config.target_field] if config.target_field else ["condition", "slug"]


@dataclass
class QuerySource:
    path: Path
    kind: str  # "configured" | "synthetic" | "sample"

    @property
    def label(self) -> str:
        return {"synthetic": "synthetic evaluation split", "sample": "bundled sample queries"}.get(
            self.kind, self.path.name
        )


def query_source(paths: DataPaths, config: RetrievalEvalConfig) -> QuerySource:
    """What retrieval is scored on: the configured file, else the synthetic evaluation split once it
    is written (the report's Table 1), else the bundled sample."""
    if config.queries is not None:
        return QuerySource(Path(config.queries), "configured")
    if paths.synthetic_queries("eval").exists():
        return QuerySource(paths.synthetic_queries("eval"), "synthetic")
    return QuerySource(sample_queries_path(), "sample")


def queries_for_corpus(
    source: QuerySource, config: RetrievalEvalConfig, corpus: set[str]
) -> tuple[list[EvalQuery], int]:
    """(queries, how many were left out). A configured file must match the corpus (an error names
    the mismatch); the sample and the synthetic split keep the queries whose condition is in it, so
    the sample's conditions need not exist in another corpus and a removed page drops its
    queries."""
    if source.kind == "configured":
        return load_queries(source.path, config, corpus), 0
    every = load_queries(source.path, config, None)
    kept = [q for q in every if any(t in corpus for t in q.targets)]
    return kept, len(every) - len(kept)


def first_hit_rank(ranked: list[str], targets: list[str]) -> int | None:
    """1-based rank of the first correct document, or None if none was retrieved."""
    wanted = set(targets)
    for rank, slug in enumerate(ranked, start=1):
        if slug in wanted:
            return rank
    return None


def precision_at_k(ranks: list[int | None], ks: list[int]) -> dict[int, float]:
    """p@k from first-hit ranks: share of queries with a correct document in the top k."""
    if not ranks:
        return {k: 0.0 for k in ks}
    return {k: sum(1 for r in ranks if r is not None and r <= k) / len(ranks) for k in ks}


def markdown_table(table: pl.DataFrame, ks: list[int]) -> str:
    cols = ["index", "mode"] + [f"p@{k}" for k in ks]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(ks)) + "|"]
    for row in table.iter_rows(named=True):
        lines.append(
            "| "
            + " | ".join([row["index"], row["mode"]] + [f"{row[f'p@{k}']:.3f}" for k in ks])
            + " |"
        )
    return "\n".join(lines)


def plot_curves(table: pl.DataFrame, ks: list[int], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    styles = {"full": "-", "summaries": "--"}
    for row in table.iter_rows(named=True):
        ax.plot(
            ks,
            [row[f"p@{k}"] for k in ks],
            styles.get(row["index"], "-"),
            marker="o",
            markersize=3,
            label=f"{row['index']} · {row['mode']}",
        )
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("k (documents retrieved)")
    ax.set_ylabel("p@k")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


@dataclass
class RetrievalReport:
    table: pl.DataFrame
    markdown: str
    n_queries: int
    csv: Path
    png: Path
    ranks: Path


def save_queries(queries: list[EvalQuery], path: Path) -> Path:
    """The validated query set as Parquet (query, targets, the original record as JSON)."""
    import json

    return write_parquet(
        pl.DataFrame(
            {
                "query": [q.query for q in queries],
                "targets": [q.targets for q in queries],
                "record": [json.dumps(q.record, ensure_ascii=False) for q in queries],
            },
            schema={"query": pl.String, "targets": pl.List(pl.String), "record": pl.String},
        ),
        path,
    )


def read_saved_queries(path: Path) -> list[EvalQuery]:
    import json

    return [
        EvalQuery(r["query"], list(r["targets"]), json.loads(r["record"]))
        for r in pl.read_parquet(path).iter_rows(named=True)
    ]


def scored_queries(paths: DataPaths, config: RetrievalEvalConfig) -> list[EvalQuery]:
    """:func:`query_source`'s queries whose condition is in the corpus (an error when none is)."""
    from t0_pipeline.retrieval.retrieve import corpus_slugs

    source = query_source(paths, config)
    queries, left_out = queries_for_corpus(source, config, corpus_slugs(paths))
    if left_out:
        log.warning("%d %s name conditions not in this corpus; left out", left_out, source.label)
    if not queries:
        raise T0Error(
            f"none of the {source.label} ({source.path}) matches this corpus; write synthetic "
            "queries (`t0 synth-queries`) or pass --queries with labels from this corpus."
        )
    return queries


def evaluate_retrieval(
    paths: DataPaths,
    config: RetrievalEvalConfig,
    retrievers: dict[str, Any],
    queries: list[EvalQuery] | None = None,
    out_dir: Path | None = None,
    label: str | None = None,
    rewritten: list[str] | None = None,
) -> RetrievalReport:
    """Score every (index, mode) pair; ``retrievers`` maps index name → Retriever.

    ``queries`` defaults to :func:`query_source`'s set, validated against the corpus. ``rewritten``
    (one text per query, e.g. the agent's search queries) adds a ``<mode>+agent`` row per pair
    scored on those texts.
    """
    source = query_source(paths, config)
    if queries is None:
        queries = scored_queries(paths, config)
        label = label or source.label
    ks = sorted(set(config.ks))
    if rewritten is not None and len(rewritten) != len(queries):
        raise T0Error(
            f"{len(rewritten)} rewritten queries for {len(queries)} queries; they must pair up."
        )
    variants = [("", [q.query for q in queries])]
    if rewritten is not None:
        variants.append(("+agent", rewritten))
    rows, rank_rows = [], []
    for index in config.indexes:
        for base_mode in config.modes:
            for suffix, texts in variants:
                ranked = retrievers[index].rank(texts, max(ks), base_mode)
                ranks = [
                    first_hit_rank([s for s, _ in r], q.targets) for r, q in zip(ranked, queries)
                ]
                row, per_query = _scored(index, base_mode + suffix, queries, ranks, ks)
                rows.append(row)
                rank_rows.extend(per_query)
    title = f"Retrieval p@k, {len(queries)} queries ({label or Path(source.path).name})"
    return _write_report(
        pl.DataFrame(rows),
        rank_rows,
        ks,
        out_dir or paths.retrieval_report_dir,
        title,
        len(queries),
        config,
    )


RANK_SCHEMA = {
    "index": pl.String,
    "mode": pl.String,
    "query": pl.String,
    "targets": pl.List(pl.String),
    "rank": pl.Int32,
}


def _scored(index: str, mode: str, queries: list[EvalQuery], ranks: list, ks: list[int]):
    """(the p@k row of one index and mode, its per-query rank rows)."""
    pk = precision_at_k(ranks, ks)
    log.info("p@k %s/%s: %s", index, mode, ", ".join(f"p@{k}={pk[k]:.3f}" for k in ks))
    row = {"index": index, "mode": mode, "queries": len(queries), **{f"p@{k}": pk[k] for k in ks}}
    per_query = [
        {"index": index, "mode": mode, "query": q.query, "targets": q.targets, "rank": r}
        for q, r in zip(queries, ranks)
    ]
    return row, per_query


def _write_report(
    table: pl.DataFrame,
    rank_rows: list[dict],
    ks: list[int],
    out: Path,
    title: str,
    n_queries: int,
    config: RetrievalEvalConfig,
) -> RetrievalReport:
    """``pk.csv``, ``pk.md``, ``ranks.parquet`` and ``pk.png`` under ``out``."""
    csv = out / "pk.csv"
    with atomic_path(csv) as tmp:
        table.write_csv(tmp)
    md = markdown_table(table, ks)
    with atomic_path(out / "pk.md") as tmp:
        tmp.write_text(md + "\n", encoding="utf-8")
    ranks = pl.DataFrame(rank_rows, schema=RANK_SCHEMA)
    ranks_path = write_parquet(ranks, out / "ranks.parquet")
    png = plot_curves(table, ks, out / "pk.png", title)
    write_config_sidecar(csv, config)
    return RetrievalReport(table, md, n_queries, csv, png, ranks_path)
