"""The conversation database's tables (SQLAlchemy Core): what :mod:`t0_pipeline.serve.store`
reads and writes, and the columns added since the first release (created on older databases)."""

import sqlalchemy as sa

KEY_PREFIX = "t0k_"
metadata = sa.MetaData()
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
)
threads = sa.Table(
    "threads",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(32), nullable=False, index=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("profile", sa.String(100), nullable=False),
    sa.Column("demographics", sa.Text, nullable=False, default="{}"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "thread_id",
        sa.String(32),
        sa.ForeignKey("threads.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("thinking", sa.Text, nullable=False, default=""),
    sa.Column("sources", sa.Text, nullable=False, default="[]"),
    sa.Column("search_query", sa.Text, nullable=True),
    sa.Column("prompt_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("completion_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column(
        "status", sa.String(16), nullable=False, default="ok", server_default="ok"
    ),  # ok | pending | failed
    sa.Column(
        "error", sa.Text, nullable=False, default="", server_default=""
    ),  # why a turn failed (technical)
)
users = sa.Table(
    "users",
    metadata,
    sa.Column("owner", sa.String(32), primary_key=True),
    sa.Column("demographics", sa.Text, nullable=False, default="{}"),
)
leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)
rate_buckets = sa.Table(
    "rate_buckets",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # the last take's verdict, read back in its transaction
    sa.Column("allowed", sa.Integer, nullable=False, default=0),
)
ADDED_COLUMNS = {
    "messages": {"status": "VARCHAR(16) NOT NULL DEFAULT 'ok'", "error": "TEXT NOT NULL DEFAULT ''"}
}
