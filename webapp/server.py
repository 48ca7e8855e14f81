"""One FastAPI application: the customer widget at /chat, the staff page at /staff (login), the JSON API,
the cited passages, and an embed example at /embed."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import gradio as gr
from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse

from assistant import Assistant
from grounding import GroundingJudge
from webapp.api import api_router
from webapp.conversation_log import ConversationLog
from webapp.customer_page import customer_page
from webapp.rate_limit import RateLimiter
from webapp.rendering import passage_page
from webapp.settings import AppSettings
from webapp.staff_page import STAFF_STYLE, staff_page

EMBED_PAGE = Path(__file__).with_name("embed.html")


def create_app(assistant: Assistant, settings: AppSettings | None = None) -> FastAPI:
    settings = settings or AppSettings()
    log = ConversationLog(settings.log_path)
    limiter = RateLimiter(settings.rate_limit_messages, settings.rate_limit_window_s)
    credentials = settings.staff_credentials()
    # Answers are checked against their sources before they are shown; weak ones get a visible note.
    judge = GroundingJudge.load_default(encoder=assistant.index.encoder)

    app = FastAPI(title="Maison Corvane Client Care", docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.conversation_log = log
    app.include_router(api_router(assistant, log, limiter, credentials, judge))

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/chat/")

    @app.get("/embed", response_class=HTMLResponse, include_in_schema=False)
    def embed() -> str:
        return EMBED_PAGE.read_text(encoding="utf-8")

    @app.get("/passages/{node_id:path}", response_class=HTMLResponse)
    def passage(node_id: str) -> str:
        node_id = unquote(node_id)
        if node_id not in assistant.index:
            raise HTTPException(404, f"No passage {node_id!r}.")
        stored = assistant.index.get(node_id)
        # Citation links are public: internal passages are shown on the staff page only.
        if stored.metadata.get("audience") != "public":
            raise HTTPException(404, f"No passage {node_id!r}.")
        return passage_page(
            str(stored.metadata.get("title", "")), str(stored.metadata.get("header_path", "")), stored.text
        )

    app = gr.mount_gradio_app(
        app,
        staff_page(assistant, log, judge),
        path="/staff",
        auth=credentials,
        auth_message="Maison Corvane staff only.",
        css=STAFF_STYLE,
    )
    return gr.mount_gradio_app(app, customer_page(assistant, log, limiter, judge), path="/chat")
