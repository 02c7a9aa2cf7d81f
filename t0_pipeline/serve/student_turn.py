"""A trained student behind the service (a profile with ``student:``): it is asked exactly as it
was trained and evaluated, and its terse answer becomes a reply a person can use.

- The prompt is the triage prompt (``prompts/triage.txt``) over the retrieved documents, their
  titles (or inconclusive) allowed; the "message" is the person's own words in this conversation
  (their messages, latest last, as many as fit), as the student's training queries were a
  patient's words.
- Its answer, "(condition, level of care)", is read tolerantly (serving is not scoring) and turned
  into a plain reply from ``prompts/triage_reply.txt``: the condition with a link to its page,
  what the level of care means, or a plain sentence when it named no allowed condition. What the
  student wrote stays with its thinking, behind the page's toggle.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from t0_pipeline.prompts import PromptSet, domain_of, load_sections, render
from t0_pipeline.task import prompt as triage_prompt
from t0_pipeline.task.demographics import demographics_text
from t0_pipeline.task.scoring import Scale, parse_answer_text

REPLY = "triage_reply"


def level_section(level: str | None) -> str:
    """The reply section that says what a level of care means: ``A&E`` → ``level_a_e``."""
    if level is None:
        return "level_unknown"
    return "level_" + re.sub(r"[^a-z]+", "_", level.lower()).strip("_")


def load_replies(prompts: PromptSet | Path | None = None) -> dict[str, str]:
    """The reply sections, with one ``level_<category>`` section per category of the domain: what
    the domain's ``reply`` (else its meaning) says, unless the template file has that section."""
    required = ("found", "inconclusive", "unreadable", "level_unknown")
    sections, _ = load_sections(REPLY, required, prompts)
    for category in domain_of(prompts).categories:
        sections.setdefault(
            level_section(category.name), category.reply or f"{category.name}: {category.meaning}."
        )
    return sections


def patient_words(
    history: list[dict[str, Any]], text: str, budget: int, count: Callable[[str], int]
) -> str:
    """The person's messages in this conversation, oldest first, ending with ``text``; the oldest
    are dropped to fit ``budget`` tokens (the new message is always kept)."""
    kept, used = [text], count(text)
    for msg in reversed(history):
        if msg["role"] != "user":
            continue
        cost = count(msg["content"])
        if used + cost > budget:
            break
        kept.append(msg["content"])
        used += cost
    return "\n\n".join(reversed(kept))


def triage_messages(
    sections: dict[str, str],
    hits: list[Any],
    words: str,
    demographics: dict[str, Any],
    fields: tuple[str, ...] | None = None,
) -> list[dict[str, str]]:
    """The system and user turns the student was trained on, over ``hits``."""
    context = triage_prompt.with_documents(
        sections, [h.title for h in hits], [float(h.score) for h in hits], [h.text for h in hits]
    )
    about = demographics_text(demographics, fields) if fields else demographics_text(demographics)
    return triage_prompt.messages(sections, context, about, words)


def plain_reply(
    answer: str, hits: list[Any], replies: dict[str, str], scale: Scale | None = None
) -> str:
    """The reply a person reads for the student's "(condition, level of care)" ``answer``."""
    allowed = {h.slug: h.title for h in hits}
    prediction = parse_answer_text(answer, allowed, tolerant=True, scale=scale)
    if prediction.condition is None:
        return replies["unreadable"].strip()
    level = replies[level_section(prediction.severity)].strip()
    if prediction.condition == "inconclusive":
        return render(replies["inconclusive"], REPLY, level=level).strip()
    hit = next(h for h in hits if h.slug == prediction.condition)
    page = f"[{hit.title}]({hit.url})" if hit.url else hit.title
    return render(replies["found"], REPLY, condition=hit.title, page=page, level=level).strip()
