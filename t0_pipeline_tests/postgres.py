"""A real PostgreSQL server for the tests: a throwaway cluster in a temporary folder, on loopback,
with password authentication, started and stopped by the test that needs it.

The server binaries come from Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``;
``.ci/run`` installs it where it is missing). PostgreSQL refuses to run as root, so under root
the cluster belongs to the ``postgres`` user the package creates, and its commands run as that
user."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from t0_pipeline_tests.serving import free_port

USER, PASSWORD = "t0", "t0-secret"


def server_binaries() -> Path:
    """The newest installed PostgreSQL's bin folder; fails under CI, skips elsewhere, when none is
    installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_major)
    if not found:
        message = "no PostgreSQL server here; `apt-get install postgresql` (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Path(found[-1]).parent


def _major(path: str) -> int:
    return int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0


class PostgresServer:
    """One cluster: ``start()``, ``stop()`` (fast shutdown: clients are cut off, as when the
    database host goes down), ``url(db)`` for SQLAlchemy, ``create_database(name)``."""

    def __init__(self):
        self.bin = server_binaries()
        self.root = Path(tempfile.mkdtemp(prefix="t0-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            "--pwfile",
            str(pwfile),
            "--auth",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done

    def start(self) -> PostgresServer:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def url(self, db: str = "postgres", password: str = PASSWORD) -> str:
        """The URL as a user writes it in serve.database_url (no driver named)."""
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        import sqlalchemy as sa

        from t0_pipeline.database import with_installed_driver

        engine = sa.create_engine(with_installed_driver(self.url()), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine.dispose()
        return self.url(name)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
