"""Crawler against a real loopback HTTP server (ETags, robots.txt, failures) and local sources."""

from __future__ import annotations

import asyncio
import shutil
import time

import polars as pl
import pytest

from t0_pipeline.artifacts import T0Error
from t0_pipeline.config import DataPaths, PageFields, SourceConfig
from t0_pipeline.corpus.crawl import crawl_async, run_crawl
from t0_pipeline.corpus.pages_file import read_pages_file
from t0_pipeline_tests.conftest import write_jsonl
from t0_pipeline_tests.fixture_site import FixtureSite


def http_config(site: FixtureSite, **overrides) -> SourceConfig:
    base = dict(
        kind="site",
        location=site.index_url,
        delay_s=0.0,
        backoff_s=0.05,
        max_attempts=3,
        timeout_s=5.0,
        concurrency=4,
        user_agent="t0-test-crawler/1.0",
    )
    return SourceConfig(**{**base, **overrides})


def crawl(config, previous=None):
    return asyncio.run(crawl_async(config, previous))


def test_http_crawl_joins_subpages_in_order_and_excludes_aggregate_page(site):
    df, report = crawl(http_config(site))
    assert report.conditions == 41 and not report.failed
    assert report.excluded == ["mental-health"] and "mental-health" not in df["slug"].to_list()
    stroke = df.filter(pl.col("slug") == "stroke").sort("part")
    assert stroke["page_url"].to_list() == [
        site.index_url + p for p in ("stroke/", "stroke/symptoms/", "stroke/treatment/")
    ]
    assert stroke["body"][1].count("Symptoms of stroke") >= 1
    assert all(len(h) == 64 for h in df["content_hash"]) and df["etag"].null_count() == 0
    assert site.state.user_agents == {"t0-test-crawler/1.0"}
    assert not site.requests_to("/conditions/mental-health/")


def test_recrawl_sends_conditional_requests_and_reports_only_the_changed_page(site):
    first, _ = crawl(http_config(site))
    edited = (
        (site.state.root / "acne" / "index.html").read_bytes().replace(b"oily skin", b"greasy skin")
    )
    site.state.overrides["/conditions/acne/"] = edited
    site.state.hits.clear()
    second, report = crawl(http_config(site), previous=first)
    assert report.changed == ["acne"] and not report.new and len(report.unchanged) == 40
    assert report.not_modified == first.height - 1  # every page but the edited one answered 304
    assert second.filter(pl.col("slug") == "acne")["body"][0].count("greasy skin") == 1
    assert (
        second.filter(pl.col("slug") != "acne")["body"].to_list()
        == first.filter(pl.col("slug") != "acne")["body"].to_list()
    )


def test_transient_errors_are_retried_and_retry_after_is_honoured(site):
    site.state.fail["/conditions/gout/"] = [500, 429]
    site.state.retry_after = "1"
    started = time.monotonic()
    df, report = crawl(http_config(site))
    assert site.requests_to("/conditions/gout/") == [500, 429, 200]
    assert time.monotonic() - started >= 1.0  # waited for Retry-After: 1
    assert "gout" in df["slug"].to_list() and not report.failed


def test_persistent_failures_are_reported_per_page_and_previous_version_kept(site):
    first, _ = crawl(http_config(site))
    site.state.always["/conditions/sepsis/"] = 503
    site.state.always["/conditions/asthma/treatment/"] = 404
    second, report = crawl(http_config(site, max_attempts=2), previous=first)
    failed = {f["slug"]: f["error"] for f in report.failed}
    assert failed["sepsis"] == "HTTP 503 after 2 attempts"
    assert failed["asthma"] == "HTTP 404"  # a 404 is final: not retried
    assert site.requests_to("/conditions/asthma/treatment/").count(404) == 1
    kept = second.filter(pl.col("slug").is_in(["sepsis", "asthma"]))
    assert kept.height == first.filter(pl.col("slug").is_in(["sepsis", "asthma"])).height
    assert report.conditions == 41


def test_robots_txt_disallow_is_obeyed(site):
    site.state.robots = "User-agent: *\nDisallow: /conditions/acne/\n"
    df, report = crawl(http_config(site))
    assert "acne" not in df["slug"].to_list()
    assert report.disallowed == [site.index_url + "acne/"]
    assert not site.requests_to("/conditions/acne/")


def test_timeouts_fail_only_the_slow_page(site):
    site.state.slow["/conditions/gout/"] = 1.5
    df, report = crawl(http_config(site, timeout_s=0.3, max_attempts=2))
    assert [f["slug"] for f in report.failed] == ["gout"]
    assert "timed out" in report.failed[0]["error"]
    assert df.select(pl.col("slug").n_unique()).item() == 40


def test_non_utf8_bytes_are_replaced_and_reported(site):
    body = (
        (site.state.root / "gout" / "index.html")
        .read_bytes()
        .replace(b"Gout is", b"Gout \xe9\xff is")
    )
    site.state.overrides["/conditions/gout/"] = body
    df, report = crawl(http_config(site))
    assert any("gout" in w and "not valid utf-8" in w for w in report.warnings)
    assert "\ufffd" in df.filter(pl.col("slug") == "gout")["body"][0]


def test_unreachable_site_is_one_clear_error_and_previous_corpus_survives(tmp_path, site):
    paths = DataPaths(tmp_path / "data")
    run_crawl(http_config(site), paths)
    before = paths.pages.read_bytes()
    with pytest.raises(T0Error, match="could not be read"):
        run_crawl(
            SourceConfig(
                kind="site", location="http://127.0.0.1:9/conditions/", max_attempts=1, timeout_s=1
            ),
            paths,
        )
    with pytest.raises(T0Error, match="could not fetch the index page"):
        run_crawl(
            SourceConfig(
                kind="site",
                location="http://127.0.0.1:9/conditions/",
                respect_robots=False,
                max_attempts=1,
                timeout_s=1,
            ),
            paths,
        )
    assert paths.pages.read_bytes() == before


def test_mirror_without_index_page_is_discovered_from_folders(tmp_path, sample_site):
    root = tmp_path / "partial"
    for slug in ("gout", "stroke", "acne"):
        shutil.copytree(sample_site / slug, root / slug)
    df, report = crawl(SourceConfig(kind="mirror", location=str(root)))
    assert sorted(df["slug"].unique().to_list()) == ["acne", "gout", "stroke"]
    assert df.filter(pl.col("slug") == "stroke").height == 3


def test_pages_file_with_custom_field_names(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "name": "Alpha", "link": "u/a", "body": "Alpha text about pain."},
            {"id": "b", "name": "Beta", "link": "u/b", "body": "Beta text about rash."},
        ],
    )
    cfg = SourceConfig(
        kind="pages",
        location=str(path),
        fields=PageFields(slug="id", title="name", url="link", text="body"),
    )
    df = read_pages_file(cfg)
    assert df["slug"].to_list() == ["a", "b"] and df["format"].unique().to_list() == ["text"]


@pytest.mark.parametrize(
    "rows, raw, message",
    [
        (
            [{"slug": "a", "title": "A", "text": ""}],
            None,
            r"record 1: missing or empty field\(s\) 'text'",
        ),
        (
            [{"slug": "a", "title": "A", "text": "x"}, {"slug": "a", "title": "B", "text": "y"}],
            None,
            "duplicate slug",
        ),
        (
            None,
            b'{"slug": "a", "title": "A", "text": "ok"}\n{"slug": "b", "title": "\xff"}\n',
            r"p.jsonl:2 is not valid UTF-8",
        ),
        (
            None,
            b'{"slug": "a", "title": "A", "text": "ok"}\n{"slug": \n',
            r"p.jsonl:2 is not valid JSON",
        ),
    ],
)
def test_bad_pages_file_names_the_record_and_field(tmp_path, rows, raw, message):
    path = tmp_path / "p.jsonl"
    if raw is not None:
        path.write_bytes(raw)
    else:
        write_jsonl(path, rows)
    with pytest.raises(T0Error, match=message):
        read_pages_file(SourceConfig(kind="pages", location=str(path)))
