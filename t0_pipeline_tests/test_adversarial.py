"""Bad input never costs data: every `t0` command, every config source (file, --set, environment,
command flags, the Dagster launchpad) and every input file kind, given something wrong.

Each case runs through the real entry point (``t0_pipeline.cli.main``) in a workspace holding a
built corpus and index, and asserts: exit status 2 within 30 s, exactly one line on stderr that
names what is wrong (the expected words), and every artefact in the data folder byte-identical
afterwards (Chroma's own segment files excepted: Chroma rewrites them whenever it opens). The
HTTP endpoints of `t0 serve` and the CPU model server are in test_adversarial_http.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from t0_pipeline_tests.conftest import build_tiny_tokenizer


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    said: str  # words the one line must hold
    env: dict[str, str] = field(default_factory=dict)


def case(said: str, *argv: str, env: dict[str, str] | None = None) -> Case:
    return Case(tuple(argv), said, env or {})


# {d}: the data folder; {f}: the folder of bad files (made by the `ws` fixture)
CONFIG_FILES = {
    "file-missing": case("does not exist", "config", "-c", "{f}/nope.yaml"),
    "file-latin1": case("is not UTF-8 (line 2", "config", "-c", "{f}/latin1.yaml"),
    "file-binary": case("is binary", "config", "-c", "{f}/binary.yaml"),
    "file-yaml-syntax": case("could not be parsed", "config", "-c", "{f}/syntax.yaml"),
    "file-json-syntax": case("could not be parsed", "config", "-c", "{f}/syntax.json"),
    "file-toml-syntax": case("could not be parsed", "config", "-c", "{f}/syntax.toml"),
    "file-a-list": case("must hold a mapping", "config", "-c", "{f}/list.yaml"),
    "file-unknown-key": case("unknown setting 'chunk.sise'", "config", "-c", "{f}/typo.yaml"),
    "file-wrong-type": case("field 'train.epochs'", "config", "-c", "{f}/epochs.yaml"),
    "file-negative-lr": case("'train.learning_rate': must be > 0", "config", "-c", "{f}/lr.yaml"),
    "file-extends-missing": case("does not exist", "config", "-c", "{f}/extends-none.yaml"),
    "file-extends-loop": case("extends it back", "config", "-c", "{f}/loop-a.yaml"),
    "file-extends-number": case("extends must be one file", "config", "-c", "{f}/ext-num.yaml"),
    "file-lora-zero3": case("lora.enabled with deepspeed zero3", "config", "-c", "{f}/lora.yaml"),
    "file-port": case(
        "'servers.port': Input should be less than or equal to 65535",
        "config",
        "-c",
        "{f}/port.yaml",
    ),
    "file-section-number": case("field 'train'", "config", "-c", "{f}/section.yaml"),
    "file-unknown-section": case("unknown setting 'bogus'", "config", "-c", "{f}/bogus.yaml"),
    "file-domain-missing": case("domain", "config", "-c", "{f}/domain.yaml"),
    "file-in-index": case(
        "unknown setting 'chunk.sise'", "index", "-d", "{d}", "-c", "{f}/typo.yaml"
    ),
}

SETS = {
    "set-no-equals": case("train.epochs", "config", "--set", "train.epochs"),
    "set-unknown": case("unknown setting 'chunk.sise'", "config", "--set", "chunk.sise=3"),
    "set-n-eval": case("'queries.n_eval': must be ≥ 0", "config", "--set", "queries.n_eval=-1"),
    "set-ks": case("'evaluation.ks': must be ≥ 0", "config", "--set", "evaluation.ks=[-1]"),
    "set-rpm": case("requests_per_minute", "config", "--set", "llm.requests_per_minute=-5"),
    "set-delay": case("'source.delay_s': must be ≥ 0", "config", "--set", "source.delay_s=-1"),
    "set-lr": case("learning_rate': must be > 0", "config", "--set", "train.learning_rate=-0.1"),
    "set-max-steps": case("must be -1 or ≥ 1", "config", "--set", "train.max_steps=-5"),
    "set-overlap": case("'chunk.overlap'", "config", "--set", "chunk.overlap=-1"),
    "set-temperature": case(
        "temperature': must be ≥ 0 and ≤ 2", "config", "--set", "llm.roles.teacher.temperature=5"
    ),
    "set-top-p": case("top_p': must be > 0", "config", "--set", "llm.roles.teacher.top_p=0"),
    "set-pk-ks": case(
        "'retrieval_eval.ks': must be ≥ 1", "config", "--set", "retrieval_eval.ks=[0]"
    ),
    "set-page-bytes": case("max_page_bytes", "config", "--set", "source.max_page_bytes=0"),
    "set-runs": case("'evaluation.runs': must be > 0", "config", "--set", "evaluation.runs=0"),
    "set-fraction": case("eval_fraction", "config", "--set", "train.eval_fraction=1.5"),
    "set-concurrency": case("'llm.concurrency'", "config", "--set", "llm.concurrency=0"),
    "set-tracker": case("unknown tracker", "config", "--set", "train.report_to=tensorbord"),
    "set-nan": case("learning_rate", "config", "--set", "train.learning_rate=nan"),
    "set-batch": case("per_device_batch_size", "config", "--set", "train.per_device_batch_size=0"),
    "set-chunk-size": case("'chunk.size': must be > 0", "config", "--set", "chunk.size=-5"),
    "set-rate-limit": case(
        "rate_limit_per_minute", "config", "--set", "serve.rate_limit_per_minute=-1"
    ),
    "set-disposition": case("Nope", "config", "--set", "queries.dispositions=[Nope]"),
    "set-model-port": case("'servers.port'", "config", "--set", "servers.port=-1"),
    "set-budget": case(
        "thinking_budget", "config", "--set", "evaluation.models.t0-7b.budget.thinking_budget=-1"
    ),
}

ENVIRONMENT = {
    "env-lr": case("T0_TRAIN__LEARNING_RATE", "config", env={"T0_TRAIN__LEARNING_RATE": "-1"}),
    "env-n-train": case("T0_QUERIES__N_TRAIN", "config", env={"T0_QUERIES__N_TRAIN": "-2"}),
    "env-concurrency": case(
        "T0_SOURCE__CONCURRENCY", "config", env={"T0_SOURCE__CONCURRENCY": "0"}
    ),
    "env-chunk": case("T0_CHUNK__SIZE", "config", env={"T0_CHUNK__SIZE": "-5"}),
    "env-ks": case("T0_EVALUATION__KS", "config", env={"T0_EVALUATION__KS": "[-1]"}),
    "env-epochs-text": case("T0_TRAIN__EPOCHS", "config", env={"T0_TRAIN__EPOCHS": "abc"}),
    "env-unknown": case("chunk.sise", "config", env={"T0_CHUNK__SISE": "3"}),
    "env-port": case("T0_SERVERS__PORT", "config", env={"T0_SERVERS__PORT": "99999"}),
    "env-data-dir-file": case("is a file", "index", env={"T0_DATA_DIR": "{f}/latin1.yaml"}),
    "env-top-p": case("top_p", "config", env={"T0_LLM__ROLES__AGENT__TOP_P": "2"}),
}

PAGES = {
    "pages-list-slug": case(
        "record 1: field 'slug' is a list", "index", "-d", "{d}", "--pages", "{f}/list-slug.jsonl"
    ),
    "pages-object-title": case(
        "field 'title' is an object", "index", "-d", "{d}", "--pages", "{f}/object-title.jsonl"
    ),
    "pages-array-numbers": case(
        "item 1 is a number, not an object", "index", "-d", "{d}", "--pages", "{f}/numbers.json"
    ),
    "pages-json-object": case(
        "must hold a JSON array", "index", "-d", "{d}", "--pages", "{f}/object.json"
    ),
    "pages-empty": case("holds no records", "index", "-d", "{d}", "--pages", "{f}/empty.jsonl"),
    "pages-all-excluded": case(
        "is excluded by source.exclude_slugs", "index", "-d", "{d}", "--pages", "{f}/excluded.jsonl"
    ),
    "pages-oversize": case(
        "over source.max_page_bytes",
        "index",
        "-d",
        "{d}",
        "--pages",
        "{f}/big.jsonl",
        "--set",
        "source.max_page_bytes=1000",
    ),
    "pages-not-utf8": case(
        ":2 is not valid UTF-8", "index", "-d", "{d}", "--pages", "{f}/latin1.jsonl"
    ),
    "pages-bad-json-line": case(
        ":2 is not valid JSON", "index", "-d", "{d}", "--pages", "{f}/badline.jsonl"
    ),
    "pages-missing": case("does not exist", "index", "-d", "{d}", "--pages", "{f}/none.jsonl"),
    "pages-directory": case("is a directory", "index", "-d", "{d}", "--pages", "{f}"),
    "pages-duplicate-slugs": case(
        "duplicate slug(s) gout", "index", "-d", "{d}", "--pages", "{f}/dupes.jsonl"
    ),
    "pages-no-text": case(
        "missing or empty field(s) 'text'", "index", "-d", "{d}", "--pages", "{f}/notext.jsonl"
    ),
    "pages-text-number": case(
        "field 'text' is a number", "index", "-d", "{d}", "--pages", "{f}/textnum.jsonl"
    ),
    "pages-corrupt-parquet": case(
        "not a readable Parquet file", "index", "-d", "{d}", "--pages", "{f}/corrupt.parquet"
    ),
    "pages-and-documents": case(
        "not both", "index", "-d", "{d}", "--pages", "{f}/dupes.jsonl", "--documents", "{f}"
    ),
    "pages-and-source": case(
        "drop --source", "index", "-d", "{d}", "--pages", "{f}/dupes.jsonl", "--source", "site"
    ),
    "documents-empty": case("no", "index", "-d", "{d}", "--documents", "{f}/emptydir"),
    "documents-missing": case("does not exist", "index", "-d", "{d}", "--documents", "{f}/nodir"),
    "index-chunk-size": case(
        "'chunk.size': must be > 0", "index", "-d", "{d}", "--chunk-size", "-5"
    ),
}

COMMANDS = {
    "crawl-source": case("source", "crawl", "-d", "{d}", "--source", "bogus"),
    "crawl-mirror-missing": case(
        "nodir", "crawl", "-d", "{d}", "--source", "mirror", "--location", "{f}/nodir"
    ),
    "crawl-max-pages": case(
        "'source.max_pages': must be > 0", "crawl", "-d", "{d}", "--max-pages", "-1"
    ),
    "crawl-pages-no-file": case("needs a file", "crawl", "-d", "{d}", "--source", "pages"),
    "clean-nothing": case("not found", "clean", "-d", "{f}/fresh"),
    "summarise-nothing": case("not found", "summarise", "-d", "{f}/fresh"),
    "retrieve-missing": case(
        "does not exist", "retrieve", "-d", "{d}", "-q", "{f}/none.jsonl", "-o", "{f}/out.jsonl"
    ),
    "retrieve-empty": case(
        "holds no queries", "retrieve", "-d", "{d}", "-q", "{f}/empty.jsonl", "-o", "{f}/out.jsonl"
    ),
    "retrieve-field": case(
        "field 'text' is missing",
        "retrieve",
        "-d",
        "{d}",
        "-q",
        "{f}/queries.jsonl",
        "-o",
        "{f}/out.jsonl",
        "--query-field",
        "text",
    ),
    "retrieve-k": case(
        "--k must be at least 1",
        "retrieve",
        "-d",
        "{d}",
        "-q",
        "{f}/queries.jsonl",
        "-o",
        "{f}/out.jsonl",
        "--k",
        "0",
    ),
    "retrieve-index": case(
        "--index",
        "retrieve",
        "-d",
        "{d}",
        "-q",
        "{f}/queries.jsonl",
        "-o",
        "{f}/out.jsonl",
        "--index",
        "bogus",
    ),
    "retrieve-mode": case(
        "mode",
        "retrieve",
        "-d",
        "{d}",
        "-q",
        "{f}/queries.jsonl",
        "-o",
        "{f}/out.jsonl",
        "--mode",
        "bogus",
    ),
    "retrieve-out-under-file": case(
        "check the path",
        "retrieve",
        "-d",
        "{d}",
        "-q",
        "{f}/queries.jsonl",
        "-o",
        "{f}/latin1.yaml/out.jsonl",
    ),
    "retrieve-numbers": case(
        "not an object", "retrieve", "-d", "{d}", "-q", "{f}/numbers.json", "-o", "{f}/out.jsonl"
    ),
    "eval-retrieval-ks": case(
        "'retrieval_eval.ks': must be ≥ 1", "eval-retrieval", "-d", "{d}", "--ks", "-1,5"
    ),
    "eval-retrieval-ks-text": case(
        "--ks must be comma-separated integers", "eval-retrieval", "-d", "{d}", "--ks", "abc"
    ),
    "eval-retrieval-index": case(
        "command line: field 'retrieval_eval.indexes.0': Input should be 'full'",
        *("eval-retrieval", "-d", "{d}", "--index", "bogus"),
    ),
    "eval-retrieval-mode": case("bogus", "eval-retrieval", "-d", "{d}", "--mode", "bogus"),
    "eval-retrieval-no-valid": case(
        "record 1: field 'condition' or 'slug' must be a slug",
        "eval-retrieval",
        "-d",
        "{d}",
        "-q",
        "{f}/queries-no-target.jsonl",
    ),
    "tune-no-queries": case("synth", "tune-retriever", "-d", "{d}"),
    "query-empty": case("the query is empty", "query", "-d", "{d}", ""),
    "query-blank": case("the query is empty", "query", "-d", "{d}", "   \n "),
    "query-not-utf8": case("not valid UTF-8", "query", "-d", "{d}", "caf\udce9"),
    "query-k": case("--k must be at least 1", "query", "-d", "{d}", "gout", "--k", "0"),
    "query-mode": case("mode", "query", "-d", "{d}", "gout", "--mode", "sideways"),
    "query-index": case("--index", "query", "-d", "{d}", "gout", "--index", "bogus"),
    "query-unknown-option": case(
        "No such option: --bogus", "query", "-d", "{d}", "gout", "--bogus"
    ),
    "query-k-text": case("Invalid value for '--k'", "query", "-d", "{d}", "gout", "--k", "many"),
    "query-missing-text": case("Missing argument", "query", "-d", "{d}"),
    "report-data-file": case("is a file", "report", "-d", "{f}/latin1.yaml"),
    "synth-n-eval": case(
        "'queries.n_eval': must be ≥ 0", "synth-queries", "-d", "{d}", "--n-eval", "-1"
    ),
    "traces-no-queries": case("not found", "traces", "-d", "{d}"),
    "sft-no-traces": case("not found", "sft", "-d", "{d}"),
    "sft-block": case("'sft.block_size': must be > 0", "sft", "-d", "{d}", "--block-size", "0"),
    "base-models-bundled": case(
        "no bundled model named 'nope'",
        "base-models",
        "-d",
        "{d}",
        "--set",
        'base_models={{"x": "bundled:nope"}}',
    ),
    "train-max-steps": case("must be -1 or ≥ 1", "train", "-d", "{d}", "--max-steps", "-5"),
    "train-lora-zero3": case(
        "lora.enabled with deepspeed zero3", "train", "-d", "{d}", "--lora", "--deepspeed", "zero3"
    ),
    "train-corrupt": case(
        "not a readable Parquet file",
        "train",
        "-d",
        "{d}",
        "--model",
        "{f}/tiny",
        "--dataset",
        "{f}/corrupt.parquet",
    ),
    "train-no-dataset": case(
        "not found", "train", "-d", "{d}", "--model", "{f}/tiny", "--dataset", "{f}/none.parquet"
    ),
    "train-not-sft": case(
        "no 'messages' column",
        "train",
        "-d",
        "{d}",
        "--model",
        "{f}/tiny",
        "--dataset",
        "{f}/other.parquet",
    ),
    "train-lr": case("must be > 0", "train", "-d", "{d}", "--set", "train.learning_rate=-1"),
    "train-tracker-missing": case(
        "is not installed here",
        "train",
        "-d",
        "{d}",
        "--model",
        "{f}/tiny",
        "--dataset",
        "{f}/sft.parquet",
        "--set",
        "train.report_to=[swanlab]",
    ),
    "train-model-missing": case(
        "could not load model",
        "train",
        "-d",
        "{d}",
        "--model",
        "{f}/nomodel",
        "--dataset",
        "{f}/sft.parquet",
    ),
    "export-size": case("no size 'huge'", "export", "-d", "{d}", "--size", "huge", "--to", "{f}/x"),
    "export-untrained": case(
        "no trained student", "export", "-d", "{d}", "--size", "7B", "--to", "{f}/x"
    ),
    "evaluate-ks": case("'evaluation.ks': must be ≥ 0", "evaluate", "-d", "{d}", "--ks", "-5"),
    "evaluate-max-queries": case(
        "'evaluation.max_queries': must be > 0", "evaluate", "-d", "{d}", "--max-queries", "-1"
    ),
    "evaluate-runs": case("--runs must be at least 1", "evaluate", "-d", "{d}", "--runs", "0"),
    "evaluate-empty": case(
        "it is empty",
        "evaluate",
        "-d",
        "{d}",
        "--model",
        "retrieval-baseline",
        "--queries",
        "{f}/empty.jsonl",
    ),
    "evaluate-level": case(
        "disposition 'Whenever' is not one of",
        "evaluate",
        "-d",
        "{d}",
        "--model",
        "retrieval-baseline",
        "--queries",
        "{f}/level.jsonl",
    ),
    "evaluate-model": case("no model 'nope'", "evaluate", "-d", "{d}", "--model", "nope"),
    "evaluate-missing": case(
        "no evaluation queries at",
        "evaluate",
        "-d",
        "{d}",
        "--model",
        "retrieval-baseline",
        "--queries",
        "{f}/none.jsonl",
    ),
    "sbatch-site": case("nope", "sbatch", "--site", "nope", "--size", "7B"),
    "sbatch-size": case("nope", "sbatch", "--site", "baskerville", "--size", "nope"),
    "plan-site": case("nope", "plan", "--site", "nope", "--size", "7B"),
    "serve-port-high": case(
        "--port must be between 1 and 65535, not 70000", "serve", "-d", "{d}", "--port", "70000"
    ),
    "serve-port-zero": case(
        "--port must be between 1 and 65535, not 0", "serve", "-d", "{d}", "--port", "0"
    ),
    "serve-host-name": case(
        "is not an address or a name", "serve", "-d", "{d}", "--host", "bad host!"
    ),
    "serve-host-foreign": case(
        "cannot listen on 10.9.9.9", "serve", "-d", "{d}", "--host", "10.9.9.9"
    ),
    "serve-servers": case(
        "--servers must be local or slurm", "serve", "-d", "{d}", "--servers", "bogus"
    ),
    "serve-slurm-no-site": case("needs --site", "serve", "-d", "{d}", "--servers", "slurm"),
    "serve-insecure-open": case(
        "--insecure-local only listens",
        "serve",
        "-d",
        "{d}",
        "--insecure-local",
        "--host",
        "0.0.0.0",
    ),
    "keys-empty-name": case("a key needs a name", "keys", "create", "", "-d", "{d}"),
    "keys-blank-name": case("a key needs a name", "keys", "create", "   ", "-d", "{d}"),
    "keys-revoke": case("no key with id nope", "keys", "revoke", "nope", "-d", "{d}"),
    "run-all-no-home": case("set DAGSTER_HOME", "run-all", "-d", "{d}", env={"DAGSTER_HOME": ""}),
    "slurm-env-venv": case(
        "is not a virtual environment", "slurm-env", "--path", "{f}/env", "--venv", "{f}/nodir"
    ),
    "slurm-env-no-path": case("Missing option '--path'", "slurm-env", "--venv", "{f}"),
    "accuracy-report-none": case("no evaluated models", "accuracy-report", "-d", "{d}"),
    "accuracy-report-ks": case(
        "'evaluation.ks'", "accuracy-report", "-d", "{d}", "--set", "evaluation.ks=[-1]"
    ),
    "no-such-command": case("No such command 'nosuch'", "nosuch"),
    "config-option": case("No such option: --bogus", "config", "--bogus"),
}

ALL = {**CONFIG_FILES, **SETS, **ENVIRONMENT, **PAGES, **COMMANDS}


def _page(name: str, **fields) -> dict:
    text = f"{name} gives a red hot swollen joint; see a GP if it keeps coming back."
    return {"slug": name, "title": name.title(), "url": f"https://x/{name}", "text": text, **fields}


def _bad_files(f: Path) -> None:
    def lines(name: str, *rows) -> None:
        (f / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    configs = {
        "syntax.yaml": "train: [1, 2\n",
        "syntax.json": '{"train": ',
        "syntax.toml": "train = = 1\n",
        "list.yaml": "- train\n- chunk\n",
        "typo.yaml": "chunk:\n  sise: 3\n",
        "epochs.yaml": "train:\n  epochs: many\n",
        "lr.yaml": "train:\n  learning_rate: -1\n",
        "extends-none.yaml": "extends: missing.yaml\n",
        "loop-a.yaml": "extends: loop-b.yaml\n",
        "loop-b.yaml": "extends: loop-a.yaml\n",
        "ext-num.yaml": "extends: 5\n",
        "lora.yaml": "train:\n  lora: {enabled: true}\n  deepspeed: zero3\n",
        "port.yaml": "servers:\n  port: 70000\n",
        "section.yaml": "train: 5\n",
        "bogus.yaml": "bogus: {}\n",
        "domain.yaml": "domain: no-such-domain\n",
    }
    for name, text in configs.items():
        (f / name).write_text(text)
    (f / "latin1.yaml").write_bytes(b"train:\n  model: caf\xe9\n")
    (f / "binary.yaml").write_bytes(b"\x00\x01\x02train")
    lines("list-slug.jsonl", _page("gout", slug=["gout"]))
    lines("object-title.jsonl", _page("gout", title={"x": 1}))
    (f / "numbers.json").write_text("[1, 2, 3]")
    (f / "object.json").write_text('{"slug": "gout"}')
    (f / "empty.jsonl").write_text("")
    lines("excluded.jsonl", _page("mental-health"))
    lines("big.jsonl", _page("gout", text="word " * 400))
    (f / "latin1.jsonl").write_bytes(
        (json.dumps(_page("gout")) + "\n").encode() + b'{"slug": "caf\xe9"}\n'
    )
    (f / "badline.jsonl").write_text(json.dumps(_page("gout")) + "\n{not json\n")
    lines("dupes.jsonl", _page("gout"), _page("gout"))
    lines("notext.jsonl", _page("gout", text=""))
    lines("textnum.jsonl", _page("gout", text=12345))
    (f / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    (f / "emptydir").mkdir()
    lines("queries.jsonl", {"query": "my big toe is hot and red"})
    lines("queries-no-target.jsonl", {"query": "my big toe is hot and red"})
    lines(
        "level.jsonl",
        {"query": "my big toe is hot", "condition": "gout", "disposition": "Whenever"},
    )


def _tiny_model(folder: Path) -> None:
    """A 2-layer Qwen2 with a tiny tokenizer, and an SFT-shaped dataset beside it."""
    import polars as pl
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    tok = build_tiny_tokenizer(folder / "tiny", "system user assistant think answer gout toe")
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(folder / "tiny")
    messages = [{"role": "user", "content": "gout"}, {"role": "assistant", "content": "toe"}]
    pl.DataFrame({"messages": [json.dumps(messages)]}).write_parquet(folder / "sft.parquet")
    pl.DataFrame({"other": [1]}).write_parquet(folder / "other.parquet")


@dataclass
class Workspace:
    data: Path
    files: Path

    def argv(self, c: Case) -> list[str]:
        return [a.format(d=self.data, f=self.files) for a in c.argv]


@pytest.fixture(scope="module")
def ws(built, tmp_path_factory) -> Workspace:
    _, paths = built
    root = tmp_path_factory.mktemp("adversarial")
    data, files = root / "data", root / "files"
    # the built corpus and index only: other tests add evaluations and more to the shared one
    for part in ("corpus", "index"):
        shutil.copytree(paths.root / part, data / part)
    files.mkdir()
    _bad_files(files)
    _tiny_model(files)
    return Workspace(data, files)


def artefacts(data: Path) -> dict[str, str]:
    """sha256 of every file under the data folder but Chroma's segment files (rewritten on open)
    and SQLite's journals."""
    out = {}
    for path in sorted(data.rglob("*")):
        rel = path.relative_to(data).as_posix()
        if not path.is_file() or rel.startswith("index/chroma/") or rel.endswith(("-wal", "-shm")):
            continue
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("name", list(ALL))
def test_a_bad_input_is_one_line_exit_2_and_nothing_changes(name, ws, capsys, monkeypatch):
    from t0_pipeline.cli import main

    bad = ALL[name]
    for key, value in bad.env.items():
        monkeypatch.setenv(key, value.format(d=ws.data, f=ws.files))
    if "T0_DATA_DIR" not in bad.env:
        monkeypatch.setenv("T0_DATA_DIR", str(ws.data))
    monkeypatch.delenv("T0_CONFIG", raising=False)
    before = artefacts(ws.data)
    started = time.monotonic()
    with pytest.raises(SystemExit) as done:
        main(ws.argv(bad))
    took = time.monotonic() - started
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert done.value.code == 2, (name, err)
    assert len(err) == 1, (name, err)
    assert err[0].startswith("error: ") and "unexpected" not in err[0], err[0]
    assert bad.said in err[0], (name, err[0])
    assert took < 30, (name, took)
    assert artefacts(ws.data) == before, name


LAUNCHPAD = {
    "lr": ({"train": {"learning_rate": -1}}, "'train.learning_rate': must be > 0"),
    "ks": ({"evaluation": {"ks": [-1]}}, "'evaluation.ks': must be ≥ 0"),
    "typo": ({"chunk": {"sise": 1}}, "unknown setting 'chunk.sise'"),
    "delay": ({"source": {"delay_s": -2}}, "'source.delay_s'"),
    "lora": ({"train": {"lora": {"enabled": True}, "deepspeed": "zero3"}}, "lora.enabled with"),
    "n-eval-text": ({"queries": {"n_eval": "ten"}}, "'queries.n_eval'"),
}


@pytest.mark.parametrize("name", list(LAUNCHPAD))
def test_a_bad_launchpad_override_is_one_line_naming_the_setting(name, ws):
    from t0_pipeline.artifacts import T0Error
    from t0_pipeline.defs.resources import PipelineSettings

    overrides, said = LAUNCHPAD[name]
    settings = PipelineSettings(data_dir=str(ws.data), overrides=overrides)
    with pytest.raises(T0Error) as caught:
        settings.pipeline_config()
    assert said in str(caught.value) and "\n" not in str(caught.value)
    assert "run config overrides" in str(caught.value)  # where the value came from


def test_a_materialisation_with_a_bad_launchpad_override_fails_and_keeps_the_corpus(ws):
    import dagster as dg

    from t0_pipeline.defs.corpus import condition_pages, conditions
    from t0_pipeline.defs.resources import PipelineSettings

    before = artefacts(ws.data)
    settings = PipelineSettings(data_dir=str(ws.data), overrides={"source": {"delay_s": -1}})
    result = dg.materialize(
        [condition_pages, conditions], resources={"settings": settings}, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "'source.delay_s': must be ≥ 0" in failure.event_specific_data.error.to_string()
    assert artefacts(ws.data) == before


def test_there_are_enough_cases():
    from t0_pipeline_tests.test_adversarial_http import MODEL_SERVER, SERVE

    assert len(ALL) + len(LAUNCHPAD) + 1 + len(SERVE) + len(MODEL_SERVER) >= 150


def test_retrieve_writes_into_a_named_pipe_as_given_and_leaves_it_a_pipe(ws, tmp_path):
    import os
    import stat
    import threading

    from t0_pipeline.cli import main

    pipe = tmp_path / "ranked.fifo"
    os.mkfifo(pipe)
    read: list[str] = []
    reader = threading.Thread(target=lambda: read.append(pipe.read_text()), daemon=True)
    reader.start()
    argv = ["retrieve", "-d", str(ws.data), "-q", str(ws.files / "queries.jsonl")]
    with pytest.raises(SystemExit) as done:
        main([*argv, "-o", str(pipe), "--k", "3"])
    reader.join(30)
    assert done.value.code == 0
    assert stat.S_ISFIFO(pipe.stat().st_mode)  # not replaced by a file
    ranked = json.loads(read[0].splitlines()[0])
    assert ranked["query"] == "my big toe is hot and red" and len(ranked["ranked"]) == 3
