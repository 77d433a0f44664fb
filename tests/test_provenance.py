"""The code fingerprint follows what the code does: a reworded docstring, a comment or a re-wrapped line leave it (and
every record and stored model keyed by it) as it was; a changed statement moves it."""

from __future__ import annotations

from pathlib import Path

from cee_bench.provenance import code_identity, code_text

BEFORE = '"""A module."""\n\n\ndef f(x):\n    """Add one."""\n    # why: the reference does\n    return x + 1\n'
REWORDED = ('"""A module, described otherwise."""\n\n\ndef f(x):\n    """Adds one, as the reference does."""\n'
            '    return (x\n            + 1)  # wrapped\n')
CHANGED = '"""A module."""\n\n\ndef f(x):\n    """Add one."""\n    return x + 2\n'


def test_docstrings_comments_and_wrapping_do_not_move_the_fingerprint(tmp_path: Path) -> None:
    texts = {}
    for name, source in (("before", BEFORE), ("reworded", REWORDED), ("changed", CHANGED)):
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        texts[name] = code_text(path)
    assert texts["before"] == texts["reworded"]
    assert texts["before"] != texts["changed"]


def test_a_file_that_does_not_parse_counts_by_its_bytes(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("def f(:\n")
    assert code_text(path) == b"def f(:\n"


def test_the_fingerprint_covers_the_package_and_the_baselines_but_not_the_report() -> None:
    from cee_bench.provenance import code_files

    names = [name for name, _ in code_files()]
    assert "cee_bench/classification/recipe.py" in names and "baselines/pabee.py" in names
    assert not any(name.startswith(("cee_bench/report/", "cee_bench/gate/")) for name in names)
    assert len(code_identity()["fingerprint"]) == 16
