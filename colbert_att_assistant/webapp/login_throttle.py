"""Staff login throttling: after `max_failures` wrong passwords within `window_s`, a client is locked out for
`lockout_s` (even the right password is refused meanwhile) and the lockout is reported to `on_lockout`.

Failures are counted per client address: counting per user name would let anyone lock the staff out."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from colbert_att_assistant.webapp.request_limits import send_json


class LoginThrottle:
    def __init__(
        self,
        max_failures: int,
        window_s: float,
        lockout_s: float,
        on_lockout: Callable[[str, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.on_lockout = on_lockout
        self.clock = clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def locked_for(self, client: str) -> float | None:
        """Seconds the client is still locked out, or None."""
        with self._lock:
            until = self._locked_until.get(client)
            if until is None:
                return None
            left = until - self.clock()
            if left <= 0:
                del self._locked_until[client]
                return None
            return left

    def failed(self, client: str) -> None:
        now = self.clock()
        with self._lock:
            failures = self._failures[client]
            failures.append(now)
            while failures and now - failures[0] >= self.window_s:
                failures.popleft()
            count = len(failures)
            locked = count >= self.max_failures
            if locked:
                self._locked_until[client] = now + self.lockout_s
                failures.clear()
        if locked and self.on_lockout is not None:
            self.on_lockout(client, count)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


def locked_out_message(seconds: float) -> str:
    return f"Too many wrong staff passwords from this address. Login is locked for {max(1, round(seconds))} seconds."


class LoginGuard:
    """ASGI middleware putting a `LoginThrottle` in front of a login form route it does not own (Gradio's
    POST {prefix}/login): a locked-out client gets HTTP 429 without the form being tried; otherwise the route's
    answer counts as a success (2xx) or a failure (400 / 401 / 403)."""

    def __init__(
        self,
        app: ASGIApp,
        throttle: LoginThrottle,
        paths: set[str],
        client: Callable[[Scope], str],
    ):
        self.app = app
        self.throttle = throttle
        self.paths = paths
        self.client = client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        client = self.client(scope)
        locked = self.throttle.locked_for(client)
        if locked is not None:
            await send_json(send, 429, locked_out_message(locked), {"Retry-After": str(max(1, round(locked)))})
            return
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        await self.app(scope, receive, watch)
        if status and 200 <= status[0] < 300:
            self.throttle.succeeded(client)
        elif status and status[0] in (400, 401, 403):
            self.throttle.failed(client)
