"""A folder of documents → raw pages: every PDF, Word (DOCX), HTML, Markdown and text file under a
directory becomes one document.

Input: ``source.kind: documents`` with ``source.location: DIR`` (``source.include`` /
``source.exclude`` globs, ``source.max_file_mb``). Output: the crawl's own ``pages.parquet``
rows (format ``text``) and a :class:`~t0_pipeline.corpus.crawl_records.CrawlReport`, so
cleaning, indexing and the corpus-change sensor work on a folder as on a site.

- slug: the file's path relative to DIR without its extension, lower-cased, every run of
  characters other than a-z and 0-9 one hyphen (``network/VPN Guide.pdf`` → ``network-vpn-guide``);
- title: the document's own (PDF or DOCX metadata title, else its first heading, else the file
  name);
- change-aware: a file whose bytes are unchanged since the last run is not converted again; a file
  that now fails keeps its previous text (reported as failed);
- a file that cannot be read (encrypted, corrupt, empty, no text layer, unknown kind, too large) is
  skipped and named with its reason; the others go on.

Converters: pypdf (PDF text layer and metadata) and python-docx (paragraphs, heading styles, core
properties): small, pure Python, and each failure has a precise cause to report.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from t0_pipeline.artifacts import T0Error, sha256_text
from t0_pipeline.config import SourceConfig
from t0_pipeline.corpus.crawl_records import CrawlReport
from t0_pipeline.corpus.pages_file import PAGE_SCHEMA, now_iso

log = logging.getLogger(__name__)

KINDS = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
}


class Unreadable(Exception):
    """A file that cannot become a document; the message is the reason shown to the user."""


@dataclass
class Converted:
    title: str | None  # None: use the file name
    text: str


def slug_for(relative: Path) -> str:
    stem = relative.with_suffix("").as_posix().lower()
    return re.sub(r"[^a-z0-9]+", "-", stem).strip("-")


def _title_from_name(path: Path) -> str:
    return re.sub(r"[_-]+", " ", path.stem).strip() or path.name


def _pdf(path: Path) -> Converted:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    # its warnings about a broken file repeat what the reason below says
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("encrypted: needs its password (save an unencrypted copy)")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta = reader.metadata
    except Unreadable:
        raise
    except (PdfReadError, ValueError, KeyError, OSError) as exc:
        raise Unreadable(f"not a readable PDF ({exc.__class__.__name__}: {str(exc)[:80]})")
    except Exception as exc:  # a dependency of pypdf missing for this PDF's encryption, etc.
        raise Unreadable(f"PDF could not be read ({exc.__class__.__name__}: {str(exc)[:80]})")
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise Unreadable("no text layer: needs OCR (a scanned PDF)")
    title = (meta.title if meta else None) or None
    return Converted(title.strip() if title and title.strip() else None, text)


def _docx(path: Path) -> Converted:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, KeyError, ValueError, OSError) as exc:
        raise Unreadable(f"not a valid DOCX file ({exc.__class__.__name__})")
    except Exception as exc:  # zipfile.BadZipFile and lxml errors
        raise Unreadable(f"not a valid DOCX file ({exc.__class__.__name__})")
    lines, heading = [], None
    for para in document.paragraphs:
        text = para.text.strip()
        if not text:
            continue
        style = (para.style.name if para.style is not None else "") or ""
        if heading is None and (style.startswith("Heading") or style == "Title"):
            heading = text
        lines.append(text)
    for table in document.tables:
        for row in table.rows:
            cells = [c.text.strip() for c in row.cells if c.text.strip()]
            if cells:
                lines.append(" | ".join(cells))
    if not lines:
        raise Unreadable("no text in the document")
    title = (document.core_properties.title or "").strip() or heading
    return Converted(title, "\n\n".join(lines))


def _html(raw: str) -> Converted:
    from bs4 import BeautifulSoup

    from t0_pipeline.corpus.clean import html_to_text
    from t0_pipeline.corpus.sites import DOCUMENT_HTML

    text = html_to_text(raw, DOCUMENT_HTML)
    if not text.strip():
        raise Unreadable("no text in the page")
    soup = BeautifulSoup(raw, "lxml")
    h1 = soup.find("h1")
    title = (soup.title.get_text(" ", strip=True) if soup.title else "") or (
        h1.get_text(" ", strip=True) if h1 else ""
    )
    return Converted(title or None, text)


def _markdown(raw: str) -> Converted:
    heading = next(
        (m.group(1).strip() for m in re.finditer(r"(?m)^#{1,6}\s+(.+?)\s*#*\s*$", raw)), None
    )
    return Converted(heading or None, raw.strip())


def convert(path: Path, data: bytes) -> Converted:
    """One file's text and title; :class:`Unreadable` with the reason when it has none."""
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise Unreadable(f"unknown kind of file {path.suffix or '(no extension)'!r}")
    if not data:
        raise Unreadable("empty file (0 bytes)")
    if kind == "pdf":
        return _pdf(path)
    if kind == "docx":
        return _docx(path)
    try:
        raw = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raw = data.decode("latin-1")
    if kind == "html":
        return _html(raw)
    if not raw.strip():
        raise Unreadable("no text in the file")
    return _markdown(raw) if kind == "markdown" else Converted(None, raw.strip())


def document_files(config: SourceConfig) -> tuple[Path, list[Path]]:
    """The folder and every file under it that the include/exclude globs select, sorted."""
    if not config.location:
        raise T0Error(
            "source kind 'documents' needs a folder: pass --documents DIR (or set source.location)."
        )
    root = Path(config.location)
    if not root.is_dir():
        raise T0Error(f"documents folder {root} does not exist; pass an existing directory.")
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in Path(rel).parts):
            continue  # hidden files and folders (.git, .DS_Store)
        if not any(fnmatch.fnmatch(rel, g) for g in config.include):
            continue
        if any(fnmatch.fnmatch(rel, g) for g in config.exclude):
            continue
        files.append(path)
    return root, files


def _row(slug: str, title: str, rel: str, text: str, digest: str) -> dict:
    return {
        "slug": slug,
        "title": title,
        "url": rel,
        "part": 0,
        "page_url": rel,
        "format": "text",
        "body": text,
        "content_hash": sha256_text(text),
        "etag": digest,  # the file's bytes: unchanged files are not converted again
        "last_modified": None,
        "fetched_at": now_iso(),
        "source": "documents",
    }


def read_documents(
    config: SourceConfig, previous: pl.DataFrame | None
) -> tuple[pl.DataFrame, CrawlReport]:
    """Every selected file as one raw page, converting only what changed since ``previous``."""
    root, files = document_files(config)
    report = CrawlReport(source=f"documents: {root}", started_at=now_iso(), unit="files")
    before = {}
    if previous is not None and not previous.is_empty():
        before = {r["slug"]: r for r in previous.to_dicts() if r.get("source") == "documents"}
    rows: dict[str, dict] = {}
    taken: dict[str, str] = {}
    limit = int(config.max_file_mb * 1024 * 1024)
    for path in files:
        rel = path.relative_to(root).as_posix()
        slug = slug_for(Path(rel))
        old = before.get(slug)
        try:
            if not slug:
                raise Unreadable("its name has no letters or digits to make a slug from")
            if slug in taken:
                raise Unreadable(f"slug {slug!r} is already taken by {taken[slug]}")
            size = path.stat().st_size
            if size > limit:
                raise Unreadable(f"over the size limit ({size / 1e6:.1f} MB > source.max_file_mb)")
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            taken[slug] = rel
            if old is not None and old["etag"] == digest and old["page_url"] == rel:
                rows[slug] = old
                report.unchanged.append(slug)
                continue
            doc = convert(path, data)
        except Unreadable as exc:
            report.failed.append({"slug": slug, "url": rel, "error": str(exc)})
            if old is not None and slug not in rows:
                rows[slug] = old  # the previous text is kept
            continue
        rows[slug] = _row(slug, doc.title or _title_from_name(path), rel, doc.text, digest)
        (report.new if old is None else report.changed).append(slug)
    report.removed = sorted(set(before) - set(rows))
    report.conditions = len(rows)
    report.finished_at = now_iso()
    if not rows:
        reasons = "; ".join(f"{f['url']}: {f['error']}" for f in report.failed[:3])
        raise T0Error(
            f"no readable document in {root} ({len(files)} files selected"
            + (f"; {reasons}" if reasons else "")
            + "); the previous corpus is kept."
        )
    df = pl.DataFrame(list(rows.values()), schema=PAGE_SCHEMA)
    return df.filter(~pl.col("slug").is_in(config.exclude_slugs)), report
