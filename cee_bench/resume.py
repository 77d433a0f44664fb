"""Resume by content: a stored record stands in for this run only when it was produced by the same request.

The file name says (task, method, seed) and nothing more; two runs with a different preset, pooling, model, data
source or grid land on the same name. So before anything is trained, the fields that define a record's numbers are
compared with what this run would store, and a mismatch stops the run with the fields that differ, rather than
presenting another configuration's numbers as this run's. Values are compared as JSON, the form they are stored in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from cee_bench.errors import UserError

_SHOWN = 4  # differing fields named in the message; the rest are counted


def reusable(path: Path, wanted: Mapping[str, Any], *, force: bool) -> bool:
    """True when `path` holds a record matching `wanted` (so it is reused); False when there is none or `force` asks
    to recompute it. `wanted` maps dotted record paths (`config`, `data.source`, ...) to this run's values; any
    difference is a `UserError` naming the fields."""
    if force or not path.exists():
        return False
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read results file {path} ({type(exc).__name__}); remove it or pass --force") from None
    if not isinstance(record, dict):
        raise UserError(f"not a cee-bench results file: {path}; remove it or pass --force")
    differing = differences(_flatten(_as_json(dict(wanted))), _flatten({k: _lookup(record, k) for k in wanted}))
    if differing:
        shown = ", ".join(f"{key} (stored {stored}, requested {asked})" for key, asked, stored in differing[:_SHOWN])
        more = f" and {len(differing) - _SHOWN} more" if len(differing) > _SHOWN else ""
        raise UserError(f"{path} was produced by another configuration: {shown}{more}; pass --force to recompute "
                        "it or choose another --output-dir")
    return True


def differences(wanted: dict[str, Any], stored: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, requested, stored) for every flattened key whose values differ (missing on either side = differs)."""
    return [(key, wanted.get(key, "—"), stored.get(key, "—")) for key in sorted(set(wanted) | set(stored))
            if wanted.get(key, _MISSING) != stored.get(key, _MISSING)]


_MISSING = object()


def _as_json(value: Any) -> Any:
    from cee_bench.results import jsonable

    return json.loads(json.dumps(value, default=jsonable))


def _lookup(record: dict[str, Any], dotted: str) -> Any:
    node: Any = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if value is _MISSING:
            continue
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
