"""A person's details, one definition for every stage: what a query writer must give, what a chat
user may give, and the one text the prompts show them as (synthetic queries, traces, evaluation,
serving)."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from t0_pipeline.domain import Domain

# the NHS domain's profile; another domain's fields and choices are in its file (see domain.py)
FIELDS = ("age", "sex", "occupation", "social_support", "medical_history")


class Demographics(BaseModel):
    """Details as a user gives them: each optional, bounded; no other fields."""

    model_config = ConfigDict(extra="forbid")
    age: Optional[int] = Field(None, ge=0, le=130)
    sex: Optional[str] = Field(None, max_length=40)
    occupation: Optional[str] = Field(None, max_length=200)
    social_support: Optional[str] = Field(None, max_length=500)
    medical_history: Optional[str] = Field(None, max_length=2000)


class WrittenDemographics(BaseModel):
    """Details as a synthetic query's writer must give them: every field."""

    # writers may answer "above 80" (as the prompt allows): read as 81
    age: int = Field(ge=0, le=120)
    sex: str
    occupation: str
    social_support: str
    medical_history: str

    @field_validator("age", mode="before")
    @classmethod
    def _age_in_words(cls, value: Any) -> Any:
        if isinstance(value, str):
            found = re.search(r"\d+", value)
            if not found:
                return value  # left to the int check, which names the field
            age = int(found.group())
            return age + 1 if re.search(r"above|over|older|\+", value, re.I) else age
        return value


def known(values: Mapping[str, Any], fields: Sequence[str] = FIELDS) -> dict[str, Any]:
    """The ``fields`` given (not missing, None or empty), in their order (a domain's profile;
    default: the NHS domain's)."""
    return {k: values[k] for k in fields if values.get(k) not in (None, "")}


def demographics_text(values: Mapping[str, Any], fields: Sequence[str] = FIELDS) -> str:
    """The details as the prompts show them: a JSON object of the fields given, or "not given"."""
    given = known(values, fields)
    return json.dumps(given, ensure_ascii=False) if given else "not given"


def user_profile_model(domain: Domain) -> type[BaseModel]:
    """Details as a chat user gives them in ``domain``: each profile field optional, whole numbers
    in the field's range, text bounded, no other fields (NHS: :class:`Demographics`)."""
    if domain.field_names == FIELDS:
        return Demographics
    fields: dict[str, Any] = {
        f.name: (Optional[int], Field(None, ge=f.range[0], le=f.range[1]))
        if f.integer
        else (Optional[str], Field(None, max_length=500))
        for f in domain.profile
    }
    return create_model("Profile", __config__=ConfigDict(extra="forbid"), **fields)


def written_profile_model(domain: Domain) -> type[BaseModel]:
    """What a synthetic query's writer must give about the asker in ``domain``: every profile
    field, whole numbers where the field has a range (read "above 80" as 81), else text. The NHS
    domain's is :class:`WrittenDemographics`."""
    if domain.field_names == FIELDS:
        return WrittenDemographics
    fields: dict[str, Any] = {
        f.name: (int, Field(ge=0, le=max(f.range[1], 120))) if f.integer else (str, ...)
        for f in domain.profile
    }
    validators = {
        f"_{f.name}_in_words": field_validator(f.name, mode="before")(_number_in_words)
        for f in domain.profile
        if f.integer
    }
    return create_model("WrittenProfile", __validators__=validators, **fields)


def _number_in_words(cls, value: Any) -> Any:
    return WrittenDemographics._age_in_words(value)
