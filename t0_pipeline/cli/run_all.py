"""Materialise every asset of the code location in dependency order: what ``make demo`` runs (``t0
run-all``).

The source is observed first (its version goes on record), then each asset, and each partition of a
partitioned one, is one Dagster run in the instance at ``$DAGSTER_HOME`` (the UI shows them, with
metadata and check results, as if launched there). Runs execute in this process, one after another,
so the time of each is its own. A failed asset stops the chain with its error; everything
materialised before it stays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from t0_pipeline.artifacts import T0Error


@dataclass
class StageTime:
    asset: str
    partition: str | None
    seconds: float
    checks_passed: list[str] = field(default_factory=list)
    checks_failed: list[str] = field(default_factory=list)  # "name (WARN)" for warnings


def open_instance():
    """The Dagster instance at ``$DAGSTER_HOME``, its storage opened; a storage that cannot be
    reached (PostgreSQL down, a refused password) is one line naming the cause, before any run."""
    import os

    import dagster as dg
    import sqlalchemy as sa

    from t0_pipeline.database import describe_database_error

    try:
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)
        return instance
    except Exception as exc:  # dagster-postgres wraps the driver's error after its retries
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, sa.exc.DBAPIError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        meaning, action = describe_database_error(cause)
        home = os.environ.get("DAGSTER_HOME", "")
        raise T0Error(
            f"cannot open the Dagster instance's storage ({home}/dagster.yaml): {meaning}; "
            f"{action} (for deploy/dagster.yaml: the DAGSTER_PG_* variables). Nothing was run."
        ) from None


def run_all(echo: Callable[[str], None] = print, select: set[str] | None = None) -> list[StageTime]:
    """Every materialisable asset (or those named in ``select``), in dependency order; one row per
    run."""

    from t0_pipeline.definitions import defs

    instance = open_instance()
    graph = defs.resolve_asset_graph()
    rows: list[StageTime] = []
    started = time.monotonic()
    defs.resolve_job_def("observe_corpus").execute_in_process(instance=instance)
    rows.append(StageTime("corpus_source (observed)", None, time.monotonic() - started))
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        name = key.to_user_string()
        if not node.is_materializable or (select is not None and name not in select):
            continue
        for partition in (
            node.partitions_def.get_partition_keys() if node.partitions_def else [None]
        ):
            label = f"{name}[{partition}]" if partition else name
            echo(f"materialising {label} ...")
            started = time.monotonic()
            job = defs.resolve_implicit_job_def_def_for_assets([key])
            result = job.execute_in_process(
                instance=instance,
                asset_selection=[key],
                partition_key=partition,
                raise_on_error=False,
            )
            row = StageTime(name, partition, time.monotonic() - started)
            for evaluation in result.get_asset_check_evaluations():
                check = evaluation.check_name
                if evaluation.passed:
                    row.checks_passed.append(check)
                else:
                    row.checks_failed.append(f"{check} ({evaluation.severity.value})")
            rows.append(row)
            if not result.success:
                raise T0Error(
                    f"{label} failed after {row.seconds:.0f} s: {failure_message(result)} (every "
                    "asset materialised before it is kept; fix and run again: finished stages are "
                    "cached)"
                )
            checks = f"; checks: {len(row.checks_passed)} passed" + (
                f", failed: {', '.join(row.checks_failed)}" if row.checks_failed else ""
            )
            echo(
                f"  {label}: {row.seconds:.1f} "
                f"s{checks if row.checks_passed or row.checks_failed else ''}"
            )
    return rows


def failure_message(result) -> str:
    """The first step failure's own message (the user's error, not Dagster's wrapper)."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None and "Error occurred while executing" in error.message:
                error = error.cause
            return (
                error.message.strip().splitlines()[-1][:600]
                if error.message.strip()
                else "unknown error"
            )
    return "the run did not succeed (see the Dagster UI for its log)"


def timing_table(rows: list[StageTime]) -> str:
    lines = ["| stage | seconds | checks |", "|---|---:|---|"]
    for r in rows:
        label = f"{r.asset}[{r.partition}]" if r.partition else r.asset
        checks = f"{len(r.checks_passed)} passed" + (
            f"; failed: {', '.join(r.checks_failed)}" if r.checks_failed else ""
        )
        lines.append(
            f"| {label} | {r.seconds:.1f} | "
            f"{checks if r.checks_passed or r.checks_failed else '-'} |"
        )
    lines.append(f"| **total** | {sum(r.seconds for r in rows):.1f} | |")
    return "\n".join(lines)
