"""The one report of both kinds of task, from stored records: the Table 3 mirror (Rich, CSV, Markdown) and the
accuracy-vs-saved-layers curves (Figure 3) for classification; the generation table and Figure 5 (quality against
measured speed-up) for generation.

What makes the table one a reviewer can trust (DESIGN.md, "Numbers come with their noise"):
- records that differ in backbone, preset, pooling, device, data limits or stage settings never share a cell: they
  land in separate tables (with a one-line warning) or are selected with `--filter`;
- a cell aggregates the seeds of one (task, method, operating point): mean, seed sd, and a 95% paired-bootstrap
  interval over the dev examples (`cee_bench.intervals`), plus Δ vs the full model with its own paired interval;
- an operating point whose target was not met on held-out train is shown as "not reached", never under the
  target's name; averages run only over the tasks every row has.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
from rich.table import Table

from cee_bench.errors import UserError
from cee_bench.intervals import DEFAULT_RESAMPLES, PairedBootstrap, interval, metric_samples, saved_layer_samples

OP_LABELS = {"no_loss": "★ no loss", "le1_loss": "≤1% loss", "ltt90_le1": "≤1% loss @90% conf., LTT"}
METRIC_NAMES = {"f1": "F1", "accuracy": "accuracy"}
METRIC_SHORT = {"f1": "F1", "accuracy": "acc"}
TABLE_KEYS = ("backbone", "model", "preset", "pooling", "device")  # one table per combination
TASK_KEYS = ("max_seq_length", "max_train_samples", "max_eval_samples")  # one value per task within a table
FILTER_KEYS = (*TABLE_KEYS, *TASK_KEYS, "task", "method", "seed")
CSV_COLUMNS = ("kind", "table", "task", "method", "method_display", "operating_point", "label", "backbone", "model",
               "preset", "pooling", "device", *TASK_KEYS, "split", "selected_on", "metric", "num_layers", "seeds",
               "seed_list", "threshold", "met", "met_seeds", "fallback_seeds", "converged", "score", "score_mean",
               "score_sd", "score_ci_low", "score_ci_high", "saved_layers", "saved_layers_sd", "saved_layers_ci_low",
               "saved_layers_ci_high", "delta_vs_full", "delta_ci_low", "delta_ci_high", "within_noise",
               "bootstrap_resamples", "interval_note", "mean_exit_layer", "layer_speedup", "speedup_wall_b1",
               "speedup_wall_b32", "realised_fraction_b1", "realised_fraction_b32", "latency_ms_b1",
               "full_latency_ms_b1", "real_vs_simulated_agreement", "reference_score", "reference_source",
               "rouge_l", "bert_f", "mean_layers_per_token", "speedup_measured", "tokens_per_s")
GENERATION_COLUMNS = ("task", "method", "operating_point", "threshold", "rouge_l", "bert_f", "mean_layers_per_token",
                      "saved_layers", "speedup_measured", "tokens_per_s")
GENERATION_HEADERS = dict(zip(GENERATION_COLUMNS, ("task", "method", "point", "threshold", "Rouge-L", "BERT-F",
                                                   "layers/token", "saved", "speed-up", "tok/s")))
NO_LOG = "no per-example log"
FALLBACK = "fallback: full depth"  # a Learn-then-Test point that found no safe candidate, either kind


# ---------------------------------------------------------------- selecting and grouping records

def record_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The values `--filter` and the grouping look at, flat."""
    config = record.get("config", {})
    return {"backbone": record.get("backbone"), **{k: config.get(k) for k in TABLE_KEYS[1:]},
            **{k: config.get(k) for k in TASK_KEYS}, "task": record["task"], "method": record["method"],
            "seed": record.get("seed")}


def filter_records(records: list[dict[str, Any]], filters: Iterable[str]) -> list[dict[str, Any]]:
    """Keep the records matching every `key=value` (values compared as text; `none` matches an unset limit)."""
    wanted: dict[str, str] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--filter expects key=value, got '{item}'")
        if key not in FILTER_KEYS:
            raise UserError(f"--filter: unknown key '{key}'; known keys: {', '.join(FILTER_KEYS)}")
        wanted[key] = value.strip()
    return [r for r in records
            if all(str(record_fields(r)[k]).lower() == v.lower() for k, v in wanted.items())]


def _cell_signature(record: dict[str, Any]) -> str:
    """What must agree across the seeds of one cell: the method's stage settings and threshold grid."""
    return json.dumps({"stages": record.get("config", {}).get("stages"),
                       "grid": record.get("method_meta", {}).get("grid")}, sort_keys=True, default=str)


def _ranks(keys: list[tuple[Any, Any]]) -> list[int]:
    """For each (scope, value), the rank of the value among those of its scope: the most common first, ties by
    first appearance."""
    counts, first = Counter(keys), {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    position, seen = {}, Counter()
    for k in sorted(counts, key=lambda k: (-counts[k], first[k])):
        position[k], seen[k[0]] = seen[k[0]], seen[k[0]] + 1
    return [position[k] for k in keys]


@dataclass
class Group:
    """Records that may share a table: same TABLE_KEYS, one set of data limits per task, one set of stage
    settings per (task, method)."""

    fields: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        return sorted({r["task"] for r in self.records})

    def limits(self, task: str) -> dict[str, Any]:
        record = next(r for r in self.records if r["task"] == task)
        return {k: record_fields(record)[k] for k in TASK_KEYS}


def group_records(records: list[dict[str, Any]]) -> tuple[list[Group], list[str]]:
    """Split classification records into groups that never mix settings, and one warning line when there are
    several. Within one TABLE_KEYS combination, the records with the most common data limits of a task (and the
    most common stage settings of a cell) make the first table, the others later ones; a table of other stage
    settings borrows the full model of its data limits, so its cells still have their Δ."""
    by_table: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        if r.get("kind") == "classification":
            by_table.setdefault(tuple(record_fields(r)[k] for k in TABLE_KEYS), []).append(r)
    groups = []
    for key, recs in by_table.items():
        limits = [(r["task"], tuple(record_fields(r)[k] for k in TASK_KEYS)) for r in recs]
        cells = [((task, r["method"], lim), _cell_signature(r)) for r, (task, lim) in zip(recs, limits)]
        parts: dict[tuple[int, int], Group] = {}
        for r, part in zip(recs, zip(_ranks(limits), _ranks(cells))):
            parts.setdefault(part, Group(dict(zip(TABLE_KEYS, key)))).records.append(r)
        for (lim, _), part in parts.items():  # a method's other stage settings still get the full model's Δ
            have = {r["task"] for r in part.records if r["method"] == "full"}
            part.records += [r for r in parts.get((lim, 0), part).records if r["method"] == "full"
                             and r["task"] not in have and any(x["task"] == r["task"] for x in part.records)]
        groups += [parts[p] for p in sorted(parts)]
    return groups, ([_mixing_warning(groups)] if len(groups) > 1 else [])


def _mixing_warning(groups: list[Group]) -> str:
    differ = [k for k in TABLE_KEYS if len({str(g.fields[k]) for g in groups}) > 1]
    per_task: dict[tuple, set] = {}
    per_cell: dict[tuple, set] = {}
    for g in groups:
        for r in g.records:
            for k in TASK_KEYS:
                per_task.setdefault((r["task"], k), set()).add(str(record_fields(r)[k]))
            per_cell.setdefault((r["task"], r["method"]), set()).add(_cell_signature(r))
    differ += [k for k in TASK_KEYS if any(len(v) > 1 for (_, kk), v in per_task.items() if kk == k)]
    if any(len(v) > 1 for v in per_cell.values()):
        differ.append("stage settings")
    values = [f"{k} ({', '.join(sorted({str(g.fields[k]) for g in groups}))})" if k in TABLE_KEYS else k
              for k in differ]
    return (f"warning: the records differ in {', '.join(values)}: shown as {len(groups)} separate tables, never in "
            f"one cell; select one with --filter KEY=VALUE (keys: {', '.join(FILTER_KEYS)})")


# ---------------------------------------------------------------- cells: seeds, intervals, Δ

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


def _converged(record: dict[str, Any], threshold: Any) -> bool | None:
    """Whether ConsistentEE's rounds converged for the chosen α (None where the record does not say)."""
    table = (record.get("method_meta") or {}).get("converged")
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
    converged = [_converged(r, p.get("threshold")) for r, p in points]
    row["converged"] = None if all(c is None for c in converged) else all(c is not False for c in converged)
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


def _method_order() -> dict[str, int]:
    from cee_bench.registry import method_names

    return {name: i for i, name in enumerate(method_names())}  # the full model first, then registry order


def _op_order(op: str) -> tuple[int, str]:
    return (list(OP_LABELS).index(op) if op in OP_LABELS else len(OP_LABELS), op)


def summarise(group: Group, resamples: int = DEFAULT_RESAMPLES) -> list[dict[str, Any]]:
    """Every cell of a group, task by task; the full model's cell first, since the others' Δ is paired with it."""
    order = _method_order()
    cells = []
    for task in group.tasks:
        recs = [r for r in group.records if r["task"] == task]
        ids, labels = _task_examples(recs)
        boot = PairedBootstrap(task, len(ids), resamples) if ids else None
        methods = sorted({r["method"] for r in recs}, key=lambda m: (order.get(m, len(order)), m))
        reference = None
        for method in methods:
            mrecs = sorted((r for r in recs if r["method"] == method), key=lambda r: r.get("seed") or 0)
            ops = sorted({op for r in mrecs for op in r["operating_points"]}, key=_op_order)
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


# ---------------------------------------------------------------- the Table 3 mirror

@dataclass
class Table3:
    """One rendered table: title, header, body and the notes under it. Each line is the row label, then four
    columns per task (score, Δ, layers, speed-up), then the two averages."""

    title: str
    header: list[str]
    body: list[list[str]]
    notes: list[str]

    PER_TASK: ClassVar[int] = 4

    def stacked(self) -> tuple[list[str], list[list[str]]]:
        """Header and body with each task's four columns stacked two by two (score over Δ, layers over speed-up),
        so that three tasks fit a terminal."""
        def pairs(line: list[str], marks: tuple[str, str]) -> list[str]:
            cells, out = line[1:-2], []
            for i in range(0, len(cells), self.PER_TASK):
                score, delta, layers, speed = cells[i:i + self.PER_TASK]
                out += ["\n".join(v for v in (score, delta != "–" and marks[0] + delta) if v and v != "–") or "–",
                        "\n".join(v for v in (layers, speed != "–" and marks[1] + speed) if v and v != "–") or "–"]
            return [line[0], *out, *line[-2:]]

        return pairs(self.header, ("", "")), [pairs(line, ("Δ ", "×")) for line in self.body]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _saving(x: float) -> str:
    """Saved layers as Table 3 shows them (−53%); nothing saved is 0%, not −0%."""
    return f"−{100 * x:.0f}%" if round(100 * x) else "0%"


def _half(low: float | None, high: float | None) -> float | None:
    return None if low is None or high is None else (high - low) / 2


def _shown(cell: dict[str, Any]) -> bool:
    """Whether the cell has a number under its label: every seed met the target (or, for Learn-then-Test, fell
    back to the full depth, a guaranteed point in its own right)."""
    return cell["reached_seeds"] == cell["seeds"]


def _score_text(cell: dict[str, Any]) -> str:
    text = _pct(cell["score_mean"])
    half = _half(cell["score_ci_low"], cell["score_ci_high"])
    text += f" ± {100 * half:.1f}" if half is not None else "†"
    if cell["score_sd"] is not None:
        text += f" (sd {100 * cell['score_sd']:.1f})"
    return text + ("‡" if cell["converged"] is False else "")


def _delta_text(cell: dict[str, Any]) -> str:
    if cell["delta_vs_full"] is None:
        return "–"
    text = f"{100 * cell['delta_vs_full']:+.1f}".replace("-", "−")
    half = _half(cell["delta_ci_low"], cell["delta_ci_high"])
    if half is None:
        return text + "†"
    return text + f" ± {100 * half:.1f}" + (" (within noise)" if cell["within_noise"] else "")


def _layers_text(cell: dict[str, Any]) -> str:
    if cell["fallback_seeds"] == cell["seeds"]:
        return FALLBACK
    text = _saving(cell["saved_layers"])
    if cell["saved_layers"] or cell["saved_layers_sd"]:  # else the full depth on every example and seed: no spread
        half = _half(cell["saved_layers_ci_low"], cell["saved_layers_ci_high"])
        text += f" ± {100 * half:.0f}" if half is not None else ""
        if cell["saved_layers_sd"] is not None:
            text += f" (sd {100 * cell['saved_layers_sd']:.0f})"
    if cell["fallback_seeds"]:
        text += f" ({FALLBACK} in {cell['fallback_seeds']}/{cell['seeds']} seeds)"
    return text


def _speed_text(cell: dict[str, Any]) -> str:
    b1, b32 = cell["speedup_wall_b1"], cell["speedup_wall_b32"]
    return "–" if b1 is None and b32 is None else "/".join("–" if v is None else f"{v:.2f}" for v in (b1, b32))


def _cells_text(cell: dict[str, Any] | None) -> list[str]:
    if cell is None:
        return ["–"] * 4
    if not _shown(cell):
        met = f" ({cell['met_seeds']}/{cell['seeds']} seeds met)" if cell["met_seeds"] else ""
        return [f"not reached{met}", "–", "–", "–"]
    return [_score_text(cell), _delta_text(cell), _layers_text(cell), _speed_text(cell)]


def _rows(cells: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(label, method, op) of each row: the full model, then per operating point every method in registry order;
    a "★ no loss" row only for a method that reached it somewhere."""
    order = _method_order()
    methods = sorted({c["method"] for c in cells}, key=lambda m: (order.get(m, len(order)), m))
    ops = sorted({c["operating_point"] for c in cells if c["method"] != "full"}, key=_op_order)
    display = {c["method"]: c["method_display"] for c in cells}
    rows = [(display["full"], "full", "")] if "full" in methods else []
    for op in ops:
        for method in methods:
            mine = [c for c in cells if c["method"] == method and c["operating_point"] == op]
            if method == "full" or not mine or (op == "no_loss" and not any(c["met"] for c in mine)):
                continue
            rows.append((f"{display[method]} ({OP_LABELS.get(op, op)})", method, op))
    return rows


def _lookup(cells: list[dict[str, Any]], task: str, method: str, op: str) -> dict[str, Any] | None:
    return next((c for c in cells if c["task"] == task and c["method"] == method
                 and (method == "full" or c["operating_point"] == op)), None)


def table3(group: Group, cells: list[dict[str, Any]]) -> Table3:
    """Header, body and notes of the Table 3 mirror of one group."""
    tasks = group.tasks
    metric = {t: next(c["metric"] for c in cells if c["task"] == t) for t in tasks}
    header = ["Method"]
    for t in tasks:
        header += [f"{t} {METRIC_SHORT.get(metric[t], metric[t])}", f"{t} Δ", f"{t} layers", f"{t} ×b1/b32"]
    header += ["Avg score", "Avg layers"]
    rows = _rows(cells)
    grid = {(label, t): _lookup(cells, t, method, op) for label, method, op in rows for t in tasks}
    common = [t for t in tasks if all(grid[(label, t)] is not None for label, _, _ in rows)]
    body = []
    for label, _, _ in rows:
        line = [label]
        for t in tasks:
            line += _cells_text(grid[(label, t)])
        avg = [grid[(label, t)] for t in common]
        if avg and all(_shown(c) for c in avg):
            line += [_pct(np.mean([c["score_mean"] for c in avg])),
                     _saving(float(np.mean([c["saved_layers"] for c in avg])))]
        else:
            line += ["–", "–"]
        body.append(line)
    return Table3(_title(group, cells), header, body, _notes(group, cells, common, rows))


def _title(group: Group, cells: list[dict[str, Any]]) -> str:
    f = group.fields
    model = f" (model {f['model']})" if f["model"] not in (None, f["backbone"]) else ""
    counts = sorted({c["seeds"] for c in cells})
    seeds = sorted({s for c in cells for s in c["seed_list"].split(";")}, key=lambda s: (len(s), s))
    seed_text = (f"{counts[0]} seed{'s' if counts[0] > 1 else ''} ({', '.join(seeds)})" if len(counts) == 1
                 else f"{counts[0]}–{counts[-1]} seeds per cell ({', '.join(seeds)})")
    splits = ", ".join(sorted({str(c["split"]) for c in cells}))
    chosen = ", ".join(sorted({str(c["selected_on"]) for c in cells}))
    return (f"Table 3 mirror — {f['backbone']}{model}, preset {f['preset']}, pooling {f['pooling']}, device "
            f"{f['device']}; {seed_text}; scores on {splits}, operating points chosen on {chosen}")


def _notes(group: Group, cells: list[dict[str, Any]], common: list[str], rows: list) -> list[str]:
    resamples = sorted({c["bootstrap_resamples"] for c in cells if c["bootstrap_resamples"]})
    judged = [c for c in cells if c["within_noise"] is not None and _shown(c)]
    counted = f"{'/'.join(map(str, resamples))} resamples" if resamples else "none computed here, see †"
    notes = [f"± = half-width of the 95% paired-bootstrap interval over the dev examples ({counted}; the same "
             "resamples for every method of a task; with several seeds each resample averages them); "
             "sd = spread over seeds. Δ = score − the full model's (same seed where it exists), points; "
             "\"within noise\" = Δ's interval contains 0. The full CI bounds are in the CSV.",
             (f"within noise: {sum(bool(c['within_noise']) for c in judged)} of {len(judged)} cells shown with a Δ "
              "interval." if judged else "within noise: no cell shown has a Δ interval."),
             "not reached = no threshold met the target on held-out train (the CSV keeps the best point, met=false); "
             "a ★ no loss row appears only for a method that reached it.",
             (f"Avg over {', '.join(common)} (the tasks every row has); a row with a cell not reached gets –."
              if common else "Avg: no task is common to every row, so no average.")]
    if any(c["operating_point"] == "ltt90_le1" for c in cells):
        notes.append("≤1% loss @90% conf., LTT = chosen by Learn-then-Test on held-out train; \"fallback: full "
                     "depth\" = no threshold passed the test.")
    full = {c["task"]: c for c in cells if c["method"] == "full"}
    if full:
        notes.append("×b1/b32 = measured speed-up, full model's wall-clock ÷ early exit's, at batch 1 / batch 32 "
                     "(ratios: ms swing with machine load). The full model through the same layer-by-layer path: "
                     + "; ".join(f"{t} {_speed_text(c)}" for t, c in sorted(full.items()))
                     + " (the path's own overhead).")
    if any(c["interval_note"] == NO_LOG for c in cells):
        notes.append("† no per-example predictions in the record (written before per-example logs): no interval, "
                     "so no within-noise verdict; re-run to get them.")
    if any(c["converged"] is False for c in cells):
        notes.append("‡ ConsistentEE: the chosen α's rounds stopped at max_rounds without converging.")
    limits = [f"{t}: " + ", ".join(f"{k}={v}" for k, v in group.limits(t).items()) for t in group.tasks]
    notes.append("data limits: " + "; ".join(limits))
    return notes


# ---------------------------------------------------------------- the whole report

@dataclass
class Report:
    groups: list[Group]
    cells: list[list[dict[str, Any]]]  # per group
    warnings: list[str]

    @property
    def tables(self) -> list[Table3]:
        return [table3(g, c) for g, c in zip(self.groups, self.cells)]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every cell of every table, numbered by table, for the CSV."""
        return [{**c, "table": i} for i, cells in enumerate(self.cells, 1) for c in cells]


def build_report(records: list[dict[str, Any]], resamples: int = DEFAULT_RESAMPLES) -> Report:
    groups, warnings = group_records(records)
    return Report(groups, [summarise(g, resamples) for g in groups], warnings)


def rich_tables(report: Report) -> list[Table]:
    tables = []
    for t in report.tables:
        table = Table(title=t.title, caption="\n".join(t.notes), caption_justify="left", show_lines=True)
        header, body = t.stacked()
        for column in header:
            table.add_column(column, justify="left" if column == "Method" else "right", no_wrap=column == "Method")
        for line in body:
            table.add_row(*line)
        tables.append(table)
    return tables


def markdown(report: Report) -> str:
    parts = []
    for t in report.tables:
        lines = [f"**{t.title}**", "", "| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
        lines += ["| " + " | ".join(line) + " |" for line in t.body]
        lines += [""] + [f"- {note}" for note in t.notes]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# ---------------------------------------------------------------- generation: table rows and Figure 5

_GENERATION_FIELDS = ("threshold", "rouge_l", "bert_f", "mean_layers_per_token", "saved_layers", "speedup_measured",
                      "tokens_per_s")


def _generation_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("kind") == "generation"]


def _generation_row(record: dict[str, Any], name: str, point: dict[str, Any]) -> dict[str, Any]:
    row = {"task": record["task"], "method": record.get("method_display", record["method"]),
           "backbone": record.get("backbone"), "operating_point": name}
    row.update({f: point.get(f) for f in _GENERATION_FIELDS})
    row["alpha"] = point.get("alpha")
    row["fallback"] = bool(point.get("fallback"))
    row["fallback_seeds"] = int(row["fallback"])  # the CSV's column, as for a classification cell of one seed
    return row


def generation_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows, one per (record, named operating point) — e.g. `ltt`, `full` — plus one per curve point
    (operating_point = "curve"): task, method, backbone, operating_point, threshold, rouge_l, bert_f,
    mean_layers_per_token, saved_layers, speedup_measured, tokens_per_s, alpha (ConsistentEE) and fallback (the
    `ltt` point is the full model because Learn-then-Test found no safe candidate)."""
    rows = []
    for record in _generation_records(records):
        for name, point in record.get("operating_points", {}).items():
            rows.append(_generation_row(record, name, point))
        for point in record.get("curve", []):
            if not point.get("full_model"):
                rows.append(_generation_row(record, "curve", point))
    return rows


def generation_table_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Generation rows at their named operating points and on the curve (the table shows the named ones)."""
    return generation_rows(records)


def _generation_cell(row: dict[str, Any], column: str) -> str:
    if column == "operating_point" and row.get("fallback"):
        return f"{row['operating_point']} ({FALLBACK})"
    return _fmt(row.get(column))


def generation_rich_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Generation — quality vs measured speed-up (named operating points)")
    for column in GENERATION_COLUMNS:
        table.add_column(GENERATION_HEADERS[column],
                         justify="left" if column in ("task", "method", "operating_point") else "right")
    for row in rows:
        if row["operating_point"] != "curve":
            table.add_row(*(_generation_cell(row, c) for c in GENERATION_COLUMNS))
    if any(row["fallback"] for row in rows):
        table.caption = f"{FALLBACK}: Learn-then-Test found no candidate safe on the calibration prompts"
    return table


def generation_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(GENERATION_COLUMNS) + " |", "|" + "---|" * len(GENERATION_COLUMNS)]
    lines += ["| " + " | ".join(_generation_cell(r, c) for c in GENERATION_COLUMNS) + " |" for r in rows
              if r["operating_point"] != "curve"]
    if any(row["fallback"] for row in rows):
        lines += ["", f"{FALLBACK}: Learn-then-Test found no candidate safe on the calibration prompts."]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "–" if value is None else str(value)


# ---------------------------------------------------------------- Figure 3

OP_MARKERS = {"no_loss": "*", "le1_loss": "D", "ltt90_le1": "^"}


def method_colour(method: str) -> Any:
    """One colour per method in every figure, by registry (= table) order; the full model is black."""
    import matplotlib

    if method == "full":
        return "black"
    order = _method_order()
    return matplotlib.colormaps["tab10"](order.get(method, len(order)) % 10)


def _seed_curves(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(saved layers, score) per seed and curve point, shape (seeds, points), from least to most saving whatever the
    grid's order (the seeds of a cell share a grid); and per point whether some seed's model there did not converge
    (ConsistentEE trains one model per α)."""
    length = min(len(r["curve"]) for r in records)
    xs = np.array([[p["saved_layers"] for p in r["curve"][:length]] for r in records])
    ys = np.array([[p["score"] for p in r["curve"][:length]] for r in records])
    open_ = np.array([[_converged(r, p.get("threshold")) is False for p in r["curve"][:length]] for r in records])
    order = np.argsort(xs.mean(0), kind="stable")
    return xs[:, order], ys[:, order], open_.any(0)[order]


def plot_curves(report: Report, out_dir: Path) -> list[Path]:
    """Figure 3: per table and task, every method's simulated dev curve (mean over seeds, seed sd as error bars),
    the full model as a horizontal line and the chosen operating points marked; one PNG each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    out_dir.mkdir(parents=True, exist_ok=True)
    order = _method_order()
    written = []
    for index, (group, cells) in enumerate(zip(report.groups, report.cells), 1):
        for task in group.tasks:
            fig, ax = plt.subplots(figsize=(8.5, 4.5))
            recs = [r for r in group.records if r["task"] == task]
            metric = recs[0]["metric"]
            unconverged_shown = False
            for method in sorted({r["method"] for r in recs}, key=lambda m: (order.get(m, len(order)), m)):
                mine = [r for r in recs if r["method"] == method]
                xs, ys, open_ = _seed_curves(mine)
                colour = method_colour(method)
                if method == "full":
                    full = next(c["score_mean"] for c in cells if c["task"] == task and c["method"] == "full")
                    ax.axhline(100 * full, color=colour, lw=1.2, label=mine[0]["method_display"])
                    ax.axhline(99 * full, color=colour, lw=0.8, ls=":", label="99% of full")
                    continue
                err = (dict(xerr=100 * xs.std(0, ddof=1), yerr=100 * ys.std(0, ddof=1), capsize=2)
                       if len(mine) > 1 else {})
                ax.errorbar(100 * xs.mean(0), 100 * ys.mean(0), fmt="o-", ms=3, lw=1, color=colour,
                            label=mine[0]["method_display"], **err)
                if open_.any():
                    ax.plot(100 * xs.mean(0)[open_], 100 * ys.mean(0)[open_], "x", ms=8, color="black",
                            label="α not converged (some seed)" if not unconverged_shown else None)
                    unconverged_shown = True
                for c in sorted(cells, key=lambda c: _op_order(c["operating_point"]), reverse=True):  # ★ on top
                    if c["task"] == task and c["method"] == method and _shown(c):
                        ax.errorbar(100 * c["saved_layers"], 100 * c["score_mean"],
                                    xerr=100 * (c["saved_layers_sd"] or 0), yerr=100 * (c["score_sd"] or 0),
                                    fmt=OP_MARKERS.get(c["operating_point"], "s"), ms=11, color=colour, mec="black",
                                    capsize=3)
            handles, _ = ax.get_legend_handles_labels()
            handles += [Line2D([], [], ls="", marker=m, color="grey", mec="black", ms=9,
                               label=f"{OP_LABELS[op]} (chosen on held-out)") for op, m in OP_MARKERS.items()
                        if any(c["task"] == task and c["operating_point"] == op and _shown(c) and c["method"] != "full"
                               for c in cells)]
            name = METRIC_NAMES.get(metric, metric)
            ax.set_xlabel("saved layers (%)")
            ax.set_ylabel(f"{name} (%)" if name == "F1" else f"{name.capitalize()} (%)")
            f = group.fields
            ax.set_title(f"{task} — {f['backbone']}, {f['preset']}, {f['pooling']} pooling (simulated, dev)",
                         fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
            path = out_dir / (f"curve_{task}.png" if len(report.groups) == 1 else f"curve_{task}_table{index}.png")
            fig.tight_layout()
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
    return written


# ---------------------------------------------------------------- Figure 5

def plot_generation(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per task: ROUGE-L and BERT-F against measured speed-up, a line per method (Figure 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_task: dict[str, list[dict[str, Any]]] = {}
    for record in _generation_records(records):
        by_task.setdefault(record["task"], []).append(record)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for task, task_records in sorted(by_task.items()):
        figure, axes = plt.subplots(1, 2, figsize=(10, 4))
        for record in task_records:
            # in order of aggressiveness (fewer layers), so a noisy timing shows as a kink, not a reordered line
            curve = sorted(record.get("curve", []), key=lambda p: -p["mean_layers_per_token"])
            label = f"{record.get('method_display', record['method'])} (seed {record.get('seed', 0)})"
            for axis, metric in zip(axes, ("rouge_l", "bert_f")):
                axis.plot([p["speedup_measured"] for p in curve], [p[metric] for p in curve], marker="o",
                          label=label)
        for axis, title in zip(axes, ("ROUGE-L", "BERT-F")):
            axis.set_xlabel("measured speed-up (× full model, decode tokens/s)")
            axis.set_ylabel(title)
            axis.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        backbone = task_records[0].get("backbone", "")
        figure.suptitle(f"{task}: quality vs speed-up ({backbone})")
        figure.tight_layout()
        path = out_dir / f"generation_{task}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths.append(path)
    return paths
