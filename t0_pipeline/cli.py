"""The ``t0`` command line: every stage of the corpus → index → retrieval-evaluation half.

Each command reads defaults from :mod:`t0_pipeline.config`, an optional ``--config``
file (JSON/YAML/TOML with any subset of fields), then its own flags. Problems the user
can fix print one line and exit with status 2; nothing already produced is touched.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, PipelineConfig, load_config

app = typer.Typer(
    name="t0",
    help="t0-pipeline: build a retrieval corpus and index from a document collection, and measure retrieval.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataDir = typer.Option(None, "--data-dir", "-d", help="Artefact root (default: $T0_DATA_DIR or ./data).")
ConfigFile = typer.Option(None, "--config", "-c", help="JSON/YAML/TOML file with any PipelineConfig fields.")
IndexOpt = typer.Option("summaries", "--index", "-i", help="Which index: full (whole pages) or summaries.")
ModeOpt = typer.Option("hybrid", "--mode", "-m", help="Retriever: dense (embeddings), bm25 (lexical) or hybrid (RRF of both).")


def _setup(data_dir: Optional[Path], config_file: Optional[Path]) -> tuple[PipelineConfig, DataPaths]:
    logging.basicConfig(level=os.environ.get("T0_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("httpx", "chromadb", "sentence_transformers", "transformers", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return load_config(config_file), DataPaths(data_dir)


def _apply_source(cfg: PipelineConfig, source: Optional[str], location: Optional[str], pages: Optional[Path]) -> None:
    if pages is not None:
        cfg.source.kind, cfg.source.location = "pages", str(pages)
    if source is not None:
        if source not in ("sample", "site", "mirror", "pages"):
            raise T0Error(f"--source must be sample, site, mirror or pages, got {source!r}.")
        cfg.source.kind = source  # type: ignore[assignment]
    if location is not None:
        cfg.source.location = location


def _retriever(cfg: PipelineConfig, paths: DataPaths, index: str):
    from t0_pipeline.retrieve import Retriever

    if index not in ("full", "summaries"):
        raise T0Error(f"--index must be full or summaries, got {index!r}.")
    return Retriever(index, paths, cfg.embedding, cfg.chroma, cfg.retrieval)  # type: ignore[arg-type]


def _check_mode(mode: str) -> None:
    if mode not in ("dense", "bm25", "hybrid"):
        raise T0Error(f"--mode must be dense, bm25 or hybrid, got {mode!r}.")


@app.command()
def crawl(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    source: Optional[str] = typer.Option(None, help="sample (bundled, offline), site (live HTTP), mirror (wget directory) or pages (JSONL/Parquet)."),
    location: Optional[str] = typer.Option(None, help="Index URL for site, directory for mirror, file for pages."),
    delay: Optional[float] = typer.Option(None, help="Seconds between request starts (politeness)."),
    concurrency: Optional[int] = typer.Option(None, help="Requests in flight at once."),
    max_pages: Optional[int] = typer.Option(None, help="Stop after this many conditions (smoke test)."),
    no_robots: bool = typer.Option(False, "--no-robots", help="Ignore robots.txt (only for sites you own)."),
):
    """Fetch every condition page (and its sub-pages) into pages.parquet; re-crawls fetch only what changed."""
    from t0_pipeline.crawl import run_crawl

    cfg, paths = _setup(data_dir, config)
    _apply_source(cfg, source, location, None)
    if delay is not None:
        cfg.source.delay_s = delay
    if concurrency is not None:
        cfg.source.concurrency = concurrency
    if max_pages is not None:
        cfg.source.max_pages = max_pages
    if no_robots:
        cfg.source.respect_robots = False
    _, report = run_crawl(cfg.source, paths)
    typer.echo(f"{report.summary()} → {paths.pages}")
    for failure in report.failed:
        typer.echo(f"  failed: {failure['slug']} ({failure['url']}): {failure['error']}", err=True)


@app.command()
def clean(data_dir: Optional[Path] = DataDir, config: Optional[Path] = ConfigFile):
    """Turn raw pages into the conditions dataset (plain text, one document per condition)."""
    from t0_pipeline.clean import run_clean

    cfg, paths = _setup(data_dir, config)
    conditions, problems = run_clean(paths, cfg.source, cfg.clean)
    typer.echo(f"{conditions.height} documents → {paths.conditions} (+ .jsonl)")
    for problem in problems:
        typer.echo(f"  skipped: {problem}", err=True)


@app.command()
def summarise(data_dir: Optional[Path] = DataDir, config: Optional[Path] = ConfigFile,
              max_words: Optional[int] = typer.Option(None, help="Word budget per summary.")):
    """Summarise every document (extractive by default: symptoms and when to get help)."""
    from t0_pipeline.summarise import run_summarise

    cfg, paths = _setup(data_dir, config)
    if max_words is not None:
        cfg.summary.max_words = max_words
    summaries, info = run_summarise(paths, cfg.summary, cfg.llm)
    typer.echo(f"{summaries.height} summaries ({info['backend']}), mean compression {summaries['compression'].mean():.0%} → {paths.summaries}")
    for slug in info["failures"]:
        typer.echo(f"  failed: {slug} (kept out; re-run to retry)", err=True)


@app.command()
def index(
    pages: Optional[Path] = typer.Option(None, "--pages", help="Pre-scraped pages (.jsonl/.parquet with slug, title, url, text)."),
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    source: Optional[str] = typer.Option(None, help="Corpus source when --pages is not given (default: the bundled sample)."),
    location: Optional[str] = typer.Option(None, help="URL, mirror directory or pages file for --source."),
    model: Optional[str] = typer.Option(None, help="sentence-transformers model name or path (default: bundled all-MiniLM-L6-v2)."),
    chunk_size: Optional[int] = typer.Option(None, help="Tokens per chunk (default: the model's maximum)."),
    distance: Optional[str] = typer.Option(None, help="l2 (report) or cosine."),
    chroma_host: Optional[str] = typer.Option(None, help="Use a Chroma server at this host instead of the embedded store."),
    chroma_port: Optional[int] = typer.Option(None, help="Chroma server port."),
):
    """Build conditions, summaries and every index (dense + BM25, full pages + summaries). Incremental."""
    from t0_pipeline.pipeline import build_all

    cfg, paths = _setup(data_dir, config)
    _apply_source(cfg, source, location, pages)
    if model:
        cfg.embedding.model = model
    if chunk_size:
        cfg.chunk.size = chunk_size
    if distance:
        if distance not in ("l2", "cosine"):
            raise T0Error(f"--distance must be l2 or cosine, got {distance!r}.")
        cfg.chroma.distance = distance  # type: ignore[assignment]
    if chroma_host:
        cfg.chroma.host = chroma_host
    if chroma_port:
        cfg.chroma.port = chroma_port
    result = build_all(cfg, paths)
    typer.echo(f"crawl: {result.crawl}")
    typer.echo(f"{result.documents} documents; summaries {result.compression:.0%} shorter than pages")
    for stats in result.dense.values():
        typer.echo(f"dense {stats.summary()}")
    for name, info in result.bm25.items():
        typer.echo(f"bm25 {name}: {info['documents']} documents")
    for problem in result.problems:
        typer.echo(f"  skipped: {problem}", err=True)


@app.command()
def retrieve(
    queries: Path = typer.Option(..., "--queries", "-q", help="Query file (.jsonl/.json/.parquet)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL: each query's fields + ranked slugs + scores."),
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    index: str = IndexOpt,
    mode: str = ModeOpt,
    query_field: str = typer.Option("query", help="Field holding the query text."),
    k: int = typer.Option(100, help="Documents per query (k counts documents, not chunks)."),
):
    """Write the ranked document list for every query, for any outside scorer."""
    from t0_pipeline.artifacts import read_records
    from t0_pipeline.retrieve import write_ranked

    cfg, paths = _setup(data_dir, config)
    _check_mode(mode)
    n = write_ranked(_retriever(cfg, paths, index), read_records(queries), query_field, k, mode, out)  # type: ignore[arg-type]
    typer.echo(f"{n} queries ranked ({index}, {mode}, k={k}) → {out}")


@app.command("eval-retrieval")
def eval_retrieval(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    queries: Optional[Path] = typer.Option(None, "--queries", "-q", help="Labelled queries (default: bundled sample set)."),
    query_field: Optional[str] = typer.Option(None, help="Field holding the query text (default: query)."),
    target_field: Optional[str] = typer.Option(None, help="Field holding the correct slug or list of slugs (default: condition)."),
    index: Optional[list[str]] = typer.Option(None, "--index", "-i", help="Index to score (repeatable; default both)."),
    mode: Optional[list[str]] = typer.Option(None, "--mode", "-m", help="Mode to score (repeatable; default all three)."),
    ks: Optional[str] = typer.Option(None, help="Comma-separated k values (default 1,5,10,30,50,100)."),
):
    """Print and save the p@k table (CSV, Markdown, PNG) for each index × retriever mode."""
    from t0_pipeline.retrieval_eval import evaluate_retrieval

    cfg, paths = _setup(data_dir, config)
    ev = cfg.retrieval_eval
    if queries:
        ev.queries = queries
    if query_field:
        ev.query_field = query_field
    if target_field:
        ev.target_field = target_field
    if index:
        ev.indexes = index  # type: ignore[assignment]
    if mode:
        for m in mode:
            _check_mode(m)
        ev.modes = mode  # type: ignore[assignment]
    if ks:
        try:
            ev.ks = [int(x) for x in ks.split(",")]
        except ValueError:
            raise T0Error(f"--ks must be comma-separated integers, got {ks!r}.") from None
    retrievers = {name: _retriever(cfg, paths, name) for name in ev.indexes}
    report = evaluate_retrieval(paths, ev, retrievers)
    typer.echo(f"\np@k over {report.n_queries} queries\n\n{report.markdown}\n")
    typer.echo(f"saved {report.csv}, {report.png}")


@app.command()
def query(
    text: str = typer.Argument(..., help="The query, e.g. a patient's description of symptoms."),
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    index: str = IndexOpt,
    mode: str = ModeOpt,
    k: int = typer.Option(5, help="Documents to show."),
    show_text: bool = typer.Option(False, "--text", help="Print each document's text too."),
):
    """Print the top documents for one query, with scores."""
    cfg, paths = _setup(data_dir, config)
    _check_mode(mode)
    hits = _retriever(cfg, paths, index).search(text, k, mode)  # type: ignore[arg-type]
    typer.echo(f"{'rank':>4}  {'score':>9}  slug — title")
    for hit in hits:
        typer.echo(f"{hit.rank:>4}  {hit.score:>9.4f}  {hit.slug} — {hit.title}")
        if show_text:
            typer.echo("      " + hit.text.replace("\n", "\n      ") + "\n")


@app.command()
def report(data_dir: Optional[Path] = DataDir):
    """Print the last retrieval report (p@k table) and the crawl summary."""
    _, paths = _setup(data_dir, None)
    crawl_report = paths.crawl_report
    if crawl_report.exists():
        data = json.loads(crawl_report.read_text())
        typer.echo(f"corpus: {data['conditions']} conditions from {data['source']} "
                   f"({len(data['new'])} new, {len(data['changed'])} changed, {len(data['failed'])} failed)")
    table = paths.retrieval_report_dir / "pk.md"
    if not table.exists():
        raise T0Error(f"no retrieval report in {paths.root}; run `make demo` or `t0 eval-retrieval` first.")
    typer.echo("\nRetrieval p@k (share of queries whose condition is in the top k documents)\n")
    typer.echo(table.read_text())
    typer.echo(f"plot: {paths.retrieval_report_dir / 'pk.png'}")


@app.command("config")
def show_config(config: Optional[Path] = ConfigFile):
    """Print the resolved configuration (defaults + --config file) as JSON."""
    typer.echo(load_config(config).model_dump_json(indent=2))


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv)
    except T0Error as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)


def run_stage(command: str) -> None:
    """``python -m t0_pipeline.<stage> [options]`` runs ``t0 <command> [options]`` (for Slurm nodes and scripts)."""
    main([command, *sys.argv[1:]])


if __name__ == "__main__":
    main()
