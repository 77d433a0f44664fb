"""The house drawn from the project's own imports: rooms, floors, imports, imports that run back up, circles.

    python scripts/import_graph.py                 # the figures, then every upward import and circle by name
    python scripts/import_graph.py --floors        # also every room's floor
    python scripts/import_graph.py --edges         # also every import, one per line
    python scripts/import_graph.py --root ../main  # another checkout (e.g. before a move)

Rooms are the modules of `cee_bench/` and `baselines/` (package `__init__` files included when they import
anything, `__main__` too). An import is an edge between two rooms, counted once however often it is written, whether
it sits at module level, inside a function (a lazy import) or under `if TYPE_CHECKING:` — each is a dependency of the
design, whenever it runs. `from cee_bench import bench` is an import of `cee_bench.bench`; registries that name
modules as strings (`cee_bench.registry`) are not imports.

- circles: strongly connected components of more than one room;
- floors: the layers of the graph with every circle folded into one room: floor 0 imports no room, floor k imports
  only rooms below k and one on floor k − 1;
- imports that run back up: an edge that does not go down a floor (only possible inside a circle), or that breaks the
  plan of the house (`LAYOUT_RULES`): a room below the shell's top importing the run shell (`runner`, `cli`), a room
  of the shared shell importing a wing, or a wing importing the other wing.

Standard library only (`ast`), so it runs before anything is installed.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cee_bench", "baselines")
# The run shell, its command line and the sweep that fans a run out as jobs.
SHELL_TOP = ("cee_bench.cli", "cee_bench.__main__", "cee_bench.runner", "cee_bench.sweep")
WINGS = {"classification": ("cee_bench.classification",), "generation": ("cee_bench.generation",)}
# Baseline modules belong to the wing of the kind they implement (CALM is a generation method).
BASELINE_WING = {"baselines.calm": "generation"}
# Rooms above the wings: they read both kinds (the report) or measure both (the latency gate).
ABOVE_WINGS = ("cee_bench.report", "cee_bench.gate")


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def rooms(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(path, root)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The rooms `name` imports, wherever in the file the import statement sits."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(_nearest(alias.name, known))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in known else _nearest(base, known))
    targets.discard(name)
    return {t for t in targets if t in known}


def _nearest(dotted: str, known: set[str]) -> str:
    """The longest known room that `dotted` names or lies in (`cee_bench.generation.model.X` → that module)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return dotted


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    found = rooms(root)
    known = set(found)
    edges = {name: imports_of(name, path, known) for name, path in found.items()}
    # An `__init__` that imports no room is a folder's label, not a room.
    return {n: e for n, e in edges.items() if e or found[n].name != "__init__.py"}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan), every one; those of more than one room are the circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def floors(edges: dict[str, set[str]]) -> dict[str, int]:
    """Each room's floor: 0 when it imports no room, else 1 + the highest floor it imports (a circle is one room)."""
    component_of = {member: i for i, comp in enumerate(circles(edges)) for member in comp}
    members: dict[int, list[str]] = defaultdict(list)
    for member, comp in component_of.items():
        members[comp].append(member)
    below: dict[int, set[int]] = defaultdict(set)
    for source, targets in edges.items():
        for target in targets:
            if component_of[source] != component_of[target]:
                below[component_of[source]].add(component_of[target])
    level: dict[int, int] = {}

    def height(comp: int) -> int:
        if comp not in level:
            level[comp] = 1 + max((height(c) for c in below[comp]), default=-1)
        return level[comp]

    return {member: height(comp) for member, comp in component_of.items()}


def wing(name: str) -> str | None:
    if name in BASELINE_WING:
        return BASELINE_WING[name]
    if name.startswith("baselines"):
        return "classification"
    for kind, prefixes in WINGS.items():
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return kind
    return None


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layout_breaks(source: str, target: str) -> str | None:
    """Why `source` → `target` breaks the plan of the house (`LAYOUT_RULES`), or None."""
    if _under(target, SHELL_TOP) and not _under(source, SHELL_TOP):
        return "imports the run shell"
    source_wing, target_wing = wing(source), wing(target)
    if source_wing and target_wing and source_wing != target_wing:
        return f"the {source_wing} wing imports the {target_wing} wing"
    if target_wing and source_wing is None and not _under(source, (*SHELL_TOP, *ABOVE_WINGS)):
        return f"a shared room imports the {target_wing} wing"
    if _under(target, ABOVE_WINGS) and not _under(source, (*SHELL_TOP, *ABOVE_WINGS)):
        return "imports a room above the wings"
    return None


LAYOUT_RULES = ("no room below the run shell imports `runner` or `cli`; the shared shell imports no wing; a wing "
                "imports the other wing only through the shell's shared rooms; nothing but the run shell imports the "
                "report or the gate")


@dataclass
class House:
    edges: dict[str, set[str]]
    floor: dict[str, int]
    circles: list[list[str]]
    upward: list[tuple[str, str, str]]  # (source, target, why)

    @property
    def imports(self) -> int:
        return sum(len(t) for t in self.edges.values())


def survey(root: Path = ROOT) -> House:
    edges = graph(root)
    floor = floors(edges)
    upward = []
    for source in sorted(edges):
        for target in sorted(edges[source]):
            why = layout_breaks(source, target)
            if floor[target] >= floor[source]:
                why = "inside a circle" + (f"; {why}" if why else "")
            if why:
                upward.append((source, target, why))
    return House(edges, floor, [c for c in circles(edges) if len(c) > 1], upward)


def main(argv: list[str]) -> int:
    root = Path(argv[argv.index("--root") + 1]).resolve() if "--root" in argv else ROOT
    house = survey(root)
    print(f"rooms {len(house.edges)}, floors {max(house.floor.values()) + 1}, imports {house.imports}, "
          f"imports that run back up {len(house.upward)}, circles {len(house.circles)}")
    for source, target, why in house.upward:
        print(f"  up: {source} -> {target} ({why})")
    for circle in house.circles:
        print(f"  circle: {' <-> '.join(circle)}")
    if "--floors" in argv or "--edges" in argv:
        for name in sorted(house.edges, key=lambda n: (-house.floor[n], n)):
            print(f"  floor {house.floor[name]:2d}  {name}")
    if "--edges" in argv:
        for source in sorted(house.edges):
            for target in sorted(house.edges[source]):
                print(f"  {source} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
