"""The JSON API beside the chat pages: POST /api/chat, POST /api/chat/stream (server-sent events), feedback, undo
and clear of a session, GET /healthz.

Sessions: leave `session_id` out to start a conversation; the reply carries the id the server issued, bound to
the caller (customer, or staff and the staff login). Send it back to continue. An id that is unknown, expired or
belongs to someone else starts a new conversation (`new_session: true` and a different `session_id`).

Waiting: answers are generated a few at a time (`generation_slots`); up to `queue_size` requests wait for their
turn, and a stream is told its place (`queued` events). When the line is full the reply is HTTP 503 with
Retry-After. A client that disconnects stops its generation at once; a request still unanswered after
`request_deadline_s` gets 504 (or an `error` event).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, Field, field_validator

from colbert_att_assistant.assistant import AssistantAnswer, Audience
from colbert_att_assistant.webapp.generation import Failed, Finished, Queued, QueueFull, Ticket
from colbert_att_assistant.webapp.input_checks import readable
from colbert_att_assistant.webapp.login_throttle import locked_out_message
from colbert_att_assistant.webapp.rate_limit import rate_limited_message
from colbert_att_assistant.webapp.rendering import citation_label, passage_url
from colbert_att_assistant.webapp.services import AppServices
from colbert_att_assistant.webapp.sessions import ResolvedSession, SessionOwner
from colbert_att_assistant.webapp.turn_events import AsyncEvents, Delta, SourcesReady, answer_work, wait_for_disconnect

FAILURE_STATUS = {"deadline": 504, "shutdown": 503, "error": 500, "disconnected": 499, "cancelled": 499}


class ChatRequest(BaseModel):
    # Any JSON value is accepted here so that the assistant can answer a non-text message politely.
    message: Any = Field(description="The client's message.")
    session_id: str | None = Field(
        default=None, max_length=128, description="The id a previous reply gave; leave out to start a conversation."
    )
    # Named `mode` on the wire, as clients have always sent it.
    mode: Audience = Audience.CUSTOMER

    _check_message = field_validator("message", "session_id")(readable)


class SessionRequest(BaseModel):
    session_id: str = Field(max_length=128)
    mode: Audience = Audience.CUSTOMER

    _check_session = field_validator("session_id")(readable)


class FeedbackRequest(SessionRequest):
    turn_id: int = Field(description="The `turn_id` of the answer the feedback is about.")
    helpful: bool
    comment: str | None = Field(default=None, max_length=2000, description="What the client wrote with it.")

    _check_comment = field_validator("comment")(readable)


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
    new_session: bool = Field(default=False, description="True when this reply started a new conversation.")
    turn_id: int | None = Field(default=None, description="Names this answer in POST /api/feedback.")
    number_mismatches: list[str]
    grounding_note: str | None = Field(default=None, description="Set when the answer is weakly supported.")
    weak_match: bool = Field(
        default=False, description="Staff mode: the closest lines, quoted although none clearly answers (see the note)."
    )


def _response(answer: AssistantAnswer, session: ResolvedSession, turn_id: int | None, note: str | None) -> ChatResponse:
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
        session_id=session.id,
        new_session=session.new,
        turn_id=turn_id,
        number_mismatches=sorted({m.number for m in answer.number_mismatches}),
        grounding_note=note,
        weak_match=answer.weak_match,
    )


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def api_router(services: AppServices) -> APIRouter:
    router = APIRouter()
    basic = HTTPBasic(auto_error=False)
    assistant, log = services.assistant, services.log

    def owner_for(audience: Audience, credentials: HTTPBasicCredentials | None, request: Request) -> SessionOwner:
        if audience is Audience.CUSTOMER:
            return SessionOwner.customer()
        # Staff mode sees internal documents: only with the staff login (HTTP basic auth), throttled per client.
        client = services.client(request)
        locked = services.throttle.locked_for(client)
        if locked is not None:
            raise HTTPException(429, locked_out_message(locked), headers={"Retry-After": str(max(1, round(locked)))})
        username, password = services.staff_credentials
        ok = credentials is not None and (
            secrets.compare_digest(credentials.username.encode(), username.encode())
            & secrets.compare_digest(credentials.password.encode(), password.encode())
        )
        if not ok:
            if credentials is not None:
                services.throttle.failed(client)
            raise HTTPException(401, "Staff mode needs the staff login.", headers={"WWW-Authenticate": "Basic"})
        services.throttle.succeeded(client)
        return SessionOwner.staff(credentials.username)

    def limit(request: Request) -> None:
        wait = services.limiter.retry_after(services.client(request))
        if wait is not None:
            raise HTTPException(429, rate_limited_message(wait), headers={"Retry-After": str(max(1, round(wait)))})

    def admit(message: Any, session: ResolvedSession, audience: Audience, events: AsyncEvents) -> Ticket:
        work = answer_work(assistant, message, session.id, audience, events.emit)
        try:
            return services.generation.submit(work, events.emit)
        except QueueFull as full:
            raise HTTPException(
                503, full.message, headers={"Retry-After": str(max(1, round(full.retry_after_s)))}
            ) from None

    def record(answer: AssistantAnswer, session: ResolvedSession) -> tuple[int, str | None]:
        note = answer.grounding_note
        return log.record_turn(answer, "api", session.id, grounding_note=note), note

    def failure(failed: Failed) -> HTTPException:
        headers = {"Retry-After": "30"} if failed.reason == "shutdown" else None
        return HTTPException(FAILURE_STATUS[failed.reason], failed.message, headers=headers)

    @router.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "chunks": len(assistant.index),
            "model": assistant.chat_model.name,
            "generation": services.generation.stats(),
        }

    @router.post("/api/chat", response_model=ChatResponse, dependencies=[Depends(limit)])
    async def chat(
        body: ChatRequest, request: Request, credentials: HTTPBasicCredentials | None = Depends(basic)
    ) -> ChatResponse | Response:
        owner = owner_for(body.mode, credentials, request)
        session = await run_in_threadpool(services.sessions.resolve, body.session_id, owner)
        events = AsyncEvents()
        ticket = admit(body.message, session, owner.audience, events)
        disconnected = asyncio.ensure_future(wait_for_disconnect(request))
        try:
            while True:
                event = await events.next(disconnected)
                if event is None:
                    ticket.cancel("disconnected")
                    return Response(status_code=499)
                if isinstance(event, Failed):
                    raise failure(event)
                if isinstance(event, Finished):
                    turn_id, note = await run_in_threadpool(record, event.result, session)
                    return _response(event.result, session, turn_id, note)
        finally:
            disconnected.cancel()
            ticket.cancel("disconnected")  # no-op once finished

    @router.post("/api/chat/stream", dependencies=[Depends(limit)])
    async def chat_stream(
        body: ChatRequest, request: Request, credentials: HTTPBasicCredentials | None = Depends(basic)
    ) -> StreamingResponse:
        """Events: `queued` ({position, estimated_wait_s}, while waiting), `sources` (before the first token),
        `token` (text deltas), then `done` (the final ChatResponse) or `error` ({status, detail})."""
        owner = owner_for(body.mode, credentials, request)
        session = await run_in_threadpool(services.sessions.resolve, body.session_id, owner)
        events = AsyncEvents()
        ticket = admit(body.message, session, owner.audience, events)

        async def stream() -> AsyncIterator[str]:
            disconnected = asyncio.ensure_future(wait_for_disconnect(request))
            try:
                while True:
                    event = await events.next(disconnected)
                    if event is None:
                        return
                    if isinstance(event, Queued):
                        yield _sse("queued", {"position": event.position, "estimated_wait_s": event.estimated_wait_s})
                    elif isinstance(event, SourcesReady):
                        yield _sse(
                            "sources",
                            [
                                {"number": s.number, "label": citation_label(s), "url": passage_url(s.node_id)}
                                for s in event.sources
                            ],
                        )
                    elif isinstance(event, Delta):
                        yield _sse("token", event.text)
                    elif isinstance(event, Failed):
                        yield _sse("error", {"status": FAILURE_STATUS[event.reason], "detail": event.message})
                        return
                    elif isinstance(event, Finished):
                        turn_id, note = await run_in_threadpool(record, event.result, session)
                        final = _response(event.result, session, turn_id, note)
                        yield f"event: done\ndata: {final.model_dump_json()}\n\n"
                        return
            finally:
                # Whatever ended the stream (the client left, the server cancelled it, it finished), the
                # generation stops here at the latest.
                disconnected.cancel()
                ticket.cancel("disconnected")

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def owned_session(
        body: SessionRequest, request: Request, credentials: HTTPBasicCredentials | None
    ) -> tuple[str, SessionOwner]:
        owner = owner_for(body.mode, credentials, request)
        if not services.sessions.owns(body.session_id, owner):
            raise HTTPException(404, "No such conversation for this client (it may have expired).")
        return body.session_id, owner

    @router.post("/api/session/undo")
    def undo(
        body: SessionRequest, request: Request, credentials: HTTPBasicCredentials | None = Depends(basic)
    ) -> dict[str, Any]:
        """Forget the conversation's last turn (undo, or before retrying it)."""
        session_id, _ = owned_session(body, request, credentials)
        return {"session_id": session_id, "forgotten": int(services.memory.undo_last_turn(session_id))}

    @router.post("/api/session/clear")
    def clear(
        body: SessionRequest, request: Request, credentials: HTTPBasicCredentials | None = Depends(basic)
    ) -> dict[str, Any]:
        """End the conversation: its memory is deleted and its id no longer works."""
        session_id, owner = owned_session(body, request, credentials)
        services.sessions.end(session_id, owner)
        return {"session_id": session_id, "cleared": True}

    @router.post("/api/feedback")
    def feedback(
        body: FeedbackRequest, request: Request, credentials: HTTPBasicCredentials | None = Depends(basic)
    ) -> dict[str, Any]:
        """👍 / 👎 on one answer, stored with its turn."""
        session_id, _ = owned_session(body, request, credentials)
        if log.turn_session(body.turn_id) != session_id:
            raise HTTPException(404, f"Turn {body.turn_id} is not part of this conversation.")
        log.record_feedback(session_id, body.helpful, "", turn_id=body.turn_id, comment=body.comment)
        return {"turn_id": body.turn_id, "recorded": True}

    return router
