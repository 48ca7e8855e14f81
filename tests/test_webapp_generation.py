"""The line in front of the model, with real threads: places, refusals when full, cancellation, deadline, shutdown,
and the model's own lock released by a cancelled generation."""

from __future__ import annotations

import threading
import time

import pytest

from colbert_att_assistant.assistant.llm_backends import Cancellation, GenerationCancelled
from colbert_att_assistant.webapp.generation import Failed, Finished, GenerationQueue, Queued, QueueFull


class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []
        self.final = threading.Event()

    def __call__(self, event: object) -> None:
        self.events.append(event)
        if isinstance(event, Finished | Failed):
            self.final.set()


def held_work(release: threading.Event):
    """Work that runs until `release` is set, checking its cancellation like the model does between tokens."""

    def work(cancellation: Cancellation) -> str:
        while not release.is_set():
            cancellation.check()
            time.sleep(0.01)
        return "answered"

    return work


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_waiting_requests_are_told_their_place_and_a_full_line_refuses():
    line = GenerationQueue(slots=1, max_waiting=2, deadline_s=60)
    releases = [threading.Event() for _ in range(3)]
    recorders = [Recorder() for _ in range(3)]
    line.submit(held_work(releases[0]), recorders[0])
    wait_until(lambda: line.stats()["running"] == 1)
    line.submit(held_work(releases[1]), recorders[1])
    line.submit(held_work(releases[2]), recorders[2])
    with pytest.raises(QueueFull) as refused:
        line.submit(held_work(threading.Event()), Recorder())
    assert refused.value.retry_after_s >= 1 and "try again" in refused.value.message

    def places(recorder: Recorder) -> list[int]:
        return [e.position for e in recorder.events if isinstance(e, Queued)]

    wait_until(lambda: places(recorders[2]) == [2])
    assert places(recorders[1]) == [1] and places(recorders[0]) == []
    releases[0].set()
    # The first finished, the second runs, the third moves up.
    wait_until(lambda: places(recorders[2]) == [2, 1])
    assert isinstance(recorders[0].events[-1], Finished) and not recorders[1].final.is_set()
    releases[1].set()
    releases[2].set()
    for recorder in recorders:
        assert recorder.final.wait(10) and isinstance(recorder.events[-1], Finished)
    stats = line.stats()
    assert (stats["running"], stats["waiting"], stats["served"], stats["refused"]) == (0, 0, 3, 1)


def test_a_cancelled_request_leaves_the_line_and_frees_its_slot():
    line = GenerationQueue(slots=1, max_waiting=1, deadline_s=60)
    release = threading.Event()
    running, waiting = Recorder(), Recorder()
    running_ticket = line.submit(held_work(release), running)
    waiting_ticket = line.submit(held_work(release), waiting)
    waiting_ticket.cancel("disconnected")
    assert waiting.final.wait(5) and isinstance(waiting.events[-1], Failed)
    running_ticket.cancel("disconnected")
    assert running.final.wait(5)
    assert isinstance(running.events[-1], Failed) and running.events[-1].reason == "disconnected"
    after = Recorder()
    release.set()
    line.submit(held_work(release), after)
    assert after.final.wait(5) and isinstance(after.events[-1], Finished)


def test_the_deadline_stops_a_long_generation():
    line = GenerationQueue(slots=1, max_waiting=0, deadline_s=0.3)
    recorder = Recorder()
    line.submit(held_work(threading.Event()), recorder)
    assert recorder.final.wait(5)
    failed = recorder.events[-1]
    assert isinstance(failed, Failed) and failed.reason == "deadline" and "seconds" in failed.message


def test_shutdown_stops_everything_and_refuses_new_requests():
    line = GenerationQueue(slots=1, max_waiting=4, deadline_s=60)
    recorders = [Recorder() for _ in range(3)]
    for recorder in recorders:
        line.submit(held_work(threading.Event()), recorder)
    assert line.shutdown(wait_s=5)
    for recorder in recorders:
        assert isinstance(recorder.events[-1], Failed) and recorder.events[-1].reason == "shutdown"
    with pytest.raises(QueueFull, match="restarting"):
        line.submit(held_work(threading.Event()), Recorder())


def test_a_failing_work_reports_an_error_and_frees_the_slot():
    line = GenerationQueue(slots=1, max_waiting=0, deadline_s=60)

    def broken(cancellation: Cancellation) -> str:
        raise RuntimeError("boom")

    recorder = Recorder()
    line.submit(broken, recorder)
    assert recorder.final.wait(5) and recorder.events[-1].reason == "error"
    again = Recorder()
    line.submit(lambda c: "ok", again)
    assert again.final.wait(5) and again.events[-1] == Finished("ok")


def test_cancellation_raises_at_the_next_check_and_after_its_deadline():
    cancellation = Cancellation()
    cancellation.check()
    cancellation.cancel("disconnected")
    with pytest.raises(GenerationCancelled) as stopped:
        cancellation.check()
    assert stopped.value.reason == "disconnected"
    timed = Cancellation(deadline_s=0.05)
    assert timed.wait(5) and timed.reason == "deadline"
