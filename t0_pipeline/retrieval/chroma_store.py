"""The Chroma store an index lives in: the embedded ``PersistentClient`` under
``<data>/index/chroma`` by default, a Chroma server (``chroma.host``/``port``) for a team; and
what a server that stops answering mid-operation means for the index being written."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import ChromaConfig, DataPaths


def chroma_client(config: ChromaConfig, paths: DataPaths):
    """An embedded PersistentClient by default, an HttpClient when a host is configured."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if config.host:
        try:
            return chromadb.HttpClient(host=config.host, port=config.port, settings=settings)
        except Exception as exc:  # chromadb raises several types for an unreachable server
            raise T0Error(
                f"cannot reach the Chroma server at {config.host}:{config.port} ({exc}); start it "
                "(`chroma run --path DIR`) or unset chroma.host to use the embedded store."
            ) from None
    path = paths.chroma_dir(config)
    path.mkdir(parents=True, exist_ok=True)
    try:
        client = chromadb.PersistentClient(path=str(path), settings=settings)
        client.list_collections()  # opens the SQLite file: a damaged one fails here, not mid-run
        return client
    except Exception as exc:  # chromadb raises several types for a damaged store
        raise T0Error(
            f"the Chroma store at {path} cannot be opened ({exc.__class__.__name__}: "
            f"{str(exc)[:100]}); move it away and run `t0 index` to rebuild the index."
        ) from None


NOTHING_COMMITTED = (
    "nothing was committed, so the index's previous version is unchanged and still serves. Start "
    "the server again and re-run: the documents already written are kept"
)
COMMITTED = (
    "the new version was already committed and serves; the old chunks left behind are removed by "
    "the next run once the server is back"
)


@contextlib.contextmanager
def server_faults(config: ChromaConfig, doing: str, consequence: str) -> Iterator[None]:
    """A Chroma server that stops answering mid-operation (stopped, restarted, its host gone) as
    one line saying what it means for the index; the embedded store's errors pass as they are."""
    if not config.host:
        yield
        return
    import httpx

    try:
        yield
    except (httpx.TransportError, ConnectionError) as exc:
        raise T0Error(
            f"the Chroma server at {config.host}:{config.port} stopped answering while {doing} "
            f"({type(exc).__name__}: {str(exc)[:100] or 'no reply'}); {consequence}."
        ) from None
