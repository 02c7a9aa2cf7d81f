"""An OpenAI-compatible server for small chat models on CPU: the pipeline's model server where no
GPU exists.

vLLM serves the models on GPU machines; on a laptop or a CI machine the same roles (query writer,
teacher, student, agent) are served by this process, started and stopped by the model-server
resource exactly as vLLM is (``servers.command``), so litellm's real client and every stage's real
code run.

    python -m t0_pipeline.cpu_server CHECKPOINT --served-model-name NAME --host 127.0.0.1 --port
    8000

Input: a Hugging Face checkpoint folder (config, weights, tokenizer with a chat template). It speaks
the part of vLLM's protocol the pipeline uses: ``GET /health``, ``GET /v1/models``, ``POST
/v1/chat/completions`` and ``POST /v1/completions`` (``max_tokens``, ``temperature``, ``top_p``,
``seed``, ``stop``, ``min_tokens``, ``response_format`` with a JSON schema, enforced token by token
with xgrammar as vLLM's structured outputs do), and ``POST /tokenize``. Concurrent requests with the
same sampling settings are generated together in one batch (a 2-core machine makes ~3× the tokens
per second at batch 8). Tool calling is refused with a 400 naming the alternative (``answer:
text``): small models here have no tool-call format.
"""

import argparse
import asyncio
import json
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

UNSUPPORTED = ("tools", "tool_choice", "functions", "logprobs", "n")


@dataclass
class Job:
    """One request's generation: a rendered prompt and the settings that decide which batch it may
    join."""

    prompt: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]
    min_tokens: int
    schema: str | None  # JSON schema text ("" = any JSON object), None = free text
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    error: str | None = None

    def batch_key(self) -> tuple:
        return (self.temperature, self.top_p, self.stop, self.min_tokens, self.schema)


class Engine:
    """The model, its tokenizer and a worker thread generating batches of compatible jobs."""

    def __init__(
        self,
        checkpoint: str,
        quantize: str = "none",
        max_batch: int = 8,
        threads: int | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(
                f"{checkpoint} has a tokenizer without a chat template; serve an instruct "
                "checkpoint"
            )
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
        # weights as int8, activations quantised per batch: ~2× the tokens per second here
        if quantize == "int8":
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(
                    model, {torch.nn.Linear}, dtype=torch.qint8
                )
        self.model, self.vocab_size, self.max_batch = model, model.config.vocab_size, max_batch
        self.max_len = int(getattr(model.config, "max_position_embeddings", 8192))
        self.jobs: queue.Queue[Job] = queue.Queue()
        self._compiler = None
        self._grammars: dict[str, Any] = {}
        threading.Thread(target=self._work, daemon=True, name="generate").start()

    # --- prompts and grammars ------------------------------------------------------------
    def render(self, messages: list[dict[str, Any]]) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def grammar(self, schema: str):
        """The compiled grammar for a JSON schema ("" = any JSON), compiled once per schema."""
        if schema not in self._grammars:
            import xgrammar as xgr

            if self._compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(
                    self.tokenizer, vocab_size=self.vocab_size
                )
                self._compiler = xgr.GrammarCompiler(info)
            # compact JSON (no free whitespace): a small model otherwise pads its output with spaces
            self._grammars[schema] = (
                self._compiler.compile_json_schema(schema, any_whitespace=False)
                if schema
                else self._compiler.compile_builtin_json_grammar()
            )
        return self._grammars[schema]

    # --- the worker ------------------------------------------------------------------------
    def submit(self, job: Job) -> Job:
        self.jobs.put(job)
        return job

    def _work(self) -> None:
        waiting: list[Job] = []
        while True:
            first = waiting.pop(0) if waiting else self.jobs.get()
            time.sleep(
                0.02
            )  # requests sent together arrive a few ms apart: let them join this batch
            while True:
                try:
                    waiting.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            batch = [first] + [j for j in waiting if j.batch_key() == first.batch_key()][
                : self.max_batch - 1
            ]
            waiting = [j for j in waiting if j not in batch]
            started = time.monotonic()
            try:
                for job, result in zip(batch, self.generate(batch)):
                    job.result = result
                tokens = sum(j.result["completion_tokens"] for j in batch)  # type: ignore[index]
                print(
                    f"batch of {len(batch)}: {tokens} tokens in {time.monotonic() - started:.1f} s "
                    f"({len(waiting)} waiting)",
                    flush=True,
                )
            except Exception as exc:  # reported to each caller; the server keeps serving
                for job in batch:
                    job.error = f"{type(exc).__name__}: {exc}"
            for job in batch:
                job.done.set()

    def generate(self, batch: list[Job]) -> list[dict[str, Any]]:
        import torch

        first = batch[0]
        enc = self.tokenizer(
            [j.prompt for j in batch], return_tensors="pt", padding=True, add_special_tokens=False
        )
        width = enc["input_ids"].shape[1]
        longest = max(j.max_tokens for j in batch)
        if width + longest > self.max_len:
            raise ValueError(
                f"prompt ({width} tokens) + max_tokens ({longest}) exceed the model's context "
                f"({self.max_len}); shorten the prompt or lower max_tokens"
            )
        kwargs: dict[str, Any] = {
            "max_new_tokens": longest,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
        }
        if first.temperature > 0:
            kwargs.update(do_sample=True, temperature=first.temperature, top_p=first.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if first.stop:
            kwargs.update(stop_strings=list(first.stop), tokenizer=self.tokenizer)
        if first.min_tokens:
            kwargs["min_new_tokens"] = first.min_tokens
        if first.schema is not None:
            import xgrammar as xgr

            kwargs["logits_processor"] = [
                xgr.contrib.hf.LogitsProcessor([self.grammar(first.schema)] * len(batch))
            ]
        if first.seed is not None:
            torch.manual_seed(first.seed)
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        results = []
        for row, job in enumerate(batch):
            new = out[row, width:].tolist()
            ended = self.tokenizer.eos_token_id in new
            if ended:
                new = new[: new.index(self.tokenizer.eos_token_id)]
            new = new[: job.max_tokens]
            text = self.tokenizer.decode(new, skip_special_tokens=False)
            cut = min((at for at in (text.find(s) for s in job.stop) if at >= 0), default=-1)
            if cut >= 0:  # OpenAI semantics: the stop string itself is not returned
                text, ended = text[:cut], True
            finish = "stop" if ended or len(new) < job.max_tokens else "length"
            prompt_tokens = int(enc["attention_mask"][row].sum())
            results.append(
                {
                    "text": text,
                    "finish_reason": finish,
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(new),
                }
            )
        return results


def _job(body: dict[str, Any], prompt: str) -> Job:
    stop = body.get("stop") or []
    schema = None
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        schema = json.dumps(
            (fmt.get("json_schema") or {}).get("schema") or {}
        )  # key order is the output's order
    elif fmt.get("type") == "json_object":
        schema = ""
    return Job(
        prompt=prompt,
        max_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 256),
        temperature=float(
            body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0
        ),
        top_p=float(body.get("top_p") or 1.0),
        seed=body.get("seed"),
        stop=tuple([stop] if isinstance(stop, str) else stop),
        min_tokens=int(body.get("min_tokens") or 0),
        schema=schema,
    )


def build_app(engine: Engine, served_name: str, checkpoint: str):
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title=f"t0 CPU model server ({served_name})")
    created = int(time.time())

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse(
            {"error": {"message": message, "type": "invalid_request_error", "code": status}},
            status_code=status,
        )

    def check(body: dict[str, Any]) -> JSONResponse | None:
        if body.get("model") != served_name:
            return error(
                404,
                f"The model `{body.get('model')}` does not exist; this server serves "
                f"`{served_name}`.",
            )
        used = [k for k in UNSUPPORTED if body.get(k) not in (None, [], 1, False)]
        if used:
            return error(
                400,
                f"this CPU server does not support {', '.join(used)}; small models here answer in "
                "text (set answer: text on the model's evaluation entry)",
            )
        return None

    async def run(job: Job) -> dict[str, Any]:
        engine.submit(job)
        await asyncio.get_running_loop().run_in_executor(None, job.done.wait)
        if job.error:
            raise ValueError(job.error)
        return job.result  # type: ignore[return-value]

    def usage(result: dict[str, Any]) -> dict[str, int]:
        return {
            "prompt_tokens": result["prompt_tokens"],
            "completion_tokens": result["completion_tokens"],
            "total_tokens": result["prompt_tokens"] + result["completion_tokens"],
        }

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict:
        return {
            "object": "list",
            "data": [
                {
                    "id": served_name,
                    "object": "model",
                    "created": created,
                    "owned_by": "t0-pipeline",
                    "root": checkpoint,
                }
            ],
        }

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body = await request.json()
        text = body.get("prompt")
        if text is None:
            text = engine.render(body.get("messages") or [])
        ids = engine.tokenizer(text, add_special_tokens=False)["input_ids"]
        return {"tokens": ids, "count": len(ids), "max_model_len": engine.max_len}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        if (bad := check(body)) is not None:
            return bad
        if body.get("stream"):
            return error(400, "streaming is not supported by this CPU server; send stream: false")
        try:
            result = await run(_job(body, engine.render(body.get("messages") or [])))
        except ValueError as exc:
            return error(400, str(exc))
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": served_name,
            "usage": usage(result),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": result["finish_reason"],
                    "message": {"role": "assistant", "content": result["text"]},
                }
            ],
        }

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        if (bad := check(body)) is not None:
            return bad
        prompt = body.get("prompt")
        if isinstance(prompt, list):
            prompt = (
                prompt[0]
                if prompt and isinstance(prompt[0], str)
                else engine.tokenizer.decode(prompt)
            )
        try:
            result = await run(_job(body, prompt or ""))
        except ValueError as exc:
            return error(400, str(exc))
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": served_name,
            "usage": usage(result),
            "choices": [
                {
                    "index": 0,
                    "text": result["text"],
                    "finish_reason": result["finish_reason"],
                    "logprobs": None,
                }
            ],
        }

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m t0_pipeline.cpu_server", description=__doc__.split("\n\n")[0]
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
