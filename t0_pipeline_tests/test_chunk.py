"""Token chunking with overlap, on the embedding model's own tokenizer."""

from __future__ import annotations

import pytest

from t0_pipeline.artifacts import T0Error
from t0_pipeline.retrieval.chunk import chunk_documents, token_windows


def test_windows_cover_everything_with_exact_overlap():
    windows = token_windows(500, 200, 50)
    assert windows == [(0, 200), (150, 350), (300, 500)]
    assert token_windows(120, 200, 50) == [(0, 120)]
    assert token_windows(0, 200, 50) == []


def test_overlap_must_be_smaller_than_size():
    with pytest.raises(T0Error, match="must be larger than the overlap"):
        token_windows(10, 50, 50)


def test_chunks_are_exact_slices_that_fit_and_overlap(embedder):
    tok = embedder.tokenizer
    text = " ".join(f"Sentence {i} says the Patient has a Rash number {i}." for i in range(80))
    chunks = chunk_documents(["doc"], [text], tok, size=64, overlap=16)
    assert len(chunks) > 3
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert len(tok(c.text, add_special_tokens=False)["input_ids"]) <= 64
    a = tok(chunks[0].text, add_special_tokens=False)["input_ids"]
    b = tok(chunks[1].text, add_special_tokens=False)["input_ids"]
    assert a[-16:] == b[:16]  # 16 shared tokens
    assert chunks[-1].end == len(text.rstrip(".")) + 1 and chunks[0].start == 0
    assert "Patient" in chunks[0].text  # case preserved (slices, not decoded tokens)
