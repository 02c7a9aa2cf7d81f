"""The triage prompt the teacher answers, students are trained on and evaluated with:
``prompts/triage.txt``.

One template serves both, so a fine-tuned student is evaluated on the very prompt format it
learnt: the SFT examples are the k > 0 form (retrieved documents with scores, their titles or
"inconclusive" allowed, a free-text "(condition, severity)" answer); evaluation adds the k = 0
form (every condition listed) and the tool-calling answer instructions.
"""

from __future__ import annotations

from pathlib import Path

from t0_pipeline.chat import documents_block
from t0_pipeline.prompts import load_sections, render

NAME = "triage"
SECTIONS = ("system", "user", "context_none", "context_documents", "answer_text", "answer_tool")


def load(prompts_dir: Path | None = None) -> tuple[dict[str, str], str]:
    """(sections, template hash)."""
    return load_sections(NAME, SECTIONS, prompts_dir)


def with_documents(
    sections: dict[str, str], titles: list[str], scores: list[float], texts: list[str]
) -> str:
    """The context for k > 0: the documents with their scores; their titles (or inconclusive) are
    allowed."""
    return render(
        sections["context_documents"],
        NAME,
        documents=documents_block(titles, scores, texts),
        allowed="\n".join([*(f"- {t}" for t in titles), "- inconclusive"]),
    )


def with_condition_list(sections: dict[str, str], titles: list[str]) -> str:
    """The context for k = 0: every condition name."""
    return render(sections["context_none"], NAME, allowed="\n".join(f"- {t}" for t in titles))


def messages(
    sections: dict[str, str],
    context: str,
    demographics: str,
    query: str,
    answer_format: str = "answer_text",
) -> list[dict[str, str]]:
    """The system turn (instructions, context, answer format) and the user turn (demographics,
    message)."""
    system = render(
        sections["system"], NAME, context=context, answer_format=sections[answer_format]
    )
    user = render(sections["user"], NAME, demographics=demographics, query=query)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
