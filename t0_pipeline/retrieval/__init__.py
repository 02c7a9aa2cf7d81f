"""Retrieval: documents → chunks → embeddings in Chroma and BM25 indexes; query text → the top-k
documents (dense, BM25 or hybrid); p@k on labelled queries; the embedder tuned on the pipeline's own
synthetic queries.
"""
