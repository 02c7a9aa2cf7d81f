"""Synthetic queries: balanced seeded draws, refusal → redraw, disjoint eval/train with top-up,
resume."""

from __future__ import annotations

import json
import re
from collections import Counter

import polars as pl

from t0_pipeline.artifacts import sha256_text
from t0_pipeline.checks import disjoint_problems
from t0_pipeline.config import DataPaths, LLMConfig, QueryGenConfig, RoleConfig
from t0_pipeline.synthetic.content_checks import query_set_problems
from t0_pipeline.synthetic.queries import (
    remove_overlaps,
    run_generate_queries,
)
from t0_pipeline_tests.fake_llm import FakeLLM

PAGES = {
    "alpha-itch": ("Alpha itch", "Itchy arms. A pharmacist can help. See a GP if it spreads."),
    "beta-cough": (
        "Beta cough",
        "A cough. Call 111 if you cough blood. Call 999 if you cannot breathe.",
    ),
    "gamma-pain": ("Gamma pain", "Chest pain. Call 999 now."),
    "delta-rash": ("Delta rash", "A rash. Self-care at home. Urgent GP if fever."),
    "eps-ache": ("Eps ache", "Back ache. Rest. GP if it lasts."),
    "zeta-sting": ("Zeta sting", "A sting. Ice it. A&E if the throat swells."),
}


def writer_reply(messages, body):
    """Scripted query writer: refuses A&E for 'Alpha itch', otherwise writes a query naming its
    inputs.

    Like a sampling model, the message depends on the request's seed, so two draws of one cell's
    prompt with different seeds write different messages (and the same seed the same message).
    """
    prompt = messages[-1]["content"]
    condition = re.search(r'has "([^"]+)"', prompt).group(1)
    disposition = re.search(r"level of care: (.+?)\.\n", prompt).group(1)
    sex = re.search(r"from a (\w+) patient", prompt).group(1)
    if condition == "Alpha itch" and disposition == "A&E":
        return json.dumps({"refused": True, "reason": "the page has no emergency situation"})
    return json.dumps(
        {
            "refused": False,
            "demographics": {
                "age": 40,
                "sex": sex,
                "occupation": "baker",
                "social_support": "lives with partner",
                "medical_history": "none",
            },
            # a first-person message in words (the content check reads it), naming what it was
            # asked for and its sampling seed
            "symptoms_description": f"I feel unwell ({condition} / {disposition}) and my "
            f"throat and chest have been getting worse since yesterday evening. I have been "
            f"coughing a lot and I feel very tired and weak today, seed "
            f"{body.get('seed')}",
        }
    )


def setup(tmp_path, server, **gen):
    paths = DataPaths(tmp_path / "data")
    paths.conditions.parent.mkdir(parents=True)
    pl.DataFrame(
        {
            "slug": list(PAGES),
            "title": [t for t, _ in PAGES.values()],
            "url": [""] * 6,
            "text": [x for _, x in PAGES.values()],
            "content_hash": [sha256_text(x) for _, x in PAGES.values()],
        }
    ).write_parquet(paths.conditions)
    llm = LLMConfig(
        roles={"query_writer": RoleConfig(model="openai/writer", api_base=server.api_base)},
        backoff_s=0.01,
    )
    return paths, QueryGenConfig(**{"n_eval": 18, "n_train": 12, "seed": 7, **gen}), llm


def test_balanced_disjoint_topped_up_and_resumable(tmp_path):
    with FakeLLM() as server:
        server.on("send to NHS 111", writer_reply)
        # six pages, 18 of their 18 (condition, disposition) pairs in the evaluation set: most
        # training draws overlap, so this tiny corpus needs more top-up draws than the default
        # allowance (n_train)
        paths, cfg, llm = setup(tmp_path, server, max_top_up_draws=60)
        eval_df, train_df, report = run_generate_queries(paths, cfg, llm)

        assert eval_df.height == 18 and train_df.height == 12
        cells = Counter(zip(eval_df["query_type"], eval_df["disposition"], eval_df["sex"]))
        # 3 types × 3 dispositions × 2 sexes, once each
        assert len(cells) == 18 and set(cells.values()) == {1}
        assert disjoint_problems(eval_df, train_df) == []
        assert report["train"]["removed_overlaps"] > 0 and report["train"]["top_up_draws"] > 0
        # a refusal made a new condition be drawn for the same cell
        redrawn = pl.concat([eval_df, train_df]).filter(pl.col("refused_slugs").list.len() > 0)
        assert report["eval"]["refusals"] + report["train"]["refusals"] >= 1 and redrawn.height >= 1
        assert all(
            r["slug"] not in r["refused_slugs"] and r["draws"] == len(r["refused_slugs"]) + 1
            for r in redrawn.iter_rows(named=True)
        )
        assert (
            not pl.concat([eval_df, train_df])
            .filter((pl.col("slug") == "alpha-itch") & (pl.col("disposition") == "A&E"))
            .height
        )
        assert eval_df["query"][0].startswith("I feel unwell (") and eval_df["age"][0] == 40

        requests = len(server.state.requests)
        again_eval, again_train, again = run_generate_queries(paths, cfg, llm)
        assert len(server.state.requests) == requests  # a re-run is all cache hits
        assert again["usage"]["completed"] == 0 and again["usage"]["cache_hits"] > 0
        assert again_eval.equals(eval_df) and again_train.equals(train_df)


def test_a_thousand_draws_are_a_thousand_distinct_balanced_queries(tmp_path):
    with FakeLLM() as server:
        server.on("send to NHS 111", writer_reply)
        paths, cfg, llm = setup(tmp_path, server, n_eval=1000, n_train=0)
        eval_df, _, report = run_generate_queries(paths, cfg, llm)
        assert (
            eval_df.height == 1000
            and eval_df["id"].n_unique() == 1000
            and eval_df["query"].n_unique() == 1000
        )
        assert sorted(eval_df["id"]) == [f"eval-{i:05d}" for i in range(1000)]
        # every cell its own seed: the calls differ in seed, so no two cells shared a request (or a
        # cached reply)
        seeds = [body.get("seed") for body in server.state.requests]
        assert len(set(seeds)) == len(seeds)
        # 18 cells: 1000 = 18 × 55 + 10, less the refused Alpha itch A&E redraws
        cells = report["eval"]["cells"]
        assert len(cells) == 18 and max(cells.values()) - min(cells.values()) <= 1
        assert query_set_problems(eval_df, report["eval"], cfg) == []
        # the check sees what the old bug produced: ids shared between cells
        broken = eval_df.with_columns(pl.col("id").str.replace(r"\d$", "0"))
        assert "repeated ids" in query_set_problems(broken, report["eval"], cfg)[0]


def test_remove_overlaps():
    rows = [
        {"slug": "a", "disposition": "A&E"},
        {"slug": "a", "disposition": "Self-care"},
        {"slug": "b", "disposition": "A&E"},
    ]
    kept, removed = remove_overlaps(rows, {("a", "A&E")})
    assert removed == 1 and kept == rows[1:]


def test_failed_draws_are_listed_retried_next_run_and_a_run_with_no_queries_writes_nothing(
    tmp_path,
):
    import pytest

    from t0_pipeline.artifacts import T0Error

    with FakeLLM() as server:
        # never JSON, even after the repair request
        server.on('has "Beta cough"', "Sorry, I can only chat.")
        server.on("send to NHS 111", writer_reply)
        paths, cfg, llm = setup(tmp_path, server, n_eval=18, n_train=0)
        eval_df, _, report = run_generate_queries(paths, cfg, llm)
        failed = report["eval"]["failures"]
        assert failed and {f["slug"] for f in failed} == {"beta-cough"}
        assert all(f["error"].startswith("InvalidJSON") for f in failed)
        assert eval_df.height == 18 - len(failed) and "beta-cough" not in eval_df["slug"].to_list()
        assert report["usage"]["repairs"] == report["usage"]["invalid_json"] == len(failed)

    # unusable replies were not cached: only the failed draws are asked again, and succeed

    with FakeLLM() as healthy:
        healthy.on("send to NHS 111", writer_reply)
        llm.roles["query_writer"].api_base = healthy.api_base
        again, _, report = run_generate_queries(paths, cfg, llm)
        assert again.height == 18 and report["usage"]["completed"] == len(failed) == len(
            healthy.state.requests
        )
        assert report["eval"]["failures"] == []

    with FakeLLM() as server:
        server.on("send to NHS 111", "Sorry, I can only chat.")
        paths, cfg, llm = setup(tmp_path / "second", server, n_eval=3, n_train=0)
        with pytest.raises(
            T0Error,
            match=r"no evaluation queries were produced \(3 failed draws, first: InvalidJSON",
        ):
            run_generate_queries(paths, cfg, llm)
        assert not paths.synthetic_queries("eval").exists()


def test_a_killed_query_stage_resumes_to_the_same_sets_paying_only_for_calls_in_flight(tmp_path):
    """`t0 synth-queries` SIGKILLed mid-way and run again gives exactly the sets of an uninterrupted
    run; the only calls made twice are those in flight at the kill."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import time

    from t0_pipeline.config import PipelineConfig

    with FakeLLM(latency_s=0.05) as server:
        server.on("send to NHS 111", writer_reply)

        def workspace(name: str):
            paths, cfg, llm = setup(tmp_path / name, server, n_eval=54, n_train=36)
            llm = llm.model_copy(update={"concurrency": 3})
            config = tmp_path / f"{name}.json"
            config.write_text(PipelineConfig(llm=llm, queries=cfg).model_dump_json())
            command = [
                sys.executable,
                "-m",
                "t0_pipeline.cli",
                "synth-queries",
                "--data-dir",
                str(paths.root),
                "--config",
                str(config),
            ]
            return paths, command

        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        whole_paths, whole = workspace("whole")
        assert subprocess.run(whole, env=env, capture_output=True).returncode == 0
        uninterrupted = len(server.state.requests)

        paths, command = workspace("killed")
        server.state.requests.clear()
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        cache, stored, deadline = None, 0, time.monotonic() + 120
        while time.monotonic() < deadline and stored < 30:
            time.sleep(0.05)
            cache = next(paths.root.rglob("*.sqlite"), None)
            if cache is not None:
                try:
                    stored = (
                        sqlite3.connect(cache).execute("SELECT COUNT(*) FROM replies").fetchone()[0]
                    )
                except sqlite3.Error:
                    pass
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.3)  # let the server finish answering what was in flight
        stored = sqlite3.connect(cache).execute("SELECT COUNT(*) FROM replies").fetchone()[0]
        before_kill = len(server.state.requests)
        assert 30 <= stored < uninterrupted and not paths.synthetic_queries("eval").exists()

        assert subprocess.run(command, env=env, capture_output=True).returncode == 0
        after = len(server.state.requests) - before_kill
        in_flight = before_kill - stored
        # paid twice: only those in flight
        assert after == uninterrupted - stored and 0 <= in_flight <= 3
        for split in ("eval", "train"):
            resumed = pl.read_parquet(paths.synthetic_queries(split))
            reference = pl.read_parquet(whole_paths.synthetic_queries(split))
            assert resumed.equals(reference), split  # same rows, same ids, same texts


def test_an_age_written_as_above_80_is_kept_not_failed(tmp_path):
    """The prompt lets the writer answer "above 80", as the reference's did; such a draw is a query,
    not a failure."""

    def elderly(messages, body):
        reply = json.loads(writer_reply(messages, body))
        if not reply["refused"]:
            reply["demographics"]["age"] = "above 80"
        return json.dumps(reply)

    with FakeLLM() as server:
        server.on("send to NHS 111", elderly)
        paths, cfg, llm = setup(tmp_path, server, n_eval=6, n_train=0)
        eval_df, _, report = run_generate_queries(paths, cfg, llm)
    assert eval_df.height == 6 and not report["eval"]["failures"]
    assert set(eval_df["age"]) == {81}
    prompt = server.state.requests[0]["messages"][-1]["content"]
    assert (
        "NHS 111" in prompt
        and "A&E: emergency hospital treatment" in prompt
        and 'write "above 80"' in prompt
    )
