"""Cards that travel with what the pipeline makes, in the Hugging Face card form (YAML front
matter, then Markdown): the SFT dataset's ``README.md`` (:func:`dataset_card`; ``dataset.json``
beside it holds the same facts for programs) and every student checkpoint's ``final/README.md``
(:mod:`t0_pipeline.training.model_card`).

A card names models by their public names (:func:`t0_pipeline.servers.base_models.public_name`),
never by a path of the machine that made them. What the cards say about the task and its documents
(the domain, the corpus's licence, whether stand-in models made the data) is resolved once from the
pipeline config where a stage starts (:func:`provenance`) and handed to the stage."""

from __future__ import annotations

from typing import Any

import polars as pl
import yaml
from pydantic import BaseModel, Field

# licences the Hugging Face hub knows by id; any other is written as license: other + its name
HUB_LICENCES = {
    "apache-2.0",
    "mit",
    "bsd-3-clause",
    "cc0-1.0",
    "cc-by-4.0",
    "cc-by-sa-4.0",
    "cc-by-nc-4.0",
    "cc-by-nc-sa-4.0",
    "gpl-3.0",
    "odc-by",
    "unknown",
}

# a rejected trace's first failed filter, in the order traces.keep applies them
REJECTIONS = (
    ("failed", "the teacher's call failed"),
    ("no_thinking", "no thinking"),
    ("unparsable_or_outside", "no readable answer, or a topic outside the documents shown"),
    ("wrong_topic", "wrong topic"),
    ("wrong_answer", "right topic, wrong category"),
)


def _passage(name: str) -> str:
    from t0_pipeline.domain import default_domain

    return default_domain().words()[name]


class Provenance(BaseModel):
    """What every card says about the task and the documents a model or dataset came from."""

    domain: str = "nhs-triage"
    use: str = Field(default_factory=lambda: _passage("card_use"))  # the domain's
    caution: str = Field(default_factory=lambda: _passage("card_caution"))
    licence: str = "unknown"
    licence_link: str | None = None
    # why no figure is the method's result (bundled tiny models made the data), or None
    stand_in: str | None = None

    def front_matter(self) -> dict[str, Any]:
        if self.licence in HUB_LICENCES:
            return {"license": self.licence}
        fields = {"license": "other", "license_name": self.licence}
        if self.licence_link:
            fields["license_link"] = self.licence_link
        return fields

    def licence_words(self) -> str:
        if self.licence == "unknown":
            return "unknown (set source.license)"
        return f"{self.licence} ({self.licence_link})" if self.licence_link else self.licence


STAND_IN = (
    "Made with small bundled models ({names}) standing in for the method's larger ones: every "
    "artefact is real, but no figure here is the method's result."
)


def provenance(cfg) -> Provenance:
    """The cards' facts from a pipeline config (a :class:`t0_pipeline.config.PipelineConfig`)."""
    from t0_pipeline.corpus.sites import get_adapter

    source = cfg.source
    licence, link = source.license, source.license_link
    if licence is None and source.kind in ("sample", "site"):
        adapter = get_adapter(source.adapter)
        licence, link = adapter.license, link or adapter.license_link
    words = cfg.domain_spec.words()
    bundled = [
        str(v).removeprefix("bundled:")
        for v in (cfg.base_models or {}).values()
        if str(v).startswith("bundled:")
    ]
    return Provenance(
        domain=cfg.domain_spec.name,
        use=words["card_use"],
        caution=words["card_caution"],
        licence=licence or "unknown",
        licence_link=link,
        stand_in=STAND_IN.format(names=", ".join(bundled)) if bundled else None,
    )


def front_matter(fields: dict[str, Any]) -> str:
    return "---\n" + yaml.safe_dump(fields, sort_keys=False, allow_unicode=True) + "---\n"


def read_front_matter(text: str) -> dict[str, Any]:
    """A card's YAML front matter ({} without one)."""
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---\n", 4)
    return yaml.safe_load(text[4:end]) or {} if end > 0 else {}


def rejection_counts(traces: pl.DataFrame) -> dict[str, int]:
    """Rejected traces by the first filter each failed (the order of ``traces.keep``), so the counts
    add up to the rejected total whatever the keep policy was."""
    counts = dict.fromkeys((key for key, _ in REJECTIONS), 0)
    for row in traces.filter(~pl.col("kept")).iter_rows(named=True):
        if row["error"]:
            counts["failed"] += 1
        elif not (row["thinking"] or "").strip():
            counts["no_thinking"] += 1
        elif not (row["parsable"] and row["condition_in_retrieved"]):
            counts["unparsable_or_outside"] += 1
        elif not row["correct_condition"]:
            counts["wrong_topic"] += 1
        else:
            counts["wrong_answer"] += 1
    return counts


def dataset_info(
    stats: dict[str, Any],
    traces: pl.DataFrame,
    facts: Provenance,
    tokenizer: str | None,
    eval_queries: int | None = None,
) -> dict[str, Any]:
    """``dataset.json``: what the SFT dataset is and what made it (the card is written from it)."""
    column = (lambda name: sorted(set(traces[name].drop_nulls()))) if traces.height else None
    return {
        "examples": stats["examples"],
        "traces": {
            "generated": stats["traces"],
            "queries": traces["id"].n_unique() if traces.height else 0,
            "kept": stats["kept_traces"],
            "rejected": rejection_counts(traces) if traces.height else {},
        },
        "overlong": {
            "block_size": stats["block_size"],
            "dropped": stats["dropped_overlong"],
            "truncated": stats["truncated_overlong"],
        },
        "tokens": {k: stats[f"tokens_{k}"] for k in ("mean", "p50", "max")},
        "token_counts": stats["token_counts"],
        "evaluation_queries": eval_queries,
        "teacher": column("model") if column else [],
        "teacher_prompt_hashes": column("prompt_hash") if column else [],
        "student_prompt_hash": stats["student_prompt_hash"],
        "tokenizer": tokenizer,
        "chat_format": stats["chat_format"],
        "provenance": facts.model_dump(),
    }


def dataset_card(info: dict[str, Any], overlong_policy: str) -> str:
    facts = Provenance(**info["provenance"])
    traces, overlong, fmt = info["traces"], info["overlong"], info["chat_format"]
    teacher = ", ".join(info["teacher"]) or "n/a"
    head = {
        **facts.front_matter(),
        "pretty_name": f"t0 SFT dataset ({facts.domain})",
        "task_categories": ["text-generation"],
        "tags": ["t0-pipeline", "sft", "reasoning", "retrieval-augmented-generation", facts.domain],
        "size_categories": ["n<1K" if info["examples"] < 1000 else "1K<n<10K"],
    }
    rejected = traces["rejected"]
    lines = [
        front_matter(head),
        f"# t0 SFT dataset ({facts.domain})",
        "",
        "Chat examples for supervised fine-tuning of a retrieval-augmented reasoning student: a "
        "system turn with the instructions and the retrieved documents, the asker's message, "
        "and the teacher's thinking and answer.",
        *([f"\n> **Stand-in.** {facts.stand_in}"] if facts.stand_in else []),
        "",
        "## How it was made",
        "",
        "| | |",
        "|---|---|",
        "| lineage | `synthetic_queries` (training split) → `reasoning_traces` → `sft_dataset` |",
        f"| teacher | {teacher} (prompt hash "
        f"{', '.join(info['teacher_prompt_hashes']) or 'n/a'}) |",
        f"| queries | {traces['queries']} training queries"
        + (
            f"; the {info['evaluation_queries']} evaluation queries are a separate split, "
            "never trained on"
            if info.get("evaluation_queries")
            else ""
        )
        + " |",
        f"| traces generated | {traces['generated']} |",
        f"| traces kept | {traces['kept']} |",
        *(f"| rejected: {words} | {rejected.get(key, 0)} |" for key, words in REJECTIONS),
        f"| over the block ({overlong['block_size']} tokens) | {overlong['dropped']} dropped, "
        f"{overlong['truncated']} truncated (policy: {overlong_policy}) |",
        f"| examples | {info['examples']} |",
        f"| tokens per example | mean {info['tokens']['mean']}, median {info['tokens']['p50']}, "
        f"max {info['tokens']['max']} ({info['token_counts']}) |",
        f"| tokenizer and chat template | {info['tokenizer'] or 'built-in ChatML'} |",
        f"| student prompt | `prompts/triage.txt` (hash {info['student_prompt_hash']}), the "
        "form evaluation uses at k > 0 |",
        f"| assistant turn | {fmt['think_start']!r} thinking {fmt['think_end']!r}"
        f"{fmt['answer_start']!r} answer |",
        "| split | all examples are training data; the trainer holds out its own share "
        "(train.eval_fraction) for the held-out loss |",
        f"| corpus licence | {facts.licence_words()} |",
        "",
        "Columns: `id`, `messages` (JSON list of role/content), `text` (the rendered chat), "
        "`n_tokens`. The trainer masks everything but the assistant turn; nothing is masked here.",
        "",
        "## Use and limits",
        "",
        facts.use,
        "",
        facts.caution,
        "",
    ]
    return "\n".join(lines)
