"""What every ``t0`` command shares: the Typer app, the common options (data folder, config file,
--set), the settings from the command line, and small helpers."""

from __future__ import annotations

import contextlib
import logging
import os
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
    help="JSON/YAML/TOML file with any subset of the settings (merged into the defaults field by "
    "field; T0_<SECTION>__<FIELD> variables go on top).",
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
    help="Any setting for this run: section.field=value (repeatable; the value is read as YAML, "
    "so 5, true, null and [a, b] work). `t0 config` lists the settings.",
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


def setup(
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


@contextlib.contextmanager
def serve_roles(cfg: PipelineConfig, paths: DataPaths, *roles: str):
    """``cfg`` with each of ``roles`` that has a serve section pointed at a model server started on
    this machine for the block (one per distinct model)."""
    from t0_pipeline.servers.model_server import local_servers, roles_served

    servers = local_servers(cfg.servers, paths, typer.echo)
    with roles_served(cfg.llm, list(roles), paths, servers) as llm:
        yield cfg.model_copy(update={"llm": llm})


def source_flags(
    source: Optional[str],
    location: Optional[str],
    pages: Optional[Path],
    documents: Optional[Path] = None,
) -> dict[str, Any]:
    """--pages FILE is --source pages --location FILE; --documents DIR is --source documents
    --location DIR."""
    if pages is not None and documents is not None:
        raise T0Error("give --pages FILE or --documents DIR, not both.")
    given = [f for f, v in (("--source", source), ("--location", location)) if v is not None]
    if given and (pages is not None or documents is not None):
        which = "--pages FILE" if pages is not None else "--documents DIR"
        raise T0Error(
            f"{which} already names the corpus; drop {' and '.join(given)} (or drop {which})."
        )
    if pages is not None:
        return {"source.kind": "pages", "source.location": str(pages)}
    if documents is not None:
        return {"source.kind": "documents", "source.location": str(documents)}
    return {"source.kind": source, "source.location": location}


def role_flags(role: str, model: Optional[str], api_base: Optional[str]) -> dict[str, Any]:
    """A role's model and endpoint; an endpoint given here is a server already running there (none
    is started)."""
    return {
        f"llm.roles.{role}.model": model or None,
        f"llm.roles.{role}.api_base": api_base or None,
    }


def open_retriever(cfg: PipelineConfig, paths: DataPaths, index: str):
    from t0_pipeline.retrieval.retrieve import Retriever

    if index not in ("full", "summaries", "llm_summaries"):
        raise T0Error(f"--index must be full, summaries or llm_summaries, got {index!r}.")
    return Retriever(index, paths, cfg.embedding, cfg.chroma, cfg.retrieval)


def check_mode(mode: str) -> None:
    if mode not in ("dense", "bm25", "hybrid"):
        raise T0Error(f"--mode must be dense, bm25 or hybrid, got {mode!r}.")


def int_list(text: str, flag: str, example: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise T0Error(
            f"{flag} must be comma-separated integers such as {example}; got {text!r}."
        ) from None


def usage_line(usage: dict) -> str:
    return (
        f"calls {usage['completed']}, cache hits {usage['cache_hits']}, retries "
        f"{usage['retries']}, failed {usage['failures']}, tokens "
        f"{usage['prompt_tokens']}+{usage['completion_tokens']}, cost ${usage['cost']:.4f}"
    )


def query_text(text: str, what: str = "the query") -> str:
    """A query from the command line: UTF-8 and not blank, else one error saying so."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # argv bytes that were not UTF-8 arrive as surrogates
        raise T0Error(f"{what} is not valid UTF-8; pass it in UTF-8 (check the terminal's locale).")
    if not text.strip():
        raise T0Error(f"{what} is empty; give the words to search for.")
    return text


def at_least(value: int, low: int, flag: str) -> int:
    """A command's count option in its range, else one error naming the flag."""
    if value < low:
        raise T0Error(f"{flag} must be at least {low}, not {value}.")
    return value
