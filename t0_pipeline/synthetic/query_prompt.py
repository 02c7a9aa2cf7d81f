"""What the query writer is shown and, under a constraining server, may write.

- **Examples** (``queries.examples`` > 0): a few hand-written patient messages about conditions
  outside any corpus we score on (``prompts/query_examples.jsonl``, or ``queries.examples_file``),
  those of the draw's level of care and style first. A small model writes far better with them; a
  message that copies one is no query (the readable-queries check shows such copies).
- **The reply schema** for a ``structured_output`` role: the refusal flag first (when allowed),
  then demographics, then the message. The message is plain words and punctuation, opening with "I"
  or "My" (word by word: no digits, no symbols: a small model's "1901-2022, m_t_f_2017" cannot be
  written) and the demographics are plausible values from fixed choices
  (:mod:`t0_pipeline.task.demographics`), so a tiny model cannot invent "occupation:
  1901-2022". A frontier model without a schema writes freely, as the prompt asks.
"""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path
from typing import Any

from t0_pipeline.artifacts import T0Error
from t0_pipeline.domain import Domain, ProfileField, default_domain
from t0_pipeline.llm.structured import plain_words
from t0_pipeline.prompts import load_template, render


def load_examples(path: Path | None = None) -> list[dict[str, str]]:
    """The example messages: JSON lines with ``query``, ``disposition``, ``query_type`` (and the
    ``condition`` they are about, shown to nobody)."""
    if path is None:
        text = (resources.files("t0_pipeline") / "prompts" / "query_examples.jsonl").read_text(
            encoding="utf-8"
        )
        where = "prompts/query_examples.jsonl"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise T0Error(
                f"queries.examples_file {path}: cannot read it ({exc.strerror}); fix the path."
            ) from None
        where = str(path)
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({k: str(row[k]) for k in ("query", "disposition", "query_type")})
        except (ValueError, KeyError, TypeError):
            raise T0Error(
                f"{where}, line {n}: not a JSON object with query, disposition and query_type."
            ) from None
    if not rows:
        raise T0Error(f"{where} holds no example messages; add some or set queries.examples: 0.")
    return rows


def pick_examples(
    examples: list[dict[str, str]], n: int, disposition: str, query_type: str, rng: random.Random
) -> list[dict[str, str]]:
    """``n`` examples, those matching the draw's level of care and then its style first."""
    shuffled = examples[:]
    rng.shuffle(shuffled)
    shuffled.sort(key=lambda e: (e["disposition"] != disposition, e["query_type"] != query_type))
    return shuffled[:n]


def examples_block(picked: list[dict[str, str]], prompts_dir: Path | None = None) -> str:
    """The examples as the prompt shows them (``prompts/query_examples.txt``), or ""."""
    if not picked:
        return ""
    template, _ = load_template("query_examples", prompts_dir)
    lines = "\n".join(f"- ({e['disposition']}, {e['query_type']}) {e['query']}" for e in picked)
    return render(template, "query_examples", examples=lines).strip()


def response_schema(
    allow_refusal: bool, sex: str | None = None, domain: Domain | None = None
) -> dict[str, Any]:
    """The reply a constraining server lets the writer produce (see the module's docstring); the
    demographics are ``domain``'s profile fields (default: the NHS domain's)."""
    profile = (domain or default_domain()).profile
    demographics = {
        "type": "object",
        "additionalProperties": False,
        "required": [f.name for f in profile],
        "properties": {f.name: _field_schema(f, sex) for f in profile},
    }
    properties: dict[str, Any] = {"refused": {"type": "boolean"}} if allow_refusal else {}
    properties.update(demographics=demographics, symptoms_description=plain_words(8, 32, "(I|My)"))
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(properties),
        "properties": properties,
    }


def _field_schema(field: ProfileField, sex: str | None) -> dict[str, Any]:
    """One profile field as a constrained writer may fill it: a whole number in its range, the
    draw's sex, one of its choices, or plain words."""
    if field.integer:
        lo, hi = field.range
        return {"type": "integer", "enum": list(range(lo, hi + 1))}
    if field.name == "sex":
        return {"enum": [sex]} if sex else {"enum": ["female", "male"]}
    if field.choices:
        return {"enum": list(field.choices)}
    return plain_words(1, 8)
