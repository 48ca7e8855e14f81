"""The customer widget: a small static page over the JSON/SSE API, styled by the brand profile.

- `GET /widget.js`: the one script a shop adds (`<script src="https://care.example/widget.js" async></script>`). It
  draws a launcher button in a shadow root (the shop's CSS cannot reach it) and opens the chat panel in an iframe.
- `GET /chat/`: the chat panel itself (also the iframe fallback, and a full page on its own).
- `GET /passages/{id}`: a cited passage, styled like the panel, Markdown rendered, with a way back.
- `GET /embed`: an example shop page embedding the widget both ways.

The pages hold no inline script: their configuration is a JSON data block and their code is served from
/widget/, so a strict Content-Security-Policy applies.
"""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import unquote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from colbert_att_assistant.assistant.brand import BrandProfile
from colbert_att_assistant.retriever.index import MultiVectorIndex
from colbert_att_assistant.webapp.brand_view import brand_css, contact_html, json_for_html, logo_html, widget_config
from colbert_att_assistant.webapp.passages import markdown_html, passage_body

STATIC = Path(__file__).with_name("static")
ASSETS = {"panel.js": "text/javascript", "panel.css": "text/css", "passage.js": "text/javascript"}
# The panel may be framed by any shop (that is its purpose); it talks to this server only.
PANEL_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; "
    "connect-src 'self'; frame-ancestors *; base-uri 'none'; form-action 'self'"
)
HEADERS = {"Content-Security-Policy": PANEL_CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def _head(title: str, brand: BrandProfile, script: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title>"
        "<link rel='stylesheet' href='/widget/panel.css'>"
        f"<style>{brand_css(brand)}</style>"
        f"<script src='/widget/{script}' defer></script></head>"
    )


def _header(brand: BrandProfile, actions: str) -> str:
    return (
        "<header class='head'><div class='brand'>"
        f"{logo_html(brand)}<div><p class='name'>{html.escape(brand.name)}</p>"
        f"<p class='sub'>{html.escape(brand.strings.panel_subtitle)}</p></div></div>"
        f"<div class='head-actions'>{actions}</div></header>"
    )


def panel_page(brand: BrandProfile) -> str:
    strings = brand.strings
    actions = (
        f"<button type='button' id='person-btn' class='chip' aria-expanded='false' aria-controls='person'>"
        f"{html.escape(strings.talk_to_person)}</button>"
        f"<button type='button' id='new-btn' class='icon' aria-label='{html.escape(strings.new_conversation)}' "
        f"title='{html.escape(strings.new_conversation)}'>↺</button>"
        "<button type='button' id='close-btn' class='icon' aria-label='Close the chat' title='Close' hidden>✕</button>"
    )
    examples = "".join(
        f"<li><button type='button' class='example'>{html.escape(text)}</button></li>" for text in strings.examples
    )
    return (
        _head(strings.page_title, brand, "panel.js")
        + "<body class='panel-body'><div class='panel'>"
        + _header(brand, actions)
        + f"<p id='ai-notice' class='notice'>{html.escape(strings.notice)}</p>"
        + f"<section id='person' class='person' hidden aria-label='{html.escape(strings.talk_to_person)}'>"
        + f"{contact_html(brand)}</section>"
        + "<main id='log' class='log' role='log' aria-live='polite' aria-label='Conversation' tabindex='-1'>"
        + f"<div class='welcome'><h1 class='welcome-title'>{html.escape(strings.page_title)}</h1>"
        + (f"<ul class='examples' aria-label='Example questions'>{examples}</ul>" if examples else "")
        + "</div></main>"
        + "<form id='ask' class='ask'><label for='q' class='visually-hidden'>Your question</label>"
        + f"<textarea id='q' name='q' rows='1' maxlength='4000' placeholder='{html.escape(strings.input_placeholder)}'"
        + " autocomplete='off'></textarea>"
        + "<button type='submit' id='send' class='send' aria-label='Send'>Send</button></form>"
        + "</div>"
        + f"<script type='application/json' id='config'>{json_for_html(widget_config(brand))}</script>"
        + "</body></html>"
    )


def passage_html(brand: BrandProfile, title: str, section: str, text: str, back: tuple[str, str] | None = None) -> str:
    """A passage styled like the panel; `back` is (href, label) of the way back (default: the conversation)."""
    href, label = back or ("/chat/", brand.strings.back_to_chat)
    back_link = f"<a id='back' class='chip' href='{html.escape(href)}'>← {html.escape(label)}</a>"
    return (
        _head(f"{title} — {brand.name}", brand, "passage.js")
        + "<body class='passage-body'>"
        + _header(brand, back_link)
        + "<main class='passage'>"
        + f"<h1>{html.escape(title)}</h1>"
        + (f"<p class='section'>{html.escape(section)}</p>" if section else "")
        + f"<article class='markdown'>{markdown_html(passage_body(text, title, section))}</article>"
        + "</main></body></html>"
    )


def embed_page(brand: BrandProfile, origin: str) -> str:
    name = html.escape(brand.name)
    title = html.escape(brand.strings.page_title)
    script = html.escape(f'<script src="{origin}/widget.js" async></script>')
    iframe = html.escape(
        f'<iframe src="{origin}/chat/" title="{brand.strings.page_title}" '
        'style="width:400px;height:640px;border:0"></iframe>'
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>Embedding the {name} widget</title>"
        "<link rel='stylesheet' href='/widget/panel.css'>"
        f"<style>{brand_css(brand)}</style></head>"
        "<body class='shop-body'><main class='shop'>"
        f"<h1>An example shop page of {name}</h1>"
        "<p>The launcher at the bottom right is the widget, added with one script tag:</p>"
        f"<pre><code>{script}</code></pre>"
        "<p>Where scripts from another site are not allowed, frame the panel instead:</p>"
        f"<pre><code>{iframe}</code></pre>"
        f"<h2>The framed panel</h2><iframe class='framed' src='/chat/' title='{title}'></iframe>"
        "</main><script src='/widget.js' async></script></body></html>"
    )


def widget_router(brand: BrandProfile, index: MultiVectorIndex) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    loader = (STATIC / "widget.js").read_text(encoding="utf-8")

    @router.get("/chat/", response_class=HTMLResponse)
    def chat() -> HTMLResponse:
        return HTMLResponse(panel_page(brand), headers=HEADERS)

    @router.get("/chat")
    def chat_slash() -> Response:
        return Response(status_code=307, headers={"Location": "/chat/"})

    @router.get("/widget.js")
    def widget_js() -> Response:
        # The configuration rides in the script: a shop page loads one file and nothing else until opened.
        body = loader.replace("__CONFIG__", json_for_html(widget_config(brand)))
        return Response(body, media_type="text/javascript", headers={"Cache-Control": "max-age=300"})

    @router.get("/widget/{asset}")
    def asset(asset: str) -> Response:
        if asset not in ASSETS:
            raise HTTPException(404, f"No widget file {asset!r}.")
        return Response((STATIC / asset).read_bytes(), media_type=ASSETS[asset], headers={"Cache-Control": "no-cache"})

    @router.get("/embed", response_class=HTMLResponse)
    def embed(request: Request) -> str:
        return embed_page(brand, str(request.base_url).rstrip("/"))

    @router.get("/passages/{node_id:path}", response_class=HTMLResponse)
    def passage(node_id: str) -> HTMLResponse:
        node_id = unquote(node_id)
        # Citation links are public: internal passages are shown on the staff page only.
        if node_id not in index or index.get(node_id).metadata.get("audience") != "public":
            raise HTTPException(404, f"No passage {node_id!r}.")
        stored = index.get(node_id)
        title, section = str(stored.metadata.get("title", "")), str(stored.metadata.get("header_path", ""))
        return HTMLResponse(passage_html(brand, title, section, stored.text), headers=HEADERS)

    return router
