"""A bounded line in front of the model.

At most `slots` generations run at once (the app gives it as many as the LLM backend admits, `ChatModel.capacity`:
one for the embedded model, a server's parallel slots) and at most `max_waiting` requests wait, each told its place
as it changes; a request beyond that is refused at once with an estimated wait (the API answers HTTP 503 with
Retry-After) instead of waiting silently without bound.

Every admitted request runs in a thread of its own under a `Cancellation`: the client's disconnect, the per-request
deadline or the app's shutdown sets it, the model checks it between tokens, and the thread always ends, so no
abandoned request can keep the model. The thread reports through `emit` (any callable taking an event): `Queued`
while it waits, whatever the work emits while it runs, then exactly one `Finished` or `Failed`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from colbert_att_assistant.assistant.llm_backends import Cancellation, GenerationCancelled, cancellation_scope

logger = logging.getLogger(__name__)

FailReason = Literal["deadline", "disconnected", "shutdown", "error", "cancelled"]
# Before any answer has been timed: a guess for the first estimates (an answer takes seconds on 2 cores).
INITIAL_TURN_S = 10.0


@dataclass(frozen=True)
class Queued:
    position: int  # 1 = next to be served
    estimated_wait_s: float


@dataclass(frozen=True)
class Finished:
    result: Any


@dataclass(frozen=True)
class Failed:
    reason: FailReason
    message: str


class QueueFull(Exception):
    def __init__(self, retry_after_s: float, message: str):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.message = message


def failure_message(reason: str | None, deadline_s: float) -> tuple[FailReason, str]:
    if reason == "deadline":
        return "deadline", (
            f"I could not answer within {deadline_s:g} seconds because many clients are asking at the moment. "
            "Please try again in a minute."
        )
    if reason == "shutdown":
        return "shutdown", "The assistant is restarting. Please try again in a minute."
    if reason == "disconnected":
        return "disconnected", "The request was abandoned."
    return "cancelled", "The answer was stopped."


class Ticket:
    """One admitted request: cancel it to stop its generation (or its wait) at once."""

    def __init__(self, deadline_s: float):
        self.cancellation = Cancellation(deadline_s)
        self.done = threading.Event()

    def cancel(self, reason: FailReason = "cancelled") -> None:
        self.cancellation.cancel(reason)


class GenerationQueue:
    def __init__(self, slots: int, max_waiting: int, deadline_s: float):
        self.slots = slots
        self.max_waiting = max_waiting
        self.deadline_s = deadline_s
        self._line: deque[Ticket] = deque()
        self._running: set[Ticket] = set()
        self._condition = threading.Condition()
        self._closing = False
        self._turn_s = INITIAL_TURN_S
        self.served = 0
        self.refused = 0
        self.stopped = 0

    # ---- admission ------------------------------------------------------------------------------------------

    def retry_after_s(self) -> float:
        """About one answer's time: when a place in the line should have freed up."""
        return max(1.0, math.ceil(self._turn_s / self.slots))

    def submit(self, work: Callable[[Cancellation], Any], emit: Callable[[object], None]) -> Ticket:
        """Admit `work` (run with its Cancellation in scope) or raise `QueueFull`; never blocks."""
        with self._condition:
            if self._closing:
                raise QueueFull(30.0, "The assistant is restarting. Please try again in a minute.")
            if len(self._line) >= self.max_waiting and len(self._running) >= self.slots:
                self.refused += 1
                wait = self.retry_after_s()
                raise QueueFull(
                    wait,
                    f"Many clients are asking at the moment and the line is full. Please try again in {wait:.0f} "
                    "seconds.",
                )
            ticket = Ticket(self.deadline_s)
            self._line.append(ticket)
        thread = threading.Thread(target=self._run, args=(ticket, work, emit), name="generation", daemon=True)
        thread.start()
        return ticket

    def _estimate(self, position: int) -> float:
        # Everyone running and everyone ahead must finish, `slots` at a time.
        return math.ceil((len(self._running) + position) / self.slots) * self._turn_s

    def _wait_for_slot(self, ticket: Ticket, emit: Callable[[object], None]) -> bool:
        shown: int | None = None
        with self._condition:
            while True:
                if ticket.cancellation.cancelled or self._closing:
                    self._line.remove(ticket)
                    self._condition.notify_all()
                    return False
                if self._line[0] is ticket and len(self._running) < self.slots:
                    self._line.popleft()
                    self._running.add(ticket)
                    self._condition.notify_all()
                    return True
                position = self._line.index(ticket) + 1
                if position != shown:
                    shown = position
                    emit(Queued(position, self._estimate(position)))
                # A timeout as well: the deadline passes without anyone notifying.
                self._condition.wait(timeout=0.25)

    def _run(self, ticket: Ticket, work: Callable[[Cancellation], Any], emit: Callable[[object], None]) -> None:
        try:
            if not self._wait_for_slot(ticket, emit):
                emit(
                    Failed(
                        *failure_message("shutdown" if self._closing else ticket.cancellation.reason, self.deadline_s)
                    )
                )
                return
            started = time.monotonic()
            try:
                with cancellation_scope(ticket.cancellation):
                    result = work(ticket.cancellation)
            except GenerationCancelled as stopped:
                logger.info("Generation stopped: %s", stopped.reason)
                with self._condition:
                    self.stopped += 1
                emit(Failed(*failure_message(stopped.reason, self.deadline_s)))
            except Exception:
                logger.exception("A generation failed.")
                emit(Failed("error", "Something went wrong while answering. Please try again."))
            else:
                with self._condition:
                    self._turn_s = 0.8 * self._turn_s + 0.2 * (time.monotonic() - started)
                    self.served += 1
                emit(Finished(result))
            finally:
                with self._condition:
                    self._running.discard(ticket)
                    self._condition.notify_all()
        finally:
            ticket.done.set()

    # ---- shutdown and health ----------------------------------------------------------------------------------

    def shutdown(self, wait_s: float = 5.0) -> bool:
        """Refuse new requests, stop every waiting and running generation; True when all ended within `wait_s`."""
        with self._condition:
            self._closing = True
            tickets = [*self._line, *self._running]
            self._condition.notify_all()
        for ticket in tickets:
            ticket.cancel("shutdown")
        deadline = time.monotonic() + wait_s
        return all(ticket.done.wait(max(0.0, deadline - time.monotonic())) for ticket in tickets)

    def stats(self) -> dict[str, Any]:
        with self._condition:
            return {
                "slots": self.slots,
                "running": len(self._running),
                "waiting": len(self._line),
                "max_waiting": self.max_waiting,
                "served": self.served,
                "refused": self.refused,
                "stopped": self.stopped,
                "typical_answer_s": round(self._turn_s, 1),
            }
