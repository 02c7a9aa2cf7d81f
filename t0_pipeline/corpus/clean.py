"""Clean: raw pages → the ``conditions`` dataset (one plain-text document per condition).

Input: ``<data>/corpus/pages.parquet``. Output: ``<data>/corpus/conditions.parquet`` and
``conditions.jsonl`` with slug, title, url, text, content_hash, source, fetched_at, n_pages.

HTML becomes Markdown-like plain text: ``#`` headings, ``-`` list items (nested lists
indented), table rows as ``- Header: cell; Header: cell`` items. Boilerplate (navigation,
cookie banners, review dates, contents blocks, "further information" sections) is dropped
by the site adapter's selectors. The pages of a multi-page guide are joined in order.

Run it: ``t0 clean --data-dir DIR``.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass

import polars as pl
from bs4 import BeautifulSoup, NavigableString, Tag

from t0_pipeline.artifacts import (
    T0Error,
    read_parquet,
    sha256_text,
    write_config_sidecar,
    write_jsonl,
    write_parquet,
)
from t0_pipeline.config import CleanConfig, DataPaths, SourceConfig
from t0_pipeline.corpus.sites import SiteAdapter, get_adapter

log = logging.getLogger(__name__)

HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
BLOCK_CONTAINERS = {
    "div",
    "section",
    "article",
    "main",
    "body",
    "html",
    "details",
    "summary",
    "figure",
    "blockquote",
    "dl",
    "span",
}
_SPACE = re.compile(r"[ \t\r\f\v\u00a0]+")

CONDITION_SCHEMA = {
    "slug": pl.String,
    "title": pl.String,
    "url": pl.String,
    "text": pl.String,
    "content_hash": pl.String,
    "source": pl.String,
    "fetched_at": pl.String,
    "n_pages": pl.Int32,
}


@dataclass
class Block:
    kind: str  # heading | text | item
    text: str
    level: int = 0  # heading level, or list nesting depth


def _inline(node: Tag | NavigableString) -> str:
    text = node.get_text(" ", strip=True) if isinstance(node, Tag) else str(node)
    return _SPACE.sub(" ", text).strip()


def _list_blocks(lst: Tag, depth: int) -> list[Block]:
    """Items of a list, nested lists indented under their item; iterative, so any nesting depth is
    fine."""
    blocks: list[Block] = []
    stack = [(iter(lst.find_all("li", recursive=False)), depth)]
    while stack:
        items, level = stack[-1]
        li = next(items, None)
        if li is None:
            stack.pop()
            continue
        nested = li.find_all(["ul", "ol"], recursive=False)
        # the item's own text, without its nested lists (read around them: extracting them costs
        # their size each)
        own = (
            _inline(c)
            for c in li.children
            if not (isinstance(c, Tag) and c.name in ("ul", "ol"))
            and (isinstance(c, Tag) or c.__class__ is NavigableString)
        )
        text = _SPACE.sub(" ", " ".join(t for t in own if t)).strip()
        if text:
            blocks.append(Block("item", text, level))
        if nested:
            stack.append(
                (
                    itertools.chain.from_iterable(
                        sub.find_all("li", recursive=False) for sub in nested
                    ),
                    level + 1,
                )
            )
    return blocks


def _table_blocks(table: Tag) -> list[Block]:
    """A table as list items: each body row becomes 'Header: cell; Header: cell'."""
    rows = table.find_all("tr")
    if not rows:
        return []
    header_cells = rows[0].find_all("th")
    headers = [_inline(c) for c in header_cells] if header_cells else []
    body = rows[1:] if headers else rows
    blocks: list[Block] = []
    caption = table.find("caption")
    if caption and _inline(caption):
        blocks.append(Block("text", _inline(caption)))
    for tr in body:
        cells = [_inline(c) for c in tr.find_all(["td", "th"])]
        if not any(cells):
            continue
        if headers and len(headers) == len(cells):
            text = "; ".join(f"{h}: {c}" if h else c for h, c in zip(headers, cells))
        else:
            text = "; ".join(c for c in cells if c)
        blocks.append(Block("item", text, 0))
    return blocks


BLOCK_TAGS = {*HEADINGS, "p", "ul", "ol", "table", "div", "section"}


def _with_block_content(root: Tag) -> set[int]:
    """ids of the elements under ``root`` that contain a block element: one pass, linear in the
    page.

    Walking up from each block element stops at the first ancestor already marked (its own ancestors
    are marked too), so every element is marked at most once, however deep the nesting.
    """
    marked: set[int] = set()
    for el in root.descendants:
        if isinstance(el, Tag) and el.name in BLOCK_TAGS:
            parent = el.parent
            while parent is not None and id(parent) not in marked:
                marked.add(id(parent))
                if parent is root:
                    break
                parent = parent.parent
    return marked


def _blocks(node: Tag) -> list[Block]:
    """The blocks of ``node`` in document order, by an explicit stack (no recursion: a page can nest
    deeply)."""
    blocks: list[Block] = []
    loose: list[str] = []  # inline text directly inside the current container
    containers = _with_block_content(node)

    def flush() -> None:
        text = _SPACE.sub(" ", " ".join(loose)).strip()
        if text:
            blocks.append(Block("text", text))
        loose.clear()

    stack = [iter(node.children)]
    while stack:
        child = next(stack[-1], None)
        if child is None:  # end of a container: its loose text is a paragraph
            stack.pop()
            flush()
            continue
        if isinstance(child, NavigableString):
            if child.__class__ is NavigableString:  # skip comments, CDATA, doctype
                loose.append(str(child))
            continue
        if not isinstance(child, Tag):
            continue
        name = child.name
        if name in HEADINGS:
            flush()
            text = _inline(child)
            if text:
                blocks.append(Block("heading", text, HEADINGS[name]))
        elif name in ("ul", "ol"):
            flush()
            blocks.extend(_list_blocks(child, 0))
        elif name == "table":
            flush()
            blocks.extend(_table_blocks(child))
        elif name in ("p", "dt", "dd", "pre", "address", "li", "caption", "label"):
            flush()
            text = _inline(child)
            if text:
                blocks.append(Block("text", text))
        elif name == "br":
            flush()
        elif name in BLOCK_CONTAINERS and id(child) in containers:
            flush()
            stack.append(iter(child.children))
        else:
            loose.append(child.get_text(" ", strip=False))
    return blocks


def _drop_sections(blocks: list[Block], adapter: SiteAdapter) -> list[Block]:
    kept: list[Block] = []
    skip_level: int | None = None
    for block in blocks:
        if block.kind == "heading":
            if skip_level is not None and block.level <= skip_level:
                skip_level = None
            if skip_level is None and any(
                p.search(block.text) for p in adapter.drop_section_headings
            ):
                skip_level = block.level
        if skip_level is None and not any(p.search(block.text) for p in adapter.drop_line_patterns):
            kept.append(block)
    return kept


def render_blocks(blocks: list[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if block.kind == "heading":
            if lines:
                lines.append("")
            lines.append("#" * block.level + " " + block.text)
        elif block.kind == "item":
            lines.append("  " * block.level + "- " + block.text)
        else:
            lines.append(block.text)
    return "\n".join(lines).strip()


def html_to_text(html: str, adapter: SiteAdapter) -> str:
    """Plain text of one page's own content, boilerplate removed. Empty string if none."""
    if not html or not html.strip():
        return ""
    soup = BeautifulSoup(html, "lxml")
    root = soup.select_one(adapter.content_selector) or soup.body or soup
    for selector in adapter.drop_selectors:
        for el in root.select(selector):
            el.decompose()
    return render_blocks(_drop_sections(_blocks(root), adapter))


def normalise_text(text: str) -> str:
    """Whitespace clean-up for pre-scraped text: trim lines, collapse runs of blank lines."""
    lines = [_SPACE.sub(" ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def clean_pages(
    pages: pl.DataFrame, adapter: SiteAdapter, config: CleanConfig
) -> tuple[pl.DataFrame, list[str]]:
    """Join each condition's pages into one clean document; returns (conditions, problems).

    A document whose text is empty or shorter than ``config.min_chars`` after cleaning is
    left out and named in ``problems``; the others go on.
    """
    problems: list[str] = []
    rows = []
    for (slug,), group in pages.sort(["slug", "part"]).group_by(["slug"], maintain_order=True):
        parts = []
        for page in group.iter_rows(named=True):
            body = page["body"] or ""
            try:
                text = (
                    html_to_text(body, adapter)
                    if page["format"] == "html"
                    else normalise_text(body)
                )
            # one hostile page must not stop the corpus: report it, leave it out
            except Exception as exc:
                problems.append(
                    f"record {slug} ({page['page_url'] or 'no url'}): could not be cleaned "
                    f"({exc.__class__.__name__}: {str(exc)[:120]}); that page is left out"
                )
                continue
            if text:
                parts.append(text)
            else:
                problems.append(
                    f"record {slug} ({page['page_url'] or 'no url'}): field 'body' has no text "
                    "after cleaning (empty or malformed HTML); that page is left out"
                )
        text = "\n\n".join(parts)
        first = group.row(0, named=True)
        if len(text) < config.min_chars:
            problems.append(
                f"record {slug}: cleaned text is {len(text)} characters (< "
                f"min_chars={config.min_chars}); the document is left out; check the page or the "
                "adapter's content selector"
            )
            continue
        rows.append(
            {
                "slug": slug,
                "title": first["title"] or slug,
                "url": first["url"],
                "text": text,
                "content_hash": sha256_text(text),
                "source": first["source"],
                "fetched_at": group["fetched_at"].max(),
                "n_pages": group.height,
            }
        )
    return pl.DataFrame(rows, schema=CONDITION_SCHEMA), problems


def run_clean(
    paths: DataPaths, source: SourceConfig, config: CleanConfig
) -> tuple[pl.DataFrame, list[str]]:
    pages = read_parquet(paths.pages, "raw pages", "t0 crawl")
    conditions, problems = clean_pages(pages, get_adapter(source.adapter), config)
    for problem in problems:
        log.warning(problem)
    if conditions.is_empty():
        raise T0Error(
            f"no document survived cleaning ({len(problems)} problems, first: "
            f"{problems[0] if problems else 'no pages'}); the previous conditions dataset is kept."
        )
    write_parquet(conditions, paths.conditions)
    write_jsonl(conditions.to_dicts(), paths.conditions.with_suffix(".jsonl"))
    write_config_sidecar(paths.conditions, source, config)
    return conditions, problems
