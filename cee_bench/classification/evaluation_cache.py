"""Evaluation paid once: one trace per trained model and split, one confirmation (real early exit and its timing) per
model, rule and split, whoever asks for them and in whichever run.

A trace (`trace.compute_trace`) is a function of the model's weights and signal function, the split's rows, the batch
size, the device and the precision (`--dtype`), and of the code that computes it (`provenance.code_identity`):
`EvaluationCache.trace_key` is a hash of exactly those, so every operating point of a method, every method whose model is the same trained model
(PCEE-BERT's is PABEE's), and a later run of the same models (another grid) read one trace. A confirmation
(`recipe._confirm`: real early-exit predictions, their agreement with the simulation, the latency figures) is named by
its dev trace's key, the rule and the timing settings, so a later run that picks an operating point already confirmed
reads it instead of timing it again; its latency figures keep the time they were measured (`measured_at`).

With a folder (the model store's `evaluation/`, where the store is on) both are kept on disk, written atomically; like
the store, the folder is a cache: deleting it only means evaluating and timing again (which is how to re-time on an
idler machine).
"""

from __future__ import annotations

import hashlib
import io
import json
import weakref
from pathlib import Path
from typing import Any

import torch
import transformers

from cee_bench.classification.data import Encoded
from cee_bench.classification.multiexit import MultiExitModel
from cee_bench.classification.sharing import data_digest, weights_digest
from cee_bench.classification.trace import Trace, compute_trace
from cee_bench.progress import Progress
from cee_bench.provenance import code_identity
from cee_bench.results import atomic_write, write_json
from cee_bench.store import canonical


class EvaluationCache:
    """Traces and confirmations by content, in memory for this run and, given a `folder`, on disk for the next."""

    def __init__(self, folder: Path | None, *, batch_size: int, progress: Progress | None = None) -> None:
        self.folder, self.batch_size, self.progress = folder, batch_size, progress
        self.traces: dict[str, Trace] = {}
        self.confirmations: dict[str, Any] = {}
        self.weights: weakref.WeakKeyDictionary[MultiExitModel, str] = weakref.WeakKeyDictionary()
        self.computed = 0  # traces computed here (the others were read), for tests and benchmarks

    def trace(self, model: MultiExitModel, data: Encoded, split: str) -> Trace:
        key = self.trace_key(model, data)
        if key in self.traces:
            return self.traces[key]
        path = None if self.folder is None else self.folder / f"trace-{key}.pt"
        trace = _read_trace(path, split) if path is not None else None
        if trace is None:
            model.eval()
            trace = compute_trace(model, data, split=split, batch_size=self.batch_size, progress=self.progress)
            self.computed += 1
            if path is not None:
                buffer = io.BytesIO()
                torch.save({"signals": trace.signals, "labels": trace.labels}, buffer)
                atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))
        self.traces[key] = trace
        return trace

    def trace_key(self, model: MultiExitModel, data: Encoded) -> str:
        """sha256 of what a trace of `model` over `data` is computed from (see the module docstring)."""
        if model not in self.weights:
            self.weights[model] = weights_digest(model, remember=False)
        signal_fn = model.signal_fn
        return _digest({"weights": self.weights[model], "rows": data_digest(data), "batch_size": self.batch_size,
                        "signals": None if signal_fn is None else f"{signal_fn.__module__}.{signal_fn.__qualname__}",
                        "device": str(model.device), "precision": model.precision, "code": code_identity()["fingerprint"],
                        "torch": torch.__version__,
                        "transformers": transformers.__version__})

    def confirmation_key(self, model: MultiExitModel, data: Encoded, rule: object, timing: dict[str, Any]) -> str:
        """The name of a confirmation of `rule` on `model` over `data` under the timing settings `timing`. Rules are
        frozen dataclasses: their repr names their class and every field."""
        return _digest({"trace": self.trace_key(model, data), "rule": repr(rule), "timing": timing})

    def confirmation(self, key: str) -> Any | None:
        if key not in self.confirmations and self.folder is not None:
            try:
                self.confirmations[key] = json.loads((self.folder / f"confirm-{key}.json").read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                return None
        return self.confirmations.get(key)

    def keep_confirmation(self, key: str, value: Any) -> Any:
        """Keep `value` under `key` as the JSON it is stored as, so a reused confirmation reads as a fresh one."""
        self.confirmations[key] = canonical(value)
        if self.folder is not None:
            write_json(self.folder / f"confirm-{key}.json", self.confirmations[key])
        return self.confirmations[key]


def _digest(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def _read_trace(path: Path, split: str) -> Trace | None:
    """The stored trace at `path`, or None when there is none or it cannot be read (a cache)."""
    try:
        stored = torch.load(path, weights_only=True)
        return Trace(stored["signals"], stored["labels"], split)
    except (OSError, RuntimeError, KeyError, EOFError):
        return None
