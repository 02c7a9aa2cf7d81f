"""A loopback OpenAI-compatible server: a test double for the *model*, nothing else.

It speaks the real protocol (``POST /v1/chat/completions``, JSON or server-sent-event
streaming, ``POST /v1/completions``, ``GET /v1/models``), so litellm's real client code
runs against it. Replies
are scripted: the first rule whose pattern matches the last user message (or any message)
decides the reply. Faults are queued per rule: 429 with Retry-After, 500, a hang past
the client's timeout, malformed JSON, a refusal, or thinking returned either as
``reasoning_content`` or inline ``<think>…</think>``. A rule may also answer with tool
calls (when the request offers tools), as a JSON reply or streamed deltas.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Reply = (
    str
    | Callable[[list[dict[str, Any]]], str]
    | Callable[[list[dict[str, Any]], dict[str, Any]], str]
)


def scripted(reply: Reply, body: dict[str, Any]) -> str:
    """A rule's reply: fixed text, or made from the messages (and, taking two arguments, the whole
    request, e.g. its sampling ``seed``, as a sampling model's reply depends on it)."""
    if not callable(reply):
        return reply
    import inspect

    try:
        takes_body = len(inspect.signature(reply).parameters) >= 2
    except (TypeError, ValueError):
        takes_body = False
    return reply(body["messages"], body) if takes_body else reply(body["messages"])


@dataclass
class Rule:
    pattern: re.Pattern[str]
    reply: Reply  # the content, or a function of the messages returning it
    reasoning: str | None = None  # returned as reasoning_content (or reasoning_field)
    # where the thinking goes: vLLM before 0.10 says reasoning_content, newer ones reasoning
    reasoning_field: str = "reasoning_content"
    inline_think: str | None = None  # prepended to the content as <think>…</think>
    # consumed one per request: 429, 500, "hang", "malformed"
    faults: list[str | int] = field(default_factory=list)
    # (name, arguments) pairs, or a function of the messages returning them; used when the request
    # offers tools.
    # Arguments may be a dict (sent as JSON) or a raw string (to script malformed arguments).
    tool_calls: (
        list[tuple[str, Any]] | Callable[[list[dict[str, Any]]], list[tuple[str, Any]]] | None
    ) = None


@dataclass
class FakeLLMState:
    rules: list[Rule] = field(default_factory=list)
    latency_s: float = 0.0  # added to every reply
    hang_s: float = 30.0  # how long a "hang" fault sleeps
    # between streamed pieces (a slow model; lets a test kill the server mid-answer)
    chunk_delay_s: float = 0.0
    retry_after: str = "1"
    tokenize: bool = True  # serve /tokenize (vLLM does; other completions servers do not)
    requests: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0  # the most requests the server was handling at once
    started_at: list[float] = field(default_factory=list)  # monotonic arrival time of each request
    lock: threading.Lock = field(default_factory=threading.Lock)

    def match(self, messages: list[dict[str, Any]]) -> Rule | None:
        text = "\n".join(str(m.get("content", "")) for m in messages)
        return next((rule for rule in self.rules if rule.pattern.search(text)), None)

    def calls_matching(self, text: str) -> int:
        return sum(
            1
            for r in self.requests
            if any(text in str(m.get("content", "")) for m in r["messages"])
        )


class FakeLLM:
    """The server runs on aiohttp's async web server in a background thread (its own event loop)."""

    def __init__(
        self,
        latency_s: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        served_name: str = "fake",
    ):
        self.state = FakeLLMState(latency_s=latency_s)
        self.host, self.served_name, self.healthy = host, served_name, True
        # as `vllm serve --enable-auto-tool-choice`; off, requests offering tools get vLLM's 400
        self.tool_choice = True
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = port

    # --- handlers ------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"object": "list", "data": [{"id": self.served_name, "object": "model"}]}
        )

    async def _health(self, request: web.Request) -> web.Response:
        """vLLM's /health: 200 once the engine is ready."""
        return web.Response(status=200 if self.healthy else 503)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        body = await request.json()
        if body.get("tools") and not self.tool_choice:
            return web.json_response(
                {
                    "error": {
                        "message": '"auto" tool choice requires --enable-auto-tool-choice and '
                        "--tool-call-parser to be set",
                        "type": "BadRequestError",
                    }
                },
                status=400,
            )
        with state.lock:
            state.requests.append(body)
            state.started_at.append(time.monotonic())
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            rule = state.match(body["messages"])
            fault = rule.faults.pop(0) if rule and rule.faults else None
        try:
            return await self._reply(request, body, rule, fault)
        finally:
            with state.lock:
                state.in_flight -= 1

    async def _reply(
        self, request: web.Request, body: dict, rule: Rule | None, fault: str | int | None
    ) -> web.StreamResponse:
        state = self.state
        if fault == "hang":
            await asyncio.sleep(state.hang_s)
        if state.latency_s:
            await asyncio.sleep(state.latency_s)
        if fault in (429, 503):
            return web.json_response(
                {"error": {"message": "slow down", "type": "rate_limit"}},
                status=fault,
                headers={"Retry-After": state.retry_after},
            )
        if isinstance(fault, int):
            return web.json_response(
                {"error": {"message": f"scripted {fault}", "type": "server_error"}}, status=fault
            )
        if rule is None:
            return web.json_response(
                {"error": {"message": "no scripted reply matches this prompt"}}, status=400
            )
        content = scripted(rule.reply, body)
        if fault == "malformed":
            content = content[: max(1, len(content) // 2)]  # truncated JSON
        if rule.inline_think is not None:
            content = f"<think>{rule.inline_think}</think>{content}"
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(content.split()),
            "total_tokens": prompt_tokens + len(content.split()),
        }
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if rule.reasoning is not None:
            message[rule.reasoning_field] = rule.reasoning
        calls = rule.tool_calls(body["messages"]) if callable(rule.tool_calls) else rule.tool_calls
        tool_calls = (
            [
                {
                    "id": "call_" + uuid.uuid4().hex[:8],
                    "type": "function",
                    "function": {
                        "name": name,
                        "arguments": args if isinstance(args, str) else json.dumps(args),
                    },
                }
                for name, args in (calls or [])
            ]
            if body.get("tools")
            else []
        )
        if tool_calls:
            message["tool_calls"] = tool_calls
            message["content"] = content or None
        finish = "tool_calls" if tool_calls else "stop"
        base = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:12],
            "created": int(time.time()),
            "model": body.get("model", "fake"),
        }
        if not body.get("stream"):
            return web.json_response(
                {
                    **base,
                    "object": "chat.completion",
                    "usage": usage,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                }
            )
        stream = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await stream.prepare(request)
        field_name = rule.reasoning_field
        pieces = [{field_name: w + " "} for w in (message.get(field_name) or "").split(" ") if w]
        pieces += [{"content": w} for w in re.findall(r"\S+\s*|\s+", content)]
        for i, call in enumerate(tool_calls):  # name first, then the arguments in two fragments
            args = call["function"]["arguments"]
            pieces.append(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            )
            for part in (args[: len(args) // 2], args[len(args) // 2 :]):
                pieces.append({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
        for i, delta in enumerate(pieces):
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", **delta} if i == 0 else delta,
                        "finish_reason": None,
                    }
                ],
            }
            await stream.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if state.chunk_delay_s:
                await asyncio.sleep(state.chunk_delay_s)
        final = {
            **base,
            "object": "chat.completion.chunk",
            "usage": usage,
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
        }
        await stream.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
        await stream.write_eof()
        return stream

    async def _completions(self, request: web.Request) -> web.Response:
        """vLLM-style text completions: the reply is cut at max_tokens words (finish_reason
        "length")."""
        state = self.state
        body = await request.json()
        messages = [{"role": "user", "content": body.get("prompt", "")}]
        with state.lock:
            state.requests.append(body)
            rule = state.match(messages)
            fault = rule.faults.pop(0) if rule and rule.faults else None
        if fault == "hang":
            await asyncio.sleep(state.hang_s)
        if isinstance(fault, int):
            return web.json_response(
                {"error": {"message": f"scripted {fault}", "type": "server_error"}}, status=fault
            )
        if rule is None:
            return web.json_response(
                {"error": {"message": "no scripted reply matches this prompt"}}, status=400
            )
        script = rule.reply(messages) if callable(rule.reply) else rule.reply
        text, n, finish = complete_script(script, body)
        prompt_tokens = len(str(body.get("prompt", "")).split())
        return web.json_response(
            {
                "id": "cmpl-" + uuid.uuid4().hex[:12],
                "object": "text_completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "text": text, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": n,
                    "total_tokens": prompt_tokens + n,
                },
            }
        )

    async def _tokenize(self, request: web.Request) -> web.StreamResponse:
        """vLLM's /tokenize: the token count of a prompt (here: its words); 404 with ``tokenize``
        off, as servers without it answer."""
        if not self.state.tokenize:
            return web.json_response({"detail": "Not Found"}, status=404)
        body = await request.json()
        tokens = token_ids(str(body.get("prompt", "")))
        return web.json_response({"count": len(tokens), "tokens": tokens, "max_model_len": 32768})

    # --- lifecycle -----------------------------------------------------------------
    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=512)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def on(self, pattern: str, reply: Reply, **kw) -> Rule:
        rule = Rule(re.compile(pattern, re.S), reply, **kw)
        self.state.rules.append(rule)
        return rule

    def __enter__(self) -> "FakeLLM":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>")  # ChatML's, as Qwen2.5 and SmolLM2 have them
SPECIAL_IDS = {t: 100_000 + i for i, t in enumerate(SPECIAL_TOKENS)}
EOS = "<|im_end|>"
_TOKEN = re.compile(r"\s+(?=<\|im_)|<\|im_start\|>|<\|im_end\|>|\s*(?:[^\s<]+|<)")


def script_tokens(script: str) -> list[str]:
    """A scripted text as tokens: each special token alone (the whitespace before it a token of its
    own), every other token a word (or a piece before a special token) with the whitespace before
    it."""
    tokens = _TOKEN.findall(script)
    if tokens and not tokens[0][0].isspace():
        tokens[0] = " " + tokens[0]
    return tokens


def token_ids(text: str) -> list[int]:
    """The double's token ids: special tokens have fixed ids, other tokens any stable number."""
    return [SPECIAL_IDS.get(t.strip(), len(t.strip()) % 1000) for t in script_tokens(text)]


def complete_script(script: str, body: dict[str, Any]) -> tuple[str, int, str]:
    """(text, completion tokens, finish reason) of a scripted continuation, generated as vLLM's
    completions endpoint would. ``<|im_end|>`` is the end of sequence, and a special token whose id
    is in ``stop_token_ids`` ends it too (left out of the text); before ``min_tokens`` tokens are
    out, those tokens are never sampled (the script's next token comes instead) and no stop string
    ends it. ``stop`` strings end it, cut, not included; ``max_tokens`` cuts it ("length"); with
    ``skip_special_tokens`` (on unless the request says otherwise) special tokens are left out of
    the text, and so cannot match a stop string either."""
    tokens = script_tokens(script)
    limit = int(body.get("max_tokens") or len(tokens) or 1)
    stops = [x for x in (body.get("stop") or []) if x]
    stop_ids = {*(body.get("stop_token_ids") or []), SPECIAL_IDS[EOS]}
    least = int(body.get("min_tokens") or 0)
    skip = body.get("skip_special_tokens", True)
    text, n = "", 0
    for token in tokens:
        if n >= limit:
            return text, n, "length"
        if SPECIAL_IDS.get(token.strip()) in stop_ids:
            if n < least:
                continue  # masked: not sampled before min_tokens
            return text, n + 1, "stop"
        piece = token
        if skip:
            for special in SPECIAL_TOKENS:
                piece = piece.replace(special, "")
        n += 1
        start = max(0, len(text) - max((len(x) for x in stops), default=0))
        text += piece
        if n >= least:
            found = [at for at in (text.find(x, start) for x in stops) if at >= 0]
            if found:
                return text[: min(found)], n, "stop"
    return text, n, "stop"


def budget_student(
    thinking: str, answer: str | Callable[[str], str], marker: str = "<|im_start|>answer"
) -> Callable[[list[dict[str, Any]]], str]:
    """A student on a completions endpoint, as a model trained on the chat format writes: while
    thinking, ``thinking`` then the end of its thinking (a newline and ``marker``, as in its
    training text); once the prompt ends with the forced answer marker, ``answer`` (or what
    ``answer(prompt)`` returns) and the end of its turn."""

    def reply(messages: list[dict[str, Any]]) -> str:
        prompt = messages[-1]["content"]
        said = answer(prompt) if callable(answer) else answer
        if prompt.endswith(marker + "\n"):
            return f"{said}{EOS}"
        return f"{thinking}\n{marker}\n{said}{EOS}"

    return reply


def main() -> None:
    """Serve in its own process: for benchmarks (a fixed reply, until stdin closes), or as a
    stand-in for ``vllm serve`` (``--port``: until SIGTERM), started by the pipeline's model-server
    resource in CI."""
    import argparse
    import os
    import signal
    import sys

    parser = argparse.ArgumentParser(
        description="Loopback OpenAI-compatible server with scripted replies."
    )
    parser.add_argument(
        "checkpoint", nargs="?", help="stand-in for vllm serve: the checkpoint it would load"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply")
    parser.add_argument(
        "--chunk-delay", type=float, default=0.0, help="seconds between streamed pieces"
    )
    parser.add_argument("--reply", default="ok", help="the reply content for every prompt")
    parser.add_argument(
        "--thinking", help="completions: the thinking, until the prompt ends with the answer marker"
    )
    parser.add_argument("--answer", help="completions: the answer after the marker")
    parser.add_argument(
        "--tool",
        nargs=2,
        metavar=("NAME", "JSON"),
        help="chat: call this tool when tools are offered",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, help="serve on this port until SIGTERM (as vllm serve does)"
    )
    parser.add_argument("--served-model-name", default="fake")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--enable-auto-tool-choice", action="store_true")
    parser.add_argument("--tool-call-parser")
    parser.add_argument(
        "--startup-delay", type=float, default=0.0, help="seconds of 'loading' before serving"
    )
    parser.add_argument("--unhealthy", action="store_true", help="/health answers 503 for ever")
    parser.add_argument("--fail", help="print this as the loading error and exit 1")
    args = parser.parse_args()
    print(
        f"stand-in server: loading {args.checkpoint} as {args.served_model_name} (tp "
        f"{args.tensor_parallel_size})",
        flush=True,
    )
    time.sleep(args.startup_delay)
    if args.fail:
        print(args.fail, file=sys.stderr, flush=True)
        sys.exit(1)
    if (
        args.checkpoint
        and args.checkpoint.startswith("/")
        and not os.path.isfile(os.path.join(args.checkpoint, "config.json"))
    ):
        print(
            f"OSError: {args.checkpoint} does not appear to have a file named config.json.",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    stop = threading.Event()
    with FakeLLM(
        latency_s=args.latency,
        host=args.host,
        port=args.port or 0,
        served_name=args.served_model_name,
    ) as server:
        server.healthy = not args.unhealthy
        server.state.chunk_delay_s = args.chunk_delay
        server.tool_choice = args.enable_auto_tool_choice and bool(args.tool_call_parser)
        # completions prompts are rendered chat templates; chat messages are not
        if args.thinking is not None:
            server.on(r"<\|im_start\|>", budget_student(args.thinking, args.answer or ""))
        server.on(
            ".*",
            args.reply,
            tool_calls=[(args.tool[0], json.loads(args.tool[1]))] if args.tool else None,
        )
        print(server.api_base, flush=True)
        if args.port is None:
            try:
                sys.stdin.read()  # serve until the parent closes our stdin
            except KeyboardInterrupt:
                pass
            return
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        print(
            f"INFO: serving {args.served_model_name} on http://{args.host}:{server.port}",
            flush=True,
        )
        stop.wait()
        print("INFO: shutting down", flush=True)


if __name__ == "__main__":
    main()
