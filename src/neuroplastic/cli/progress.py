"""The CLI's rendering of the library's progress callbacks (the library prints nothing)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from neuroplastic.cli.output import console

ProgressFn = Callable[[int, "int | None"], None]  # neuroplastic.loop.ProgressFn, without torch


@contextmanager
def progress_bar(description: str) -> Iterator[ProgressFn]:
    """A rich progress bar on stderr for the ``with`` body; yields ``progress(done, total)``
    to hand to the library. The bar disappears when the body ends."""
    from rich.progress import Progress

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


@contextmanager
def progress_tasks() -> Iterator[Callable[[str], ProgressFn]]:
    """Like :func:`progress_bar` for work in phases: yields ``start(label)``, which adds a bar
    for the next phase and returns its ``progress(done, total)``."""
    from rich.progress import Progress

    with Progress(console=console, transient=True) as bar:

        def start(label: str) -> ProgressFn:
            task = bar.add_task(label, total=None)

            def update(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            return update

        yield start
