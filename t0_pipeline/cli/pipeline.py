"""Whole-pipeline commands: run-all (every asset, as `make demo` runs it) and config."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import typer

from t0_pipeline.artifacts import T0Error
from t0_pipeline.cli.common import ConfigFile, DataDir, SetOpt, app, command_line_settings, setup
from t0_pipeline.config import (
    load_config,
)


@app.command("run-all")
def run_all(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    select: Optional[list[str]] = typer.Option(
        None, "--select", help="Only these assets (repeatable); default all."
    ),
):
    """Materialise every asset of the graph in dependency order (`make demo`).

    Each asset and each partition is a Dagster run in the instance at $DAGSTER_HOME (the UI
    shows them). Prints the time of each stage and its checks, then the retrieval and
    accuracy tables. A failed stage stops the chain; the stages before it stay materialised,
    and model calls are cached, so a re-run resumes.
    """
    # the code location's shape (partitions, lineage) is read from these when it loads
    if config is not None:
        os.environ["T0_CONFIG"] = str(config.resolve())
    if data_dir is not None:
        os.environ["T0_DATA_DIR"] = str(data_dir)
    if not os.environ.get("DAGSTER_HOME"):
        raise T0Error(
            "set DAGSTER_HOME to a folder for Dagster's run history (make demo uses the repository "
            "root)."
        )
    from t0_pipeline.cli.run_all import run_all as materialise_all
    from t0_pipeline.cli.run_all import timing_table
    from t0_pipeline.evaluation.tables import combine

    cfg, paths = setup(data_dir, config)
    started = time.monotonic()
    rows = materialise_all(typer.echo, set(select) if select else None)
    typer.echo(f"\nTime per stage (this machine, {os.cpu_count()} cores)\n\n{timing_table(rows)}\n")
    report_table = paths.retrieval_report_dir / "pk.md"
    if report_table.exists():
        typer.echo("Retrieval p@k (share of queries whose own document is in the top k)\n")
        typer.echo(report_table.read_text())
    accuracy = combine(paths, cfg.evaluation)
    if accuracy.models:
        typer.echo(
            f"\nAccuracy (mean ± std over runs; the plot: {accuracy.png})\n\n{accuracy.markdown}"
        )
    for line in accuracy.learned:  # the closing lines: what each student learned
        typer.echo(f"\nWhat fine-tuning taught: {line}")
    if cfg.base_models:
        typer.echo(
            "\nStand-in: the models above are the small bundled ones named in base_models; every "
            "artefact is real, no figure here is the method's result."
        )
    typer.echo(f"\nall stages materialised in {time.monotonic() - started:.0f} s")


@app.command("config")
def show_config(config: Optional[Path] = ConfigFile, sets: Optional[list[str]] = SetOpt):
    """Print the resolved configuration as JSON.

    Layers: defaults, then the --config file, then T0_<SECTION>__<FIELD> environment
    variables (e.g. T0_LLM__ROLES__AGENT__API_BASE), then --set, each setting only the fields
    it names.
    """
    cfg = load_config(config, overrides=command_line_settings(sets), overrides_from="command line")
    typer.echo(cfg.model_dump_json(indent=2))
