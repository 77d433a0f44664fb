"""Figure 5: per generation task, ROUGE-L and BERT-F against the measured speed-up, one line per method and seed."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_generation(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per task: ROUGE-L and BERT-F against measured speed-up, a line per method (Figure 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_task: dict[str, list[dict[str, Any]]] = {}
    for record in (r for r in records if r.get("kind") == "generation"):
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
