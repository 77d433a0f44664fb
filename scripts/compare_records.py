"""Compare two folders of run records field by field: every number and string must agree, except what a run cannot
repeat (timings, environment, provenance, paths). Used to show that a refactoring left the numbers unchanged:

    python scripts/compare_records.py /tmp/before /tmp/after
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

# Keys whose values are clocks, machines, dates or file locations: they differ between any two runs (every timing
# figure of a classification operating point or a generation curve point lives under `latency`; `evaluation_reused`
# says whether this run or an earlier one measured it).
SKIP = {"environment", "provenance", "train_seconds", "latency", "model_store", "_path", "tokens_per_s",
        "speedup_measured", "seconds", "wall_s", "realised_fraction", "speedup_wall", "median_ms", "p90_ms",
        "torch_threads", "evaluation_reused"}


def leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key not in SKIP:
                yield from leaves(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from leaves(value, f"{prefix}[{i}]")
    else:
        yield prefix, tree


def current_layout(record: dict[str, Any]) -> dict[str, Any]:
    """Generation records written before the one envelope (issue 13) kept `per_example` as a list of rows and the
    example ids in `eval_split`: moved to today's places, so that their numbers are compared with today's."""
    if isinstance(record.get("per_example"), list):
        rows = record.pop("per_example")
        split = record.pop("eval_split")
        record["per_example"] = {"ids": split["ids"], "calibration_ids": split["calibration_ids"],
                                 "points": {"ltt": {"texts": [r["text"] for r in rows],
                                                    "exit_layers": [r["exit_layers"] for r in rows]}}}
    return record


def main(before: Path, after: Path) -> int:
    bad = 0
    files = sorted(p.relative_to(before) for p in before.glob("*/*.json"))
    missing = sorted(set(files) ^ {p.relative_to(after) for p in after.glob("*/*.json")})
    for path in files:
        if not (after / path).exists():
            continue
        old, new = (dict(leaves(current_layout(json.loads((root / path).read_text()))))
                    for root in (before, after))
        numbers = [k for k, v in old.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        differ = [k for k in numbers if new.get(k) != old[k]]
        gone = [k for k in old if k not in new]
        added = [k for k in new if k not in old]
        print(f"{path}: {len(numbers)} numeric fields, {len(differ)} differ; {len(gone)} fields gone, "
              f"{len(added)} added")
        for key in differ[:10]:
            print(f"    {key}: {old[key]} -> {new.get(key)}")
        for label, keys in (("gone", gone), ("added", added)):
            if keys:
                shown = sorted({k.split("[")[0] for k in keys})
                print(f"    {label}: {', '.join(shown[:12])}{' ...' if len(shown) > 12 else ''}")
        bad += len(differ)
    if missing:
        print("only on one side:", ", ".join(map(str, missing)))
    return 1 if bad or missing else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
