"""The sweep as the user watches it: the plan before it starts (`plan_table`), one Rich view while it runs (done,
running, waiting, failed; `SweepView`), and at the end every failed job's log and last line."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cee_bench.sweep.plan import Plan

STATES = ("done", "running", "waiting", "failed")  # a job's state in the view; "waiting": for its turn or its needs
_STYLE = {"done": "green", "running": "cyan", "waiting": "dim", "failed": "red"}


def plan_table(plan: Plan, jobs: int) -> Group:
    """The plan: every job, what it waits for, whether it is done, its estimated training; then the totals."""
    table = Table(title="Sweep plan (one job per task, method and seed)")
    for column in ("job", "waits for", "status", "training (est. min, 1 thread)"):
        table.add_column(column)
    for job in plan.jobs:
        table.add_row(job.id, ", ".join(job.needs) or "—", "done (kept)" if job.done else "to run",
                      "—" if job.done else "?" if job.minutes is None else f"{job.minutes:.2f}")
    to_run, minutes = len(plan.to_run), plan.minutes()
    cost = ("no measured figure for this preset or kind (presets.PRESET_MINUTES)" if minutes is None else
            f"estimated training {minutes:.1f} minutes on one thread (presets.PRESET_MINUTES, measured; shared "
            "trainings are counted in each method that uses them, and trained once: an upper bound)")
    summary = Text(f"{len(plan.jobs)} job(s): {len(plan.jobs) - to_run} done, {to_run} to run, at most {jobs} at "
                   f"once; {cost}")
    return Group(table, summary)


class SweepView:
    """One view of the running sweep: a live table on a terminal; elsewhere (a log, CI) one line per change."""

    def __init__(self, plan: Plan, console: Console) -> None:
        self.plan, self.console = plan, console
        self.state = {job.id: "done" if job.done else "waiting" for job in plan.jobs}
        self.note: dict[str, str] = {}
        self.started = time.monotonic()
        self.live = Live(self._render(), console=console, refresh_per_second=2) if console.is_terminal else None

    def __enter__(self) -> SweepView:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def set(self, job_id: str, state: str, note: str = "") -> None:
        self.state[job_id], self.note[job_id] = state, note
        if self.live is not None:
            self.live.update(self._render())
        else:
            elapsed = time.monotonic() - self.started
            self.console.print(f"[{elapsed:6.0f}s] {job_id}: {state}{f' ({note})' if note else ''} · "
                               f"{self.counts()}", markup=False, highlight=False, soft_wrap=True)

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._render())

    def counts(self) -> str:
        counts = Counter(self.state.values())
        return ", ".join(f"{counts[s]} {s}" for s in STATES)

    def _render(self) -> Group:
        table = Table(title=f"Sweep: {self.counts()} · {time.monotonic() - self.started:.0f}s")
        for column in ("job", "state", ""):
            table.add_column(column)
        for job in self.plan.jobs:
            state = self.state[job.id]
            table.add_row(job.id, Text(state, style=_STYLE[state]), self.note.get(job.id, ""))
        return Group(table)

    def failures(self, logs: dict[str, Path]) -> list[str]:
        """One line per failed job: its log and the log's last line."""
        return [f"failed: {job_id}: {logs[job_id]}: {last_line(logs[job_id])}" if job_id in logs else
                f"failed: {job_id}: {self.note.get(job_id, '')}"
                for job_id, state in self.state.items() if state == "failed"]


def last_line(path: Path) -> str:
    try:
        lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].strip() if lines else "(empty log)"
