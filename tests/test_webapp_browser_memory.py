"""The widget's own buttons in a real browser (Debian's chromium, headless): Edit question (undo) and Retry change
the server's memory of the conversation, and 👍 / 👎 with a comment are stored with the answer's turn."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_app_browser import CHROMIUM, CHROMIUM_ARGS

if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

QUESTION = "How do I care for my calfskin wallet after it gets wet?"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def ask(page, question: str) -> None:
    page.locator("#q").fill(question)
    page.keyboard.press("Enter")
    wait_for_answer(page)


def wait_for_answer(page) -> None:
    page.locator(".msg.bot.pending").wait_for(state="detached", timeout=180_000)
    page.locator(".msg.bot .tools").last.wait_for(timeout=30_000)


def wait_for(found, page, seconds: float = 30):
    """Poll `found()` (server state the page changed) until it returns something truthy."""
    for _ in range(int(seconds * 5)):
        value = found()
        if value:
            return value
        page.wait_for_timeout(200)
    raise AssertionError("the page's action did not reach the server")


def test_undo_retry_and_feedback_in_the_browser(browser, app_server):
    base, app = app_server
    services, log = app.state.services, app.state.conversation_log
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(f"{base}/chat/")
    ask(page, QUESTION)
    turn = [t for t in log.rows("turns") if t["channel"] == "api"][-1]
    session_id = turn["session_id"]
    assert turn["question"] == QUESTION
    assert [t.question for t in services.memory.turns(session_id)] == [QUESTION]

    page.get_by_role("button", name="Helpful", exact=True).last.click()
    feedback = wait_for(lambda: [f for f in log.rows("feedback") if f["session_id"] == session_id], page)
    assert feedback[-1]["turn_id"] == turn["id"] and feedback[-1]["helpful"] == 1

    page.get_by_role("button", name="Not helpful").last.click()
    page.get_by_label("What was missing or wrong?").fill("I wanted to know about suede too.")
    page.get_by_label("What was missing or wrong?").press("Enter")
    commented = wait_for(lambda: [f for f in log.rows("feedback") if f["comment"]], page)
    assert commented[-1]["turn_id"] == turn["id"] and commented[-1]["helpful"] == 0
    assert commented[-1]["comment"] == "I wanted to know about suede too."

    first_turn = services.memory.turns(session_id)[0].id
    page.get_by_role("button", name="Ask this question again").click()
    turns = wait_for(lambda: [t for t in services.memory.turns(session_id) if t.id != first_turn], page, 180)
    assert [t.question for t in services.memory.turns(session_id)] == [QUESTION] and turns
    wait_for_answer(page)
    assert page.locator(".msg.user").count() == 1

    page.get_by_role("button", name="Edit question").click()
    page.locator(".msg.bot").first.wait_for(state="detached", timeout=30_000)
    wait_for(lambda: services.memory.turns(session_id) == [], page)
    assert page.locator("#q").input_value() == QUESTION

    # A new conversation ends the old one on the server.
    ask(page, "How should I store my pearls?")
    page.get_by_role("button", name="New conversation").click()
    wait_for(lambda: services.sessions.audience_of(session_id) is None, page)
    # The page clears its messages once the server has answered the reset, which may come after the server's side.
    page.locator(".msg").first.wait_for(state="detached", timeout=30_000)
    assert page.locator(".msg").count() == 0
    page.close()
