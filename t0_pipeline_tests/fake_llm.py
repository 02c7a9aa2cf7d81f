"""A loopback OpenAI-compatible server: a test double for the *model*, nothing else.

It speaks the real protocol (``POST /v1/chat/completions``, JSON or server-sent-event
streaming, ``GET /v1/models``), so litellm's real client code runs against it. Replies
are scripted: the first rule whose pattern matches the last user message (or any message)
decides the reply. Faults are queued per rule: 429 with Retry-After, 500, a hang past
the client's timeout, malformed JSON, a refusal, or thinking returned either as
``reasoning_content`` or inline ``<think>…</think>``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = str | Callable[[list[dict[str, Any]]], str]


@dataclass
class Rule:
    pattern: re.Pattern[str]
    reply: Reply  # the content, or a function of the messages returning it
    reasoning: str | None = None  # returned as reasoning_content
    inline_think: str | None = None  # prepended to the content as <think>…</think>
    faults: list[str | int] = field(default_factory=list)  # consumed one per request: 429, 500, "hang", "malformed"


@dataclass
class FakeLLMState:
    rules: list[Rule] = field(default_factory=list)
    latency_s: float = 0.0  # added to every reply
    hang_s: float = 30.0  # how long a "hang" fault sleeps
    retry_after: str = "1"
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def match(self, messages: list[dict[str, Any]]) -> Rule | None:
        text = "\n".join(str(m.get("content", "")) for m in messages)
        return next((rule for rule in self.rules if rule.pattern.search(text)), None)

    def calls_matching(self, text: str) -> int:
        return sum(1 for r in self.requests if any(text in str(m.get("content", "")) for m in r["messages"]))


class FakeLLM:
    def __init__(self, latency_s: float = 0.0):
        self.state = FakeLLMState(latency_s=latency_s)
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None):
                body = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    return self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
                self._json(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                with state.lock:
                    state.requests.append(request)
                    rule = state.match(request["messages"])
                    fault = rule.faults.pop(0) if rule and rule.faults else None
                if fault == "hang":
                    time.sleep(state.hang_s)
                    return
                if state.latency_s:
                    time.sleep(state.latency_s)
                if fault in (429, 503):
                    return self._json(fault, {"error": {"message": "slow down", "type": "rate_limit"}},
                                      {"Retry-After": state.retry_after})
                if isinstance(fault, int):
                    return self._json(fault, {"error": {"message": f"scripted {fault}", "type": "server_error"}})
                if rule is None:
                    return self._json(400, {"error": {"message": "no scripted reply matches this prompt"}})
                content = rule.reply(request["messages"]) if callable(rule.reply) else rule.reply
                if fault == "malformed":
                    content = content[: max(1, len(content) // 2)]  # truncated JSON
                if rule.inline_think is not None:
                    content = f"<think>{rule.inline_think}</think>{content}"
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request["messages"])
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(content.split()),
                         "total_tokens": prompt_tokens + len(content.split())}
                message: dict[str, Any] = {"role": "assistant", "content": content}
                if rule.reasoning is not None:
                    message["reasoning_content"] = rule.reasoning
                if request.get("stream"):
                    return self._stream(request, message, usage)
                self._json(200, {"id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion",
                                 "created": int(time.time()), "model": request.get("model", "fake"),
                                 "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                                 "usage": usage})

            def _stream(self, request, message, usage):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                base = {"id": "chatcmpl-" + uuid.uuid4().hex[:12], "object": "chat.completion.chunk",
                        "created": int(time.time()), "model": request.get("model", "fake")}
                pieces = []
                if message.get("reasoning_content"):
                    pieces += [{"reasoning_content": w + " "} for w in message["reasoning_content"].split(" ")]
                pieces += [{"content": w} for w in re.findall(r"\S+\s*|\s+", message["content"])]
                for i, delta in enumerate(pieces):
                    if i == 0:
                        delta = {"role": "assistant", **delta}
                    chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}
                self.wfile.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
                self.wfile.flush()
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def on(self, pattern: str, reply: Reply, **kw) -> Rule:
        rule = Rule(re.compile(pattern, re.S), reply, **kw)
        self.state.rules.append(rule)
        return rule

    def __enter__(self) -> "FakeLLM":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

