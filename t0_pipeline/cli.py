"""The ``t0`` command line: one command per pipeline stage, from crawling to evaluation.

Each command reads defaults from :mod:`t0_pipeline.config`, an optional ``--config``
file (JSON/YAML/TOML with any subset of fields), ``T0_<SECTION>__<FIELD>`` variables, then
the command line: ``--set section.field=value`` (any setting, repeatable) and the command's
own flags, which are shorthands for settings (``t0 index --chunk-size 128`` is
``--set chunk.size=128``) and go through the same validation. Problems the user can fix
print one line and exit with status 2; nothing already produced is touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import (
    DataPaths,
    PipelineConfig,
    load_config,
    with_base_models,
    with_local_models,
)

app = typer.Typer(
    name="t0",
    help="t0-pipeline: corpus, index and retrieval evaluation; synthetic queries and teacher "
    "traces; student fine-tuning; accuracy evaluation; serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataDir = typer.Option(
    None, "--data-dir", "-d", help="Artefact root (default: $T0_DATA_DIR or ./data)."
)
ConfigFile = typer.Option(
    None,
    "--config",
    "-c",
    help="JSON/YAML/TOML file with any subset of the settings (merged "
    "into the defaults field by field; T0_<SECTION>__<FIELD> variables go on top).",
)
IndexOpt = typer.Option(
    "summaries",
    "--index",
    "-i",
    help="Which index: full (whole pages), summaries or llm_summaries.",
)
ModeOpt = typer.Option(
    "hybrid",
    "--mode",
    "-m",
    help="Retriever: dense (embeddings), bm25 (lexical) or hybrid (RRF of both).",
)
SetOpt = typer.Option(
    None,
    "--set",
    help="Any setting for this run: section.field=value (repeatable; the value is "
    "read as YAML, so 5, true, null and [a, b] work). `t0 config` lists the settings.",
)


def _put(tree: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        child = tree.setdefault(part, {})
        if not isinstance(child, dict):
            raise T0Error(
                f"--set {dotted}: {part} was given a value already, so it cannot hold settings too."
            )
        tree = child
    tree[last] = value


def command_line_settings(
    sets: Optional[list[str]], flags: Optional[dict[str, Any]] = None
) -> dict:
    """The command line's settings as one nested layer: each ``--set section.field=value``, then
    every flag given (``flags`` maps a dotted setting to the flag's value; None = not given)."""
    import yaml

    tree: dict = {}
    for item in sets or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or "" in key.split("."):
            raise T0Error(f"--set {item!r}: write section.field=value, e.g. --set chunk.size=128.")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw  # not YAML: the text as it is
        _put(tree, key, value)
    for dotted, value in (flags or {}).items():
        if value is not None:
            _put(tree, dotted, str(value) if isinstance(value, Path) else value)
    return tree


def _setup(
    data_dir: Optional[Path],
    config_file: Optional[Path],
    tuned: bool = True,
    sets: Optional[list[str]] = None,
    flags: Optional[dict[str, Any]] = None,
) -> tuple[PipelineConfig, DataPaths]:
    """Logging, the data folder and the settings: defaults ← file ← environment ← command line."""
    logging.basicConfig(
        level=os.environ.get("T0_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "chromadb", "sentence_transformers", "transformers", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    paths = DataPaths(data_dir)
    if paths.root.exists() and not paths.root.is_dir():
        raise T0Error(
            f"data directory {paths.root} is a file; pass a directory with --data-dir (or "
            "$T0_DATA_DIR)."
        )
    cfg = load_config(
        config_file, overrides=command_line_settings(sets, flags), overrides_from="command line"
    )
    return (with_local_models(cfg, paths) if tuned else with_base_models(cfg, paths)), paths


def _served(cfg: PipelineConfig, paths: DataPaths, *roles: str):
    """``cfg`` with each of ``roles`` that has a serve section pointed at a model server started on
    this machine for the block (one per distinct model)."""
    from t0_pipeline.model_server import local_servers, roles_served

    return roles_served(cfg, list(roles), paths, local_servers(cfg.servers, paths, typer.echo))


def _source_flags(
    source: Optional[str], location: Optional[str], pages: Optional[Path]
) -> dict[str, Any]:
    """--pages FILE is --source pages --location FILE."""
    if pages is not None:
        return {"source.kind": "pages", "source.location": str(pages)}
    return {"source.kind": source, "source.location": location}


def _role_flags(role: str, model: Optional[str], api_base: Optional[str]) -> dict[str, Any]:
    """A role's model and endpoint; an endpoint given here is a server already running there (none
    is started)."""
    return {
        f"llm.roles.{role}.model": model or None,
        f"llm.roles.{role}.api_base": api_base or None,
    }


def _retriever(cfg: PipelineConfig, paths: DataPaths, index: str):
    from t0_pipeline.retrieve import Retriever

    if index not in ("full", "summaries", "llm_summaries"):
        raise T0Error(f"--index must be full, summaries or llm_summaries, got {index!r}.")
    return Retriever(index, paths, cfg.embedding, cfg.chroma, cfg.retrieval)  # type: ignore[arg-type]


def _check_mode(mode: str) -> None:
    if mode not in ("dense", "bm25", "hybrid"):
        raise T0Error(f"--mode must be dense, bm25 or hybrid, got {mode!r}.")


@app.command()
def crawl(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    source: Optional[str] = typer.Option(
        None,
        help="sample (bundled, offline), site (live HTTP), mirror (wget directory) or pages "
        "(JSONL/Parquet).",
    ),
    location: Optional[str] = typer.Option(
        None, help="Index URL for site, directory for mirror, file for pages."
    ),
    delay: Optional[float] = typer.Option(
        None, help="Seconds between request starts (politeness)."
    ),
    concurrency: Optional[int] = typer.Option(None, help="Requests in flight at once."),
    max_pages: Optional[int] = typer.Option(
        None,
        help="Crawl at most this many conditions (default 5000; a "
        "smaller number for a smoke test).",
    ),
    no_robots: bool = typer.Option(
        False, "--no-robots", help="Ignore robots.txt (only for sites you own)."
    ),
    sets: Optional[list[str]] = SetOpt,
):
    """Fetch every condition page (and its sub-pages) into pages.parquet; re-crawls fetch only what
    changed."""
    from t0_pipeline.crawl import run_crawl

    cfg, paths = _setup(
        data_dir,
        config,
        sets=sets,
        flags={
            **_source_flags(source, location, None),
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


@app.command()
def clean(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    sets: Optional[list[str]] = SetOpt,
):
    """Turn raw pages into the conditions dataset (plain text, one document per condition)."""
    from t0_pipeline.clean import run_clean

    cfg, paths = _setup(data_dir, config, sets=sets)
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
    """Summarise every document: symptoms and when/where to get help. Unchanged pages reuse their
    summary."""
    from t0_pipeline.summarise import run_summarise

    cfg, paths = _setup(
        data_dir,
        config,
        sets=sets,
        flags={
            "summary.max_words": max_words,
            "summary.backend": backend,
            **_role_flags("summariser", model, api_base),
        },
    )
    with (
        _served(cfg, paths, "summariser")
        if cfg.summary.backend == "llm"
        else contextlib.nullcontext(cfg) as cfg
    ):
        summaries, info = run_summarise(paths, cfg.summary, cfg.llm)
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
    sets: Optional[list[str]] = SetOpt,
):
    """Build conditions, summaries and every index (dense + BM25, full pages + summaries).
    Incremental: each stage it runs (crawl or read, clean, summarise, index) is logged as it
    starts."""
    from t0_pipeline.pipeline import build_all

    cfg, paths = _setup(
        data_dir,
        config,
        sets=sets,
        flags={
            **_source_flags(source, location, pages),
            "embedding.model": model or None,
            "chunk.size": chunk_size or None,
            "chroma.distance": distance or None,
            "chroma.host": chroma_host or None,
            "chroma.port": chroma_port or None,
        },
    )
    result = build_all(cfg, paths)
    typer.echo(f"crawl: {result.crawl}")
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
    from t0_pipeline.retrieve import write_ranked

    cfg, paths = _setup(data_dir, config, sets=sets)
    _check_mode(mode)
    n = write_ranked(
        _retriever(cfg, paths, index), read_records(queries), query_field, k, mode, out
    )  # type: ignore[arg-type]
    typer.echo(f"{n} queries ranked ({index}, {mode}, k={k}) → {out}")


@app.command("eval-retrieval")
def eval_retrieval(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    queries: Optional[Path] = typer.Option(
        None, "--queries", "-q", help="Labelled queries (default: bundled sample set)."
    ),
    query_field: Optional[str] = typer.Option(
        None, help="Field holding the query text (default: query)."
    ),
    target_field: Optional[str] = typer.Option(
        None, help="Field holding the correct slug or list of slugs (default: condition)."
    ),
    index: Optional[list[str]] = typer.Option(
        None, "--index", "-i", help="Index to score (repeatable; default both)."
    ),
    mode: Optional[list[str]] = typer.Option(
        None, "--mode", "-m", help="Mode to score (repeatable; default all three)."
    ),
    ks: Optional[str] = typer.Option(
        None, help="Comma-separated k values (default 1,5,10,30,50,100)."
    ),
    rewrite_with: Optional[str] = typer.Option(
        None,
        help="A serve profile: also score each query as its agent "
        "rewrites it into a search query (rows '<mode>+agent').",
    ),
    sets: Optional[list[str]] = SetOpt,
):
    """Print and save the p@k table (CSV, Markdown, PNG) for each index × retriever mode."""
    from t0_pipeline.retrieval_eval import evaluate_retrieval, scored_queries

    for m in mode or []:
        _check_mode(m)
    cfg, paths = _setup(
        data_dir,
        config,
        sets=sets,
        flags={
            "retrieval_eval.queries": queries or None,
            "retrieval_eval.query_field": query_field or None,
            "retrieval_eval.target_field": target_field or None,
            "retrieval_eval.indexes": index or None,
            "retrieval_eval.modes": mode or None,
            "retrieval_eval.ks": _int_list(ks, "--ks", "1,5,10") if ks else None,
            "retrieval_eval.rewrite_with": rewrite_with or None,
        },
    )
    ev = cfg.retrieval_eval
    retrievers = {name: _retriever(cfg, paths, name) for name in ev.indexes}
    rewritten = None
    if ev.rewrite_with:
        from t0_pipeline.llm import LLMCache
        from t0_pipeline.serve.agent import agent_search_queries, search_query_roles

        queries_list = scored_queries(paths, ev)
        with _served(cfg, paths, *search_query_roles(cfg, ev.rewrite_with)) as served:
            rewritten, counts = agent_search_queries(
                served,
                ev.rewrite_with,
                [q.query for q in queries_list],
                LLMCache(paths.llm_cache(served.llm)),
            )
        typer.echo(
            f"agent search queries: {counts['rewritten']} rewritten, {counts['kept']} kept as "
            "written, "
            f"{counts['failed']} failed (kept as written)"
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
    """Fine-tune the embedder on the synthetic training queries; use it when it retrieves better on
    the evaluation split (p@k before/after printed), then re-index."""
    from t0_pipeline.tune_retriever import run_tune

    flags = {"retriever_tune.epochs": epochs or None}
    base_cfg, paths = _setup(data_dir, config, tuned=False, sets=sets, flags=flags)
    result = run_tune(base_cfg, paths, log_fn=typer.echo)
    typer.echo(result.table())
    typer.echo(
        f"{result.pairs} pairs, {result.steps} steps, {result.seconds:.0f} s; "
        + (f"in use: {result.model_dir}" if result.used else "kept the current embedder")
    )
    if reindex:
        from t0_pipeline.pipeline import build_indexes

        cfg, _ = _setup(data_dir, config, sets=sets, flags=flags)
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
    cfg, paths = _setup(data_dir, config, sets=sets)
    _check_mode(mode)
    hits = _retriever(cfg, paths, index).search(text, k, mode)  # type: ignore[arg-type]
    typer.echo(f"{'rank':>4}  {'score':>9}  slug — title")
    for hit in hits:
        typer.echo(f"{hit.rank:>4}  {hit.score:>9.4f}  {hit.slug} — {hit.title}")
        if show_text:
            typer.echo("      " + hit.text.replace("\n", "\n      ") + "\n")


def _int_list(text: str, flag: str, example: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise T0Error(
            f"{flag} must be comma-separated integers such as {example}; got {text!r}."
        ) from None


def _usage_line(usage: dict) -> str:
    return (
        f"calls {usage['completed']}, cache hits {usage['cache_hits']}, retries "
        f"{usage['retries']}, "
        f"failed {usage['failures']}, tokens "
        f"{usage['prompt_tokens']}+{usage['completion_tokens']}, "
        f"cost ${usage['cost']:.4f}"
    )


@app.command("synth-queries")
def synth_queries(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    n_eval: Optional[int] = typer.Option(None, help="Evaluation queries (default 1000)."),
    n_train: Optional[int] = typer.Option(None, help="Training queries (default 2000)."),
    seed: Optional[int] = typer.Option(None, help="Seed for the balanced draws."),
    model: Optional[str] = typer.Option(None, help="Override the query_writer role's model."),
    api_base: Optional[str] = typer.Option(None, help="Override the query_writer role's endpoint."),
    sets: Optional[list[str]] = SetOpt,
):
    """Write synthetic patient queries (eval + train, no shared (condition, disposition) pair).
    Resumable."""
    from t0_pipeline.synth import run_generate_queries

    cfg, paths = _setup(
        data_dir,
        config,
        sets=sets,
        flags={
            "queries.n_eval": n_eval,
            "queries.n_train": n_train,
            "queries.seed": seed,
            **_role_flags("query_writer", model, api_base),
        },
    )
    with _served(cfg, paths, "query_writer") as cfg:
        eval_df, train_df, info = run_generate_queries(paths, cfg.queries, cfg.llm)
    for split, df in (("eval", eval_df), ("train", train_df)):
        r = info[split]
        typer.echo(
            f"{split}: {df.height}/{r['requested']} queries, {r['refusals']} refusals, "
            f"{len(r['failures'])} failed, {r['removed_overlaps']} overlaps removed → "
            f"{paths.synthetic_queries(split)}"
        )
    typer.echo(_usage_line(info["usage"]))


@app.command()
def traces(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    k: Optional[int] = typer.Option(None, help="Summaries retrieved per query (default 5)."),
    mode: Optional[str] = typer.Option(None, help="Retriever mode (default dense)."),
    keep: Optional[str] = typer.Option(None, help="Filter: all, parsable or correct."),
    model: Optional[str] = typer.Option(None, help="Override the teacher role's model."),
    api_base: Optional[str] = typer.Option(None, help="Override the teacher role's endpoint."),
    sets: Optional[list[str]] = SetOpt,
):
    """Collect the teacher's reasoning traces over retrieved summaries for the training queries.
    Resumable."""
    from t0_pipeline.traces import run_traces

    cfg, paths = _setup(
        data_dir,
        config,
        sets=sets,
        flags={
            "traces.k": k,
            "traces.mode": mode,
            "traces.keep": keep,
            **_role_flags("teacher", model, api_base),
        },
    )
    retriever = _retriever(cfg, paths, cfg.traces.index)
    with _served(cfg, paths, "teacher") as cfg:
        df, stats = run_traces(paths, cfg.traces, cfg.llm, retriever)
    typer.echo(
        f"{stats['traces']} traces, {stats['kept']} kept ({cfg.traces.keep}); parsable "
        f"{stats['parsable_rate']:.0%}, "
        f"condition accuracy {stats['condition_accuracy']:.0%}, disposition accuracy "
        f"{stats['disposition_accuracy']:.0%} "
        f"→ {paths.traces}"
    )
    typer.echo(_usage_line(stats["usage"]))


@app.command()
def sft(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    tokenizer: Optional[str] = typer.Option(
        None, help="Student tokenizer name or path (its chat template renders the text)."
    ),
    block_size: Optional[int] = typer.Option(
        None, help="Maximum tokens per example (default 32768)."
    ),
    sets: Optional[list[str]] = SetOpt,
):
    """Turn kept traces into chat examples for fine-tuning (Parquet + dataset card)."""
    from t0_pipeline.sft import run_sft

    cfg, paths = _setup(
        data_dir,
        config,
        sets=sets,
        flags={"sft.tokenizer": tokenizer, "sft.block_size": block_size},
    )
    df, stats = run_sft(paths, cfg.sft, cfg.llm.prompts_dir, cfg.chat_format)
    typer.echo(
        f"{stats['examples']} examples from {stats['kept_traces']} kept traces; tokens mean "
        f"{stats['tokens_mean']}, "
        f"max {stats['tokens_max']}; {stats['dropped_overlong']} dropped over "
        f"{stats['block_size']} → {paths.sft_dir}"
    )


@app.command("base-models")
def base_models(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    sets: Optional[list[str]] = SetOpt,
):
    """Make the local checkpoints named in base_models (the bundled SmolLM2 converted, folders
    linked, hub names downloaded when online) under <data>/models/; other settings name them by
    their entry's name."""
    from t0_pipeline.base_models import materialise_all

    cfg, paths = _setup(data_dir, config, sets=sets)
    if not cfg.base_models:
        typer.echo(
            "no base_models configured; add e.g. base_models: {smollm2-135m-instruct: "
            "'bundled:smollm2-135m-instruct'} to the config."
        )
        return
    for info in materialise_all(cfg.base_models, paths, typer.echo):
        typer.echo(
            f"{info['name']}: {'made' if info['made'] else 'up to date'} from {info['source']} "
            f"({info['bytes'] / 1e6:.0f} MB) → {info['path']}"
        )


@app.command()
def train(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    model: Optional[str] = typer.Option(
        None,
        help="Base model name or local path (default: the partition's entry in "
        "train.sizes, else Qwen/Qwen2.5-1.5B-Instruct).",
    ),
    dataset: Optional[Path] = typer.Option(
        None, help="SFT Parquet (default <data>/synthetic/sft/train.parquet)."
    ),
    output_dir: Optional[Path] = typer.Option(
        None, help="Where checkpoints/, final/, logs/ and metrics.json go."
    ),
    partition: str = typer.Option(
        "default", help="Partition key (model size) used in the default output path."
    ),
    max_steps: Optional[int] = typer.Option(
        None, help="Stop after this many optimizer steps (smoke tests)."
    ),
    deepspeed: Optional[str] = typer.Option(
        None,
        help="auto (ZeRO-3 when several processes train all weights), "
        "zero3, zero3_offload, a JSON path, or none.",
    ),
    lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters instead of all weights."),
    sets: Optional[list[str]] = SetOpt,
):
    """Fine-tune a student on the SFT dataset (loss on the assistant turn only); resumes after
    preemption.

    One process, or one per GPU under torchrun (as the Slurm job script runs it).
    Reports to Dagster through Pipes when Dagster started it.
    """
    from t0_pipeline.train import rank, run_train
    from t0_pipeline.train_report import dagster_reporter

    cfg, paths = _setup(
        data_dir,
        config,
        sets=sets,
        flags={
            "train.model": model,
            "train.dataset": dataset,
            "train.output_dir": output_dir,
            "train.max_steps": max_steps,
            "train.deepspeed": deepspeed,
            "train.lora.enabled": True if lora else None,
        },
    )
    t = cfg.train
    if model is None and partition in t.sizes:
        t.model = t.sizes[partition]
    elif model in cfg.base_models:  # a base_models entry's name stands for its folder
        t.model = str(paths.base_model(model).resolve())
    with dagster_reporter() as report:
        report.info(f"training {t.model} for partition {partition}")
        result = run_train(paths, t, partition, callbacks=report.callbacks())
        report.finished(result, t)
    if rank() != 0:
        return
    if result.preempted:
        typer.echo(f"stopped at step {result.global_step} with a checkpoint; run again to resume")
        return
    last = result.eval_loss[-1][1] if result.eval_loss else float("nan")
    typer.echo(
        f"{result.global_step} steps on {result.train_examples} examples (held out "
        f"{result.eval_examples}) "
        f"by {result.world_size} process(es), DeepSpeed {result.deepspeed or 'off'}; train loss "
        f"{result.train_loss[0][1]:.3f} → {result.train_loss[-1][1]:.3f}, held-out {last:.3f} → "
        f"{result.final_dir}"
    )


@app.command()
def sbatch(
    site: str = typer.Option(
        ..., help="Site profile (baskerville, isambard-ai, or one in --profiles-dir)."
    ),
    size: str = typer.Option(
        ..., help="Student size, a key of the profile's sizes and of train.sizes (e.g. 7B)."
    ),
    config: Optional[Path] = ConfigFile,
    data_dir: Optional[Path] = DataDir,
    account: Optional[str] = typer.Option(
        None,
        envvar="T0_SLURM_ACCOUNT",
        help="Project the job is charged to (required on Baskerville and Isambard-AI).",
    ),
    partition: Optional[str] = typer.Option(None, help="Slurm partition (default: the profile's)."),
    qos: Optional[str] = typer.Option(
        None, help="Slurm QoS (default: the profile's; per project on Baskerville)."
    ),
    profiles_dir: Optional[Path] = typer.Option(
        None, help="Folder of your own site profiles (<site>.yaml)."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Write the script here instead of printing it."
    ),
    deepspeed: Optional[str] = typer.Option(
        None,
        help="auto (ZeRO-3 when several GPUs train all weights), zero3, "
        "zero3_offload, a path on the cluster, or none "
        "(default: train.deepspeed).",
    ),
    sets: Optional[list[str]] = SetOpt,
):
    """Render the training job script for one student size on one cluster (submit it with sbatch).

    It is the script Dagster submits for the same size: srun starts torchrun on every node, one rank
    per GPU.
    """
    from t0_pipeline.cluster import load_profile, render_sbatch

    cfg, paths = _setup(data_dir, config, sets=sets)
    model = cfg.train.sizes.get(size)
    if model is None:
        raise T0Error(
            f"no base model for size {size!r} in train.sizes ({', '.join(cfg.train.sizes)}); add "
            "it to the config."
        )
    log_dir = paths.student_dir(size) / "logs"
    script = render_sbatch(
        load_profile(site, profiles_dir),
        size,
        config_file=str(config.resolve()) if config else None,
        data_dir=str(paths.root.resolve()),
        log_dir=str(log_dir.resolve()),
        model=model,
        deepspeed=deepspeed or cfg.train.deepspeed,
        account=account,
        partition=partition,
        qos=qos,
    )
    if out:
        log_dir.mkdir(parents=True, exist_ok=True)  # Slurm opens the log file before the job starts
        out.write_text(script, encoding="utf-8")
        typer.echo(f"wrote {out}; submit with: sbatch {out}")
    else:
        typer.echo(script, nl=False)


@app.command("slurm-env")
def slurm_env(
    path: Path = typer.Option(..., help="Directory on storage the compute nodes share."),
    venv: Optional[Path] = typer.Option(
        None, help="The virtual environment holding t0-pipeline (default: this one)."
    ),
):
    """Lay out a pre-deployed environment for dagster-slurm (activate.sh + env/ → the venv)."""
    import sys

    from t0_pipeline.cluster import prepare_env_dir

    out = prepare_env_dir(path, venv or Path(sys.prefix))
    typer.echo(f"pre-deployed environment ready at {out}; set TrainingCompute.env_path to it")


@app.command()
def evaluate(
    model: list[str] = typer.Option(
        [], "--model", help="A name from evaluation.models (repeat for several); see `t0 config`."
    ),
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    queries: Optional[Path] = typer.Option(
        None,
        help="Query file (.jsonl/.parquet with query, slug, disposition); "
        "default: the synthetic evaluation set.",
    ),
    runs: Optional[int] = typer.Option(
        None, help="Repeated runs per model and k (default 10); seeds recorded."
    ),
    ks: Optional[str] = typer.Option(
        None, help="Comma-separated k values (default 0,5; 0 = list every condition)."
    ),
    max_queries: Optional[int] = typer.Option(
        None, help="Evaluate only the first n queries (smoke test)."
    ),
    api_base: Optional[str] = typer.Option(
        None,
        help="Use the server already running here for every --model given "
        "instead of starting one (models with a serve section).",
    ),
    sets: Optional[list[str]] = SetOpt,
):
    """Condition and disposition accuracy of the given models (cached per model, prompt and seed).

    A model with a serve section (the base and student of every train.sizes entry) gets its own
    server on this machine for the run (servers.command, vLLM by default), stopped afterwards; its
    log is under <data>/servers/. Others are reached at their api_base.
    """
    from t0_pipeline.evaluate import fmt, model_settings, run_served_evaluation
    from t0_pipeline.model_server import local_servers

    if runs is not None and runs < 1:
        raise T0Error("--runs must be at least 1.")
    cfg, paths = _setup(
        data_dir,
        config,
        sets=sets,
        flags={
            "evaluation.queries": queries,
            "evaluation.runs": runs,
            "evaluation.max_queries": max_queries,
            "evaluation.ks": sorted(set(_int_list(ks, "--ks", "0,5"))) if ks is not None else None,
        },
    )
    if not model:
        raise T0Error(f"name at least one --model; configured: {', '.join(cfg.evaluation.models)}.")
    ev = cfg.evaluation
    for name in model:
        entry = model_settings(ev, name)
        if api_base:
            entry.api_base, entry.serve = api_base, None
        _, summary = run_served_evaluation(
            paths, cfg, name, local_servers(cfg.servers, paths, typer.echo)
        )
        for k, s in summary["by_k"].items():
            typer.echo(
                f"{name} k={k}: condition {fmt(s.get('condition_accuracy'))}, disposition "
                f"{fmt(s.get('disposition_accuracy'))} ({summary['queries']} queries × "
                f"{summary['runs']} runs)"
            )
        typer.echo(f"  notes: {'; '.join(summary['notes']) or 'none'}")
        typer.echo(f"  {_usage_line(summary['usage'])} → {paths.accuracy_dir(name)}")


@app.command("accuracy-report")
def accuracy_report(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    sets: Optional[list[str]] = SetOpt,
):
    """Combine every evaluated model into one table (report.md/.csv) and the accuracy-by-size
    plot."""
    from t0_pipeline.evaluate import combine

    cfg, paths = _setup(data_dir, config, sets=sets)
    report = combine(paths, cfg.evaluation)
    if not report.models:
        raise T0Error(
            f"no evaluated models under {paths.accuracy_dir()}; run `t0 evaluate --model NAME` "
            "first."
        )
    typer.echo(report.markdown)
    typer.echo(f"csv: {report.csv}\nplot: {report.png}")


@app.command()
def serve(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    host: str = typer.Option(
        "127.0.0.1", help="Interface to listen on (0.0.0.0 exposes it to the network)."
    ),
    port: int = typer.Option(8080, help="TCP port."),
    insecure_local: bool = typer.Option(
        False, "--insecure-local", help="No API keys: a single user on this machine only."
    ),
    sets: Optional[list[str]] = SetOpt,
):
    """Serve the chat page (/), the JSON API (/docs) and /v1/chat/completions over the built
    index."""
    # Before torch loads OpenMP: a query's encode is many short parallel regions with Python between
    # them, and
    # OpenMP's default lets its worker sleep ~0.1 ms after each, so every region waited for a
    # wake-up (a search
    # took ~2x as long in the service as alone). Spinning ~10x longer keeps the worker for the whole
    # encode.
    os.environ.setdefault("GOMP_SPINCOUNT", "3000000")
    import uvicorn

    from t0_pipeline.serve.app import create_app

    cfg, paths = _setup(data_dir, config, sets=sets)
    if insecure_local and host not in ("127.0.0.1", "localhost", "::1"):
        raise T0Error(
            "--insecure-local only listens on this machine; drop it or use --host 127.0.0.1 (not "
            f"{host})."
        )
    app_ = create_app(cfg, paths, insecure_local=insecure_local)
    typer.echo(
        f"t0 serve: http://{host}:{port}/  (API docs /docs; "
        f"{'no API keys' if insecure_local else 'API keys required'})"
    )
    uvicorn.run(app_, host=host, port=port, log_level="info", access_log=False)


keys_app = typer.Typer(
    help="API keys for `t0 serve` (only a hash is stored; a key is shown once).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


def _store(data_dir: Optional[Path], config: Optional[Path]):
    from t0_pipeline.serve.store import Store, default_url

    cfg, paths = _setup(data_dir, config)
    return Store(cfg.serve.database_url or default_url(paths.conversations_db))


@keys_app.command("create")
def keys_create(
    name: str = typer.Argument(..., help="Who or what the key is for."),
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
):
    """Create a key and print it (store it now: it cannot be shown again)."""
    key_id, token = _store(data_dir, config).create_key(name)
    typer.echo(f"key id {key_id} ({name}):\n{token}")


@keys_app.command("list")
def keys_list(data_dir: Optional[Path] = DataDir, config: Optional[Path] = ConfigFile):
    """List keys (ids and names; never the keys)."""
    import datetime

    for k in _store(data_dir, config).list_keys():
        when = datetime.datetime.fromtimestamp(k["created_at"]).isoformat(timespec="seconds")
        typer.echo(f"{k['id']}  {k['name']}  created {when}{'  REVOKED' if k['revoked'] else ''}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="The key id from `t0 keys list`."),
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
):
    """Revoke a key: its requests are refused from now on."""
    if not _store(data_dir, config).revoke_key(key_id):
        raise T0Error(f"no key with id {key_id}; see `t0 keys list`.")
    typer.echo(f"revoked {key_id}")


@app.command()
def report(data_dir: Optional[Path] = DataDir):
    """Print the last retrieval report (p@k table) and the crawl summary."""
    _, paths = _setup(data_dir, None)
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
    typer.echo("\nRetrieval p@k (share of queries whose condition is in the top k documents)\n")
    typer.echo(table.read_text())
    typer.echo(f"plot: {paths.retrieval_report_dir / 'pk.png'}")


@app.command("run-all")
def run_all(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    select: Optional[list[str]] = typer.Option(
        None, "--select", help="Only these assets (repeatable); default all."
    ),
):
    """Materialise every asset of the graph in dependency order, in this process (`make demo`): each
    asset and each partition is a Dagster run in the instance at $DAGSTER_HOME (the UI shows them).
    Prints the time of each stage and its checks, then the retrieval and accuracy tables. A failed
    stage stops the chain; the stages before it stay materialised, and model calls are cached, so a
    re-run resumes."""
    if (
        config is not None
    ):  # the code location's shape (partitions, lineage) is read from these when it loads
        os.environ["T0_CONFIG"] = str(config.resolve())
    if data_dir is not None:
        os.environ["T0_DATA_DIR"] = str(data_dir)
    if not os.environ.get("DAGSTER_HOME"):
        raise T0Error(
            "set DAGSTER_HOME to a folder for Dagster's run history (make demo uses the repository "
            "root)."
        )
    from t0_pipeline.defs.run_all import run_all as materialise_all
    from t0_pipeline.defs.run_all import timing_table
    from t0_pipeline.evaluate import combine

    cfg, paths = _setup(data_dir, config)
    started = time.monotonic()
    rows = materialise_all(typer.echo, set(select) if select else None)
    typer.echo(f"\nTime per stage (this machine, {os.cpu_count()} cores)\n\n{timing_table(rows)}\n")
    report_table = paths.retrieval_report_dir / "pk.md"
    if report_table.exists():
        typer.echo("Retrieval p@k (share of queries whose condition is in the top k documents)\n")
        typer.echo(report_table.read_text())
    accuracy = combine(paths, cfg.evaluation)
    if accuracy.models:
        typer.echo(
            f"\nAccuracy (mean ± std over runs; the plot: {accuracy.png})\n\n{accuracy.markdown}"
        )
    if cfg.base_models:
        typer.echo(
            "\nStand-in: the models above are the small bundled ones named in base_models; every "
            "artefact is "
            "real, no figure here is the method's result."
        )
    typer.echo(f"\nall stages materialised in {time.monotonic() - started:.0f} s")


@app.command("config")
def show_config(config: Optional[Path] = ConfigFile, sets: Optional[list[str]] = SetOpt):
    """Print the resolved configuration as JSON: defaults, then the --config file, then
    T0_<SECTION>__<FIELD> environment variables (e.g. T0_LLM__ROLES__AGENT__API_BASE), then --set,
    each setting only the fields it names."""
    cfg = load_config(config, overrides=command_line_settings(sets), overrides_from="command line")
    typer.echo(cfg.model_dump_json(indent=2))


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv)
    except T0Error as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
    except OSError as exc:  # files and folders: name the path and the problem
        if os.environ.get("T0_TRACEBACK"):
            raise
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        typer.secho(
            f"error:{where}: {exc.strerror or exc}; check the path and its permissions.",
            fg="red",
            err=True,
        )
        sys.exit(2)
    except (
        Exception
    ) as exc:  # anything else is still one line; T0_TRACEBACK=1 shows where it came from
        if os.environ.get("T0_TRACEBACK"):
            raise
        typer.secho(
            f"error: unexpected {exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0][:300] if str(exc) else ''} "
            "(set T0_TRACEBACK=1 for the traceback, and please report it)",
            fg="red",
            err=True,
        )
        sys.exit(1)


def run_stage(command: str) -> None:
    """``python -m t0_pipeline.<stage> [options]`` runs ``t0 <command> [options]`` (for Slurm nodes
    and scripts)."""
    main([command, *sys.argv[1:]])


if __name__ == "__main__":
    main()
