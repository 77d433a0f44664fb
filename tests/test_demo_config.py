"""`make demo` runs configs/demo.yaml: the file passes the run checks, on SST-2 with every classification method."""

from __future__ import annotations

from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]


def test_demo_config_is_valid_and_the_makefile_runs_it() -> None:
    from cee_bench import cli as cli_module
    from cee_bench.run_config import option_types, plan_runs
    from cee_bench.runner import check_options

    command = typer.main.get_command(cli_module.app).commands["run"]
    params = {p.name: p.default for p in command.params}
    (values,) = plan_runs(ROOT / "configs" / "demo.yaml", params, set(), option_types(cli_module.run))
    assert values["task"] == "sst2" and values["preset"] == "cpu"
    assert set(values["methods"].split(",")) == {"full", "pabee", "deebert", "berxit", "right-tool", "pcee-bert",
                                                 "consistentee"}
    check_options(cli_module._options(cli_module._checked(values, set())))
    assert "--config configs/demo.yaml" in (ROOT / "Makefile").read_text()
