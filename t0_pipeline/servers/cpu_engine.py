"""The CPU model server's engine: a Hugging Face chat model, its tokenizer, and a worker thread that
generates concurrent requests with the same sampling settings together in one batch (JSON schemas
enforced token by token with xgrammar). :mod:`t0_pipeline.servers.cpu_server` speaks the
protocol."""

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any


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
    # token ids that end the sequence like its end token (and, like it, are barred before
    # min_tokens), and whether special tokens are left out of the text (vLLM's default)
    stop_token_ids: tuple[int, ...] = ()
    skip_special_tokens: bool = True
    # OpenAI's (and vLLM's): subtracted from a token's logit per time it was already generated, and
    # once if it was at all (a small model's loops)
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, Any] | None = None
    error: str | None = None

    def batch_key(self) -> tuple:
        return (
            self.temperature,
            self.top_p,
            self.stop,
            self.min_tokens,
            self.schema,
            self.stop_token_ids,
            self.frequency_penalty,
            self.presence_penalty,
        )


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
            # requests sent together arrive a few ms apart: let them join this batch
            time.sleep(0.02)
            while True:
                try:
                    waiting.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            alike = [j for j in waiting if j.batch_key() == first.batch_key()]
            batch = [first] + alike[: self.max_batch - 1]
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
        """One ``model.generate`` for a batch of jobs with the same settings (left-padded)."""
        import torch

        enc = self.tokenizer(
            [j.prompt for j in batch], return_tensors="pt", padding=True, add_special_tokens=False
        )
        width = enc["input_ids"].shape[1]
        # every job was checked alone (check_fits) before it could join; padding adds no positions
        longest = max(j.max_tokens for j in batch)
        with torch.inference_mode():
            out = self.model.generate(**enc, **self._settings(batch, longest, width))
        return [
            self._result(job, out[row, width:].tolist(), int(enc["attention_mask"][row].sum()))
            for row, job in enumerate(batch)
        ]

    def _settings(self, batch: list[Job], max_new: int, width: int) -> dict[str, Any]:
        """``generate`` keyword arguments for the batch's shared settings (``width``: the padded
        prompts' length, where generated tokens start)."""
        first = batch[0]
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "pad_token_id": self.tokenizer.pad_token_id,
            # min_new_tokens bars every one of them, as vLLM's min_tokens bars stop_token_ids
            "eos_token_id": [self.tokenizer.eos_token_id, *first.stop_token_ids],
        }
        # sampling is done by SeededSampler, row by row with each job's own generator, after every
        # other processor; generate itself only takes the one token left
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if first.stop:
            kwargs.update(stop_strings=list(first.stop), tokenizer=self.tokenizer)
        if first.min_tokens:
            kwargs["min_new_tokens"] = first.min_tokens
        processors: list[Any] = []
        if first.frequency_penalty or first.presence_penalty:
            processors.append(Penalties(width, first.frequency_penalty, first.presence_penalty))
        if first.schema is not None:
            import xgrammar as xgr

            processors.append(
                xgr.contrib.hf.LogitsProcessor([self.grammar(first.schema)] * len(batch))
            )
        if first.temperature > 0:
            top_k = getattr(self.model.generation_config, "top_k", None)
            processors.append(SeededSampler(batch, top_k))
        if processors:
            kwargs["logits_processor"] = processors
        return kwargs

    def check_fits(self, prompt: str, max_tokens: int) -> str | None:
        """Why a job cannot be generated (its prompt and max_tokens past the context), else None."""
        tokens = self.count(prompt)
        if tokens + max_tokens > self.max_len:
            return (
                f"the prompt ({tokens} tokens) + max_tokens ({max_tokens}) exceed the model's "
                f"context ({self.max_len}); shorten the prompt or lower max_tokens"
            )
        return None

    def _result(self, job: Job, new: list[int], prompt_tokens: int) -> dict[str, Any]:
        """One job's text, cut at its end of sequence, token limit or stop string."""
        enders = {self.tokenizer.eos_token_id, *job.stop_token_ids}
        end = next((i for i, t in enumerate(new[: job.max_tokens]) if t in enders), None)
        ended = end is not None
        # vLLM counts the token it stopped on
        counted = end + 1 if ended else min(len(new), job.max_tokens)
        new = new[:end] if ended else new[: job.max_tokens]
        text = self.tokenizer.decode(new, skip_special_tokens=job.skip_special_tokens)
        cut = min((at for at in (text.find(s) for s in job.stop) if at >= 0), default=-1)
        if cut >= 0:  # OpenAI semantics: the stop string itself is not returned
            text, ended = text[:cut], True
        return {
            "text": text,
            "finish_reason": "stop" if ended or len(new) < job.max_tokens else "length",
            "prompt_tokens": prompt_tokens,
            "completion_tokens": counted,
        }


class Penalties:
    """OpenAI's frequency and presence penalties, as vLLM applies them: over the tokens generated so
    far (from ``width`` on), never the prompt's."""

    def __init__(self, width: int, frequency: float, presence: float):
        self.width, self.frequency, self.presence = width, frequency, presence

    def __call__(self, input_ids, scores):
        import torch

        generated = input_ids[:, self.width :]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(
            1, generated, torch.ones(generated.shape, dtype=scores.dtype)
        )
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


class SeededSampler:
    """Sampling row by row, each job with its own generator (seeded by its request's seed, else
    from the global one): a seeded request gives the same text alone or batched. Temperature, top-p
    and the model's top-k are applied here, after every other processor; the row's scores are then
    left with the one sampled token, which generate's greedy step takes."""

    def __init__(self, batch: list[Job], top_k: int | None):
        import torch

        self.temperature = [j.temperature for j in batch]
        self.top_p = [j.top_p for j in batch]
        self.top_k = top_k or 0
        self.generators = []
        for job in batch:
            generator = torch.Generator()
            if job.seed is not None:
                generator.manual_seed(job.seed % 2**64)
            else:
                generator.seed()
            self.generators.append(generator)

    def __call__(self, input_ids, scores):
        import torch

        out = torch.full_like(scores, float("-inf"))
        for row in range(scores.shape[0]):
            logits = scores[row].float() / self.temperature[row]
            if not torch.isfinite(logits).any():  # nothing allowed: leave the row as it was
                out[row] = scores[row]
                continue
            if self.top_k and self.top_k < logits.shape[0]:
                cut = torch.topk(logits, self.top_k).values[-1]
                logits = logits.masked_fill(logits < cut, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            if self.top_p[row] < 1.0:
                ordered, order = torch.sort(probs, descending=True)
                before = torch.cumsum(ordered, dim=-1) - ordered  # mass above each token
                ordered = ordered.masked_fill(before >= self.top_p[row], 0.0)
                probs = torch.zeros_like(probs).scatter_(0, order, ordered)
            token = torch.multinomial(probs, 1, generator=self.generators[row])
            out[row, token] = 0.0
        return out
