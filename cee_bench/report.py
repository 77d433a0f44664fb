"""The Table 3 mirror (Rich, CSV, Markdown) and the accuracy-vs-saved-layers curves (Figure 3) from stored records;
generation records add their own table and Figure 5 (rows and plot from `cee_bench.generation.report`)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from rich.table import Table

OP_LABELS = {"no_loss": "★ no loss", "le1_loss": "≤1% loss"}
CSV_COLUMNS = ("kind", "task", "method", "method_display", "backbone", "seed", "split", "metric", "score", "num_layers",
               "mean_exit_layer", "saved_layers", "layer_speedup", "operating_point", "threshold", "met_on_selection",
               "reference_score", "reference_source", "latency_ms_b1", "full_latency_ms_b1", "speedup_wall_b1",
               "speedup_wall_b32", "realised_fraction_b1", "realised_fraction_b32", "real_vs_simulated_agreement",
               "pooling", "preset", "rouge_l", "bert_f", "mean_layers_per_token", "speedup_measured", "tokens_per_s")
GENERATION_COLUMNS = ("task", "method", "operating_point", "threshold", "rouge_l", "bert_f", "mean_layers_per_token",
                      "saved_layers", "speedup_measured", "tokens_per_s")
GENERATION_HEADERS = dict(zip(GENERATION_COLUMNS, ("task", "method", "point", "threshold", "Rouge-L", "BERT-F",
                                                   "layers/token", "saved", "speed-up", "tok/s")))


def tidy_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per (record, operating point) of the classification records."""
    rows = []
    for r in records:
        if r.get("kind") != "classification":
            continue
        for op, p in r["operating_points"].items():
            lat = p.get("latency", {})
            rows.append({
                "kind": "classification", "task": r["task"], "method": r["method"], "method_display": r["method_display"],
                "backbone": r["backbone"], "seed": r["seed"], "split": p["split"], "metric": r["metric"],
                "score": p["score"], "num_layers": r["num_layers"], "mean_exit_layer": p["mean_exit_layer"],
                "saved_layers": p["saved_layers"], "layer_speedup": p["layer_speedup"], "operating_point": op,
                "threshold": p["threshold"], "met_on_selection": p["met_on_selection"],
                "reference_score": r["reference"]["dev"], "reference_source": r["reference"]["source"],
                "latency_ms_b1": lat.get("b1", {}).get("ee_ms_median"),
                "full_latency_ms_b1": lat.get("b1", {}).get("full_ms_median"),
                "speedup_wall_b1": lat.get("b1", {}).get("speedup_wall"),
                "speedup_wall_b32": lat.get("b32", {}).get("speedup_wall"),
                "realised_fraction_b1": lat.get("b1", {}).get("realised_fraction"),
                "realised_fraction_b32": lat.get("b32", {}).get("realised_fraction"),
                "real_vs_simulated_agreement": p.get("real_vs_simulated_agreement"),
                "pooling": r["config"].get("pooling"), "preset": r["config"].get("preset"),
            })
    return rows


def generation_table_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Generation rows at their named operating points (the curve points stay in the CSV)."""
    from cee_bench.generation.report import generation_rows

    return generation_rows(records)


def generation_rich_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Generation — quality vs measured speed-up (named operating points)")
    for column in GENERATION_COLUMNS:
        table.add_column(GENERATION_HEADERS[column],
                         justify="left" if column in ("task", "method", "operating_point") else "right")
    for row in rows:
        if row["operating_point"] != "curve":
            table.add_row(*(_fmt(row.get(c)) for c in GENERATION_COLUMNS))
    return table


def generation_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(GENERATION_COLUMNS) + " |", "|" + "---|" * len(GENERATION_COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in GENERATION_COLUMNS) + " |" for r in rows
              if r["operating_point"] != "curve"]
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "–" if value is None else str(value)


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _cells(rows: list[dict[str, Any]], tasks: list[str], op: str) -> dict[str, dict[str, dict[str, Any]]]:
    """method label → task → row, for one operating point (the full model's single row serves both)."""
    from cee_bench.method import method_names

    order = {name: i for i, name in enumerate(method_names())}  # the full model first, then registry order
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: order.get(r["method"], len(order))):
        if row["operating_point"] != op and row["method"] != "full":
            continue
        if row["method"] == "full" and row["operating_point"] != "no_loss":
            continue
        label = row["method_display"] if row["method"] == "full" else f"{row['method_display']} ({OP_LABELS[op]})"
        table.setdefault(label, {})[row["task"]] = row
    return table


def table3(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and body of the Table 3 mirror: per task a score and a saved-layers cell, then the averaged score."""
    tasks = sorted({r["task"] for r in rows})
    header = ["Method"] + [f"{t} {c}" for t in tasks for c in ("score", "layers")] + ["Avg score", "Avg layers"]
    body, seen = [], set()
    for op in OP_LABELS:
        for label, per_task in _cells(rows, tasks, op).items():
            if label in seen:
                continue
            seen.add(label)
            line = [label]
            for t in tasks:
                row = per_task.get(t)
                line += ([f"{100 * row['score']:.1f}", f"−{100 * row['saved_layers']:.0f}%"] if row else ["–", "–"])
            present = [per_task[t] for t in tasks if t in per_task]
            line.append(f"{100 * sum(r['score'] for r in present) / len(present):.1f}" if present else "–")
            line.append(f"−{100 * sum(r['saved_layers'] for r in present) / len(present):.0f}%" if present else "–")
            body.append(line)
    return header, body


def rich_table(rows: list[dict[str, Any]]) -> Table:
    header, body = table3(rows)
    table = Table(title="Table 3 mirror — dev scores at operating points chosen on held-out train (simulated exits; "
                        "wall-clock in the CSV)")
    for column in header:
        table.add_column(column, justify="left" if column == "Method" else "right")
    for line in body:
        table.add_row(*line)
    return table


def markdown(rows: list[dict[str, Any]]) -> str:
    header, body = table3(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(line) + " |" for line in body]
    return "\n".join(lines) + "\n"


def plot_curves(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Figure 3: per task, every method's simulated dev score against saved layers; one PNG per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    classification = [r for r in records if r.get("kind") == "classification"]
    for task in sorted({r["task"] for r in classification}):
        fig, ax = plt.subplots(figsize=(6, 4))
        task_records = [r for r in classification if r["task"] == task]
        for r in task_records:
            pts = sorted((p["saved_layers"], p["score"]) for p in r["curve"])
            style = "*" if r["method"] == "full" else "o-"
            ax.plot([100 * x for x, _ in pts], [100 * y for _, y in pts], style, label=r["method_display"])
        ax.set_xlabel("saved layers (%)")
        ax.set_ylabel(f"{task_records[0]['metric']} (%)")
        ax.set_title(f"{task}: accuracy-speed curves (simulated, dev)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        path = out_dir / f"curve_{task}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
