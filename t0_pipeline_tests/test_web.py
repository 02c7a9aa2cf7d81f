"""The chat page in headless Chromium (Debian's package, driven by Playwright); screenshots are
kept.

Screenshots go to ``$T0_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the repository), with the
accessibility audit's findings (``axe-*.json``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from t0_pipeline_tests.fake_llm import FakeLLM
from t0_pipeline_tests.serving import REASONER_MARK, free_port, running, script
from t0_pipeline_tests.test_serve import make_app, reasoner_requests

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("T0_TEST_ARTIFACTS", ROOT / "test-artifacts"))
AXE = Path(
    os.environ.get(
        "T0_AXE_JS", ROOT / ".venv" / "node" / "node_modules" / "axe-core" / "axe.min.js"
    )
)
PHONE, DESKTOP = {"width": 390, "height": 844}, {"width": 1366, "height": 768}

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and os.environ.get("CI") != "true",
    reason="no Chromium here; `apt-get install chromium` (CI installs it)",
)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def open_page(browser, viewport, **kw):
    """A page with the service's CSP not enforced: Playwright's own waits and axe are evaluated
    scripts. The sanitising is thereby tested on its own (the CSP is a second line, checked in
    test_serve_hardening)."""
    return browser.new_page(viewport=viewport, bypass_csp=True, **kw)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)


def wait_answer(page, text: str) -> None:
    page.wait_for_function(
        "t => [...document.querySelectorAll('.msg.assistant .answer')].some(e => "
        "e.textContent.trim() === t)",
        arg=text,
    )


def tab_to(page, selector: str, limit: int = 60, back: bool = False) -> None:
    """Press Tab (Shift+Tab) until the focused element matches ``selector``: keyboard only."""
    for _ in range(limit):
        if page.evaluate(
            "s => document.activeElement && document.activeElement.matches(s)", selector
        ):
            return
        page.keyboard.press("Shift+Tab" if back else "Tab")
    raise AssertionError(f"{selector} cannot be reached with the keyboard")


def test_chat_page_streams_markdown_reasoning_sources_details_and_threads(
    built, retriever, tmp_path, browser
):
    with FakeLLM() as server:
        script(server, latency_s=0.02)
        app, _ = make_app(built, retriever, tmp_path, server.api_base)
        with running(app) as url:
            page = open_page(browser, DESKTOP)
            page.goto(url)
            page.wait_for_selector("body[data-ready]")  # start() has filled the form
            assert "Not medical advice" in page.inner_text("#notice")

            page.click("text=About you")
            page.fill("#demographics input[name=age]", "67")
            page.select_option("#demographics select[name=sex]", "female")
            page.fill("#demographics input[name=occupation]", "retired teacher")
            page.fill("#demographics textarea[name=medical_history]", "type 2 diabetes")
            page.click("#demographics button[type=submit]")
            page.wait_for_selector("#demographics-status:has-text('Saved')")

            page.fill("#input", "My big toe is red, hot and swollen")
            page.click("#send")
            wait_answer(page, "Answer to: My big toe is red, hot and swollen")
            reasoning = page.locator(".msg.assistant details.reasoning").last
            assert not reasoning.evaluate("d => d.open")
            reasoning.locator("summary").click()
            assert (
                reasoning.evaluate("d => d.open")
                and "I compared the documents" in reasoning.inner_text()
            )
            links = page.locator(".msg.assistant .sources a")
            assert links.count() == 5 and links.first.get_attribute("href").startswith("http")
            shot(page, "chat-desktop")
            sent = reasoner_requests(server)[-1]["messages"][0]["content"]
            assert '"age": 67' in sent and "retired teacher" in sent and "type 2 diabetes" in sent

            assert page.locator("#threads li.active .thread").inner_text().startswith("My big toe")
            page.click("#new-thread")
            page.wait_for_function("document.querySelectorAll('#threads li').length === 2")
            assert page.locator(".msg").count() == 0
            # the person's details are theirs: a new conversation starts with them; "Saved" does not
            # linger
            assert page.input_value("#demographics input[name=age]") == "67"
            assert page.inner_text("#demographics-status") == ""
            page.fill("#input", "hello")
            page.click("#send")
            wait_answer(page, "Hello! How can I help you today?")
            page.locator("#threads .thread", has_text="My big toe").click()
            page.wait_for_function(
                "document.querySelector('.msg.user')?.textContent.includes('big toe')"
            )
            assert page.locator(".msg").count() == 2


def test_phone_and_desktop_layouts(built, retriever, tmp_path, browser):
    with FakeLLM() as server:
        script(server)
        app, _ = make_app(built, retriever, tmp_path, server.api_base)
        with running(app) as url:
            page = open_page(browser, PHONE, is_mobile=True, has_touch=True)
            page.goto(url)
            page.fill("#input", "I have had a **sore** throat for two days")
            page.click("#send")
            # Markdown, rendered
            wait_answer(page, "Answer to: I have had a sore throat for two days")
            assert page.locator(".msg.assistant .answer strong").count() == 1
            box = page.locator("#input").bounding_box()
            assert box["width"] >= 300, box
            send = page.locator("#send").bounding_box()
            assert (
                send["y"] + send["height"] <= PHONE["height"]
                and box["y"] + box["height"] <= PHONE["height"]
            )
            assert not page.locator("#sidebar").is_visible()  # a drawer on a phone
            shot(page, "chat-phone")
            page.click("#drawer-toggle")
            page.wait_for_function(
                "getComputedStyle(document.querySelector('#sidebar')).transform === 'none'"
            )
            assert page.locator("#drawer-toggle").get_attribute("aria-expanded") == "true"
            assert page.locator("#threads .thread").count() == 1
            shot(page, "chat-phone-drawer")
            page.keyboard.press("Escape")
            assert page.locator("#drawer-toggle").get_attribute("aria-expanded") == "false"

            desktop = open_page(browser, DESKTOP)
            desktop.goto(url)
            desktop.wait_for_selector("#threads .thread")
            assert (
                desktop.locator("#sidebar").is_visible()
                and not desktop.locator("#drawer-toggle").is_visible()
            )
            assert desktop.locator("#input").bounding_box()["width"] >= 600


class HostileSources:
    """The real retriever, with the first source's URL replaced as a hostile corpus page could set
    it."""

    def __init__(self, real):
        self.real, self.docs = real, real.docs

    def search(self, query, k=5, mode=None):
        hits = self.real.search(query, k, mode)
        return [dataclasses.replace(hits[0], url="javascript:window.__pwned='source'"), *hits[1:]]


PAYLOAD = (
    "**Gout** is likely.\n\n- rest the joint\n- see a GP\n\n<img src=x "
    "onerror=\"window.__pwned='img'\"> <script>window.__pwned='script'</script>\n\n[click "
    "me](javascript:window.__pwned='link') or [the NHS page](https://www.nhs.uk/conditions/gout/)"
)
THINKING = (
    "I weighed **gout** <img src=y onerror=\"window.__pwned='thinking'\"> "
    "[x](javascript:window.__pwned='t')"
)


def test_model_output_and_corpus_urls_cannot_run_script(built, retriever, tmp_path, browser):
    with FakeLLM() as server:
        server.on(REASONER_MARK, PAYLOAD, reasoning=THINKING)
        script(server)
        app, _ = make_app(built, HostileSources(retriever), tmp_path, server.api_base)
        with running(app) as url:
            page = open_page(browser, DESKTOP)
            page.goto(url)
            page.fill("#input", "my toe <img src=z onerror=\"window.__pwned='user'\">")
            page.click("#send")
            page.wait_for_selector(".msg.assistant .answer strong")
            answer = page.locator(".msg.assistant .answer").last
            assert (
                answer.locator("li").count() == 2
                and answer.locator("strong").inner_text() == "Gout"
            )
            assert page.locator(".msg img, .msg script").count() == 0
            assert "<img src=x" in answer.inner_text()  # raw HTML from the model is shown as text
            bad = answer.locator("a", has_text="click me")
            assert bad.get_attribute("href") is None
            good = answer.locator("a", has_text="the NHS page")
            assert good.get_attribute("href") == "https://www.nhs.uk/conditions/gout/"
            assert good.get_attribute("rel") == "noopener noreferrer"
            first_source = page.locator(".msg.assistant .sources > *").first
            assert first_source.evaluate("e => e.tagName") == "SPAN"  # not a link
            bad.click()
            first_source.click()
            page.locator(".msg.assistant details.reasoning summary").last.click()
            thinking = page.locator(".msg.assistant .thinking").last
            assert (
                thinking.locator("strong").inner_text() == "gout"
                and thinking.locator("a").get_attribute("href") is None
            )
            page.wait_for_timeout(300)
            assert page.evaluate("window.__pwned") is None
            shot(page, "chat-hostile-output")


def test_keyboard_only_create_switch_delete_send_and_open_reasoning(
    built, retriever, tmp_path, browser
):
    with FakeLLM() as server:
        script(server)
        app, _ = make_app(built, retriever, tmp_path, server.api_base)
        with running(app) as url:
            page = open_page(browser, DESKTOP)
            page.goto(url)
            page.wait_for_load_state("networkidle")
            tab_to(page, "#new-thread")
            # focus is visible
            assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
            page.keyboard.press("Enter")
            page.wait_for_function("document.activeElement.id === 'input'")
            page.keyboard.type("hello")
            page.keyboard.press("Enter")
            wait_answer(page, "Hello! How can I help you today?")
            tab_to(page, "#new-thread", back=True)
            page.keyboard.press("Enter")
            page.wait_for_function("document.querySelectorAll('#threads li').length === 2")
            page.keyboard.type("my ear hurts")
            page.keyboard.press("Enter")
            wait_answer(page, "Answer to: my ear hurts")
            tab_to(page, ".msg.assistant details.reasoning summary")
            page.keyboard.press("Enter")
            assert page.locator(".msg.assistant details.reasoning").last.evaluate("d => d.open")
            # the first conversation ("hello")
            tab_to(page, "#threads li:nth-child(2) .thread", back=True)
            page.keyboard.press("Enter")
            page.wait_for_function("document.querySelector('.msg.user')?.textContent === 'hello'")
            tab_to(page, "#threads li:nth-child(2) .delete")
            page.keyboard.press("Enter")
            # asks first, safe choice focused
            page.wait_for_function("document.activeElement.textContent === 'Keep'")
            assert page.locator("#threads li").count() == 2
            page.keyboard.press("Shift+Tab")
            assert page.evaluate("document.activeElement.textContent") == "Delete"
            page.keyboard.press("Enter")
            page.wait_for_function("document.querySelectorAll('#threads li').length === 1")
            assert page.locator("#threads .thread").inner_text().startswith("my ear hurts")


def start_model_process(port: int, chunk_delay: float) -> subprocess.Popen:
    """The scripted model server as its own process (agent tool call + a long streamed answer),
    killable."""
    answer = " ".join(["Gout"] + [f"word{i}" for i in range(60)])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "t0_pipeline_tests.fake_llm",
            "--port",
            str(port),
            "--reply",
            answer,
            "--tool",
            "search_health_information",
            json.dumps({"query": "red hot toe"}),
            "--enable-auto-tool-choice",
            "--tool-call-parser",
            "hermes",
            "--chunk-delay",
            str(chunk_delay),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("INFO: serving"):
            return proc
    raise RuntimeError("the model server process did not start")


def test_model_server_killed_mid_answer_then_back_and_retry(built, retriever, tmp_path, browser):
    port = free_port()
    proc = start_model_process(port, chunk_delay=0.1)
    try:
        app, _ = make_app(built, retriever, tmp_path, f"http://127.0.0.1:{port}/v1")
        with running(app) as url:
            page = open_page(browser, DESKTOP)
            page.goto(url)
            page.fill("#input", "my big toe is red and hot")
            page.click("#send")
            page.wait_for_function(
                "document.querySelector('.msg.assistant .answer')?.textContent.includes('word3')"
            )
            proc.kill()  # SIGKILL, mid-answer
            proc.wait()
            page.wait_for_selector(".msg.error")
            error = page.locator(".msg.error")
            assert "stopped before finishing" in error.locator("p").inner_text()
            # the technical line is folded away
            assert not error.locator("details").evaluate("d => d.open")
            assert "litellm" not in error.locator("p").inner_text()
            # no half or empty reply left
            assert page.locator(".msg.assistant:not(.error)").count() == 0
            assert page.locator(".msg.user.failed .failure button").inner_text() == "Retry"
            shot(page, "chat-model-killed")
            page.reload()  # the failure is stored: it is still shown, and not silently resent
            page.wait_for_selector(".msg.user.failed")

            proc = start_model_process(port, chunk_delay=0.0)
            page.click(".msg.user.failed .failure button")
            page.wait_for_function(
                "document.querySelector('.msg.assistant .answer')?.textContent.includes('word59')"
            )
            assert (
                page.locator(".msg.user.failed").count() == 0
                and page.locator(".msg.error").count() == 0
            )
            page.reload()
            page.wait_for_selector(".msg.assistant .answer")
            assert (
                page.locator(".msg").count() == 2 and page.locator(".msg.user.failed").count() == 0
            )
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(
    not AXE.exists() and os.environ.get("CI") != "true",
    reason="axe-core not installed (`make install` fetches it with npm)",
)
def test_accessibility_audit_finds_nothing_serious(built, retriever, tmp_path, browser):
    findings = {}
    with FakeLLM() as server:
        script(server)
        app, _ = make_app(built, retriever, tmp_path, server.api_base)
        with running(app) as url:
            for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
                page = open_page(browser, viewport)
                page.goto(url)
                page.fill("#input", "my ear hurts")
                page.click("#send")
                wait_answer(page, "Answer to: my ear hurts")
                page.click("text=About you")
                page.locator(".msg.assistant details.reasoning summary").last.click()
                page.add_script_tag(path=str(AXE))
                result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
                findings[name] = [
                    {
                        "id": v["id"],
                        "impact": v["impact"],
                        "help": v["help"],
                        "nodes": len(v["nodes"]),
                    }
                    for v in result["violations"]
                ]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "axe-findings.json").write_text(json.dumps(findings, indent=2))
    serious = [
        (name, v)
        for name, vs in findings.items()
        for v in vs
        if v["impact"] in ("serious", "critical")
    ]
    assert not serious, serious


def test_another_domain_s_page_speaks_its_words_and_asks_its_profile(
    built, retriever, tmp_path, browser
):
    """The IT desk's domain: the page's title, notice and placeholder are its own, the details
    form asks for its profile fields (its choices suggested), and what is saved comes back."""
    cfg, paths = built
    it_desk = ROOT / "examples" / "it-desk" / "domain.yaml"
    with FakeLLM() as server:
        app, _ = make_app(
            (cfg.model_copy(update={"domain": str(it_desk)}), paths),
            retriever,
            tmp_path,
            server.api_base,
        )
        with running(app) as url:
            page = open_page(browser, DESKTOP)
            page.goto(url)
            page.wait_for_selector("#demographics input[name=department]", state="attached")
            page.wait_for_selector("body[data-ready]")  # start() has filled the form
            assert page.title() == "Kestrel IT help" and page.inner_text("h1") == "Kestrel IT help"
            assert "urgent line" in page.inner_text("#notice")
            assert "health" not in page.inner_text("header").lower()
            assert page.get_attribute("#input", "placeholder") == "Describe what is going wrong…"
            assert page.locator("#demographics input[name=age]").count() == 0
            page.click("#demographics-box summary")
            page.fill("#demographics input[name=department]", "Finance")
            page.fill("#demographics input[name=years_at_company]", "7")
            options = page.locator("#choices-device option").count()
            page.click("#demographics button[type=submit]")
            page.wait_for_selector("#demographics-status:has-text('Saved')")
            shot(page, "chat-it-desk-profile")
            # the details reached the service as the domain's fields, the number as a number
            saved = httpx.get(f"{url}/api/me/demographics", timeout=30).json()
    assert options == 6
    assert saved == {"department": "Finance", "years_at_company": 7}
