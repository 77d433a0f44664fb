"""The baseline early-exit methods, one module each, registered in `cee_bench.registry.METHOD_MODULES`."""
