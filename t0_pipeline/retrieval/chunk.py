"""Chunk documents by the embedding model's own tokenizer, with token overlap.

Windows are cut on token boundaries and mapped back to character offsets, so each
chunk's text is an exact slice of the document (case and punctuation intact) and
re-tokenises to at most ``size`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from t0_pipeline.artifacts import T0Error


@dataclass(frozen=True)
class Chunk:
    slug: str
    index: int  # position within the document
    text: str
    start: int  # character offsets into the document text
    end: int
    n_tokens: int


def token_windows(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) token windows of ``size`` covering ``n_tokens`` with ``overlap`` shared
    tokens."""
    if size <= overlap:
        raise T0Error(
            f"chunk size ({size} tokens) must be larger than the overlap ({overlap}); raise "
            "chunk.size or lower chunk.overlap."
        )
    if n_tokens == 0:
        return []
    step = size - overlap
    windows = []
    start = 0
    while True:
        end = min(start + size, n_tokens)
        windows.append((start, end))
        if end >= n_tokens:
            return windows
        start += step


def chunk_documents(
    slugs: list[str], texts: list[str], tokenizer, size: int, overlap: int
) -> list[Chunk]:
    """Chunks for every document, in document order (one batched tokenizer call)."""
    if not texts:
        return []
    encoded = tokenizer(
        texts,
        add_special_tokens=False,
        return_offsets_mapping=True,
        truncation=False,
        verbose=False,
    )
    chunks: list[Chunk] = []
    for slug, text, offsets in zip(slugs, texts, encoded["offset_mapping"]):
        for i, (a, b) in enumerate(token_windows(len(offsets), size, overlap)):
            start, end = offsets[a][0], offsets[b - 1][1]
            chunks.append(Chunk(slug, i, text[start:end], start, end, b - a))
    return chunks
