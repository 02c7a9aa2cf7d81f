"""The t0 command line, in-process (CliRunner) and as a real subprocess for error handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from t0_pipeline.cli import app
from t0_pipeline_tests.conftest import write_jsonl

runner = CliRunner()

PAGES = [
    {
        "slug": "chalk-lung",
        "title": "Chalk lung",
        "url": "https://example.test/chalk-lung/",
        "text": "Chalk lung causes a dry cough and wheezing in teachers. See a GP if the cough "
        "lasts 3 weeks. Call 999 if you cannot breathe.",
    },
    {
        "slug": "ink-rash",
        "title": "Ink rash",
        "url": "https://example.test/ink-rash/",
        "text": "Ink rash is an itchy blue rash on the fingers after handling wet ink. A "
        "pharmacist can suggest a cream.",
    },
    {
        "slug": "glue-ear-fictional",
        "title": "Glue ear (fictional)",
        "url": "https://example.test/glue/",
        "text": "Muffled hearing and a blocked ear after a cold. Ask for an urgent GP appointment "
        "if there is discharge.",
    },
    {
        "slug": "paper-cut-fever",
        "title": "Paper cut fever",
        "url": "https://example.test/pcf/",
        "text": "A red, hot, spreading area around a paper cut with a high temperature. Call 111 "
        "for urgent advice.",
    },
]


def test_index_retrieve_eval_and_query_from_a_pages_file(tmp_path):
    data = tmp_path / "data"
    pages = write_jsonl(tmp_path / "pages.jsonl", PAGES)
    result = runner.invoke(app, ["index", "--pages", str(pages), "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "4 documents" in result.output and "dense summaries: 4 documents" in result.output

    queries = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"ask": "my fingers have an itchy blue rash from ink", "gold": "ink-rash", "id": 1},
            {"ask": "dry cough and wheeze, I work as a teacher", "gold": ["chalk-lung"], "id": 2},
        ],
    )
    out = tmp_path / "ranked.jsonl"
    result = runner.invoke(
        app,
        [
            "retrieve",
            "-d",
            str(data),
            "-q",
            str(queries),
            "--query-field",
            "ask",
            "--k",
            "3",
            "--index",
            "full",
            "--mode",
            "hybrid",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert (
        [x["id"] for x in lines] == [1, 2]
        and lines[0]["ranked"][0] == "ink-rash"
        and len(lines[1]["scores"]) == 3
    )

    result = runner.invoke(
        app,
        [
            "eval-retrieval",
            "-d",
            str(data),
            "-q",
            str(queries),
            "--query-field",
            "ask",
            "--target-field",
            "gold",
            "--ks",
            "1,3",
            "--mode",
            "bm25",
            "--index",
            "summaries",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| summaries | bm25 | 1.000 | 1.000 |" in result.output
    assert (data / "eval" / "retrieval" / "pk.png").exists()

    result = runner.invoke(
        app, ["query", "-d", str(data), "hot red skin around a cut and a fever", "--k", "2"]
    )
    assert result.exit_code == 0 and result.output.splitlines()[1].split()[2] == "paper-cut-fever"


def test_every_command_has_help():
    for command in (
        "crawl",
        "clean",
        "summarise",
        "index",
        "retrieve",
        "eval-retrieval",
        "query",
        "synth-queries",
        "traces",
        "sft",
        "train",
        "sbatch",
        "evaluate",
        "accuracy-report",
        "serve",
        "report",
        "config",
    ):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, command
        assert "--data-dir" in result.output or command == "config", command


def t0(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "t0_pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_python_m_reaches_every_stage_by_the_entry_point_and_by_the_former_module_paths(tmp_path):
    """``python -m t0_pipeline <command>`` is ``t0``; the module paths from before the stage
    packages (in users' Slurm scripts and model server commands) still run what they ran, and
    importing one gives the moved module's names."""
    from t0_pipeline.defs.versions import FORMER_ENTRY  # the modules that had a python -m block

    assert len(FORMER_ENTRY) == 9
    for module, command in FORMER_ENTRY.items():
        new = subprocess.run(
            [sys.executable, "-m", "t0_pipeline", command, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        old = subprocess.run(
            [sys.executable, "-m", f"t0_pipeline.{module}", "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert new.returncode == old.returncode == 0, (module, old.stderr[-500:])
        assert f"Usage: python -m t0_pipeline {command} " in new.stdout, module
        assert new.stdout == old.stdout, module
    wrong = subprocess.run(
        [
            sys.executable,
            "-m",
            "t0_pipeline.train",
            "--max-steps",
            "-5",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1
    served = subprocess.run(
        [sys.executable, "-m", "t0_pipeline.cpu_server", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert served.returncode == 0 and "--served-model-name" in served.stdout
    from t0_pipeline.retrieval.retrieve import Retriever
    from t0_pipeline.retrieve import Retriever as FormerRetriever
    from t0_pipeline.train import train as former_train
    from t0_pipeline.training.train import train

    assert FormerRetriever is Retriever and former_train is train


def test_user_errors_are_one_line_with_exit_status_2(tmp_path):
    missing = t0("query", "--data-dir", str(tmp_path / "nothing"), "cough")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: no 'summaries' index in {tmp_path / 'nothing'}; build it with `t0 index "
        f"--data-dir {tmp_path / 'nothing'}`."
    ]
    bad_config = tmp_path / "c.yaml"
    bad_config.write_text("chunk:\n  overlap: -3\n")
    result = t0("config", "--config", str(bad_config))
    assert (
        result.returncode == 2
        and "field 'chunk.overlap'" in result.stderr
        and "Traceback" not in result.stderr
    )
    for text, expected in (
        ("chunk:\n  sise: 3\n", "unknown setting 'chunk.sise'; did you mean 'chunk.size'?"),
        (
            "llm:\n  roles:\n    teacher: {modle: x}\n",
            "unknown setting 'llm.roles.teacher.modle'; did you mean 'llm.roles.teacher.model'?",
        ),
        ("retrieval: {rrf_k: -1}\n", "field 'retrieval.rrf_k': Input should be greater than 0"),
        (
            "retrieval: {fusion_depth: 0}\n",
            "field 'retrieval.fusion_depth': Input should be greater",
        ),
    ):
        bad_config.write_text(text)
        result = t0("config", "--config", str(bad_config))
        assert (
            result.returncode == 2
            and len(result.stderr.strip().splitlines()) == 1
            and expected in result.stderr
        )
    result = t0(
        "index", "--pages", str(tmp_path / "absent.jsonl"), "--data-dir", str(tmp_path / "d")
    )
    assert (
        result.returncode == 2
        and "absent.jsonl" in result.stderr
        and "Traceback" not in result.stderr
    )
    result = t0("evaluate", "--data-dir", str(tmp_path / "d"))
    assert (
        result.returncode == 2
        and "name at least one --model; configured: retrieval-baseline, " in result.stderr
    )
    result = t0("evaluate", "--model", "gpt-5", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2 and "no model 'gpt-5' in evaluation.models" in result.stderr
    result = t0("evaluate", "--model", "retrieval-baseline", "--data-dir", str(tmp_path / "d"))
    assert (
        result.returncode == 2
        and "no evaluation queries at" in result.stderr
        and "t0 synth-queries" in result.stderr
    )


def test_bad_files_and_folders_are_one_line_each_and_keep_what_was_built(tmp_path, capsys):
    """Each case through the real entry point (`main`): exit status 2 and one line naming the
    problem."""
    import pytest

    from t0_pipeline.cli import main

    def error_of(*args: str) -> str:
        with pytest.raises(SystemExit) as done:
            main(list(args))
        err = capsys.readouterr().err.strip().splitlines()
        assert done.value.code == 2 and len(err) == 1, err
        return err[0]

    data = tmp_path / "data"
    good = write_jsonl(tmp_path / "pages.jsonl", PAGES)
    with pytest.raises(SystemExit) as done:
        main(["index", "--pages", str(good), "--data-dir", str(data)])
    assert done.value.code == 0
    capsys.readouterr()
    built = (data / "corpus" / "pages.parquet").read_bytes()

    assert "is a directory; pass a .jsonl" in error_of(
        "index", "--pages", str(tmp_path), "--data-dir", str(data)
    )
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    assert "data directory" in error_of("index", "--pages", str(good), "--data-dir", str(a_file))
    blank = write_jsonl(tmp_path / "blank.jsonl", [{**PAGES[0], "text": "   \n "}])
    assert "record 1: missing or empty field(s) 'text'" in error_of(
        "index", "--pages", str(blank), "--data-dir", str(data)
    )
    number = write_jsonl(tmp_path / "number.jsonl", [{**PAGES[0], "text": 12345}])
    assert "field 'text' is a number, not text" in error_of(
        "index", "--pages", str(number), "--data-dir", str(data)
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "holds no records; the previous corpus is kept" in error_of(
        "index", "--pages", str(empty), "--data-dir", str(data)
    )
    # nothing already produced was lost
    assert (data / "corpus" / "pages.parquet").read_bytes() == built
    assert "holds no queries; nothing was written" in error_of(
        "retrieve", "-d", str(data), "-q", str(empty), "-o", str(tmp_path / "r.jsonl")
    )
    queries = write_jsonl(tmp_path / "q.jsonl", [{"query": "itchy blue fingers"}])
    unwritable = error_of(
        "retrieve", "-d", str(data), "-q", str(queries), "-o", str(a_file / "r.jsonl")
    )
    # under a file
    assert str(a_file) in unwritable and "check the path and its permissions" in unwritable
    bom = tmp_path / "bom.jsonl"
    # a byte-order mark is fine
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(PAGES[0]).encode() + b"\n")
    with pytest.raises(SystemExit) as done:
        main(["index", "--pages", str(bom), "--data-dir", str(tmp_path / "bom-data")])
    assert done.value.code == 0
    capsys.readouterr()
    sqlite = data / "index" / "chroma" / "chroma.sqlite3"
    sqlite.write_bytes(b"this is not a database" * 100)
    assert "the Chroma store at" in error_of("query", "-d", str(data), "itchy fingers")


def test_set_reaches_any_setting_and_flags_are_shorthands_in_the_same_checked_layer(tmp_path):
    def resolved(*args: str) -> dict:
        result = runner.invoke(app, ["config", *args])
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    default = resolved()
    cfg = resolved(
        "--set",
        "chunk.size=64",
        "--set",
        "llm.roles.agent.api_base=http://gpu-box:8000/v1",
        "--set",
        "retrieval_eval.ks=[1, 3]",
        "--set",
        "serve.allowed_hosts=[t0.example.org]",
    )
    assert cfg["chunk"]["size"] == 64 and cfg["retrieval_eval"]["ks"] == [1, 3]
    assert cfg["serve"]["allowed_hosts"] == ["t0.example.org"]
    agent, before = cfg["llm"]["roles"]["agent"], default["llm"]["roles"]["agent"]
    # only that field; the agent's model and tokens stay
    assert agent["api_base"] == "http://gpu-box:8000/v1"
    assert {k: v for k, v in agent.items() if k not in ("api_base", "serve")} == {
        k: v for k, v in before.items() if k not in ("api_base", "serve")
    }
    # its teacher has a serve section
    demo = str(Path(__file__).parents[1] / "t0_pipeline" / "demo.yaml")
    assert resolved("-c", demo)["llm"]["roles"]["teacher"]["serve"]
    served = resolved("-c", demo, "--set", "llm.roles.teacher.api_base=http://gpu-box:8000/v1")[
        "llm"
    ]["roles"]["teacher"]
    # an endpoint given on the command line is a server already running there
    assert served["serve"] is None

    for args, expected in (
        (
            ["config", "--set", "chunk.sise=5"],
            "command line: unknown setting 'chunk.sise'; did you mean 'chunk.size'?",
        ),
        (["config", "--set", "chunk"], "--set 'chunk': write section.field=value"),
        (
            ["traces", "--keep", "sometimes", "-d", str(tmp_path)],
            "command line: field 'traces.keep'",
        ),
        (
            ["index", "--distance", "manhattan", "-d", str(tmp_path)],
            "command line: field 'chroma.distance'",
        ),
        (
            ["evaluate", "--model", "retrieval-baseline", "--ks", "0,five", "-d", str(tmp_path)],
            "--ks must be comma-separated integers such as 0,5",
        ),
    ):
        result = t0(*args)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, (
            args,
            result.stderr,
        )
        assert expected in result.stderr, (args, result.stderr)
    assert not (tmp_path / "indexes").exists()  # refused before any stage ran
