"""Retriever fine-tuning: real MiniLM trained with sentence-transformers' trainer on synthetic-style
queries of the sample corpus; the tuned model is used only when it measured better, and indexes
follow it."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, PipelineConfig, with_local_models
from t0_pipeline.retrieval.evaluate import sample_queries_path


@pytest.fixture
def tune_data(built, tmp_path):
    """The built sample's documents, and its sample queries split in two as synthetic train / eval
    files."""
    _, source = built
    paths = DataPaths(tmp_path / "data")
    (paths.root / "corpus").mkdir(parents=True)
    for name in (source.conditions, source.summaries):
        shutil.copy(name, paths.root / "corpus" / name.name)
    rows = [json.loads(line) for line in sample_queries_path().read_text().splitlines()]
    rows = [{"query": r["query"], "slug": r["condition"]} for r in rows]
    paths.synthetic_queries("train").parent.mkdir(parents=True)
    pl.DataFrame(rows[::2]).write_parquet(paths.synthetic_queries("train"))
    pl.DataFrame(rows[1::2]).write_parquet(paths.synthetic_queries("eval"))
    return paths


def sections(cfg: PipelineConfig) -> tuple:
    """What run_tune takes from a pipeline config."""
    return cfg.retriever_tune, cfg.retrieval_eval, cfg.embedding


def _config(min_gain: float) -> PipelineConfig:
    cfg = PipelineConfig()
    cfg.retriever_tune = cfg.retriever_tune.model_copy(
        update={"epochs": 1, "batch_size": 16, "min_gain": min_gain, "max_pairs": 40}
    )
    return cfg


def test_tuned_model_is_used_only_when_better_and_reused_on_a_rerun(tune_data):
    from t0_pipeline.retrieval.index import build_dense_index
    from t0_pipeline.retrieval.retrieve import Retriever
    from t0_pipeline.retrieval.tune import run_tune

    paths = tune_data
    result = run_tune(*sections(_config(min_gain=-1.0)), paths)  # any outcome counts as better
    # 40 pairs / batch 16, one epoch
    assert result.used and result.pairs == 40 and result.steps == 3
    assert result.train_loss is not None and result.train_loss > 0
    assert set(result.before) == set(result.after) == {1, 5, 10, 30}
    # chosen on the development split; the evaluation split is reported beside it
    assert result.dev_queries > 0 and set(result.eval_before) == set(result.eval_after) == {
        1,
        5,
        10,
        30,
    }
    assert "chooses" in result.table() and "reported" in result.table()
    # reported to the default tracker: a TensorBoard run beside the tuned models, loss every step
    from t0_pipeline_tests.tracker_files import logged_scalars

    runs = list((paths.retriever_dir / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("t0-retriever-tuned-")
    assert sorted(logged_scalars(runs[0])["train/loss"]) == [1, 2, 3]
    assert (paths.retriever_dir / "active.json").exists()
    cfg = with_local_models(PipelineConfig(), paths)
    # every index and query now embeds with the tuned model
    assert cfg.embedding.model == result.model_dir

    # the index is rebuilt in the tuned model's space and answers queries
    docs = pl.read_parquet(paths.summaries)
    stats = build_dense_index(docs, "summaries", paths, cfg.embedding, cfg.chunk, cfg.chroma)
    assert stats.embedded_chunks > 0
    hits = Retriever("summaries", paths, cfg.embedding, cfg.chroma).search(
        "itchy red eyes and sneezing in summer", 5, "dense"
    )
    assert len(hits) == 5
    # a retriever configured with the base model refuses the tuned index rather than mixing vector
    # spaces
    with pytest.raises(T0Error, match="rebuild it"):
        Retriever("summaries", paths, PipelineConfig().embedding, cfg.chroma)

    again = run_tune(*sections(_config(min_gain=-1.0)), paths)
    assert any("reused" in note for note in again.notes) and again.model_dir == result.model_dir

    # a model that has to beat the current one by a whole p@k point is never used: the indexes go
    # back
    worse = run_tune(*sections(_config(min_gain=1.0)), paths)
    assert not worse.used and not (paths.retriever_dir / "active.json").exists()
    assert with_local_models(PipelineConfig(), paths).embedding.model is None
    last = json.loads((paths.retriever_dir / "last_run.json").read_text())
    assert last["used"] is False and last["gain"] == pytest.approx(worse.gain)


def test_tuning_without_synthetic_queries_names_what_to_run(tmp_path):
    from t0_pipeline.retrieval.tune import run_tune

    with pytest.raises(T0Error, match="synth-queries"):
        run_tune(*sections(PipelineConfig()), DataPaths(tmp_path))


def test_unreadable_active_record_is_a_clear_error(tmp_path):
    paths = DataPaths(tmp_path)
    paths.retriever_dir.mkdir(parents=True)
    (paths.retriever_dir / "active.json").write_text("{not json")
    with pytest.raises(T0Error, match="delete it to use the base embedder"):
        with_local_models(PipelineConfig(), paths)


def test_the_development_split_is_held_out_whole_and_the_choice_never_reads_the_evaluation_split(
    tune_data,
):
    """Development queries are whole (condition, disposition) pairs that are not trained on; the
    choice is made before the evaluation split is read, so it is the same with an evaluation split
    that matches no document at all (a selection that read it would have nothing to go on)."""
    from t0_pipeline.retrieval.evaluate import EvalQuery
    from t0_pipeline.retrieval.tune import run_tune, split_dev

    train = [
        EvalQuery(f"q{i}", [f"c{i % 10}"], {"disposition": ("A&E", "Self-care")[i % 2]})
        for i in range(60)
    ]
    fit, dev = split_dev(train, 0.2, seed=0)
    key = lambda q: (q.targets[0], q.record["disposition"])  # noqa: E731
    assert {key(q) for q in fit}.isdisjoint({key(q) for q in dev})
    assert len({key(q) for q in dev}) == 2 and len(fit) + len(dev) == 60
    assert split_dev(train, 0.2, seed=0) == (fit, dev)  # seeded

    paths = tune_data
    reported = run_tune(*sections(_config(min_gain=0.0)), paths)
    rows = pl.read_parquet(paths.synthetic_queries("eval"))
    rows.with_columns(pl.lit("no-such-page").alias("slug")).write_parquet(
        paths.synthetic_queries("eval")
    )
    blind = run_tune(*sections(_config(min_gain=0.0)), paths)
    assert blind.eval_queries == 0 and not blind.eval_before
    assert (blind.used, blind.gain, blind.before) == (reported.used, reported.gain, reported.before)
    assert any("nothing reported there" in note for note in blind.notes)
