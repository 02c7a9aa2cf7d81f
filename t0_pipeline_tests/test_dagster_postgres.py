"""The Dagster instance on PostgreSQL, as a team runs it (deploy/dagster.yaml, DAGSTER_PG_*
variables): `t0 run-all` over the corpus → retrieval slice records every run there, visible through
the instance API; a refused password or a stopped server is one line before anything runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from t0_pipeline_tests.postgres import PASSWORD, USER
from t0_pipeline_tests.serving import free_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "dagster.yaml"


def corpus_to_retrieval() -> list[str]:
    """The materialisable assets of the corpus and retrieval groups, in dependency order."""
    from t0_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    return [
        key.to_user_string()
        for key in graph.toposorted_asset_keys
        if graph.get(key).is_materializable and graph.get(key).group_name in ("corpus", "retrieval")
    ]


def team_home(tmp_path: Path, port: int, db: str, password: str = PASSWORD) -> dict[str, str]:
    """A DAGSTER_HOME holding the team instance file, and the environment that points it at
    PostgreSQL."""
    home = tmp_path / "dagster-home"
    home.mkdir(exist_ok=True)
    shutil.copy(DEPLOY, home / "dagster.yaml")
    return {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(port),
        "DAGSTER_PG_USER": USER,
        "DAGSTER_PG_PASSWORD": password,
        "DAGSTER_PG_DB": db,
    }


def run_all(env: dict[str, str], data: Path, *assets: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "t0_pipeline.cli", "run-all", "--data-dir", str(data)]
    for asset in assets:
        command += ["--select", asset]
    full_env = {**os.environ, **env, "HF_HUB_OFFLINE": "1"}
    full_env.pop("T0_CONFIG", None)
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_run_all_on_a_postgres_dagster_instance_records_every_run_there(
    tmp_path, postgres, monkeypatch
):
    import dagster as dg
    import sqlalchemy as sa

    from t0_pipeline.database import with_installed_driver

    db = f"dagster_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(db)
    env = team_home(tmp_path, postgres.port, db)
    assets = corpus_to_retrieval()
    assert "retrieval_report" in assets and len(assets) >= 9
    done = run_all(env, tmp_path / "data", *assets)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "| summaries | dense |" in done.stdout  # the retrieval table was printed

    # the history is in PostgreSQL, not in a SQLite file beside the instance config
    home = Path(env["DAGSTER_HOME"])
    assert not list(home.rglob("*.db")), list(home.rglob("*.db"))
    engine = sa.create_engine(with_installed_driver(url))
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT count(*) FROM runs").scalar()
    engine.dispose()

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        runs = instance.get_runs()
        # one run per asset, plus the source observation before them
        assert len(runs) == stored == len(assets) + 1
        assert {r.status for r in runs} == {dg.DagsterRunStatus.SUCCESS}
        for asset in assets:
            event = instance.get_latest_materialization_event(dg.AssetKey(asset))
            assert event is not None, f"{asset} has no materialisation in the instance"
    finally:
        instance.dispose()


@pytest.mark.slow
def test_postgres_dagster_instance_refusing_or_down_is_one_line_before_anything_runs(
    tmp_path, postgres
):
    db = f"dagster_{uuid.uuid4().hex[:8]}"
    postgres.create_database(db)
    cases = {
        "the password was refused": team_home(tmp_path, postgres.port, db, "wrong-password"),
        "nothing answers there": team_home(tmp_path, free_port(), db),
    }
    for cause, env in cases.items():
        started = time.monotonic()
        done = run_all(env, tmp_path / "data", "condition_pages")
        assert done.returncode != 0 and time.monotonic() - started < 300
        last = done.stderr.strip().splitlines()[-1]
        assert "cannot open the Dagster instance's storage" in last and cause in last, last
        assert "DAGSTER_PG_" in last and "wrong-password" not in last and "Traceback" not in last
        assert not (tmp_path / "data").exists()  # nothing ran
