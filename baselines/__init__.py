"""The baseline early-exit methods, one module each, registered in `cee_bench.method.METHOD_MODULES`."""
