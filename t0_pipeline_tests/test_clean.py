"""HTML → text: boilerplate dropped, headings/lists kept, tables as lists, bad pages reported."""

from __future__ import annotations

import polars as pl

from t0_pipeline.config import CleanConfig
from t0_pipeline.corpus.clean import clean_pages, html_to_text, normalise_text
from t0_pipeline.corpus.pages_file import PAGE_SCHEMA
from t0_pipeline.corpus.sites import get_adapter

NHS = get_adapter("nhs")

PAGE = """<!DOCTYPE html><html><head><title>Fictional fever</title><script>var x = 1;</script></head><body>
<div id="nhsuk-cookie-banner"><p>We use cookies to make the site work.</p></div>
<header class="nhsuk-header"><a href="/">Home</a><nav><ul><li><a href="/live-well/">Live Well</a></li></ul></nav></header>
<nav class="nhsuk-breadcrumb"><ol><li><a href="/conditions/">Health A to Z</a></li></ol></nav>
<main id="maincontent"><article>
<h1>Fictional fever</h1>
<nav class="nhsuk-contents-list"><h2>Contents</h2><ol><li><a href="/conditions/ff/treatment/">Treatment</a></li></ol></nav>
<p>Fictional   fever is a made-up illness&nbsp;for tests.</p>
<h2>Symptoms</h2>
<ul><li>a purple tongue<ul><li>sometimes spotted</li></ul></li><li>humming ears</li></ul>
<div class="nhsuk-card nhsuk-card--care nhsuk-card--care--urgent"><h3><span class="nhsuk-u-visually-hidden">Urgent advice: </span>Call 111 if:</h3>
<div class="nhsuk-card__content"><ul><li>the humming gets louder</li></ul></div></div>
<table><caption>Stages</caption><thead><tr><th>Stage</th><th>Sign</th></tr></thead>
<tbody><tr><td>Early</td><td>purple tongue</td></tr><tr><td>Late</td><td>humming</td></tr></tbody></table>
<h2>Further information</h2><p>Links to other sites.</p><ul><li><a href="/x">X</a></li></ul>
<h2>Treatment</h2><p>Rest.</p>
<div class="nhsuk-review-date"><p>Page last reviewed: 1 January 2025</p></div>
<p>Page last reviewed: 2 January 2025</p>
<nav class="nhsuk-pagination"><a href="/next">Next</a></nav>
</article></main>
<footer><p>Crown copyright</p></footer></body></html>"""


def test_boilerplate_removed_and_structure_kept():
    text = html_to_text(PAGE, NHS)
    assert text.splitlines()[0] == "# Fictional fever"
    assert "Fictional fever is a made-up illness for tests." in text
    assert "## Symptoms\n- a purple tongue\n  - sometimes spotted\n- humming ears" in text
    assert "### Urgent advice: Call 111 if:\n- the humming gets louder" in text
    assert "Stages\n- Stage: Early; Sign: purple tongue\n- Stage: Late; Sign: humming" in text
    assert "## Treatment\nRest." in text
    for gone in (
        "cookies",
        "Live Well",
        "Health A to Z",
        "Contents",
        "Further information",
        "Links to other sites",
        "Page last reviewed",
        "Next",
        "Crown copyright",
        "var x",
    ):
        assert gone not in text, gone


def test_empty_and_malformed_pages_are_reported_and_others_kept():
    rows = [
        {
            "slug": "good",
            "title": "Good",
            "url": "u/good",
            "part": 0,
            "page_url": "u/good",
            "format": "html",
            "body": PAGE,
        },
        {
            "slug": "empty",
            "title": "Empty",
            "url": "u/empty",
            "part": 0,
            "page_url": "u/empty",
            "format": "html",
            "body": "   ",
        },
        {
            "slug": "broken",
            "title": "Broken",
            "url": "u/b",
            "part": 0,
            "page_url": "u/b",
            "format": "html",
            "body": "<html><body><main><div><p></p></div",
        },
        {
            "slug": "text",
            "title": "Text",
            "url": "u/t",
            "part": 0,
            "page_url": "u/t",
            "format": "text",
            "body": "Line one   here.\r\n\n\n\nLine two is long enough to keep.",
        },
    ]
    pages = pl.DataFrame(
        [
            {
                **r,
                "content_hash": "h",
                "etag": None,
                "last_modified": None,
                "fetched_at": "t",
                "source": "s",
            }
            for r in rows
        ],
        schema=PAGE_SCHEMA,
    )
    docs, problems = clean_pages(pages, NHS, CleanConfig(min_chars=20))
    assert sorted(docs["slug"].to_list()) == ["good", "text"]
    assert (
        docs.filter(pl.col("slug") == "text")["text"][0]
        == "Line one here.\n\nLine two is long enough to keep."
    )
    assert any(p.startswith("record empty (u/empty): field 'body' has no text") for p in problems)
    assert any(p.startswith("record broken") for p in problems)


def test_multi_page_documents_are_joined_in_part_order():
    part = lambda n, body: {
        "slug": "ff",
        "title": "FF",
        "url": "u",
        "part": n,
        "page_url": f"u/{n}",
        "format": "html",
        "body": f"<main><h1>Page {n}</h1><p>{body}</p></main>",
        "content_hash": "h",
        "etag": None,
        "last_modified": None,
        "fetched_at": f"2025-01-0{n + 1}",
        "source": "s",
    }
    pages = pl.DataFrame(
        [part(1, "second part text"), part(0, "first part text")], schema=PAGE_SCHEMA
    )
    docs, _ = clean_pages(pages, NHS, CleanConfig(min_chars=5))
    assert docs["text"][0] == "# Page 0\nfirst part text\n\n# Page 1\nsecond part text"
    assert docs["n_pages"][0] == 2 and docs["fetched_at"][0] == "2025-01-02"


def test_normalise_text_collapses_whitespace():
    assert normalise_text("  a \t b \n\n\n\n c ") == "a b\n\nc"


def test_deeply_nested_pages_are_cleaned_without_recursion():
    depth = 20_000  # far past Python's recursion limit
    divs = (
        "<main>"
        + "<div>" * depth
        + "<p>Deep paragraph text.</p>"
        + "</div>" * depth
        + "<p>After it.</p></main>"
    )
    lists = (
        "<main><ul>"
        + "<li>level<ul>" * 3000
        + "<li>leaf</li>"
        + "</ul></li>" * 3000
        + "</ul></main>"
    )
    assert html_to_text(divs, NHS) == "Deep paragraph text.\nAfter it."
    items = html_to_text(lists, NHS).splitlines()
    assert len(items) == 3001 and items[0] == "- level" and items[-1] == "  " * 3000 + "- leaf"


def test_a_page_that_cannot_be_cleaned_is_reported_and_the_rest_go_on(monkeypatch):
    import t0_pipeline.corpus.clean as clean

    real = clean.html_to_text

    def fragile(html, adapter):  # a parser failure we cannot provoke with real HTML any more
        if "poison" in html:
            raise RecursionError("maximum recursion depth exceeded")
        return real(html, adapter)

    monkeypatch.setattr(clean, "html_to_text", fragile)
    page = lambda slug, part, body: {
        "slug": slug,
        "title": slug,
        "url": f"u/{slug}",
        "part": part,  # noqa: E731
        "page_url": f"u/{slug}/{part}",
        "format": "html",
        "body": body,
        "content_hash": "h",
        "etag": None,
        "last_modified": None,
        "fetched_at": "2025-01-01",
        "source": "s",
    }
    pages = pl.DataFrame(
        [
            page("ok", 0, "<main><p>A perfectly ordinary page.</p></main>"),
            page("guide", 0, "<main><p>The first part of a guide.</p></main>"),
            page("guide", 1, "<main><p>poison</p></main>"),
        ],
        schema=PAGE_SCHEMA,
    )
    docs, problems = clean_pages(pages, NHS, CleanConfig(min_chars=10))
    assert (
        sorted(docs["slug"]) == ["guide", "ok"]
        and docs.filter(pl.col("slug") == "guide")["n_pages"][0] == 2
    )
    assert docs.filter(pl.col("slug") == "guide")["text"][0] == "The first part of a guide."
    assert problems == [
        "record guide (u/guide/1): could not be cleaned (RecursionError: maximum recursion depth "
        "exceeded); that page is left out"
    ]
