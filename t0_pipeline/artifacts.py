"""Reading and writing artefacts safely: atomic replace, Parquet/JSONL, config sidecars.

Every writer goes through :func:`atomic_path`, so a crash mid-write leaves the previous
good artefact in place and never a half-written one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel


class T0Error(Exception):
    """A problem the user can fix; its message is one sentence naming what and what to do."""


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it over ``final`` (file or directory).
    A ``final`` that is a pipe or a device (``/dev/stdout``) is written as given: nothing replaces
    it."""
    final = Path(final)
    if final.exists() and not (final.is_file() or final.is_dir()):
        yield final
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if tmp.is_dir():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_parquet(df: pl.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)
    return path


def read_parquet(path: Path, what: str, make_it: str) -> pl.DataFrame:
    """Read an artefact, or say which one is missing and which command makes it."""
    path = Path(path)
    if not path.exists():
        raise T0Error(
            f"{what} not found at {path}; run `{make_it}` first (or point --data-dir at an "
            "existing run)."
        )
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for a damaged or foreign file
        raise T0Error(
            f"{what} at {path} is not a readable Parquet file ({exc.__class__.__name__}); run "
            f"`{make_it}` again to rewrite it."
        ) from None


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return path


def write_json(obj: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(
            json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
        )
    return path


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_config_sidecar(artefact: Path, *configs: BaseModel) -> Path:
    """Write the resolved config that produced ``artefact`` next to it (``<name>.config.json``)."""
    payload = {type(c).__name__: c.model_dump(mode="json") for c in configs}
    return write_json(payload, Path(artefact).with_name(Path(artefact).name + ".config.json"))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_digest(path: Path) -> str:
    """A file's sha256 (first 20 hex digits): how cards and training runs name a dataset."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()[:20]


def json_kind(value: Any) -> str:
    """What a JSON value is, in words (for errors naming a field of the wrong type)."""
    if isinstance(value, bool):
        return "true/false"
    kinds = {int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl/.json/.parquet file; a bad line is reported by number."""
    path = Path(path)
    if not path.exists():
        raise T0Error(f"{path} does not exist; check the path.")
    if path.is_dir():
        raise T0Error(f"{path} is a directory; pass a .jsonl, .json or .parquet file.")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            return pl.read_parquet(path).to_dicts()
        except Exception as exc:  # polars raises several types for a damaged file
            raise T0Error(
                f"{path} is not a readable Parquet file ({exc.__class__.__name__}); re-export it."
            ) from None
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise T0Error(
                f"{path} is not valid UTF-8 JSON ({exc.__class__.__name__}: {str(exc)[:80]})."
            ) from None
        if not isinstance(data, list):
            raise T0Error(
                f"{path} must hold a JSON array of objects (or use .jsonl, one object per line)."
            )
        for i, item in enumerate(data, start=1):
            if not isinstance(item, dict):
                raise T0Error(
                    f"{path} item {i} is {json_kind(item)}, not an object; the array "
                    "must hold one object per record."
                )
        return data
    rows: list[dict[str, Any]] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                # a byte-order mark is allowed
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise T0Error(
                    f"{path}:{lineno} is not valid UTF-8 (byte {exc.start}); re-save the file as "
                    "UTF-8."
                ) from None
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise T0Error(
                    f"{path}:{lineno} is not valid JSON ({exc.msg}); fix or remove that line."
                ) from None
            if not isinstance(row, dict):
                raise T0Error(f"{path}:{lineno} must be a JSON object, got {type(row).__name__}.")
            rows.append(row)
    return rows
