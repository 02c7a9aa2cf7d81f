"""Every stage's configuration in one place: pydantic models with commented defaults.

Environment overrides use the ``T0_`` prefix (``T0_DATA_DIR=/scratch/t0``). Stage
functions take these models; the CLI and the Dagster layer only build them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SourceKind = Literal["sample", "site", "mirror", "pages"]
IndexName = Literal["full", "summaries"]
RetrieverMode = Literal["dense", "bm25", "hybrid"]
Distance = Literal["l2", "cosine"]

INDEX_NAMES: tuple[IndexName, ...] = ("full", "summaries")
RETRIEVER_MODES: tuple[RetrieverMode, ...] = ("dense", "bm25", "hybrid")


class Settings(BaseSettings):
    """Process-wide settings read from the environment."""

    model_config = SettingsConfigDict(env_prefix="T0_", extra="ignore")

    data_dir: Path = Path("data")  # one root for every artefact; partition keys go below it


class PageFields(BaseModel):
    """Field names in a JSONL/Parquet of pre-scraped pages (other scrapers name them differently)."""

    slug: str = "slug"
    title: str = "title"
    url: str = "url"
    text: str = "text"


class SourceConfig(BaseModel):
    """Where the corpus comes from and how politely to fetch it."""

    kind: SourceKind = "sample"  # sample = the bundled offline mirror; site = live HTTP crawl
    location: str | None = None  # site: index URL; mirror: directory; pages: .jsonl/.parquet file
    adapter: str = "nhs"  # site adapter holding selectors and URL patterns (t0_pipeline.sites)
    exclude_slugs: list[str] = Field(default_factory=lambda: ["mental-health"])  # aggregate pages, not conditions
    fields: PageFields = Field(default_factory=PageFields)
    user_agent: str = "t0-pipeline/0.1 (+corpus crawler; contact: set T0 user_agent)"
    delay_s: float = 0.5  # minimum gap between request starts to one host
    concurrency: int = 4  # requests in flight at once
    timeout_s: float = 20.0  # per request
    max_attempts: int = 4  # then the page is reported as failed
    backoff_s: float = 1.0  # first retry wait; doubles each attempt, with jitter
    max_backoff_s: float = 60.0  # cap on any single wait, Retry-After included
    respect_robots: bool = True  # read robots.txt and skip what it disallows
    max_pages: int | None = None  # stop after this many conditions (smoke tests of a live site)

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


class EmbeddingConfig(BaseModel):
    model: str | None = None  # sentence-transformers name or path; None = bundled all-MiniLM-L6-v2
    device: str = "cpu"
    batch_size: int = 64  # encode batch; 64 keeps MiniLM busy on 2 cores
    normalize: bool = False  # keep raw vectors so L2 matches the report; cosine needs no normalising


class ChunkConfig(BaseModel):
    size: int | None = None  # tokens per chunk; None = the model's max sequence length minus special tokens
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


class RetrievalConfig(BaseModel):
    mode: RetrieverMode = "hybrid"
    rrf_k: int = 60  # reciprocal rank fusion constant (Cormack et al.)
    fusion_depth: int = 50  # documents taken from each ranker before fusing (k wins when larger)
    chunk_oversample: float = 1.5  # dense: first window = depth × chunks-per-document × this; doubles if short


class RetrievalEvalConfig(BaseModel):
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10, 30, 50, 100])  # report's Table 1
    indexes: list[IndexName] = Field(default_factory=lambda: list(INDEX_NAMES))
    modes: list[RetrieverMode] = Field(default_factory=lambda: list(RETRIEVER_MODES))
    query_field: str = "query"
    target_field: str = "condition"  # one slug or a list of acceptable slugs
    queries: Path | None = None  # None = the bundled sample query set


class PipelineConfig(BaseModel):
    """Everything one end-to-end run needs; written next to the artefacts it made."""

    source: SourceConfig = Field(default_factory=SourceConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    summary: SummaryConfig = Field(default_factory=SummaryConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    chroma: ChromaConfig = Field(default_factory=ChromaConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    retrieval_eval: RetrievalEvalConfig = Field(default_factory=RetrievalEvalConfig)


class DataPaths:
    """Where each artefact lives under the data root (one place, so nothing hard-codes paths)."""

    def __init__(self, data_dir: Path | str | None = None):
        self.root = Path(data_dir) if data_dir is not None else Settings().data_dir

    @property
    def pages(self) -> Path:
        return self.root / "corpus" / "pages.parquet"

    @property
    def crawl_report(self) -> Path:
        return self.root / "corpus" / "crawl_report.json"

    @property
    def conditions(self) -> Path:
        return self.root / "corpus" / "conditions.parquet"

    @property
    def summaries(self) -> Path:
        return self.root / "corpus" / "summaries.parquet"

    @property
    def eval_queries(self) -> Path:
        return self.root / "eval" / "queries.parquet"

    def chroma_dir(self, chroma: ChromaConfig) -> Path:
        return chroma.path if chroma.path is not None else self.root / "index" / "chroma"

    def index_manifest(self, index: IndexName) -> Path:
        return self.root / "index" / f"{index}.manifest.json"

    def bm25_dir(self, index: IndexName) -> Path:
        return self.root / "index" / f"bm25_{index}"

    def documents(self, index: IndexName) -> Path:
        return self.summaries if index == "summaries" else self.conditions

    @property
    def retrieval_report_dir(self) -> Path:
        return self.root / "eval" / "retrieval"


def load_config(path: Path | str | None) -> PipelineConfig:
    """A PipelineConfig from a .json/.yaml/.toml file (any subset of fields), or the defaults."""
    if path is None:
        return PipelineConfig()
    import json

    from pydantic import ValidationError

    from t0_pipeline.artifacts import T0Error

    path = Path(path)
    if not path.is_file():
        raise T0Error(f"config file {path} does not exist; check the --config path.")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise T0Error(f"config file {path}: field {where!r}: {err['msg']}; fix the value (see `t0 config` for defaults).") from None
    except Exception as exc:  # syntax errors from json/yaml/toml
        raise T0Error(f"config file {path} could not be parsed ({exc.__class__.__name__}: {str(exc).splitlines()[0]}).") from None
