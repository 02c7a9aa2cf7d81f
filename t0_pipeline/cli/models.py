"""Model commands: synth-queries, traces, sft, base-models, train, evaluate, accuracy-report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from t0_pipeline.artifacts import T0Error
from t0_pipeline.cli.common import (
    ConfigFile,
    DataDir,
    SetOpt,
    app,
    int_list,
    open_retriever,
    role_flags,
    serve_roles,
    setup,
    usage_line,
)


@app.command("synth-queries")
def synth_queries(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    n_eval: Optional[int] = typer.Option(None, help="Evaluation queries (default 1000)."),
    n_train: Optional[int] = typer.Option(None, help="Training queries (default 2000)."),
    seed: Optional[int] = typer.Option(None, help="Seed for the balanced draws."),
    model: Optional[str] = typer.Option(None, help="Override the query_writer role's model."),
    api_base: Optional[str] = typer.Option(None, help="Override the query_writer role's endpoint."),
    sets: Optional[list[str]] = SetOpt,
):
    """Write synthetic patient queries: an evaluation and a training set. Resumable.

    No (condition, disposition) pair is in both sets.
    """
    from t0_pipeline.synthetic.queries import run_generate_queries

    cfg, paths = setup(
        data_dir,
        config,
        sets=sets,
        flags={
            "queries.n_eval": n_eval,
            "queries.n_train": n_train,
            "queries.seed": seed,
            **role_flags("query_writer", model, api_base),
        },
    )
    with serve_roles(cfg, paths, "query_writer") as cfg:
        eval_df, train_df, info = run_generate_queries(
            paths, cfg.queries, cfg.llm, prompts=cfg.prompts
        )
    for split, df in (("eval", eval_df), ("train", train_df)):
        r = info[split]
        typer.echo(
            f"{split}: {df.height}/{r['requested']} queries, {r['refusals']} refusals, "
            f"{len(r['failures'])} failed, {r['removed_overlaps']} overlaps removed → "
            f"{paths.synthetic_queries(split)}"
        )
    typer.echo(usage_line(info["usage"]))


@app.command()
def traces(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    k: Optional[int] = typer.Option(None, help="Summaries retrieved per query (default 5)."),
    mode: Optional[str] = typer.Option(None, help="Retriever mode (default dense)."),
    keep: Optional[str] = typer.Option(None, help="Filter: all, parsable or correct."),
    model: Optional[str] = typer.Option(None, help="Override the teacher role's model."),
    api_base: Optional[str] = typer.Option(None, help="Override the teacher role's endpoint."),
    sets: Optional[list[str]] = SetOpt,
):
    """Collect the teacher's reasoning traces over retrieved summaries. Resumable.

    One trace per training query; parsed and filtered by traces.keep.
    """
    from t0_pipeline.synthetic.traces import run_traces

    cfg, paths = setup(
        data_dir,
        config,
        sets=sets,
        flags={
            "traces.k": k,
            "traces.mode": mode,
            "traces.keep": keep,
            **role_flags("teacher", model, api_base),
        },
    )
    retriever = open_retriever(cfg, paths, cfg.traces.index)
    with serve_roles(cfg, paths, "teacher") as cfg:
        df, stats = run_traces(paths, cfg.traces, cfg.llm, retriever, prompts=cfg.prompts)
    typer.echo(
        f"{stats['traces']} traces, {stats['kept']} kept ({cfg.traces.keep}); parsable "
        f"{stats['parsable_rate']:.0%}, condition accuracy {stats['condition_accuracy']:.0%}, "
        f"disposition accuracy {stats['disposition_accuracy']:.0%} → {paths.traces}"
    )
    typer.echo(usage_line(stats["usage"]))


@app.command()
def sft(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    tokenizer: Optional[str] = typer.Option(
        None, help="Student tokenizer name or path (its chat template renders the text)."
    ),
    block_size: Optional[int] = typer.Option(
        None, help="Maximum tokens per example (default 32768)."
    ),
    sets: Optional[list[str]] = SetOpt,
):
    """Turn kept traces into chat examples for fine-tuning (Parquet + dataset card)."""
    from t0_pipeline.synthetic.sft import run_sft

    cfg, paths = setup(
        data_dir,
        config,
        sets=sets,
        flags={"sft.tokenizer": tokenizer, "sft.block_size": block_size},
    )
    from t0_pipeline.cards import provenance

    df, stats = run_sft(paths, cfg.sft, cfg.prompts, cfg.chat_format, provenance(cfg))
    typer.echo(
        f"{stats['examples']} examples from {stats['kept_traces']} kept traces; tokens mean "
        f"{stats['tokens_mean']}, max {stats['tokens_max']}; {stats['dropped_overlong']} dropped "
        f"over {stats['block_size']} → {paths.sft_dir}"
    )


@app.command("base-models")
def base_models(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    sets: Optional[list[str]] = SetOpt,
):
    """Make the local checkpoints named in base_models under <data>/models/.

    The bundled SmolLM2 is converted, local folders are linked, hub names are downloaded when
    online; other settings name these checkpoints by their entry's name.
    """
    from t0_pipeline.servers.base_models import materialise_all

    cfg, paths = setup(data_dir, config, sets=sets)
    if not cfg.base_models:
        typer.echo(
            "no base_models configured; add e.g. base_models: {smollm2-135m-instruct: "
            "'bundled:smollm2-135m-instruct'} to the config."
        )
        return
    for info in materialise_all(cfg.base_models, paths, typer.echo):
        typer.echo(
            f"{info['name']}: {'made' if info['made'] else 'up to date'} from {info['source']} "
            f"({info['bytes'] / 1e6:.0f} MB) → {info['path']}"
        )


_TRAIN_MODEL = typer.Option(
    None,
    help="Base model name or local path (default: the partition's entry in train.sizes, else "
    "Qwen/Qwen2.5-1.5B-Instruct).",
)
_TRAIN_DATASET = typer.Option(
    None, help="SFT Parquet (default <data>/synthetic/sft/train.parquet)."
)
_TRAIN_OUTPUT_DIR = typer.Option(
    None, help="Where checkpoints/, final/, logs/ and metrics.json go."
)
_TRAIN_PARTITION = typer.Option(
    "default", help="Partition key (model size) used in the default output path."
)
_TRAIN_MAX_STEPS = typer.Option(None, help="Stop after this many optimizer steps (smoke tests).")
_TRAIN_DEEPSPEED = typer.Option(
    None,
    help="auto (ZeRO-3 when several processes train all weights), zero3, zero3_offload, a "
    "JSON path, or none.",
)


@app.command()
def train(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    model: Optional[str] = _TRAIN_MODEL,
    dataset: Optional[Path] = _TRAIN_DATASET,
    output_dir: Optional[Path] = _TRAIN_OUTPUT_DIR,
    partition: str = _TRAIN_PARTITION,
    max_steps: Optional[int] = _TRAIN_MAX_STEPS,
    deepspeed: Optional[str] = _TRAIN_DEEPSPEED,
    lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters instead of all weights."),
    sets: Optional[list[str]] = SetOpt,
):
    """Fine-tune a student on the SFT dataset; resumes after preemption.

    The loss is on the assistant turn only.

    One process, or one per GPU under torchrun (as the Slurm job script runs it).
    Reports to Dagster through Pipes when Dagster started it.
    """
    from t0_pipeline.trackers import run_name
    from t0_pipeline.training.model_card import card_context
    from t0_pipeline.training.ranks import rank
    from t0_pipeline.training.report import dagster_reporter
    from t0_pipeline.training.train import run_train

    cfg, paths = setup(
        data_dir,
        config,
        sets=sets,
        flags={
            "train.model": model,
            "train.dataset": dataset,
            "train.output_dir": output_dir,
            "train.max_steps": max_steps,
            "train.deepspeed": deepspeed,
            "train.lora.enabled": True if lora else None,
        },
    )
    t = cfg.train
    if model is None and partition in t.sizes:
        t.model = t.sizes[partition]
    elif model in cfg.base_models:  # a base_models entry's name stands for its folder
        t.model = str(paths.base_model(model).resolve())
    card = card_context(cfg, partition if partition != "default" else None, t.model)
    with dagster_reporter() as report:
        report.info(f"training {t.model} for partition {partition}")
        name = run_name(card.size, report.run_id)
        result = run_train(paths, t, partition, report.callbacks(), card, name)
        report.finished(result, t)
    if rank() != 0:
        return
    if result.preempted:
        typer.echo(f"stopped at step {result.global_step} with a checkpoint; run again to resume")
        return
    last = result.eval_loss[-1][1] if result.eval_loss else float("nan")
    typer.echo(
        f"{result.global_step} steps on {result.train_examples} examples (held out "
        f"{result.eval_examples}) by {result.world_size} process(es), DeepSpeed "
        f"{result.deepspeed or 'off'}, {result.loss} loss; train loss "
        f"{result.train_loss[0][1]:.3f} → {result.train_loss[-1][1]:.3f}, held-out {last:.3f}; "
        f"{result.tokens_per_second_per_gpu:.0f} tokens/s per device"
        + (f", MFU {result.mfu:.1%}" if result.mfu is not None else "")
        + f" → {result.final_dir}"
    )


@app.command("export")
def export(
    size: str = typer.Option(
        ..., "--size", help="The trained size to hand on (a train.sizes key)."
    ),
    to: Path = typer.Option(..., "--to", help="A new (or empty) folder to write it into."),
    push: Optional[str] = typer.Option(
        None, "--push", help="Also upload it to this private hub repository (owner/name)."
    ),
    hub_url: Optional[str] = typer.Option(
        None, "--hub-url", help="The hub to push to (default $HF_ENDPOINT, else huggingface.co)."
    ),
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    sets: Optional[list[str]] = SetOpt,
):
    """Copy a trained student, with its model card, into a folder that loads on its own.

    The folder holds the weights, the tokenizer and chat template, generation_config.json (the
    budget-forcing settings), README.md (the model card) and loss.png; plain from_pretrained
    loads it. --push also uploads it to a private repository on a Hugging Face hub ($HF_TOKEN).
    """
    from t0_pipeline.training.export import export_student
    from t0_pipeline.training.export import push as push_folder

    cfg, paths = setup(data_dir, config, sets=sets)
    if size not in cfg.train.sizes:
        raise T0Error(f"no size {size!r} in train.sizes ({', '.join(cfg.train.sizes)}).")
    done = export_student(paths.student_dir(size) / "final", to)
    for name, size_bytes in done.files:
        typer.echo(f"  {name:<28} {size_bytes / 1e6:9.2f} MB")
    typer.echo(
        f"exported {size} (weights {done.weights}) → {done.folder}"
        + ("" if done.evaluated else "; its card has no evaluation yet (run the evaluation)")
    )
    if push:
        typer.echo(f"pushed to {push_folder(done.folder, push, hub_url)}")


_EVALUATE_MODEL = typer.Option(
    [], "--model", help="A name from evaluation.models (repeat for several); see `t0 config`."
)
_EVALUATE_QUERIES = typer.Option(
    None,
    help="Query file (.jsonl/.parquet with query, slug, disposition); default: the synthetic "
    "evaluation set.",
)
_EVALUATE_RUNS = typer.Option(
    None, help="Repeated runs per model and k (default 10); seeds recorded."
)
_EVALUATE_KS = typer.Option(
    None, help="Comma-separated k values (default 0,5; 0 = list every condition)."
)
_EVALUATE_MAX_QUERIES = typer.Option(None, help="Evaluate only the first n queries (smoke test).")
_EVALUATE_API_BASE = typer.Option(
    None,
    help="Use the server already running here for every --model given instead of starting one "
    "(models with a serve section).",
)


@app.command()
def evaluate(
    model: list[str] = _EVALUATE_MODEL,
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    queries: Optional[Path] = _EVALUATE_QUERIES,
    runs: Optional[int] = _EVALUATE_RUNS,
    ks: Optional[str] = _EVALUATE_KS,
    max_queries: Optional[int] = _EVALUATE_MAX_QUERIES,
    api_base: Optional[str] = _EVALUATE_API_BASE,
    sets: Optional[list[str]] = SetOpt,
):
    """Condition and disposition accuracy of the given models (cached per model, prompt and seed).

    A model with a serve section (the base and student of every train.sizes entry) gets its own
    server on this machine for the run (servers.command, vLLM by default), stopped afterwards; its
    log is under <data>/servers/. Others are reached at their api_base.
    """
    from t0_pipeline.evaluation.accuracy import model_settings, run_served_evaluation
    from t0_pipeline.evaluation.cases import EvaluationInputs
    from t0_pipeline.evaluation.tables import fmt
    from t0_pipeline.servers.model_server import local_servers

    if runs is not None and runs < 1:
        raise T0Error("--runs must be at least 1.")
    cfg, paths = setup(
        data_dir,
        config,
        sets=sets,
        flags={
            "evaluation.queries": queries,
            "evaluation.runs": runs,
            "evaluation.max_queries": max_queries,
            "evaluation.ks": sorted(set(int_list(ks, "--ks", "0,5"))) if ks is not None else None,
        },
    )
    if not model:
        raise T0Error(f"name at least one --model; configured: {', '.join(cfg.evaluation.models)}.")
    ev = cfg.evaluation
    for name in model:
        entry = model_settings(ev, name)
        if api_base:
            entry.api_base, entry.serve = api_base, None
        _, summary = run_served_evaluation(
            paths,
            EvaluationInputs.resolve(cfg, paths),
            name,
            local_servers(cfg.servers, paths, typer.echo),
        )
        for k, s in summary["by_k"].items():
            typer.echo(
                f"{name} k={k}: condition {fmt(s.get('condition_accuracy'))}, disposition "
                f"{fmt(s.get('disposition_accuracy'))} ({summary['queries']} queries × "
                f"{summary['runs']} runs)"
            )
        typer.echo(f"  notes: {'; '.join(summary['notes']) or 'none'}")
        typer.echo(f"  {usage_line(summary['usage'])} → {paths.accuracy_dir(name)}")


@app.command("accuracy-report")
def accuracy_report(
    data_dir: Optional[Path] = DataDir,
    config: Optional[Path] = ConfigFile,
    sets: Optional[list[str]] = SetOpt,
):
    """Combine every evaluated model into one table and the accuracy-by-size plot.

    Writes report.md and report.csv under <data>/eval/accuracy/.
    """
    from t0_pipeline.evaluation.tables import combine

    cfg, paths = setup(data_dir, config, sets=sets)
    evaluated = any(paths.accuracy_dir().glob("*/summary.json"))
    report = combine(paths, cfg.evaluation) if evaluated else None  # it writes the report
    if report is None or not report.models:
        raise T0Error(
            f"no evaluated models under {paths.accuracy_dir()}; run `t0 evaluate --model NAME` "
            "first."
        )
    typer.echo(report.markdown)
    typer.echo(f"csv: {report.csv}\nplot: {report.png}")
