"""The customer widget in a real browser (Debian's chromium, headless, driven by Playwright) against the real app:
a shop page embeds it with one script tag; a client opens the launcher, asks, reads a streamed answer with citations
numbered in order, opens a citation and comes back, and taps "talk to a person", at desktop and phone sizes.
axe-core (bundled by the axe-playwright-python package) checks accessibility in the same browser. Screenshots go to
test-artifacts/."""

from __future__ import annotations

import importlib.resources
import re

import pytest

from tests.test_app_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS

pytest.importorskip("playwright")
AXE = (importlib.resources.files("axe_playwright_python") / "axe.min.js").read_text(encoding="utf-8")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
ANSWER_TIMEOUT_MS = 240_000


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def serious_violations(frame) -> list[str]:
    """axe-core's serious and critical violations on the document of `frame` (a Page or a Frame)."""
    frame.evaluate(AXE)
    result = frame.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']}: {v['help']} ({len(v['nodes'])}× e.g. {v['nodes'][0]['target']})"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def watch_streaming(frame) -> None:
    """Remember whether answer text was on screen before the answer was final (i.e. it streamed)."""
    frame.evaluate(
        """() => { window.__streamed = false; new MutationObserver(() => {
             if (document.querySelector('.msg.bot.pending .text p:not(.status)')) window.__streamed = true;
           }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true}); }"""
    )


def in_view(locator, viewport) -> bool:
    box = locator.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"]


def check_citations_in_order(answer) -> int:
    """The answer's citation numbers read 1, 2, 3… in order of first appearance, one per listed source."""
    shown = [int(n) for n in answer.locator(".text sup.cite a").all_inner_texts()]
    firsts = list(dict.fromkeys(shown))
    sources = answer.locator(".sources li a")
    assert firsts == list(range(1, len(firsts) + 1)), shown
    assert sources.count() >= len(firsts) >= 1
    return sources.count()


@pytest.mark.parametrize(("size", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_a_client_uses_the_widget_on_a_shop_page(browser, app_server, size, viewport):
    base, _ = app_server
    SCREENSHOTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base}/embed")
    assert page.locator("script[src$='/widget.js']").count() == 1  # one script tag is the whole integration

    launcher = page.locator("#care-widget button.launcher")
    assert "Chat with Client Care" in launcher.inner_text()
    launcher.click()
    assert launcher.get_attribute("aria-expanded") == "true"
    panel = page.frame_locator("#care-widget iframe")
    panel.locator("#q").wait_for()  # the panel's page has loaded: its frame is there to find
    frame = next(f for f in page.frames if "/chat/" in f.url and "embedded=1" in f.url)
    if size == "phone":
        box = page.locator("#care-widget iframe").bounding_box()
        assert box["width"] == pytest.approx(viewport["width"], abs=1)  # the panel fills the phone's screen
    for fixed in ("header.head", "#ai-notice", "#q"):
        assert in_view(panel.locator(fixed), viewport), fixed
    assert "AI assistant" in panel.locator("#ai-notice").inner_text()
    content = frame.content() + page.content()
    assert "Gradio" not in content and "Use via API" not in content  # no framework footer

    if size == "phone":
        # Markup in a message is shown as text, never run; a question the guides do not answer gets the handoff
        # with real links.
        markup = '<img src=x onerror="window.__pwned=1"> What is the capital of Australia?'
        panel.locator("#q").fill(markup)
        panel.locator("#q").press("Enter")
        handoff = panel.locator(".msg.bot .handoff")
        handoff.wait_for(timeout=ANSWER_TIMEOUT_MS)
        assert markup in panel.locator(".msg.user").last.inner_text()
        assert frame.evaluate("window.__pwned") is None and page.evaluate("window.__pwned") is None
        assert handoff.locator("a.contact-phone").get_attribute("href") == "tel:+33184601911"
        panel.get_by_role("button", name="New conversation").click()
        panel.locator(".msg").first.wait_for(state="detached")

    watch_streaming(frame)
    question = (
        "How much does express delivery cost?"
        if size == "desktop"
        else "How do I care for my calfskin wallet after it gets wet?"
    )
    panel.locator("#q").fill(question)
    panel.locator("#q").press("Enter")
    answer = panel.locator(".msg.bot").last
    try:
        answer.locator(".sources").wait_for(timeout=ANSWER_TIMEOUT_MS)
    except Exception:
        page.screenshot(path=str(SCREENSHOTS / f"widget_{size}_no_sources.png"))
        raise AssertionError(f"no cited answer; the panel shows: {answer.inner_text()!r}") from None
    assert frame.evaluate("window.__streamed") is True
    assert question in panel.locator(".msg.user").last.inner_text()
    count = check_citations_in_order(answer)
    if size == "desktop":
        assert "25" in answer.locator(".text").inner_text()
    for fixed in ("header.head", "#ai-notice", "#q"):  # still on screen after a long answer
        assert in_view(panel.locator(fixed), viewport), fixed
    page.screenshot(path=str(SCREENSHOTS / f"widget_{size}_answer.png"))
    assert serious_violations(frame) == []

    # A citation opens the passage in the panel, styled like it, and the way back returns to the conversation.
    label = answer.locator(".sources li a").first.inner_text()
    title = label.split(" · ")[0]
    answer.locator(".sources li a").first.click()
    panel.locator("main.passage h1").wait_for()
    assert panel.locator("main.passage h1").inner_text() == title
    assert "|---|" not in panel.locator("main.passage").inner_text()
    page.screenshot(path=str(SCREENSHOTS / f"widget_{size}_passage.png"))
    passage_frame = next(f for f in page.frames if "/passages/" in f.url)
    assert serious_violations(passage_frame) == []
    panel.locator("#back").click()
    panel.locator(".msg.bot .sources").wait_for()
    assert panel.locator(".msg.bot .sources li").count() == count  # the conversation is still there

    # "Talk to a person": real tel: and mailto: links and the live-chat hours, from the brand profile.
    panel.locator("#person-btn").click()
    assert panel.locator("#person-btn").get_attribute("aria-expanded") == "true"
    phone = panel.locator("#person a.contact-phone")
    assert phone.get_attribute("href") == "tel:+33184601911" and phone.is_visible()
    assert panel.locator("#person a.contact-email").get_attribute("href") == "mailto:care@corvane.example"
    assert "9:00–21:00" in panel.locator("#person").inner_text()
    page.screenshot(path=str(SCREENSHOTS / f"widget_{size}_person.png"))

    # Closing returns focus to the launcher.
    panel.locator("#q").press("Escape")
    page.locator("#care-widget .panel").wait_for(state="hidden")
    assert page.evaluate("document.activeElement.id") == "care-widget"
    assert serious_violations(page) == []
    assert errors == []
    context.close()


def test_the_panel_is_labelled_and_keyboard_reachable(browser, app_server):
    base, _ = app_server
    page = browser.new_page(viewport=PHONE)
    page.goto(f"{base}/chat/")
    assert page.get_by_label("Your question").count() == 1
    assert page.locator("#close-btn").is_hidden()  # not framed by widget.js: nothing to close
    order = []
    for _ in range(7):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.className"))
    assert order == ["person-btn", "new-btn", "example", "example", "example", "q", "send"]
    assert serious_violations(page) == []
    page.close()


def test_a_passage_renders_its_markdown_table(browser, app_server, kb_assistant):
    base, _ = app_server
    index = kb_assistant.index
    node_id = next(
        i
        for i in index.document_ids()
        if index.get(i).metadata.get("audience") == "public" and re.search(r"\n\|[-| ]+\|\n", index.get(i).text)
    )
    page = browser.new_page(viewport=PHONE)
    page.goto(f"{base}/passages/{node_id.replace('#', '%23')}")
    assert page.locator("article table th").count() >= 2
    assert "|---" not in page.locator("article").inner_text()
    assert page.locator("#back").get_attribute("href") == "/chat/"
    assert serious_violations(page) == []
    page.close()
