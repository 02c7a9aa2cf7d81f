"""What travels with a student checkpoint: ``final/README.md`` in the Hugging Face model card form,
``generation_config.json`` holding how the student is asked, and ``loss.png``.

- :func:`card_context`: what the card needs from the pipeline config (the size, the base model's
  public name, the task, the corpus licence, the chat format and the thinking budget), resolved
  once where training starts (``t0 train``) and handed to the trainer;
- :func:`model_card`: the card, written when training saves ``final/`` (front matter with
  ``base_model``, ``library_name``, tags and the corpus licence; the data with its counts and
  digest, the teacher, the settings, how to use it, intended use and limitations). Its evaluation
  section is filled by :func:`record_evaluation` once the evaluation has run for these very
  weights (their digest is compared), and says "not evaluated yet" until then;
- :func:`generation_settings`: the turn end as ``eos_token_id``, a ``max_new_tokens`` that fits
  the thinking budget and the answer, and the budget-forcing settings under ``t0_budget_forcing``,
  so plain transformers or vLLM stop where the pipeline does;
- :func:`loss_plot`: training and held-out loss by step.

No path of the machine goes into a card: models are named by
:func:`t0_pipeline.servers.base_models.public_name`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from t0_pipeline.cards import Provenance, front_matter
from t0_pipeline.chat import ChatFormat
from t0_pipeline.config.models import BudgetConfig

if TYPE_CHECKING:
    from t0_pipeline.config import TrainConfig
    from t0_pipeline.training.result import TrainResult

EVALUATION_START, EVALUATION_END = "<!-- t0:evaluation -->", "<!-- /t0:evaluation -->"
NOT_EVALUATED = (
    "Not evaluated yet for these weights: materialise `accuracy_report` for this student (or run "
    "`t0 evaluate --model {entry}`); the evaluation fills in this section."
)


class CardContext(BaseModel):
    """What a student's card says that training alone does not know."""

    size: str | None = None
    base_model: str = ""  # the public name, never a path
    facts: Provenance = Field(default_factory=Provenance)
    chat_format: dict[str, Any] = Field(default_factory=lambda: ChatFormat().model_dump())
    # the student's evaluation budget, markers filled in
    budget: dict[str, Any] | None = Field(
        default_factory=lambda: BudgetConfig().with_format(ChatFormat()).model_dump()
    )
    entry: str = "t0-student"  # the student's evaluation.models entry

    def tracked(self) -> dict[str, Any]:
        """What the trackers log beside the training settings."""
        return {
            "size": self.size or "",
            "base_model": self.base_model,
            "domain": self.facts.domain,
            "budget": self.budget or {},
        }


def card_context(cfg, size: str | None, model: str) -> CardContext:
    """From a pipeline config (base_models names already standing for their folders)."""
    from t0_pipeline.cards import provenance
    from t0_pipeline.config.models import student_entry_name
    from t0_pipeline.servers.base_models import public_name

    entry = student_entry_name(size) if size else "t0-student"
    settings = cfg.evaluation.models.get(entry)
    budget = (settings.budget if settings and settings.budget else BudgetConfig()).with_format(
        cfg.chat_format
    )
    return CardContext(
        size=size,
        base_model=public_name(model) or model,
        facts=provenance(cfg),
        chat_format=cfg.chat_format.model_dump(),
        budget=budget.model_dump(),
        entry=entry,
    )


def _link(name: str) -> str:
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return f"[{name}](https://huggingface.co/{name})"
    return f"`{name}`"


def _data_rows(data: dict[str, Any] | None, config: TrainConfig, result: TrainResult) -> list[str]:
    rows = []
    if data:
        traces = data["traces"]
        rejected = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in traces["rejected"].items())
        rows += [
            f"| SFT dataset | {data['examples']} examples, sha256 `{data.get('sha256', 'n/a')}` |",
            f"| teacher | {', '.join(data['teacher']) or 'n/a'} |",
            f"| traces | {traces['generated']} generated over {traces['queries']} training "
            f"queries, {traces['kept']} kept; rejected: {rejected or 'none'} |",
        ]
    rows += [
        f"| split | {result.train_examples} training, {result.eval_examples} held out for the loss "
        f"(train.eval_fraction {config.eval_fraction}); {result.skipped_examples} left out "
        f"(longer than {config.block} tokens, or no answer) |",
    ]
    return rows


def _training_rows(config: TrainConfig, result: TrainResult, weights: str | None) -> list[str]:
    first = result.train_loss[0][1] if result.train_loss else None
    last = result.train_loss[-1][1] if result.train_loss else None
    held = result.eval_loss[-1][1] if result.eval_loss else None
    loss = f"{first:.3f} → {last:.3f}" if first is not None else "n/a"
    return [
        f"| steps | {result.global_step} (epochs {config.epochs:g}"
        + (f", max_steps {config.max_steps}" if config.max_steps > 0 else "")
        + ") |",
        f"| learning rate | {config.learning_rate:g}, {config.lr_scheduler}, warmup "
        f"{config.warmup_ratio:.0%} |",
        f"| batch | {config.per_device_batch_size} × {config.gradient_accumulation_steps} "
        f"(accumulation) per process × {result.world_size} process(es) |",
        f"| block | {config.block} tokens |",
        f"| optimiser | AdamW, betas {config.adam_beta1}/{config.adam_beta2}, weight decay "
        f"{config.weight_decay:g} |",
        f"| LoRA | {'r ' + str(config.lora.r) if config.lora.enabled else 'off (all weights)'} |",
        f"| loss ({result.loss}) | training {loss}; held-out "
        f"{f'{held:.3f}' if held is not None else 'n/a'} (the curve: `loss.png`) |",
        f"| hardware | {result.world_size} process(es) on {result.gpu or result.device}, "
        f"DeepSpeed {result.deepspeed or 'off'}, {result.tokens_per_second_per_gpu:g} tokens/s "
        "per device |",
        f"| weights | `{weights or 'n/a'}` (config.json and weight files; what evaluations name) |",
    ]


def _usage(ctx: CardContext, name: str) -> list[str]:
    fmt, budget = ctx.chat_format or {}, ctx.budget or {}
    think_start, think_end = fmt.get("think_start", ""), fmt.get("think_end", "")
    turn = f"{think_start}{{thinking}}\n{think_end}{fmt.get('answer_start', '')}{{answer}}"
    return [
        "It reads a system turn with the instructions and the retrieved documents, then the "
        "asker's details and message, and writes its assistant turn in the format it was trained "
        "on:",
        "",
        "```text",
        turn,
        "```",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        f'model = AutoModelForCausalLM.from_pretrained("{name}")',
        "messages = [  # as in training: instructions and documents, then the message",
        '    {"role": "system", "content": "…"},',
        '    {"role": "user", "content": "…"},',
        "]",
        "prompt = tokenizer.apply_chat_template(messages, tokenize=False, "
        f"add_generation_prompt=True) + {think_start!r}",
        'inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)',
        "reply = model.generate(**inputs)[0][inputs['input_ids'].shape[1]:]",
        "print(tokenizer.decode(reply))",
        "```",
        "",
        f"`generation_config.json` ends generation at the turn end and allows "
        f"{budget.get('thinking_budget', 'n/a')} tokens of thinking plus "
        f"{budget.get('answer_tokens', 'n/a')} of answer. The pipeline evaluates and serves "
        f"it with budget forcing (s1): thinking is cut at the budget, an early end is replaced by "
        f"{budget.get('wait_text', 'Wait')!r} up to {budget.get('max_waits', 0)} time(s), then "
        f"{think_end!r} is forced and the answer written; those settings are in "
        "`generation_config.json` under `t0_budget_forcing`.",
    ]


def model_card(
    ctx: CardContext,
    config: TrainConfig,
    result: TrainResult,
    data: dict[str, Any] | None,
    weights: str | None = None,
) -> str:
    """The card of a freshly trained ``final/`` (``data``: the SFT dataset's ``dataset.json``;
    ``weights``: the checkpoint's digest)."""
    facts = ctx.facts
    name = f"t0-{ctx.size}" if ctx.size else "t0-student"
    head = {
        "base_model": ctx.base_model,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        **facts.front_matter(),
        "language": ["en"],
        "tags": ["t0-pipeline", "reasoning", "retrieval-augmented-generation", "sft", facts.domain],
    }
    lines = [
        front_matter(head),
        f"# {name} ({facts.domain})",
        "",
        f"A retrieval-augmented reasoning student fine-tuned from {_link(ctx.base_model)} on a "
        "teacher's reasoning over retrieved documents, by t0-pipeline: supervised fine-tuning "
        "(s1-style), the loss on the assistant turn (thinking and answer) only.",
        *([f"\n> **Stand-in.** {facts.stand_in}"] if facts.stand_in else []),
        "",
        "## Training data",
        "",
        "| | |",
        "|---|---|",
        f"| task (domain) | {facts.domain} |",
        *_data_rows(data, config, result),
        f"| corpus licence | {facts.licence_words()} |",
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        *_training_rows(config, result, weights),
        "",
        "## How to use",
        "",
        *_usage(ctx, name),
        "",
        "## Evaluation",
        "",
        EVALUATION_START,
        NOT_EVALUATED.format(entry=ctx.entry),
        EVALUATION_END,
        "",
        "## Intended use",
        "",
        facts.use,
        "",
        "## Limitations",
        "",
        f"- {facts.caution}",
        "- It knows the documents it is shown, not the world: an answer outside them is a guess.",
        "- Trained and evaluated on synthetic messages a model wrote from the same documents; real "
        "messages are harder (measure on your own before relying on any figure here).",
        "",
    ]
    return "\n".join(lines)


def evaluation_section(summary: dict[str, Any], base: dict[str, Any] | None) -> str:
    """The evaluation section's text: the student's accuracy at every k evaluated, with its base's
    beside it when the base was evaluated on the same queries."""
    from t0_pipeline.task.figures import fmt, labels

    topic, answer = labels(summary)
    rows = [(summary, "this model")]
    if base and base.get("queries_hash") == summary.get("queries_hash"):
        rows.append((base, "its base"))
    lines = [
        f"{summary['queries']} evaluation queries (hash `{summary['queries_hash']}`), "
        f"{summary['runs']} run(s), scoring {summary.get('scoring', 'tolerant')}, weights "
        f"`{summary.get('weights')}`; k = documents retrieved into the prompt (0: none, every "
        "topic listed). Mean ± std over runs.",
        "",
        f"| model | k | {topic} accuracy | {answer} accuracy |",
        "|---|---|---|---|",
    ]
    for entry, role in rows:
        for k, stats in entry["by_k"].items():
            lines.append(
                f"| {entry['model']} ({role}) | {k} | {fmt(stats.get('condition_accuracy'))} | "
                f"{fmt(stats.get('disposition_accuracy'))} |"
            )
    return "\n".join(lines)


def record_evaluation(final_dir: Path, summary: dict[str, Any], base: dict | None) -> bool:
    """Write the evaluation into ``final_dir/README.md`` when ``summary`` was made with these very
    weights; False (and the card unchanged) otherwise."""
    from t0_pipeline.weights import weights_digest

    card = Path(final_dir) / "README.md"
    if not card.is_file() or summary.get("weights") != weights_digest(final_dir):
        return False
    text = card.read_text(encoding="utf-8")
    start, end = text.find(EVALUATION_START), text.find(EVALUATION_END)
    if start < 0 or end < start:
        return False
    body = evaluation_section(summary, base)
    updated = f"{text[: start + len(EVALUATION_START)]}\n{body}\n{text[end:]}"
    tmp = card.with_suffix(".md.tmp")
    tmp.write_text(updated, encoding="utf-8")
    tmp.replace(card)
    return True


def refresh_cards(paths, evaluation, name: str) -> list[Path]:
    """After the evaluation of ``name`` (an ``evaluation.models`` entry): the evaluation section
    of every trained student it concerns (itself, or the students whose base it is); the cards
    updated."""
    from t0_pipeline.artifacts import read_json

    def summary_of(entry: str | None) -> dict | None:
        path = paths.accuracy_dir(entry) / "summary.json" if entry else None
        return read_json(path) if path is not None and path.is_file() else None

    updated = []
    for entry, settings in evaluation.models.items():
        if settings is None or not settings.student or name not in (entry, settings.base):
            continue
        final = paths.student_dir(settings.student) / "final"
        summary = summary_of(entry)
        if summary and record_evaluation(final, summary, summary_of(settings.base)):
            updated.append(final / "README.md")
    return updated


def generation_settings(ctx: CardContext, tokenizer) -> dict[str, Any]:
    """``generation_config.json`` fields: where generation ends and the budget it is asked with."""
    budget = ctx.budget or {}
    enders = [tokenizer.eos_token_id]
    for token in ("<|im_end|>", "<|endoftext|>"):
        ids = tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        if isinstance(ids, int) and ids not in enders:
            enders.append(ids)
    markers = len(tokenizer(budget.get("think_end") or "", add_special_tokens=False)["input_ids"])
    total = budget.get("thinking_budget", 1024) + budget.get("answer_tokens", 256) + markers + 2
    return {
        "eos_token_id": [e for e in enders if e is not None],
        "max_new_tokens": total,
        "t0_budget_forcing": budget,  # with the markers (the chat format's unless set)
    }


def write_generation_config(folder: Path, ctx: CardContext, tokenizer) -> None:
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(str(folder))
    except OSError:
        config = GenerationConfig()
    for key, value in generation_settings(ctx, tokenizer).items():
        setattr(config, key, value)
    # a config marked as made from the model's config is rebuilt from it on load, losing ours
    config._from_model_config = False
    config.save_pretrained(str(folder))


def loss_plot(result: TrainResult, path: Path, title: str) -> Path | None:
    """Training and held-out loss by step as a PNG; None when nothing was logged."""
    if not result.train_loss:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    steps, losses = zip(*result.train_loss)
    ax.plot(steps, losses, label="training", linewidth=1.4)
    if result.eval_loss:
        steps, losses = zip(*result.eval_loss)
        ax.plot(steps, losses, "o-", label="held-out", linewidth=1.4)
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def read_dataset_info(dataset: Path) -> dict[str, Any] | None:
    """The SFT dataset's ``dataset.json`` beside its Parquet file, if it has one."""
    try:
        return json.loads((Path(dataset).parent / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
