"""Every mistake and every interruption, the way a user meets them: through the installed `cee-bench` console script.

Each case asserts the contract of the README: exit code 2 (130 / 143 for SIGINT / SIGTERM), no traceback, at most
three non-empty lines, and a results folder that is byte-for-byte what it was before.

The per-flag cases are generated from the Typer app's own parameter list, so a flag added tomorrow is covered
without touching this file: every option gets a wrong-type case (a non-number for a number, a value for a switch, no
value for anything else) and every value option an out-of-domain case. Out-of-domain values come from the small
tables below, by option name, falling back on the click type for numbers; a new text or path option with no entry
fails `test_every_option_has_an_out_of_domain_value` until one is added. The per-flag cases run the console script's
entry point in-process (a subprocess each would cost ~2 s of start-up, mostly importing torch, for ~150 cases);
every category also runs as a real subprocess below.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import typer

from cee_bench.cli import GENERATION_ONLY, app
from data_paths import GLUE, ROOT, SHARED_DATA
from test_cli import BAD_RUN_ARGS
CONSOLE = Path(sys.executable).parent / "cee-bench"
MAX_LINES = 3

pytestmark = pytest.mark.skipif(not GLUE.is_dir(), reason=f"GLUE data not found at {GLUE}")

# Placeholders for paths, replaced per case: an existing file, an existing folder, a path that does not exist.
FILE, FOLDER, MISSING = "<file>", "<folder>", "<missing>"
OUT_OF_DOMAIN: dict[str, list[str]] = {
    "task": ["nosuch"], "methods": ["nosuch"], "preset": ["huge"], "pooling": ["max"], "device": ["tpu"],
    "dtype": ["fp8", "fp16"],  # fp16: CPUs have no fp16 matrix units (these tests run without a GPU)
    "format": ["pdf"], "output": [FOLDER], "json_path": [FOLDER], "github_benchmark": [FOLDER], "to": [FILE],
    "tasks": ["nosuch"], "model": ["./no/such/model", FILE], "grid": ["nan", "inf", "-1"],
    "threshold": ["-5", "nan", "0"],
    "output_dir": [FILE], "results_dir": [FILE, MISSING], "data_dir": [FILE, MISSING], "plots": [FILE],
    "baseline": [FOLDER, MISSING], "bootstrap": ["0", "-3", "x", "1.5"], "filters": ["nokey=1", "noequals"],
    "runs": ["0", "-2", "x", "1.5"], "revision": ["main"], "seeds": ["1,1", "x", ","], "config": [MISSING, FOLDER],
    "seed": ["-1", str(2**32)], "delta": ["0", "1", "nan"], "epsilon": ["0", "1.5", "inf"],
    "alpha": ["-0.5", "nan", "inf"], "max_seq_length": ["0", "100000"], "verdict": ["nosuch", ","],
    "launcher": ["nosuch"], "method": ["nosuch", "full"],
}
BY_TYPE = {"integer": ["-1", "0"], "float": ["nan", "inf", "-1", "0"]}
WRONG_TYPE = {"integer": ["x", "1.5"], "float": ["x"]}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def console(*args: str, timeout: float = 300) -> tuple[int, str]:
    """Run the installed `cee-bench` with `args`: (exit code, stdout + stderr)."""
    done = subprocess.run([str(CONSOLE), *args], capture_output=True, text=True, env=_env(), timeout=timeout,
                          cwd=ROOT)
    return done.returncode, done.stdout + done.stderr


def snapshot(folder: Path) -> dict[str, str]:
    """Every file's hash and every folder's name under `folder` (a new empty folder is a change too), but the empty
    lock files under `.locks/` that a run which started computing takes (cee_bench/locks.py)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*")) if ".locks" not in p.relative_to(folder).parts}


def refused(argv: list[str], message: str, folder: Path, cli, *, console_script: bool) -> str:
    """Run `argv` through the console script or its entry point in-process, assert the contract and that the output
    says `message`; returns the output."""
    before = snapshot(folder)
    if console_script:
        code, output = console(*argv)
    else:
        code, out, err = cli(*argv)
        output = out + err
    assert_refused(code, output, before, snapshot(folder))
    assert message in output, output
    return output


def first_by_console(cases: list[tuple[list[str], str]]) -> list:
    """The first case of a category through a real subprocess, the others in-process (start-up is the cost)."""
    return [pytest.param(argv, message, i == 0, id=f"{'console' if i == 0 else 'in-process'}: {' '.join(argv)}")
            for i, (argv, message) in enumerate(cases)]


def assert_refused(code: int, output: str, before: dict, after: dict, expected: int = 2) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == expected, output
    assert "Traceback" not in output, output
    assert 1 <= len(lines) <= MAX_LINES, output
    assert after == before, "the results folder changed"


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """A results folder holding one real record (smoke `full` on RTE), made once through the console script."""
    folder = tmp_path_factory.mktemp("store") / "results"
    code, output = console("run", "--task", "rte", "--methods", "full", "--preset", "smoke", "--data-dir", str(GLUE),
                           "--output-dir", str(folder), "--quiet")
    assert code == 0, output
    return folder


@pytest.fixture(scope="session")
def paths(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("paths")
    (base / "a-file").write_text("not a folder\n")
    (base / "a-folder").mkdir()
    return {FILE: str(base / "a-file"), FOLDER: str(base / "a-folder"), MISSING: str(base / "missing" / "x")}


# --- the generated per-flag cases ---------------------------------------------------------------------------------

def _commands(command: Any = None, path: tuple[str, ...] = ()):
    """(command path, click command) for every leaf command of the app."""
    command = command or typer.main.get_command(app)
    children = getattr(command, "commands", None)
    if children is None:
        yield path, command
        return
    for name, child in sorted(children.items()):
        yield from _commands(child, (*path, name))


def _kind(param: Any) -> str:
    """The option's value type as click names it (integer, float, text, path, boolean), for any Typer: 0.29's own
    click keeps the Python annotation instead of a click type."""
    if hasattr(param, "type"):
        return param.type.name
    annotation = param.type_descriptor.annotation
    return {int: "integer", float: "float", bool: "boolean", Path: "path"}.get(annotation, "text")


def _options(command) -> list:
    return [p for p in command.params if p.param_type_name == "option" and p.name != "help"]


def base_args(path: tuple[str, ...], name: str) -> list[str]:
    """A command line that would run, where only the option under test is wrong (its placeholders resolved later);
    `<store>` is the results folder. `run` and the analyses point at the real data with the smoke preset, so a value
    that wrongly got through would start work and write into the store, which the case catches."""
    glue = ["--data-dir", str(GLUE)]
    if path == ("run",):
        if name in GENERATION_ONLY:
            return ["--task", "cnndm", "--methods", "calm", "--preset", "smoke", "--data-dir", str(SHARED_DATA),
                    "--output-dir", "<store>", "--quiet"]
        return ["--task", "rte", "--methods", "pabee", "--preset", "smoke", *glue, "--output-dir", "<store>",
                "--quiet"]
    if path in (("analyze", "hardness"), ("analyze", "layers")):
        return ["--task", "rte", "--preset", "smoke", *glue, "--output-dir", "<store>", "--quiet"]
    if path in (("analyze", "reward"), ("analyze", "policy")):
        return ["--task", "rte", "--output-dir", "<store>"]
    if path == ("report",):
        return ["--results-dir", "<store>"]
    if path == ("compare",):
        return ["<store>", "<store>"]
    if path == ("data", "glue"):
        return ["--to", "<missing>"]  # a refused value stops before the hub is asked
    if path == ("bench",):
        return ["--baseline", "<missing>"]  # an accepted bad value then stops at the baseline, not after minutes
    return []


def _without(args: list[str], option: str) -> list[str]:
    if option not in args:
        return args
    i = args.index(option)
    return args[:i] + args[i + 2:]


def _cases():
    """(id, argv, what the output must name) for every option of every command."""
    for path, command in _commands():
        for param in _options(command):
            option, kind = param.opts[0], _kind(param)
            base = _without(base_args(path, param.name), option)
            if param.is_flag:
                values = [("wrong type", [f"{option}=x"])]
            elif kind in WRONG_TYPE:
                values = [("wrong type", [option, v]) for v in WRONG_TYPE[kind]]
            else:
                values = [("no value", [option])]  # any text is of the right type; a missing one is not
            if not param.is_flag:
                values += [("out of domain", [option, v]) for v in OUT_OF_DOMAIN.get(param.name, BY_TYPE.get(kind, []))]
            for label, tail in values:
                argv = [*path, *base, *tail]
                yield pytest.param(argv, tail, id=f"{label}: {' '.join([*path, *tail])}")


def test_every_option_has_an_out_of_domain_value():
    """A new text or path option needs an OUT_OF_DOMAIN entry (numbers fall back on their type)."""
    missing = [f"{' '.join(path)} {p.opts[0]}" for path, command in _commands() for p in _options(command)
               if not p.is_flag and p.name not in OUT_OF_DOMAIN and _kind(p) not in BY_TYPE]
    assert not missing, f"add out-of-domain values for: {', '.join(missing)}"


def _resolve(argv: list[str], store: Path, paths: dict[str, str]) -> list[str]:
    return [str(store) if a == "<store>" else paths.get(a, a) for a in argv]


@pytest.mark.parametrize("argv, tail", list(_cases()))
def test_every_option_refuses_a_wrong_value(argv, tail, store, paths, cli):
    argv = _resolve(argv, store, paths)
    tail = _resolve(tail, store, paths)
    before = snapshot(store)
    code, out, err = cli(*argv)
    output = out + err
    assert_refused(code, output, before, snapshot(store))
    assert any(t.split("=")[0] in output for t in tail), f"the message names neither the option nor the value: {output}"


# --- every category through the real console script -----------------------------------------------------------------

USAGE = [
    ([], "Missing command"),
    (["run"], "--task is required"),
    (["run", "--task", "rte", "--bogus"], "No such option: --bogus"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["analyze"], "Missing command"),
    (["analyze", "nosuch"], "No such command 'nosuch'"),
    (["data"], "Missing command"),
    (["compare"], "Missing argument"),
    (["list", "--bogus"], "No such option: --bogus"),
    (["run", "--task", "rte", "--batch-size", "x"], "Invalid value for '--batch-size'"),
    (["run", "--task", "rte", "--force=1"], "does not take a value"),
    (["run", "--task"], "requires an argument"),
]


@pytest.mark.parametrize("argv, message", USAGE, ids=[" ".join(a) or "(no arguments)" for a, _ in USAGE])
def test_usage_errors_are_clicks_short_message(argv, message, store):
    before = snapshot(store)
    code, output = console(*argv)
    assert_refused(code, output, before, snapshot(store))
    assert message in output


def _run(*args: str, store: Path) -> list[str]:
    return ["run", *args, "--output-dir", str(store)]


NUMBERS = [
    (["--task", "rte", "--lr", "nan"], "--lr must be positive and finite, got nan"),
    (["--task", "rte", "--lr", "inf"], "--lr must be positive and finite, got inf"),
    (["--task", "rte", "--seed", "-1"], "--seed must be a whole number in [0, 4294967295]"),
    (["--task", "rte", "--max-seq-length", "600"], "--max-seq-length 600 exceeds the position limit of model "
                                                   "'all-MiniLM-L6-v2' (512)"),
    (["--task", "rte", "--delta", "0.5"], "--delta applies to generation tasks only"),
    (["--task", "cnndm", "--lr", "0.1"], "--lr applies to classification tasks only"),
    (["--task", "cnndm", "--delta", "1.5"], "--delta must be in (0, 1), got 1.5"),
    (["--task", "cnndm", "--max-eval-samples", "0"], "--max-eval-samples must be positive"),
]


# The same flags mean the same thing on both kinds: `--device` is checked for generation too, `--grid` is one
# method's grid (and each method checks its own values), and a method registered twice is gone.
GENERATION_FLAGS = [
    (["--task", "cnndm", "--device", "gpu"], "unknown device 'gpu'"),
    (["--task", "cnndm", "--methods", "calm,consistentee", "--grid", "0.9"], "give exactly one method"),
    (["--task", "cnndm", "--methods", "consistentee", "--grid", "-1"], "alpha must be a finite number >= 0"),
    (["--task", "cnndm", "--methods", "calm", "--grid", "1.5"], "threshold must be in [0, 1], got 1.5"),
    (["--task", "cnndm", "--methods", "calm-state"], "unknown generation method 'calm-state'"),
    (["--task", "cnndm", "--pooling", "cls"], "--pooling applies to classification tasks only"),
    (["--task", "rte", "--greedy"], "--greedy applies to generation tasks only"),
]


@pytest.mark.parametrize("args, message, console_script",
                         first_by_console(NUMBERS) + first_by_console(GENERATION_FLAGS))
def test_numbers_outside_their_domain_and_flags_that_mean_one_thing_on_both_kinds(args, message, console_script,
                                                                                  store, cli):
    data = str(SHARED_DATA if "cnndm" in args else GLUE)
    refused(_run(*args, "--preset", "smoke", "--data-dir", data, store=store), message, store, cli,
            console_script=console_script)


ANALYSIS_AND_REPORT = [
    (["analyze", "layers", "--task", "rte", "--alpha", "nan"], "alpha must be"),
    (["analyze", "hardness", "--task", "rte", "--epochs", "inf", "--data-dir", str(GLUE)],
     "--epochs must be positive and finite"),
    (["report", "--results-dir", "<file>"], "results folder expected, but <file> is a file"),
    (["report", "--plots", "<file>"], "plots folder expected, but <file> is a file"),
]


@pytest.mark.parametrize("argv, message, console_script", first_by_console(ANALYSIS_AND_REPORT))
def test_analysis_and_report_numbers_and_paths(argv, message, console_script, store, paths, cli):
    where = ["--output-dir", str(store)] if argv[0] == "analyze" else \
        ([] if "--results-dir" in argv else ["--results-dir", str(store)])
    refused([*_resolve(argv, store, paths), *where], message.replace("<file>", paths[FILE]), store, cli,
            console_script=console_script)


REPORT_OUTPUT = [
    (["compare", "<store>", "<elsewhere>"], "have no cell in common"),
    (["report", "--results-dir", "<store>", "--format", "pdf"],
     "unknown format 'pdf'; choose table, csv, markdown, html or json"),
    (["report", "--results-dir", "<store>", "--output", "<folder>"],
     "--output expects a file, but <folder> is a folder"),
    (["compare", "<store>", "<store>", "--output", "<folder>"], "--output expects a file, but <folder> is a folder"),
    (["bench", "--json", "<folder>"], "--json expects a file, but <folder> is a folder"),
]


@pytest.mark.parametrize("argv, message, console_script", first_by_console(REPORT_OUTPUT))
def test_compare_formats_and_output_paths(argv, message, console_script, store, paths, cli, tmp_path):
    """Folders with nothing in common, an unknown format, an output path that is a folder: one line, exit 2, and
    nothing written, in the store or beside the output."""
    elsewhere = tmp_path / "elsewhere"
    record = json.loads(next(store.glob("rte/*.json")).read_text())
    (elsewhere / "sst2").mkdir(parents=True)
    (elsewhere / "sst2" / "full__seed42.json").write_text(json.dumps({**record, "task": "sst2"}))
    names = {**paths, "<store>": str(store), "<elsewhere>": str(elsewhere)}
    before = snapshot(Path(paths[FOLDER]))
    refused([names.get(a, a) for a in argv], message.replace("<folder>", paths[FOLDER]), store, cli,
            console_script=console_script)
    assert snapshot(Path(paths[FOLDER])) == before


@pytest.mark.parametrize("args, message, console_script", first_by_console(BAD_RUN_ARGS))
def test_the_cli_suites_cases_through_the_console_script(args, message, console_script, store, cli):
    data = [] if "--data-dir" in args else ["--data-dir", str(GLUE)]
    preset = [] if "--preset" in args else ["--preset", "smoke"]
    refused(_run(*args, *data, *preset, store=store), message, store, cli, console_script=console_script)


@pytest.fixture(scope="session")
def bad_data(tmp_path_factory) -> dict[str, Path]:
    """GLUE and CNN/DM layouts with one byte that is not UTF-8 on line 3, and a GLUE layout whose train file is a
    folder."""
    base = tmp_path_factory.mktemp("bad")
    (base / "glue" / "RTE").mkdir(parents=True)
    lines = (GLUE / "RTE" / "train.tsv").read_bytes().splitlines(keepends=True)
    (base / "glue" / "RTE" / "train.tsv").write_bytes(b"".join(lines[:2]) + b"caf\xe9" + b"".join(lines[2:40]))
    shutil.copy(GLUE / "RTE" / "dev.tsv", base / "glue" / "RTE" / "dev.tsv")
    (base / "cnn" / "cnn_dm").mkdir(parents=True)
    rows = (SHARED_DATA / "cnn_dm" / "test-250.jsonl").read_bytes().splitlines(keepends=True)
    (base / "cnn" / "cnn_dm" / "test-250.jsonl").write_bytes(b"".join(rows[:2]) + b"\xff\xfe" + b"".join(rows[2:]))
    (base / "swapped" / "RTE" / "train.tsv").mkdir(parents=True)
    shutil.copy(GLUE / "RTE" / "dev.tsv", base / "swapped" / "RTE" / "dev.tsv")
    (base / "blocked").mkdir()
    (base / "blocked" / "rte").write_text("a file where the task's folder goes\n")
    return {"bad glue": base / "glue", "bad cnn": base / "cnn", "swapped": base / "swapped",
            "blocked": base / "blocked"}


FILES = [
    (["--task", "rte", "--data-dir", "<bad glue>"], "<bad glue>/RTE/train.tsv:3: bytes that are not UTF-8"),
    (["--task", "cnndm", "--methods", "calm", "--data-dir", "<bad cnn>"],
     "<bad cnn>/cnn_dm/test-250.jsonl:3: bytes that are not UTF-8"),
    (["--task", "rte", "--data-dir", "<swapped>"], "expected a file, found a folder: <swapped>/RTE/train.tsv"),
    (["--task", "rte", "--data-dir", "<file>"], "data folder expected, but <file> is a file"),
    (["--task", "cnndm", "--data-dir", "<file>"], "data folder expected, but <file> is a file"),
    (["--task", "rte", "--data-dir", str(GLUE), "--output-dir", "<file>"],
     "output folder expected, but <file> is a file"),
    (["--task", "rte", "--data-dir", str(GLUE), "--output-dir", "<blocked>"], "<blocked>/rte is a file"),
]


@pytest.mark.parametrize("args, message, console_script", first_by_console(FILES))
def test_files_undecodable_or_of_the_wrong_kind(args, message, console_script, store, paths, bad_data, cli):
    names = {**paths, **{f"<{k}>": str(v) for k, v in bad_data.items()}}
    for key, value in names.items():
        message = message.replace(key, value)
    args = [names.get(a, a) for a in args]
    if "--output-dir" not in args:
        args += ["--output-dir", str(store)]
    output_dir = Path(args[args.index("--output-dir") + 1])
    refused(["run", *args, "--preset", "smoke"], message, output_dir, cli, console_script=console_script)


def test_an_unreadable_file(store, tmp_path, cli, monkeypatch):
    """Root reads a file whatever its mode, so the refusal of the OS is simulated (in-process) where needed."""
    data = tmp_path / "glue"
    shutil.copytree(GLUE / "RTE", data / "RTE")
    target = data / "RTE" / "train.tsv"
    if os.geteuid() == 0:
        real = Path.read_bytes
        monkeypatch.setattr(Path, "read_bytes", lambda self: (_ for _ in ()).throw(PermissionError(
            13, "Permission denied")) if self == target else real(self))
    else:
        target.chmod(0)
    before = snapshot(store)
    code, out, err = cli(*_run("--task", "rte", "--preset", "smoke", "--data-dir", str(data), store=store))
    assert_refused(code, out + err, before, snapshot(store))
    assert f"cannot read {target}: Permission denied" in err


def test_a_non_utf8_results_file(tmp_path):
    (tmp_path / "r" / "rte").mkdir(parents=True)
    (tmp_path / "r" / "rte" / "x.json").write_bytes(b'{"task": "caf\xe9"}')
    before = snapshot(tmp_path / "r")
    code, output = console("report", "--results-dir", str(tmp_path / "r"))
    assert_refused(code, output, before, snapshot(tmp_path / "r"))
    assert "cannot read results file" in output


# --- resume by content ---------------------------------------------------------------------------------------------

def test_resume_refuses_a_record_of_another_configuration(store):
    """The issue's case: a `--pooling cls --max-seq-length 32` run must not adopt the stored mean/64 record."""
    before = snapshot(store)
    code, output = console(*_run("--task", "rte", "--methods", "full", "--preset", "smoke", "--pooling", "cls",
                                 "--max-seq-length", "32", "--data-dir", str(GLUE), store=store))
    assert_refused(code, output, before, snapshot(store))
    assert "config.max_seq_length (stored 64, requested 32)" in output
    assert "config.pooling (stored mean, requested cls)" in output
    assert "--force" in output and "--output-dir" in output


# --- interruption ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_training_is_one_line_and_loses_nothing(signum, store, tmp_path):
    """SIGINT / SIGTERM once PABEE's training has started: exit 128 + signal, no partial record and no temp file,
    the finished `full` record intact, and the next run resumes from it."""
    results = tmp_path / "results"
    shutil.copytree(store, results)
    before = snapshot(results)
    proc = subprocess.Popen([str(CONSOLE), "run", "--task", "rte", "--methods", "full,pabee", "--preset", "smoke",
                             "--data-dir", str(GLUE), "--output-dir", str(results)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(), cwd=ROOT)
    watchdog = threading.Timer(240, proc.kill)
    watchdog.start()
    try:
        seen = []
        for line in proc.stdout:  # the run logs "rte · pabee" just before it builds and trains the model
            seen.append(line)
            if "rte · pabee" in line:
                break
        assert any("kept" in line for line in seen), "".join(seen)
        time.sleep(2.0)  # into the training loop
        assert proc.poll() is None, "the run ended before the signal"
        proc.send_signal(signum)
        rest = proc.stdout.read()
        code = proc.wait()
    finally:
        watchdog.cancel()
    assert_refused(code, rest, before, snapshot(results), expected=128 + signum)
    assert f"interrupted ({signal.Signals(signum).name})" in rest
    assert not list(results.rglob("*.tmp")) and not (results / "rte" / "pabee__seed42.json").exists()
    if signum == signal.SIGTERM:
        code, output = console("run", "--task", "rte", "--methods", "full", "--preset", "smoke", "--data-dir",
                               str(GLUE), "--output-dir", str(results))
        assert code == 0 and "kept" in output and snapshot(results) == before, output
