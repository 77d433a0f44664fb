"""Generation results for `cee-bench report`: flat table rows and a Figure-5-style plot per task.

Rows: one per (record, operating point) — the named points (e.g. `ltt`, `full`) — plus one per curve point
(operating_point = "curve"), so a table can show either. The plot is the paper's Figure 5: quality (ROUGE-L and
BERT-F, two panels) against the *measured* speed-up, one line per method, each line the method's curve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_ROW_FIELDS = ("threshold", "rouge_l", "bert_f", "mean_layers_per_token", "saved_layers", "speedup_measured",
               "tokens_per_s")


def _generation_records(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("kind") == "generation"]


def _row(record: dict, name: str, point: dict) -> dict[str, Any]:
    row = {"task": record["task"], "method": record.get("method_display", record["method"]),
           "backbone": record.get("backbone"), "operating_point": name}
    row.update({f: point.get(f) for f in _ROW_FIELDS})
    row["alpha"] = point.get("alpha")
    return row


def generation_rows(records: list[dict]) -> list[dict]:
    """Flat rows: task, method, backbone, operating_point, threshold, rouge_l, bert_f, mean_layers_per_token,
    saved_layers, speedup_measured, tokens_per_s (and alpha for ConsistentEE)."""
    rows = []
    for record in _generation_records(records):
        for name, point in record.get("operating_points", {}).items():
            rows.append(_row(record, name, point))
        for point in record.get("curve", []):
            if not point.get("full_model"):
                rows.append(_row(record, "curve", point))
    return rows


def plot_generation(records: list[dict], out_dir: Path) -> list[Path]:
    """One PNG per task: ROUGE-L and BERT-F against measured speed-up, a line per method (Figure 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_task: dict[str, list[dict]] = {}
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
