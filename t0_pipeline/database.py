"""Database errors in one line: what a SQLAlchemy/DB-API error means for the person who configured
the database (nothing listening, password refused, no such database), with the URL shown without
its password. Used by the conversation store and the Dagster instance check."""

from __future__ import annotations

import re


def safe_url(url: str) -> str:
    """``url`` with any password masked (``postgresql://user:***@host/db``)."""
    try:
        import sqlalchemy as sa

        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: mask anything between ':' and '@'
        return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", url)


def with_installed_driver(url: str) -> str:
    """A bare ``postgresql://`` URL with the driver that is installed (psycopg2, which
    dagster-postgres brings): SQLAlchemy 2.1 reads a bare one as psycopg 3, which is not."""
    import sqlalchemy as sa

    parsed = sa.engine.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


# (pattern in the driver's message, what it means, what to do)
_KNOWN = (
    (
        r"password authentication failed|authentication failed|no password supplied",
        "the password was refused",
        "check the user and password",
    ),
    (
        r"connection refused|could not connect|no such file or directory|timeout expired|"
        r"could not translate host name|name or service not known|server closed the connection|"
        r"terminating connection|the database system is (shutting down|starting up)",
        "nothing answers there (is PostgreSQL running?)",
        "start the database server or fix the host and port",
    ),
    (r"database \"[^\"]+\" does not exist", "that database does not exist", "create it first"),
    (r"role \"[^\"]+\" does not exist", "that user does not exist", "create the role first"),
)


def describe_database_error(exc: BaseException) -> tuple[str, str]:
    """(what is wrong, what to do) for a database error; the driver's own first line when the
    cause is not one of the usual ones."""
    text = str(getattr(exc, "orig", None) or exc)
    for pattern, meaning, action in _KNOWN:
        if re.search(pattern, text, re.IGNORECASE):
            return meaning, action
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return f"{type(exc).__name__}: {first[:160]}", "check the database settings"
