"""An OpenAI-compatible server for small chat models on CPU: the pipeline's model server where no
GPU exists.

vLLM serves the models on GPU machines; on a laptop or a CI machine the same roles (query writer,
teacher, student, agent) are served by this process, started and stopped by the model-server
resource exactly as vLLM is (``servers.command``), so litellm's real client and every stage's real
code run.

    python -m t0_pipeline.servers.cpu_server CHECKPOINT --served-model-name NAME --host 127.0.0.1
    --port 8000

Input: a Hugging Face checkpoint folder (config, weights, tokenizer with a chat template). It speaks
the part of vLLM's protocol the pipeline uses: ``GET /health``, ``GET /v1/models``, ``POST
/v1/chat/completions`` and ``POST /v1/completions`` (``max_tokens``, ``temperature``, ``top_p``,
``seed``, ``stop``, ``stop_token_ids``, ``min_tokens``, ``skip_special_tokens``,
``frequency_penalty``, ``presence_penalty``, ``response_format`` with a JSON schema, enforced
token by token with xgrammar as vLLM's structured outputs do), and ``POST /tokenize``. Concurrent
requests with the same sampling settings are generated together in one batch (a 2-core machine
makes ~3× the tokens per second at batch 8). Tool calling is refused with a 400 naming the
alternative (``answer: text``): small models here have no tool-call format.

With ``$T0_REQUEST_LOG`` set to a file, every generation request is appended to it as one JSON line
(served name, endpoint, the prompt exactly as the model reads it, the JSON schema it was held to):
what a run really asked its models, for audits and for tests that judge the prompts.
"""

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from t0_pipeline.servers.cpu_engine import Engine, Job
from t0_pipeline.servers.cpu_requests import (
    BadRequest,
    ChatRequest,
    CompletionRequest,
    Message,
    Sampling,
    TokenizeRequest,
    parse,
    read_body,
)

UNSUPPORTED = ("tools", "tool_choice", "functions", "logprobs", "n")


def _job(req: Sampling, prompt: str) -> Job:
    stops = [req.stop] if isinstance(req.stop, str) else req.stop or []
    return Job(
        prompt=prompt,
        max_tokens=req.wanted_tokens(),
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=req.top_p or 1.0,
        seed=req.seed,
        stop=tuple(stops),
        min_tokens=req.min_tokens,
        schema=req.schema(),
        stop_token_ids=tuple(req.stop_token_ids or ()),
        skip_special_tokens=req.skip_special_tokens,
        frequency_penalty=req.frequency_penalty or 0.0,
        presence_penalty=req.presence_penalty or 0.0,
    )


def _plain(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages as the chat template takes them (text parts joined)."""
    out = []
    for m in messages:
        content = m.content
        if isinstance(content, list):
            content = "".join(part["text"] for part in content)
        out.append({"role": m.role, "content": content or ""})
    return out


class _Api:
    """The protocol's replies for one engine (errors in OpenAI's shape)."""

    def __init__(self, engine: Engine, served_name: str, checkpoint: str):
        self.engine, self.name, self.checkpoint = engine, served_name, checkpoint
        self.created = int(time.time())

    @staticmethod
    def error(status: int, message: str, param: str | None = None):
        from fastapi.responses import JSONResponse

        kind = "invalid_request_error" if status < 500 else "server_error"
        body = {"error": {"message": message, "type": kind, "param": param, "code": status}}
        return JSONResponse(body, status_code=status)

    def served(self, body: dict[str, Any]) -> None:
        """A 404 first for a request to another model, whatever else is wrong with it (as vLLM)."""
        model = body.get("model")
        if isinstance(model, str) and model != self.name:
            raise BadRequest(
                f"The model `{model}` does not exist; this server serves `{self.name}`.",
                "model",
                404,
            )

    def check(self, req: Sampling) -> None:
        """A :class:`BadRequest` for a request this server cannot answer."""
        extra = req.model_extra or {}
        used = [k for k in UNSUPPORTED if extra.get(k) not in (None, [], 1, False)]
        if used:
            raise BadRequest(
                f"this CPU server does not support {', '.join(used)}; small models here answer in "
                "text (set answer: text on the model's evaluation entry)",
                used[0],
            )
        if req.stream:
            raise BadRequest(
                "streaming is not supported by this CPU server; send stream: false", "stream"
            )

    async def prepared(self, req: Sampling, prompt: str) -> Job:
        """The request's job, checked alone before it may join a batch: its prompt and max_tokens
        fit the context, and its JSON schema compiles."""
        job = _job(req, prompt)
        if (why := self.engine.check_fits(prompt, job.max_tokens)) is not None:
            raise BadRequest(why, "max_tokens")
        if job.schema is not None:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, self.engine.grammar, job.schema)
            except Exception as exc:  # xgrammar's own errors: the schema is what is wrong
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise BadRequest(
                    f"response_format: the JSON schema cannot be used ({first[:200]})",
                    "response_format",
                ) from None
        return job

    async def run(self, job: Job) -> dict[str, Any]:
        self.engine.submit(job)
        await asyncio.get_running_loop().run_in_executor(None, job.done.wait)
        if job.error:
            raise RuntimeError(job.error)
        return job.result  # type: ignore[return-value]

    def reply(self, kind: str, result: dict[str, Any], choice: dict[str, Any]) -> dict[str, Any]:
        prefix = "chatcmpl" if kind == "chat.completion" else "cmpl"
        usage = {
            "prompt_tokens": result["prompt_tokens"],
            "completion_tokens": result["completion_tokens"],
            "total_tokens": result["prompt_tokens"] + result["completion_tokens"],
        }
        return {
            "id": f"{prefix}-{uuid.uuid4().hex}",
            "object": kind,
            "created": int(time.time()),
            "model": self.name,
            "usage": usage,
            "choices": [{"index": 0, "finish_reason": result["finish_reason"], **choice}],
        }

    def models(self) -> dict:
        model = {
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "t0-pipeline",
            "root": self.checkpoint,
        }
        return {"object": "list", "data": [model]}

    def record(self, endpoint: str, prompt: str, body: dict[str, Any]) -> None:
        """One line in ``$T0_REQUEST_LOG`` (see the module's docstring), when it is set."""
        path = os.environ.get("T0_REQUEST_LOG")
        if not path:
            return
        line = {
            "model": self.name,
            "endpoint": endpoint,
            "prompt": prompt,
            "response_format": body.get("response_format"),
        }
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")

    def tokenize(self, body: dict[str, Any]) -> dict:
        req = parse(TokenizeRequest, body)
        text = req.prompt if req.prompt is not None else self.engine.render(_plain(req.messages))
        ids = self.engine.tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"tokens": ids, "count": len(ids), "max_model_len": self.engine.max_len}

    async def chat(self, body: dict[str, Any]):
        self.served(body)
        req = parse(ChatRequest, body)
        self.check(req)
        prompt = self.engine.render(_plain(req.messages))
        job = await self.prepared(req, prompt)
        self.record("chat", prompt, body)
        result = await self.run(job)
        message = {"role": "assistant", "content": result["text"]}
        return self.reply("chat.completion", result, {"message": message})

    async def completions(self, body: dict[str, Any]):
        self.served(body)
        req = parse(CompletionRequest, body)
        self.check(req)
        prompt = req.prompt
        if isinstance(prompt, list):  # a batch of one prompt, or token ids
            if len(prompt) > 1 and isinstance(prompt[0], str):
                raise BadRequest("send one prompt per request", "prompt")
            if prompt and isinstance(prompt[0], str):
                prompt = prompt[0]
            else:
                if any(not 0 <= t < self.engine.vocab_size for t in prompt):
                    raise BadRequest("prompt holds token ids outside the vocabulary", "prompt")
                prompt = self.engine.tokenizer.decode(prompt)
        job = await self.prepared(req, prompt)
        self.record("completions", prompt, body)
        result = await self.run(job)
        return self.reply("text_completion", result, {"text": result["text"], "logprobs": None})


def build_app(engine: Engine, served_name: str, checkpoint: str):
    from fastapi import FastAPI, Request

    app = FastAPI(title=f"t0 CPU model server ({served_name})")
    api = _Api(engine, served_name, checkpoint)

    async def answer(request: Request, handle):
        """One request: read and checked alone (a 4xx names what is wrong), then answered; a
        failure while generating is a 500 with its reason."""
        try:
            body = read_body(await request.body())
            return await handle(body)
        except BadRequest as bad:
            return api.error(bad.status, bad.message, bad.param)
        except RuntimeError as exc:
            return api.error(500, f"generation failed: {exc}")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict:
        return api.models()

    async def tokenize_body(body):
        return api.tokenize(body)

    @app.post("/tokenize")
    async def tokenize(request: Request):
        return await answer(request, tokenize_body)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await answer(request, api.chat)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answer(request, api.completions)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m t0_pipeline.servers.cpu_server", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "checkpoint", help="a Hugging Face checkpoint folder (config.json, weights, tokenizer)"
    )
    parser.add_argument(
        "--served-model-name", help="the name clients ask for (default: the folder's name)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--quantize",
        choices=["none", "int8"],
        default="none",
        help="int8: dynamic int8 linear layers, ~2x faster on CPU, slightly different tokens",
    )
    parser.add_argument(
        "--max-batch", type=int, default=8, help="requests generated together at most"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: every core)"
    )
    args = parser.parse_args(argv)
    name = args.served_model_name or Path(args.checkpoint).name
    print(f"loading {args.checkpoint} as {name!r} (quantize={args.quantize})", flush=True)
    started = time.monotonic()
    try:
        if not (Path(args.checkpoint) / "config.json").is_file():
            raise FileNotFoundError(f"no config.json in {args.checkpoint}")
        engine = Engine(args.checkpoint, args.quantize, args.max_batch, args.threads)
    except Exception as exc:
        # the model-server resource reads this line to say why the server did not start
        print(
            f"error: {args.checkpoint} is not a checkpoint this server can load "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
            flush=True,
        )
        return 1
    print(
        f"loaded in {time.monotonic() - started:.1f} s; serving on "
        f"http://{args.host}:{args.port}/v1",
        flush=True,
    )
    import uvicorn

    uvicorn.run(
        build_app(engine, name, str(args.checkpoint)),
        host=args.host,
        port=args.port,
        log_level="warning",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
