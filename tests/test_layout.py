"""The floor plan holds (issue 18): no import circle, no import that runs back up, the run shell above both wings and
neither wing reaching into the other, measured from the project's own imports by `scripts/import_graph.py`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def house(graph):
    return graph.survey(ROOT)


def test_no_import_circle(house):
    assert house.circles == []


def test_no_import_runs_back_up(house):
    assert house.upward == []


def test_no_wing_imports_the_run_shell(house, graph):
    shell = {"cee_bench.runner", "cee_bench.cli", "cee_bench.__main__"}
    reaching = [(source, target) for source, targets in house.edges.items() if graph.wing(source)
                for target in targets & shell]
    assert reaching == []


def test_a_wing_reaches_the_other_only_through_the_shell(house, graph):
    crossing = [(source, target) for source, targets in house.edges.items() for target in targets
                if graph.wing(source) and graph.wing(target) and graph.wing(source) != graph.wing(target)]
    assert crossing == []


def test_the_shared_shell_imports_no_wing(house, graph):
    above = ("cee_bench.runner", "cee_bench.cli", "cee_bench.__main__", "cee_bench.report", "cee_bench.gate")
    shared = [name for name in house.edges if name.startswith("cee_bench") and not graph.wing(name)
              and not any(name == a or name.startswith(a + ".") for a in above)]
    assert shared, "no shared room found: the survey read nothing"
    assert [(s, t) for s in shared for t in house.edges[s] if graph.wing(t)] == []


def test_both_wings_and_the_shell_are_where_the_plan_says(house):
    rooms = set(house.edges)
    assert {"cee_bench.runner", "cee_bench.options", "cee_bench.registry", "cee_bench.training", "cee_bench.ltt",
            "cee_bench.classification.recipe", "cee_bench.generation.recipe", "cee_bench.report",
            "cee_bench.gate.command"} <= rooms
