"""The widget's pages and helpers without a server: everything client-facing comes from the brand profile (the
second bundled house renders with nothing of the first), profile values cannot inject markup, passages render
their Markdown safely, and citation markers are renumbered in order also when a marker is cut between deltas."""

from __future__ import annotations

import re
from pathlib import Path

from colbert_att_assistant.assistant.brand import BRANDS_DIR, BrandProfile
from colbert_att_assistant.webapp.brand_view import brand_css, contact_actions, tel_href
from colbert_att_assistant.webapp.openai_door import Renumber, slug
from colbert_att_assistant.webapp.passages import compact_label, markdown_html, passage_body
from colbert_att_assistant.webapp.widget import embed_page, panel_page, passage_html

CORVANE = BrandProfile.load(BRANDS_DIR / "maison-corvane.yaml")
WIX = BrandProfile.load(BRANDS_DIR / "wix-help-centre.yaml")
WEBAPP = Path(__file__).resolve().parent.parent / "colbert_att_assistant" / "webapp"


def test_no_house_is_written_in_the_webapp():
    paths = [*WEBAPP.glob("*.py"), *WEBAPP.glob("static/*")]
    assert len(paths) > 10, f"the webapp's files are not under {WEBAPP}"
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for written in ("Corvane", "+33", "corvane.example", "Wix"):
            assert written not in text, f"{written!r} is written in {path.name}: it belongs in the brand profile"


def test_another_house_renders_with_its_own_words_only():
    page = panel_page(WIX) + passage_html(WIX, "About Wix Payments", "", "Text") + embed_page(WIX, "https://x.test")
    assert WIX.name in page and WIX.strings.notice in page and WIX.strings.examples[0] in page
    assert "Corvane" not in page and "+33" not in page
    # Its only contact is a help centre: the "talk to a person" list links there and offers no phone.
    assert [action.kind for action in contact_actions(WIX)] == ["help"]
    assert "href='https://support.wix.com'" in page and "tel:" not in page


def test_the_corvane_panel_offers_real_contact_links():
    page = panel_page(CORVANE)
    assert "href='tel:+33184601911'" in page and "href='mailto:care@corvane.example'" in page
    assert CORVANE.contacts.live_chat_hours in page
    assert tel_href("+33 (1) 84-60-19-11") == "tel:+33184601911"


def test_profile_values_cannot_inject_markup():
    hostile = CORVANE.model_copy(deep=True)
    hostile.name = "<script>alert(1)</script>"
    hostile.style.primary_colour = "red;}</style><script>alert(2)</script>"
    hostile.strings.examples = ["<img src=x onerror=alert(3)>"]
    page = panel_page(hostile)
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "alert(2)" not in brand_css(hostile) and "--brand-primary:#1f1f1f" in brand_css(hostile)
    # The configuration block cannot be closed early by a value.
    config = re.search(r"<script type='application/json' id='config'>(.*?)</script>", page, re.S).group(1)
    assert "</" not in config


def test_passages_render_markdown_tables_and_escape_html():
    table = "| Finish | Interval |\n|---|---|\n| Smooth | 3 months |"
    text = f"Caring > Storing\n\nKeep it **dry**.\n\n{table}\n\n<b>raw</b>"
    body = passage_body(text, "Caring", "Storing")
    assert body.startswith("Keep it")
    rendered = markdown_html(body)
    assert "<table>" in rendered and "<th>Finish</th>" in rendered and "<strong>dry</strong>" in rendered
    assert "<b>raw</b>" not in rendered and "&lt;b&gt;raw&lt;/b&gt;" in rendered
    assert "href" not in markdown_html("[x](javascript:alert(1))")  # refused as a link, shown as text


def test_compact_citation_labels():
    section = "When a calfskin wallet gets wet > What to do straight away"
    label = compact_label("Caring for Calfskin Leather", section)
    assert label == "Caring for Calfskin Leather · What to do straight away"
    assert compact_label("Delivery FAQ", "") == "Delivery FAQ"


def test_markers_are_renumbered_in_order_across_deltas():
    renumber = Renumber({1, 2, 3})
    shown = "".join(renumber.feed(part) for part in ["Wipe it [3", "]. Dry it [2]", " and [3, 9] then [", "1]."])
    shown += renumber.flush()
    assert shown == "Wipe it [1]. Dry it [2] and [3, 9] then [3]."
    assert renumber.order == [3, 2, 1]
    assert slug(CORVANE.name) == "maison-corvane"
