"""One FastAPI application: the customer widget (/widget.js, the panel at /chat/, cited passages, an embed example
at /embed), the staff page at /staff (login), and the JSON API; `serve` runs it with uvicorn and stops it promptly."""

from __future__ import annotations

import asyncio
import logging

import gradio as gr
import uvicorn
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from colbert_att_assistant.assistant import Assistant
from colbert_att_assistant.webapp.api import api_router
from colbert_att_assistant.webapp.client_address import client_address
from colbert_att_assistant.webapp.generation import GenerationQueue
from colbert_att_assistant.webapp.input_checks import body_error_response, validation_error_response
from colbert_att_assistant.webapp.insights_page import insights_router
from colbert_att_assistant.webapp.login_throttle import LoginGuard
from colbert_att_assistant.webapp.openai_door import openai_router
from colbert_att_assistant.webapp.request_limits import BodySizeLimit
from colbert_att_assistant.webapp.services import AppServices
from colbert_att_assistant.webapp.settings import AppSettings
from colbert_att_assistant.webapp.staff_page import STAFF_STYLE, staff_page
from colbert_att_assistant.webapp.widget import widget_router

logger = logging.getLogger(__name__)
STAFF_LOGIN_PATHS = {"/staff/login", "/staff/login/"}


def create_app(assistant: Assistant, settings: AppSettings | None = None) -> FastAPI:
    settings = settings or AppSettings()
    services = AppServices.build(assistant, settings)
    assistant = services.assistant

    brand = assistant.brand
    app = FastAPI(title=brand.strings.page_title, docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.services = services
    app.state.conversation_log = services.log
    app.add_exception_handler(RequestValidationError, validation_error_response)
    app.add_exception_handler(StarletteHTTPException, body_error_response)
    app.include_router(api_router(services))
    app.include_router(widget_router(brand, assistant.index))
    app.include_router(insights_router(services))
    app.include_router(openai_router(services))

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/chat/")

    def scope_client(scope) -> str:
        client = scope.get("client")
        return client_address(client[0] if client else None, Headers(scope=scope), settings.trusted_proxies)

    # Outermost first: the size limit sees every request before anything reads its body.
    app.add_middleware(LoginGuard, throttle=services.throttle, paths=STAFF_LOGIN_PATHS, client=scope_client)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)

    return gr.mount_gradio_app(
        app,
        staff_page(services),
        path="/staff",
        auth=services.staff_credentials,
        auth_message=f"{brand.name} staff only.",
        css=STAFF_STYLE,
    )


class GracefulServer(uvicorn.Server):
    """uvicorn, but stopping (SIGTERM, Ctrl-C or `should_exit`) first cancels every waiting and running
    generation, so open answers end at once with a "restarting" message instead of holding the stop up."""

    def __init__(self, config: uvicorn.Config, generation: GenerationQueue):
        super().__init__(config)
        self.generation = generation

    async def shutdown(self, sockets=None) -> None:
        stopped = await asyncio.to_thread(self.generation.shutdown, 2.0)
        if not stopped:
            logger.warning("A generation did not stop within 2 s of the shutdown.")
        await super().shutdown(sockets=sockets)


def build_server(app: FastAPI, settings: AppSettings, host: str | None = None, port: int | None = None):
    """The uvicorn server for `app`. uvicorn's own X-Forwarded-For handling is off: it believes the header from
    loopback, which let any local client choose its address; webapp/client_address.py reads it instead, from
    configured proxies only. Open connections get `shutdown_timeout_s` to finish when the server stops."""
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_level="warning",
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
    )
    return GracefulServer(config, app.state.services.generation)


def serve(app: FastAPI, settings: AppSettings) -> None:
    build_server(app, settings).run()
