"""The NHS Health A-to Z (www.nhs.uk/conditions) adapter.

NHS pages use the nhsuk frontend: condition links sit in bordered lists on the A-Z
page, multi-page guides list their pages in ``nav.nhsuk-contents-list`` (the current
page as a ``span``), and the page body is ``main#maincontent``.
"""

from __future__ import annotations

import re

from t0_pipeline.corpus.sites import SiteAdapter

NHS = SiteAdapter(
    name="nhs",
    # NHS website content is published under the Open Government Licence v3.0
    license="ogl-uk-3.0",
    license_link="https://www.nationalarchives.gov.uk/doc/open-government-licence/version/3/",
    index_url="https://www.nhs.uk/conditions/",
    condition_url=re.compile(r"/conditions/(?P<slug>[a-z0-9][a-z0-9-]*)/?"),
    index_link_selector="main a[href]",
    subpage_link_selector=(
        "nav.nhsuk-contents-list a.nhsuk-contents-list__link, nav.nhsuk-contents-list "
        "span.nhsuk-contents-list__current"
    ),
    content_selector="main#maincontent, main",
    drop_selectors=(
        "script",
        "style",
        "noscript",
        "template",
        "header",
        "footer",
        "nav",
        "aside",
        "form",
        "#nhsuk-cookie-banner",
        ".nhsuk-cookie-banner",
        ".nhsuk-skip-link",
        ".nhsuk-breadcrumb",
        ".nhsuk-contents-list",
        ".nhsuk-pagination",
        ".nhsuk-review-date",
        ".nhsuk-back-link",
        ".nhsuk-related-nav",
        ".nhsuk-feedback-banner",
        ".nhsuk-print-link",
        ".nhsuk-u-print-only",
    ),
    drop_section_headings=(
        re.compile(r"^\s*contents\s*$", re.I),
        re.compile(r"^\s*further information\b", re.I),
        re.compile(r"^\s*more in\b", re.I),
        re.compile(r"^\s*page last reviewed\b", re.I),
        re.compile(r"^\s*related (conditions|information|links)\b", re.I),
    ),
    drop_line_patterns=(
        re.compile(r"^\s*page last reviewed\b", re.I),
        re.compile(r"^\s*next review due\b", re.I),
        re.compile(r"^\s*(back to top|print this page|skip to main content)\s*$", re.I),
    ),
)
