"""Rich progress bars that `--quiet` (or a non-terminal stderr) turns off, behind one small interface the loops use.

Only the main process of a multi-process run shows anything: N copies of every bar and line would be noise.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from cee_bench.distributed import is_main


class Progress:
    """`with progress.task("train pabee", total=n) as advance: ...; advance()`; silent when quiet."""

    def __init__(self, *, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet_mode = quiet or not is_main()
        self.console = console or Console(stderr=True)

    @classmethod
    def quiet(cls) -> "Progress":
        return cls(quiet=True)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[..., None]]:
        if self.quiet_mode or not self.console.is_terminal:  # bars in a log file are only noise
            yield lambda *args, **kwargs: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        with RichProgress(*columns, console=self.console, transient=True) as bar:
            task_id = bar.add_task(description, total=total, info="")

            def advance(info: str = "") -> None:
                bar.update(task_id, advance=1, info=info)

            yield advance

    def log(self, message: str) -> None:
        if not self.quiet_mode:
            self.console.print(message)

    def warn(self, message: str) -> None:
        """A line the user must see even with `--quiet` (something on disk was damaged and set aside)."""
        if is_main():
            self.console.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)
