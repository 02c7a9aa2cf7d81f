"""Dense search by chunk, ranked by document: each document scored by its nearest chunk, either
from Chroma's HNSW results (:func:`best_chunk_per_doc`) or exactly in memory over every live chunk
vector of an index (:class:`ExactChunks`, one matmul per block of queries)."""

from __future__ import annotations

import numpy as np


def best_chunk_per_doc(slugs: list[str], distances: list[float]) -> list[tuple[str, float]]:
    """Documents ordered by their best (smallest-distance) chunk; input is sorted by distance."""
    seen: dict[str, float] = {}
    for slug, dist in zip(slugs, distances):
        if slug not in seen:
            seen[slug] = dist
    return list(seen.items())


class ExactChunks:
    """Every live chunk vector of one index, grouped by document, scored exactly against query
    vectors.

    Distances are Chroma's own (squared L2, 1 - cosine, 1 - inner product), so scores and thresholds
    read the same whichever path answered.
    """

    def __init__(self, vectors: np.ndarray, slugs: list[str], starts: np.ndarray, distance: str):
        self.vectors, self.slugs, self.starts, self.distance = vectors, slugs, starts, distance
        self.sq_norms = np.einsum("ij,ij->i", vectors, vectors)
        if distance == "cosine":
            self.vectors = vectors / np.maximum(np.sqrt(self.sq_norms), 1e-12)[:, None]
        self._torch_vectors = None

    @classmethod
    def read(
        cls, collection, live16: dict[str, str], distance: str, page: int = 5_000
    ) -> "ExactChunks":
        rows: list[tuple[str, np.ndarray]] = []
        offset = 0
        while True:
            got = collection.get(include=["embeddings"], limit=page, offset=offset)
            for cid, vector in zip(got["ids"], got["embeddings"]):
                slug, digest, _ = cid.rsplit("::", 2)
                # chunks of older versions of a document are not searched
                if live16.get(slug) == digest:
                    rows.append((slug, vector))
            if len(got["ids"]) < page:
                break
            offset += page
        rows.sort(key=lambda row: row[0])
        slugs = sorted({slug for slug, _ in rows})
        doc_of = [slug for slug, _ in rows]
        starts = (
            np.searchsorted(np.array(doc_of, dtype=object), np.array(slugs, dtype=object))
            if rows
            else np.zeros(0, int)
        )
        vectors = np.array([v for _, v in rows], dtype=np.float32).reshape(len(rows), -1)
        return cls(vectors, slugs, starts.astype(np.int64), distance)

    def _matmul(self, queries: np.ndarray) -> np.ndarray:
        """queries @ vectors.T in torch, on the threads that just encoded the queries: numpy's BLAS
        would keep a second pool of threads spinning after the call, and the next query's encode
        would wait on them."""
        import torch

        if self._torch_vectors is None:
            self._torch_vectors = torch.from_numpy(self.vectors)
        with torch.inference_mode():
            return (torch.from_numpy(queries) @ self._torch_vectors.T).numpy()

    def rank(self, queries: np.ndarray, depth: int) -> list[list[tuple[str, float]]]:
        if not self.slugs:
            return [[] for _ in queries]
        depth = min(depth, len(self.slugs))
        out: list[list[tuple[str, float]]] = []
        # bounds the (queries x chunks) matrix held at once
        block = max(1, 20_000_000 // len(self.vectors))
        for start in range(0, len(queries), block):
            q = np.asarray(queries[start : start + block], dtype=np.float32)
            dots = self._matmul(q)
            if self.distance == "l2":
                dist = np.einsum("ij,ij->i", q, q)[:, None] + self.sq_norms[None, :] - 2 * dots
            elif self.distance == "cosine":
                dist = 1 - dots / np.maximum(np.linalg.norm(q, axis=1), 1e-12)[:, None]
            else:  # ip
                dist = 1 - dots
            best = np.minimum.reduceat(dist, self.starts, axis=1)  # each document's nearest chunk
            top = np.argpartition(best, depth - 1, axis=1)[:, :depth]
            for row, cols in zip(best, top):
                cols = cols[np.lexsort((cols, row[cols]))]
                out.append([(self.slugs[c], float(row[c])) for c in cols])
        return out
