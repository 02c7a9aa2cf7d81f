"""Answer parsing (tolerant and as the reference read answers) and the scoring rules for
condition/disposition accuracy."""

from __future__ import annotations

import pytest

from t0_pipeline.task.scoring import judge, parse_answer_text, score, summarise_runs

ALLOWED = {
    "stroke": "Stroke",
    "urinary-tract-infections": "Urinary tract infections (UTIs)",
    "gout": "Gout",
}


@pytest.mark.parametrize(
    "text, condition, severity, status",
    [
        ("<think>face droop</think>(Stroke, A&E)", "stroke", "A&E", "ok"),
        (
            "I think (gout, self-care) ... final: (Gout, Urgent Primary Care)",
            "gout",
            "Urgent Primary Care",
            "ok",
        ),
        (
            "**(Urinary tract infections (UTIs), Urgent Primary Care)**",
            "urinary-tract-infections",
            "Urgent Primary Care",
            "ok",
        ),
        ('("urinary-tract-infections", "a & e")', "urinary-tract-infections", "A&E", "ok"),
        ("(INCONCLUSIVE, Self care)", "inconclusive", "Self-care", "ok"),
        ("(Migraine, Self-care)", None, "Self-care", "unknown_condition"),
        ("(Stroke, see your GP)", "stroke", None, "bad_severity"),
        ("no idea, sorry", None, None, "unparsable"),
        ("", None, None, "empty"),
        (None, None, None, "empty"),
    ],
)
def test_parse_answer_text(text, condition, severity, status):
    pred = parse_answer_text(text, ALLOWED)
    assert (pred.condition, pred.severity, pred.status) == (condition, severity, status)


@pytest.mark.parametrize(
    "text, condition, severity, status",
    [
        ("<think>face droop</think>(Stroke, A&E)", "stroke", "A&E", "ok"),
        # the first pair, not the last
        (
            "I think (gout, Self-care) ... final: (Gout, Urgent Primary Care)",
            "gout",
            "Self-care",
            "ok",
        ),
        # a title's own brackets are part of it, with or without a comma inside
        (
            "(Urinary tract infections (UTIs), Urgent Primary Care) then (Gout, A&E)",
            "urinary-tract-infections",
            "Urgent Primary Care",
            "ok",
        ),
        ("(Stroke (mini, TIA), A&E)", None, "A&E", "unknown_condition"),
        # levels of care only as written: no synonyms, no other case, no quotes
        ("(INCONCLUSIVE, Self care)", "inconclusive", None, "bad_severity"),
        ('("urinary-tract-infections", "A&E")', "urinary-tract-infections", None, "bad_severity"),
        ("(Stroke, a&e)", "stroke", None, "bad_severity"),
        ("(Stroke, emergency)", "stroke", None, "bad_severity"),
        ("(Gout,  Urgent Primary Care )", "gout", "Urgent Primary Care", "ok"),
        ("no idea, sorry", None, None, "unparsable"),
    ],
)
def test_reference_reading_takes_the_first_pair_and_exact_levels(text, condition, severity, status):
    pred = parse_answer_text(text, ALLOWED, tolerant=False)
    assert (pred.condition, pred.severity, pred.status) == (condition, severity, status)


def test_tool_call_arguments_are_validated_the_same_way():
    assert judge("Stroke", "A&E", ALLOWED).status == "ok"
    assert judge("Heart attack", "A&E", ALLOWED).status == "unknown_condition"
    assert judge("Stroke", "Hospital", ALLOWED).status == "bad_severity"


def test_inconclusive_is_correct_only_when_the_gold_condition_was_not_retrieved():
    pred = parse_answer_text("(inconclusive, A&E)", ALLOWED)
    assert score(pred, "stroke", "A&E", retrieved=["gout", "migraine"])["condition_correct"]
    assert not score(pred, "stroke", "A&E", retrieved=["stroke", "gout"])["condition_correct"]
    # k=0: every condition was listed
    assert not score(pred, "stroke", "A&E", retrieved=None)["condition_correct"]


def test_severity_errors_are_under_or_over_estimates():
    under = score(
        parse_answer_text("(Stroke, Urgent Primary Care)", ALLOWED), "stroke", "A&E", ["stroke"]
    )
    over = score(parse_answer_text("(Gout, A&E)", ALLOWED), "gout", "Self-care", ["gout"])
    assert under["severity_error"] == "under" and over["severity_error"] == "over"
    assert under["condition_correct"] and not under["disposition_correct"]


def test_summary_over_runs_types_and_confusion():
    def row(run, qtype, gold, pred, cond_ok):
        s = score(
            parse_answer_text(f"(Stroke, {pred})" if pred else "??", ALLOWED),
            "stroke" if cond_ok else "gout",
            gold,
            ["stroke"],
        )
        return {"run": run, "query_type": qtype, "gold_severity": gold, "pred_severity": pred, **s}

    rows = [
        row(0, "basic", "A&E", "A&E", True),
        row(0, "downplay", "A&E", "Self-care", True),
        row(1, "basic", "A&E", "A&E", True),
        row(1, "downplay", "A&E", None, False),
    ]
    summary = summarise_runs(rows)
    assert summary["runs"] == 2 and summary["queries"] == 2
    assert summary["condition_accuracy"] == (
        pytest.approx(0.75),
        pytest.approx(0.3535533, rel=1e-5),
    )
    assert summary["by_query_type"]["basic"]["disposition"] == (1.0, 0.0)
    assert summary["confusion"]["A&E"] == {
        "Self-care": 1,
        "Urgent Primary Care": 0,
        "A&E": 2,
        "none": 1,
    }
    assert summary["under_estimate_share"] == 1.0 and summary["status_counts"] == {
        "ok": 3,
        "unparsable": 1,
    }
    assert summarise_runs([]) == {"queries": 0, "runs": 0, "notes": "empty query set"}
