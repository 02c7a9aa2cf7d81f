"""Code versions derived from what each asset's result depends on: the stage modules' source and the
prompt templates it renders (the user's ``llm.prompts_dir`` copies when set) with the domain's
words, and the domain. Editing a prompt file, the domain or a stage's code changes the version of
exactly the assets that use it, and Dagster shows them stale; reformatting code or editing its
comments or docstrings does not (the code is hashed as its syntax tree, docstrings left out).

Moving a module into a stage package changes neither: modules are named here by the name they had
when the package was flat (:data:`MOVED`), and an import of a moved module is hashed as the import
of its former name, in the order its former name sorts in.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from importlib import resources
from pathlib import Path

from t0_pipeline.prompts import PromptSet, load_template, prompt_set

# where each stage module moved when the flat package became stage packages: its former name (which
# names it below and in every hash) → its path under t0_pipeline/
MOVED: dict[str, str] = {
    "crawl": "corpus/crawl",
    "crawl_records": "corpus/crawl_records",
    "fetch": "corpus/fetch",
    "pages_file": "corpus/pages_file",
    "documents": "corpus/documents",
    "clean": "corpus/clean",
    "sites/__init__": "corpus/sites/__init__",
    "sites/nhs": "corpus/sites/nhs",
    "chunk": "retrieval/chunk",
    "embed": "retrieval/embed",
    "chroma_store": "retrieval/chroma_store",
    "expansion": "retrieval/expansion",
    "index": "retrieval/index",
    "dense_search": "retrieval/dense_search",
    "retrieve": "retrieval/retrieve",
    "retrieval_eval": "retrieval/evaluate",
    "tune_retriever": "retrieval/tune",
    "llm": "llm/client",
    "llm_calls": "llm/calls",
    "llm_batch": "llm/batch",
    "llm_cache": "llm/cache",
    "llm_json": "llm/structured",
    "llm_stream": "llm/stream",
    "thinking": "llm/thinking",
    "summarise": "synthetic/summarise",
    "synth": "synthetic/queries",
    "synth_prompt": "synthetic/query_prompt",
    "demographics": "task/demographics",
    "teacher_schema": "task/teacher_schema",
    "triage_prompt": "task/prompt",
    "traces": "synthetic/traces",
    "sft": "synthetic/sft",
    "content_checks": "synthetic/content_checks",
    "readable": "synthetic/readable",
    "train": "training/train",
    "train_data": "training/data",
    "train_loss": "training/loss",
    "train_ranks": "training/ranks",
    "train_runs": "training/runs",
    "train_result": "training/result",
    "train_report": "training/report",
    "train_plan": "training/plan",
    "memory_plan": "training/memory_plan",
    "model_shape": "servers/model_shape",
    "gpus": "training/gpus",
    "cluster": "training/cluster",
    "model_card": "training/model_card",
    "export": "training/export",
    "accuracy": "evaluation/accuracy",
    "accuracy_cases": "evaluation/cases",
    "accuracy_tables": "evaluation/tables",
    "predictors": "evaluation/predictors",
    "budget": "evaluation/budget",
    "budget_endpoint": "evaluation/budget_endpoint",
    "baseline": "evaluation/baseline",
    "triage_scoring": "task/scoring",
    "base_models": "servers/base_models",
    "server_plan": "servers/plan",
    "model_server": "servers/model_server",
    "cpu_requests": "servers/cpu_requests",
    "cpu_engine": "servers/cpu_engine",
    "cpu_server": "servers/cpu_server",
    "slurm_server": "servers/slurm",
}

# the stage modules that ended with a ``python -m`` entry block (``run_stage(<command>)``) until
# t0_pipeline/__main__.py and former_paths/ took it over: each is hashed with its block put back, so
# taking it out left every asset fresh. An entry block never computes what an asset holds.
FORMER_ENTRY: dict[str, str] = {
    "crawl": "crawl",
    "clean": "clean",
    "index": "index",
    "retrieve": "retrieve",
    "retrieval_eval": "eval-retrieval",
    "synth": "synth-queries",
    "traces": "traces",
    "sft": "sft",
    "train": "train",
}

# what each asset's output is computed by (modules under t0_pipeline/ by former name, prompt
# template names)
DEPENDS_ON: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "base_models": (("base_models",), ()),
    "condition_pages": (
        ("crawl", "crawl_records", "fetch", "pages_file", "sites/__init__", "sites/nhs"),
        (),
    ),
    "conditions": (("clean",), ()),
    "summaries": (("summarise", "domain"), ("summarise",)),
    "full_page_index": (("index", "chunk", "embed", "expansion"), ()),
    "summary_index": (("index", "chunk", "embed", "expansion"), ()),
    "full_page_bm25": (("index", "expansion"), ()),
    "summary_bm25": (("index", "expansion"), ()),
    "eval_queries": (("retrieval_eval",), ()),
    "retriever_model": (("tune_retriever", "retrieval_eval"), ()),
    "retrieval_report": (("retrieval_eval", "retrieve", "dense_search", "expansion"), ()),
    "llm_summaries": (("summarise", "domain"), ("summarise",)),
    "llm_summary_index": (("index", "chunk", "embed"), ()),
    "summary_comparison": (("retrieval_eval", "retrieve", "dense_search"), ()),
    "synthetic_queries": (
        ("synth", "synth_prompt", "demographics", "domain"),
        ("query_writer", "query_examples"),
    ),
    "reasoning_traces": (
        (
            "traces",
            "teacher_schema",
            "triage_prompt",
            "chat",
            "demographics",
            "triage_scoring",
            "domain",
        ),
        ("triage",),
    ),
    "sft_dataset": (("sft", "triage_prompt", "chat", "domain"), ("triage",)),
    "student_checkpoint": (
        (
            "train",
            "train_data",
            "train_ranks",
            "train_runs",
            "train_loss",
            "train_plan",
            "sft",
            "chat",
        ),
        (),
    ),
    "accuracy_report": (
        (
            "accuracy",
            "accuracy_cases",
            "predictors",
            "triage_scoring",
            "budget",
            "budget_endpoint",
            "baseline",
            "triage_prompt",
            "chat",
            "demographics",
            "domain",
        ),
        ("triage",),
    ),
    "accuracy_comparison": (("accuracy_tables",), ()),
}


def _former(module: str) -> str:
    """``t0_pipeline.<package>.<name>`` as the flat name it had (``t0_pipeline.<former>``)."""
    inside = module.removeprefix("t0_pipeline.").replace(".", "/")
    for former, path in MOVED.items():
        if path in (inside, f"{inside}/__init__"):
            return "t0_pipeline." + former.removesuffix("/__init__").replace("/", ".")
    return module


def _as_before_the_move(statement: ast.stmt) -> ast.stmt:
    """An import of moved modules, written as it was when the package was flat."""
    if isinstance(statement, ast.ImportFrom) and statement.level == 0 and statement.module:
        module = _former(statement.module)
        if module == statement.module and statement.module.startswith("t0_pipeline."):
            # ``from t0_pipeline.<package> import <module>``
            names = [_former(f"{statement.module}.{a.name}") for a in statement.names]
            if all(n.count(".") == 1 for n in names):
                aliases = []
                for name, alias in zip(names, statement.names):
                    name = name.removeprefix("t0_pipeline.")
                    aliases.append(ast.alias(name, None if alias.asname == name else alias.asname))
                return ast.ImportFrom("t0_pipeline", aliases, 0)
        statement.module = module
    elif isinstance(statement, ast.Import):
        for alias in statement.names:
            alias.name = _former(alias.name)
    return statement


def _import_key(statement: ast.stmt) -> tuple:
    if isinstance(statement, ast.Import):
        return (0, statement.names[0].name)
    return (1, statement.module or "")


def _unmove_imports(body: list[ast.stmt]) -> list[ast.stmt]:
    """Each run of consecutive first-party imports, written and sorted as before the move (the
    import sorter orders them by their new names)."""
    out: list[ast.stmt] = []
    run: list[ast.stmt] = []
    for statement in [*body, None]:
        if isinstance(statement, (ast.Import, ast.ImportFrom)) and (
            (statement.module or "")
            if isinstance(statement, ast.ImportFrom)
            else statement.names[0].name
        ).startswith("t0_pipeline"):
            run.append(_as_before_the_move(statement))
            continue
        out.extend(sorted(run, key=_import_key))
        run = []
        if statement is not None:
            out.append(statement)
    return out


def code_fingerprint(source: bytes) -> bytes:
    """Python source as its syntax tree without docstrings: reformatting it or editing its comments
    and docstrings leaves its assets fresh, and so does moving the modules it imports."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            if isinstance(getattr(node, field, None), list):
                setattr(node, field, _unmove_imports(getattr(node, field)))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


def _module_source(name: str) -> bytes:
    path = Path(str(resources.files("t0_pipeline"))) / f"{MOVED.get(name, name)}.py"
    if not path.is_file():  # a renamed module left behind here would silently drop out of versions
        raise FileNotFoundError(f"DEPENDS_ON names t0_pipeline/{name}.py, which does not exist")
    source = path.read_bytes()
    if name in FORMER_ENTRY:
        source += (
            '\n\nif __name__ == "__main__":\n    from t0_pipeline.cli import run_stage\n\n'
            f'    run_stage("{FORMER_ENTRY[name]}")\n'
        ).encode()
    return code_fingerprint(source)


def code_version(
    asset: str, prompts_dir: PromptSet | Path | None = None, with_prompts: bool = True
) -> str:
    """A short hash of the sources and prompt templates ``asset`` depends on (see
    :data:`DEPENDS_ON`), the templates with the domain's words in them, and the domain itself
    (its categories' aliases and triggers score and answer too)."""
    modules, prompts = DEPENDS_ON[asset]
    prompts = prompts if with_prompts else ()
    digest = hashlib.sha256()
    for module in modules:
        digest.update(module.encode() + b"\0" + _module_source(module) + b"\0")
    for prompt in prompts:
        digest.update(
            prompt.encode() + b"\0" + load_template(prompt, prompts_dir)[0].encode() + b"\0"
        )
    if prompts:
        digest.update(prompt_set(prompts_dir).domain.model_dump_json().encode())
    return digest.hexdigest()[:12]


@functools.lru_cache(maxsize=None)
def version_of(asset: str) -> str:
    """:func:`code_version` with the prompts folder of the config the code location loads."""
    from t0_pipeline.defs.resources import location_config

    cfg = location_config()
    # extractive summaries render no prompt: editing summarise.txt leaves them fresh
    return code_version(
        asset,
        cfg.prompts,
        with_prompts=not (asset == "summaries" and cfg.summary.backend != "llm"),
    )
