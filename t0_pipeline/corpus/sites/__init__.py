"""Site adapters: everything specific to one website (URL patterns, selectors, boilerplate).

The crawler and cleaner are generic; they ask an adapter where the condition links are,
which sub-pages make up one document, and which parts of a page are boilerplate. A new
site needs only a new :class:`SiteAdapter` registered in :data:`ADAPTERS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from bs4 import BeautifulSoup

from t0_pipeline.artifacts import T0Error


@dataclass(frozen=True)
class ConditionLink:
    slug: str
    title: str
    url: str


@dataclass(frozen=True)
class SiteAdapter:
    """Selectors and URL patterns for one site. Instances are plain data; see ``nhs.py``."""

    name: str
    index_url: str  # the A-to-Z page listing every condition
    condition_url: re.Pattern[str]  # matches a condition's main page path; group "slug"
    index_link_selector: str  # CSS selector for candidate links on the index page
    subpage_link_selector: str  # CSS selector for a multi-page guide's page links, in order
    content_selector: str  # CSS selector of the element holding the page's own content
    drop_selectors: tuple[str, ...]  # boilerplate removed before text extraction
    # heading text → drop section
    drop_section_headings: tuple[re.Pattern[str], ...] = field(default_factory=tuple)
    # stray boilerplate lines
    drop_line_patterns: tuple[re.Pattern[str], ...] = field(default_factory=tuple)
    # the pages' licence, for the dataset and model cards (source.license overrides it)
    license: str | None = None
    license_link: str | None = None

    def condition_links(self, index_html: str, index_url: str) -> list[ConditionLink]:
        """Condition pages linked from the index, in page order, first link per slug."""
        soup = BeautifulSoup(index_html, "lxml")
        seen: dict[str, ConditionLink] = {}
        for a in soup.select(self.index_link_selector):
            href = a.get("href")
            if not href:
                continue
            url = urljoin(index_url, href)
            slug = self.slug_for(url)
            if slug is None or slug in seen:
                continue
            seen[slug] = ConditionLink(slug=slug, title=a.get_text(" ", strip=True), url=url)
        return list(seen.values())

    def slug_for(self, url: str) -> str | None:
        """The condition slug if ``url`` is a condition's main page, else None."""
        match = self.condition_url.fullmatch(urlsplit(url).path)
        return match.group("slug") if match else None

    def subpage_urls(self, page_html: str, page_url: str) -> list[str]:
        """All pages of a multi-page guide in reading order, starting with ``page_url``.

        The current page appears in the guide's contents list without a link, so it is
        inserted at its own position; a page with no contents list is a single page.
        """
        soup = BeautifulSoup(page_html, "lxml")
        items = soup.select(self.subpage_link_selector)
        urls: list[str] = []
        base = _normalise(page_url)
        for item in items:
            href = item.get("href") if item.name == "a" else None
            url = base if href is None else _normalise(urljoin(page_url, href))
            if url.startswith(base.rsplit("/", 2)[0]) and url not in urls:
                urls.append(url)
        if base not in urls:
            urls.insert(0, base)
        return urls


def _normalise(url: str) -> str:
    url = url.split("#", 1)[0]
    return url if url.endswith("/") else url + "/"


def get_adapter(name: str) -> SiteAdapter:
    from t0_pipeline.corpus.sites.nhs import NHS

    adapters = {NHS.name: NHS}
    if name not in adapters:
        raise T0Error(
            f"unknown site adapter {name!r}; choose one of {sorted(adapters)} or register a new "
            "one in t0_pipeline/sites."
        )
    return adapters[name]


# An HTML file of a documents folder (an export, a saved page): its main content when marked, else
# its body, without the navigation, banners and scripts around it.
DOCUMENT_HTML = SiteAdapter(
    name="documents",
    index_url="",
    condition_url=re.compile(r"(?!)"),
    index_link_selector="",
    subpage_link_selector="",
    content_selector="main, article, [role=main]",
    drop_selectors=(
        "script",
        "style",
        "noscript",
        "nav",
        "header",
        "footer",
        "aside",
        "form",
        "[role=navigation]",
        "[role=banner]",
        "[role=contentinfo]",
    ),
)
