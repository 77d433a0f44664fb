"""A report's cells, both kinds: one (task, method, operating point) aggregated over its seeds, with its intervals.

Classification (the Table 3 mirror): mean, seed sd and a 95% paired-bootstrap interval over the dev examples
(`cee_bench.intervals`) of the score and the saved layers, plus Δ vs the full model with its own paired interval, from
each seed's per-example log. Generation: mean and seed sd of quality and speed at each named operating point and
curve point; its records keep per-example exit layers (at the `ltt` point) but no per-example scores, so the one
interval is the saved layers'. The same resamples serve every method of a task (seeded by its name and size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cee_bench.intervals import DEFAULT_RESAMPLES, PairedBootstrap, interval, metric_samples, saved_layer_samples
from cee_bench.report.grouping import OP_LABELS, TABLE_KEYS, TASK_KEYS, Group, method_order, op_order, record_fields

NO_LOG = "no per-example log"
NO_SCORES = "saved layers only: generation records keep no per-example scores"
FALLBACK = "fallback: full depth"  # a Learn-then-Test point that found no safe candidate, either kind
GENERATION_FIELDS = ("rouge_l", "bert_f", "mean_layers_per_token", "saved_layers", "speedup_measured", "tokens_per_s")


# ---------------------------------------------------------------- classification: seeds, intervals, Δ

def _per_example(record: dict[str, Any], op: str, ids: list[str] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(predictions, exit layers) of one operating point on the task's dev examples, or None when the record has no
    per-example log (records written before logs existed) or logged other examples."""
    log = record.get("per_example") or {}
    point = (log.get("points") or {}).get(op)
    if ids is None or log.get("ids") != ids or not point or "predictions" not in point:
        return None
    return np.asarray(point["predictions"]), np.asarray(point["exit_layers"])


def _task_examples(records: list[dict[str, Any]]) -> tuple[list[str] | None, np.ndarray | None]:
    for r in records:
        log = r.get("per_example") or {}
        if log.get("ids") and log.get("labels") is not None:
            return list(log["ids"]), np.asarray(log["labels"])
    return None, None


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _sd(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def _latency(point: dict[str, Any], batch: str, key: str) -> float | None:
    return point.get("latency", {}).get(batch, {}).get(key)


def converged_at(record: dict[str, Any], threshold: Any, flag: str = "converged") -> bool | None:
    """Whether ConsistentEE's rounds converged (`flag` "collapsed": collapsed) for the chosen α, the first of an
    (α, π) pair on the π sweep's row (None where the record does not say)."""
    table = (record.get("method_meta") or {}).get(flag)
    if isinstance(threshold, (list, tuple)) and threshold:
        threshold = threshold[0]
    if not isinstance(table, dict) or threshold is None:
        return None
    for alpha, done in table.items():
        try:
            if np.isclose(float(alpha), float(threshold)):
                return bool(done)
        except (TypeError, ValueError):
            continue
    return None


@dataclass
class _Reference:
    """The full model of one task: dev score and bootstrap samples per seed."""

    scores: dict[Any, float]
    samples: dict[Any, np.ndarray]

    def score(self, seed: Any) -> float | None:
        return self.scores.get(seed, _mean(list(self.scores.values())))

    def sample(self, seed: Any) -> np.ndarray | None:
        if seed in self.samples:
            return self.samples[seed]
        return np.mean(list(self.samples.values()), axis=0) if self.samples else None


def _cell(task: str, method: str, op: str, points: list[tuple[dict, dict]], boot: PairedBootstrap | None,
          ids: list[str] | None, labels: np.ndarray | None, reference: _Reference | None) -> dict[str, Any]:
    """One (task, method, operating point) aggregated over its seeds: the CSV row, which the tables render."""
    first, p0 = points[0]
    seeds = [r.get("seed") for r, _ in points]
    scores = [float(p["score"]) for _, p in points]
    saved = [float(p["saved_layers"]) for _, p in points]
    fields = record_fields(first)
    row: dict[str, Any] = {
        "kind": "classification", "task": task, "method": method, "method_display": first["method_display"],
        "operating_point": op, "label": "full depth" if method == "full" else OP_LABELS.get(op, op),
        **{k: fields[k] for k in (*TABLE_KEYS, *TASK_KEYS)},
        "split": p0.get("split"), "selected_on": p0.get("selected_on"), "metric": first["metric"],
        "num_layers": first["num_layers"], "seeds": len(points), "seed_list": ";".join(map(str, seeds)),
        "threshold": ";".join(dict.fromkeys(str(p.get("threshold")) for _, p in points)),
        "met_seeds": sum(bool(p.get("met_on_selection")) for _, p in points),
        "fallback_seeds": sum(bool(p.get("fallback")) for _, p in points),
        "reached_seeds": sum(bool(p.get("met_on_selection") or p.get("fallback")) for _, p in points),
        "score": float(np.mean(scores)), "score_mean": float(np.mean(scores)), "score_sd": _sd(scores),
        "saved_layers": float(np.mean(saved)), "saved_layers_sd": _sd(saved),
        "mean_exit_layer": _mean([p.get("mean_exit_layer") for _, p in points]),
        "layer_speedup": _mean([p.get("layer_speedup") for _, p in points]),
        "real_vs_simulated_agreement": min((p["real_vs_simulated_agreement"] for _, p in points
                                            if p.get("real_vs_simulated_agreement") is not None), default=None),
        "reference_score": _mean([(r.get("reference") or {}).get("dev") for r, _ in points]),
        "reference_source": (first.get("reference") or {}).get("source"),
        "score_ci_low": None, "score_ci_high": None, "saved_layers_ci_low": None, "saved_layers_ci_high": None,
        "delta_vs_full": None, "delta_ci_low": None, "delta_ci_high": None, "within_noise": None,
        "bootstrap_resamples": None, "interval_note": "",
    }
    row["met"] = row["met_seeds"] == len(points)
    for batch in ("b1", "b32"):
        row[f"speedup_wall_{batch}"] = _mean([_latency(p, batch, "speedup_wall") for _, p in points])
        row[f"realised_fraction_{batch}"] = _mean([_latency(p, batch, "realised_fraction") for _, p in points])
    row["latency_ms_b1"] = _mean([_latency(p, "b1", "ee_ms_median") for _, p in points])
    row["full_latency_ms_b1"] = _mean([_latency(p, "b1", "full_ms_median") for _, p in points])
    converged = [converged_at(r, p.get("threshold")) for r, p in points]
    row["converged"] = None if all(c is None for c in converged) else all(c is not False for c in converged)
    row["collapsed"] = any(converged_at(r, p.get("threshold"), "collapsed") for r, p in points)
    if reference is not None and method != "full":
        row["delta_vs_full"] = float(np.mean([s - reference.score(seed) for s, seed in zip(scores, seeds)]))
    _add_intervals(row, points, boot, ids, labels, reference)
    return row


def _add_intervals(row: dict[str, Any], points: list[tuple[dict, dict]], boot: PairedBootstrap | None,
                   ids: list[str] | None, labels: np.ndarray | None, reference: _Reference | None) -> None:
    """The cell's paired-bootstrap intervals from its seeds' per-example logs (all of them, or none: an interval
    over some seeds only would describe another mean); the full model's cell keeps its samples for the Δ of the
    others."""
    first = points[0][0]
    seeds = [r.get("seed") for r, _ in points]
    logs = [_per_example(r, row["operating_point"], ids) for r, _ in points]
    if boot is None or any(log is None for log in logs):
        row["interval_note"] = NO_LOG
        return
    samples = metric_samples(boot, first["metric"], np.stack([log[0] for log in logs]), labels)
    if samples is None:
        row["interval_note"] = f"no vectorised form of {first['metric']}"
        return
    row["bootstrap_resamples"] = boot.resamples
    row["score_ci_low"], row["score_ci_high"] = interval(samples.mean(0))
    layers = saved_layer_samples(boot, np.stack([log[1] for log in logs]), int(first["num_layers"]))
    row["saved_layers_ci_low"], row["saved_layers_ci_high"] = interval(layers.mean(0))
    if row["method"] == "full":
        row["_samples"] = dict(zip(seeds, samples))
    elif reference is not None and reference.samples:
        delta = np.mean([s - reference.sample(seed) for s, seed in zip(samples, seeds)], axis=0)
        row["delta_ci_low"], row["delta_ci_high"] = interval(delta)
        row["within_noise"] = row["delta_ci_low"] <= 0.0 <= row["delta_ci_high"]


def summarise(group: Group, resamples: int = DEFAULT_RESAMPLES) -> list[dict[str, Any]]:
    """Every cell of a group, task by task; the full model's cell first, since the others' Δ is paired with it."""
    order = method_order()
    cells = []
    for task in group.tasks:
        recs = [r for r in group.records if r["task"] == task]
        ids, labels = _task_examples(recs)
        boot = PairedBootstrap(task, len(ids), resamples) if ids else None
        methods = sorted({r["method"] for r in recs}, key=lambda m: (order.get(m, len(order)), m))
        reference = None
        for method in methods:
            mrecs = sorted((r for r in recs if r["method"] == method), key=lambda r: r.get("seed") or 0)
            ops = sorted({op for r in mrecs for op in r["operating_points"]}, key=op_order)
            if method == "full":
                ops = ops[:1]  # every operating point of the full model is the full depth
            for op in ops:
                points = [(r, r["operating_points"][op]) for r in mrecs if op in r["operating_points"]]
                cell = _cell(task, method, op, points, boot, ids, labels, reference)
                if method == "full":
                    reference = _Reference(dict(zip([r.get("seed") for r, _ in points],
                                                    [float(p["score"]) for _, p in points])),
                                           cell.pop("_samples", {}))
                cells.append(cell)
    return cells


@dataclass
class Report:
    """A whole report: the classification groups with their cells and rendered tables (`tables.Table3`), the
    generation groups' rows, and the warnings about records that could not share a table."""

    groups: list[Group]  # classification
    cells: list[list[dict[str, Any]]]  # per classification group
    warnings: list[str]
    tables: list[Any] = field(default_factory=list)  # per classification group, its `tables.Table3`
    generation: list[list[dict[str, Any]]] = field(default_factory=list)  # per generation group, its rows

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every classification cell of every table, numbered by table, for the CSV."""
        return [{**c, "table": i} for i, cells in enumerate(self.cells, 1) for c in cells]


def shown(cell: dict[str, Any]) -> bool:
    """Whether the cell has a number under its label: every seed met the target (or, for Learn-then-Test, fell
    back to the full depth, a guaranteed point in its own right)."""
    return cell["reached_seeds"] == cell["seeds"]


# ---------------------------------------------------------------- generation: seeds and the saved-layers interval

def generation_cells(group: Group, resamples: int = DEFAULT_RESAMPLES) -> list[dict[str, Any]]:
    """Every row of a generation group, in the records' order of tasks and methods: per method its named operating
    points (e.g. `ltt`, `full`), then its curve points (operating_point = "curve"), each aggregated over the seeds
    (a cell's seeds share their settings and grid, so their curves align point by point)."""
    rows = []
    for task in dict.fromkeys(r["task"] for r in group.records):
        recs = [r for r in group.records if r["task"] == task]
        for method in dict.fromkeys(r["method"] for r in recs):
            mrecs = sorted((r for r in recs if r["method"] == method), key=lambda r: r.get("seed") or 0)
            for op in dict.fromkeys(op for r in mrecs for op in r.get("operating_points", {})):
                points = [(r, r["operating_points"][op]) for r in mrecs if op in r["operating_points"]]
                rows.append(_generation_cell(task, op, points, resamples))
            curves = [[p for p in r.get("curve", []) if not p.get("full_model")] for r in mrecs]
            for i in range(min(len(c) for c in curves)):
                rows.append(_generation_cell(task, "curve", [(r, c[i]) for r, c in zip(mrecs, curves)], resamples))
    return rows


def _generation_cell(task: str, op: str, points: list[tuple[dict, dict]], resamples: int) -> dict[str, Any]:
    """One generation (task, method, point) over its seeds: the CSV row, which the generation tables render (its
    `method` is the method's display name, as the tables show it)."""
    first = points[0][0]
    seeds = [r.get("seed") for r, _ in points]
    fields = record_fields(first)
    display = first.get("method_display", first["method"])
    row: dict[str, Any] = {
        "kind": "generation", "task": task, "method": display, "method_display": display, "operating_point": op,
        **{k: fields[k] for k in (*TABLE_KEYS, *TASK_KEYS)}, "metric": first.get("metric"),
        "num_layers": first.get("num_layers"), "seeds": len(points), "seed_list": ";".join(map(str, seeds)),
        "threshold": _one_or_all([p.get("threshold") for _, p in points]),
        "alpha": _one_or_all([p.get("alpha") for _, p in points]),
        **{f: _mean([p.get(f) for _, p in points]) for f in GENERATION_FIELDS},
        "fallback_seeds": sum(bool(p.get("fallback")) for _, p in points),
        "saved_layers_ci_low": None, "saved_layers_ci_high": None, "bootstrap_resamples": None, "interval_note": "",
    }
    row["fallback"] = row["fallback_seeds"] == len(points)
    for f in ("rouge_l", "bert_f", "saved_layers"):
        row[f"{f}_sd"] = _sd([float(p[f]) for _, p in points if p.get(f) is not None])
    row["score"] = row["score_mean"] = row["rouge_l"]  # the main score, in the columns classification fills
    row["score_sd"] = row["rouge_l_sd"]
    _add_saved_layers_interval(row, points, resamples)
    return row


def _one_or_all(values: list[Any]) -> Any:
    """The seeds' common value, or all of them joined (as a classification cell joins its thresholds)."""
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else ";".join(map(str, distinct))


def _add_saved_layers_interval(row: dict[str, Any], points: list[tuple[dict, dict]], resamples: int) -> None:
    """The saved layers' paired-bootstrap interval over the evaluation prompts, from each seed's per-token exit layers
    (kept for the `ltt` point): saved = 1 − Σ decode-token layers / (decode tokens · L) on every resample, the
    first token of each output (the prompt pass, every layer) left out as the curve point leaves it out."""
    logs = [((r.get("per_example") or {}).get("points") or {}).get(row["operating_point"]) for r, _ in points]
    ids = [(r.get("per_example") or {}).get("ids") for r, _ in points]
    layers = [log.get("exit_layers") if isinstance(log, dict) else None for log in logs]
    if not ids[0] or any(i != ids[0] for i in ids) or any(x is None or len(x) != len(ids[0]) for x in layers) \
            or not row["num_layers"]:
        row["interval_note"] = NO_LOG if any(log is not None for log in logs) else ""  # curve points keep none
        return
    boot = PairedBootstrap(row["task"], len(ids[0]), resamples)
    totals = boot.sums(np.array([[sum(e[1:]) for e in seed] for seed in layers], dtype=float))
    tokens = boot.sums(np.array([[max(len(e) - 1, 0) for e in seed] for seed in layers], dtype=float))
    saved = np.where(tokens > 0, 1.0 - totals / np.maximum(tokens, 1.0) / row["num_layers"], 0.0)
    row["saved_layers_ci_low"], row["saved_layers_ci_high"] = interval(saved.mean(0))
    row["bootstrap_resamples"], row["interval_note"] = resamples, NO_SCORES
