"""The predictors accuracy evaluation runs, one interface: ``async predict(case, seed) -> Answer``.

- :class:`ChatPredictor`: any litellm chat model, answering in text ("(condition, severity)",
  parsed tolerantly) or through the ``submit_condition_recommendation`` tool;
- :class:`BudgetPredictor`: a reasoning student with budget forcing, on a vLLM completions
  endpoint or a local transformers checkpoint;
- :class:`RetrievalBaseline`: the top retrieved condition and a rule-based disposition.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import (
    BudgetConfig,
    EvalModelConfig,
)
from t0_pipeline.domain import Domain, default_domain, topic_key
from t0_pipeline.evaluation.baseline import disposition_from_page
from t0_pipeline.evaluation.budget import generate_with_budget
from t0_pipeline.evaluation.budget_endpoint import complete_with_budget
from t0_pipeline.llm.cache import cache_key
from t0_pipeline.llm.calls import EndpointError, LLMReply
from t0_pipeline.llm.client import LLMClient
from t0_pipeline.llm.structured import function_tool
from t0_pipeline.task.scoring import (
    Prediction,
    Scale,
    judge,
    parse_answer_text,
)
from t0_pipeline.weights import weights_digest

log = logging.getLogger(__name__)


def submit_tool(domain: Domain | None = None) -> dict[str, Any]:
    """The tool a model answers through, in ``domain``'s words (the NHS domain's:
    ``submit_condition_recommendation`` with a condition and a severity)."""
    domain = domain or default_domain()
    return function_tool(
        domain.tool_name,
        f"Submit the {domain.topic} that best explains the {domain.asker}'s message and "
        f"{domain.decide}.",
        {
            topic_key(domain): {
                "type": "string",
                "description": f"One of the allowed {domain.plural('topic')}, exactly as listed, "
                "or 'inconclusive' when that is allowed.",
            },
            domain.answer: {"type": "string", "enum": list(domain.category_names)},
        },
    )


TOOL = submit_tool()
TOOL_NAME = TOOL["function"]["name"]


@dataclass
class Case:
    query: dict[str, Any]
    k: int
    retrieved: list[str] | None  # None at k = 0
    allowed: dict[str, str]  # slug → title
    messages: list[dict[str, str]]


@dataclass
class Answer:
    prediction: Prediction
    thinking: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None


def failed_answer(error: str) -> Answer:
    status = "timeout" if "timeout" in error.lower() else "failed"
    return Answer(Prediction(None, None, status), error=error)


def from_tool_calls(
    reply: LLMReply, allowed: dict[str, str], tolerant: bool = True, domain: Domain | None = None
) -> Prediction:
    """The submitted (condition, severity). The reference's reading wants exactly one call of the
    submit tool; ``tolerant`` reads the text of a reply without one, and the last of several."""
    domain = domain or default_domain()
    scale = Scale.of(domain)
    calls = [c for c in reply.tool_calls if c.get("name") == domain.tool_name]
    if not calls:
        if reply.tool_calls:
            return Prediction(None, None, "wrong_tool", json.dumps(reply.tool_calls))
        if not tolerant:
            return Prediction(None, None, "no_tool_call", reply.content or "")
        return parse_answer_text(reply.content, allowed, scale=scale)
    if len(calls) > 1 and not tolerant:
        return Prediction(None, None, "several_tool_calls", json.dumps(calls))
    raw = calls[-1].get("arguments") or ""
    try:
        args = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return Prediction(None, None, "unparsable", raw)
    if not isinstance(args, dict):
        return Prediction(None, None, "unparsable", raw)
    condition, severity = args.get(topic_key(domain)), args.get(domain.answer)
    return judge(
        None if condition is None else str(condition),
        None if severity is None else str(severity),
        allowed,
        raw,
        tolerant,
        scale,
    )


class ChatPredictor:
    """A litellm chat model; text answers or the submit tool."""

    def __init__(
        self, client: LLMClient, answer: str, tolerant: bool = False, domain: Domain | None = None
    ):
        self.client, self.answer, self.tolerant = client, answer, tolerant
        self.answer_format = "answer_tool" if answer == "tool" else "answer_text"
        self.domain = domain or default_domain()
        self.tool, self.scale = submit_tool(self.domain), Scale.of(self.domain)

    async def predict(self, case: Case, seed: int) -> Answer:
        reply = await self.client.complete(
            case.messages, tools=[self.tool] if self.answer == "tool" else None, seed=seed
        )
        if not reply.ok:
            return failed_answer(reply.error or "error")
        if self.answer == "tool":
            prediction = from_tool_calls(reply, case.allowed, self.tolerant, self.domain)
        else:
            prediction = parse_answer_text(reply.content, case.allowed, self.tolerant, self.scale)
        return Answer(
            prediction, reply.thinking, reply.prompt_tokens, reply.completion_tokens, reply.cached
        )


def answering_weights(settings: EvalModelConfig) -> str | None:
    """The weights an entry's answers come from: the served checkpoint's digest (set by
    model_server when the pipeline serves it, or by the user), a local transformers checkpoint's
    own, or None (an API model: its name says it)."""
    if settings.weights:
        return settings.weights
    return weights_digest(settings.model) if settings.backend == "transformers" else None


class BudgetPredictor:
    """A reasoning student with budget forcing: a vLLM completions endpoint, or a local transformers
    checkpoint."""

    answer_format = "answer_text"

    def __init__(
        self,
        client: LLMClient,
        settings: EvalModelConfig,
        tolerant: bool = False,
        scale: Scale | None = None,
    ):
        from t0_pipeline.chat import load_tokenizer

        self.client, self.settings, self.tolerant = client, settings, tolerant
        self.scale = scale or Scale.of()
        self.budget = (settings.budget or BudgetConfig()).with_format()
        self.weights = answering_weights(settings)
        self._lock = threading.Lock()  # one local generation at a time
        self._model = None
        self.tokenizer = None  # generates (transformers)
        self.template = None  # renders the prompt; None = ChatML by hand (Qwen's format)
        if settings.backend == "transformers":
            from transformers import AutoTokenizer

            source = settings.tokenizer or settings.model
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(source)
            except OSError as exc:
                raise T0Error(
                    f"cannot load a tokenizer from {source!r} ({exc.__class__.__name__}); set the "
                    "model entry's `tokenizer` (or `model`) to a local checkpoint folder."
                ) from None
            self.template = (
                self.tokenizer if getattr(self.tokenizer, "chat_template", None) else None
            )
        elif settings.tokenizer:
            self.template = load_tokenizer(settings.tokenizer)

    def _local(self):
        if self._model is None:
            from transformers import AutoModelForCausalLM

            try:
                self._model = AutoModelForCausalLM.from_pretrained(self.settings.model)
            except OSError as exc:
                raise T0Error(
                    f"cannot load the checkpoint {self.settings.model!r} "
                    f"({exc.__class__.__name__}); set the model entry's `model` to a local Hugging "
                    "Face checkpoint folder."
                ) from None
            self._model.eval()
        return self._model

    def _generate(self, prompt: str, seed: int) -> LLMReply:
        s = self.settings
        try:
            if s.backend == "transformers":
                with self._lock:
                    gen = generate_with_budget(
                        self._local(),
                        self.tokenizer,
                        prompt,
                        self.budget,
                        sample=bool(s.temperature),
                        seed=seed,
                        temperature=s.temperature or 1.0,
                    )
            else:
                retry = self.client.config  # retried like every other model call
                gen = complete_with_budget(
                    s.api_base or "",
                    s.served_name,
                    prompt,
                    self.budget,
                    timeout_s=s.timeout_s,
                    api_key=s.api_key(),
                    temperature=s.temperature,
                    seed=seed,
                    max_attempts=retry.max_attempts,
                    backoff_s=retry.backoff_s,
                    max_backoff_s=retry.max_backoff_s,
                    on_failure=self.client.check_endpoint,
                )
                self.client.endpoint_ok()
        except EndpointError:
            raise
        except T0Error as exc:
            return LLMReply(error=f"{'Timeout' if 'Timeout' in str(exc) else 'BudgetError'}: {exc}")
        return LLMReply(
            content=gen.answer,
            thinking=gen.thinking,
            completion_tokens=gen.thinking_tokens,
            finish_reason="budget" if gen.budget_exhausted else "stop",
        )

    async def predict(self, case: Case, seed: int) -> Answer:
        from t0_pipeline.chat import generation_prompt

        prompt = generation_prompt(case.messages, self.template, self.budget.think_start)
        params = {
            "budget": self.budget.model_dump(),
            "seed": seed,
            "temperature": self.settings.temperature,
            "backend": self.settings.backend,
        }
        if self.weights:  # the checkpoint's digest: a retrained student is asked afresh
            params["weights"] = self.weights
        key = cache_key(self.settings.model, [{"role": "prompt", "content": prompt}], params)
        reply = await self.client.cached(
            key, lambda: asyncio.to_thread(self._generate, prompt, seed)
        )
        if not reply.ok:
            return failed_answer(reply.error or "error")
        return Answer(
            parse_answer_text(reply.content, case.allowed, self.tolerant, self.scale),
            reply.thinking,
            0,
            reply.completion_tokens,
            reply.cached,
        )


class RetrievalBaseline:
    """Top-1 retrieved condition; disposition from the urgency wording of its page."""

    answer_format = "answer_text"

    def __init__(self, pages: dict[str, str], domain: Domain | None = None):
        self.domain, self.scale = domain, Scale.of(domain)
        self.pages = pages

    async def predict(self, case: Case, seed: int) -> Answer:
        if not case.retrieved:
            return Answer(Prediction(None, None, "empty"))
        top = case.retrieved[0]
        severity = disposition_from_page(
            case.query["query"], self.pages.get(top, ""), domain=self.domain
        )
        return Answer(Prediction(top, severity, "ok", f"({top}, {severity})"))


def make_predictor(
    settings: EvalModelConfig,
    client: LLMClient,
    pages: dict[str, str],
    scoring: str = "reference",
    domain: Domain | None = None,
):
    """The predictor for an entry; ``scoring`` (evaluation.scoring): how its answers are read,
    in ``domain``'s categories and tool (default: the NHS domain's)."""
    tolerant = scoring == "tolerant"
    if settings.backend == "retrieval":
        return RetrievalBaseline(pages, domain)
    if settings.backend in ("completions", "transformers"):
        return BudgetPredictor(client, settings, tolerant, Scale.of(domain))
    return ChatPredictor(client, settings.answer, tolerant, domain)


# --- one model --------------------------------------------------------------------------
