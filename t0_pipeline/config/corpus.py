"""Settings of the corpus and retrieval stages: sources, cleaning, summaries, embedding, chunks,
Chroma, retrieval, its evaluation and the retriever's fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from t0_pipeline.config.base import (
    INDEX_NAMES,
    RETRIEVER_MODES,
    BaseModel,
    Distance,
    IndexName,
    RetrieverMode,
    SourceKind,
)


class PageFields(BaseModel):
    """Field names in a JSONL/Parquet of pre-scraped pages (other scrapers name them
    differently)."""

    slug: str = "slug"
    title: str = "title"
    url: str = "url"
    text: str = "text"


class SourceConfig(BaseModel):
    """Where the corpus comes from and how politely to fetch it."""

    kind: SourceKind = "sample"  # sample = the bundled offline mirror; site = live HTTP crawl
    # site: index URL; mirror: directory; pages: .jsonl/.parquet file; documents: a folder of PDF,
    # DOCX, HTML, Markdown and text files (t0_pipeline.corpus.documents)
    location: str | None = None
    # documents: which files under the folder (globs on the path relative to it; hidden files never)
    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(default_factory=list)
    max_file_mb: float = Field(50.0, gt=0)  # documents: a larger file is skipped and named
    # the documents' licence, named in the dataset and model cards: a Hugging Face licence id (mit,
    # apache-2.0, cc-by-4.0, …) or another licence's short name (ogl-uk-3.0); None = the site
    # adapter's (nhs: ogl-uk-3.0) for the sample and site sources, else "unknown"
    license: str | None = None
    license_link: str | None = None  # where the licence's text is
    adapter: str = (
        "nhs"  # site adapter holding selectors and URL patterns (t0_pipeline.corpus.sites)
    )
    # aggregate pages, not conditions
    exclude_slugs: list[str] = Field(default_factory=lambda: ["mental-health"])
    fields: PageFields = Field(default_factory=PageFields)
    user_agent: str = "t0-pipeline/0.1 (+corpus crawler; contact: set T0 user_agent)"
    delay_s: float = 0.5  # minimum gap between request starts to one host
    concurrency: int = 4  # requests in flight at once
    timeout_s: float = 20.0  # per read or connect
    # per request, connect to last byte: a server dripping bytes cannot hold a slot longer
    deadline_s: float = 60.0
    # per response, counted after decompression (a gzip bomb stops here)
    max_page_bytes: int = 5_000_000
    # redirects are followed on the same host only; others fail the page with the reason
    max_redirects: int = 5
    max_attempts: int = 4  # then the page is reported as failed
    backoff_s: float = 1.0  # first retry wait; doubles each attempt, with jitter
    max_backoff_s: float = 60.0  # cap on any single wait, Retry-After included
    respect_robots: bool = True  # read robots.txt and skip what it disallows
    # at most this many conditions per crawl (a runaway index is cut and reported)
    max_pages: int | None = 5000

    @field_validator("concurrency", "max_attempts")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value


class CleanConfig(BaseModel):
    min_chars: int = 40  # a cleaned document shorter than this is reported as empty


class SummaryConfig(BaseModel):
    backend: Literal["extractive", "llm"] = "extractive"  # llm arrives with the LLM layer
    max_words: int = 120  # ~3-4 sentences, the report's summary length
    max_sentences: int = 6  # hard cap even when sentences are short
    max_page_chars: int = 12000  # llm: longer pages are cut to fit the summariser's context


class EmbeddingConfig(BaseModel):
    # sentence-transformers name or path; None = bundled all-MiniLM-L6-v2 (or the tuned one)
    model: str | None = None
    device: str = "cpu"
    batch_size: int = 16  # encode batch; on 2 CPU cores 8-16 encode fastest (64 is ~10% slower)
    # keep raw vectors so L2 matches the report; cosine needs no normalising
    normalize: bool = False
    # documents (index builds) encoded with int8 linear layers (dynamic, per channel): ~2.4x faster
    # on CPU, p@k within 0.01 of float on our query sets; queries stay float. auto = int8 on CPU,
    # float on GPU; none = float
    quantize: Literal["auto", "int8", "none"] = "auto"
    # use the retriever_model asset's fine-tuned embedder once it has been trained and measured
    # better
    use_tuned: bool = True


class RetrieverTuneConfig(BaseModel):
    """Fine-tuning the embedder on the synthetic training queries (the ``retriever_model``
    asset)."""

    # what a query is paired with, and what p@k before/after is measured on
    documents: IndexName = "summaries"
    epochs: float = Field(1.0, gt=0)
    # in-batch negatives: every other document in the batch is a negative
    batch_size: int = Field(32, ge=2)
    learning_rate: float = Field(5e-5, gt=0)
    warmup: float = Field(0.1, ge=0, lt=1)  # share of steps
    # per query: best-ranked wrong documents under the current embedder
    hard_negatives: int = Field(1, ge=0)
    max_pairs: int | None = None  # cap on training pairs (None = every training query)
    seed: int = 0
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10, 30])
    min_gain: float = 0.0  # mean p@k gain the tuned model needs over the current one to be used
    # share of the training (condition, disposition) pairs held out as the development split that
    # decides whether the tuned model is used; the evaluation split is only reported, never used
    dev_fraction: float = Field(0.2, gt=0, lt=1)
    # experiment trackers, as train.report_to (files under the retriever folder's runs/)
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers(cls, value):
        from t0_pipeline.trackers import normalise

        return normalise(value)


class ChunkConfig(BaseModel):
    # tokens per chunk; None = the model's max sequence length minus special tokens
    size: int | None = None
    overlap: int = 50  # tokens shared by neighbouring chunks (report: 50)

    @field_validator("overlap")
    @classmethod
    def _non_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be >= 0")
        return value


class ChromaConfig(BaseModel):
    path: Path | None = None  # embedded store directory; None = <data_dir>/index/chroma
    host: str | None = None  # set to use a Chroma server (HttpClient) instead of the embedded store
    port: int = 8000
    distance: Distance = "l2"  # report: L2; cosine selectable
    collection_prefix: str = "t0"  # collections are <prefix>_full and <prefix>_summaries
    # chunks encoded then written together: a kill loses at most one batch
    write_batch: int = Field(512, ge=1)


class FusionWeights(BaseModel):
    """How much each ranking counts in a hybrid search (weighted reciprocal rank fusion). Chosen on
    our hard development queries (benchmarks/queries/hard_dev.jsonl) from a coarse grid, and better
    on the easy sets too: the index's own dense ranking counts double; 0 leaves a ranking out."""

    dense: float = Field(1.0, ge=0)  # the index's own dense ranking
    bm25: float = Field(0.5, ge=0)  # the index's own BM25 ranking
    full_dense: float = Field(0.5, ge=0)  # summaries only, with fuse_full_pages: full pages, dense
    full_bm25: float = Field(0.5, ge=0)  # … and full pages, BM25


class ExpansionConfig(BaseModel):
    """Document expansion (doc2query): queries written for a document are indexed with it, as extra
    vectors pointing to it (dense) and extra words (BM25); the text served stays the document's. Off
    by default; when on, the index assets depend on synthetic_queries and read its training split
    only (the evaluation split scores the result)."""

    enabled: bool = False
    indexes: list[IndexName] = Field(default_factory=lambda: list(INDEX_NAMES))
    # query texts kept per document (in the file's order); more adds vectors, not much recall
    per_document: int = Field(16, ge=1)
    # a query file (JSONL, JSON or Parquet: ``query`` and ``slug`` or ``condition``) to expand from
    # instead of the synthetic training split
    source: Path | None = None


class RetrievalConfig(BaseModel):
    mode: RetrieverMode = "hybrid"
    # reciprocal rank fusion constant: score = Σ weight / (rrf_k + rank). 10 (Cormack et al. used
    # 60) lets the top of each ranking count more; chosen with fusion_weights on the hard
    # development set
    rrf_k: int = Field(10, gt=0)
    fusion_weights: FusionWeights = Field(default_factory=FusionWeights)
    # documents taken from each ranker before fusing (k wins when larger)
    fusion_depth: int = Field(50, ge=1)
    # dense: first window = depth × chunks-per-document × this; doubles if short
    chunk_oversample: float = 1.5
    # hybrid search of the summaries also fuses the full pages' dense and BM25 rankings (the query
    # is encoded once): summaries carry the symptoms, full pages the rest of what a patient may
    # mention (needs the full indexes)
    fuse_full_pages: bool = True
    # dense search of an index with at most this many chunks scores every chunk exactly, from
    # vectors read once out of Chroma into memory (~1.5 KB a chunk): exact, and faster than an HNSW
    # query at this size; 0 = always Chroma
    exact_max_chunks: int = Field(50_000, ge=0)
    # traces, evaluation and every serve profile must retrieve alike (index, mode, k): a student is
    # trained, measured and served on one kind of context. true = let them differ on purpose
    mixed_contexts: bool = False


class RetrievalEvalConfig(BaseModel):
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10, 30, 50, 100])  # report's Table 1
    indexes: list[IndexName] = Field(default_factory=lambda: list(INDEX_NAMES))
    modes: list[RetrieverMode] = Field(default_factory=lambda: list(RETRIEVER_MODES))
    query_field: str = "query"
    # one slug or a list of them; None = "condition", else "slug" (synthetic rows)
    target_field: str | None = None
    # None = the synthetic evaluation split when written, else the bundled sample
    queries: Path | None = None
    # a serve profile: each query also goes through its agent's search-query step (as a served turn
    # would) and is scored both ways (modes "dense+agent", …), so the table shows what the agent's
    # rewriting adds
    rewrite_with: str | None = None
