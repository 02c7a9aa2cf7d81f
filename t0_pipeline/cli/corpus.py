"""Corpus and retrieval commands: crawl, clean, summarise, index, retrieve, query, eval-retrieval,
tune-retriever, report."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Optional

import typer

from t0_pipeline.artifacts import T0Error
from t0_pipeline.cli.common import (
    ConfigFile,
    DataDir,
    IndexOpt,
    ModeOpt,
    SetOpt,
    app,
    at_least,
    check_mode,
    int_list,
    open_retriever,
    query_text,
    role_flags,
    serve_roles,
    setup,
    source_flags,
)


@app.command()
def crawl(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    source: Optional[str] = typer.Option(
        None,
        help="sample (bundled, offline), site (live HTTP), mirror (wget directory), pages "
        "(JSONL/Parquet) or documents (a folder of PDF, DOCX, HTML, Markdown and text files).",
    ),
    location: Optional[str] = typer.Option(
        None,
        help="Index URL for site, directory for mirror, file for pages, folder for documents.",
    ),
    delay: Optional[float] = typer.Option(
        None, help="Seconds between request starts (politeness)."
    ),
    concurrency: Optional[int] = typer.Option(None, help="Requests in flight at once."),
    max_pages: Optional[int] = typer.Option(
        None,
        help="Crawl at most this many conditions (default 5000; a smaller number for a smoke "
        "test).",
    ),
    no_robots: bool = typer.Option(
        False, "--no-robots", help="Ignore robots.txt (only for sites you own)."
    ),
    sets: Optional[list[str]] = SetOpt,
):
    """Fetch every condition page (and its sub-pages) into pages.parquet.

    A re-crawl fetches only what changed (ETags, Last-Modified).
    """
    from t0_pipeline.corpus.crawl import run_crawl

    cfg, paths = setup(
        data_dir,
        config,
        sets=sets,
        flags={
            **source_flags(source, location, None),
            "source.delay_s": delay,
            "source.concurrency": concurrency,
            "source.max_pages": max_pages,
            "source.respect_robots": False if no_robots else None,
        },
    )
    _, report = run_crawl(cfg.source, paths)
    typer.echo(f"{report.summary()} → {paths.pages}")
    for failure in report.failed:
        typer.echo(f"  failed: {failure['slug']} ({failure['url']}): {failure['error']}", err=True)
    if cfg.source.kind == "documents" and report.failed:
        typer.echo(
            f"  {len(report.failed)} file(s) skipped; a file that was read before keeps its "
            "previous text",
            err=True,
        )


@app.command()
def clean(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    sets: Optional[list[str]] = SetOpt,
):
    """Turn raw pages into the conditions dataset (plain text, one document per condition)."""
    from t0_pipeline.corpus.clean import run_clean

    cfg, paths = setup(data_dir, config, sets=sets)
    conditions, problems = run_clean(paths, cfg.source, cfg.clean)
    typer.echo(f"{conditions.height} documents → {paths.conditions} (+ .jsonl)")
    for problem in problems:
        typer.echo(f"  skipped: {problem}", err=True)


@app.command()
def summarise(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    max_words: Optional[int] = typer.Option(None, help="Word budget per summary (extractive)."),
    backend: Optional[str] = typer.Option(
        None, help="extractive (offline default) or llm (role 'summariser')."
    ),
    model: Optional[str] = typer.Option(
        None, help="Override the summariser role's model (litellm string)."
    ),
    api_base: Optional[str] = typer.Option(None, help="Override the summariser role's endpoint."),
    sets: Optional[list[str]] = SetOpt,
):
    """Summarise every document: symptoms and when/where to get help.

    Pages whose text is unchanged reuse their summary.
    """
    from t0_pipeline.synthetic.summarise import run_summarise

    cfg, paths = setup(
        data_dir,
        config,
        sets=sets,
        flags={
            "summary.max_words": max_words,
            "summary.backend": backend,
            **role_flags("summariser", model, api_base),
        },
    )
    with (
        serve_roles(cfg, paths, "summariser")
        if cfg.summary.backend == "llm"
        else contextlib.nullcontext(cfg) as cfg
    ):
        summaries, info = run_summarise(paths, cfg.summary, cfg.llm, prompts=cfg.prompts)
    typer.echo(
        f"{summaries.height} summaries ({info['backend']}), mean compression "
        f"{summaries['compression'].mean():.0%} → {paths.summaries}"
    )
    for slug in info["failures"]:
        typer.echo(f"  failed: {slug} (kept out; re-run to retry)", err=True)


@app.command()
def index(
    pages: Optional[Path] = typer.Option(
        None, "--pages", help="Pre-scraped pages (.jsonl/.parquet with slug, title, url, text)."
    ),
    documents: Optional[Path] = typer.Option(
        None,
        "--documents",
        help="A folder of PDF, DOCX, HTML, Markdown and text files: one document per file "
        "(unreadable files are skipped and named).",
    ),
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    source: Optional[str] = typer.Option(
        None, help="Corpus source when --pages is not given (default: the bundled sample)."
    ),
    location: Optional[str] = typer.Option(
        None, help="URL, mirror directory or pages file for --source."
    ),
    model: Optional[str] = typer.Option(
        None, help="sentence-transformers model name or path (default: bundled all-MiniLM-L6-v2)."
    ),
    chunk_size: Optional[int] = typer.Option(
        None, help="Tokens per chunk (default: the model's maximum)."
    ),
    distance: Optional[str] = typer.Option(None, help="l2 (report) or cosine."),
    chroma_host: Optional[str] = typer.Option(
        None, help="Use a Chroma server at this host instead of the embedded store."
    ),
    chroma_port: Optional[int] = typer.Option(None, help="Chroma server port."),
    expand_from: Optional[Path] = typer.Option(
        None,
        "--expand-from",
        help="Index each document with the queries written for it in this file (query + slug or "
        "condition): document expansion. With expansion.enabled and no file, the synthetic "
        "training split.",
    ),
    sets: Optional[list[str]] = SetOpt,
):
    """Build conditions, summaries and every index (dense + BM25, full pages + summaries).

    Incremental: only changed documents are re-embedded. Each stage it runs (crawl or read,
    clean, summarise, index) is logged as it starts and ends.
    """
    from t0_pipeline.corpus_to_index import build_all

    cfg, paths = setup(
        data_dir,
        config,
        sets=sets,
        flags={
            **source_flags(source, location, pages, documents),
            "embedding.model": model or None,
            "chunk.size": chunk_size or None,
            "chroma.distance": distance or None,
            "chroma.host": chroma_host or None,
            "chroma.port": chroma_port or None,
            "expansion.enabled": True if expand_from else None,
            "expansion.source": str(expand_from) if expand_from else None,
        },
    )
    result = build_all(cfg, paths)
    typer.echo(f"crawl: {result.crawl}")
    for failure in result.failed:
        typer.echo(f"  skipped: {failure['url']}: {failure['error']}", err=True)
    typer.echo(
        f"{result.documents} documents; summaries {result.compression:.0%} shorter than pages"
    )
    for stats in result.dense.values():
        typer.echo(f"dense {stats.summary()}")
    for name, info in result.bm25.items():
        typer.echo(f"bm25 {name}: {info['documents']} documents")
    for problem in result.problems:
        typer.echo(f"  skipped: {problem}", err=True)


@app.command()
def retrieve(
    queries: Path = typer.Option(
        ..., "--queries", "-q", help="Query file (.jsonl/.json/.parquet)."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output JSONL: each query's fields + ranked slugs + scores."
    ),
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    index: str = IndexOpt,
    mode: str = ModeOpt,
    query_field: str = typer.Option("query", help="Field holding the query text."),
    k: int = typer.Option(100, help="Documents per query (k counts documents, not chunks)."),
    sets: Optional[list[str]] = SetOpt,
):
    """Write the ranked document list for every query, for any outside scorer."""
    from t0_pipeline.artifacts import read_records
    from t0_pipeline.retrieval.retrieve import write_ranked

    at_least(k, 1, "--k")
    cfg, paths = setup(data_dir, config, sets=sets)
    check_mode(mode)
    n = write_ranked(
        open_retriever(cfg, paths, index), read_records(queries), query_field, k, mode, out
    )  # type: ignore[arg-type]
    typer.echo(f"{n} queries ranked ({index}, {mode}, k={k}) → {out}")


_EVAL_RETRIEVAL_QUERIES = typer.Option(
    None, "--queries", "-q", help="Labelled queries (default: bundled sample set)."
)
_EVAL_RETRIEVAL_QUERY_FIELD = typer.Option(
    None, help="Field holding the query text (default: query)."
)
_EVAL_RETRIEVAL_TARGET_FIELD = typer.Option(
    None, help="Field holding the correct slug or list of slugs (default: condition)."
)
_EVAL_RETRIEVAL_INDEX = typer.Option(
    None, "--index", "-i", help="Index to score (repeatable; default both)."
)
_EVAL_RETRIEVAL_MODE = typer.Option(
    None, "--mode", "-m", help="Mode to score (repeatable; default all three)."
)
_EVAL_RETRIEVAL_KS = typer.Option(None, help="Comma-separated k values (default 1,5,10,30,50,100).")
_EVAL_RETRIEVAL_REWRITE_WITH = typer.Option(
    None,
    help="A serve profile: also score each query as its agent rewrites it into a search query "
    "(rows '<mode>+agent').",
)


@app.command("eval-retrieval")
def eval_retrieval(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    queries: Optional[Path] = _EVAL_RETRIEVAL_QUERIES,
    query_field: Optional[str] = _EVAL_RETRIEVAL_QUERY_FIELD,
    target_field: Optional[str] = _EVAL_RETRIEVAL_TARGET_FIELD,
    index: Optional[list[str]] = _EVAL_RETRIEVAL_INDEX,
    mode: Optional[list[str]] = _EVAL_RETRIEVAL_MODE,
    ks: Optional[str] = _EVAL_RETRIEVAL_KS,
    rewrite_with: Optional[str] = _EVAL_RETRIEVAL_REWRITE_WITH,
    sets: Optional[list[str]] = SetOpt,
):
    """Print and save the p@k table (CSV, Markdown, PNG) for each index × retriever mode."""
    from t0_pipeline.retrieval.evaluate import evaluate_retrieval, scored_queries

    for m in mode or []:
        check_mode(m)
    cfg, paths = setup(
        data_dir,
        config,
        sets=sets,
        flags={
            "retrieval_eval.queries": queries or None,
            "retrieval_eval.query_field": query_field or None,
            "retrieval_eval.target_field": target_field or None,
            "retrieval_eval.indexes": index or None,
            "retrieval_eval.modes": mode or None,
            "retrieval_eval.ks": int_list(ks, "--ks", "1,5,10") if ks else None,
            "retrieval_eval.rewrite_with": rewrite_with or None,
        },
    )
    ev = cfg.retrieval_eval
    retrievers = {name: open_retriever(cfg, paths, name) for name in ev.indexes}
    rewritten = None
    if ev.rewrite_with:
        from t0_pipeline.llm.cache import LLMCache
        from t0_pipeline.serve.agent_search import agent_search_queries, search_query_roles

        queries_list = scored_queries(paths, ev)
        with serve_roles(cfg, paths, *search_query_roles(cfg, ev.rewrite_with)) as served:
            rewritten, counts = agent_search_queries(
                served,
                ev.rewrite_with,
                [q.query for q in queries_list],
                LLMCache(paths.llm_cache(served.llm)),
            )
        typer.echo(
            f"agent search queries: {counts['rewritten']} rewritten, {counts['kept']} kept as "
            f"written, {counts['failed']} failed (kept as written)"
        )
        report = evaluate_retrieval(paths, ev, retrievers, queries_list, rewritten=rewritten)
    else:
        report = evaluate_retrieval(paths, ev, retrievers)
    typer.echo(f"\np@k over {report.n_queries} queries\n\n{report.markdown}\n")
    typer.echo(f"saved {report.csv}, {report.png}")


@app.command("tune-retriever")
def tune_retriever(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    epochs: Optional[float] = typer.Option(
        None, help="Passes over the training pairs (default: retriever_tune.epochs)."
    ),
    reindex: bool = typer.Option(
        True, help="Rebuild the dense indexes with whichever embedder is now in use."
    ),
    sets: Optional[list[str]] = SetOpt,
):
    """Fine-tune the embedder on the synthetic training queries; use it if it retrieves better.

    p@k on the evaluation split before and after is printed; the dense indexes are rebuilt
    with whichever embedder is then in use.
    """
    from t0_pipeline.retrieval.tune import run_tune

    flags = {"retriever_tune.epochs": epochs or None}
    base_cfg, paths = setup(data_dir, config, tuned=False, sets=sets, flags=flags)
    result = run_tune(
        base_cfg.retriever_tune, base_cfg.retrieval_eval, base_cfg.embedding, paths, typer.echo
    )
    typer.echo(result.table())
    typer.echo(
        f"{result.pairs} pairs, {result.steps} steps, {result.seconds:.0f} s; "
        + (f"in use: {result.model_dir}" if result.used else "kept the current embedder")
    )
    if reindex:
        from t0_pipeline.corpus_to_index import build_indexes

        cfg, _ = setup(data_dir, config, sets=sets, flags=flags)
        dense, _ = build_indexes(cfg, paths)
        for stats in dense.values():
            typer.echo(f"dense {stats.summary()}")


@app.command()
def query(
    text: str = typer.Argument(..., help="The query, e.g. a patient's description of symptoms."),
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    index: str = IndexOpt,
    mode: str = ModeOpt,
    k: int = typer.Option(5, help="Documents to show."),
    show_text: bool = typer.Option(False, "--text", help="Print each document's text too."),
    sets: Optional[list[str]] = SetOpt,
):
    """Print the top documents for one query, with scores."""
    query_text(text)
    at_least(k, 1, "--k")
    cfg, paths = setup(data_dir, config, sets=sets)
    check_mode(mode)
    hits = open_retriever(cfg, paths, index).search(text, k, mode)  # type: ignore[arg-type]
    typer.echo(f"{'rank':>4}  {'score':>9}  slug — title")
    for hit in hits:
        typer.echo(f"{hit.rank:>4}  {hit.score:>9.4f}  {hit.slug} — {hit.title}")
        if show_text:
            typer.echo("      " + hit.text.replace("\n", "\n      ") + "\n")


@app.command()
def report(data_dir: Optional[Path] = DataDir):
    """Print the last retrieval report (p@k table) and the crawl summary."""
    _, paths = setup(data_dir, None)
    crawl_report = paths.crawl_report
    if crawl_report.exists():
        data = json.loads(crawl_report.read_text())
        typer.echo(
            f"corpus: {data['conditions']} conditions from {data['source']} "
            f"({len(data['new'])} new, {len(data['changed'])} changed, {len(data['failed'])} "
            "failed)"
        )
    table = paths.retrieval_report_dir / "pk.md"
    if not table.exists():
        raise T0Error(
            f"no retrieval report in {paths.root}; run `make demo` or `t0 eval-retrieval` first."
        )
    typer.echo("\nRetrieval p@k (share of queries whose own document is in the top k)\n")
    typer.echo(table.read_text())
    typer.echo(f"plot: {paths.retrieval_report_dir / 'pk.png'}")
