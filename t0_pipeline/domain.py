"""A domain: the task's words, in one file, that every prompt, schema, tool and table is made from.

The method is the same for any collection of documents and any "which document, and which
category" task; what changes is the vocabulary. A domain file (YAML) says

- what one document is about (``topic``: a condition, an article, a policy) and who asks
  (``asker``: a patient, a member of staff), and what service answers them;
- the answer's ``categories``, least to most urgent, each with a one-line meaning, what the chat
  page tells the asker, other spellings a model may write, and the phrases in a document that
  signal it (the model-free baseline reads them);
- the query ``personas`` (message styles) with their descriptions, and the asker's ``profile``
  fields with the choices a constrained writer picks from;
- optional ``passages``: sentences the prompts place where a domain needs its own wording
  (:data:`PASSAGES` lists them with the generic text used otherwise).

Prompt templates write a domain word as ``{{word}}`` (:meth:`Domain.words`); the built-in
``nhs-triage`` domain (``t0_pipeline/domains/``) renders exactly the prompts this project had before
domains existed. ``domain:`` in the config is a built-in's name, a YAML file's path, or the
mapping itself.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from t0_pipeline.artifacts import T0Error

DEFAULT_DOMAIN = "nhs-triage"
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# passage → its generic text ({{word}}s are filled in); a domain's ``passages`` replace any
PASSAGES = {
    "agent_when": "the user describes a problem or asks about {{an_topic}}",
    "search_hints": "what they describe, how long it has gone on, anything already tried",
    "agent_caution": "Never decide the answer yourself.",
    "search_description": "Search the pages of {{service}} for documents relevant to the person's "
    "problem.",
    "reasoner_about": "their problem",
    "no_fit": "say so",
    "reasoner_caution": "You give information from the documents, not a decision of your own.",
    "summary_of": "a page of {{service}}",
    "summary_keep": "- what a person would notice or ask about, in the page's own everyday words, "
    "listing as many distinct ones as fit, and\n- how to decide what to do next: "
    "{{category_meanings}}.",
    "summary_leave_out": "background and detail",
    "writer_intro": "You write realistic messages that {{askers}} send to {{service}}. Each "
    "message is based on one of its pages and must be consistent with it.",
    "writer_has": "whose problem is the one described in",
    "writer_fit": "- Use details from the page, or plausibly linked to it, that clearly fit "
    "$disposition.",
    "writer_detail": "- Sometimes give exact details (what they saw, how long, what they already "
    "tried); sometimes stay vague.",
    "writer_naming": "- People rarely know the name of their problem, so describe what they "
    "notice, and never copy sentences from the page.",
    "writer_profile": "- Details about them: {{profile_fields}}.",
    "writer_categories": "{{category_list}}",
    "disclaimer": "This is information from the documents, not a decision.",
    "page_title": "t0 assistant",
    "page_warning": "Answers come from the documents;",
    "page_notice": "they can be wrong. If it is urgent, contact {{service}} directly.",
    "page_placeholder": "Describe {{describes}}…",
    "unreadable_advice": "if you need help, contact {{service}} directly",
    "unknown_level": "I could not tell which {{answer_label}} fits; if you need help, contact "
    "{{service}} directly.",
    # model cards: what a trained student is for, and what it must not be taken for
    "card_use": "Research on retrieval-augmented reasoning: reading a message from {{an_asker}} "
    "with documents retrieved from {{service}}, and proposing which document's {{topic}} fits and "
    "which {{answer_label}} follows, with the reasoning shown.",
    "card_caution": "Its answers can be wrong and are no decision: a person who can decide must "
    "check them before anyone acts on one.",
}
# passages that list the categories: a domain's own text for them must name every category
LISTING_PASSAGES = ("writer_categories",)


class Category(BaseModel):
    """One answer category (the NHS levels of care are one list of them)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=60)
    meaning: str = Field(min_length=1)  # one line: when it applies
    reply: Optional[str] = None  # what the chat page says it means; None = the meaning
    aliases: list[str] = Field(default_factory=list)  # other spellings tolerant scoring accepts
    # a document line matching one (a regex, any case) says when this category applies: the
    # model-free baseline's rule
    triggers: list[str] = Field(default_factory=list)

    @property
    def key(self) -> str:
        """A section name: ``A&E`` → ``a_e``."""
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")


class ProfileField(BaseModel):
    """One detail about the asker that a synthetic query's writer gives."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    choices: list[str] = Field(default_factory=list)  # a constrained writer picks one
    # whole numbers in [lo, hi] instead of choices (an age)
    range: Optional[tuple[int, int]] = None
    example: Any = None  # shown in the writer's JSON example; None = "..."

    @property
    def integer(self) -> bool:
        return self.range is not None


class Domain(BaseModel):
    """Everything the method needs to know about one task (see the module's docstring)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    service: str = "the service desk"  # who answers, as a phrase: "a health information service"
    topic: str = "topic"  # what one document is about
    topics: Optional[str] = None  # plural; None = topic + "s"
    asker: str = "person"
    askers: Optional[str] = None
    describes: str = "their problem"  # "The asker describes …"
    decide: str = "which category fits"  # "you decide which topic … and …"
    answer: str = Field("category", pattern=r"^[a-z][a-z_]*$")  # the answer field's name
    answer_label: str = "category"  # "level of care"
    answer_labels: Optional[str] = None
    categories: list[Category] = Field(min_length=2)  # least to most urgent
    personas: dict[str, str] = Field(min_length=1)  # name → how such a message is written
    profile: list[ProfileField] = Field(default_factory=list)
    submit_tool: Optional[str] = None  # None = submit_<topic>_recommendation
    search_tool: str = "search_documents"
    # what the evaluation tables call the two accuracies; None = (topic, answer_label)
    accuracy_names: Optional[tuple[str, str]] = None
    passages: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "Domain":
        names = [c.name for c in self.categories]
        if len(set(names)) != len(names):
            raise ValueError(f"categories repeat a name: {names}")
        unknown = sorted(set(self.passages) - set(PASSAGES))
        if unknown:
            raise ValueError(f"unknown passage(s) {unknown}; known: {', '.join(PASSAGES)}")
        for passage in LISTING_PASSAGES:
            missing = [
                n for n in names if passage in self.passages and n not in self.passages[passage]
            ]
            if missing:
                raise ValueError(
                    f"passages.{passage} does not name the category {missing[0]!r}: update it, "
                    "or remove it to use the list made from the categories"
                )
        return self

    @property
    def category_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.categories)

    @property
    def tool_name(self) -> str:
        return self.submit_tool or f"submit_{_snake(self.topic)}_recommendation"

    @property
    def score_labels(self) -> tuple[str, str]:
        return self.accuracy_names or (self.topic, self.answer_label)

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.profile)

    def plural(self, word: str) -> str:
        return {"topic": self.topics, "asker": self.askers, "answer_label": self.answer_labels}[
            word
        ] or getattr(self, word) + "s"

    def words(self) -> dict[str, str]:
        """Every ``{{word}}`` a template may use."""
        names = self.category_names
        base = {
            "service": self.service,
            "topic": self.topic,
            "topics": self.plural("topic"),
            "an_topic": article(self.topic),
            "asker": self.asker,
            "askers": self.plural("asker"),
            "an_asker": article(self.asker),
            "describes": self.describes,
            "decide": self.decide,
            "answer": self.answer,
            "answer_label": self.answer_label,
            "answer_labels": self.plural("answer_label"),
            "category_names": ", ".join(names[:-1]) + " or " + names[-1],
            "n_categories": _number(len(names)),
            "category_list": "\n".join(f"- {c.name}: {c.meaning}" for c in self.categories),
            "category_meanings": "; ".join(
                f"{c.name} when it {c.meaning}" for c in self.categories
            ),
            "submit_tool": self.tool_name,
            "search_tool": self.search_tool,
            "profile_fields": "; ".join(_describe_field(f) for f in self.profile) or "none",
            "writer_json_example": _json_example(self.profile),
        }
        passages = {k: fill(self.passages.get(k, v), base, k) for k, v in PASSAGES.items()}
        return {**base, **passages}

    def category(self, name: str) -> Category:
        return next(c for c in self.categories if c.name == name)


def topic_key(domain: Domain) -> str:
    """The topic as a JSON field name: the tool's and the teacher's (``condition``)."""
    return _snake(domain.topic)


def fill(text: str, words: dict[str, str], where: str) -> str:
    """``text`` with each ``{{word}}`` replaced; an unknown word is a T0Error naming it."""

    def one(match: re.Match) -> str:
        word = match.group(1)
        if word not in words:
            raise T0Error(
                f"{where} uses {{{{{word}}}}}, which no domain defines; known: "
                f"{', '.join(sorted(words))}."
            )
        return words[word]

    return re.sub(r"\{\{\s*([a-z_]+)\s*\}\}", one, text)


def plural(noun: str) -> str:
    """``severity`` → ``severities``, ``route`` → ``routes`` (enough for a field's name)."""
    if re.search(r"[^aeiou]y$", noun):
        return noun[:-1] + "ies"
    return noun + ("es" if re.search(r"(s|x|ch|sh)$", noun) else "s")


def _snake(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def _number(n: int) -> str:
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def _describe_field(field: ProfileField) -> str:
    if field.integer:
        lo, hi = field.range
        return f"{field.name.replace('_', ' ')} (a whole number, {lo} to {hi})"
    choices = f" (for example {', '.join(field.choices[:3])})" if field.choices else ""
    return f"{field.name.replace('_', ' ')}{choices}"


def _json_example(profile: list[ProfileField]) -> str:
    import json

    parts = [
        f'"{f.name}": '
        + (json.dumps(f.example, ensure_ascii=False) if f.example is not None else '"..."')
        for f in profile
    ]
    return "{" + ", ".join(parts) + "}"


def builtin_names() -> list[str]:
    folder = resources.files("t0_pipeline") / "domains"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


@functools.lru_cache(maxsize=16)
def _load_file(path: str, mtime: float) -> Domain:
    text = Path(path).read_text(encoding="utf-8")
    return _validate(yaml.safe_load(text), path)


def _validate(data: Any, where: str) -> Domain:
    if not isinstance(data, dict):
        raise T0Error(f"domain {where}: not a mapping of settings; see t0_pipeline/domains/.")
    try:
        domain = Domain.model_validate(data)
        domain.words()  # every passage's words are known
        return domain
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first["loc"]) or "domain"
        raise T0Error(f"domain {where}: {at}: {first['msg']}.") from None


def load_domain(ref: str | Path | dict | Domain | None = None) -> Domain:
    """The domain ``ref`` names: a built-in's name (default ``nhs-triage``), a YAML file, or the
    mapping itself."""
    if isinstance(ref, Domain):
        return ref
    if isinstance(ref, dict):
        return _validate(ref, "section")
    ref = DEFAULT_DOMAIN if ref is None else str(ref)
    if ref in builtin_names():
        path = resources.files("t0_pipeline") / "domains" / f"{ref}.yaml"
        return _load_file(str(path), 0.0)
    path = Path(ref).expanduser()
    if not path.is_file():
        raise T0Error(
            f"domain {ref!r}: no such file and no built-in domain of that name (built-in: "
            f"{', '.join(builtin_names())}); give a YAML file's path."
        )
    try:
        return _load_file(str(path.resolve()), path.stat().st_mtime)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise T0Error(f"domain {path}: cannot read it as YAML ({exc}); fix the file.") from None


def default_domain() -> Domain:
    return load_domain(DEFAULT_DOMAIN)
