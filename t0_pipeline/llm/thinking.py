"""Thinking apart from the answer, wherever a model put it: a separate field (``reasoning_content``,
or ``reasoning`` as newer vLLM releases name it), inline ``<think>…</think>``, or split while a
reply streams (:class:`ThinkSplitter`).
"""

from __future__ import annotations

import re

THINK = re.compile(r"<think>(.*?)</think>", re.S)


REASONING_FIELDS = ("reasoning_content", "reasoning")


def reasoning_of(message) -> str | None:
    """The separate thinking field of a reply message or a streamed delta, under either name (also
    where litellm keeps fields it does not know, ``provider_specific_fields``)."""
    extra = getattr(message, "provider_specific_fields", None) or {}
    for name in REASONING_FIELDS:
        value = getattr(message, name, None) or (
            extra.get(name) if isinstance(extra, dict) else None
        )
        if isinstance(value, str) and value:
            return value
    return None


def split_thinking(content: str | None, reasoning: str | None = None) -> tuple[str, str]:
    """(thinking, answer) from a reply, wherever the provider put the thinking."""
    content = content or ""
    if reasoning:
        return reasoning.strip(), THINK.sub("", content).strip()
    match = THINK.search(content)
    if match:
        return match.group(1).strip(), (content[: match.start()] + content[match.end() :]).strip()
    if "</think>" in content:  # the chat template opened <think> in the prompt
        thinking, answer = content.split("</think>", 1)
        return thinking.strip(), answer.strip()
    return "", content.strip()


class ThinkSplitter:
    """Splits streamed text into thinking and answer at inline ``<think>``/``</think>`` tags, across
    chunk borders."""

    def __init__(self, open_tag: str = "<think>", close_tag: str = "</think>"):
        self.open, self.close = open_tag, close_tag
        self.thinking = False
        self.buffer = ""

    def feed(self, text: str) -> list[tuple[str, str]]:
        self.buffer += text
        out: list[tuple[str, str]] = []
        while True:
            tag = self.close if self.thinking else self.open
            at = self.buffer.find(tag)
            if at < 0:
                break
            if at:
                out.append(("thinking" if self.thinking else "answer", self.buffer[:at]))
            self.buffer = self.buffer[at + len(tag) :]
            self.thinking = not self.thinking
        tag = self.close if self.thinking else self.open
        keep = next(
            (
                n
                for n in range(min(len(tag) - 1, len(self.buffer)), 0, -1)
                if tag.startswith(self.buffer[-n:])
            ),
            0,
        )
        emit, self.buffer = (
            self.buffer[: len(self.buffer) - keep],
            self.buffer[len(self.buffer) - keep :],
        )
        if emit:
            out.append(("thinking" if self.thinking else "answer", emit))
        return out

    def flush(self) -> list[tuple[str, str]]:
        out = [("thinking" if self.thinking else "answer", self.buffer)] if self.buffer else []
        self.buffer = ""
        return out
