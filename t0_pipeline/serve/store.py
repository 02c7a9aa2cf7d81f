"""Conversation state in a real database (SQLite by default, any SQLAlchemy URL, e.g. Postgres).

Tables: ``api_keys`` (only a SHA-256 of each key is stored), ``threads`` (owned by one key,
with demographics as JSON) and ``messages`` (user and assistant turns; the assistant's
thinking, sources and search query kept apart from its answer, so earlier thinking is never
resent to a model). Every method is one short transaction; callers in async code run them
in a worker thread. JSON is the only serialisation used.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from t0_pipeline.artifacts import T0Error

KEY_PREFIX = "t0k_"
metadata = sa.MetaData()
api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
)
threads = sa.Table(
    "threads", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(32), nullable=False, index=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("profile", sa.String(100), nullable=False),
    sa.Column("demographics", sa.Text, nullable=False, default="{}"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
messages = sa.Table(
    "messages", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("thread_id", sa.String(32), sa.ForeignKey("threads.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("thinking", sa.Text, nullable=False, default=""),
    sa.Column("sources", sa.Text, nullable=False, default="[]"),
    sa.Column("search_query", sa.Text, nullable=True),
    sa.Column("prompt_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("completion_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", sa.Float, nullable=False),
)


class NotFound(Exception):
    """No such thread for this key (another key's thread is reported the same way)."""


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def default_url(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


class Store:
    def __init__(self, url: str):
        try:
            self.engine = sa.create_engine(url, future=True, **({"connect_args": {"timeout": 30, "check_same_thread": False}}
                                                                if url.startswith("sqlite") else {"pool_pre_ping": True}))
            if url.startswith("sqlite"):
                @sa.event.listens_for(self.engine, "connect")
                def _pragmas(conn, _record):  # WAL: readers never block the writer
                    cur = conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA foreign_keys=ON")
                    cur.execute("PRAGMA synchronous=NORMAL")
                    cur.close()
            metadata.create_all(self.engine)
        except (sa.exc.ArgumentError, sa.exc.OperationalError, ModuleNotFoundError) as exc:
            raise T0Error(f"cannot open the conversation database {url!r} ({exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0][:120]}); check serve.database_url.") from None

    # --- keys -------------------------------------------------------------------------
    def create_key(self, name: str) -> tuple[str, str]:
        """(key id, the key itself); only its hash is stored, so it is shown once."""
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = uuid.uuid4().hex
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(id=key_id, name=name, key_hash=hash_key(token), created_at=time.time(),
                                                  revoked=False))
        return key_id, token

    def key_owner(self, token: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys.c.id).where(api_keys.c.key_hash == hash_key(token),
                                                              api_keys.c.revoked.is_(False))).first()
        return row[0] if row else None

    def list_keys(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(api_keys.c.id, api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked)
                                .order_by(api_keys.c.created_at)).mappings().all()
        return [dict(r) for r in rows]

    def revoke_key(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(revoked=True)).rowcount > 0

    # --- threads ----------------------------------------------------------------------
    def create_thread(self, owner: str, title: str, profile: str, demographics: dict[str, Any] | None = None) -> dict:
        now = time.time()
        row = {"id": uuid.uuid4().hex, "owner": owner, "title": title, "profile": profile,
               "demographics": json.dumps(demographics or {}), "created_at": now, "updated_at": now}
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
            rows = conn.execute(sa.select(threads).where(threads.c.owner == owner)
                                .order_by(threads.c.updated_at.desc())).mappings().all()
        return [self._thread_out(r) for r in rows]

    def get_thread(self, owner: str, thread_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(threads).where(threads.c.id == thread_id, threads.c.owner == owner)).mappings().first()
        if row is None:
            raise NotFound(thread_id)
        return self._thread_out(row)

    def delete_thread(self, owner: str, thread_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(messages.delete().where(messages.c.thread_id == thread_id,
                                                 sa.exists().where(threads.c.id == thread_id, threads.c.owner == owner)))
            if conn.execute(threads.delete().where(threads.c.id == thread_id, threads.c.owner == owner)).rowcount == 0:
                raise NotFound(thread_id)

    def set_demographics(self, owner: str, thread_id: str, demographics: dict[str, Any]) -> dict[str, Any]:
        with self.engine.begin() as conn:
            done = conn.execute(threads.update().where(threads.c.id == thread_id, threads.c.owner == owner)
                                .values(demographics=json.dumps(demographics), updated_at=time.time())).rowcount
        if not done:
            raise NotFound(thread_id)
        return self.get_thread(owner, thread_id)

    # --- messages ---------------------------------------------------------------------
    def add_message(self, thread_id: str, role: str, content: str, thinking: str = "", sources: list | None = None,
                    search_query: str | None = None, prompt_tokens: int = 0, completion_tokens: int = 0,
                    title: str | None = None) -> dict[str, Any]:
        now = time.time()
        row = {"thread_id": thread_id, "role": role, "content": content, "thinking": thinking,
               "sources": json.dumps(sources or []), "search_query": search_query, "prompt_tokens": prompt_tokens,
               "completion_tokens": completion_tokens, "created_at": now}
        with self.engine.begin() as conn:
            new_id = conn.execute(messages.insert().values(**row)).inserted_primary_key[0]
            update = {"updated_at": now, **({"title": title} if title else {})}
            conn.execute(threads.update().where(threads.c.id == thread_id).values(**update))
        return self._message_out({**row, "id": new_id})

    @staticmethod
    def _message_out(row) -> dict[str, Any]:
        out = dict(row)
        out["sources"] = json.loads(out["sources"] or "[]")
        return out

    def history(self, thread_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(messages).where(messages.c.thread_id == thread_id)
                                .order_by(messages.c.id)).mappings().all()
        return [self._message_out(r) for r in rows]

    def close(self) -> None:
        self.engine.dispose()
