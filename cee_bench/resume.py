"""Resume by content: a stored record stands in for this run only when it was produced by the same request.

The file name says (task, method, seed) and nothing more; two runs with a different preset, pooling, model, data
source or grid land on the same name. So before anything is trained, the fields that define a record's numbers are
compared with what this run would store, and a mismatch stops the run with the fields that differ, rather than
presenting another configuration's numbers as this run's. Values are compared as JSON, the form they are stored in.
A record that cannot be read (cut short by a crash or a copy) is computed again, after one line naming it; one from a
newer cee-bench stops the run, since this version could only misread it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

from cee_bench.errors import UserError
from cee_bench.results import NewerRecord, UnreadableRecord, clear_debris, jsonable, read_record, set_aside

_SHOWN = 4  # differing fields named in the message; the rest are counted


def reusable(path: Path, wanted: Mapping[str, Any], *, force: bool) -> bool:
    """True when `path` holds a record matching `wanted` (so it is reused); False when there is none, when it cannot
    be read (`replace_damaged` names it before it is recomputed) or when `force` asks to recompute it. `wanted` maps
    dotted record paths (`config`, `data.source`, ...) to this run's values; any difference is a `UserError` naming
    the fields, and so is a record of a newer cee-bench (this version could only misread it)."""
    if force or not path.exists():
        return False
    try:
        record = read_record(path)
    except UnreadableRecord:
        return False
    except NewerRecord as exc:
        raise UserError(f"{exc}: upgrade cee-bench to reuse it, pass --force to recompute it with this version, or "
                        "choose another --output-dir") from None
    differing = differences(_flatten(_as_json(dict(wanted))), _flatten({k: _lookup(record, k) for k in wanted}))
    if differing:
        shown = ", ".join(f"{key} (stored {stored}, requested {asked})" for key, asked, stored in differing[:_SHOWN])
        more = f" and {len(differing) - _SHOWN} more" if len(differing) > _SHOWN else ""
        raise UserError(f"{path} was produced by another configuration: {shown}{more}; pass --force to recompute "
                        "it or choose another --output-dir")
    return True


def replace_damaged(path: Path, warn: Callable[[str], None]) -> None:
    """Before the record at `path` is computed (its lock held): what interrupted writes left beside it goes, and a
    file there that is not a readable record of this version is set aside (`results.set_aside`) with one line, never
    overwritten in silence."""
    clear_debris(path)
    if not path.exists():
        return
    try:
        read_record(path)
    except (UnreadableRecord, NewerRecord) as exc:
        warn(f"{exc}: set aside as {set_aside(path).name}, computing the record again")


def differences(wanted: dict[str, Any], stored: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, requested, stored) for every flattened key whose values differ (missing on either side = differs)."""
    return [(key, wanted.get(key, "—"), stored.get(key, "—")) for key in sorted(set(wanted) | set(stored))
            if wanted.get(key, _MISSING) != stored.get(key, _MISSING)]


_MISSING = object()


def _as_json(value: Any) -> Any:
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
