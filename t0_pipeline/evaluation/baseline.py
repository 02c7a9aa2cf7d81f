"""The model-free reference row: the top retrieved condition, and a disposition read off its page.

Health pages say when to seek which care: "Call 999 if: …", "Ask for an urgent GP
appointment if: …", followed by the symptoms that warrant it (the phrases are the domain's
categories' ``triggers``: another domain names its own). The baseline finds those
passages in the top-1 document's page (a trigger line and the lines after it, until the
next trigger or heading), and picks the urgency whose passage shares the most content
words with the patient's message. When no passage shares at least ``min_overlap`` words
the answer is the least urgent category (Self-care). It is deliberately simple: it shows what
retrieval alone is worth.
"""

from __future__ import annotations

import re

from t0_pipeline.domain import Domain, default_domain


def triggers(domain: Domain | None = None) -> list[tuple[str, re.Pattern]]:
    """(category, pattern) for each category with trigger phrases in ``domain`` (default: the NHS
    domain's "call 999", "urgent GP appointment", …), most urgent first: a line matching several
    counts as the most urgent."""
    categories = (domain or default_domain()).categories
    return [
        (c.name, re.compile("|".join(c.triggers), re.I)) for c in reversed(categories) if c.triggers
    ]


HEADING = re.compile(r"^(#+ |--- |=== |@)")
STOPWORDS = frozenset(
    """the and for you your has have had was were are but not can could its our get got one two all
any about after again also been before being does doing down feel feeling from having into
just like more most much only other over really same some such than that their them then
there these they this those very what when where which while with would i've it's can't
don't day days week weeks hour hours since last been see""".split()
)
SECTION_LINES = 12  # a passage ends after this many lines even without a new heading


def _stem(word: str) -> str:
    if len(word) > 4:
        word = re.sub(r"(ful|ing|ed|es|s|ly)$", "", word)
    return word[:5]


def _words(text: str) -> set[str]:
    """Content words (three letters or more: "hot", "red", "arm" matter), crudely stemmed: "painful"
    meets "pain"."""
    return {_stem(w) for w in re.findall(r"[a-z]{3,}", text.lower()) if w not in STOPWORDS}


def urgency_passages(page: str, domain: Domain | None = None) -> list[tuple[str, str]]:
    """(urgency, passage text) for each trigger line and the lines that follow it."""
    patterns = triggers(domain)
    passages: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    for line in page.splitlines():
        level = next((lvl for lvl, pattern in patterns if pattern.search(line)), None)
        if level is not None:
            current = (level, [line])
            passages.append(current)
        elif current is not None:
            if HEADING.match(line) or len(current[1]) >= SECTION_LINES:
                current = None
            elif line.strip():
                current[1].append(line)
    return [(level, "\n".join(lines)) for level, lines in passages]


def disposition_from_page(
    query: str, page: str, min_overlap: int = 2, domain: Domain | None = None
) -> str:
    """The category whose page passage shares most words with ``query``; the least urgent when
    none shares ``min_overlap``."""
    domain = domain or default_domain()
    query_words = _words(query)
    best, best_overlap = domain.category_names[0], min_overlap - 1
    for level, passage in urgency_passages(page, domain):
        overlap = len(query_words & _words(passage))
        if overlap > best_overlap:  # ties keep the earlier (page order puts emergencies first)
            best, best_overlap = level, overlap
    return best
