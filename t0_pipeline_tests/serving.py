"""Helpers for the serving tests: a scripted agent and reasoner, and the app under a real
uvicorn."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

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


def start_serve(
    data: Path, config: Path, log: Path, *extra: str, port: int | None = None
) -> tuple[subprocess.Popen, str]:
    """`t0 serve` as its own process over ``data`` with ``config``, output to ``log``; its URL."""
    port = port or free_port()
    command = [sys.executable, "-m", "t0_pipeline.cli", "serve", "--data-dir", str(data)]
    command += ["--config", str(config), "--port", str(port), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    return proc, f"http://127.0.0.1:{port}"


def wait_serving(
    proc: subprocess.Popen, url: str, log: Path, timeout_s: float = 120, healthy: bool = False
) -> None:
    """Until the service answers (with ``healthy``: until /healthz says ok); AssertionError with its
    log when the process exits or the time runs out."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"t0 serve exited:\n{log.read_text()}")
        try:
            reply = httpx.get(f"{url}/healthz" if healthy else f"{url}/api/config", timeout=2)
            if not healthy or reply.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(
        f"t0 serve did not {'become healthy' if healthy else 'start'}:\n{log.read_text()}"
    )
