"""JSON from models: tool definitions, schema-constrained response formats, bounded strings, and
a reply parsed into a pydantic model.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def function_tool(
    name: str, description: str, properties: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """An OpenAI function-tool schema whose properties are all required."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "required": list(properties),
                "properties": properties,
            },
        },
    }


def bounded_text(low: int, high: int) -> dict[str, Any]:
    """A JSON-schema string for constrained output: ``low``..``high`` printable ASCII characters, no
    escapes. A small model writing under a grammar otherwise spends its tokens on byte pieces of
    rare characters and never closes the string; one token per character at worst keeps ``high``
    within a token budget. The bounds are in the pattern (xgrammar, vLLM's default backend, ignores
    min/maxLength beside one), and ``high`` is capped at 128: xgrammar refuses longer repetitions
    and takes seconds to compile chains of them."""
    high = min(high, 128)
    low = min(low, high)
    return {
        "type": "string",
        "minLength": low,
        "maxLength": high,
        "pattern": f"^[ -\\[\\]-~]{{{low},{high}}}$",
    }


def plain_words(min_words: int, max_words: int, first: str = "[A-Z][a-z']{0,11}") -> dict[str, Any]:
    """A JSON-schema string of ``min_words``..``max_words`` plain words (letters and apostrophes, at
    most 12 a word, each maybe followed by one , . ! or ?) separated by single spaces, the first
    matching ``first`` (a capitalised word; e.g. ``(I|My)`` for a first-person message): what a
    person writes, and nothing a small model's ramble of digits and symbols ("1901-2022,
    m_t_f_2017") can be. At most about 14 characters a word keeps it within a token budget."""
    word = "[A-Za-z][a-z']{0,11}[,.!?]?"
    return {
        "type": "string",
        "pattern": f"^{first}[,.!?]?( {word}){{{min_words - 1},{max_words - 1}}}$",
    }


def json_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """``response_format`` asking the server to produce only JSON valid for ``schema`` (vLLM
    structured outputs, OpenAI, the CPU server): a role with ``structured_output`` sends it with
    every JSON request."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def parse_json(text: str, schema: type[M]) -> tuple[M | None, str]:
    """The first JSON object in ``text`` (code fences allowed) validated by ``schema``."""
    body = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", body, re.S)
    if fence:
        body = fence.group(1).strip()
    start = body.find("{")
    if start < 0:
        return None, "no JSON object found"
    try:
        obj, _ = json.JSONDecoder().raw_decode(body[start:])
    except json.JSONDecodeError as exc:
        return None, f"JSON syntax error: {exc.msg} at character {exc.pos}"
    try:
        return schema.model_validate(obj), ""
    except ValidationError as exc:
        err = exc.errors()[0]
        return None, f"field {'.'.join(map(str, err['loc'])) or '(root)'}: {err['msg']}"
