"""Helpers for the serving tests: a scripted agent and reasoner, and the app under a real
uvicorn."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

AGENT_MARK = "conversational assistant of a health information service"
REASONER_MARK = "You help people understand their symptoms"
GREETINGS = ("hello", "hi", "thanks", "thank you")


def last_user(messages) -> str:
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def agent_text(messages) -> str:
    text = last_user(messages)
    if text.lower().strip("!. ") in GREETINGS:
        return "Hello! How can I help you today?"
    return ""  # it calls the tool instead


def agent_tool_calls(messages):
    text = last_user(messages)
    if text.lower().strip("!. ") in GREETINGS:
        return []
    return [("search_health_information", {"query": f"symptoms: {text}"})]


def reasoner_answer(messages) -> str:
    return f"Answer to: {last_user(messages)}"


def script(server, latency_s: float = 0.0) -> None:
    """The agent searches for anything but a greeting; the reasoner thinks, then echoes the
    question."""
    server.state.latency_s = latency_s
    server.on(
        REASONER_MARK, reasoner_answer, reasoning="I compared the documents with the symptoms."
    )
    server.on(AGENT_MARK, agent_text, tool_calls=agent_tool_calls)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app, port: int | None = None):
    """The app under uvicorn on loopback (lifespan included); yields its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
