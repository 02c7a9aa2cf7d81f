"""One conversational turn: the agent decides, retrieval runs as its tool, the reasoner answers.

The *agent* model sees the conversation (answers only, earlier thinking stripped) and either
answers directly (greetings, thanks, small talk) or calls ``search_health_information`` with a
query it writes from the whole conversation. Models without native tool calling use a
plain-text protocol instead (a ``SEARCH: …`` line; ``ServeProfile.agent_tools``); an agent too
small to decide is made to search every message (``always_search``). After a
search, the *reasoning* model answers over the retrieved documents. A trained student
(``ServeProfile.student``) is asked as it was trained and evaluated (the triage prompt, budget
forcing; :mod:`t0_pipeline.serve.student_turn`) and its "(condition, level of care)" becomes a
plain reply. Any other reasoner gets the documents and the person's demographics in its
**system** prompt (so context never piles up in the history), plus the trimmed history and the
new message, and streams its thinking and answer.

Input: a profile name, the stored history, the new message and the demographics. Output: an
async stream of events: ``("search", query)``, ``("sources", [...])``, ``("thinking", text)``,
``("answer", text)`` and finally ``("done", Turn)``. A failure raises :class:`TurnFailed`: one
plain sentence for the person, and the technical detail for whoever runs the service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from t0_pipeline.artifacts import T0Error
from t0_pipeline.chat import documents_block
from t0_pipeline.config import BudgetConfig, DataPaths, PipelineConfig, ServeProfile
from t0_pipeline.llm.calls import ModelCallError
from t0_pipeline.llm.client import LLMClient
from t0_pipeline.prompts import load_sections, render
from t0_pipeline.serve import student_turn
from t0_pipeline.serve.agent_search import (
    search_query,
    search_tool,
)
from t0_pipeline.serve.models import check_profiles
from t0_pipeline.task import prompt as triage_prompt
from t0_pipeline.task.demographics import demographics_text
from t0_pipeline.task.scoring import Scale

UNREACHABLE = "The assistant's model is not reachable right now; try again in a minute."
PLAIN = {
    "unreachable": UNREACHABLE,
    "auth": "The assistant's model refused this service's credentials; please tell whoever runs "
    "the service.",
    "not_found": "The assistant's model is not set up correctly; please tell whoever runs the "
    "service.",
    "interrupted": "The assistant stopped before finishing its answer; try again.",
    "search": "The health information search failed; try again, or tell whoever runs the service.",
    None: "The assistant could not answer this time; try again.",
}


class TurnFailed(T0Error):
    """A turn that could not finish: ``str(exc)`` is for the person, ``detail`` for the operator."""

    def __init__(self, trouble: str | None, detail: str):
        super().__init__(PLAIN.get(trouble, PLAIN[None]))
        self.trouble, self.detail = trouble, detail


@dataclass
class Turn:
    answer: str = ""
    thinking: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)
    search_query: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    timings_ms: dict[str, float] = field(default_factory=dict)


def approx_tokens(text: str) -> int:
    return len(text) // 4 + 1


def token_counter(tokenizer_name: str | None) -> Callable[[str], int]:
    if tokenizer_name is None:
        return approx_tokens
    from t0_pipeline.chat import load_tokenizer

    tok = load_tokenizer(tokenizer_name)
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


def fit_history(
    system: dict[str, str],
    history: list[dict[str, Any]],
    new: dict[str, str],
    budget: int,
    count: Callable[[str], int] = approx_tokens,
) -> list[dict[str, str]]:
    """The system prompt, as many of the latest turns as fit in ``budget`` tokens, and the new
    message.

    The system prompt and the new message are always kept; only answers are resent (thinking is
    stored apart); the kept history never starts with an orphaned assistant turn.
    """
    per_message = 4  # role and separators
    used = count(system["content"]) + count(new["content"]) + 2 * per_message
    kept: list[dict[str, str]] = []
    for msg in reversed(history):
        cost = count(msg["content"]) + per_message
        if used + cost > budget:
            break
        kept.append({"role": msg["role"], "content": msg["content"]})
        used += cost
    kept.reverse()
    while kept and kept[0]["role"] == "assistant":
        kept.pop(0)
    return [system, *kept, new]


class ChatService:
    """Holds the model clients and retrievers of every profile; runs turns."""

    def __init__(
        self,
        cfg: PipelineConfig,
        paths: DataPaths,
        retriever_factory: Callable[[ServeProfile], Any] | None = None,
    ):
        self.cfg, self.paths = cfg, paths
        self.count = token_counter(cfg.serve.tokenizer)
        self.agent_prompts, _ = load_sections("agent", ("system", "system_no_tools"), cfg.prompts)
        self.reasoner_prompts, _ = load_sections("reasoner", ("system",), cfg.prompts)
        # a student is asked with the prompt it was trained on, its answer turned into a reply
        self.triage_sections, _ = triage_prompt.load(cfg.prompts)
        self.replies = student_turn.load_replies(cfg.prompts)
        self.search_tool, self.scale = search_tool(cfg.domain_spec), Scale.of(cfg.domain_spec)
        self.profile_fields = cfg.domain_spec.field_names
        self._retriever_factory = retriever_factory or self._default_retriever
        self._retrievers: dict[str, Any] = {}
        # searches run one at a time (the embedder and store are shared) on one thread of their own,
        # so torch's worker threads stay with it between searches instead of being set up again for
        # each pool thread
        self._retrieval = ThreadPoolExecutor(1, thread_name_prefix="retrieval")
        self._clients: dict[str, LLMClient] = {}
        self._templates: dict[str | None, Any] = {}  # chat templates for budget-forced reasoners
        check_profiles(cfg)

    def _default_retriever(self, profile: ServeProfile):
        from t0_pipeline.retrieval.retrieve import Retriever

        return Retriever(
            profile.index, self.paths, self.cfg.embedding, self.cfg.chroma, self.cfg.retrieval
        )

    def profile(self, name: str) -> ServeProfile:
        if name not in self.cfg.serve.profiles:
            raise T0Error(
                f"unknown model {name!r}; available: {', '.join(self.cfg.serve.profiles)}."
            )
        return self.cfg.serve.profiles[name]

    def retriever(self, profile: ServeProfile):
        # one per index, shared by the profiles that use it
        if profile.index not in self._retrievers:
            self._retrievers[profile.index] = self._retriever_factory(profile)
        return self._retrievers[profile.index]

    def client(self, role: str) -> LLMClient:
        # conversations are never cached; a person is waiting: few, short retries
        if role not in self._clients:
            fast = self.cfg.llm.model_copy(
                update={
                    "max_attempts": self.cfg.serve.model_attempts,
                    "backoff_s": self.cfg.serve.model_backoff_s,
                    "max_backoff_s": self.cfg.serve.model_backoff_s,
                }
            )
            self._clients[role] = LLMClient(role, fast, None)
        return self._clients[role]

    async def rehearse_clients(self) -> None:
        """Each profile's agent (with its tool) and streamed reasoner through litellm once, no model
        called."""
        for profile in self.cfg.serve.profiles.values():
            await self.client(profile.agent).rehearse(
                [self.search_tool] if profile.agent_tools else None
            )
            if not profile.budget_forced:
                await self.client(profile.reasoner).rehearse(stream=True)

    def warm_up(self) -> int:
        """Load at start-up what a first turn would otherwise wait for: each profile's index,
        embedder and BM25 (one search), its model clients and litellm, a budget-forced reasoner's
        tokenizer. Documents served."""
        from t0_pipeline.chat import load_tokenizer
        from t0_pipeline.llm.calls import litellm_module

        litellm_module()
        documents = 0
        for profile in self.cfg.serve.profiles.values():
            retriever = self._retrieval.submit(self.retriever, profile).result()
            self._retrieval.submit(retriever.search, "warm up", 1, profile.mode).result()
            documents = max(documents, len(retriever.docs))
            for role in (profile.agent, profile.reasoner):
                self.client(role)
            if profile.budget_forced and profile.tokenizer not in self._templates:
                self._templates[profile.tokenizer] = load_tokenizer(profile.tokenizer)
        return documents

    async def _search(self, profile: ServeProfile, query: str) -> list[Any]:
        # the retriever is opened (and its models loaded) on that thread too
        def search() -> list[Any]:
            return self.retriever(profile).search(query, profile.k, profile.mode)

        return await asyncio.get_running_loop().run_in_executor(self._retrieval, search)

    async def turn(
        self,
        profile_name: str,
        history: list[dict[str, Any]],
        text: str,
        demographics: dict[str, Any],
    ) -> AsyncIterator[tuple[str, Any]]:
        profile = self.profile(profile_name)
        result = Turn()
        new = {"role": "user", "content": text}
        reply = await self._ask_agent(profile, history, new, result)
        query = search_query(reply, text, self.search_tool["function"]["name"])
        if query is None and profile.always_search:  # the agent must search: the person's words
            query = text
        if query is None:  # a direct answer: greetings, thanks, small talk
            result.answer = reply.content.strip()
            yield "answer", result.answer
            yield "done", result
            return
        result.search_query = query
        yield "search", query
        hits = await self._retrieve(profile, query, result)
        yield "sources", result.sources
        budget = self.cfg.serve.context_tokens
        if profile.student:
            words = student_turn.patient_words(history, text, budget // 2, self.count)
            messages = student_turn.triage_messages(
                self.triage_sections, hits, words, demographics, self.profile_fields
            )
        else:
            system = render(
                self.reasoner_prompts["system"],
                "reasoner",
                search_query=query,
                documents=documents_block(
                    [h.title for h in hits], [float(h.score) for h in hits], [h.text for h in hits]
                ),
                demographics=demographics_text(demographics, self.profile_fields),
            )
            messages = fit_history(
                {"role": "system", "content": system}, history, new, budget, self.count
            )
        async for event in self._reason(profile, messages, result, hits):
            yield event
        yield "done", result

    async def _ask_agent(self, profile: ServeProfile, history, new: dict, result: Turn):
        """The agent's reply to the conversation so far (a tool call, a search line, an answer)."""
        started = time.perf_counter()
        agent = self.client(profile.agent)
        system = self.agent_prompts["system" if profile.agent_tools else "system_no_tools"]
        budget = self.cfg.serve.context_tokens
        reply = await agent.complete(
            fit_history({"role": "system", "content": system}, history, new, budget, self.count),
            tools=[self.search_tool] if profile.agent_tools else None,
            tool_choice="required" if profile.always_search else "auto",
        )
        if not reply.ok:
            raise TurnFailed(
                reply.trouble,
                f"the agent model {agent.settings.model} at {agent.where()} failed "
                f"({reply.error}); check that it is running.",
            )
        result.prompt_tokens += reply.prompt_tokens
        result.completion_tokens += reply.completion_tokens
        result.timings_ms["agent"] = (time.perf_counter() - started) * 1000
        return reply

    async def _retrieve(self, profile: ServeProfile, query: str, result: Turn) -> list[Any]:
        started = time.perf_counter()
        try:
            hits = await self._search(profile, query)
        except T0Error as exc:
            detail = f"search of the {profile.index!r} index failed: {exc}"
            raise TurnFailed("search", detail) from None
        result.timings_ms["retrieval"] = (time.perf_counter() - started) * 1000
        result.sources = [
            {"slug": h.slug, "title": h.title, "url": h.url, "score": round(float(h.score), 4)}
            for h in hits
        ]
        return hits

    async def _reason(
        self, profile: ServeProfile, messages: list[dict[str, str]], result: Turn, hits: list[Any]
    ) -> AsyncIterator[tuple[str, Any]]:
        """The reasoner's thinking and answer pieces as they come (streamed, or budget-forced)."""
        started = time.perf_counter()
        thinking, answer = [], []
        if profile.budget_forced:
            pieces = self._budget_forced(profile, messages, hits)
        else:
            tags = (profile.think_open, profile.think_close)
            pieces = self.client(profile.reasoner).stream(messages, tags)
        try:
            async for kind, piece in pieces:
                if kind == "usage":
                    result.prompt_tokens += piece.get("prompt_tokens", 0)
                    result.completion_tokens += piece.get("completion_tokens", 0)
                    continue
                (thinking if kind == "thinking" else answer).append(piece)
                yield kind, piece
        except ModelCallError as exc:
            raise TurnFailed(exc.trouble, str(exc)) from None
        except T0Error as exc:
            raise TurnFailed(None, str(exc)) from None
        result.timings_ms["reasoner"] = (time.perf_counter() - started) * 1000
        result.thinking, result.answer = "".join(thinking).strip(), "".join(answer).strip()

    async def _budget_forced(
        self, profile: ServeProfile, messages: list[dict[str, str]], hits: list[Any]
    ) -> AsyncIterator[tuple[str, Any]]:
        """The reasoner through budget forcing on a completions endpoint (the thinking cap and
        "Wait" insertions); a student's answer becomes a plain reply, what it wrote kept with its
        thinking."""
        from t0_pipeline.chat import generation_prompt, load_tokenizer
        from t0_pipeline.evaluation.budget_endpoint import complete_with_budget

        settings = self.cfg.llm.roles[profile.reasoner]
        if profile.tokenizer not in self._templates:
            self._templates[profile.tokenizer] = load_tokenizer(profile.tokenizer)
        budget = (profile.budget or BudgetConfig()).with_format(self.cfg.chat_format)
        prompt = generation_prompt(messages, self._templates[profile.tokenizer], budget.think_start)
        try:
            serve = self.cfg.serve
            gen = await asyncio.to_thread(
                complete_with_budget,
                settings.api_base or "",
                settings.served_name,
                prompt,
                budget,
                settings.timeout_s,
                settings.api_key(),
                settings.temperature,
                settings.seed,
                serve.model_attempts,
                serve.model_backoff_s,
                serve.model_backoff_s,
            )
        except T0Error as exc:
            raise T0Error(f"the reasoner model {settings.model} failed: {exc}") from None
        thinking, answer = gen.thinking, gen.answer
        if profile.student:
            thinking = f"{thinking.strip()}\n\nThe model's answer: {answer.strip()}".strip()
            answer = student_turn.plain_reply(answer, hits, self.replies, self.scale)
        if thinking:
            yield "thinking", thinking
        yield "answer", answer
        yield "usage", {"completion_tokens": gen.thinking_tokens}
