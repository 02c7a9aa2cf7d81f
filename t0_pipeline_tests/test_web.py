"""The chat page in headless Chromium (Debian's package, driven by Playwright); screenshots are kept.

Screenshots go to ``$T0_TEST_ARTIFACTS`` (default ``test-artifacts/`` in the repository).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from t0_pipeline_tests.fake_llm import FakeLLM
from t0_pipeline_tests.serving import running, script
from t0_pipeline_tests.test_serve import make_app, reasoner_requests

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("T0_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))

pytestmark = pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                                reason="no Chromium here; `apt-get install chromium` (CI installs it)")


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_chat_page_streams_shows_reasoning_sources_demographics_and_threads(built, retriever, tmp_path, browser):
    with FakeLLM() as server:
        script(server, latency_s=0.02)
        app, _ = make_app(built, retriever, tmp_path, server.api_base)
        with running(app) as url:
            page = browser.new_page()
            page.goto(url)
            assert "Not medical advice" in page.inner_text("#notice")

            page.click("text=About you")
            page.fill("#demographics input[name=age]", "67")
            page.select_option("#demographics select[name=sex]", "female")
            page.fill("#demographics input[name=occupation]", "retired teacher")
            page.fill("#demographics textarea[name=medical_history]", "type 2 diabetes")
            page.click("#demographics button[type=submit]")
            page.wait_for_selector("#demographics-status:has-text('Saved.')")

            page.fill("#input", "My big toe is red, hot and swollen")
            page.click("#send")
            answer = page.locator(".msg.assistant .answer").last
            answer.wait_for()
            page.wait_for_function("document.querySelector('.msg.assistant .answer').textContent"
                                   " === 'Answer to: My big toe is red, hot and swollen'")
            reasoning = page.locator(".msg.assistant details.reasoning").last
            assert not reasoning.evaluate("d => d.open")
            reasoning.locator("summary").click()
            assert reasoning.evaluate("d => d.open")
            assert "I compared the documents" in reasoning.inner_text()
            links = page.locator(".msg.assistant .sources a")
            assert links.count() == 5 and links.first.get_attribute("href").startswith("http")
            shot(page, "chat-answer-with-reasoning")
            sent = reasoner_requests(server)[-1]["messages"][0]["content"]
            assert '"age": 67' in sent and "retired teacher" in sent and "type 2 diabetes" in sent

            first_title = page.locator("#threads li.active span").inner_text()
            assert first_title.startswith("My big toe")
            page.click("#new-thread")
            page.wait_for_function("document.querySelectorAll('#threads li').length === 2")
            assert page.locator(".msg").count() == 0
            page.fill("#input", "hello")
            page.click("#send")
            page.wait_for_function("[...document.querySelectorAll('.msg.assistant .answer')]"
                                   ".some(e => e.textContent === 'Hello! How can I help you today?')")
            shot(page, "chat-second-thread")
            page.locator("#threads li", has_text="My big toe").click()
            page.wait_for_function("document.querySelector('.msg.user') && "
                                   "document.querySelector('.msg.user').textContent.includes('big toe')")
            assert page.locator(".msg").count() == 2 and page.input_value("#demographics input[name=age]") == "67"
            shot(page, "chat-switched-back")

            page.locator("#threads li", has_text="hello").locator("button").click()
            page.wait_for_function("document.querySelectorAll('#threads li').length === 1")


def test_chat_page_shows_readable_errors(built, retriever, tmp_path, browser):
    with FakeLLM() as server:
        script(server)
        app, _ = make_app(built, retriever, tmp_path, server.api_base)
        app.state.service.cfg.llm.roles["reasoner"].api_base = "http://127.0.0.1:9/v1"  # nothing listens there
        with running(app) as url:
            page = browser.new_page()
            page.goto(url)
            page.fill("#input", "My ear hurts")
            page.click("#send")
            page.wait_for_selector("#error:not([hidden])")
            assert "could not answer" in page.inner_text("#error") and "reasoner model" in page.inner_text("#error")
            shot(page, "chat-backend-error")
