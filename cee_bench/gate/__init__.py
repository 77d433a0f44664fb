"""`cee-bench bench`: the latency regression gate (issues 6 and 14), one concern per file.

The pytest-benchmark suite in `benchmarks/test_latency.py` times a fixed, randomly initialised BERT on fixed inputs
(`workload.py`). Absolute times say more about the machine than the code (CI runners differ, and a shared machine is
slower when its neighbours are busy), so every benchmark is *normalised* by a reference timed in the same run, round by
round just before it: early exit by the full-model forward at the same batch size, the full-model forward by the
backbone's own Hugging Face forward, the trace sweep by the batch-1 full-model forward, early-exit decoding by the same
decoder without exits. A uniformly slower machine scales both halves and leaves the ratio alone; a method that got
slower relative to the backbone moves it (`suite.py` runs the suite and reads these figures).

Early-exit ratios are further divided by the ratio the layer count predicts (E[l]/L), so the gated figure does not
move when a method merely exits elsewhere: for early exit it is 1 / realised fraction (docs/DESIGN.md, "Numbers").

Each benchmark is gated against its own noise (`compare.py`): the saved run (`saved_run.py`; the command line's
`--baseline`) stores the median of several runs and their spread, a benchmark regresses when its change exceeds
max(threshold, `SPREAD_FACTOR` × spread), and a benchmark that looks regressed is rerun alone before it fails the gate,
so one burst of a neighbour's load is not a regression. A saved run from another CPU gates only the
machine-independent ratios, and says so. `render.py` draws the table, `command.py` is the command.

Heavy imports stay inside functions so `cee-bench --help` stays instant.
"""
