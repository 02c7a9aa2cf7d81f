"""A structured teacher (its role has ``structured_output``: a small or non-reasoning model that
cannot keep the answer format) answers as JSON a constraining server enforces, and the reply is
rendered back into the usual trace: thinking, then "(condition, level of care)".

A model this small cannot write reasoning worth training on (a 135M model's free "thinking" is
about birthdays and beaches), but it can choose. So it cites its evidence by choosing it:

- ``complaint``: one of the patient's own phrases (the query split at sentence and clause
  ends), the one it goes by;
- ``choice``: a retrieved document's title with one of that document's own sentences as the
  evidence, or "inconclusive" when none fits;
- ``severity``: one of the levels of care.

The thinking is then those choices in words ("The patient says: …. The page on Gout says: ….
So Gout fits best. The level of care: Urgent Primary Care."): readable, about the query, and
only as good as the choices. A reasoning model's own thinking (``reasoning_content``) comes
first. Frontier teachers without ``structured_output`` think freely and are not affected.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from t0_pipeline.domain import Domain, default_domain, topic_key
from t0_pipeline.llm.calls import LLMReply
from t0_pipeline.llm.structured import json_schema_format

MAX_OPTIONS = 8  # phrases or sentences offered per choice: a short grammar, enough to choose from


def phrases(query: str) -> list[str]:
    """The patient's phrases: the query cut at . ! ? ; and commas, each of three words or more (the
    whole query when none is)."""
    parts = [p.strip() for p in re.split(r"[.!?;,]+\s*", query or "")]
    kept = list(dict.fromkeys(p for p in parts if len(p.split()) >= 3))
    return kept[:MAX_OPTIONS] or [(query or "").strip() or "no details"]


def sentences(text: str) -> list[str]:
    """A document's sentences of 4 to 25 words (evidence is a short sentence, and each word is a
    token the teacher writes), the first few (its opening when none is)."""
    parts = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text or "")]
    kept = list(dict.fromkeys(s for s in parts if 4 <= len(s.split()) <= 25))
    return kept[:MAX_OPTIONS] or [" ".join((text or "").split()[:30]) or "no text"]


def answer_schema(
    query: str, titles: list[str], texts: list[str], domain: Domain | None = None
) -> dict[str, Any]:
    """The reply a constraining server lets the teacher write (see the module's docstring), its
    fields named in ``domain``'s words (the NHS domain's: condition, severity)."""
    domain = domain or default_domain()
    topic = topic_key(domain)
    documents = [
        {
            "type": "object",
            "additionalProperties": False,
            "required": [topic, "evidence"],
            "properties": {
                topic: {"enum": [title]},
                "evidence": {"enum": sentences(text)},
            },
        }
        for title, text in zip(titles, texts)
    ]
    none_fits = {
        "type": "object",
        "additionalProperties": False,
        "required": [topic],
        "properties": {topic: {"enum": ["inconclusive"]}},
    }
    return json_schema_format(
        "TriageAnswer",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["complaint", "choice", domain.answer],
            "properties": {
                "complaint": {"enum": phrases(query)},
                "choice": {"anyOf": [*documents, none_fits]},
                domain.answer: {"enum": list(domain.category_names)},
            },
        },
    )


def from_structured(reply: LLMReply, domain: Domain | None = None) -> LLMReply:
    """A structured reply (:func:`answer_schema`) as a free-text one: the choices in words as its
    thinking (after any thinking of its own), then "(condition, severity)"."""
    if not reply.ok:
        return reply
    domain = domain or default_domain()
    try:
        data = json.loads(reply.content)
        condition = str(data["choice"][topic_key(domain)])
        severity = str(data[domain.answer])
        said = [f"The {domain.asker} says: {data['complaint'].strip().rstrip('.')}."]
        if condition == "inconclusive":
            said.append("None of the documents fits what they describe.")
        else:
            evidence = str(data["choice"]["evidence"]).strip()
            said.append(f"The page on {condition} says: {evidence}")
            said.append(f"So {condition} fits best.")
        said.append(f"The {domain.answer_label}: {severity}.")
    except (ValueError, KeyError, TypeError, AttributeError):
        return replace(
            reply,
            error=f"InvalidJSON: the structured answer did not parse: {reply.content[:120]!r}",
        )
    thinking = "\n".join(t for t in (reply.thinking, " ".join(said)) if t)
    return replace(reply, thinking=thinking, content=f"({condition}, {severity})")
