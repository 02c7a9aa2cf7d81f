"""Settings of the model stages: model servers, LLM roles, synthetic queries, traces, SFT,
training, budget forcing and evaluation (with the entries each student size brings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from t0_pipeline.chat import ChatFormat
from t0_pipeline.config.base import BaseModel, IndexName, RetrieverMode


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
    # None = the most GPUs the server gets (local: visible; Slurm: its allocation's) that divide the
    # model's attention heads (its config.json), as vLLM requires
    tensor_parallel_size: int | None = None
    # Slurm: the site profile's allocation whose GPUs per node and memory the server job takes;
    # None = the student's size, else the allocation with the most GPUs on one node
    size: str | None = None
    # vLLM's share of each GPU's memory (--gpu-memory-utilization); None = vLLM's default. Set
    # when two servers share GPUs (t0 serve's agent and student on one machine)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    max_model_len: int | None = None  # None = the model's own context length
    # extra server arguments, e.g. ["--reasoning-parser", "deepseek_r1"]
    args: list[str] = Field(default_factory=list)


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
    # provider-specific fields, e.g. vLLM's chat_template_kwargs
    extra_body: dict = Field(default_factory=dict)
    # JSON requests send their schema as response_format and the server only produces valid JSON
    # (vLLM's structured outputs, OpenAI, the CPU server); off by default because some providers
    # refuse the field
    structured_output: bool = False
    input_cost_per_token: float | None = None  # set for self-hosted models litellm has no price for
    output_cost_per_token: float | None = None
    # the pipeline starts a server for it; None = api_base is already running
    serve: LaunchConfig | None = None
    # a train.sizes key: this model is that trained student (with ``serve``, its final/ is served;
    # lineage, serving)
    student: str | None = None
    # what answers at api_base, in every cache key: set by the pipeline to the served
    # checkpoint's digest (t0_pipeline.weights); set it (any text) when your endpoint changes model
    weights: str | None = None

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
    # problem: nothing answering (refused, DNS, TLS) this long, no success between
    unreachable_after_s: float = Field(20.0, gt=0)
    # share of a stage's calls that may fail (for other reasons) …
    max_failure_share: float = Field(0.5, gt=0, le=1)
    failure_budget_min_calls: int = Field(20, ge=1)  # … counted once this many calls have finished
    # None = <data_dir>/llm_cache.sqlite; point several runs at one file to share
    cache_path: Path | None = None
    prompts_dir: Path | None = None  # a folder of replacement prompt templates (same file names)


class QueryGenConfig(BaseModel):
    """Synthetic patient queries (report: 1,000 evaluation + 2,000 training)."""

    n_eval: int = 1000
    n_train: int = 2000
    seed: int = 0
    # the draws' styles and categories; None = the domain's personas and categories (all of them:
    # the NHS domain's basic, hypochondriac, downplay and Self-care, Urgent Primary Care, A&E)
    query_types: list[str] | None = None
    dispositions: list[str] | None = None
    sexes: list[str] = Field(default_factory=lambda: ["female", "male"])
    max_redraws: int = 5  # after a refusal, new conditions tried for the same cell before giving up
    # the writer may refuse a (condition, disposition) it cannot write (structured: a flag)
    allow_refusal: bool = True
    max_top_up_rounds: int = 10  # rounds of extra training draws after removing overlaps
    # draws all those rounds may spend; None = n_train
    max_top_up_draws: int | None = Field(None, ge=0)
    # which text the writer sees (report: full page)
    source: Literal["conditions", "summaries"] = "conditions"
    max_page_chars: int = 12000  # longer pages are cut to fit the writer's context
    max_failure_rate: float = 0.05  # asset check: failed draws / requested
    max_refusal_rate: float = 0.5  # asset check: refusals / draws (pages often lack an A&E case)
    # example messages the writer sees (about conditions outside the corpus; a small model needs
    # them), from examples_file (None = the bundled prompts/query_examples.jsonl); 0 = none
    examples: int = Field(0, ge=0)
    examples_file: Path | None = None
    # blocking check: at least this share of the queries read as a first-person message in words
    min_readable_share: float = Field(0.8, ge=0, le=1)


class TraceConfig(BaseModel):
    k: int = 5  # retrieved summaries per query (report: 5)
    index: IndexName = "summaries"
    # report: dense; here as evaluation and serving retrieve (retrieval.mixed_contexts), hybrid: the
    # best measured on real patients' words
    mode: RetrieverMode = "hybrid"
    keep: Literal["all", "parsable", "correct"] = "parsable"  # which traces go into the SFT data
    correct_on: Literal["condition", "both"] = "condition"  # what "correct" means for keep=correct
    # teacher samples per query (each its own seed): with keep=correct, more queries get a correct
    # trace (rejection sampling); every kept sample trains
    samples: int = Field(1, ge=1)
    # blocking check: at least this share of the kept traces think in readable words about their
    # query (a complaint word of it, or a retrieved title)
    min_grounded_share: float = Field(0.8, ge=0, le=1)


# the report's block: the longest example, in tokens, the SFT data keeps and training takes whole
DEFAULT_BLOCK_SIZE = 32768


class SFTConfig(BaseModel):
    # student tokenizer name or path; None = a Qwen-style template rendered by hand
    tokenizer: str | None = None
    block_size: int = DEFAULT_BLOCK_SIZE  # tokens (report); training follows unless it sets its own
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
    # share of the steps; transformers ≥5 reads <1 as a ratio
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    per_device_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    # tokens; longer examples are dropped (and counted), never cut. None = sft.block_size, the block
    # the SFT data was built for (32,768 for a TrainConfig on its own)
    block_size: int | None = None
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
    # none; or a name in slurm/deepspeed (zero3, zero3_offload), a JSON path, or "none" (plain DDP /
    # one device)
    deepspeed: str | None = "auto"
    # the loss over the vocabulary: plain (transformers'), chunked (t0_pipeline.training.loss: a
    # chunk of loss_chunk_tokens at a time, same loss and gradients), liger (Liger Kernel's fused
    # linear cross-entropy; GPUs, the gpu extra), or auto: plain when the run's memory plan fits
    # with it, else chunked (see t0_pipeline.training.memory_plan). train.deepspeed auto likewise
    # adds optimizer offload, then parameter offload, on GPUs when the plan needs them
    loss: Literal["auto", "plain", "chunked", "liger"] = "auto"
    loss_chunk_tokens: int = Field(default=1024, ge=16)
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    # experiment trackers (the trainer's integrations): tensorboard (local files under
    # <output>/runs/, no account), wandb, mlflow, trackio, … or none; see
    # t0_pipeline.trackers
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    sizes: dict[str, str] = Field(
        default_factory=lambda: {  # partition key → base model (report's five sizes)
            size: f"Qwen/Qwen2.5-{size}-Instruct" for size in ("1.5B", "3B", "7B", "14B", "32B")
        }
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _trackers(cls, value):
        from t0_pipeline.trackers import normalise

        return normalise(value)

    @model_validator(mode="after")
    def _lora_without_zero3(self):
        if self.lora.enabled and str(self.deepspeed or "").lower().startswith("zero3"):
            raise ValueError(
                f"lora.enabled with deepspeed {self.deepspeed}: LoRA trains its adapters with "
                "plain data parallelism here; set train.deepspeed to auto or none, or turn LoRA off"
            )
        return self

    @property
    def block(self) -> int:
        """The block in tokens: ``block_size``, else the default (a pipeline config fills
        ``block_size`` from ``sft.block_size``)."""
        return self.block_size or DEFAULT_BLOCK_SIZE


class BudgetConfig(BaseModel):
    """Budget forcing (s1-style) for reasoning models; see :mod:`t0_pipeline.evaluation.budget`."""

    thinking_budget: int = 1024  # tokens of thinking at most (report)
    max_waits: int = 3  # times an early end of thinking is replaced by wait_text (report)
    answer_tokens: int = 256  # tokens for the answer after the forced answer marker
    # the markers; None = the pipeline's chat_format (set them here only for a model trained on
    # another format)
    think_start: str | None = None
    think_end: str | None = None
    answer_start: str | None = None
    turn_tokens: list[str] | None = None  # generation stops on these too; None = chat_format's
    wait_text: str = "Wait"
    # vLLM: tokens before a stop may end the first thinking request; after a "Wait" at least 1 (s1)
    min_tokens: int = 0

    def with_format(self, chat_format: "ChatFormat | None" = None) -> "BudgetConfig":
        """These settings with every unset marker taken from ``chat_format`` (default: the s1
        format)."""
        fmt = chat_format or ChatFormat()
        return self.model_copy(
            update={
                k: getattr(fmt, k)
                for k in ("think_start", "think_end", "answer_start", "turn_tokens")
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

    # partition key → model
    models: dict[str, EvalModelConfig] = Field(default_factory=_default_eval_models)
    # also evaluate every train.sizes student and its base (entries named here win)
    with_sizes: bool = True
    # 0 = the list of every condition instead of documents
    ks: list[int] = Field(default_factory=lambda: [0, 5])
    runs: int = 10  # repeated runs per (model, k); seeds are seed, seed+1, ...
    seed: int = 0
    # None = the synthetic evaluation set; or a .jsonl/.parquet with slug, disposition
    queries: Path | None = None
    max_queries: int | None = None  # evaluate the first n (smoke tests)
    index: IndexName = "summaries"  # what k>0 retrieves from (report: summaries, dense)
    mode: RetrieverMode = "hybrid"  # as traces and serving (retrieval.mixed_contexts)
    # how answers are read: reference = as the report (first pair, exact levels of care, exactly one
    # tool call); tolerant = last pair, level synonyms, text when the tool was not called
    scoring: Literal["reference", "tolerant"] = "reference"


class ModelServerConfig(BaseModel):
    """How the pipeline starts a server for a model with a ``serve`` section (see
    :mod:`t0_pipeline.servers.model_server`).

    ``command`` is the server's argument list; ``{checkpoint}``, ``{name}``, ``{host}``, ``{port}``,
    ``{tp}`` and ``{python}`` (this interpreter) are filled in, and ``--max-model-len`` and the
    entry's ``args`` are appended. The default is vLLM's OpenAI-compatible server; any server
    speaking the same protocol works: ``[{python}, -m, t0_pipeline.servers.cpu_server, …]`` serves
    small models on CPU (``make demo``)."""

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
    # local servers; 0 = any free port (several evaluations may run at once)
    port: int = Field(0, ge=0, le=65535)
    health_path: str = "/health"  # polled until it answers 200 (vLLM: /health)
    # loading a 32B model from network storage is slow
    startup_timeout_s: float = Field(1800.0, gt=0)
    stop_timeout_s: float = Field(30.0, gt=0)  # after SIGTERM, then SIGKILL
    time_limit: str = "04:00:00"  # Slurm: wall-clock limit of a server job
    log_dir: Path | None = None  # None = <data_dir>/servers
