"""One chat turn as a stream of events, produced by a generation thread (webapp/generation.py) and read by an
async endpoint (`AsyncEvents`) or a Gradio handler thread (`SyncEvents`).

Events, in order: `Queued` (zero or more, while waiting), `SourcesReady`, `Delta` (text), then `Finished` with the
`AssistantAnswer`, or `Failed` at any point.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from starlette.requests import Request

from colbert_att_assistant.assistant import Assistant, AssistantAnswer, Audience, Citation
from colbert_att_assistant.assistant.llm_backends import Cancellation, GenerationCancelled
from colbert_att_assistant.webapp.generation import Failed, Finished, Ticket

# A reader waiting for events looks this often whether the generation thread has ended without a final event.
POLL_S = 0.25


@dataclass(frozen=True)
class SourcesReady:
    sources: list[Citation]


@dataclass(frozen=True)
class Delta:
    text: str


def is_final(event: object) -> bool:
    return isinstance(event, Finished | Failed)


def answer_work(
    assistant: Assistant,
    message: object,
    session_id: str | None,
    audience: Audience,
    emit: Callable[[object], None],
    scoring: str | None = None,
) -> Callable[[Cancellation], AssistantAnswer]:
    """The generation thread's job for one turn: stream the answer, emitting sources and text as they come."""

    def work(cancellation: Cancellation) -> AssistantAnswer:
        stream = assistant.stream(message, session_id=session_id, audience=audience, scoring=scoring)
        emit(SourcesReady(list(stream.sources)))
        for delta in stream:
            if cancellation.cancelled:
                # Between two tokens: the generator is paused, so it can be closed here, releasing the model
                # without recording a half answer.
                stream.close()
                raise GenerationCancelled(cancellation.reason or "cancelled")
            emit(Delta(delta))
        return stream.answer

    return work


class AsyncEvents:
    """Events for a reader on the event loop; `emit` may be called from any thread."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()

    def emit(self, event: object) -> None:
        # A closed loop means the app is stopping and nobody is reading.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def next(self, disconnected: asyncio.Future) -> object | None:
        """The next event, or None once the client has gone away."""
        getter = asyncio.ensure_future(self._queue.get())
        done, _ = await asyncio.wait({getter, disconnected}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        return None


async def wait_for_disconnect(request: Request) -> None:
    """Returns when the client closes its connection (the request body has already been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class SyncEvents:
    """Events for a reader in a worker thread (a Gradio handler)."""

    def __init__(self) -> None:
        self._queue: queue.Queue[object] = queue.Queue()

    def emit(self, event: object) -> None:
        self._queue.put(event)

    def until_final(self, ticket: Ticket) -> Iterator[object]:
        while True:
            try:
                event = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                if ticket.done.is_set() and self._queue.empty():
                    event = Failed("error", "Something went wrong while answering. Please try again.")
                else:
                    continue
            yield event
            if is_final(event):
                return
