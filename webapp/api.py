"""The JSON API beside the chat pages: POST /api/chat, POST /api/chat/stream (server-sent events), GET /healthz."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field

from assistant import Assistant, AssistantAnswer, Mode
from grounding import GroundingJudge
from webapp.conversation_log import ConversationLog
from webapp.grounding_flag import grounding_note
from webapp.rate_limit import RateLimiter, rate_limited_message
from webapp.rendering import citation_label, passage_url


class ChatRequest(BaseModel):
    # Any JSON value is accepted here so that the assistant can answer a non-text message politely.
    message: Any = Field(description="The client's message.")
    session_id: str | None = Field(default=None, max_length=128, description="Keeps a conversation's memory.")
    mode: Mode = Mode.CUSTOMER


class CitationOut(BaseModel):
    number: int
    title: str
    section: str
    label: str
    url: str
    document_id: str


class ChatResponse(BaseModel):
    answer: str
    abstained: bool
    abstain_reason: str | None
    citations: list[CitationOut]
    session_id: str
    number_mismatches: list[str]
    grounding_note: str | None = Field(default=None, description="Set when the answer is weakly supported.")


def _response(answer: AssistantAnswer, session_id: str, note: str | None) -> ChatResponse:
    return ChatResponse(
        answer=answer.text,
        abstained=answer.abstained,
        abstain_reason=answer.abstain_reason,
        citations=[
            CitationOut(
                number=c.number,
                title=c.title,
                section=c.section,
                label=citation_label(c),
                url=passage_url(c.node_id),
                document_id=c.document_id,
            )
            for c in answer.citations
        ],
        session_id=session_id,
        number_mismatches=sorted({m.number for m in answer.number_mismatches}),
        grounding_note=note,
    )


def api_router(
    assistant: Assistant,
    log: ConversationLog,
    limiter: RateLimiter,
    staff_credentials: tuple[str, str],
    judge: GroundingJudge | None = None,
) -> APIRouter:
    router = APIRouter()
    basic = HTTPBasic(auto_error=False)

    def checked_mode(request: ChatRequest, credentials: HTTPBasicCredentials | None) -> Mode:
        if request.mode is Mode.CUSTOMER:
            return Mode.CUSTOMER
        # Staff mode sees internal documents: only with the staff login (HTTP basic auth).
        ok = credentials is not None and (
            secrets.compare_digest(credentials.username, staff_credentials[0])
            & secrets.compare_digest(credentials.password, staff_credentials[1])
        )
        if not ok:
            raise HTTPException(401, "Staff mode needs the staff login.", headers={"WWW-Authenticate": "Basic"})
        return Mode.STAFF

    def note(answer: AssistantAnswer) -> str | None:
        return grounding_note(judge, answer) if judge is not None else None

    def limit(http_request: Request) -> None:
        client = http_request.client.host if http_request.client else "unknown"
        wait = limiter.retry_after(client)
        if wait is not None:
            raise HTTPException(429, rate_limited_message(wait), headers={"Retry-After": str(max(1, round(wait)))})

    @router.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "chunks": len(assistant.index), "model": assistant.chat_model.name}

    @router.post("/api/chat", response_model=ChatResponse, dependencies=[Depends(limit)])
    def chat(request: ChatRequest, credentials: HTTPBasicCredentials | None = Depends(basic)) -> ChatResponse:
        mode = checked_mode(request, credentials)
        session_id = request.session_id or uuid.uuid4().hex
        answer = assistant.answer(request.message, session_id=session_id, mode=mode)
        log.record_turn(answer, "api", session_id)
        return _response(answer, session_id, note(answer))

    @router.post("/api/chat/stream", dependencies=[Depends(limit)])
    def chat_stream(request: ChatRequest, credentials: HTTPBasicCredentials | None = Depends(basic)):
        """Events: `sources` (before the first token), `token` (text deltas), `done` (the final ChatResponse)."""
        mode = checked_mode(request, credentials)
        session_id = request.session_id or uuid.uuid4().hex
        stream = assistant.stream(request.message, session_id=session_id, mode=mode)

        def events() -> Iterator[str]:
            sources = [
                {"number": s.number, "label": citation_label(s), "url": passage_url(s.node_id)} for s in stream.sources
            ]
            yield f"event: sources\ndata: {json.dumps(sources)}\n\n"
            for delta in stream:
                yield f"event: token\ndata: {json.dumps(delta)}\n\n"
            log.record_turn(stream.answer, "api", session_id)
            final = _response(stream.answer, session_id, note(stream.answer))
            yield f"event: done\ndata: {final.model_dump_json()}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return router
