"""An OpenAI-compatible door to the assistant, so that existing chat front ends and the official `openai` client
work against it: `POST /v1/chat/completions` (streamed or not) and `GET /v1/models`.

- `model` names the assistant: the house's slug (e.g. `maison-corvane`, customer mode: public documents only) or the
  slug with `-staff` (internal documents too), which needs the staff login as the API key: `username:password`.
- The last message must be the client's (`role: user`); earlier user / assistant pairs are the conversation so
  far, held in a throwaway server session for the turn so that follow-ups are understood. System messages are
  ignored: the assistant keeps its own rules, and a caller cannot rewrite them.
- The reply's message is the cited answer, its citation markers renumbered 1, 2, 3… in order of first use and the
  sources listed under it. The same citations are in the extra field `citations` (on the completion, and on the
  last chunk of a stream): `[{number, title, section, label, url, document_id}]`; `assistant` holds
  `{abstained, abstain_reason, answer_path, grounding_note, weak_match, turn_id}`.
- `usage` counts tokens with the assistant's own model tokenizer: the client's message as the prompt (the
  retrieved passages the model read are not counted) and the answer shown as the completion.
- Sampling parameters (temperature, max_tokens, …) are accepted and ignored: answers are checked against their
  sources, and cutting one short or sampling it hotter would defeat that.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from colbert_att_assistant.assistant import AssistantAnswer, Audience, Citation
from colbert_att_assistant.webapp.generation import Failed, Finished, QueueFull
from colbert_att_assistant.webapp.input_checks import readable
from colbert_att_assistant.webapp.login_throttle import locked_out_message
from colbert_att_assistant.webapp.passages import compact_label, passage_url
from colbert_att_assistant.webapp.rate_limit import rate_limited_message
from colbert_att_assistant.webapp.services import AppServices
from colbert_att_assistant.webapp.sessions import SessionOwner
from colbert_att_assistant.webapp.staff_auth import is_staff
from colbert_att_assistant.webapp.turn_events import AsyncEvents, Delta, SourcesReady, answer_work, wait_for_disconnect

MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
STATUS = {"deadline": 504, "shutdown": 503, "error": 500, "disconnected": 499, "cancelled": 499}


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None

    _check = field_validator("content")(readable)

    def text(self) -> str:
        if isinstance(self.content, list):  # [{"type": "text", "text": ...}, ...]
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, max_tokens, … are accepted and ignored

    model: str
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False


class CitationOut(BaseModel):
    number: int
    title: str
    section: str
    label: str
    url: str
    document_id: str


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "assistant"


def error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The error shape OpenAI clients read: {"error": {"message", "type", "code"}}."""
    body = {"error": {"message": message, "type": kind, "code": status, "param": None}}
    return JSONResponse(body, status_code=status, headers=headers)


class Renumber:
    """Citation markers renumbered 1, 2, 3… in order of first use, also across stream deltas (a marker cut in
    two between deltas is held back until it is whole)."""

    def __init__(self, known: set[int]):
        self.known = known
        self.order: list[int] = []
        self._held = ""

    def _replace(self, match: re.Match[str]) -> str:
        numbers = [int(part) for part in match.group(1).split(",")]
        if not all(number in self.known for number in numbers):
            return match.group(0)
        for number in numbers:
            if number not in self.order:
                self.order.append(number)
        return "[" + ", ".join(str(self.order.index(number) + 1) for number in numbers) + "]"

    def feed(self, text: str) -> str:
        text = self._held + text
        cut = text.rfind("[")
        if cut >= 0 and "]" not in text[cut:] and re.fullmatch(r"\[[\d,\s]*", text[cut:]):
            text, self._held = text[:cut], text[cut:]
        else:
            self._held = ""
        return MARKER.sub(self._replace, text)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held


def citations_out(answer: AssistantAnswer, order: list[int], base_url: str) -> list[CitationOut]:
    by_number = {c.number: c for c in answer.citations}
    numbers = [n for n in order if n in by_number] + [n for n in by_number if n not in order]
    return [_citation(position, by_number[n], base_url) for position, n in enumerate(numbers, start=1)]


def _citation(number: int, citation: Citation, base_url: str) -> CitationOut:
    return CitationOut(
        number=number,
        title=citation.title,
        section=citation.section,
        label=compact_label(citation.title, citation.section),
        url=base_url + passage_url(citation.node_id),
        document_id=citation.document_id,
    )


def sources_block(citations: list[CitationOut]) -> str:
    if not citations:
        return ""
    return "\n\nSources:\n" + "\n".join(f"[{c.number}] {c.label} — {c.url}" for c in citations)


def openai_router(services: AppServices) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])
    assistant, log = services.assistant, services.log
    name = slug(assistant.brand.name)
    models = {name: Audience.CUSTOMER, f"{name}-staff": Audience.STAFF}

    def owner_for(audience: Audience, request: Request) -> SessionOwner | JSONResponse:
        if audience is Audience.CUSTOMER:
            return SessionOwner.customer()
        client = services.client(request)
        locked = services.throttle.locked_for(client)
        if locked is not None:
            wait = str(max(1, round(locked)))
            return error(429, locked_out_message(locked), "rate_limit_error", {"Retry-After": wait})
        key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        username, _, password = key.partition(":")
        if not password or not is_staff(services, username, password):
            if key:
                services.throttle.failed(client)
            return error(401, f"Model {name}-staff needs the staff login as the API key: username:password.",
                         "authentication_error")  # fmt: skip
        services.throttle.succeeded(client)
        return SessionOwner.staff(username)

    def prepare(body: CompletionRequest, owner: SessionOwner) -> str:
        """A throwaway session holding the conversation before the last message."""
        session_id = services.sessions.start(owner)
        pending: str | None = None
        for message in body.messages[:-1]:
            if message.role == "user":
                pending = message.text()
            elif message.role == "assistant" and pending is not None:
                services.memory.add_turn(session_id, pending, message.text())
                pending = None
        return session_id

    @router.get("/models")
    def list_models() -> dict[str, Any]:
        created = int(time.time())
        return {
            "object": "list",
            "data": [{"id": model, "object": "model", "created": created, "owned_by": name} for model in models],
        }

    @router.post("/chat/completions", response_model=None)
    async def completions(request: Request) -> Response:
        try:
            body = CompletionRequest.model_validate(await request.json())
        except (ValidationError, ValueError) as problem:
            return error(400, f"The request is not a chat completion request: {problem}", "invalid_request_error")
        if body.model not in models:
            return error(404, f"No model {body.model!r}; this server has {', '.join(models)}.", "invalid_request_error")
        last = body.messages[-1]
        if last.role != "user":
            return error(400, "The last message must be the client's (role: user).", "invalid_request_error")
        owner = owner_for(models[body.model], request)
        if isinstance(owner, JSONResponse):
            return owner
        wait = services.limiter.retry_after(services.client(request))
        if wait is not None:
            return error(429, rate_limited_message(wait), "rate_limit_error", {"Retry-After": str(max(1, round(wait)))})
        session_id = await run_in_threadpool(prepare, body, owner)
        events = AsyncEvents()
        try:
            ticket = services.generation.submit(
                answer_work(assistant, last.text(), session_id, owner.audience, events.emit), events.emit
            )
        except QueueFull as full:
            await run_in_threadpool(services.sessions.end, session_id, owner)
            return error(503, full.message, "server_error", {"Retry-After": str(max(1, round(full.retry_after_s)))})
        completion_id = f"chatcmpl-{secrets.token_hex(12)}"
        created = int(time.time())
        base_url = str(request.base_url).rstrip("/")

        def finish(answer: AssistantAnswer, order: list[int]) -> tuple[list[CitationOut], dict[str, Any], dict]:
            note = answer.grounding_note
            turn_id = log.record_turn(answer, "openai", session_id, grounding_note=note)
            services.sessions.end(session_id, owner)
            meta = {
                "abstained": answer.abstained,
                "abstain_reason": answer.abstain_reason,
                "answer_path": answer.answer_path,
                "grounding_note": note,
                "weak_match": answer.weak_match,
                "turn_id": turn_id,
            }
            count = assistant.chat_model.count_tokens
            prompt, completion = count(last.text()), count(answer.text)
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
            return citations_out(answer, order, base_url), meta, usage

        async def cleanup() -> None:
            ticket.cancel("disconnected")  # no-op once finished
            await run_in_threadpool(services.sessions.end, session_id, owner)

        if not body.stream:
            disconnected = asyncio.ensure_future(wait_for_disconnect(request))
            renumber: Renumber | None = None
            try:
                while True:
                    event = await events.next(disconnected)
                    if event is None:
                        return Response(status_code=499)
                    if isinstance(event, SourcesReady):
                        renumber = Renumber({s.number for s in event.sources})
                    elif isinstance(event, Failed):
                        return error(STATUS[event.reason], event.message, "server_error")
                    elif isinstance(event, Finished):
                        answer: AssistantAnswer = event.result
                        renumber = renumber or Renumber({c.number for c in answer.citations})
                        text = renumber.feed(answer.text) + renumber.flush()
                        citations, meta, usage = await run_in_threadpool(finish, answer, renumber.order)
                        message = {"role": "assistant", "content": text + sources_block(citations)}
                        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
                        return JSONResponse(
                            {
                                "id": completion_id,
                                "object": "chat.completion",
                                "created": created,
                                "model": body.model,
                                "choices": [choice],
                                "usage": usage,
                                "citations": [c.model_dump() for c in citations],
                                "assistant": meta,
                            }
                        )
            finally:
                disconnected.cancel()
                await cleanup()

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
            data = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
                **extra,
            }
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        async def stream() -> AsyncIterator[str]:
            disconnected = asyncio.ensure_future(wait_for_disconnect(request))
            renumber = Renumber(set())
            try:
                yield chunk({"role": "assistant", "content": ""})
                while True:
                    event = await events.next(disconnected)
                    if event is None:
                        return
                    if isinstance(event, SourcesReady):
                        renumber.known = {s.number for s in event.sources}
                    elif isinstance(event, Delta):
                        text = renumber.feed(event.text)
                        if text:
                            yield chunk({"content": text})
                    elif isinstance(event, Failed):
                        problem = {"message": event.message, "type": "server_error", "code": STATUS[event.reason]}
                        yield f"data: {json.dumps({'error': problem})}\n\n"
                        return
                    elif isinstance(event, Finished):
                        answer = event.result
                        citations, meta, usage = await run_in_threadpool(finish, answer, renumber.order)
                        tail = renumber.flush() + sources_block(citations)
                        if tail:
                            yield chunk({"content": tail})
                        yield chunk(
                            {}, "stop", usage=usage, citations=[c.model_dump() for c in citations], assistant=meta
                        )
                        yield "data: [DONE]\n\n"
                        return
            finally:
                disconnected.cancel()
                await cleanup()

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return router
