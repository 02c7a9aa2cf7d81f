"""A Dagster run whose process is killed is failed by run monitoring (the shipped dagster.yaml, the
real daemon), with the reason; a live run is left alone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SLOW_ASSET = """
import time

import dagster as dg

from t0_pipeline.defs.resources import PipelineSettings


@dg.asset
def slow(settings: PipelineSettings) -> None:
    time.sleep(600)


defs = dg.Definitions(assets=[slow], resources={"settings": PipelineSettings(data_dir="data")})
"""


def _wait(until, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = until()
        if value:
            return value
        time.sleep(every)
    return None


@pytest.mark.timeout(400)
def test_a_killed_run_is_failed_by_run_monitoring_with_the_reason(tmp_path, monkeypatch):
    import dagster as dg

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    (home / "slow_defs.py").write_text(SLOW_ASSET)
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.chdir(home)  # the instance's storage folders are relative to where it runs
    bin_dir = Path(sys.executable).parent
    run = subprocess.Popen(
        [bin_dir / "dagster", "asset", "materialize", "-f", "slow_defs.py", "--select", "slow"],
        cwd=home,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    daemon = None
    try:
        instance = dg.DagsterInstance.get()

        def started():
            records = instance.get_run_records()
            if records and records[0].dagster_run.status == dg.DagsterRunStatus.STARTED:
                return records[0].dagster_run if "t0/host" in records[0].dagster_run.tags else None
            return None

        live = _wait(started, 180)
        assert live is not None, "the run never started its step"
        daemon = subprocess.Popen(
            [bin_dir / "dagster-daemon", "run", "-f", "slow_defs.py"],
            cwd=home,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # alive: the daemon leaves it running through a monitoring round
        time.sleep(40)
        assert instance.get_run_by_id(live.run_id).status == dg.DagsterRunStatus.STARTED
        run.send_signal(signal.SIGKILL)
        run.wait(30)
        killed_at = time.monotonic()

        def failed():
            status = instance.get_run_by_id(live.run_id).status
            return status if status == dg.DagsterRunStatus.FAILURE else None

        # poll_interval_seconds 15 in the shipped file; a round may have just passed
        assert _wait(failed, 90) == dg.DagsterRunStatus.FAILURE
        assert time.monotonic() - killed_at < 90
        said = [
            e.message
            for e in instance.all_logs(live.run_id)
            if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE
        ]
        assert said and "is gone" in said[-1], said
    finally:
        for process in (run, daemon):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(30)
