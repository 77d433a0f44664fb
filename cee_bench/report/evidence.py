"""A task's per-example logs as bootstrap samples per seed: what the cells and the verdict are computed from, both
kinds.

Every number the report qualifies with an interval — a score, saved layers, a Δ, a speed-up, a whole curve's saving
at a matched score — starts here as `Samples`: one value per seed and example resample (shape (seeds, ..., resamples)),
from the records' per-example logs where they exist (`two_level` then resamples seeds *and* examples), from the
records' aggregate numbers where they do not (the values are constant along the example resamples, so only the seed
level varies, and the levels say so). `TaskEvidence.summary` turns samples into an interval; `Samples.minus` pairs
two sets seed by seed, on the same example resamples, which is what makes a Δ or a method-vs-method difference paired.

What a log holds, per kind (`cee_bench.results.pack_digits` packs the long integer arrays):
- classification: `per_example.points[op]` (predictions, exit layers), `per_example.curve` (per dev curve point),
  `per_example.layers` (every layer's own prediction: the static-depth control);
- generation: `per_example.points.ltt` (per-token exit layers, ROUGE-L, BERT-F) and `per_example.curve` (per curve
  point: ROUGE-L, BERT-F, decode-token layers and tokens per prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cee_bench.intervals import PairedBootstrap, SeedDraws, WholeSet, interval, metric_samples, two_level
from cee_bench.results import unpack_digits

BOTH = "seeds and examples"
EXAMPLES = "examples only (one seed)"
SEEDS = "seeds only (no per-example log)"
UNIT = (0.0, 1.0)  # the range of a score or a saving
RATIO = (0.0, np.inf)  # the range of a speed-up


@dataclass
class Samples:
    """A statistic per seed on every example resample: `values` of shape (seeds, ..., resamples) and `point`, each
    seed's value on the whole set (seeds, ...); `examples` says whether it varies with the example resamples
    (per-example logs) or only across seeds (aggregates)."""

    seeds: list[Any]
    values: np.ndarray
    point: np.ndarray
    examples: bool

    @property
    def levels(self) -> str | None:
        """What the interval covers: seeds and examples, examples only (one seed), seeds only, or nothing."""
        if self.examples:
            return BOTH if len(self.seeds) > 1 else EXAMPLES
        return SEEDS if len(self.seeds) > 1 else None

    def estimate(self) -> Any:
        """The point estimate: the mean over seeds of each seed's value on the whole set."""
        return self.point.mean(0)

    def minus(self, other: Samples) -> Samples:
        """self − other, paired: for each of self's seeds, other's value at the same seed (else other's mean over its
        seeds), on the same example resample. When only one side varies with the examples, the difference is taken at
        the seed level alone: an interval over the examples of one side only would describe neither."""
        point = self.point - other.aligned(self.seeds, "point")
        if self.examples != other.examples:
            return Samples(self.seeds, np.repeat(point[..., None], self.values.shape[-1], axis=-1), point, False)
        return Samples(self.seeds, self.values - other.aligned(self.seeds, "values"), point, self.examples)

    def aligned(self, seeds: list[Any], what: str) -> np.ndarray:
        """`values` or `point` for the given seeds: this seed's where it has it, else its mean over seeds."""
        array = getattr(self, what)
        index = {seed: i for i, seed in enumerate(self.seeds)}
        mean = array.mean(0)
        return np.stack([array[index[s]] if s in index else mean for s in seeds])

    def at(self, index: int) -> Samples:
        """One point of a curve's samples (the axis between seeds and resamples)."""
        return Samples(self.seeds, self.values[:, index], self.point[:, index], self.examples)


def seed_level(seeds: list[Any], values: Any, resamples: int) -> Samples:
    """Aggregate numbers per seed (shape (seeds, ...)), constant along the example resamples."""
    values = np.asarray(values, dtype=float)
    return Samples(list(seeds), np.repeat(values[..., None], resamples, axis=-1), values, False)


def per_example(seeds: list[Any], values: np.ndarray, whole: np.ndarray) -> Samples:
    """Samples from per-example logs: `values` (seeds, ..., resamples) and the same statistic on the whole set
    (seeds, ..., 1)."""
    return Samples(list(seeds), values, whole[..., 0], True)


def matched_saving(saved: np.ndarray, score: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The largest saving a curve reaches at score ≥ `target`, reading it piecewise-linearly between neighbouring
    points (a mix of two thresholds, drawn per example, realises any point on the segment between them), and 0 where
    no point reaches it (the full model is what one would run). `saved`, `score`: (..., points, resamples); `target`:
    (..., resamples) → (..., resamples)."""
    order = np.argsort(saved, axis=-2, kind="stable")
    x, y = np.take_along_axis(saved, order, -2), np.take_along_axis(score, order, -2)
    t = target[..., None, :]
    best = np.where(y >= t - 1e-12, x, 0.0).max(-2)
    x0, x1, y0, y1 = x[..., :-1, :], x[..., 1:, :], y[..., :-1, :], y[..., 1:, :]
    falls = (y0 >= t - 1e-12) & (y1 < t)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = x0 + (y0 - t) / np.where(falls, y0 - y1, 1.0) * (x1 - x0)
    return np.maximum(best, np.where(falls, crossing, 0.0).max(-2, initial=0.0))


class TaskEvidence:
    """One task's records (either kind) and their fixed resamples: the example resamples of `PairedBootstrap` (seeded
    by the task and its number of examples) and, per seed list, the seed draws of `SeedDraws`."""

    def __init__(self, task: str, records: list[dict[str, Any]], resamples: int) -> None:
        self.task, self.resamples = task, resamples
        self.kind = records[0].get("kind", "classification")
        self.metric = records[0].get("metric")
        self.ids, self.labels = None, None
        for r in records:
            log = r.get("per_example") or {}
            if log.get("ids") and (self.kind == "generation" or log.get("labels") is not None):
                self.ids = list(log["ids"])
                self.labels = np.asarray(log["labels"]) if log.get("labels") is not None else None
                break
        self.boot = PairedBootstrap(task, len(self.ids), resamples) if self.ids else None
        self._draws: dict[tuple, SeedDraws] = {}

    # ------------------------------------------------------------ intervals

    def draws(self, seeds: list[Any]) -> SeedDraws:
        key = tuple(seeds)
        if key not in self._draws:
            self._draws[key] = SeedDraws(self.task, seeds, self.resamples)
        return self._draws[key]

    def bootstrap(self, samples: Samples) -> np.ndarray:
        """The two-level samples of the mean over seeds (shape (..., resamples))."""
        return two_level(samples.values, self.draws(samples.seeds))

    def summary(self, samples: Samples | None, bounds: tuple[float, float] = (-1.0, 1.0)
                ) -> tuple[float | None, float | None, str | None]:
        """(low, high, levels) of the 95% two-level interval, within `bounds` (the statistic's possible range: the
        seed-level widening can carry a resample past it); Nones where the samples vary at no level."""
        if samples is None or samples.levels is None:
            return None, None, None
        low, high = interval(np.clip(self.bootstrap(samples), *bounds))
        return low, high, samples.levels

    # ------------------------------------------------------------ per-example logs

    def log(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The record's per-example log when it covers this task's examples (else None: older records, or other
        examples)."""
        log = record.get("per_example") or {}
        return log if self.ids is not None and log.get("ids") == self.ids else None

    def entry_samples(self, entry: dict[str, Any], num_layers: int,
                      boot: PairedBootstrap | WholeSet | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """(score, saved layers) on every example resample (or, given `WholeSet`, on the whole set) from one point's
        per-example entry, either kind."""
        boot = boot or self.boot
        if boot is None:
            return None
        if self.kind == "generation":
            if entry.get("rouge_l") is None:
                return None
            layers, tokens = _generation_layers(entry)
            score = boot.sums(np.asarray(entry["rouge_l"], dtype=float)) / boot.n
            total, count = boot.sums(layers), boot.sums(tokens)
            saved = np.where(count > 0, 1.0 - total / np.maximum(count, 1.0) / num_layers, 0.0)
            return score, saved
        if "predictions" not in entry:
            return None
        preds = np.asarray(unpack_digits(entry["predictions"]))
        score = metric_samples(boot, self.metric, preds, self.labels)
        if score is None:
            return None
        exits = np.asarray(unpack_digits(entry["exit_layers"]), dtype=float)
        return score, 1.0 - boot.sums(exits) / (boot.n * num_layers)

    def _entries(self, seeds: list[Any], entries: list[Any], layers: list[int]) -> tuple[Samples, Samples] | None:
        """(score, saved) samples of per-seed entries (each an entry, or a list of entries: a curve's points)."""
        if self.boot is None or any(e is None for e in entries) or any(not L for L in layers):
            return None
        whole = WholeSet(self.boot.n)
        out = []
        for boot in (self.boot, whole):
            pairs = [[self.entry_samples(x, int(L), boot) for x in (e if isinstance(e, list) else [e])]
                     for e, L in zip(entries, layers)]
            if any(p is None for seed in pairs for p in seed):
                return None
            out.append([np.stack([np.stack([p[i] for p in seed]) for seed in pairs]) for i in (0, 1)])
        squeeze = not isinstance(entries[0], list)
        (score, saved), (score_whole, saved_whole) = [[a[:, 0] if squeeze else a for a in pair] for pair in out]
        return per_example(seeds, score, score_whole), per_example(seeds, saved, saved_whole)

    def field_samples(self, entries: list[dict[str, Any] | None], seeds: list[Any], name: str) -> Samples | None:
        """The mean of a per-example float field (generation's `bert_f`) over its seeds' entries."""
        if self.boot is None or any(e is None or e.get(name) is None for e in entries):
            return None
        values = np.array([e[name] for e in entries], dtype=float)
        return per_example(seeds, self.boot.sums(values) / self.boot.n,
                           WholeSet(self.boot.n).sums(values) / self.boot.n)

    # ------------------------------------------------------------ what cells and the verdict ask for

    def point(self, points: list[tuple[dict, dict]], op: str) -> tuple[Samples | None, Samples | None]:
        """(score, saved layers) samples of one operating point over its seeds: from every seed's per-example log, or
        — when one of them has none — from the points' own numbers (seed level only)."""
        seeds = [r.get("seed") for r, _ in points]
        found = self._entries(seeds, [op_entry(self.log(r), op, p) for r, p in points],
                              [r.get("num_layers") for r, _ in points])
        if found is not None:
            return found
        score = [_score(p, self.kind) for _, p in points]
        saved = [p.get("saved_layers") for _, p in points]
        if any(v is None for v in score + saved):
            return None, None
        return seed_level(seeds, score, self.resamples), seed_level(seeds, saved, self.resamples)

    def curve(self, records: list[dict[str, Any]]) -> tuple[Samples, Samples] | None:
        """(score, saved layers) samples of every dev curve point (shape (seeds, points, resamples)), the seeds'
        curves aligned point by point (a cell's seeds share a grid); the full model's own point (generation) left
        out."""
        seeds = [r.get("seed") for r in records]
        curves = [[(i, p) for i, p in enumerate(r.get("curve") or []) if not p.get("full_model")] for r in records]
        length = min((len(c) for c in curves), default=0)
        if not length:
            return None
        logged = [_curve_entries(self.log(r), self.kind) for r in records]
        entries = [None if e is None else [e[i] for i, _ in c[:length] if i < len(e)] for e, c in zip(logged, curves)]
        if all(e is not None and len(e) == length for e in entries):
            found = self._entries(seeds, entries, [r.get("num_layers") for r in records])
            if found is not None:
                return found
        score = [[_score(p, self.kind) for _, p in c[:length]] for c in curves]
        saved = [[p["saved_layers"] for _, p in c[:length]] for c in curves]
        if any(v is None for row in score for v in row):
            return None
        return seed_level(seeds, score, self.resamples), seed_level(seeds, saved, self.resamples)

    def static(self, records: list[dict[str, Any]]) -> tuple[Samples, Samples] | None:
        """The static-depth control: (score, saved layers) of sending every example out at layer k = 1..L with the
        method's own heads (shape (seeds, points, resamples)); where each grid value trains its own model
        (ConsistentEE's α), every model's layers, so that the control is the best fixed depth of any of them. From
        every seed's per-layer predictions, else from its `per_layer_scores` (seed level only, the last grid value's
        model); None for generation or a record without either."""
        if self.kind != "classification":
            return None
        seeds = [r.get("seed") for r in records]
        layers = int(records[0]["num_layers"])
        depth = [1.0 - (k + 1) / layers for k in range(layers)]
        models = [self.layer_predictions(r, every=True) for r in records]
        if self.boot is not None and all(m is not None for m in models) and len({m.shape for m in models}) == 1:
            preds = np.stack(models)  # (seeds, models × layers, examples)
            scores = metric_samples(self.boot, self.metric, preds, self.labels)
            if scores is not None:
                whole = metric_samples(WholeSet(self.boot.n), self.metric, preds, self.labels)
                saved = np.tile(depth * (preds.shape[1] // layers), (len(seeds), 1))
                return per_example(seeds, scores, whole), seed_level(seeds, saved, self.resamples)
        per_layer = [((r.get("per_layer_scores") or {}).get("dev")) for r in records]
        if any(p is None or len(p) != layers for p in per_layer):
            return None
        return (seed_level(seeds, per_layer, self.resamples),
                seed_level(seeds, np.tile(depth, (len(seeds), 1)), self.resamples))

    def layer_predictions(self, record: dict[str, Any], every: bool = False) -> np.ndarray | None:
        """Every layer's own dev prediction of every example (layers, examples), where the record logs them: of its one
        model, or of its last grid value's model — or, with `every`, of every grid value's model, one after the other
        (models × layers, examples)."""
        log = (self.log(record) or {}).get("layers")
        if not log:
            return None
        models = list(log["models"].values()) if "models" in log else [log["predictions"]]
        chosen = models if every else models[-1:]
        return np.array([unpack_digits(p) for model in chosen for p in model])

    def top(self, points: list[tuple[dict, dict]], op: str) -> Samples | None:
        """The top layer's score of the model each seed's operating point runs (its own budget, apart from its exits),
        where every seed logs it."""
        seeds = [r.get("seed") for r, _ in points]
        entries = [op_entry(self.log(r), op, p) for r, p in points]
        if self.boot is None or any(e is None or "top_layer" not in e for e in entries):
            return None
        preds = np.array([unpack_digits(e["top_layer"]) for e in entries])
        return per_example(seeds, metric_samples(self.boot, self.metric, preds, self.labels),
                           metric_samples(WholeSet(self.boot.n), self.metric, preds, self.labels))

    def predictions(self, points: list[tuple[dict, dict]], op: str) -> np.ndarray | None:
        """The seeds' predictions at one classification operating point (seeds, examples), where every seed logs
        them."""
        entries = [op_entry(self.log(r), op, p) for r, p in points]
        if self.kind != "classification" or any(e is None or "predictions" not in e for e in entries):
            return None
        return np.stack([unpack_digits(e["predictions"]) for e in entries])

    def constant(self) -> tuple[int, float, np.ndarray] | None:
        """The best constant predictor from the logged labels (majority class for accuracy, all-positive for F1: the
        class whose constant prediction scores highest): its class, score and samples on every resample."""
        if self.kind != "classification" or self.boot is None or self.labels is None:
            return None
        best = None
        for c in np.unique(self.labels):
            preds = np.full(len(self.labels), c)
            samples = metric_samples(self.boot, self.metric, preds, self.labels)
            if samples is None:
                return None
            score = float(metric_samples(WholeSet(self.boot.n), self.metric, preds, self.labels)[0])
            if best is None or score > best[1]:
                best = (int(c), score, samples)
        return best

    def speedup(self, points: list[tuple[dict, dict]], batch: str) -> Samples | None:
        """The measured speed-up of one operating point over its seeds: the ratio of resampled sums of the full model's
        and early exit's per-example (batch 1) or per-batch (batch 32) times where every seed stores them (`raw`, in
        one fixed order), else each seed's own ratio (seed level only)."""
        seeds = [r.get("seed") for r, _ in points]
        latency = [(p.get("latency") or {}).get(batch) or {} for _, p in points]
        raws = [((lat.get("full_ms") or {}).get("raw"), (lat.get("ee_ms") or {}).get("raw"))
                if isinstance(lat.get("full_ms"), dict) else (None, None) for lat in latency]
        lengths = {len(f) for f, e in raws if f is not None and e is not None and len(f) == len(e)}
        if len(lengths) == 1 and all(f is not None and e is not None for f, e in raws) and min(lengths) > 0:
            n = lengths.pop()
            full, early = (np.array([pair[i] for pair in raws], dtype=float) for i in (0, 1))
            boot = PairedBootstrap(f"{self.task}:latency-{batch}", n, self.resamples)
            whole = WholeSet(n)
            return per_example(seeds, boot.sums(full) / boot.sums(early), whole.sums(full) / whole.sums(early))
        ratios = [lat.get("speedup_wall") for lat in latency]
        if any(v is None for v in ratios):
            return None
        return seed_level(seeds, ratios, self.resamples)


def _score(point: dict[str, Any], kind: str) -> float | None:
    return point.get("rouge_l") if kind == "generation" else point.get("score")


def op_entry(log: dict[str, Any] | None, op: str, point: dict[str, Any]) -> dict[str, Any] | None:
    """An operating point's per-example entry (generation: the curve point it is, when the point log lacks scores)."""
    if log is None:
        return None
    entry = (log.get("points") or {}).get(op)
    if entry is not None and ("predictions" in entry or entry.get("rouge_l") is not None):
        return entry
    curve = log.get("curve")
    index = point.get("curve_index")
    if isinstance(curve, list) and index is not None and 0 <= index < len(curve):
        return curve[index]
    return None


def curve_entry(log: dict[str, Any] | None, record: dict[str, Any], point: dict[str, Any]) -> dict[str, Any] | None:
    """A generation curve point's per-example entry (the log's `curve` is aligned with the record's `curve`)."""
    curve = (log or {}).get("curve")
    index = next((i for i, p in enumerate(record.get("curve") or []) if p is point), None)
    if not isinstance(curve, list) or index is None or index >= len(curve):
        return None
    return curve[index]


def _curve_entries(log: dict[str, Any] | None, kind: str) -> list[dict[str, Any]] | None:
    """Per curve point, its per-example entry: classification logs them column-wise (packed predictions and exit
    layers per point), generation as a list of entries aligned with the record's `curve`."""
    curve = (log or {}).get("curve")
    if not curve:
        return None
    if kind == "generation":
        return curve if isinstance(curve, list) else None
    return [{"predictions": p, "exit_layers": e} for p, e in zip(curve["predictions"], curve["exit_layers"])]


def _generation_layers(entry: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt, the layers its decode tokens ran and how many decode tokens it had (the first token of each output
    comes from the prompt pass, every layer, and is left out as the curve point leaves it out)."""
    if entry.get("layers") is not None:
        return np.asarray(entry["layers"], dtype=float), np.asarray(entry["tokens"], dtype=float)
    per_token = entry.get("exit_layers") or []
    return (np.array([sum(e[1:]) for e in per_token], dtype=float),
            np.array([max(len(e) - 1, 0) for e in per_token], dtype=float))
