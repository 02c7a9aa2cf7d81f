"""The model-free reference row: the top retrieved condition, and a disposition read off its page.

Health pages say when to seek which care: "Call 999 if: …", "Ask for an urgent GP
appointment if: …", followed by the symptoms that warrant it. The baseline finds those
passages in the top-1 document's page (a trigger line and the lines after it, until the
next trigger or heading), and picks the urgency whose passage shares the most content
words with the patient's message. When no passage shares at least ``min_overlap`` words
the answer is Self-care. It is deliberately simple: it shows what retrieval alone is worth.
"""

from __future__ import annotations

import re

A_AND_E, URGENT, SELF_CARE = "A&E", "Urgent Primary Care", "Self-care"
TRIGGERS = (  # most urgent first: a line matching several counts as the most urgent
    (
        A_AND_E,
        re.compile(
            r"call 999|dial 999|go to a ?& ?e|immediate action required|emergency department", re.I
        ),
    ),
    (
        URGENT,
        re.compile(
            r"urgent gp appointment|call 111|111 online|get help from 111|see a gp urgently|"
            r"contact (?:your|a) gp urgently|urgent advice|non-urgent advice|see a gp if",
            re.I,
        ),
    ),
)
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


def urgency_passages(page: str) -> list[tuple[str, str]]:
    """(urgency, passage text) for each trigger line and the lines that follow it."""
    passages: list[tuple[str, list[str]]] = []
    current: tuple[str, list[str]] | None = None
    for line in page.splitlines():
        level = next((lvl for lvl, pattern in TRIGGERS if pattern.search(line)), None)
        if level is not None:
            current = (level, [line])
            passages.append(current)
        elif current is not None:
            if HEADING.match(line) or len(current[1]) >= SECTION_LINES:
                current = None
            elif line.strip():
                current[1].append(line)
    return [(level, "\n".join(lines)) for level, lines in passages]


def disposition_from_page(query: str, page: str, min_overlap: int = 2) -> str:
    query_words = _words(query)
    best, best_overlap = SELF_CARE, min_overlap - 1
    for level, passage in urgency_passages(page):
        overlap = len(query_words & _words(passage))
        if overlap > best_overlap:  # ties keep the earlier (page order puts emergencies first)
            best, best_overlap = level, overlap
    return best
