"""Extractive summaries: symptoms and when-to-get-help sentences within budget; reuse when unchanged."""

from __future__ import annotations

import polars as pl
import pytest

from t0_pipeline.artifacts import T0Error, sha256_text
from t0_pipeline.config import SummaryConfig
from t0_pipeline.summarise import ExtractiveSummariser, get_summariser, summarise_documents

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
    docs = pl.DataFrame({"slug": ["ff"], "title": ["FF"], "url": ["u"], "text": [DOC], "content_hash": [sha256_text(DOC)]})

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
