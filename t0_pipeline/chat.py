"""Chat rendering, one place for every stage that writes or reads a chat: SFT examples, teacher
traces, evaluation, budget forcing, training labels and serving.

- :class:`ChatFormat`: how a reasoning student marks its thinking and its answer in the assistant
  turn;
- the tokenizer's chat template: :func:`load_tokenizer`, :func:`render_chat` (a whole chat, the
  training text), :func:`generation_prompt` (the text a model continues), :func:`count_tokens`;
- :func:`documents_block`: retrieved documents as every prompt shows them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from t0_pipeline.artifacts import T0Error

# Qwen's format, used when no tokenizer is configured
CHATML_TURN = "<|im_start|>{role}\n{content}<|im_end|>\n"


class ChatFormat(BaseModel):
    """How a reasoning student marks its thinking and its answer: one setting for SFT rendering,
    budget forcing (evaluation and serving) and the serve page's thinking split.

    The assistant turn is ``think_start`` + thinking + newline + ``think_end`` + ``answer_start`` +
    answer. s1/Qwen style by default, where ``<|im_start|>`` is the tokenizer's special token and
    ``think``/``answer`` are plain words, so the end marker is two tokens; ``<think>\\n`` /
    ``</think>`` / ``\\n\\n`` for ``<think>`` models.
    """

    model_config = ConfigDict(extra="forbid")
    think_start: str = "<|im_start|>think\n"  # opens the thinking, right after the assistant header
    # ends it: budget forcing stops on this text, then forces it
    think_end: str = "<|im_start|>answer"
    answer_start: str = "\n"  # between think_end and the answer
    # the template's turn tokens: generation stops on any of them (a model that starts another
    # turn, or repeats a marker, has ended what it was writing)
    turn_tokens: list[str] = Field(default_factory=lambda: ["<|im_start|>", "<|im_end|>"])

    def assistant(self, thinking: str, answer: str) -> str:
        thought = f"{self.think_start}{thinking.strip()}{BEFORE_THINK_END}{self.think_end}"
        return f"{thought}{self.answer_start}{answer.strip()}"


# what the training text puts between the thinking and ``think_end``: budget forcing forces the
# marker after the same text
BEFORE_THINK_END = "\n"


def load_tokenizer(name_or_path: str | None, setting: str = "sft.tokenizer"):
    """A tokenizer with a chat template (None for None); ``setting`` names where a user sets it, for
    errors."""
    if name_or_path is None:
        return None
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as exc:
        raise T0Error(
            f"could not load tokenizer {name_or_path!r} ({exc.__class__.__name__}); pass a local "
            f"path or a name available offline with {setting}."
        ) from None
    if not getattr(tok, "chat_template", None):
        raise T0Error(
            f"tokenizer {name_or_path!r} has no chat template; use the student model's instruct "
            "tokenizer."
        )
    return tok


def render_chat(messages: list[dict[str, str]], tokenizer) -> str:
    """A whole chat as text: the tokenizer's own chat template, or ChatML (Qwen's format) when none
    is set."""
    if tokenizer is not None:
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return "".join(CHATML_TURN.format(role=m["role"], content=m["content"]) for m in messages)


def generation_prompt(messages: list[dict[str, str]], tokenizer, assistant_open: str = "") -> str:
    """The text a model continues: the chat, the assistant header, then ``assistant_open`` (e.g. the
    thinking marker)."""
    if tokenizer is not None:
        return (
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            + assistant_open
        )
    return render_chat(messages, None) + "<|im_start|>assistant\n" + assistant_open


def count_tokens(text: str, tokenizer) -> int:
    if tokenizer is None:
        # whitespace words: a stated approximation when no tokenizer is configured
        return len(text.split())
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def documents_block(titles: list[str], scores: list[float], texts: list[str]) -> str:
    """Retrieved documents as every prompt shows them: numbered, titled, scored."""
    return "\n\n".join(
        f"[{i}] {title} (score {score:.3f})\n{text}"
        for i, (title, score, text) in enumerate(zip(titles, scores, texts), start=1)
    )
