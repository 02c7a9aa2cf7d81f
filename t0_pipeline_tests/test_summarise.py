"""Extractive summaries: symptoms and when-to-get-help sentences within budget; reuse when
unchanged."""

from __future__ import annotations

import polars as pl
import pytest

from t0_pipeline.artifacts import T0Error, sha256_text
from t0_pipeline.config import SummaryConfig
from t0_pipeline.synthetic.summarise import (
    ExtractiveSummariser,
    get_summariser,
    summarise_documents,
)

DOC = """# Fictional fever
Fictional fever is a made-up infection used in tests.
It was first described in a novel. The author lived in a lighthouse. Many readers enjoyed the book.
## Symptoms of fictional fever
- a purple tongue
- humming in the ears
## History
The illness is named after a village. The village has a market on Tuesdays.
### Urgent advice: Ask for an urgent GP appointment or call 111 if:
- the humming lasts more than 2 days
### Immediate action required: Call 999 or go to A&E if:
- you cannot breathe"""


def test_summary_keeps_definition_symptoms_and_every_level_of_care():
    summary = ExtractiveSummariser(SummaryConfig(max_words=70)).summarise("Fictional fever", DOC)
    assert summary.startswith("Fictional fever is a made-up infection")
    assert "purple tongue" in summary
    assert "111" in summary and "999" in summary
    assert "lighthouse" not in summary and "Tuesdays" not in summary
    assert len(summary.split()) <= 70 + 20  # budget counts item words plus their heading once


def test_budget_is_respected():
    summary = ExtractiveSummariser(SummaryConfig(max_words=12)).summarise("t", DOC)
    assert 0 < len(summary.split()) <= 14


def test_unchanged_documents_reuse_their_summary_and_compression_is_recorded():
    docs = pl.DataFrame(
        {
            "slug": ["ff"],
            "title": ["FF"],
            "url": ["u"],
            "text": [DOC],
            "content_hash": [sha256_text(DOC)],
        }
    )

    class Counting(ExtractiveSummariser):
        calls = 0

        def summarise(self, title, text):
            Counting.calls += 1
            return super().summarise(title, text)

    s = Counting(SummaryConfig())
    first, failed = summarise_documents(docs, s)
    assert failed == []
    assert 0.2 < first["compression"][0] < 1.0
    assert first["source_hash"][0] == sha256_text(DOC)
    again, _ = summarise_documents(docs, s, previous=first)
    assert Counting.calls == 1 and again["text"].to_list() == first["text"].to_list()


def test_llm_backend_without_llm_config_is_a_clear_error():
    with pytest.raises(T0Error, match="needs the llm section"):
        get_summariser(SummaryConfig(backend="llm"))


PLAIN = """Wobbly knee

Wobbly knee often starts slowly.
Other symptoms of wobbly knee can include:
a clicking sound when you climb stairs
the knee giving way on slopes
a dull ache behind the kneecap

Wobbly knee is usually treated with physiotherapy.
Your doctor may prescribe a brace to wear at night.
A scan can show the loose ligament.

Go to A&E if your knee is suddenly very swollen and you cannot stand."""


def test_plain_extracts_keep_the_symptom_list_and_urgency_and_drop_treatment():
    """Page extracts without Markdown: a list is the bare lines after a line ending in ':'."""
    summary = ExtractiveSummariser(SummaryConfig()).summarise("Wobbly knee", PLAIN)
    assert (
        "Other symptoms of wobbly knee can include: a clicking sound when you climb stairs; the "
        "knee giving way on slopes; a dull ache behind the kneecap." in summary
    )
    assert "A&E" in summary and "cannot stand" in summary
    for treatment in ("physiotherapy", "brace", "scan"):
        assert treatment not in summary
    assert not summary.startswith("Wobbly knee.")  # the repeated title line is not a sentence


def test_the_method_and_budget_are_part_of_the_summaries_provenance():
    """Stored summaries are reused only when made by the same method with the same budget."""
    docs = pl.DataFrame(
        {
            "slug": ["wk"],
            "title": ["Wobbly knee"],
            "url": ["u"],
            "text": [PLAIN],
            "content_hash": [sha256_text(PLAIN)],
        }
    )
    first, _ = summarise_documents(docs, ExtractiveSummariser(SummaryConfig(max_words=120)))
    shorter, _ = summarise_documents(
        docs, ExtractiveSummariser(SummaryConfig(max_words=15)), previous=first
    )
    assert (
        shorter["summariser"][0] != first["summariser"][0] and len(shorter["text"][0].split()) <= 15
    )
