"""Conversation state in a real database (SQLite by default, any SQLAlchemy URL, e.g. Postgres).

Tables: ``api_keys`` (only a SHA-256 of each key is stored), ``users`` (each key's own personal
details, copied into its new threads), ``threads`` (owned by one key, with their details as JSON),
``messages`` (user and assistant turns; the assistant's thinking, sources and search query kept
apart from its answer, so earlier thinking is never resent to a model; a user message is
``pending`` while its turn runs and ``failed`` when it found no answer), and the two tables that
make several server processes on one database behave as one: ``leases`` (who runs a thread's turn
now, renewed while it runs and expiring if its process dies) and ``rate_buckets`` (token buckets,
updated in one statement so that concurrent processes share them; :mod:`~t0_pipeline.serve.leases`).
The tables are defined in :mod:`~t0_pipeline.serve.schema`. Every method is one short
transaction; callers in async code run them in a worker thread. JSON is the only serialisation used.
A SQLite file is created readable by its owner only.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from t0_pipeline.artifacts import T0Error
from t0_pipeline.database import describe_database_error, safe_url, with_installed_driver
from t0_pipeline.serve.leases import SharedLimits
from t0_pipeline.serve.schema import (
    ADDED_COLUMNS,
    KEY_PREFIX,
    api_keys,
    leases,
    messages,
    metadata,
    threads,
    users,
)


class NotFound(Exception):
    """No such thread for this key (another key's thread is reported the same way)."""


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def default_url(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _private_sqlite_file(url: sa.engine.URL) -> None:
    """Create a SQLite database file readable by its owner only (SQLite gives its -wal/-shm files
    the same mode)."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return
    path = Path(url.database)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


class Store(SharedLimits):
    def __init__(self, url: str):
        try:
            self.engine = sa.create_engine(
                with_installed_driver(url),
                future=True,
                **(
                    {"connect_args": {"timeout": 30, "check_same_thread": False}}
                    if url.startswith("sqlite")
                    else {"pool_pre_ping": True}
                ),
            )
            if url.startswith("sqlite"):

                @sa.event.listens_for(self.engine, "connect")
                def _pragmas(conn, _record):  # WAL: readers never block the writer
                    cur = conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA foreign_keys=ON")
                    cur.execute("PRAGMA synchronous=NORMAL")
                    cur.close()

            _private_sqlite_file(self.engine.url)
            self._create_schema()
        except sa.exc.DBAPIError as exc:
            meaning, action = describe_database_error(exc)
            raise T0Error(
                f"cannot open the conversation database {safe_url(url)}: {meaning}; {action} in "
                "serve.database_url. Nothing stored there is changed."
            ) from None
        except (sa.exc.ArgumentError, ModuleNotFoundError) as exc:
            raise T0Error(
                f"cannot open the conversation database {safe_url(url)} ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0][:120]}); check serve.database_url."
            ) from None

    def _create_schema(self, attempts: int = 6) -> None:
        """Tables and added columns. Replicas starting together on a fresh database race to create
        the same tables ("already exists" for the loser): the schema is then there, so the loser
        looks again."""
        for attempt in range(1, attempts + 1):
            try:
                metadata.create_all(self.engine)
                self._add_missing_columns()
                return
            except sa.exc.DBAPIError:
                if attempt == attempts:
                    raise
                time.sleep(0.05 * attempt)

    def _add_missing_columns(self) -> None:
        """Columns added since a database was created (a conversation database outlives
        releases)."""
        inspector = sa.inspect(self.engine)
        for table, columns in ADDED_COLUMNS.items():
            have = {c["name"] for c in inspector.get_columns(table)}
            with self.engine.begin() as conn:
                for name, ddl in columns.items():
                    if name not in have:
                        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}")

    # --- keys -------------------------------------------------------------------------
    def create_key(self, name: str) -> tuple[str, str]:
        """(key id, the key itself); only its hash is stored, so it is shown once."""
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = uuid.uuid4().hex
        with self.engine.begin() as conn:
            conn.execute(
                api_keys.insert().values(
                    id=key_id,
                    name=name,
                    key_hash=hash_key(token),
                    created_at=time.time(),
                    revoked=False,
                )
            )
        return key_id, token

    def key_owner(self, token: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(api_keys.c.id).where(
                    api_keys.c.key_hash == hash_key(token), api_keys.c.revoked.is_(False)
                )
            ).first()
        return row[0] if row else None

    def list_keys(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    sa.select(
                        api_keys.c.id, api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked
                    ).order_by(api_keys.c.created_at)
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    def revoke_key(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    api_keys.update().where(api_keys.c.id == key_id).values(revoked=True)
                ).rowcount
                > 0
            )

    # --- a key's own details ------------------------------------------------------------
    def user_demographics(self, owner: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(users.c.demographics).where(users.c.owner == owner)
            ).first()
        return json.loads(row[0]) if row else {}

    def set_user_demographics(self, owner: str, demographics: dict[str, Any]) -> dict[str, Any]:
        with self.engine.begin() as conn:
            if not conn.execute(
                users.update()
                .where(users.c.owner == owner)
                .values(demographics=json.dumps(demographics))
            ).rowcount:
                conn.execute(
                    users.insert().values(owner=owner, demographics=json.dumps(demographics))
                )
        return demographics

    # --- threads ----------------------------------------------------------------------
    def create_thread(
        self, owner: str, title: str, profile: str, demographics: dict[str, Any] | None = None
    ) -> dict:
        now = time.time()
        row = {
            "id": uuid.uuid4().hex,
            "owner": owner,
            "title": title,
            "profile": profile,
            "demographics": json.dumps(demographics or {}),
            "created_at": now,
            "updated_at": now,
        }
        with self.engine.begin() as conn:
            conn.execute(threads.insert().values(**row))
        return self._thread_out(row)

    @staticmethod
    def _thread_out(row) -> dict[str, Any]:
        out = dict(row)
        out["demographics"] = json.loads(out["demographics"] or "{}")
        out.pop("owner", None)
        return out

    def list_threads(self, owner: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    sa.select(threads)
                    .where(threads.c.owner == owner)
                    .order_by(threads.c.updated_at.desc())
                )
                .mappings()
                .all()
            )
        return [self._thread_out(r) for r in rows]

    def get_thread(self, owner: str, thread_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    sa.select(threads).where(threads.c.id == thread_id, threads.c.owner == owner)
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFound(thread_id)
        return self._thread_out(row)

    def delete_thread(self, owner: str, thread_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                messages.delete().where(
                    messages.c.thread_id == thread_id,
                    sa.exists().where(threads.c.id == thread_id, threads.c.owner == owner),
                )
            )
            if (
                conn.execute(
                    threads.delete().where(threads.c.id == thread_id, threads.c.owner == owner)
                ).rowcount
                == 0
            ):
                raise NotFound(thread_id)

    def set_demographics(
        self, owner: str, thread_id: str, demographics: dict[str, Any]
    ) -> dict[str, Any]:
        with self.engine.begin() as conn:
            done = conn.execute(
                threads.update()
                .where(threads.c.id == thread_id, threads.c.owner == owner)
                .values(demographics=json.dumps(demographics), updated_at=time.time())
            ).rowcount
        if not done:
            raise NotFound(thread_id)
        return self.get_thread(owner, thread_id)

    # --- messages ---------------------------------------------------------------------
    def add_message(
        self,
        thread_id: str,
        role: str,
        content: str,
        thinking: str = "",
        sources: list | None = None,
        search_query: str | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        title: str | None = None,
        status: str = "ok",
        answers: int | None = None,
    ) -> dict[str, Any]:
        """Store a message (an answer marks the user message it ``answers`` ok in the same
        transaction); NotFound when its thread is gone (deleted, say, while the answer was
        written)."""
        now = time.time()
        row = {
            "thread_id": thread_id,
            "role": role,
            "content": content,
            "thinking": thinking,
            "sources": json.dumps(sources or []),
            "search_query": search_query,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "created_at": now,
            "status": status,
            "error": "",
        }
        with self.engine.begin() as conn:
            update = {"updated_at": now, **({"title": title} if title else {})}
            if not conn.execute(
                threads.update().where(threads.c.id == thread_id).values(**update)
            ).rowcount:
                raise NotFound(thread_id)
            new_id = conn.execute(messages.insert().values(**row)).inserted_primary_key[0]
            if answers is not None:
                conn.execute(
                    messages.update().where(messages.c.id == answers).values(status="ok", error="")
                )
        return self._message_out({**row, "id": new_id})

    def set_status(self, message_id: int, status: str, error: str = "") -> None:
        with self.engine.begin() as conn:
            conn.execute(
                messages.update()
                .where(messages.c.id == message_id)
                .values(status=status, error=error[:2000])
            )

    def take_failed(self, thread_id: str, message_id: int) -> str:
        """Remove a failed user message to send it again; its text. NotFound if it is not a failed
        message here."""
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(messages.c.content).where(
                    messages.c.id == message_id,
                    messages.c.thread_id == thread_id,
                    messages.c.role == "user",
                    messages.c.status.in_(("failed", "pending")),
                )
            ).first()
            if row is None:
                raise NotFound(f"message {message_id}")
            conn.execute(messages.delete().where(messages.c.id == message_id))
        return row[0]

    @staticmethod
    def _message_out(row) -> dict[str, Any]:
        out = dict(row)
        out["sources"] = json.loads(out["sources"] or "[]")
        return out

    def history(self, thread_id: str) -> list[dict[str, Any]]:
        """Every message, oldest first; a ``pending`` one whose turn no process is running any more
        (its server was stopped mid-turn) reads as ``failed``."""
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    sa.select(messages)
                    .where(messages.c.thread_id == thread_id)
                    .order_by(messages.c.id)
                )
                .mappings()
                .all()
            )
            running = conn.execute(
                sa.select(leases.c.name).where(
                    leases.c.name == f"thread:{thread_id}", leases.c.expires_at > time.time()
                )
            ).first()
        out = [self._message_out(r) for r in rows]
        for m in out:
            if m["status"] == "pending" and running is None:
                m["status"], m["error"] = (
                    "failed",
                    m["error"] or "the server stopped before this turn finished",
                )
        return out

    def close(self) -> None:
        self.engine.dispose()
