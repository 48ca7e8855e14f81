"""The widget's own buttons in a real browser (Debian's chromium, headless): Undo and Retry change the server's
memory of the conversation, and 👍 is stored with the answer's turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_app_browser import CHROMIUM, CHROMIUM_ARGS

if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

QUESTION = "How should I store my pearls?"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def ask(page, question: str) -> None:
    page.locator("#customer-input textarea").fill(question)
    page.keyboard.press("Enter")
    page.locator("#customer-chat [data-testid='bot'] a[href*='/passages/']").last.wait_for(timeout=180_000)
    page.locator("#customer-chat .pending").wait_for(state="detached", timeout=180_000)


def wait_for(found, page, seconds: float = 30):
    """Poll `found()` (server state the page changed) until it returns something truthy."""
    for _ in range(int(seconds * 5)):
        value = found()
        if value:
            return value
        page.wait_for_timeout(200)
    raise AssertionError("the page's action did not reach the server")


def test_undo_retry_and_like_in_the_browser(browser, app_server):
    base, app = app_server
    services, log = app.state.services, app.state.conversation_log
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"{base}/chat/")
    ask(page, QUESTION)
    turn = [t for t in log.rows("turns") if t["channel"] == "customer_ui"][-1]
    session_id = turn["session_id"]
    assert [t.question for t in services.memory.turns(session_id)] == [QUESTION]

    page.locator("#customer-chat").get_by_role("button", name="Like").last.click()
    feedback = wait_for(lambda: [f for f in log.rows("feedback") if f["session_id"] == session_id], page)
    assert feedback[-1]["turn_id"] == turn["id"] and feedback[-1]["helpful"] == 1

    first_turn = services.memory.turns(session_id)[0].id
    page.locator("#customer-chat").get_by_role("button", name="Retry").last.click()
    turns = wait_for(lambda: [t for t in services.memory.turns(session_id) if t.id != first_turn], page, 180)
    assert [t.question for t in services.memory.turns(session_id)] == [QUESTION] and turns
    page.locator("#customer-chat .pending").wait_for(state="detached", timeout=180_000)

    page.locator("#customer-chat").get_by_role("button", name="Undo").last.click()
    page.locator("#customer-chat [data-testid='bot']").first.wait_for(state="detached", timeout=30_000)
    assert services.memory.turns(session_id) == []
    assert page.locator("#customer-input textarea").input_value() == QUESTION
    page.close()
