"""Prompt templates: plain text files with ``$name`` placeholders (``string.Template``) for what a
stage fills in, and ``{{word}}`` for the task's words, taken from the domain
(:mod:`t0_pipeline.domain`) when the template is loaded.

Defaults live in ``t0_pipeline/prompts/``; set ``llm.prompts_dir`` to a folder holding files of the
same names to replace any of them. Stages receive a :class:`PromptSet` (that folder and the
domain; ``PipelineConfig.prompts``); a bare folder or None means the default domain. A file may
hold several named parts, each starting on a line ``[name]`` (e.g. a system and a user turn);
:func:`load_sections` splits them. Each rendered prompt's template hash (of the text with the
domain's words in it) is recorded with its outputs, so a changed prompt or domain is visible in
the artefacts.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from t0_pipeline.artifacts import T0Error
from t0_pipeline.domain import Domain, default_domain, fill

log = logging.getLogger(__name__)


# templates renamed since a release: a user's folder may still hold the old name
FORMER_NAMES = {"triage": "evaluator"}


@dataclass(frozen=True)
class PromptSet:
    """Where a stage's templates come from: the user's folder (None = the built-ins only) and the
    domain whose words fill them."""

    folder: Path | None = None
    domain: Domain = field(default_factory=default_domain)


def prompt_set(prompts: PromptSet | Path | str | None) -> PromptSet:
    """``prompts`` as a PromptSet: a bare folder (or None) takes the default domain."""
    if isinstance(prompts, PromptSet):
        return prompts
    return PromptSet(Path(prompts) if prompts is not None else None)


def domain_of(prompts: PromptSet | Path | str | None) -> Domain:
    return prompt_set(prompts).domain


def load_template(name: str, prompts: PromptSet | Path | None = None) -> tuple[str, str]:
    """(template text with the domain's words filled in, its short sha256) for ``<name>.txt``,
    user folder first (under its former name too, see :data:`FORMER_NAMES`)."""
    chosen = prompt_set(prompts)
    user = _user_template(name, chosen.folder) if chosen.folder is not None else None
    if user is not None:
        text = user.read_text(encoding="utf-8")
    else:
        text = (resources.files("t0_pipeline") / "prompts" / f"{name}.txt").read_text(
            encoding="utf-8"
        )
    text = fill(text, chosen.domain.words(), f"prompt template {name!r}")
    return text, hashlib.sha256(text.encode()).hexdigest()[:12]


def _user_template(name: str, folder: Path) -> Path | None:
    path = folder / f"{name}.txt"
    if path.is_file():
        return path
    former = name in FORMER_NAMES and folder / f"{FORMER_NAMES[name]}.txt"
    if former and former.is_file():
        _warn_former(str(former), name)
        return former
    return None


@functools.cache
def _warn_former(path: str, name: str) -> None:
    log.warning("%s uses the template's former name; rename it to %s.txt", path, name)


def render(template: str, name: str, **values: object) -> str:
    try:
        return string.Template(template).substitute({k: str(v) for k, v in values.items()})
    except KeyError as exc:
        raise T0Error(
            f"prompt template {name!r} uses ${exc.args[0]}, which this stage does not provide; "
            f"available: {', '.join(sorted(values))}."
        ) from None
    except ValueError as exc:
        raise T0Error(
            f"prompt template {name!r} is malformed ({exc}); write a literal $ as $$."
        ) from None


def load_sections(
    name: str, required: tuple[str, ...], prompts: PromptSet | Path | None = None
) -> tuple[dict[str, str], str]:
    """({part name: text}, hash) for a template file split into ``[part]`` sections."""
    text, digest = load_template(name, prompts)
    pieces = re.split(r"^\[([a-z_]+)\]\s*$", text, flags=re.M)
    sections = {pieces[i]: pieces[i + 1].strip("\n") for i in range(1, len(pieces) - 1, 2)}
    missing = [part for part in required if part not in sections]
    if missing:
        raise T0Error(
            f"prompt template {name!r} lacks the section(s) {', '.join(missing)}; each starts on a "
            f"line like [{missing[0]}] (see t0_pipeline/prompts/{name}.txt)."
        )
    return sections, digest
