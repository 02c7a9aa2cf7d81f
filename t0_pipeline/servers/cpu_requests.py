"""What the CPU model server accepts: each request read and checked on its own before it may join a
batch, so a bad request fails alone with an OpenAI-style 400 naming the field, and never reaches
the requests batched with it.

- :func:`read_body`: the raw body as a JSON object (not UTF-8, not JSON, or not an object: 400);
- :class:`ChatRequest`, :class:`CompletionRequest`, :class:`TokenizeRequest`: the fields the server
  reads, typed strictly (a string where a number belongs is refused, as OpenAI's API does), with
  OpenAI's ranges; fields it does not read are allowed and ignored, as clients send many;
- :class:`BadRequest`: the error carrying the status, the message and the offending field.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_TYPE_TAG = re.compile(
    r"^(str|int|float|bool|none|list\[.*\]|dict\[.*\]|function-.*|literal\[.*\])$"
)
SEED_RANGE = {"ge": -(2**63), "le": 2**64 - 1}  # what torch.Generator.manual_seed takes


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _text_parts(self):
        if isinstance(self.content, list):
            for part in self.content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError("only text content parts ({type: text, text: …}) are served")
        return self


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class Sampling(_Strict):
    """The sampling fields both generation endpoints share."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, **SEED_RANGE)
    stop: str | list[str] | None = Field(None)
    stop_token_ids: list[int] | None = None
    min_tokens: int = Field(0, ge=0)
    skip_special_tokens: bool = True
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    response_format: ResponseFormat | None = None
    stream: bool | None = False

    @model_validator(mode="after")
    def _stops(self):
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        if len(stops) > 16 or any(not s for s in stops):
            raise ValueError("stop takes at most 16 non-empty strings")
        return self

    def wanted_tokens(self) -> int:
        return self.max_tokens or self.max_completion_tokens or 256

    def schema(self) -> str | None:
        """The JSON schema text the reply is held to ("" = any JSON object), None = free text."""
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return ""
        return json.dumps((fmt.json_schema or {}).get("schema") or {})


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[int]


class TokenizeRequest(_Strict):
    model: str | None = None
    prompt: str | None = None
    messages: list[Message] | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("send either prompt or messages")
        return self


def read_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a :class:`BadRequest` saying what it is instead."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8 (byte {exc.start}); send UTF-8 JSON") from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the body is a JSON {type(body).__name__}; send a JSON object")
    return body


def parse(model: type[_Strict], body: dict[str, Any]):
    """``body`` as ``model``, or a :class:`BadRequest` naming the first field that is wrong."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        # a union's member types and validator names are in the location too: the field's path only
        parts = [str(p) for p in error["loc"] if not _TYPE_TAG.match(str(p))]
        where = ".".join(parts) or None
        message = str(error["msg"]).removeprefix("Value error, ")
        raise BadRequest(f"field {where!r}: {message}" if where else message, param=where) from None
