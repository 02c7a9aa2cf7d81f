"""One model call and what came of it: litellm set up for the pipeline, one attempt as a plain
outcome, replies and their accounting, and the errors that say an endpoint itself is unusable.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import RoleConfig
from t0_pipeline.llm.thinking import reasoning_of
from t0_pipeline.retry import parse_retry_after

# litellm fetches its model price map from the internet on import unless told otherwise
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

log = logging.getLogger(__name__)


def litellm_module():
    import litellm

    litellm.suppress_debug_info = True
    # it warns on every self-hosted model's price entry
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    litellm.drop_params = True  # a provider that lacks e.g. `seed` ignores it instead of failing
    return litellm


class ModelCallError(T0Error):
    """A model call that failed for good; ``trouble`` says why when known: "unreachable", "auth",
    "not_found" (the endpoint's fault) or "interrupted" (a stream that broke part-way)."""

    def __init__(self, message: str, trouble: str | None = None):
        super().__init__(message)
        self.trouble = trouble


@dataclass
class LLMReply:
    content: str = ""  # the answer, thinking removed
    thinking: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cached: bool = False
    attempts: int = 0
    error: str | None = None  # set when the call finally failed
    finish_reason: str | None = None
    # {"name", "arguments" (JSON text)}
    tool_calls: list[dict[str, str]] = field(default_factory=list)
    # on failure: "unreachable", "auth" or "not_found" when the endpoint is at fault
    trouble: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Usage:
    """What a run spent; goes into asset metadata."""

    requests: int = 0  # HTTP calls made (retries included)
    completed: int = 0  # calls that returned a reply
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    repairs: int = 0  # malformed JSON re-asked
    invalid_json: int = 0  # structured replies still invalid after the repair
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str | None = None

    def add(self, reply: LLMReply) -> None:
        if reply.cached:
            self.cache_hits += 1
        elif reply.ok:
            self.completed += 1
            self.prompt_tokens += reply.prompt_tokens
            self.completion_tokens += reply.completion_tokens
            self.cost += reply.cost
        else:
            self.failures += 1
            kind = (reply.error or "error").split(":", 1)[0]
            self.errors[kind] = self.errors.get(kind, 0) + 1
            self.first_error = self.first_error or reply.error

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


RETRYABLE = (
    "RateLimitError",
    "InternalServerError",
    "ServiceUnavailableError",
    "BadGatewayError",
    "Timeout",
    "APIConnectionError",
    "APIError",
)


def short_error(text: str) -> str:
    """An error without litellm's stacked prefixes ("InternalServerError: … OpenAIException -
    Connection error." → "InternalServerError: Connection error.")."""
    text = text.replace("litellm.", "")
    kind = text.split(":", 1)[0]
    tail = re.split(r"\w*Exception - ", text)[-1].strip()
    return f"{kind}: {tail}" if tail and tail != text else re.sub(r"^(\w+: )\1+", r"\1", text)


class EndpointError(T0Error):
    """The endpoint itself is unusable (nothing answering, key refused, model not served): the stage
    stops."""


AUTH_KINDS = ("AuthenticationError", "PermissionDeniedError")


def endpoint_trouble(kind: str, status: int | None, causes: Sequence[str] = ()) -> str | None:
    """ "unreachable", "auth" or "not_found" when an error is the endpoint's rather than one
    request's.

    litellm reports a refused connection, an unknown host and a TLS failure as an
    InternalServerError ("Connection error."); the cause chain (openai's APIConnectionError, httpx's
    ConnectError) tells them apart from a real server error. A timeout is not "unreachable": a slow
    server may still answer.
    """
    if kind in AUTH_KINDS or status in (401, 403):
        return "auth"
    if kind == "NotFoundError" or status == 404:
        return "not_found"
    if "APITimeoutError" in causes or "Timeout" in kind:
        return None
    if kind == "APIConnectionError" or {
        "ConnectError",
        "APIConnectionError",
        "SSLError",
        "SSLCertVerificationError",
        "ClientConnectorError",
        "ClientConnectorDNSError",
    } & set(causes):
        return "unreachable"
    return None


def exception_chain(exc: BaseException) -> list[str]:
    names, seen = [], set()
    while exc is not None and id(exc) not in seen and len(names) < 12:
        seen.add(id(exc))
        names.append(type(exc).__name__)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return names


def retry_after_of(exc: Exception) -> float | None:
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        value = headers.get("retry-after") if headers else None
        if value:
            return parse_retry_after(value)
    return None


async def attempt_once(kwargs: dict[str, Any]) -> dict[str, Any]:
    """One litellm call → a plain outcome dict (reply fields, or the error's kind, status and
    Retry-After)."""
    litellm = litellm_module()
    try:
        response = await litellm.acompletion(**kwargs)
    except Exception as exc:  # litellm maps provider errors onto its own exception types
        status = getattr(exc, "status_code", None)
        return {
            "ok": False,
            "kind": type(exc).__name__,
            "status": status,
            "message": str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
            "retry_after": retry_after_of(exc),
            "trouble": endpoint_trouble(type(exc).__name__, status, exception_chain(exc)),
        }
    message = response.choices[0].message
    usage = getattr(response, "usage", None)
    try:
        cost = float((getattr(response, "_hidden_params", None) or {}).get("response_cost") or 0.0)
    except (TypeError, ValueError):
        cost = 0.0
    calls = [
        {"name": c.function.name or "", "arguments": c.function.arguments or ""}
        for c in (getattr(message, "tool_calls", None) or [])
        if getattr(c, "function", None)
    ]
    return {
        "ok": True,
        "content": message.content,
        "reasoning": reasoning_of(message),
        "tool_calls": calls,
        "prompt_tokens": int(getattr(usage, "prompt_tokens", 0) or 0),
        "completion_tokens": int(getattr(usage, "completion_tokens", 0) or 0),
        "cost": cost,
        "finish_reason": response.choices[0].finish_reason,
    }


def require_some_success(usage: Usage, what: str, settings: RoleConfig) -> None:
    """A batch in which every call failed means a configuration problem: say so in one line."""
    if usage.failures and not (usage.completed or usage.cache_hits):
        first = (usage.first_error or "error").replace("litellm.", "")
        raise T0Error(
            f"every {what} call to {settings.model} at "
            f"{settings.api_base or 'the provider default'} failed ({first}); check the endpoint "
            "is up and llm.roles settings are right. Nothing was lost: re-running resumes from "
            "the cache."
        )
