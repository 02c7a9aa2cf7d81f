"""Dead runs marked as such: the run launcher the shipped ``dagster.yaml`` names, whose health check
lets Dagster's run monitoring (the daemon, which ``make ui``'s ``dagster dev`` runs) fail a run
whose process died, instead of showing it "started" for ever.

:class:`WatchedRunLauncher` launches runs as Dagster's default launcher does (in the code
location's server). Its health check finds the run's worker process from the run's start event
(which records the process id) and the host the run's steps recorded (:func:`tag_host`, called when
the pipeline's settings resource starts in a run): a worker that is gone from this host, or whose
process id now belongs to a process started after the run, is reported failed, and the daemon fails
the run with that reason within ``run_monitoring.poll_interval_seconds``. A run on another host, or
one that never started a step, is left alone: nothing here can see it.
"""

from __future__ import annotations

import socket

from dagster import DagsterEventType, DefaultRunLauncher
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus

HOST_TAG = "t0/host"


def tag_host(instance, run_id: str | None) -> None:
    """Record on the run which host its steps run on (once per run)."""
    if instance is None or not run_id:
        return
    run = instance.get_run_by_id(run_id)
    if run is not None and HOST_TAG not in run.tags:
        instance.add_run_tags(run_id, {HOST_TAG: socket.gethostname()})


def worker_health(pid: int | None, started: float | None, host: str | None) -> tuple[bool, str]:
    """(alive or not judged, why): whether the process ``pid`` that started a run at ``started``
    (a Unix time) on ``host`` still exists here."""
    import psutil

    if pid is None or started is None:
        return True, "the run has not started a worker yet"
    if host != socket.gethostname():
        return True, f"the run's worker is on {host or 'an unrecorded host'}, not here"
    try:
        process = psutil.Process(pid)
        born = process.create_time()
        zombie = process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False, f"its process (pid {pid} on {host}) is gone"
    if zombie or born > started + 1.0:
        return False, f"its process (pid {pid} on {host}) is gone; the pid now names another"
    return True, f"its process (pid {pid}) is running"


class WatchedRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher, with a health check run monitoring can use."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run) -> CheckRunHealthResult:
        records = self._instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.RUN_START, limit=1
        ).records
        event = records[0].event_log_entry if records else None
        pid = event.dagster_event.pid if event and event.dagster_event else None
        host = run.tags.get(HOST_TAG) or (socket.gethostname() if self._one_machine() else None)
        alive, why = worker_health(pid, event.timestamp if event else None, host)
        status = WorkerStatus.RUNNING if alive else WorkerStatus.FAILED
        return CheckRunHealthResult(status, why)

    def _one_machine(self) -> bool:
        """A SQLite instance is one machine's: every run in it ran here."""
        from dagster._core.storage.runs import SqliteRunStorage

        return isinstance(self._instance.run_storage, SqliteRunStorage)
