"""The agent's search: the tool it may call (the domain's ``search_tool``: the NHS domain's
``search_health_information``), the plain-text
``SEARCH:`` line for models without tool calling, reading the query out of a reply, and the same
decision made over a list of texts (the retrieval evaluation scores the agent's queries beside the
texts as written)."""

from __future__ import annotations

import json
import re

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import PipelineConfig
from t0_pipeline.domain import Domain, default_domain
from t0_pipeline.llm.client import LLMClient
from t0_pipeline.llm.structured import function_tool
from t0_pipeline.prompts import load_sections


def search_tool(domain: Domain | None = None) -> dict:
    """The search tool in ``domain``'s words (default: the NHS domain's)."""
    domain = domain or default_domain()
    return function_tool(
        domain.search_tool,
        domain.words()["search_description"],
        {
            "query": {
                "type": "string",
                "description": "A short search query written from the whole conversation.",
            }
        },
    )


SEARCH_TOOL = search_tool()
SEARCH_TOOL_NAME = SEARCH_TOOL["function"]["name"]
SEARCH_LINE = re.compile(r"^\s*SEARCH:\s*(.+?)\s*$", re.M | re.I)


def search_query(reply, text: str, tool_name: str = SEARCH_TOOL_NAME) -> str | None:
    """What the agent's reply searches for: its tool call's query (the person's own message when the
    arguments are unusable), or a ``SEARCH:`` line; None when it answered directly."""
    for call in reply.tool_calls:
        if call.get("name") == tool_name:
            try:
                args = json.loads(call.get("arguments") or "{}")
            except json.JSONDecodeError:
                args = {}
            query = args.get("query") if isinstance(args, dict) else None
            # bad arguments: the message
            return query.strip() if isinstance(query, str) and query.strip() else text
    match = SEARCH_LINE.search(reply.content or "")
    if match:  # the text protocol (also accepted from tool-calling models that wrote it out)
        return match.group(1)
    return None


def search_query_roles(cfg: PipelineConfig, profile_name: str) -> list[str]:
    """The LLM role that writes serve profile ``profile_name``'s search queries (to start its server
    first)."""
    profile = cfg.serve.profiles.get(profile_name)
    return [profile.agent] if profile else []


def agent_search_queries(
    cfg: PipelineConfig, profile_name: str, texts: list[str], cache=None, progress=None
) -> tuple[list[str], dict[str, int]]:
    """What the agent of serve profile ``profile_name`` searches for when each text opens a
    conversation: the same system prompt, tool and parsing as a served turn. A text the agent
    answers without searching, or a failed call, keeps its own words. Returns (queries, counts of
    rewritten / kept / failed)."""
    if profile_name not in cfg.serve.profiles:
        raise T0Error(
            f"retrieval_eval.rewrite_with names serve profile {profile_name!r}, which is not "
            f"configured; available: {', '.join(cfg.serve.profiles)}."
        )
    profile = cfg.serve.profiles[profile_name]
    prompts, _ = load_sections("agent", ("system", "system_no_tools"), cfg.prompts)
    client = LLMClient(profile.agent, cfg.llm, cache)
    system = prompts["system" if profile.agent_tools else "system_no_tools"]
    tool = search_tool(cfg.domain_spec)

    async def one(text: str):
        return await client.complete(
            [{"role": "system", "content": system}, {"role": "user", "content": text}],
            tools=[tool] if profile.agent_tools else None,
        )

    replies = client.run(texts, one, f"search queries ({profile.agent})", progress)
    counts = {"rewritten": 0, "kept": 0, "failed": 0}
    out = []
    for text, reply in zip(texts, replies):
        query = search_query(reply, text, tool["function"]["name"]) if reply.ok else None
        kind = "failed" if not reply.ok else "rewritten" if query and query != text else "kept"
        counts[kind] += 1
        out.append(query or text)
    return out, counts
