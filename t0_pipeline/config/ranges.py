"""The range of every numeric setting, checked whenever a config is built, wherever its values came
from (a file, ``--set``, ``T0_…__…`` variables, a command's flag, the Dagster launchpad).

One table instead of a constraint on each of some eighty fields: a setting is at least 0 unless
named here; counts, sizes, steps, rates and time limits that must be positive are listed in
:data:`POSITIVE`; shares are between 0 and 1; ports between 0 and 65535; a few have their own
range (:data:`OWN`). A field that declares its own bounds (``Field(ge=…)``) keeps them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    low: float | None = 0
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple[float, ...] = ()  # single values allowed outside the range (a sentinel such as -1)

    def holds(self, value: float) -> bool:
        if value in self.also:
            return True
        if value != value:  # NaN
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True

    def words(self) -> str:
        low = f"{'>' if self.low_open else '≥'} {self.low:g}" if self.low is not None else ""
        high = f"{'<' if self.high_open else '≤'} {self.high:g}" if self.high is not None else ""
        said = " and ".join(p for p in (low, high) if p)
        return " or ".join([*(f"{a:g}" for a in self.also), said]) if self.also else said


ANY = Range(low=None)
AT_LEAST_0 = Range()
ABOVE_0 = Range(low_open=True)
SHARE = Range(0, 1)
PORT = Range(0, 65535)

# must be above 0
POSITIVE = {
    "learning_rate",
    "epochs",
    "max_attempts",
    "model_attempts",
    "concurrency",
    "batch_size",
    "per_device_batch_size",
    "gradient_accumulation_steps",
    "max_tokens",
    "answer_tokens",
    "runs",
    "eval_steps",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "block_size",
    "max_page_bytes",
    "max_request_bytes",
    "max_message_chars",
    "context_tokens",
    "max_words",
    "max_sentences",
    "max_page_chars",
    "max_pages",
    "max_pairs",
    "max_queries",
    "max_model_len",
    "tensor_parallel_size",
    "requests_per_minute",
    "chunk_oversample",
    "size",
    "r",
    "alpha",
    "deadline_s",
    "max_file_mb",
}

# their own ranges, by field name or Class.field
OWN = {
    "seed": AT_LEAST_0,
    "min_gain": ANY,  # a tuned retriever may be asked to beat the current one by less than 0
    "max_steps": Range(1, also=(-1,)),  # -1: epochs decide
    "top_p": Range(0, 1, low_open=True),
    "temperature": Range(0, 2),
    "dropout": Range(0, 1, high_open=True),
    "adam_beta1": Range(0, 1, high_open=True),
    "adam_beta2": Range(0, 1, high_open=True),
    "port": PORT,
    "ks": AT_LEAST_0,  # evaluation: k = 0 lists every document
    "RetrievalEvalConfig.ks": Range(1),  # p@k: at least one document
    "RetrieverTuneConfig.ks": Range(1),
}


def range_of(owner: str, name: str) -> Range:
    if f"{owner}.{name}" in OWN:
        return OWN[f"{owner}.{name}"]
    if name in OWN:
        return OWN[name]
    if name in POSITIVE or name.endswith("timeout_s"):
        return ABOVE_0
    if "fraction" in name or name.endswith(("_rate", "_share")):
        return SHARE
    return AT_LEAST_0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check(owner: str, name: str, value: Any) -> Any:
    """``value`` if it is in the setting's range (numbers, and the numbers in a list); a ValueError
    saying the range otherwise."""
    numbers = [value] if _number(value) else []
    if isinstance(value, (list, tuple)):
        numbers = [v for v in value if _number(v)]
    allowed = range_of(owner, name)
    for number in numbers:
        if not allowed.holds(number):
            shown = f"{number:g}" if isinstance(number, float) else str(number)
            raise ValueError(f"must be {allowed.words()}, not {shown}")
    return value
