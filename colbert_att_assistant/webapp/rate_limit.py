"""A sliding-window rate limit per client (IP address or session)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque


class RateLimiter:
    def __init__(self, max_events: int, window_s: float, clock=time.monotonic):
        self.max_events = max_events
        self.window_s = window_s
        self.clock = clock
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float | None:
        """Seconds to wait if `client` is over the limit; otherwise records the event and returns None."""
        now = self.clock()
        with self._lock:
            events = self._events[client]
            while events and now - events[0] >= self.window_s:
                events.popleft()
            if len(events) >= self.max_events:
                return self.window_s - (now - events[0])
            events.append(now)
            return None


def rate_limited_message(seconds: float) -> str:
    return (
        f"You are sending messages faster than I can answer them. Please wait {max(1, round(seconds))} seconds "
        "and try again."
    )
