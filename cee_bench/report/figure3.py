"""Figure 3: per table and task, two panels side by side — the simulated dev curve of every method (accuracy or F1
against saved layers, the full model as a horizontal line, the chosen operating points marked), and the measured
speed-up of every operating point (score against wall-clock speed-up at batch 1 and 32) — one colour per method in
every figure, written as PNG and SVG.

What the figure must not do is draw points nobody reached. A method whose grid values are separately trained models
(ConsistentEE: one model per α) is drawn seed by seed — a seed's α curve is one line, never averaged with another
seed's model at the same α (the committed SST-2 records: 83%, 0% and 83% saved at one α average to a 56% nobody
reached). A method whose grid values are thresholds on one model per seed is drawn as the mean over seeds per
threshold (each is a policy one can deploy), with bars of ±1 seed sd clipped to what is possible (0–100%) and said so
in the legend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cee_bench.report.cells import Report, converged_at, op_label, shown
from cee_bench.report.grouping import method_order

METRIC_NAMES = {"f1": "F1", "accuracy": "accuracy"}
OP_MARKERS = {"no_loss": "*", "le1_loss": "D", "ltt90_le1": "^"}
FORMATS = ("png", "svg")


def method_colour(method: str) -> Any:
    """One colour per method in every figure, by registry (= table) order; the full model is black."""
    import matplotlib

    if method == "full":
        return "black"
    order = method_order()
    return matplotlib.colormaps["tab10"](order.get(method, len(order)) % 10)


def separately_trained(records: list[dict[str, Any]]) -> bool:
    """Whether the method's grid values are separate models (its record says so; records from before it did: one
    stored model file per grid value)."""
    first = records[0]
    if "curve_models" in first:
        return first["curve_models"] != "one"
    files = (first.get("model_store") or {}).get("files") or {}
    return len(files) > 1


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


def clipped_sd(values: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """±1 sd over seeds (axis 0) as (below, above) error-bar lengths, cut at 0 and 100% (percent units)."""
    if values.shape[0] < 2:
        return None
    sd = values.std(0, ddof=1)
    return np.array([np.minimum(sd, mean), np.minimum(sd, 100 - mean)])


def _curve_panel(ax: Any, recs: list[dict[str, Any]], cells: list[dict[str, Any]], task: str) -> list[Any]:
    from matplotlib.lines import Line2D

    order = method_order()
    extra: list[Any] = []
    unconverged_shown = per_seed_shown = bars_shown = False
    for method in sorted({r["method"] for r in recs}, key=lambda m: (order.get(m, len(order)), m)):
        mine = [r for r in recs if r["method"] == method]
        colour = method_colour(method)
        label = mine[0]["method_display"]
        if method == "full":
            full = next(c["score_mean"] for c in cells if c["task"] == task and c["method"] == "full")
            ax.axhline(100 * full, color=colour, lw=1.2, label=label)
            ax.axhline(99 * full, color=colour, lw=0.8, ls=":", label="99% of full")
            continue
        xs, ys, open_ = _seed_curves(mine)
        xs, ys = 100 * xs, 100 * ys
        if separately_trained(mine):
            for i, (x, y) in enumerate(zip(xs, ys)):
                own = np.argsort(x, kind="stable")  # this seed's models from least to most saving
                x, y = x[own], y[own]
                ax.plot(x, y, "o-", ms=3, lw=0.8, alpha=0.85, color=colour, label=label if i == 0 else None)
            per_seed_shown = True
        else:
            mx, my = xs.mean(0), ys.mean(0)
            xerr, yerr = clipped_sd(xs, mx), clipped_sd(ys, my)
            ax.errorbar(mx, my, xerr=xerr, yerr=yerr, fmt="o-", ms=3, lw=1, color=colour, label=label,
                        capsize=2 if xerr is not None else 0)
            bars_shown |= xerr is not None
        if open_.any():
            ax.plot(xs[:, open_].ravel(), ys[:, open_].ravel(), "x", ms=8, color="black",
                    label="α not converged (some seed)" if not unconverged_shown else None)
            unconverged_shown = True
        for c in cells:
            if c["task"] == task and c["method"] == method and shown(c):
                op = c["operating_point"]
                # one model per grid value: each seed's own chosen point, as its curve; else the table's mean
                at = ([(p["saved_layers"], p["score"]) for p in (r["operating_points"].get(op) for r in mine) if p]
                      if separately_trained(mine) else [(c["saved_layers"], c["score_mean"])])
                for x, y in at:
                    ax.plot(100 * x, 100 * y, OP_MARKERS.get(op, "s"), ms=11, color=colour, mec="black")
    if per_seed_shown:
        extra.append(Line2D([], [], ls="-", marker="o", ms=3, color="grey",
                            label="one line per seed (one model per grid value: never averaged)"))
    if bars_shown:
        extra.append(Line2D([], [], ls="", marker="|", ms=9, color="grey",
                            label="bars: ±1 seed sd, cut at 0 and 100%"))
    for op, marker in OP_MARKERS.items():
        chosen = [c for c in cells if c["task"] == task and c["operating_point"] == op and shown(c)
                  and c["method"] != "full"]
        if chosen:
            extra.append(Line2D([], [], ls="", marker=marker, color="grey", mec="black", ms=9,
                                label=f"{op_label(op, chosen)} (mean over seeds; per seed on per-seed lines)"))
    ax.set_xlabel("saved layers (%)")
    ax.set_xlim(-3, 103)
    return extra


def _speed_panel(ax: Any, cells: list[dict[str, Any]], task: str) -> None:
    """Score against measured wall-clock speed-up of every operating point shown, batch 1 (hollow) and 32 (filled),
    with the speed-up's interval where the records give one; the layer speed-up L/E[l] as the x the timing should
    reach."""
    mine = [c for c in cells if c["task"] == task and shown(c) and c["method"] != "full"]
    for c in mine:
        colour = method_colour(c["method"])
        for batch, face in (("b1", "white"), ("b32", colour)):
            x = c.get(f"speedup_wall_{batch}")
            if x is None:
                continue
            low, high = c.get(f"speedup_{batch}_ci_low"), c.get(f"speedup_{batch}_ci_high")
            xerr = np.array([[max(x - low, 0)], [max(high - x, 0)]]) if low is not None and high is not None else None
            ax.errorbar(x, 100 * c["score_mean"], xerr=xerr, fmt=OP_MARKERS.get(c["operating_point"], "s"), ms=8,
                        color=colour, mfc=face, mec=colour, capsize=2, lw=0.8)
        if c.get("layer_speedup"):
            ax.plot(c["layer_speedup"], 100 * c["score_mean"], "|", ms=10, color=colour)
    ax.axvline(1.0, color="black", lw=0.8, ls=":")
    ax.set_xlabel("measured speed-up (× full model's wall-clock)\nhollow b1, filled b32, | = layer speed-up")
    ax.set_title("measured (dev, timed examples)", fontsize=9)
    ax.grid(alpha=0.3)


def plot_curves(report: Report, out_dir: Path) -> list[Path]:
    """Figure 3 per table and task: the simulated curve beside the measured speed-ups, as PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (group, cells) in enumerate(zip(report.groups, report.cells), 1):
        for task in group.tasks:
            fig, (ax, speed) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1.25, 1]},
                                            sharey=True)
            recs = [r for r in group.records if r["task"] == task]
            metric = recs[0]["metric"]
            extra = _curve_panel(ax, recs, cells, task)
            _speed_panel(speed, cells, task)
            name = METRIC_NAMES.get(metric, metric)
            ax.set_ylabel(f"{name} (%)" if name == "F1" else f"{name.capitalize()} (%)")
            f = group.fields
            degenerate = next((c["degenerate_reason"] for c in cells if c["task"] == task and c.get("degenerate")), "")
            ax.set_title(f"{task} — {f['backbone']}, {f['preset']}, {f['pooling']} pooling (simulated, dev)"
                         + ("\n⚠ degenerate: the full model is a constant predictor" if degenerate else ""),
                         fontsize=9)
            ax.grid(alpha=0.3)
            handles, _ = ax.get_legend_handles_labels()
            speed.legend(handles=handles + extra, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
            fig.tight_layout()
            stem = f"curve_{task}" if len(report.groups) == 1 else f"curve_{task}_table{index}"
            for fmt in FORMATS:
                path = out_dir / f"{stem}.{fmt}"
                fig.savefig(path, dpi=120)
                written.append(path)
            plt.close(fig)
    return written
