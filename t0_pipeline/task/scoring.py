"""Scoring condition and disposition predictions (report, Tables 2-4).

Pure functions: parse a model's free-text answer tolerantly, validate tool-call arguments,
score one prediction against its gold labels, and summarise runs (mean ± std over runs,
by query type, the severity confusion matrix and the share of under- and over-estimates).

Scoring rules: the condition is correct when it is the gold condition, or when the model
says "inconclusive" and the gold condition was *not* among the documents it was shown.
Unparsable answers, conditions outside the allowed list and severities outside the three
are counted in their own columns, never dropped.

Two ways to read an answer (``evaluation.scoring``):
- ``reference`` (default; as the report scored): the *first* "(condition, level)" pair of a text
  answer, a level of care written exactly as one of the three, and exactly one call of the submit
  tool (none, or several, is a failed answer: ``no_tool_call``, ``several_tool_calls``).
- ``tolerant``: the *last* pair, level synonyms ("self care", "emergency", "ae"), a missing tool
  call read from the reply's text, the last of several calls. Kinder to weak models; not
  comparable with the report's tables.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

from t0_pipeline.domain import Domain, default_domain
from t0_pipeline.llm.thinking import split_thinking


@dataclass(frozen=True)
class Scale:
    """A domain's answer categories, least to most urgent, and the spellings tolerant scoring
    reads as each (its name and aliases, any case, with or without spaces)."""

    names: tuple[str, ...]
    words: dict[str, str]

    @classmethod
    def of(cls, domain: Domain | None = None) -> "Scale":
        domain = domain or default_domain()
        words: dict[str, str] = {}
        for category in domain.categories:
            for spelling in (category.name, *category.aliases):
                key = re.sub(r"\s+", " ", spelling.strip().lower())
                words.setdefault(key, category.name)
                words.setdefault(key.replace(" ", ""), category.name)
        return cls(domain.category_names, words)

    def rank(self, name: str | None) -> int | None:
        return self.names.index(name) if name in self.names else None

    def normalise(self, text: str | None, tolerant: bool = True) -> str | None:
        """One of :attr:`names`, or None. Not ``tolerant``: only the exact words (spaces around
        them aside)."""
        if not text:
            return None
        if not tolerant:
            return text.strip() if text.strip() in self.names else None
        key = re.sub(r"\s+", " ", text.strip().strip("\"'*`.").lower())
        return self.words.get(key) or self.words.get(key.replace(" ", ""))


DEFAULT_SCALE = Scale.of()
SEVERITIES = DEFAULT_SCALE.names  # the default domain's levels of care, least to most urgent
SCORING_MODES = ("reference", "tolerant")


def normalise_severity(
    text: str | None, tolerant: bool = True, scale: Scale | None = None
) -> str | None:
    """One of the scale's categories (default: the NHS levels of care), or None."""
    return (scale or DEFAULT_SCALE).normalise(text, tolerant)


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9&]+", " ", text.lower()).strip()


@dataclass
class Prediction:
    condition: str | None  # a slug, "inconclusive", or None
    severity: str | None
    status: str  # ok | empty | unparsable | unknown_condition | bad_severity | failed
    raw: str = ""


def resolve_condition(text: str, allowed: dict[str, str]) -> str | None:
    """A slug for a condition named by title or slug (any case, stray quotes); "inconclusive"; or
    None.

    ``allowed`` maps slug → title.
    """
    key = _key(text.strip().strip("\"'*`"))
    if key == "inconclusive":
        return "inconclusive"
    for slug, title in allowed.items():
        if key in (_key(slug), _key(title)):
            return slug
    return None


def parse_answer_text(
    text: str | None, allowed: dict[str, str], tolerant: bool = True, scale: Scale | None = None
) -> Prediction:
    """The "(condition, severity)" after any thinking: the last pair and level synonyms when
    ``tolerant``, else the first pair and exact levels (the reference's reading). Brackets inside
    titles are allowed."""
    if text is None or not text.strip():
        return Prediction(None, None, "empty", text or "")
    _, answer = split_thinking(text)
    pairs = answer_pairs(answer or text)
    if not pairs:
        return Prediction(None, None, "unparsable", text)
    condition, severity = pairs[-1] if tolerant else pairs[0]
    return judge(condition, severity, allowed, text, tolerant, scale)


def last_answer_pair(answer: str) -> tuple[str, str] | None:
    """(condition text, severity text) of the last "(…, …)" in ``answer``."""
    pairs = answer_pairs(answer)
    return pairs[-1] if pairs else None


def answer_pairs(answer: str) -> list[tuple[str, str]]:
    """Every (condition text, severity text) written as "(…, …)" in ``answer``, in order; a title
    may hold brackets of its own ("(Stroke (mini, TIA), A&E)" is one pair, not two)."""
    spans: list[tuple[int, int]] = []
    for close in [m.end() for m in re.finditer(r"\)", answer)]:
        depth, i = 0, close - 2
        while i >= 0 and answer[i] != "\n":  # walk back to the bracket that opens this pair
            if answer[i] == ")":
                depth += 1
            elif answer[i] == "(":
                if depth == 0:
                    break
                depth -= 1
            i -= 1
        if i >= 0 and answer[i] == "(" and "," in answer[i + 1 : close - 1]:
            spans.append((i, close))
    outer = [a for a in spans if not any(b != a and b[0] <= a[0] and a[1] <= b[1] for b in spans)]
    pairs = []
    for start, close in outer:
        condition, severity = answer[start + 1 : close - 1].rsplit(",", 1)
        pairs.append((condition.strip().strip("\"'*` "), severity.strip()))
    return pairs


def judge(
    condition_text: str | None,
    severity_text: str | None,
    allowed: dict[str, str],
    raw: str = "",
    tolerant: bool = True,
    scale: Scale | None = None,
) -> Prediction:
    """Validate a (condition, severity) pair from free text or a tool call."""
    condition = resolve_condition(condition_text or "", allowed)
    severity = normalise_severity(severity_text, tolerant, scale)
    if condition is None:
        return Prediction(None, severity, "unknown_condition", raw)
    if severity is None:
        return Prediction(condition, None, "bad_severity", raw)
    return Prediction(condition, severity, "ok", raw)


def score(
    pred: Prediction,
    gold_condition: str,
    gold_severity: str,
    retrieved: list[str] | None,
    scale: Scale | None = None,
) -> dict[str, Any]:
    """Correctness of one prediction; ``retrieved`` None means k=0 (every condition was listed)."""
    inconclusive_ok = (
        pred.condition == "inconclusive"
        and retrieved is not None
        and gold_condition not in retrieved
    )
    error = None
    ours, gold = (
        (scale or DEFAULT_SCALE).rank(pred.severity),
        (scale or DEFAULT_SCALE).rank(gold_severity),
    )
    if ours is not None and gold is not None and ours != gold:
        error = "under" if ours < gold else "over"
    return {
        "condition_correct": pred.condition == gold_condition or inconclusive_ok,
        "disposition_correct": pred.severity == gold_severity,
        "severity_error": error,
        "status": pred.status,
    }


def summarise_runs(rows: list[dict[str, Any]], scale: Scale | None = None) -> dict[str, Any]:
    """Mean ± std over runs, per query type, the confusion matrix and error shares.

    Each row: run, query_type, gold_severity, pred_severity, condition_correct, disposition_correct,
    severity_error, status.
    """
    if not rows:
        return {"queries": 0, "runs": 0, "notes": "empty query set"}
    by_run: dict[Any, list[dict]] = {}
    for row in rows:
        by_run.setdefault(row["run"], []).append(row)

    def mean_std(values: list[float]) -> tuple[float, float]:
        return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)

    def accuracy(subset: list[dict], field: str) -> float:
        return sum(1 for r in subset if r[field]) / len(subset)

    out: dict[str, Any] = {"runs": len(by_run), "queries": len(next(iter(by_run.values())))}
    for field in ("condition", "disposition"):
        out[f"{field}_accuracy"] = mean_std(
            [accuracy(rs, f"{field}_correct") for rs in by_run.values()]
        )
    out["by_query_type"] = {}
    for qtype in sorted({r["query_type"] for r in rows}):
        per_run = [[r for r in rs if r["query_type"] == qtype] for rs in by_run.values()]
        out["by_query_type"][qtype] = {
            f: mean_std([accuracy(rs, f"{f}_correct") for rs in per_run if rs])
            for f in ("condition", "disposition")
        }
    matrix = Counter((r["gold_severity"], r["pred_severity"] or "none") for r in rows)
    names = (scale or DEFAULT_SCALE).names
    out["confusion"] = {
        gold: {pred: matrix.get((gold, pred), 0) for pred in (*names, "none")} for gold in names
    }
    wrong = [r for r in rows if r["severity_error"]]
    out["under_estimate_share"] = (
        sum(1 for r in wrong if r["severity_error"] == "under") / len(wrong) if wrong else 0.0
    )
    out["over_estimate_share"] = (
        sum(1 for r in wrong if r["severity_error"] == "over") / len(wrong) if wrong else 0.0
    )
    out["status_counts"] = dict(Counter(r["status"] for r in rows))
    return out
