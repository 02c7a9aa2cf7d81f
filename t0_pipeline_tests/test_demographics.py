"""One definition of a person's details: the prompt text every stage shows, and the two ways they
are given."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from t0_pipeline.task.demographics import Demographics, WrittenDemographics, demographics_text


def test_the_prompt_text_keeps_given_fields_in_one_order_and_says_when_there_are_none():
    row = {
        "medical_history": "asthma",
        "id": "q1",
        "age": 34,
        "sex": "",
        "occupation": None,
        "query": "...",
    }
    # canonical order, no blanks/others
    assert demographics_text(row) == '{"age": 34, "medical_history": "asthma"}'
    full = {
        "sex": "female",
        "age": 70,
        "occupation": "retired nurse",
        "social_support": "lives alone",
        "medical_history": "None relevant",
    }
    assert list(json.loads(demographics_text(full))) == [
        "age",
        "sex",
        "occupation",
        "social_support",
        "medical_history",
    ]
    assert demographics_text({}) == demographics_text({"age": None, "sex": ""}) == "not given"


def test_a_writer_must_give_every_field_and_may_say_above_80():
    base = {
        "sex": "male",
        "occupation": "baker",
        "social_support": "wife",
        "medical_history": "None relevant",
    }
    assert WrittenDemographics(age="above 80", **base).age == 81
    assert WrittenDemographics(age="45", **base).age == 45
    with pytest.raises(ValidationError, match="occupation"):
        WrittenDemographics(age=50, sex="male", social_support="wife", medical_history="none")


def test_a_user_may_give_some_fields_within_bounds_and_nothing_else():
    assert Demographics(age=30).model_dump(exclude_none=True) == {"age": 30}
    with pytest.raises(ValidationError):
        Demographics(age=200)
    with pytest.raises(ValidationError):
        Demographics(favourite_colour="blue")
