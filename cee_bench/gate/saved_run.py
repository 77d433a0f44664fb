"""The latency gate's saved run: per-benchmark median and noise over several runs, and the machine it was recorded on
(what the command line and its messages call the gate's *baseline*: `cee-bench bench --baseline FILE`).

A saved run is only as good as its knowledge of two things the gate cannot see from one run: how much each benchmark
moves when nothing changed (its *spread*, measured over `--runs` suite runs), and which machine the numbers belong to
(pytest-benchmark's own `machine_info` and `commit_info`, stored as it reported them). Saved runs are kept per machine
(`benchmarks/saved_runs/<machine slug>.json`) so a CI runner and a laptop each gate against their own numbers.

Format 2 (this module) adds the spreads and the machine record; a format-1 file (no spreads) is refused with a line
that says how to re-save it rather than gated with a guessed noise.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cee_bench.errors import UserError
from cee_bench.results import write_json

SAVED_RUN_FORMAT = 2
SAVED_RUNS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "saved_runs"
# Which committed saved run a machine without its own gates against, per device: {"cpu": "<file>.json"} (CI's runner).
DEFAULTS_NAME = "defaults.json"
# What a change of which can move a timing, besides the machine: pytest-benchmark's machine_info key → package.
VERSIONS = {"python_version": "python", "torch": "torch", "transformers": "transformers"}


@dataclass(frozen=True)
class Figures:
    """One benchmark's result in one run; `normalised` is the gated figure."""

    normalised: float  # ratio ÷ expected ratio
    ratio: float  # median over rounds of time ÷ the reference timed just before it
    median_ms: float
    reference: str
    # True where target and reference run the same layers (or the same decoder), so only overheads differ and the
    # ratio transfers between CPUs; False for the trace sweep, whose tiny operations and its reference's matmuls
    # scale differently from one CPU to another.
    machine_independent: bool
    mean_exit_layer: float | None = None
    realised_fraction: float | None = None


@dataclass(frozen=True)
class Entry:
    """A saved benchmark: the run with the median normalised figure, and the noise around it."""

    figures: Figures
    spread: float  # median absolute deviation of the runs' normalised figures, relative to their median
    runs: tuple[float, ...]  # every run's normalised figure, for the record

    @classmethod
    def of_runs(cls, runs: list[Figures]) -> "Entry":
        """Median and spread of one benchmark over several runs (the median run's other figures come with it)."""
        ordered = sorted(runs, key=lambda fig: fig.normalised)
        middle = ordered[(len(ordered) - 1) // 2]
        values = tuple(fig.normalised for fig in runs)
        median = statistics.median(values)
        return cls(Figures(**{**asdict(middle), "normalised": median}),
                   spread=statistics.median(abs(value / median - 1) for value in values), runs=values)


@dataclass(frozen=True)
class Machine:
    """What a saved run's numbers belong to: CPU model and core count (and the GPU, for `--device cuda`)."""

    cpu: str
    cores: int
    gpu: str | None = None

    @classmethod
    def of_info(cls, machine_info: dict[str, Any]) -> "Machine":
        """From pytest-benchmark's `machine_info` (its `cpu` is py-cpuinfo's record; the suite adds `gpu`)."""
        cpu = machine_info.get("cpu") or {}
        return cls(cpu=str(cpu.get("brand_raw") or machine_info.get("processor") or "unknown CPU"),
                   cores=int(cpu.get("count") or 0), gpu=machine_info.get("gpu"))

    @property
    def slug(self) -> str:
        """The saved run's file stem: `amd-epyc-2cpu`, or the GPU's name and `-cuda` on a GPU."""
        def clean(text: str) -> str:
            return re.sub(r"[^a-z0-9]+", "-", re.sub(r"\((r|tm)\)", "", text.lower())).strip("-")

        return f"{clean(self.gpu)}-cuda" if self.gpu else f"{clean(self.cpu)}-{self.cores}cpu"

    def __str__(self) -> str:
        return f"{self.gpu} on " * bool(self.gpu) + f"{self.cpu} ({self.cores} cores)"


def this_machine(device: str) -> Machine:
    """This machine, read the way pytest-benchmark reads it (py-cpuinfo), before anything is timed."""
    from cpuinfo import get_cpu_info

    gpu = None
    if device == "cuda":
        import torch

        gpu = torch.cuda.get_device_name(0)
    return Machine.of_info({"cpu": get_cpu_info(), "gpu": gpu})


@dataclass
class SavedRun:
    backbone: str
    device: str
    machine_info: dict[str, Any]
    commit_info: dict[str, Any]
    entries: dict[str, Entry]
    runs: int = 1
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def machine(self) -> Machine:
        return Machine.of_info(self.machine_info)


def saved_runs(device: str) -> list[Path]:
    """The committed saved runs of a device, by file name (a GPU's end in `-cuda`)."""
    return sorted(p for p in SAVED_RUNS_DIR.glob("*.json")
                  if p.name != DEFAULTS_NAME and p.stem.endswith("-cuda") == (device == "cuda"))


def default_path(device: str, machine: Machine, saving: bool) -> Path:
    """This machine's saved run; when it has none (and we are not saving one), the device's designated default in
    `defaults.json` (a new runner still gates what transfers, and says so), else the device's only saved run. Several
    and none designated is refused rather than one picked by its name."""
    own = SAVED_RUNS_DIR / f"{machine.slug}.json"
    if saving or own.is_file():
        return own
    designated = _defaults().get(device)
    if designated:
        return SAVED_RUNS_DIR / designated
    others = saved_runs(device)
    if len(others) > 1:
        raise UserError(f"no saved run of this machine ({own.name}) and {len(others)} of other machines with none "
                        f"designated for {device}: pass --baseline FILE, or name one under \"{device}\" in "
                        f"{SAVED_RUNS_DIR / DEFAULTS_NAME}")
    return others[0] if others else own


def _defaults() -> dict[str, str]:
    path = SAVED_RUNS_DIR / DEFAULTS_NAME
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise ValueError("expected an object of device → file name")
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is corrupt ({exc}); restore it from git") from None
    return raw


def version_changes(saved: SavedRun, now: dict[str, str | None]) -> str | None:
    """One line naming what of python, torch and transformers differs from the saved run's (only what it recorded:
    older saved runs lack transformers), or None."""
    changed = [f"{VERSIONS[key]} {saved.machine_info[key]} → {now.get(key)}" for key in VERSIONS
               if saved.machine_info.get(key) is not None and saved.machine_info[key] != now.get(key)]
    if not changed:
        return None
    return (f"versions differ from the baseline's: {', '.join(changed)}; a change of speed may come from them, not "
            "from the code")


def current_versions() -> dict[str, str | None]:
    """This process's python, torch and transformers, keyed as the saved run's machine_info keys them."""
    import platform

    from cee_bench.provenance import package_version

    return {"python_version": platform.python_version(),
            **{key: package_version(name) for key, name in VERSIONS.items() if name != "python"}}


def load(path: Path, device: str, backbone: str) -> SavedRun:
    """The saved run at `path`, refused (one line) when missing, unreadable, without spreads, or recorded on another
    backbone or device."""
    resave = f"`cee-bench bench --save{'' if device == 'cpu' else ' --device ' + device}`"
    if not path.is_file():
        raise UserError(f"no baseline at {path}; create one on this machine with {resave}")
    try:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        if raw.get("format") == 1:
            raise UserError(f"baseline {path} is in the old format without per-benchmark spreads; re-save it on the "
                            f"machine it is for with {resave} (5 runs, a few minutes) and commit it")
        if raw.get("format") != SAVED_RUN_FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {SAVED_RUN_FORMAT}")
        entries = {name: Entry(Figures(**{k: v for k, v in entry.items() if k not in ("spread", "runs")}),
                               spread=float(entry["spread"]), runs=tuple(entry["runs"]))
                   for name, entry in raw["benchmarks"].items()}
        saved = SavedRun(backbone=raw["backbone"], device=raw["device"], machine_info=dict(raw["machine_info"]),
                            commit_info=dict(raw.get("commit_info") or {}), entries=entries,
                            runs=int(raw.get("runs", 1)), created=str(raw.get("created", "?")))
        for name, entry in entries.items():
            if not 0 < entry.figures.normalised < math.inf or not 0 <= entry.spread < math.inf:
                raise ValueError(f"benchmark {name} has no positive normalised figure and finite spread")
    except UserError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"baseline {path} is corrupt ({type(exc).__name__}: {exc}); restore it from git or "
                        f"re-create it with {resave}") from None
    if saved.backbone != backbone:
        raise UserError(f"baseline {path} was recorded on backbone '{saved.backbone}', but the suite runs "
                        f"'{backbone}'; re-create it with {resave}")
    if saved.device != device:
        raise UserError(f"baseline {path} was recorded on {saved.device}, but this run is on {device}; pass that "
                        f"device's baseline or create one with `cee-bench bench --save --device {device}`")
    return saved


def save(path: Path, saved: SavedRun) -> None:
    """Write the saved run (atomically: an interrupted `--save` leaves the old file)."""
    record = {"format": SAVED_RUN_FORMAT, "backbone": saved.backbone, "device": saved.device,
              "created": saved.created, "runs": saved.runs, "machine_info": saved.machine_info,
              "commit_info": saved.commit_info,
              "benchmarks": {name: {**asdict(entry.figures), "spread": entry.spread, "runs": list(entry.runs)}
                             for name, entry in sorted(saved.entries.items())}}
    write_json(path, record)
