"""A sweep fanned out as jobs (cee_bench/sweep/): the plan and its dependencies, the local launcher and submitit's local
executor end to end at `--preset smoke` on SST-2 (every training key trained once, a rerun starts nothing), a failed
job's log and last line, and every bad launcher option as one line with exit 2 and nothing submitted."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GLUE = ROOT.parent / "shared" / "data" / "glue"
CONSOLE = Path(sys.executable).parent / "cee-bench"

pytestmark = pytest.mark.skipif(not GLUE.is_dir(), reason=f"GLUE data not found at {GLUE}")


def _config(tmp_path: Path, methods: list[str], seeds: list[int], **extra) -> Path:
    lines = [f"task: sst2", f"methods: [{', '.join(methods)}]", f"seeds: [{', '.join(map(str, seeds))}]",
             "preset: smoke", f"data_dir: {GLUE}", f"output_dir: {tmp_path / 'out'}"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in extra.items()]
    path = tmp_path / "sweep.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _console(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> tuple[int, str]:
    values = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400", **(env or {})}
    values["PYTHONPATH"] = os.pathsep.join(filter(None, [values.pop("EXTRA_PATH", None), str(ROOT),
                                                         os.environ.get("PYTHONPATH")]))
    done = subprocess.run([str(CONSOLE), *args], capture_output=True, text=True, env=values, timeout=timeout,
                          cwd=ROOT)
    return done.returncode, done.stdout + done.stderr


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".locks" not in p.parts}


def _trained(folder: Path) -> Counter:
    return Counter(entry["recipe"] for path in (folder / "sst2").glob("*.json")
                   for entry in json.loads(path.read_text())["training"]["trained"])


def test_the_plan_orders_each_job_after_the_records_and_trainings_it_needs(tmp_path):
    from cee_bench.options import RunOptions
    from cee_bench.runner import check_options
    from cee_bench.sweep.plan import build_plan

    opts = RunOptions(task="sst2", methods="pcee-bert,deebert,consistentee,full,pabee", seeds=[42, 43],
                      preset="smoke", data_dir=GLUE, output_dir=tmp_path)
    check_options(opts)
    plan = build_plan([opts])
    needs = {job.id: job.needs for job in plan.jobs}
    assert len(plan.jobs) == 10 and needs["sst2/full__seed42"] == []
    assert needs["sst2/deebert__seed43"] == ["sst2/full__seed43"]
    assert needs["sst2/pcee-bert__seed42"] == needs["sst2/consistentee__seed42"] == \
        ["sst2/full__seed42", "sst2/pabee__seed42"]
    assert plan.minutes() == pytest.approx(2 * (0.08 + 0.09 + 0.09 + 0.1 + 0.31))
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "full__seed42.json").write_text(json.dumps(
        {"schema": 1, "task": "sst2", "method": "full", "seed": 42, "config": {"preset": "smoke"}}))
    (tmp_path / "sst2" / "pabee__seed42.json").write_text("{")  # damaged: the job will recompute it
    done = {job.id for job in build_plan([opts]).jobs if job.done}
    assert done == {"sst2/full__seed42"}


def test_a_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    code, output = _console("run", "--config", str(_config(tmp_path, ["full", "pabee"], [42])), "--dry-run")
    assert code == 0 and "sst2/pabee__seed42 │ sst2/full__seed42 │ to run" in output, output
    assert "2 job(s): 0 done, 2 to run, at most 1 at once; estimated training 0.2 minutes" in output
    assert not (tmp_path / "out").exists()


def test_a_local_sweep_trains_every_key_once_and_a_rerun_starts_nothing(tmp_path):
    config = _config(tmp_path, ["full", "pabee", "pcee-bert"], [42])
    code, output = _console("run", "--config", str(config), "--launcher", "local", "--jobs", "2")
    assert code == 0 and "sweep finished: 3 done, 0 running, 0 waiting, 0 failed" in output, output
    out = tmp_path / "out"
    assert set(_trained(out).values()) == {1} and len(_trained(out)) == 2  # full's and pabee's, once each
    pcee = json.loads((out / "sst2" / "pcee-bert__seed42.json").read_text())
    assert pcee["training"]["reused_from"][0]["method"] == "pabee"  # the job after pabee's loaded its training
    assert (out / ".sweep" / "logs" / "sst2_pabee__seed42.log").read_text().count("wrote") == 1
    before = _snapshot(out)
    code, output = _console("run", "--config", str(config), "--launcher", "local", "--jobs", "2")
    assert code == 0 and "3 job(s): 3 done, 0 to run" in output and ": running" not in output, output
    assert _snapshot(out) == before


def test_a_submitit_sweep_on_its_local_executor(tmp_path):
    pytest.importorskip("submitit")
    config = _config(tmp_path, ["full", "deebert"], [42], submitit={"cluster": "local", "timeout_min": 30})
    code, output = _console("run", "--config", str(config), "--launcher", "submitit")
    assert code == 0 and "sweep finished: 2 done" in output, output
    out = tmp_path / "out"
    assert set(_trained(out).values()) == {1}
    deebert = json.loads((out / "sst2" / "deebert__seed42.json").read_text())
    assert deebert["training"]["reused_from"][0]["method"] == "full"
    assert list((out / ".sweep" / "submitit").glob("*_log.out"))


def test_a_failed_job_names_its_log_and_last_line_and_its_dependents_do_not_start(tmp_path):
    config = _config(tmp_path, ["full", "pabee"], [42])
    (tmp_path / "out" / "sst2").mkdir(parents=True)
    stale = {"schema": 1, "task": "sst2", "method": "full", "seed": 42, "config": {"preset": "cpu"}}
    (tmp_path / "out" / "sst2" / "full__seed42.json").write_text(json.dumps(stale))  # another configuration's
    code, output = _console("run", "--config", str(config), "--launcher", "local", "--jobs", "2")
    assert code == 1, output
    log = tmp_path / "out" / ".sweep" / "logs" / "sst2_full__seed42.log"
    assert f"failed: sst2/full__seed42: {log}: error: " in output and "produced by another configuration" in output
    assert "sst2/pabee__seed42: failed (not started: a job it waits for failed)" in output
    assert "sweep finished: 0 done, 0 running, 0 waiting, 2 failed" in output


@pytest.fixture
def no_submitit(tmp_path) -> dict[str, str]:
    """An environment where `import submitit` fails, as where it is not installed."""
    fake = tmp_path / "fake" / "submitit"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('no submitit here')\n")
    return {"EXTRA_PATH": str(fake.parent)}


@pytest.mark.parametrize("args, extra, message", [
    (["--launcher", "slurmish"], {}, "unknown launcher 'slurmish'; choose local or submitit"),
    (["--launcher", "local", "--jobs", "0"], {}, "--jobs must be positive (a whole number), got 0"),
    (["--jobs", "2"], {}, "--jobs applies to --launcher local or submitit"),
    (["--launcher", "local", "--retrain"], {}, "--retrain with a launcher would train each shared training"),
    (["--launcher", "local"], {"submitit": {"cluster": "local"}},
     "the config file's submitit settings apply to --launcher submitit, not 'local'"),
    (["--launcher", "submitit"], {"submitit": {"cluster": "local", "partitionn": "gpu"}},
     "submitit settings: Parameter 'partitionn' need to be prefixed by an executor name"),
    (["--launcher", "submitit"], {"no_submitit": True}, "the submitit launcher needs the package submitit: "
                                                        "pip install 'cee-bench[cluster]'"),
    (["--launcher", "local", "--output-dir", "/sys/cee-bench-sweep"], {}, "cannot write in the output folder "
                                                                          "/sys/cee-bench-sweep"),
], ids=["unknown-launcher", "jobs-0", "jobs-without-launcher", "retrain", "submitit-settings-local",
        "unknown-submitit-setting", "submitit-missing", "read-only-store"])
def test_bad_launcher_input_is_one_line_exit_2_and_nothing_submitted(args, extra, message, tmp_path, no_submitit):
    if "/sys/cee-bench-sweep" in args and not Path("/sys").is_dir():
        pytest.skip("no read-only /sys here")
    env = no_submitit if extra.pop("no_submitit", False) else None
    config = _config(tmp_path, ["full", "pabee"], [42], **extra)
    code, output = _console("run", "--config", str(config), *args, env=env)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in output, output
    assert not (tmp_path / "out").exists()
