"""Tune the retriever: fine-tune the embedder on the pipeline's own synthetic queries.

Pairs: each synthetic query of the *training* split → the document of its condition (a summary by
default: what traces, evaluation and serving retrieve from). Loss: multiple-negatives ranking (every
other document in a batch is a negative) plus ``hard_negatives`` per query, the best-ranked wrong
documents under the current embedder. Trained with sentence-transformers' own trainer, float
weights.

Selected on a *development* split held out from the training queries (``dev_fraction`` of their
(condition, disposition) pairs, never trained on): dense p@k over the same documents before and
after. The tuned model is made the embedder of every index (``<data>/models/retriever/active.json``,
read by :func:`t0_pipeline.config.with_tuned_retriever`) only when its mean dev p@k gain is above
``min_gain``. The *evaluation* split is scored too, after the choice, for the report only: what is
reported on it was never used to choose.

Run it: ``t0 tune-retriever --data-dir DIR`` (or materialise ``retriever_model``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from t0_pipeline.artifacts import T0Error, atomic_path, write_json
from t0_pipeline.config import (
    DataPaths,
    EmbeddingConfig,
    RetrievalEvalConfig,
    RetrieverTuneConfig,
)
from t0_pipeline.retrieval.evaluate import EvalQuery, first_hit_rank, precision_at_k

log = logging.getLogger(__name__)


@dataclass
class TuneResult:
    base: str
    model_dir: str
    pairs: int
    dev_queries: int  # held out from the training queries: what the choice is made on
    eval_queries: int  # the evaluation split: reported only
    steps: int
    seconds: float
    before: dict[int, float]  # dev p@k, current embedder
    after: dict[int, float]  # dev p@k, tuned
    gain: float  # mean dev p@k gain over the configured ks: the choice
    used: bool  # the tuned model is now the indexes' embedder
    hard_negatives: int
    eval_before: dict[int, float] = field(default_factory=dict)
    eval_after: dict[int, float] = field(default_factory=dict)
    train_loss: float | None = None
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        ks = sorted(self.before)
        lines = [
            "| split | embedder | " + " | ".join(f"p@{k}" for k in ks) + " |",
            "|---|---|" + "---:|" * len(ks),
        ]
        rows = [
            (f"dev ({self.dev_queries}, chooses)", "current", self.before),
            (f"dev ({self.dev_queries}, chooses)", "tuned", self.after),
            (f"evaluation ({self.eval_queries}, reported)", "current", self.eval_before),
            (f"evaluation ({self.eval_queries}, reported)", "tuned", self.eval_after),
        ]
        for split, name, pk in rows:
            if pk:
                cells = " | ".join(f"{pk[k]:.3f}" for k in ks)
                lines.append(f"| {split} | {name} | {cells} |")
        return "\n".join(lines)


def split_dev(
    train: list[EvalQuery], fraction: float, seed: int
) -> tuple[list[EvalQuery], list[EvalQuery]]:
    """(queries to train on, development queries): ``fraction`` of the (condition, disposition)
    pairs, drawn with ``seed``, held out whole, as the evaluation split shares no pair with the
    training one."""
    import random

    def pair(q: EvalQuery) -> tuple:
        return (tuple(q.targets), str(q.record.get("disposition", "")))

    pairs = sorted({pair(q) for q in train})
    held = set(random.Random(seed).sample(pairs, max(1, round(fraction * len(pairs)))))
    if len(held) == len(pairs):  # a single pair: nothing left to train on
        return train, []
    return [q for q in train if pair(q) not in held], [q for q in train if pair(q) in held]


def dense_rankings(
    model, queries: list[str], slugs: list[str], texts: list[str], depth: int, batch_size: int = 16
) -> list[list[str]]:
    """Slugs by cosine similarity of query to document (one vector per document, its first chunk's
    worth)."""
    docs = model.encode(
        texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    )
    qs = model.encode(
        queries, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    )
    order = np.argsort(-(qs @ docs.T), axis=1)[:, :depth]
    return [[slugs[i] for i in row] for row in order]


def p_at_k(
    model, queries: list[EvalQuery], slugs: list[str], texts: list[str], ks: list[int]
) -> dict[int, float]:
    ranked = dense_rankings(model, [q.query for q in queries], slugs, texts, max(ks))
    return precision_at_k([first_hit_rank(r, q.targets) for r, q in zip(ranked, queries)], ks)


def training_rows(
    model,
    train: list[EvalQuery],
    docs: dict[str, str],
    hard_negatives: int,
    max_pairs: int | None,
    seed: int,
) -> list[dict[str, str]]:
    """(anchor, positive[, negative_1 …]) rows: one per training query whose condition is a
    document."""
    import random

    usable = [q for q in train if any(t in docs for t in q.targets)]
    if max_pairs is not None and len(usable) > max_pairs:
        usable = random.Random(seed).sample(usable, max_pairs)
    if not usable:
        return []
    slugs, texts = list(docs), list(docs.values())
    mined = (
        dense_rankings(model, [q.query for q in usable], slugs, texts, hard_negatives + 10)
        if hard_negatives
        else []
    )
    rows = []
    for i, q in enumerate(usable):
        row = {"anchor": q.query, "positive": docs[next(t for t in q.targets if t in docs)]}
        if hard_negatives:
            wrong = [s for s in mined[i] if s not in q.targets][:hard_negatives]
            row.update({f"negative_{j + 1}": docs[s] for j, s in enumerate(wrong)})
        rows.append(row)
    return rows


def _digest(base: str, rows: list[dict], config: RetrieverTuneConfig) -> str:
    payload = json.dumps(
        {
            "base": base,
            "rows": rows,
            # where the run is reported does not change the model
            "config": config.model_dump(mode="json", exclude={"report_to"}),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


NO_DEV_QUERIES = (
    "no development queries: the training queries hold too few (condition, disposition) pairs to "
    "hold some out; write more synthetic queries (queries.n_train) before tuning the retriever."
)
_VERDICT = {
    True: "now the embedder of every index",
    False: "not used: no better than the current one on the development split",
}


def tune_retriever(
    base: str,
    train: list[EvalQuery],
    evaluation: list[EvalQuery],
    docs: dict[str, str],
    config: RetrieverTuneConfig,
    paths: DataPaths,
    device: str = "cpu",
    log_fn=log.info,
) -> TuneResult:
    """Fine-tune ``base`` (a sentence-transformers name or folder) on ``train`` less a development
    split, and make it the indexes' embedder if better *on that split*; ``evaluation`` is scored
    only after the choice, for the report.

    A run with the same base, pairs and settings as a finished one reuses its model (no retraining).
    """
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    fit, dev = split_dev(train, config.dev_fraction, config.seed)
    dev = [q for q in dev if any(t in docs for t in q.targets)]
    if not dev:
        raise T0Error(NO_DEV_QUERIES)
    model = SentenceTransformer(base, device=device)
    slugs, texts = list(docs), list(docs.values())
    ks = sorted(set(config.ks))
    before = p_at_k(model, dev, slugs, texts, ks)
    log_fn("current embedder on %d development queries: %s" % (len(dev), _pk(before)))
    rows = training_rows(model, fit, docs, config.hard_negatives, config.max_pairs, config.seed)
    if len(rows) < 2:
        raise T0Error(
            f"only {len(rows)} training queries match the documents; write more synthetic queries "
            "(queries.n_train) before tuning the retriever."
        )
    out = (paths.retriever_dir / f"tuned-{_digest(base, rows, config)}").resolve()
    notes: list[str] = []
    steps, loss = _trained_or_reused(model, rows, base, config, device, out, notes, log_fn)
    tuned = SentenceTransformer(str(out), device=device)
    after = p_at_k(tuned, dev, slugs, texts, ks)
    gain = float(np.mean([after[k] - before[k] for k in ks]))
    used = gain > config.min_gain  # decided: the evaluation split has not been read
    log_fn(f"tuned embedder on development: {_pk(after)} (mean gain {gain:+.3f}); {_VERDICT[used]}")
    result = TuneResult(
        base=base,
        model_dir=str(out),
        pairs=len(rows),
        dev_queries=len(dev),
        eval_queries=len(evaluation),
        steps=steps,
        seconds=0.0,
        before=before,
        after=after,
        gain=gain,
        used=used,
        hard_negatives=config.hard_negatives,
        train_loss=loss,
        notes=notes,
    )
    _record_choice(result, out, base, paths)
    _report_on_evaluation(result, model, tuned, evaluation, slugs, texts, ks, log_fn)
    result.seconds = round(time.perf_counter() - started, 1)
    write_json(asdict(result), paths.retriever_dir / "last_run.json")
    return result


def _record_choice(result: TuneResult, out, base: str, paths: DataPaths) -> None:
    if result.used:
        active = {
            "path": out.name,
            "base": base,
            "gain": result.gain,
            "before": result.before,
            "after": result.after,
            "chosen_on": "development split",
        }
        write_json(active, paths.retriever_dir / "active.json")


def _report_on_evaluation(result, model, tuned, evaluation, slugs, texts, ks, log_fn) -> None:
    """p@k of both embedders on the evaluation split, once the choice is made (report only)."""
    if not evaluation:
        result.notes.append("no evaluation queries match the documents: nothing reported there")
        return
    result.eval_before = p_at_k(model, evaluation, slugs, texts, ks)
    result.eval_after = p_at_k(tuned, evaluation, slugs, texts, ks)
    log_fn(
        f"on {len(evaluation)} evaluation queries (reported, not used to choose): current "
        f"{_pk(result.eval_before)}; tuned {_pk(result.eval_after)}"
    )


def _trained_or_reused(model, rows, base, config, device, out, notes: list[str], log_fn):
    """(steps, train loss) of the model in ``out``: a finished run's, or a new fine-tuning's."""
    if (out / "t0_tune.json").exists():
        notes.append(f"reused {out.name}: same base, pairs and settings as a finished run")
        log_fn(notes[-1])
        meta = json.loads((out / "t0_tune.json").read_text(encoding="utf-8"))
        return meta.get("steps", 0), meta.get("train_loss")
    log_fn(
        f"fine-tuning on {len(rows)} pairs with {config.hard_negatives} hard negative(s) each, "
        f"batch {config.batch_size}, {config.epochs:g} epoch(s)"
    )
    return _fine_tune(model, rows, base, config, device, out)


def _fine_tune(
    model, rows: list[dict], base: str, config: RetrieverTuneConfig, device: str, out
) -> tuple[int, float]:
    """Train ``model`` on ``rows`` with sentence-transformers' trainer and save it whole into
    ``out`` (with ``t0_tune.json``, which marks a finished run); returns (steps, train loss)."""
    import logging as _logging

    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )

    from t0_pipeline.trackers import run_name, tracking

    name = run_name(f"retriever-{Path(out).name}")
    report = tracking(config.report_to, Path(out).parent, name, "retriever_tune.report_to")
    with report as report_to, atomic_path(out) as tmp:
        args = SentenceTransformerTrainingArguments(
            output_dir=str(tmp / "trainer"),
            num_train_epochs=config.epochs,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            warmup_steps=config.warmup,
            seed=config.seed,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            save_strategy="no",
            report_to=report_to,
            run_name=name,
            logging_steps=1,
            disable_tqdm=False,
            use_cpu=device == "cpu",
            dataloader_num_workers=0,
        )
        _logging.getLogger("sentence_transformers").setLevel(_logging.WARNING)
        trainer = SentenceTransformerTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            loss=MultipleNegativesRankingLoss(model),
        )
        state = trainer.train()
        steps, loss = int(state.global_step), float(state.training_loss)
        shutil.rmtree(tmp / "trainer", ignore_errors=True)
        model.save_pretrained(str(tmp))
        meta = {
            "base": base,
            "pairs": len(rows),
            "steps": steps,
            "train_loss": loss,
            "config": config.model_dump(mode="json"),
        }
        write_json(meta, tmp / "t0_tune.json")
    return steps, loss


def _pk(pk: dict[int, float]) -> str:
    return ", ".join(f"p@{k}={v:.3f}" for k, v in sorted(pk.items()))


def run_tune(
    tune: RetrieverTuneConfig,
    queries: RetrievalEvalConfig,
    embedding: EmbeddingConfig,
    paths: DataPaths,
    log_fn=log.info,
) -> TuneResult:
    """Tune from the configured base embedder (``embedding`` as configured, never an earlier tuned
    one, so re-runs do not compound) on the synthetic splits, read with ``queries``' settings."""
    from t0_pipeline.artifacts import read_parquet
    from t0_pipeline.retrieval.embed import default_model_path
    from t0_pipeline.retrieval.evaluate import load_queries

    split_files = {split: paths.synthetic_queries(split) for split in ("train", "eval")}
    for split, path in split_files.items():
        if not path.exists():
            raise T0Error(
                f"no synthetic {split} queries at {path}; write them first (`t0 synth-queries`, or "
                "materialise synthetic_queries)."
            )
    documents = read_parquet(
        paths.documents(tune.documents), f"{tune.documents} documents", "t0 summarise"
    )
    docs = dict(zip(documents["slug"].to_list(), documents["text"].to_list()))
    eval_cfg = queries.model_copy(update={"query_field": "query", "target_field": "slug"})
    train = load_queries(split_files["train"], eval_cfg)
    evaluation = [
        q for q in load_queries(split_files["eval"], eval_cfg) if any(t in docs for t in q.targets)
    ]
    base = embedding.model or default_model_path()
    result = tune_retriever(base, train, evaluation, docs, tune, paths, embedding.device, log_fn)
    if not result.used:
        # the indexes go back to the base embedder
        (paths.retriever_dir / "active.json").unlink(missing_ok=True)
    return result
