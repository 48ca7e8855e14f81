"""The staff page in a real browser: Debian's chromium, headless, driven by Playwright (the customer widget's own
browser tests are tests/test_widget_browser.py and tests/test_webapp_browser_memory.py)."""

from __future__ import annotations

import os
import re
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
    # The passage reads as its original text (capitals, punctuation), not as lowercase word pieces, with the
    # question's words highlighted as whole words and a line saying why it was found.
    first = explanations.locator(".passage").first
    text = first.locator(".passage-text").inner_text()
    assert re.search(r"[A-Z]", text) and re.search(r"[.,:]", text) and "##" not in text
    marks = first.locator("mark.match").all_inner_texts()
    assert len(marks) > 3 and all(mark in text for mark in marks)
    assert any(mark.lower().startswith("discount") for mark in marks), marks
    assert "found closely" in first.locator(".why").inner_text()
    levels = {first.locator("mark.match").nth(i).get_attribute("data-level") for i in range(len(marks))}
    assert len(levels) > 1  # the highlight shows differences between matches
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "staff_lookup.png"), full_page=True)
    page.close()
