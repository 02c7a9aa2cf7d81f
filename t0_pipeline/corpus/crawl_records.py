"""What a crawl records besides the pages: its report (new / changed / unchanged / removed / failed
conditions) and its journal (conditions fetched so far, so an interrupted crawl resumes)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CrawlReport:
    source: str
    started_at: str
    finished_at: str = ""
    conditions: int = 0
    requests: int = 0
    not_modified: int = 0
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    disallowed: list[str] = field(default_factory=list)
    # slug, url, error; the previous version is kept if any
    failed: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unit: str = "conditions"  # what the source's items are called in the summary

    def summary(self) -> str:
        return (
            f"{self.conditions} {self.unit}: {len(self.new)} new, {len(self.changed)} changed, "
            f"{len(self.unchanged)} unchanged, {len(self.removed)} removed, {len(self.failed)} "
            "failed"
        )


class CrawlJournal:
    """Conditions fetched by a crawl still in progress, one JSON line each, appended as they arrive.

    An interrupted crawl of the same source resumes from it instead of fetching those pages again;
    :func:`run_crawl` removes it once pages.parquet is written.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self, source: str) -> dict[str, tuple]:
        done: dict[str, tuple] = {}
        if not self.path.is_file():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"source": source}) + "\n", encoding="utf-8")
            return done
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
        except ValueError:
            header = {}
        if header.get("source") != source:  # another source's leftovers: start over
            self.path.write_text(json.dumps({"source": source}) + "\n", encoding="utf-8")
            return done
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # the line being written when the crawl was killed
            done[entry["slug"]] = (entry["rows"], entry["not_modified"], entry["warnings"])
        return done

    def add(self, slug: str, result: tuple) -> None:
        rows, n304, warnings = result
        with self.path.open("a", encoding="utf-8") as out:
            out.write(
                json.dumps({"slug": slug, "rows": rows, "not_modified": n304, "warnings": warnings})
                + "\n"
            )

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
