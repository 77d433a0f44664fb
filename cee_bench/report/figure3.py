"""Figure 3: per table and task, every method's simulated dev curve (accuracy or F1 against saved layers), the full
model as a horizontal line, the chosen operating points marked; one colour per method in every figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cee_bench.report.cells import Report, converged_at, shown
from cee_bench.report.grouping import OP_LABELS, method_order, op_order

METRIC_NAMES = {"f1": "F1", "accuracy": "accuracy"}
OP_MARKERS = {"no_loss": "*", "le1_loss": "D", "ltt90_le1": "^"}


def method_colour(method: str) -> Any:
    """One colour per method in every figure, by registry (= table) order; the full model is black."""
    import matplotlib

    if method == "full":
        return "black"
    order = method_order()
    return matplotlib.colormaps["tab10"](order.get(method, len(order)) % 10)


def _seed_curves(records: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(saved layers, score) per seed and curve point, shape (seeds, points), from least to most saving whatever the
    grid's order (the seeds of a cell share a grid); and per point whether some seed's model there did not converge
    (ConsistentEE trains one model per α)."""
    length = min(len(r["curve"]) for r in records)
    xs = np.array([[p["saved_layers"] for p in r["curve"][:length]] for r in records])
    ys = np.array([[p["score"] for p in r["curve"][:length]] for r in records])
    open_ = np.array([[converged_at(r, p.get("threshold")) is False for p in r["curve"][:length]] for r in records])
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
    order = method_order()
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
                for c in sorted(cells, key=lambda c: op_order(c["operating_point"]), reverse=True):  # ★ on top
                    if c["task"] == task and c["method"] == method and shown(c):
                        ax.errorbar(100 * c["saved_layers"], 100 * c["score_mean"],
                                    xerr=100 * (c["saved_layers_sd"] or 0), yerr=100 * (c["score_sd"] or 0),
                                    fmt=OP_MARKERS.get(c["operating_point"], "s"), ms=11, color=colour, mec="black",
                                    capsize=3)
            handles, _ = ax.get_legend_handles_labels()
            handles += [Line2D([], [], ls="", marker=m, color="grey", mec="black", ms=9,
                               label=f"{OP_LABELS[op]} (chosen on held-out)") for op, m in OP_MARKERS.items()
                        if any(c["task"] == task and c["operating_point"] == op and shown(c) and c["method"] != "full"
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
