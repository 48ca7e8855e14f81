"""The customer page and the staff page in a real browser: Debian's chromium, headless, driven by Playwright."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# The machine's network is closed: without these flags chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("chromium is missing: .ci/run installs it with apt-get install chromium")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_customer_asks_and_gets_a_streamed_cited_answer(browser, app_server):
    base, _ = app_server
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"{base}/chat/")
    assert "AI assistant" in page.locator("#ai-notice").inner_text()
    assert "+33 1 84 60 19 11" in page.locator("#ai-notice").inner_text()

    page.locator("#customer-input textarea").fill("How much does express delivery cost?")
    page.keyboard.press("Enter")
    # The final render adds the linked sources under the streamed text.
    page.locator("#customer-chat [data-testid='bot'] a[href*='/passages/']").first.wait_for(timeout=120_000)
    bot = page.locator("#customer-chat [data-testid='bot']").last
    text = bot.inner_text()
    assert "25" in text
    link = bot.locator("a[href*='/passages/']").first
    assert "Delivery" in link.inner_text()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "customer_chat.png"), full_page=True)

    passage = browser.new_page()
    passage.goto(base + link.get_attribute("href"))
    assert "€25" in passage.content()
    passage.close()
    page.close()


def test_html_in_a_message_is_shown_not_run(browser, app_server):
    base, _ = app_server
    page = browser.new_page()
    page.goto(f"{base}/chat/")
    page.locator("#customer-input textarea").fill(
        '<img src=x onerror="window.__pwned=1"> hi <script>window.__pwned=2</script>'
    )
    page.keyboard.press("Enter")
    page.locator("#customer-chat [data-testid='bot']").last.wait_for(timeout=120_000)
    page.locator("#customer-chat .pending").wait_for(state="detached", timeout=120_000)
    page.wait_for_timeout(500)
    assert "hi" in page.locator("#customer-chat [data-testid='user']").last.inner_text()
    assert page.evaluate("window.__pwned") is None
    page.close()


def test_the_staff_page_refuses_access_without_login(browser, app_server):
    base, _ = app_server
    page = browser.new_page()
    page.goto(f"{base}/staff/")
    page.get_by_text("Maison Corvane staff only.").wait_for(timeout=30_000)
    assert page.locator("#staff-question").count() == 0
    page.close()


def test_staff_sees_internal_documents_and_the_token_explanation(browser, app_server):
    base, _ = app_server
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    page.goto(f"{base}/staff/")
    page.get_by_label("username").fill("staff")
    page.get_by_label("password").fill("correct horse")
    page.keyboard.press("Enter")
    page.locator("#staff-question textarea").fill("What is the maximum discount a boutique manager can approve?")
    page.locator("#staff-ask").click()
    explanations = page.locator("#explanations")
    explanations.wait_for(timeout=120_000)
    assert "internal" in explanations.inner_text()
    assert explanations.locator("mark.match").count() > 3
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "staff_lookup.png"), full_page=True)
    page.close()
