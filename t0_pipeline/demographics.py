"""A person's details, one definition for every stage: what a query writer must give, what a chat
user may give, and the one text the prompts show them as (synthetic queries, traces, evaluation,
serving)."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

FIELDS = ("age", "sex", "occupation", "social_support", "medical_history")

# plausible values a constrained writer picks from (synth_prompt.response_schema): a small model
# given free text invents "occupation: 1901-2022"
OCCUPATION_CHOICES = (
    "Teacher", "Nurse", "Office worker", "Retired", "Student", "Shop assistant", "Builder",
    "Delivery driver", "Cleaner", "Accountant", "Chef", "Unemployed", "Farmer", "Hairdresser",
    "Software developer", "Care worker",
)  # fmt: skip
SUPPORT_CHOICES = (
    "Lives alone", "Lives with partner", "Lives with partner and children", "Lives with parents",
    "Lives with flatmates", "Single parent of two", "Daughter visits daily", "No support network",
)  # fmt: skip
HISTORY_CHOICES = (
    "None relevant", "Asthma, uses an inhaler", "Type 2 diabetes, takes metformin",
    "High blood pressure, takes amlodipine", "Allergic to penicillin", "Eczema",
    "Depression, takes sertraline", "Underactive thyroid, takes levothyroxine",
    "High cholesterol, takes a statin", "Had a heart attack five years ago",
)  # fmt: skip


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


def known(values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields given (not missing, None or empty), in the canonical order."""
    return {k: values[k] for k in FIELDS if values.get(k) not in (None, "")}


def demographics_text(values: Mapping[str, Any]) -> str:
    """The details as the prompts show them: a JSON object of the fields given, or "not given"."""
    given = known(values)
    return json.dumps(given, ensure_ascii=False) if given else "not given"
