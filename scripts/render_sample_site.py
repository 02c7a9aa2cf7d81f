"""Render the bundled sample corpus (t0_pipeline/sample/source/*.txt) into an NHS-style mirror.

Developer tool, not part of the pipeline: the rendered HTML under
``t0_pipeline/sample/site/`` is committed, so the package needs no build step. Re-run after
editing the source text:

    python scripts/render_sample_site.py

Source format (one file may hold many conditions):
    === slug | Title               a condition; its first page is the main page
    --- sub | Page heading         a page of a multi-page guide (first one: sub = overview)
    ## Heading / ### Heading       headings
    - item / "  - item"            list items (two spaces per nesting level)
    !info|urgent|emergency: text   a care card; the list items that follow are its content
    | a | b |                      table rows; the first row is the header
    @further                       a "Further information" block (boilerplate, for the cleaner to drop)
    anything else                  a paragraph
The page text is original, written for this project: illustrative sample text, not medical advice.
"""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "t0_pipeline" / "sample"
SOURCE = ROOT / "source"
SITE = ROOT / "site"
BASE = "/conditions/"
CARD = {
    "info": ("non-urgent", "Non-urgent advice: "),
    "urgent": ("urgent", "Urgent advice: "),
    "emergency": ("emergency", "Immediate action required: "),
}
DISCLAIMER = "Illustrative sample text written for t0-pipeline tests and demos. Not medical advice."


@dataclass
class Page:
    sub: str
    heading: str
    lines: list[str] = field(default_factory=list)


@dataclass
class Condition:
    slug: str
    title: str
    pages: list[Page] = field(default_factory=list)


def parse(text: str) -> list[Condition]:
    conditions: list[Condition] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("=== "):
            slug, title = (p.strip() for p in line[4:].split("|", 1))
            conditions.append(Condition(slug, title))
        elif line.startswith("--- "):
            sub, heading = (p.strip() for p in line[4:].split("|", 1))
            conditions[-1].pages.append(Page(sub, heading))
        elif conditions and conditions[-1].pages:
            conditions[-1].pages[-1].lines.append(line)
    return conditions


def _list(items: list[tuple[int, str]]) -> str:
    """Nested <ul> from (depth, text) pairs; a deeper item nests inside the item before it."""
    out: list[str] = []
    depth = -1
    for level, text in items:
        if level > depth:
            out.append("<ul>" * (level - depth))
        else:
            out.append("</li>" + "</ul></li>" * (depth - level))
        out.append(f"<li>{html.escape(text)}")
        depth = level
    out.append("</li>" + "</ul></li>" * depth + "</ul>")
    return "".join(out)


def body_html(lines: list[str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("### "):
            out.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.lstrip().startswith("- "):
            items = []
            while i < len(lines) and lines[i].lstrip().startswith("- "):
                indent = (len(lines[i]) - len(lines[i].lstrip())) // 2
                items.append((indent, lines[i].lstrip()[2:]))
                i += 1
            out.append(_list(items))
            continue
        elif line.startswith("!") and ":" in line:
            kind, heading = line[1:].split(":", 1)
            css, hidden = CARD[kind.strip()]
            items = []
            i += 1
            while i < len(lines) and lines[i].lstrip().startswith("- "):
                items.append((0, lines[i].lstrip()[2:]))
                i += 1
            out.append(
                f'<div class="nhsuk-card nhsuk-card--care nhsuk-card--care--{css}">'
                '<div class="nhsuk-card--care__heading-container"><h3 '
                'class="nhsuk-card--care__heading">'
                '<span role="text"><span '
                f'class="nhsuk-u-visually-hidden">{hidden}</span>{html.escape(heading.strip())}'
                '</span></h3><span class="nhsuk-card--care__arrow" '
                'aria-hidden="true"></span></div>'
                f'<div class="nhsuk-card__content">{_list(items)}</div></div>'
            )
            continue
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            head = "".join(f'<th scope="col">{html.escape(c)}</th>' for c in rows[0])
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                for r in rows[1:]
            )
            out.append(
                "<table "
                f'class="nhsuk-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            )
            continue
        elif line.strip() == "@further":
            out.append(
                "<section><h2>Further information</h2><ul>"
                '<li><a href="/conditions/">Health A to Z</a></li>'
                '<li><a href="/nhs-services/">Find NHS services near you</a></li></ul></section>'
            )
        else:
            out.append(f"<p>{html.escape(line.strip())}</p>")
        i += 1
    return "\n".join(out)


def page_html(cond: Condition, index: int) -> str:
    page = cond.pages[index]
    guide = ""
    if len(cond.pages) > 1:
        items = []
        for j, p in enumerate(cond.pages):
            href = f"{BASE}{cond.slug}/" + ("" if j == 0 else f"{p.sub}/")
            if j == index:
                items.append(
                    f'<li class="nhsuk-contents-list__item" aria-current="page">'
                    "<span "
                    f'class="nhsuk-contents-list__current">{html.escape(p.heading)}</span></li>'
                )
            else:
                items.append(
                    f'<li class="nhsuk-contents-list__item"><a class="nhsuk-contents-list__link" '
                    f'href="{href}">{html.escape(p.heading)}</a></li>'
                )
        guide = (
            f'<nav class="nhsuk-contents-list" role="navigation" aria-label="Pages in this guide">'
            '<h2 class="nhsuk-u-visually-hidden">Contents</h2><ol '
            'class="nhsuk-contents-list__list">'
            f"{''.join(items)}</ol></nav>"
        )
    pager = ""
    if len(cond.pages) > 1:
        links = []
        if index > 0:
            links.append(
                f'<li class="nhsuk-pagination-item--previous"><a class="nhsuk-pagination__link" '
                f'href="{BASE}{cond.slug}/{"" if index == 1 else cond.pages[index - 1].sub + "/"}">'
                f'<span class="nhsuk-pagination__title">Previous</span></a></li>'
            )
        if index + 1 < len(cond.pages):
            links.append(
                f'<li class="nhsuk-pagination-item--next"><a class="nhsuk-pagination__link" '
                f'href="{BASE}{cond.slug}/{cond.pages[index + 1].sub}/">'
                f'<span class="nhsuk-pagination__title">Next</span></a></li>'
            )
        pager = f'<nav class="nhsuk-pagination" role="navigation"><ul class="nhsuk-list nhsuk-pagination__list">{"".join(links)}</ul></nav>'
    title = cond.title if index == 0 else f"{page.heading} - {cond.title}"
    return _shell(
        title,
        f'<nav class="nhsuk-breadcrumb" aria-label="Breadcrumb"><ol class="nhsuk-breadcrumb__list">'
        f'<li class="nhsuk-breadcrumb__item"><a href="/">Home</a></li>'
        f'<li class="nhsuk-breadcrumb__item"><a href="{BASE}">Health A to Z</a></li></ol></nav>'
        f'<main id="maincontent" class="nhsuk-main-wrapper" role="main"><article>'
        f"<h1>{html.escape(page.heading)}</h1>{guide}{body_html(page.lines)}"
        '<div class="nhsuk-review-date"><p class="nhsuk-body-s">Page last reviewed: 14 March '
        "2025<br>"
        f"Next review due: 14 March 2028</p></div>{pager}</article></main>",
    )


def _shell(title: str, inner: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{html.escape(title)} - Sample Health A to Z</title>
<script>window.dataLayer = window.dataLayer || [];</script>
<style>.nhsuk-u-visually-hidden{{position:absolute}}</style></head>
<body>
<a class="nhsuk-skip-link" href="#maincontent">Skip to main content</a>
<div id="nhsuk-cookie-banner"><div class="nhsuk-cookie-banner"><h2>Cookies on the sample site</h2>
<p>We've put some small files called cookies on your device to make our site work.</p>
<ul><li><button>I'm OK with analytics cookies</button></li><li><button>Do not use analytics cookies</button></li></ul></div></div>
<header class="nhsuk-header" role="banner"><div class="nhsuk-header__container">
<a class="nhsuk-header__link" href="/">Sample Health A to Z homepage</a>
<form class="nhsuk-header__search-form" role="search"><label for="search-field">Search the site</label><input id="search-field" name="q"></form>
<p class="t0-sample-disclaimer">{DISCLAIMER}</p></div>
<nav class="nhsuk-header__navigation"><ul class="nhsuk-header__navigation-list">
<li><a href="/conditions/">Health A to Z</a></li><li><a href="/live-well/">Live Well</a></li>
<li><a href="/mental-health/">Mental health</a></li><li><a href="/nhs-services/">Care and support</a></li></ul></nav></header>
<div class="nhsuk-width-container">
{inner}
</div>
<footer role="contentinfo"><div class="nhsuk-footer"><h2 class="nhsuk-u-visually-hidden">Support links</h2>
<ul class="nhsuk-footer__list"><li><a href="/about-us/">About us</a></li><li><a href="/contact-us/">Give us feedback</a></li>
<li><a href="/accessibility/">Accessibility statement</a></li><li><a href="/our-policies/cookies-policy/">Our policies</a></li></ul>
<p class="nhsuk-footer__copyright">{DISCLAIMER}</p></div></footer>
<script src="/js/app.js"></script>
</body></html>
"""


def index_html(conditions: list[Condition]) -> str:
    by_letter: dict[str, list[Condition]] = {}
    for cond in sorted(conditions, key=lambda c: c.title.lower()):
        by_letter.setdefault(cond.title[0].upper(), []).append(cond)
    letters = "".join(f'<li><a href="#{k}">{k}</a></li>' for k in by_letter)
    sections = "".join(
        f'<div class="nhsuk-card"><h2 id="{k}">{k}</h2><ul class="nhsuk-list nhsuk-list--border">'
        + "".join(f'<li><a href="{BASE}{c.slug}/">{html.escape(c.title)}</a></li>' for c in conds)
        + '</ul><a class="nhsuk-back-link" href="#nhsuk-nav-a-z">Back to top</a></div>'
        for k, conds in by_letter.items()
    )
    return _shell(
        "Health A to Z",
        f'<main id="maincontent" role="main"><h1>Health A to Z</h1><p>{DISCLAIMER}</p>'
        '<nav id="nhsuk-nav-a-z" class="nhsuk-nav-a-z" aria-label="A to Z '
        f'Navigation"><ol>{letters}</ol></nav>'
        f"{sections}</main>",
    )


def main() -> None:
    conditions: list[Condition] = []
    for path in sorted(SOURCE.glob("*.txt")):
        conditions.extend(parse(path.read_text(encoding="utf-8")))
    if SITE.exists():
        shutil.rmtree(SITE)
    SITE.mkdir(parents=True)
    (SITE / "index.html").write_text(index_html(conditions), encoding="utf-8")
    for cond in conditions:
        for j, page in enumerate(cond.pages):
            folder = SITE / cond.slug if j == 0 else SITE / cond.slug / page.sub
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "index.html").write_text(page_html(cond, j), encoding="utf-8")
    print(
        f"rendered {len(conditions)} conditions, {sum(len(c.pages) for c in conditions)} pages "
        f"into {SITE}"
    )


if __name__ == "__main__":
    main()
