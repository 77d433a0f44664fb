"""Test support for the fault suite: with `CEE_BENCH_PAUSE=store` (or `record`), the `cee-bench` process this folder is
put on the PYTHONPATH of pauses in the middle of writing a store entry (its weights written, its config not) or a
record (its temporary file written, not yet renamed), after printing `PAUSED`, so that the test can `kill -9` it at
exactly that moment. Without the variable nothing changes. Nothing in the package knows about it."""

import os
import sys
import time

_PAUSE = os.environ.get("CEE_BENCH_PAUSE")


def _pause() -> None:
    print("PAUSED", flush=True)
    sys.stdout.flush()
    time.sleep(300)


if _PAUSE == "store":
    import safetensors.torch

    _save_model = safetensors.torch.save_model

    def _save_then_pause(*args, **kwargs):
        _save_model(*args, **kwargs)
        _pause()

    safetensors.torch.save_model = _save_then_pause
elif _PAUSE == "record":
    import cee_bench.results as _results

    _atomic_write = _results.atomic_write

    def _write_then_pause(path, write):
        def write_and_pause(tmp):
            write(tmp)
            if _results.Path(path).name.endswith(".json") and "__seed" in _results.Path(path).name:
                _pause()

        return _atomic_write(path, write_and_pause)

    _results.atomic_write = _write_then_pause
