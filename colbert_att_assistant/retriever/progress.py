"""Progress bars: encoding a collection (a callback per batch), and long question-by-question runs (benchmarks,
grounding reports): done / total, elapsed, left."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from colbert_att_assistant.retriever.encoder import ProgressCallback

# Progress goes to stderr so that a command's own output (a table, JSON) stays clean on stdout.
_stderr = Console(stderr=True, soft_wrap=True)


def run_progress(console: Console | None = None) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@contextmanager
def encoding_progress(total: int, label: str) -> Iterator[ProgressCallback]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_stderr,
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda done: progress.advance(task, done)
